// rx::XComStore: the memory store and the SQLite store (puts replace, erases drop a task
// instance, load orders by sequence), and the SQLite store's group commit, failures, destruction
// with writes queued and durability across the process being killed.
#include "utils/wait.hpp"
#include "xcom/wire.hpp"

#include <remote_xcomm/xcom.hpp>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <poll.h>
#include <signal.h>
#include <stdlib.h>  // mkdtemp
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Change = rx::XComStore::Change;
using rx_test::wait_for;

// A fresh directory under the test's temporary directory, removed with its contents at scope exit.
class TempDirectory {
 public:
  TempDirectory() {
    std::string pattern = (std::filesystem::path(testing::TempDir()) / "rx-xcom-store-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
    }
    path_ = pattern;
  }
  TempDirectory(const TempDirectory&) = delete;
  TempDirectory& operator=(const TempDirectory&) = delete;
  ~TempDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }

  [[nodiscard]] std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// "k12": built by appending, which GCC 12's -Wrestrict does not misread as `"k" + std::to_string(12)`.
std::string numbered(const char* prefix, std::uint64_t number) {
  std::string text(prefix);
  text += std::to_string(number);
  return text;
}

rx::TaskInstanceKey task(const std::string& task_id, int map_index = -1) {
  return {"dag", task_id, "run_1", map_index};
}

rx::XCom xcom(rx::TaskInstanceKey task_instance, std::string key, std::string value_json, std::uint64_t sequence,
              std::uint32_t attempt = 1) {
  rx::XCom result;
  result.task_instance = std::move(task_instance);
  result.key = std::move(key);
  result.value_json = std::move(value_json);
  result.attempt = attempt;
  result.sequence = sequence;
  // Microseconds, as the SQLite store keeps them.
  result.timestamp = rx::detail::from_unix_micros(1'700'000'000'000'000 + static_cast<std::int64_t>(sequence) * 1001);
  return result;
}

Change put(rx::XCom value) { return {Change::Kind::put, std::move(value)}; }

Change erase(rx::TaskInstanceKey task_instance) {
  Change change{Change::Kind::erase_task_instance, {}};
  change.xcom.task_instance = std::move(task_instance);
  return change;
}

// One XCom as text, every field of it, so that a mismatch reads plainly.
std::string describe(const rx::XCom& value) {
  return rx::to_string(value.task_instance) + " " + value.key + "=" + value.value_json +
         " attempt=" + std::to_string(value.attempt) + " sequence=" + std::to_string(value.sequence) +
         " at=" + std::to_string(rx::detail::to_unix_micros(value.timestamp));
}

std::vector<std::string> describe(const std::vector<rx::XCom>& values) {
  std::vector<std::string> lines;
  for (const rx::XCom& value : values) {
    lines.push_back(describe(value));
  }
  return lines;
}

// Writes `changes` and waits for their completion.
boost::system::error_code write_and_wait(rx::XComStore& store, std::vector<Change> changes) {
  auto done = std::make_shared<std::promise<boost::system::error_code>>();
  auto future = done->get_future();
  store.write(std::move(changes), [done](boost::system::error_code error) { done->set_value(error); });
  return wait_for(future, "a write's completion");
}

// Counts completions from any thread; wait() returns once `expected` have arrived.
class Completions {
 public:
  explicit Completions(std::size_t expected) : expected_(expected) {}

  void add(boost::system::error_code error) {
    const std::lock_guard lock(mutex_);
    ++count_;
    if (error) {
      ++failures_;
      first_error_ = first_error_ ? first_error_ : error;
    }
    if (count_ >= expected_) {
      all_.notify_all();
    }
  }

  void wait() {
    std::unique_lock lock(mutex_);
    if (!all_.wait_for(lock, rx_test::HANG_GUARD, [this] { return count_ >= expected_; })) {
      throw std::runtime_error("timed out waiting for " + std::to_string(expected_) + " completions, got " +
                               std::to_string(count_));
    }
  }

  [[nodiscard]] std::size_t failures() const {
    const std::lock_guard lock(mutex_);
    return failures_;
  }
  [[nodiscard]] boost::system::error_code first_error() const {
    const std::lock_guard lock(mutex_);
    return first_error_;
  }

 private:
  const std::size_t expected_;
  mutable std::mutex mutex_;
  std::condition_variable all_;
  std::size_t count_ = 0;
  std::size_t failures_ = 0;
  boost::system::error_code first_error_;
};

// Holds the SQLite store's writer inside a `done` until release(): what is written meanwhile
// stays queued, so the next groups are known without any timing.
class WriterBlock {
 public:
  // Writes one XCom whose completion blocks the writer, and returns once it does.
  void block(rx::XComStore& store, rx::XCom blocker) {
    store.write({put(std::move(blocker))}, [this](boost::system::error_code error) {
      blocked_.set_value(error);
      if (released_future_.wait_for(rx_test::HANG_GUARD) != std::future_status::ready) {
        ADD_FAILURE() << "the writer was never released";
      }
    });
    EXPECT_FALSE(wait_for(blocked_future_, "the writer to block")) << "the blocking write failed";
  }
  void release() { released_.set_value(); }

 private:
  std::promise<boost::system::error_code> blocked_;
  std::future<boost::system::error_code> blocked_future_ = blocked_.get_future();
  std::promise<void> released_;
  std::shared_future<void> released_future_ = released_.get_future().share();
};

// --- Semantics both stores share -----------------------------------------------------------------

struct StoreFactory {
  const char* name;
  std::function<std::shared_ptr<rx::XComStore>(const TempDirectory&)> open;
};

// Names the store in test names and messages, instead of the factory's bytes.
void PrintTo(const StoreFactory& factory, std::ostream* out) { *out << factory.name; }

class XComStoreTest : public testing::TestWithParam<StoreFactory> {
 protected:
  std::shared_ptr<rx::XComStore> open() const { return GetParam().open(directory_); }

  TempDirectory directory_;
};

TEST_P(XComStoreTest, StartsEmpty) { EXPECT_TRUE(open()->load().empty()); }

TEST_P(XComStoreTest, PutReplacesTheXComWithTheSameTaskInstanceAndKey) {
  const auto store = open();
  ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("a"), "k", "1", 1)), put(xcom(task("a"), "other", "2", 2))}));
  ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("a"), "k", R"({"v":3})", 3, 2))}));

  EXPECT_EQ(describe(store->load()),
            describe(std::vector{xcom(task("a"), "other", "2", 2), xcom(task("a"), "k", R"({"v":3})", 3, 2)}));
}

TEST_P(XComStoreTest, EraseTaskInstanceErasesEveryKeyOfThatTaskInstanceOnly) {
  const auto store = open();
  ASSERT_FALSE(write_and_wait(*store, {
                                          put(xcom(task("a"), "k1", "1", 1)),
                                          put(xcom(task("a"), "k2", "2", 2)),
                                          put(xcom(task("a", 0), "k1", "3", 3)),
                                          put(xcom(task("b"), "k1", "4", 4)),
                                          put(xcom({"other_dag", "a", "run_1", -1}, "k1", "5", 5)),
                                          put(xcom({"dag", "a", "run_2", -1}, "k1", "6", 6)),
                                      }));
  ASSERT_FALSE(write_and_wait(*store, {erase(task("a"))}));

  EXPECT_EQ(describe(store->load()), describe(std::vector{
                                         xcom(task("a", 0), "k1", "3", 3),
                                         xcom(task("b"), "k1", "4", 4),
                                         xcom({"other_dag", "a", "run_1", -1}, "k1", "5", 5),
                                         xcom({"dag", "a", "run_2", -1}, "k1", "6", 6),
                                     }));
}

TEST_P(XComStoreTest, AppliesTheChangesOfAWriteInOrder) {
  const auto store = open();
  // A new attempt: the earlier attempt's XComs are erased, then the new ones put, in one write.
  ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("a"), "old", "1", 1))}));
  ASSERT_FALSE(write_and_wait(*store, {erase(task("a")), put(xcom(task("a"), "new", "2", 2, 2))}));
  // Put then erase in one write leaves nothing.
  ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("b"), "k", "3", 3)), erase(task("b"))}));

  EXPECT_EQ(describe(store->load()), describe(std::vector{xcom(task("a"), "new", "2", 2, 2)}));
}

TEST_P(XComStoreTest, LoadOrdersBySequence) {
  const auto store = open();
  ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("a"), "k", "1", 40)), put(xcom(task("b"), "k", "2", 7))}));
  ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("c"), "k", "3", 19)), put(xcom(task("a", 3), "k", "4", 1))}));
  // A replaced XCom takes the replacement's place in the order.
  ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("b"), "k", "5", 100))}));

  EXPECT_EQ(describe(store->load()), describe(std::vector{
                                         xcom(task("a", 3), "k", "4", 1),
                                         xcom(task("c"), "k", "3", 19),
                                         xcom(task("a"), "k", "1", 40),
                                         xcom(task("b"), "k", "5", 100),
                                     }));
}

TEST_P(XComStoreTest, KeepsValuesVerbatim) {
  const auto store = open();
  const std::string big(1 << 20, 'x');
  const std::vector<rx::XCom> values{
      xcom(task("a"), "text", "\"h\\u00e9llo \\\"w\\\" — ✓\"", 1),
      xcom(task("a"), "big", "\"" + big + "\"", 2),
      xcom(task("a"), "nul", std::string("\"a\0b\"", 5), 3),
      xcom({"d'ag; DROP TABLE xcoms;--", "t", "r", 2'000'000'000}, "k", "null", 4, 4'000'000'000U),
  };
  std::vector<Change> changes;
  for (const rx::XCom& value : values) {
    changes.push_back(put(value));
  }
  ASSERT_FALSE(write_and_wait(*store, std::move(changes)));
  EXPECT_EQ(describe(store->load()), describe(values));
}

INSTANTIATE_TEST_SUITE_P(
    Stores, XComStoreTest,
    testing::Values(StoreFactory{"Memory", [](const TempDirectory&) { return rx::make_memory_store(); }},
                    StoreFactory{"Sqlite",
                                 [](const TempDirectory& directory) {
                                   return rx::open_sqlite_store(directory.file("xcoms.db"));
                                 }},
                    StoreFactory{"SqliteFull",
                                 [](const TempDirectory& directory) {
                                   rx::SqliteStoreOptions options;
                                   options.sync_every_commit = true;
                                   return rx::open_sqlite_store(directory.file("xcoms.db"), options);
                                 }}),
    [](const testing::TestParamInfo<StoreFactory>& store_info) { return std::string(store_info.param.name); });

// --- The memory store ------------------------------------------------------------------------------

TEST(MemoryStore, CompletesAWriteBeforeWriteReturns) {
  const auto store = rx::make_memory_store();
  std::optional<boost::system::error_code> result;
  store->write({put(xcom(task("a"), "k", "1", 1))}, [&](boost::system::error_code error) { result = error; });
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(*result);
}

TEST(MemoryStore, ADoneMayWriteAgain) {
  const auto store = rx::make_memory_store();
  int completions = 0;
  store->write({put(xcom(task("a"), "k", "1", 1))}, [&](boost::system::error_code) {
    ++completions;
    store->write({put(xcom(task("a"), "k2", "2", 2))}, [&](boost::system::error_code) { ++completions; });
  });
  EXPECT_EQ(completions, 2);
  EXPECT_EQ(store->load().size(), 2U);
}

// --- The SQLite store ----------------------------------------------------------------------------

TEST(SqliteStore, KeepsPutsReplacesAndErasesAcrossReopening) {
  const TempDirectory directory;
  const std::string path = directory.file("xcoms.db");
  {
    const auto store = rx::open_sqlite_store(path);
    ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("a"), "k", "1", 1)), put(xcom(task("b"), "k", "2", 2))}));
    ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("c"), "k", "3", 3))}));
  }
  {
    const auto store = rx::open_sqlite_store(path);
    EXPECT_EQ(describe(store->load()), describe(std::vector{xcom(task("a"), "k", "1", 1), xcom(task("b"), "k", "2", 2),
                                                            xcom(task("c"), "k", "3", 3)}));
    ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("a"), "k", "4", 4, 2)), erase(task("b"))}));
  }
  const auto store = rx::open_sqlite_store(path);
  EXPECT_EQ(describe(store->load()),
            describe(std::vector{xcom(task("c"), "k", "3", 3), xcom(task("a"), "k", "4", 4, 2)}));
}

TEST(SqliteStore, CompletesEveryWriteOfConcurrentWritersOnceAndKeepsThem) {
  const TempDirectory directory;
  const std::string path = directory.file("xcoms.db");
  constexpr int THREADS = 6;
  constexpr int WRITES_PER_THREAD = 2000;
  constexpr std::size_t WRITES = static_cast<std::size_t>(THREADS) * WRITES_PER_THREAD;
  // Every write puts one XCom; every fourth write puts a second one for the same task instance.
  std::vector<std::atomic<int>> calls(WRITES);
  Completions completions(WRITES);
  std::vector<rx::XCom> expected;
  {
    const auto store = rx::open_sqlite_store(path);
    std::vector<std::thread> writers;
    for (int thread = 0; thread < THREADS; ++thread) {
      writers.emplace_back([&, thread] {
        for (int i = 0; i < WRITES_PER_THREAD; ++i) {
          const std::size_t index = static_cast<std::size_t>(thread) * WRITES_PER_THREAD + static_cast<std::size_t>(i);
          std::vector<Change> changes{
              put(xcom(task(numbered("t", thread), i), "k", std::to_string(index), 2 * index + 1))};
          if (i % 4 == 0) {
            changes.push_back(put(xcom(task(numbered("t", thread), i), "k2", "0", 2 * index + 2)));
          }
          store->write(std::move(changes), [&calls, &completions, index](boost::system::error_code error) {
            calls[index].fetch_add(1);
            completions.add(error);
          });
        }
      });
    }
    for (std::thread& writer : writers) {
      writer.join();
    }
    completions.wait();
    EXPECT_EQ(completions.failures(), 0U) << completions.first_error().message();
  }
  // The store is gone: a late second call would have come before its destructor returned.
  for (std::size_t index = 0; index < WRITES; ++index) {
    ASSERT_EQ(calls[index].load(), 1) << "write " << index;
  }
  const std::vector<rx::XCom> loaded = rx::open_sqlite_store(path)->load();
  ASSERT_EQ(loaded.size(), WRITES + WRITES / 4);
  std::uint64_t previous = 0;
  for (const rx::XCom& value : loaded) {
    ASSERT_LT(previous, value.sequence);  // ordered, and every sequence once
    previous = value.sequence;
    const std::uint64_t index = (value.sequence - 1) / 2;
    const int thread = static_cast<int>(index / WRITES_PER_THREAD);
    const int i = static_cast<int>(index % WRITES_PER_THREAD);
    const bool second = value.sequence % 2 == 0;
    ASSERT_EQ(describe(value), describe(xcom(task(numbered("t", thread), i), second ? "k2" : "k",
                                             second ? "0" : std::to_string(index), value.sequence)));
  }
}

TEST(SqliteStore, CommitsQueuedWritesInGroupsOfAtMostMaxGroupChanges) {
  const TempDirectory directory;
  rx::SqliteStoreOptions options;
  options.max_group_changes = 1000;
  const auto store = rx::open_sqlite_store(directory.file("xcoms.db"), options);

  WriterBlock writer;
  writer.block(*store, xcom(task("blocker"), "k", "0", 1));
  // Queued while the writer is held: 10,000 one-change writes, then one write larger than a group,
  // then one more. A `done` runs after its group's commit, so what load() sees from it tells which
  // writes were committed together.
  constexpr std::size_t SMALL_WRITES = 10'000;
  constexpr std::size_t LARGE_WRITE = 2'500;
  Completions completions(SMALL_WRITES + 2);
  std::vector<std::size_t> seen_by_small(SMALL_WRITES);
  std::size_t seen_by_large = 0;
  std::size_t seen_by_last = 0;
  for (std::size_t i = 0; i < SMALL_WRITES; ++i) {
    store->write({put(xcom(task("small"), numbered("k", i), "1", 2 + i))}, [&, i](boost::system::error_code error) {
      // The first and last write of each expected group look.
      if (i % 1000 == 0 || i % 1000 == 999) {
        seen_by_small[i] = store->load().size();
      }
      completions.add(error);
    });
  }
  std::vector<Change> large;
  for (std::size_t i = 0; i < LARGE_WRITE; ++i) {
    large.push_back(put(xcom(task("large"), numbered("k", i), "2", 20'000 + i)));
  }
  store->write(std::move(large), [&](boost::system::error_code error) {
    seen_by_large = store->load().size();
    completions.add(error);
  });
  store->write({put(xcom(task("last"), "k", "3", 30'000))}, [&](boost::system::error_code error) {
    seen_by_last = store->load().size();
    completions.add(error);
  });
  writer.release();
  completions.wait();
  ASSERT_EQ(completions.failures(), 0U) << completions.first_error().message();

  // Groups of 1,000 writes: every write of a group sees the whole group, and none of the next.
  for (std::size_t i = 0; i < SMALL_WRITES; i += 1000) {
    EXPECT_EQ(seen_by_small[i], 1 + i + 1000) << "first write of the group starting at " << i;
    EXPECT_EQ(seen_by_small[i + 999], 1 + i + 1000) << "last write of the group starting at " << i;
  }
  // A write larger than a group is committed whole, in a group of its own.
  EXPECT_EQ(seen_by_large, 1 + SMALL_WRITES + LARGE_WRITE);
  EXPECT_EQ(seen_by_last, 1 + SMALL_WRITES + LARGE_WRITE + 1);
}

TEST(SqliteStore, FailsOnlyTheWritesTheDatabaseRefusesAndKeepsWorking) {
  const TempDirectory directory;
  const std::string path = directory.file("xcoms.db");
  const auto store = rx::open_sqlite_store(path);

  // Five writes queued together, so committed as one group; the second and fourth break the
  // table's CHECKs (an empty key, a map index below -1), which fails the group's transaction.
  WriterBlock writer;
  writer.block(*store, xcom(task("blocker"), "k", "0", 1));
  std::vector<std::promise<boost::system::error_code>> results(5);
  const auto record = [&](std::size_t index) {
    return [&results, index](boost::system::error_code error) { results[index].set_value(error); };
  };
  store->write({put(xcom(task("a"), "k", "1", 2))}, record(0));
  store->write({put(xcom(task("b"), "k", "2", 3)), put(xcom(task("b"), "", "3", 4))}, record(1));
  store->write({put(xcom(task("c"), "k", "4", 5))}, record(2));
  store->write({put(xcom(task("e", -2), "k", "5", 6))}, record(3));
  store->write({erase(task("a")), put(xcom(task("a"), "k2", "6", 7))}, record(4));
  writer.release();

  for (const std::size_t refused : {1, 3}) {
    const boost::system::error_code error = wait_for(results[refused].get_future(), "a refused write");
    ASSERT_TRUE(error) << "write " << refused;
    EXPECT_STREQ(error.category().name(), "sqlite");
    EXPECT_EQ(error.value() & 0xff, SQLITE_CONSTRAINT) << error.message();
    EXPECT_EQ(error.message(), sqlite3_errstr(error.value()));
  }
  for (const std::size_t accepted : {0, 2, 4}) {
    EXPECT_FALSE(wait_for(results[accepted].get_future(), "an accepted write")) << "write " << accepted;
  }

  // A later group commits as usual.
  ASSERT_FALSE(write_and_wait(*store, {put(xcom(task("d"), "k", "7", 8))}));
  // A refused write left nothing behind, not even its valid first change; the others kept their order.
  const std::vector<rx::XCom> expected{xcom(task("blocker"), "k", "0", 1), xcom(task("c"), "k", "4", 5),
                                       xcom(task("a"), "k2", "6", 7), xcom(task("d"), "k", "7", 8)};
  EXPECT_EQ(describe(store->load()), describe(expected));
  EXPECT_EQ(describe(rx::open_sqlite_store(path)->load()), describe(expected));
}

TEST(SqliteStore, OpeningInADirectoryThatDoesNotExistThrowsNamingThePath) {
  const TempDirectory directory;
  const std::string path = directory.file("missing/xcoms.db");
  try {
    (void)rx::open_sqlite_store(path);
    FAIL() << "open_sqlite_store did not throw";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("unable to open database file"), std::string::npos) << message;
  }
}

TEST(SqliteStore, OpeningAFileThatIsNotADatabaseThrowsSqlitesMessage) {
  const TempDirectory directory;
  const std::string path = directory.file("not-a-database");
  std::ofstream(path) << std::string(4096, 'x');
  try {
    (void)rx::open_sqlite_store(path);
    FAIL() << "open_sqlite_store did not throw";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("file is not a database"), std::string::npos) << message;
  }
}

TEST(SqliteStore, DestroyingItCompletesEveryQueuedWrite) {
  const TempDirectory directory;
  const std::string path = directory.file("xcoms.db");
  constexpr std::size_t WRITES = 5000;
  auto store = rx::open_sqlite_store(path);
  WriterBlock writer;
  writer.block(*store, xcom(task("blocker"), "k", "0", 1));
  std::atomic<std::size_t> succeeded{0};
  for (std::size_t i = 0; i < WRITES; ++i) {
    store->write({put(xcom(task("a"), numbered("k", i), "1", 2 + i))}, [&](boost::system::error_code error) {
      if (!error) {
        succeeded.fetch_add(1);
      }
    });
  }
  // The destructor runs while the writes are queued (the writer is held), and must wait for them.
  std::promise<void> destroying;
  std::thread destroyer([&destroying, store = std::move(store)]() mutable {
    destroying.set_value();
    store.reset();
  });
  wait_for(destroying.get_future(), "the destroyer to start");
  writer.release();
  destroyer.join();
  EXPECT_EQ(succeeded.load(), WRITES);
  EXPECT_EQ(rx::open_sqlite_store(path)->load().size(), 1 + WRITES);
}

TEST(SqliteStore, ReleasedByItsOwnDoneItStillCompletesEveryQueuedWrite) {
  const TempDirectory directory;
  const std::string path = directory.file("xcoms.db");
  constexpr std::size_t WRITES = 2000;
  auto store = rx::open_sqlite_store(path);
  // The first write's `done` holds a reference: dropping it on the writer thread, once the test has
  // dropped its own, runs the store's destructor on the writer thread with the writes queued.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  store->write({put(xcom(task("blocker"), "k", "0", 1))},
               [keep = store, released](boost::system::error_code) { (void)released.wait_for(rx_test::HANG_GUARD); });
  Completions completions(WRITES);
  for (std::size_t i = 0; i < WRITES; ++i) {
    store->write({put(xcom(task("a"), numbered("k", i), "1", 2 + i))},
                 [&](boost::system::error_code error) { completions.add(error); });
  }
  store.reset();
  release.set_value();
  completions.wait();
  EXPECT_EQ(completions.failures(), 0U) << completions.first_error().message();
  EXPECT_EQ(rx::open_sqlite_store(path)->load().size(), 1 + WRITES);
}

// --- Durability across kill -9 ----------------------------------------------------------------------

constexpr std::uint64_t CHILD_MAX_WRITES = 2'000'000;  // bounds the child if nobody kills it
constexpr int CHILD_IN_FLIGHT = 64;

// The child process: writes XComs as fast as the store takes them, `CHILD_IN_FLIGHT` at a time,
// and reports each acknowledged sequence number on `fd`. Never returns.
[[noreturn]] void run_writing_child(const std::string& path, int fd) {
  try {
    const auto store = rx::open_sqlite_store(path);
    std::atomic<std::uint64_t> next{1};
    std::promise<void> finished;
    std::atomic<int> running{CHILD_IN_FLIGHT};
    std::function<void()> issue = [&] {
      const std::uint64_t sequence = next.fetch_add(1);
      if (sequence > CHILD_MAX_WRITES) {
        if (running.fetch_sub(1) == 1) {
          finished.set_value();
        }
        return;
      }
      store->write({put(xcom(task("t", static_cast<int>(sequence % 1000)), numbered("k", sequence),
                             "{\"n\":" + std::to_string(sequence) + "}", sequence))},
                   [&, sequence](boost::system::error_code error) {
                     if (error || ::write(fd, &sequence, sizeof sequence) != sizeof sequence) {
                       ::_exit(3);
                     }
                     issue();
                   });
    };
    for (int i = 0; i < CHILD_IN_FLIGHT; ++i) {
      issue();
    }
    finished.get_future().wait();
  } catch (...) {
    ::_exit(2);
  }
  ::_exit(0);
}

TEST(SqliteStore, EveryAcknowledgedWriteSurvivesTheProcessBeingKilled) {
  const TempDirectory directory;
  const std::string path = directory.file("xcoms.db");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t child = ::fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    ::close(fds[0]);
    run_writing_child(path, fds[1]);
  }
  ::close(fds[1]);

  // Reads acknowledgements until EOF (the child died and the pipe closed); kills the child once
  // `kill_after` have arrived, while it keeps writing.
  constexpr std::size_t KILL_AFTER = 20'000;
  std::set<std::uint64_t> acknowledged;
  std::vector<char> pending;
  bool killed = false;
  for (;;) {
    pollfd readable{fds[0], POLLIN, 0};
    const int ready = ::poll(&readable, 1, static_cast<int>(rx_test::HANG_GUARD.count() * 1000));
    if (ready == -1 && errno == EINTR) {
      continue;
    }
    if (ready != 1) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
      FAIL() << "the child stopped acknowledging writes";
    }
    char buffer[4096];
    const ssize_t got = ::read(fds[0], buffer, sizeof buffer);
    if (got == 0) {
      break;
    }
    ASSERT_GT(got, 0) << std::strerror(errno);
    pending.insert(pending.end(), buffer, buffer + got);
    std::size_t used = 0;
    for (; pending.size() - used >= sizeof(std::uint64_t); used += sizeof(std::uint64_t)) {
      std::uint64_t sequence = 0;
      std::memcpy(&sequence, pending.data() + used, sizeof sequence);
      acknowledged.insert(sequence);
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(used));
    if (!killed && acknowledged.size() >= KILL_AFTER) {
      ASSERT_EQ(::kill(child, SIGKILL), 0);
      killed = true;
    }
  }
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child ended otherwise: status " << status;
  // Writes of 8 bytes to a pipe are atomic: a partial acknowledgement is a bug of the test.
  EXPECT_TRUE(pending.empty());
  ASSERT_GE(acknowledged.size(), KILL_AFTER);

  const std::vector<rx::XCom> loaded = rx::open_sqlite_store(path)->load();
  std::set<std::uint64_t> found;
  for (const rx::XCom& value : loaded) {
    ASSERT_EQ(describe(value),
              describe(xcom(task("t", static_cast<int>(value.sequence % 1000)), numbered("k", value.sequence),
                            "{\"n\":" + std::to_string(value.sequence) + "}", value.sequence)));
    found.insert(value.sequence);
  }
  std::size_t lost = 0;
  for (const std::uint64_t sequence : acknowledged) {
    lost += found.count(sequence) == 0 ? 1 : 0;
  }
  EXPECT_EQ(lost, 0U) << "of " << acknowledged.size() << " acknowledged writes, " << found.size() << " loaded";
}

}  // namespace

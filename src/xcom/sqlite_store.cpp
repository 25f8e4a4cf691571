// rx::open_sqlite_store(): XComs in an SQLite database in WAL mode, written by a thread of the
// store's own that commits whatever has been queued in one transaction (group commit).
//
// Threads: write() runs on the server's loop and only appends to the queue (a mutex held for a
// push_back). The writer thread swaps the whole queue out, commits it in groups of at most
// `max_group_changes` changes (a write is never split), and calls each group's `done` after its
// COMMIT, holding no lock. load() uses the writer's connection under `connection_mutex_`, which
// the writer holds only while it runs a transaction. A `done` runs on the writer thread and must
// not throw (the thread's function is noexcept); it may write again, or load.
//
// Failures: a write whose change the table refuses (its CHECKs are the model's validity rules)
// fails alone, and its group is committed without it; any other failure (I/O, a full disk, another
// process holding the database past the busy timeout) fails the whole group. Either way the
// store goes on with the next group.
//
// Lifetime: the state the thread uses (connection, queue) is a Writer shared by the store and
// the thread. The store's destructor asks the thread to finish what is queued and joins it, unless
// it runs on that thread (a `done` released the last reference to the store); then it detaches,
// and the thread, which owns the Writer too, finishes the queue and closes the database alone.
#include "xcom/wire.hpp"

#include <remote_xcomm/xcom.hpp>

#include <boost/system/error_category.hpp>
#include <boost/system/error_code.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace rx {
namespace {

// boost::system::error_category's destructor is protected and non-virtual by design.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
/// SQLite's (extended) result codes as error codes: what a failed group's `done` receives.
class SqliteCategory final : public boost::system::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "sqlite"; }
  [[nodiscard]] std::string message(int value) const override { return sqlite3_errstr(value); }
};
#pragma GCC diagnostic pop

const boost::system::error_category& sqlite_category() noexcept {
  static const SqliteCategory category;
  return category;
}

boost::system::error_code make_sqlite_error(int result) noexcept { return {result, sqlite_category()}; }

/// The schema, version 1 (PRAGMA user_version). The CHECKs are the model's own rules (an empty
/// key or id, a map index below -1 is an invalid XCom): a row that breaks them fails its write.
constexpr const char* SCHEMA = R"sql(
CREATE TABLE IF NOT EXISTS xcoms (
  dag_id TEXT NOT NULL CHECK (dag_id <> ''),
  run_id TEXT NOT NULL CHECK (run_id <> ''),
  task_id TEXT NOT NULL CHECK (task_id <> ''),
  map_index INTEGER NOT NULL CHECK (map_index >= -1),
  key TEXT NOT NULL CHECK (key <> ''),
  value_json TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  sequence INTEGER NOT NULL,
  timestamp_us INTEGER NOT NULL,
  PRIMARY KEY (dag_id, run_id, task_id, map_index, key)
);
PRAGMA user_version = 1;
)sql";
constexpr int SCHEMA_VERSION = 1;

constexpr const char* UPSERT = R"sql(
INSERT INTO xcoms (dag_id, run_id, task_id, map_index, key, value_json, attempt, sequence, timestamp_us)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (dag_id, run_id, task_id, map_index, key) DO UPDATE SET
  value_json = excluded.value_json, attempt = excluded.attempt, sequence = excluded.sequence,
  timestamp_us = excluded.timestamp_us
)sql";
constexpr const char* DELETE_TASK_INSTANCE =
    "DELETE FROM xcoms WHERE dag_id = ?1 AND run_id = ?2 AND task_id = ?3 AND map_index = ?4";
constexpr const char* SELECT_ALL =
    "SELECT dag_id, run_id, task_id, map_index, key, value_json, attempt, sequence, timestamp_us "
    "FROM xcoms ORDER BY sequence";

/// How long a transaction waits for another connection (another process) to release the database.
constexpr int BUSY_TIMEOUT_MS = 5000;

/// Finalises a prepared statement.
struct StatementDeleter {
  void operator()(sqlite3_stmt* statement) const noexcept { sqlite3_finalize(statement); }
};
using Statement = std::unique_ptr<sqlite3_stmt, StatementDeleter>;

/// Closes a connection (after its statements are finalised: members are destroyed in reverse).
struct ConnectionDeleter {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using Connection = std::unique_ptr<sqlite3, ConnectionDeleter>;

std::string_view column_text(sqlite3_stmt* statement, int column) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement, column));
  return text == nullptr ? std::string_view() : std::string_view(text, sqlite3_column_bytes(statement, column));
}

int bind_text(sqlite3_stmt* statement, int index, std::string_view text) {
  // SQLITE_STATIC: the change outlives the statement's step, so SQLite need not copy the text.
  return sqlite3_bind_text(statement, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
}

/// One write() waiting for its group's commit.
struct PendingWrite {
  std::vector<XComStore::Change> changes;
  XComStore::WriteDone done;
  bool refused = false;  // its change broke a constraint: completed with that error, left out of its group
};

/// The connection, its statements and the queue: everything the writer thread touches.
class Writer {
 public:
  /// Opens (creates) the database and prepares it. Throws std::runtime_error naming `path`.
  Writer(const std::string& path, const SqliteStoreOptions& options) : max_group_changes_(options.max_group_changes) {
    sqlite3* db = nullptr;
    const int opened =
        sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    db_.reset(db);  // closed even when the open failed
    if (opened != SQLITE_OK) {
      fail(path, "cannot open", opened);
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);

    // journal_mode answers with the mode it is now in: "memory" for ":memory:", for instance,
    // where WAL (and so this store's durability) is not available.
    Statement journal = prepare(path, "PRAGMA journal_mode=WAL");
    if (const int stepped = sqlite3_step(journal.get()); stepped != SQLITE_ROW) {
      fail(path, "cannot set WAL mode in", stepped);
    }
    if (const std::string_view mode = column_text(journal.get(), 0); mode != "wal") {
      throw std::runtime_error("XCom store " + path + ": the database cannot be in WAL mode (it is in '" +
                               std::string(mode) + "' mode)");
    }
    journal.reset();
    exec(path, options.sync_every_commit ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");

    Statement version = prepare(path, "PRAGMA user_version");
    if (const int stepped = sqlite3_step(version.get()); stepped != SQLITE_ROW) {
      fail(path, "cannot read the schema version of", stepped);
    }
    const int user_version = sqlite3_column_int(version.get(), 0);
    version.reset();
    if (user_version > SCHEMA_VERSION) {
      throw std::runtime_error("XCom store " + path + ": written by a newer version (schema " +
                               std::to_string(user_version) + ", this one reads " + std::to_string(SCHEMA_VERSION) +
                               ")");
    }
    exec(path, SCHEMA);

    begin_ = prepare(path, "BEGIN IMMEDIATE");
    commit_ = prepare(path, "COMMIT");
    rollback_ = prepare(path, "ROLLBACK");
    upsert_ = prepare(path, UPSERT);
    delete_ = prepare(path, DELETE_TASK_INSTANCE);
    select_ = prepare(path, SELECT_ALL);
  }

  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer() = default;

  void enqueue(std::vector<XComStore::Change>&& changes, XComStore::WriteDone&& done) {
    bool wake = false;
    {
      const std::lock_guard lock(queue_mutex_);
      queue_.push_back({std::move(changes), std::move(done)});
      wake = std::exchange(writer_idle_, false);
    }
    if (wake) {
      queue_changed_.notify_one();
    }
  }

  /// Lets run() return once the queue is empty.
  void stop() {
    {
      const std::lock_guard lock(queue_mutex_);
      stopping_ = true;
    }
    queue_changed_.notify_one();
  }

  /// The writer thread: commits what is queued, group by group, until stopped with nothing queued.
  void run() noexcept {
    std::vector<PendingWrite> taken;
    for (;;) {
      {
        std::unique_lock lock(queue_mutex_);
        while (queue_.empty() && !stopping_) {
          writer_idle_ = true;
          queue_changed_.wait(lock);
        }
        writer_idle_ = false;
        if (queue_.empty()) {
          return;  // stopping, and everything queued is committed
        }
        taken.swap(queue_);  // `queue_` gets the emptied vector back, and keeps its capacity
      }
      for (std::size_t first = 0; first < taken.size();) {
        std::size_t last = first;
        std::size_t changes = 0;
        // A group: at least one write, then more while they fit in max_group_changes.
        do {
          changes += taken[last].changes.size();
          ++last;
        } while (last < taken.size() && changes + taken[last].changes.size() <= max_group_changes_);
        commit_group(taken.data() + first, taken.data() + last);
        first = last;
      }
      taken.clear();
    }
  }

  std::vector<XCom> load() {
    const std::lock_guard lock(connection_mutex_);
    sqlite3_stmt* select = select_.get();
    std::vector<XCom> xcoms;
    int stepped = SQLITE_ROW;
    while ((stepped = sqlite3_step(select)) == SQLITE_ROW) {
      XCom& xcom = xcoms.emplace_back();
      xcom.task_instance.dag_id = column_text(select, 0);
      xcom.task_instance.run_id = column_text(select, 1);
      xcom.task_instance.task_id = column_text(select, 2);
      xcom.task_instance.map_index = sqlite3_column_int(select, 3);
      xcom.key = column_text(select, 4);
      xcom.value_json = column_text(select, 5);
      xcom.attempt = static_cast<std::uint32_t>(sqlite3_column_int64(select, 6));
      xcom.sequence = static_cast<std::uint64_t>(sqlite3_column_int64(select, 7));
      xcom.timestamp = detail::from_unix_micros(sqlite3_column_int64(select, 8));
    }
    sqlite3_reset(select);
    if (stepped != SQLITE_DONE) {
      throw std::runtime_error(std::string("XCom store: cannot read the XComs: ") + sqlite3_errstr(stepped));
    }
    return xcoms;
  }

 private:
  [[noreturn]] void fail(const std::string& path, const char* what, int result) const {
    const char* message = db_ != nullptr ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(result);
    throw std::runtime_error("XCom store: " + std::string(what) + " the SQLite database " + path + ": " + message);
  }

  Statement prepare(const std::string& path, const char* sql) const {
    sqlite3_stmt* statement = nullptr;
    if (const int prepared = sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &statement, nullptr);
        prepared != SQLITE_OK) {
      fail(path, "cannot prepare", prepared);
    }
    return Statement(statement);
  }

  void exec(const std::string& path, const char* sql) const {
    if (const int result = sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr); result != SQLITE_OK) {
      fail(path, "cannot set up", result);
    }
  }

  /// Runs a statement that returns no rows, and resets it. SQLITE_DONE becomes SQLITE_OK.
  static int step(sqlite3_stmt* statement) noexcept {
    const int stepped = sqlite3_step(statement);
    sqlite3_reset(statement);
    return stepped == SQLITE_DONE ? SQLITE_OK : stepped;
  }

  int apply(const XComStore::Change& change) noexcept {
    const XCom& xcom = change.xcom;
    const TaskInstanceKey& task = xcom.task_instance;
    switch (change.kind) {
      case XComStore::Change::Kind::put: {
        sqlite3_stmt* upsert = upsert_.get();
        bind_text(upsert, 1, task.dag_id);
        bind_text(upsert, 2, task.run_id);
        bind_text(upsert, 3, task.task_id);
        sqlite3_bind_int(upsert, 4, task.map_index);
        bind_text(upsert, 5, xcom.key);
        bind_text(upsert, 6, xcom.value_json);
        sqlite3_bind_int64(upsert, 7, xcom.attempt);
        sqlite3_bind_int64(upsert, 8, static_cast<sqlite3_int64>(xcom.sequence));
        sqlite3_bind_int64(upsert, 9, detail::to_unix_micros(xcom.timestamp));
        return step(upsert);
      }
      case XComStore::Change::Kind::erase_task_instance: {
        sqlite3_stmt* erase = delete_.get();
        bind_text(erase, 1, task.dag_id);
        bind_text(erase, 2, task.run_id);
        bind_text(erase, 3, task.task_id);
        sqlite3_bind_int(erase, 4, task.map_index);
        return step(erase);
      }
    }
    return SQLITE_MISUSE;
  }

  /// What a transaction came to: SQLITE_OK once committed; otherwise rolled back, `result` says
  /// why, and `refused` is the write whose change the database refused, if that was the reason.
  struct Outcome {
    int result = SQLITE_OK;
    PendingWrite* refused = nullptr;
  };

  /// Errors that one change causes (a CHECK, a value over SQLite's size limit), as opposed to those
  /// of the database (I/O, full disk, busy), which any write of the group would meet.
  static bool refuses_the_change(int result) noexcept {
    return (result & 0xff) == SQLITE_CONSTRAINT || (result & 0xff) == SQLITE_TOOBIG;
  }

  /// One transaction for the writes [first, last) not yet refused.
  Outcome transact(PendingWrite* first, PendingWrite* last) noexcept {
    const std::lock_guard lock(connection_mutex_);
    Outcome outcome{step(begin_.get())};
    for (PendingWrite* write = first; outcome.result == SQLITE_OK && write != last; ++write) {
      if (write->refused) {
        continue;
      }
      for (const XComStore::Change& change : write->changes) {
        if (outcome.result = apply(change); outcome.result != SQLITE_OK) {
          outcome.refused = refuses_the_change(outcome.result) ? write : nullptr;
          break;
        }
      }
    }
    if (outcome.result == SQLITE_OK) {
      outcome.result = step(commit_.get());
    }
    // A failed COMMIT (SQLITE_BUSY, for instance) leaves the transaction open; a failed statement
    // may have rolled it back already (SQLITE_FULL, for instance).
    if (outcome.result != SQLITE_OK && sqlite3_get_autocommit(db_.get()) == 0) {
      step(rollback_.get());
    }
    // Text bound with SQLITE_STATIC points into changes that are about to be destroyed.
    sqlite3_clear_bindings(upsert_.get());
    sqlite3_clear_bindings(delete_.get());
    return outcome;
  }

  /// Commits a group and completes its writes. A write whose change the database refuses fails
  /// alone: the group is rolled back and committed again without it (one more transaction per
  /// refused write), so the writes that happened to be queued with it still succeed. Any other
  /// failure fails the whole group.
  void commit_group(PendingWrite* first, PendingWrite* last) noexcept {
    Outcome outcome = transact(first, last);
    while (outcome.refused != nullptr) {
      outcome.refused->refused = true;
      outcome.refused->done(make_sqlite_error(outcome.result));
      outcome = transact(first, last);
    }
    const boost::system::error_code error =
        outcome.result == SQLITE_OK ? boost::system::error_code() : make_sqlite_error(outcome.result);
    for (PendingWrite* write = first; write != last; ++write) {
      if (!write->refused) {
        write->done(error);
      }
    }
  }

  const std::size_t max_group_changes_;

  // Declared before the statements: destroyed after them.
  Connection db_;
  // Held by the writer while it runs a transaction and by load(): one user of the connection at a time.
  std::mutex connection_mutex_;
  Statement begin_;
  Statement commit_;
  Statement rollback_;
  Statement upsert_;
  Statement delete_;
  Statement select_;

  std::mutex queue_mutex_;
  std::condition_variable queue_changed_;
  std::vector<PendingWrite> queue_;
  bool writer_idle_ = false;  // the writer waits on `queue_changed_`: the next enqueue notifies it
  bool stopping_ = false;
};

class SqliteStore final : public XComStore {
 public:
  explicit SqliteStore(std::shared_ptr<Writer> writer)
      : writer_(std::move(writer)), thread_([writer = writer_] { writer->run(); }) {}

  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  ~SqliteStore() override {
    writer_->stop();
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();  // a `done` released the store: the thread finishes the queue on its own
    } else {
      thread_.join();
    }
  }

  std::vector<XCom> load() override { return writer_->load(); }

  void write(std::vector<Change> changes, WriteDone done) override {
    writer_->enqueue(std::move(changes), std::move(done));
  }

 private:
  std::shared_ptr<Writer> writer_;
  std::thread thread_;
};

}  // namespace

std::shared_ptr<XComStore> open_sqlite_store(const std::string& path, SqliteStoreOptions options) {
  options.max_group_changes = std::max<std::size_t>(options.max_group_changes, 1);
  return std::make_shared<SqliteStore>(std::make_shared<Writer>(path, options));
}

}  // namespace rx

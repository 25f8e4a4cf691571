// XCom stores: pushes per second through rx::XComStore::write, and for the SQLite store the
// latency from write() to its `done`, with 1, 64 and 4,096 writes outstanding.
//
// Each write puts one XCom (a 64-byte JSON value) for a task instance of its own, so the table
// grows as a server's does. A closed loop: each `done` issues the next write until the budget
// (one iteration = one push) is spent, all of it timed. The SQLite store runs on a fresh database
// in a temporary directory per run, in WAL mode with synchronous=NORMAL (BM_SqliteStoreWrite) or
// FULL (BM_SqliteStoreWriteSyncEveryCommit, an fsync per group commit). The memory store
// completes a write inside write(), so only one of its writes is ever outstanding whatever the
// argument says; it is the ceiling the SQLite figures compare to.
//
// Counters: pushes_per_second (rate), p50_us and p99_us (write() to `done`), items_per_second.
// Target (issue): the SQLite store sustains at least 50,000 pushes/s with group commit.
#include "common/closed_loop.hpp"
#include "common/payloads.hpp"
#include "common/temp_directory.hpp"

#include <remote_xcomm/xcom.hpp>

#include <benchmark/benchmark.h>
#include <boost/json/serialize.hpp>

#include <stdlib.h>  // mkdtemp

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace {

using rx::bench::Clock;
using rx::bench::ClosedLoop;

using rx::bench::TempDirectory;

/// Issues pushes to a store for a closed loop: `issue(loop, slot)` writes one XCom whose `done`
/// claims and issues the next one for the same slot, then completes.
class Pusher {
 public:
  Pusher(rx::XComStore& store, std::string value_json) : store_(store), value_json_(std::move(value_json)) {}

  void issue(ClosedLoop& loop, int slot) {
    // A store that completes inside write() (the memory store) would recurse once per push: a
    // completion that issues on the thread already issuing queues its slot for the outermost
    // issue() to take instead.
    thread_local std::vector<int>* deferred = nullptr;
    if (deferred != nullptr) {
      deferred->push_back(slot);
      return;
    }
    std::vector<int> slots{slot};
    deferred = &slots;
    while (!slots.empty()) {
      const int next = slots.back();
      slots.pop_back();
      write_one(loop, next);
    }
    deferred = nullptr;
  }

 private:
  void write_one(ClosedLoop& loop, int slot) {
    const std::uint64_t sequence = sequence_.fetch_add(1, std::memory_order_relaxed) + 1;
    rx::XComStore::Change change;
    change.xcom.task_instance = rx::bench::make_key(sequence);
    change.xcom.key = "return_value";
    change.xcom.value_json = value_json_;
    change.xcom.attempt = 1;
    change.xcom.sequence = sequence;
    const Clock::time_point started = Clock::now();
    change.xcom.timestamp = std::chrono::system_clock::now();
    std::vector<rx::XComStore::Change> changes;
    changes.push_back(std::move(change));
    store_.write(std::move(changes), [this, &loop, slot, started](boost::system::error_code error) {
      const Clock::time_point finished = Clock::now();
      if (loop.claim()) {
        issue(loop, slot);
      }
      loop.complete(started, finished, error ? "write failed: " + error.message() : std::string());
    });
  }

  rx::XComStore& store_;
  const std::string value_json_;
  std::atomic<std::uint64_t> sequence_{0};
};

std::string value_json() { return boost::json::serialize(rx::bench::make_xcom_payload(64)); }

void run(benchmark::State& state, rx::XComStore& store) {
  Pusher pusher(store, value_json());
  rx::bench::run_closed_loop(
      state, static_cast<int>(state.range(0)), [&pusher](ClosedLoop& loop, int slot) { pusher.issue(loop, slot); },
      "pushes_per_second");
}

void BM_MemoryStoreWrite(benchmark::State& state) {
  const auto store = rx::make_memory_store();
  run(state, *store);
}

void run_sqlite(benchmark::State& state, bool sync_every_commit) {
  const TempDirectory directory("rx-bm-xcom-store");
  std::shared_ptr<rx::XComStore> store;
  try {
    rx::SqliteStoreOptions options;
    options.sync_every_commit = sync_every_commit;
    store = rx::open_sqlite_store(directory.file("xcoms.db"), options);
  } catch (const std::exception& error) {
    state.SkipWithError(error.what());
    return;
  }
  run(state, *store);
  store.reset();  // joins the writer before the directory goes
}

void BM_SqliteStoreWrite(benchmark::State& state) { run_sqlite(state, false); }

void BM_SqliteStoreWriteSyncEveryCommit(benchmark::State& state) { run_sqlite(state, true); }

// In flight: 1 (one push at a time: a commit per push), 64, 4,096 (groups form).
BENCHMARK(BM_MemoryStoreWrite)->Arg(1)->Arg(64)->Arg(4096)->ArgNames({"in_flight"})->UseRealTime();
BENCHMARK(BM_SqliteStoreWrite)->Arg(1)->Arg(64)->Arg(4096)->ArgNames({"in_flight"})->UseRealTime();
BENCHMARK(BM_SqliteStoreWriteSyncEveryCommit)->Arg(1)->Arg(64)->Arg(4096)->ArgNames({"in_flight"})->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

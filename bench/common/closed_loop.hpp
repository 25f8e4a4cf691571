// A closed-loop load: a fixed number of requests in flight, each completion issuing the next,
// until a budget of requests is spent. Records every request's latency.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace rx::bench {

using Clock = std::chrono::steady_clock;

/// A one-shot event. The setter notifies while holding the lock, so once `wait()` has returned
/// the setter touches nothing of it again and the waiter may destroy it (std::promise does not
/// promise that when the waiter owns the promise).
class Signal {
 public:
  void set() {
    const std::lock_guard lock(mutex_);
    set_ = true;
    condition_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mutex_);
    condition_.wait(lock, [this] { return set_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable condition_;
  bool set_ = false;
};

/// Shared by the benchmark thread and the completion callbacks of one closed-loop run.
///
/// A completion calls `claim()` (may I issue another?), issues if so, then `complete()`. Claiming
/// before completing keeps the run alive: `wait()` cannot return, and the run cannot be
/// destroyed, while a claimed request has still to complete. Thread safety: `claim` and
/// `complete` may be called from any threads at once.
class ClosedLoop {
 public:
  explicit ClosedLoop(std::int64_t total) : total_(total), latencies_ns_(static_cast<std::size_t>(total)) {}

  [[nodiscard]] std::int64_t total() const noexcept { return total_; }

  /// True if the caller may issue one more request (the budget is not yet spent).
  [[nodiscard]] bool claim() noexcept { return issued_.fetch_add(1, std::memory_order_relaxed) < total_; }

  /// Records one finished request that started at `started`; `error` is empty on success.
  void complete(Clock::time_point started, Clock::time_point finished, const std::string& error = {}) {
    if (!error.empty()) {
      const std::lock_guard lock(error_mutex_);
      if (error_.empty()) {
        error_ = error;
      }
    }
    const std::int64_t index = completed_.fetch_add(1, std::memory_order_acq_rel);
    latencies_ns_[static_cast<std::size_t>(index)] =
        std::chrono::duration_cast<std::chrono::nanoseconds>(finished - started).count();
    if (index + 1 == total_) {
      done_.set();
    }
  }

  /// Blocks until every request of the budget has completed.
  void wait() { done_.wait(); }

  /// The first error reported, empty if none.
  [[nodiscard]] std::string error() const {
    const std::lock_guard lock(error_mutex_);
    return error_;
  }

  /// The `q` quantile (0..1) of the recorded latencies, in microseconds. Call after wait().
  [[nodiscard]] double quantile_us(double q) {
    if (latencies_ns_.empty()) {
      return 0.0;
    }
    const auto rank = static_cast<std::size_t>(q * static_cast<double>(latencies_ns_.size() - 1) + 0.5);
    std::nth_element(latencies_ns_.begin(), latencies_ns_.begin() + static_cast<std::ptrdiff_t>(rank),
                     latencies_ns_.end());
    return static_cast<double>(latencies_ns_[rank]) / 1000.0;
  }

 private:
  const std::int64_t total_;
  std::atomic<std::int64_t> issued_{0};
  std::atomic<std::int64_t> completed_{0};
  std::vector<std::int64_t> latencies_ns_;
  Signal done_;
  mutable std::mutex error_mutex_;
  std::string error_;
};

/// Reports the counters every round-trip benchmark, baseline or framework, reports: items
/// processed, `rate_counter` (completions per second of real time), p50_us and p99_us; or
/// skips with the first error.
inline void report_closed_loop(benchmark::State& state, ClosedLoop& loop, const char* rate_counter) {
  if (const std::string error = loop.error(); !error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters[rate_counter] = benchmark::Counter(static_cast<double>(loop.total()), benchmark::Counter::kIsRate);
  state.counters["p50_us"] = loop.quantile_us(0.50);
  state.counters["p99_us"] = loop.quantile_us(0.99);
}

/// Runs `issue(loop, slot)` as a closed loop of `in_flight` requests over the whole benchmark
/// budget (one iteration = one request), all of it timed, then reports (report_closed_loop).
/// `issue` starts one request for `slot`; its completion takes the time, then does
/// `if (loop.claim()) issue(loop, slot);` and then `loop.complete(started, now, error)`.
template <typename Issue>
void run_closed_loop(benchmark::State& state, int in_flight, Issue&& issue, const char* rate_counter) {
  ClosedLoop loop(std::max<std::int64_t>(state.max_iterations, 1));
  while (state.KeepRunningBatch(loop.total())) {
    const std::int64_t first = std::min<std::int64_t>(in_flight, loop.total());
    for (std::int64_t slot = 0; slot < first; ++slot) {
      if (loop.claim()) {
        issue(loop, static_cast<int>(slot));
      }
    }
    loop.wait();
  }
  report_closed_loop(state, loop, rate_counter);
}

}  // namespace rx::bench

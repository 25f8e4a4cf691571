// The token and queue behind rx::Loop. Internal: use rx::Loop and rx::LoopExecutor.
#pragma once

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <memory>
#include <type_traits>
#include <utility>

namespace rx::detail {

/// One unit of loop work in an intrusive queue. `invoke(job, true)` runs and frees it;
/// `invoke(job, false)` only frees it (a loop destroyed with work still queued).
struct LoopJob {
  LoopJob* next = nullptr;
  void (*invoke)(LoopJob* job, bool run) = nullptr;
};

template <typename Function>
struct LoopJobFor final : LoopJob {
  explicit LoopJobFor(Function&& f) : function(std::move(f)) { invoke = &invoke_job; }

  static void invoke_job(LoopJob* job, bool run) {
    auto* self = static_cast<LoopJobFor*>(job);
    // Free the node before running, so a job that queues another can reuse the memory.
    Function function(std::move(self->function));
    delete self;
    if (run) {
      std::move(function)();
    }
  }

  Function function;
};

template <typename Function>
LoopJob* make_loop_job(Function&& function) {
  using Decayed = std::decay_t<Function>;
  return new LoopJobFor<Decayed>(Decayed(std::forward<Function>(function)));
}

/// The loop token: at most one thread runs loop work at a time.
///
/// Producers push jobs onto a lock-free stack; whichever thread holds the token takes the whole
/// stack at once, restores arrival order and runs it. Releasing is followed by a re-check, so a
/// job pushed while the holder was leaving is never stranded.
class LoopCore : public std::enable_shared_from_this<LoopCore> {
 public:
  explicit LoopCore(boost::asio::io_context& context) noexcept : context_(context) {}
  LoopCore(const LoopCore&) = delete;
  LoopCore& operator=(const LoopCore&) = delete;
  ~LoopCore();

  /// Queues `job` and runs the loop's pending work on this thread if no thread is running it.
  void dispatch(LoopJob* job);
  /// Queues `job`; if no thread is inside the loop, asks the io_context's thread to run it.
  void post(LoopJob* job);

  [[nodiscard]] bool running_in_this_thread() const noexcept;
  [[nodiscard]] boost::asio::io_context& context() const noexcept { return context_; }

 private:
  void push(LoopJob* job) noexcept;
  void run_pending();
  void schedule_drain();

  boost::asio::io_context& context_;
  std::atomic<LoopJob*> incoming_{nullptr};  // LIFO stack filled by any thread
  std::atomic<bool> running_{false};         // the token
  std::atomic<bool> drain_scheduled_{false};
  LoopJob* ready_ = nullptr;  // FIFO taken from incoming_, touched only by the token holder
};

}  // namespace rx::detail

// How a client operation's outcome reaches its handler, on the handler's associated executor:
// from a gRPC thread (deliver) or from the caller's own code (post). Shared by the unary calls
// (Send, Pull, GetState) and a Watch's next(). Internal.
#pragma once

#include <remote_xcomm/loop.hpp>

#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>

#include <memory>
#include <optional>
#include <tuple>
#include <utility>

namespace rx::detail {

/// One unary call that a completion started while a gRPC thread ran it on a borrowed loop: its
/// RPC is started by that thread once the loop's run is over (see DeferredStarts).
struct DeferredStart {
  DeferredStart() = default;
  DeferredStart(const DeferredStart&) = delete;
  DeferredStart& operator=(const DeferredStart&) = delete;
  virtual ~DeferredStart() = default;
  /// Starts the RPC; the call may be complete and freed once this returns.
  virtual void start_deferred() = 0;
  DeferredStart* next_start = nullptr;
};

/// Calls made by completions that a gRPC thread runs on a loop it borrowed: their RPCs are started
/// by that thread once the loop's run is over, not inside it. Starting an RPC is most of a call's
/// cost; inside the run it spent the borrowed budget (BORROWED_LOOP_BUDGET) in a few completions,
/// after which the rest went to the loop's own thread, one wake each time. Outside, the loop stays
/// short and both pollers start RPCs, as a raw gRPC client does from its callbacks.
struct DeferredStarts {
  int depth = 0;  // deliver() frames on this thread that will start what is queued
  DeferredStart* first = nullptr;
  DeferredStart* last = nullptr;

  /// Queues `call` if this thread is inside a deliver(); false if it should start now.
  bool defer(DeferredStart* call) noexcept {
    if (depth == 0) {
      return false;
    }
    (last != nullptr ? last->next_start : first) = call;
    last = call;
    return true;
  }

  /// Starts the queued calls, in the order they were made. Touches only the calls (and what they
  /// hold), never a Client, a loop or an io_context.
  void start_all() {
    while (DeferredStart* call = first) {
      first = call->next_start;
      if (first == nullptr) {
        last = nullptr;
      }
      call->next_start = nullptr;
      call->start_deferred();
    }
  }
};
inline thread_local DeferredStarts deferred_starts;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

/// The completion of one client operation: its handler, and work kept on the handler's executor
/// (and so its io_context) until the handler has run, as an io_context counts a handler as work
/// until it returns. `Derived` is also the loop job that runs the handler, so an outcome reaches
/// a Loop's executor without another allocation, and provides `std::tuple<Args...>
/// take_outcome()`. Nothing of the operation is touched once its handler may have run.
template <typename Derived, typename... Args>
struct ClientCompletion : LoopJob {
  using Handler = boost::asio::any_completion_handler<void(Args...)>;

  /// `loop` is the handler's associated executor when it is a Loop's, else null.
  ClientCompletion(Handler h, const LoopExecutor* loop) : handler(std::move(h)) {
    invoke = &invoke_job;
    if (loop != nullptr) {
      loop_work.emplace(boost::asio::prefer(*loop, boost::asio::execution::outstanding_work.tracked));
    } else {
      other_work = boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                       boost::asio::execution::outstanding_work.tracked);
    }
  }

  /// From a gRPC thread (a reaction): hands `job` to its handler's executor, borrowing this thread
  /// for a Loop's when it is idle. Calls that the handler (or work it lets run) makes are started
  /// once that run is over. The caller touches nothing of `job`, its loop or its io_context after.
  static void deliver(std::unique_ptr<Derived> job) {
    if (job->loop_work) {
      const LoopExecutor& loop = *job->loop_work;  // read by hand_off_job before it runs anything
      struct StartAfterRun {
        DeferredStarts& starts;
        explicit StartAfterRun(DeferredStarts& s) noexcept : starts(s) { ++starts.depth; }
        StartAfterRun(const StartAfterRun&) = delete;
        StartAfterRun& operator=(const StartAfterRun&) = delete;
        ~StartAfterRun() {
          if (--starts.depth == 0) {
            starts.start_all();
          }
        }
      } start_after_run(deferred_starts);
      hand_off_job(loop, job.release());
      return;
    }
    // An untracked copy outlives the job that execute() may free inline; destroying it touches no
    // execution context.
    const boost::asio::any_completion_executor executor =
        boost::asio::prefer(job->other_work, boost::asio::execution::outstanding_work.untracked);
    executor.execute([job = std::move(job)]() mutable { finish(std::move(job)); });
  }

  /// From the caller's own code (an initiating function, a cancel, a destructor): never runs the
  /// handler before returning. A handler with another executor than a Loop's goes through
  /// `fallback` (the Client's loop) first, which must then be alive and run.
  static void post(std::unique_ptr<Derived> job, const LoopExecutor& fallback) {
    if (job->loop_work) {
      const LoopExecutor& loop = *job->loop_work;
      post_job(loop, job.release());
      return;
    }
    boost::asio::post(fallback, [job = std::move(job)]() mutable {
      const boost::asio::any_completion_executor executor =
          boost::asio::prefer(job->other_work, boost::asio::execution::outstanding_work.untracked);
      executor.execute([job = std::move(job)]() mutable { finish(std::move(job)); });
    });
  }

  /// Runs on the handler's executor. Takes everything it still needs out of the job and frees it
  /// before running the handler; the tracked work outlives the handler's run.
  static void finish(std::unique_ptr<Derived> job) {
    Handler handler;
    handler.swap(job->handler);  // swap, not move-assign: chriskohlhoff/asio#1180
    // The slot's handler may point into the operation; it may only be cleared here, on the
    // handler's executor.
    if (handler.get_cancellation_slot().is_connected()) {
      handler.get_cancellation_slot().clear();
    }
    std::optional<LoopExecutor> work_on_loop;
    work_on_loop.swap(job->loop_work);  // (a move-construction makes GCC 12 see an uninitialised optional)
    boost::asio::any_completion_executor work_elsewhere = std::move(job->other_work);
    std::tuple<Args...> outcome = job->take_outcome();
    job.reset();
    std::apply(std::move(handler), std::move(outcome));
    // work_on_loop / work_elsewhere are released here, still inside the executor's run of this job.
  }

  /// The LoopJob: `run` false only frees the job (its io_context is being destroyed).
  static void invoke_job(LoopJob* job, bool run) {
    std::unique_ptr<Derived> owned(static_cast<Derived*>(job));
    if (run) {
      finish(std::move(owned));
    }
  }

  Handler handler;
  // Exactly one of the two is set: the handler's executor when it is a Loop's, else any other.
  std::optional<LoopExecutor> loop_work;
  boost::asio::any_completion_executor other_work;
};

}  // namespace rx::detail

// The token and queue behind rx::Loop. Internal: use rx::Loop and rx::LoopExecutor.
#pragma once

#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

namespace rx::detail {

/// How long a thread borrowed from a transport (a gRPC poller) may run loop work before it hands
/// what is left to the loop's own thread.
inline constexpr std::chrono::microseconds BORROWED_LOOP_BUDGET{200};
/// How many jobs the loop's own thread runs before it lets the io_context's other handlers in.
inline constexpr int OWN_THREAD_LOOP_BUDGET_JOBS = 256;

/// One unit of loop work in an intrusive queue. `invoke(job, true)` runs and frees it;
/// `invoke(job, false)` only frees it (an io_context destroyed with loop work still queued).
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

/// Lets a blocked caller know that its job has run (LoopCore::run_and_wait).
///
/// The waiter lives on the blocked caller's stack, and the caller returns (destroying it) as soon
/// as it sees the job has run. So signal() does everything under the lock, notify included, and
/// a caller that saw ran() without the lock takes the lock once (settle()) before it returns:
/// the signalling thread never touches a waiter that is gone.
class LoopWaiter {
 public:
  void signal() noexcept {
    const std::lock_guard lock(mutex_);
    done_ = true;
    ran_.store(true, std::memory_order_release);
    changed_.notify_all();
  }
  [[nodiscard]] bool ran() const noexcept { return ran_.load(std::memory_order_acquire); }
  /// Waits up to `timeout` for the job; true once it has run (and signal() has let go).
  bool wait_for(std::chrono::microseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [this] { return done_; });
  }
  /// After ran() said true: returns once signal() has let go of this waiter.
  void settle() noexcept { const std::lock_guard lock(mutex_); }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool done_ = false;
  std::atomic<bool> ran_{false};
};

/// The loop token: at most one thread runs loop work at a time.
///
/// Producers push jobs onto a lock-free stack; whichever thread holds the token takes the whole
/// stack at once, restores arrival order and runs it. Releasing is followed by a re-check, so a
/// job pushed while the holder was leaving is never stranded.
///
/// Who may hold the token (docs/architecture.md): a thread already inside this loop; a thread
/// running the loop's io_context (its own thread), for a bounded run before it yields to the
/// io_context's other handlers; and, through `hand_off` only, a thread that delivered work from a
/// transport (a gRPC poller), for a short budget, when no other borrowed thread runs loop work
/// and the loop has no backlog left for its own thread.
///
/// Owned by the io_context's LoopService and freed when the io_context is destroyed, so that
/// executors and work outliving their Loop stay valid, as Asio keeps strand implementations.
class LoopCore : public std::enable_shared_from_this<LoopCore> {
 public:
  explicit LoopCore(boost::asio::io_context& context) noexcept : context_(context), live_context_(&context) {}
  LoopCore(const LoopCore&) = delete;
  LoopCore& operator=(const LoopCore&) = delete;
  ~LoopCore();

  /// Asio's dispatch from outside the loop: runs the pending work now if this thread runs the
  /// loop's io_context and the token is free, else queues `job` and wakes the loop.
  void dispatch(LoopJob* job);
  /// Queues `job`; if no thread is inside the loop, asks the io_context's thread to run it.
  void post(LoopJob* job);
  /// The library's hand-off from a transport thread: may borrow the calling thread (see above).
  void hand_off(LoopJob* job);
  /// hand_off() for a transport whose reactions may come after the io_context is destroyed (the
  /// client's Exchange stream outlives its Client, and its last gRPC reactions may come after the
  /// application destroyed the io_context). The caller keeps this core alive (detail::pin_loop)
  /// and is a gRPC reaction: never the io_context's own thread outside loop work. Touches the
  /// io_context only under the lock that its destruction takes; once the io_context is gone, the
  /// job is destroyed unrun (`invoke(job, false)`), as queued jobs are then. (A job that a
  /// borrowed run started just before the io_context went may still run: such jobs must not need
  /// the io_context when they are the last of their owner's work.)
  void hand_off_pinned(LoopJob* job);
  /// For a caller that blocks until `job` has run (Server::attach, a shutdown and the like):
  /// runs the loop's pending work on the calling thread until `job` has run, whatever other
  /// threads borrow, since this thread would only wait otherwise; while another thread holds the
  /// token, waits for it and tries again. Returns once `job` has run (`waiter` tells).
  void run_and_wait(LoopJob* job, LoopWaiter& waiter);

  /// True while the calling thread is running this loop's work, at any depth of nested loops.
  [[nodiscard]] bool running_in_this_thread() const noexcept;
  [[nodiscard]] boost::asio::io_context& context() const noexcept { return context_; }

  /// Outstanding work of tracked executors, held on the io_context as one unit while nonzero.
  void work_started() noexcept;
  void work_finished() noexcept;

  /// The io_context is being destroyed: from now on nothing touches it.
  void detach_context() noexcept;

 private:
  enum class Runner { own_thread, borrowed, waiting_caller };

  void push(LoopJob* job) noexcept;
  [[nodiscard]] bool append_if_holding(LoopJob* job) noexcept;
  [[nodiscard]] bool work_left() const noexcept;
  void destroy_queued() noexcept;
  void destroy_queued_if_idle() noexcept;
  void run_pending(Runner runner, const LoopWaiter* waiter = nullptr);
  // The end of a hand-off from outside the loop: borrow this thread when the rules allow it,
  // else make sure the loop's own thread (or the token holder) will run what was queued.
  void borrow_or_drain();
  class Budget;
  void schedule_drain() noexcept;
  void sync_context_work() noexcept;
  void rethrow_on_context(std::exception_ptr error) noexcept;
  [[nodiscard]] bool on_own_thread() const noexcept;

  boost::asio::io_context& context_;
  std::atomic<LoopJob*> incoming_{nullptr};  // LIFO stack filled by any thread
  std::atomic<bool> running_{false};         // the token
  std::atomic<bool> drain_scheduled_{false};
  // Set when a borrowed thread left work behind: the loop's own thread owns the backlog, and no
  // thread borrows until it has emptied the queue.
  std::atomic<bool> backlog_{false};
  std::atomic<std::size_t> work_{0};
  std::atomic<bool> detached_{false};  // the io_context is being (or has been) destroyed
  // FIFO taken from incoming_, touched only by the token holder, who also appends its own posts
  // here (no locked instruction for the loop's work queueing more loop work).
  LoopJob* ready_ = nullptr;
  LoopJob* ready_tail_ = nullptr;  // meaningful while ready_ is not null

  // Guards every touch of the io_context from a thread that may outlive it (a borrowed thread
  // after user code ran): the service clears `live_context_` under it before the io_context dies.
  std::mutex context_mutex_;
  boost::asio::io_context* live_context_;
  bool holds_context_work_ = false;
};

/// The io_context service that owns its loops' cores (see LoopCore).
class LoopService final : public boost::asio::execution_context::service {
 public:
  static inline boost::asio::execution_context::id id;  // NOLINT(readability-identifier-naming): Asio's name

  explicit LoopService(boost::asio::io_context& context);
  LoopService(const LoopService&) = delete;
  LoopService& operator=(const LoopService&) = delete;
  ~LoopService() override;

  /// A new core on this io_context, valid until the io_context is destroyed.
  LoopCore* create_core();

 private:
  void shutdown() override;

  boost::asio::io_context& context_;
  std::mutex mutex_;
  std::vector<std::shared_ptr<LoopCore>> cores_;
};

}  // namespace rx::detail

// The single event loop that every endpoint, task and client reply runs on.
#pragma once

#include <remote_xcomm/detail/loop_core.hpp>

#include <boost/asio/deferred.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/io_context.hpp>

#include <memory>
#include <utility>

namespace rx {

class Loop;
class LoopExecutor;

namespace detail {
/// Queues an intrusive job without allocating (blocking.never semantics). For the library's own
/// preallocated jobs; the job must stay valid until invoked.
void post_job(const LoopExecutor& executor, LoopJob* job);

/// The library's own hand-off of work that arrived on a transport thread (a gRPC reaction, a
/// client completion): runs `function` on the loop, borrowing the calling thread when the loop is
/// idle and the borrowing rules allow it, otherwise queueing it for the token holder or the loop's
/// own thread. Users' dispatch and post never borrow a thread; only this does.
///
/// Once `function` may have run user code, the caller must touch nothing: not the loop, not the
/// io_context, no executor copy, nothing the function may have released. Move everything the work
/// needs into `function`; `hand_off` itself keeps the loop alive for as long as it uses it.
template <typename Function>
void hand_off(const LoopExecutor& executor, Function&& function);

/// hand_off() of a job the caller allocated (no allocation here), with the same rules: once the
/// job may have run, the caller touches nothing; the job frees itself when invoked.
void hand_off_job(const LoopExecutor& executor, LoopJob* job);

/// Runs `function` on the loop and returns once it has run, blocking the calling thread: runs the
/// loop's work on this thread whenever the loop is free (it would only wait otherwise), so it
/// needs nobody to run the io_context. Inline when this thread is already running the loop.
/// An exception `function` throws surfaces where the io_context runs; catch it inside.
template <typename Function>
void run_and_wait(const LoopExecutor& executor, Function&& function);

/// True when both executors submit to the same loop, whatever their properties.
[[nodiscard]] bool same_loop(const LoopExecutor& a, const LoopExecutor& b) noexcept;

/// Keeps the loop state behind `executor` alive for as long as the returned pointer lives, even
/// past its io_context, for a transport that hands work over with LoopCore::hand_off_pinned.
[[nodiscard]] std::shared_ptr<LoopCore> pin_loop(const LoopExecutor& executor);
}  // namespace detail

/// Executor of a Loop: runs work one thread at a time, without locks on the message path.
///
/// Semantics as every Asio executor's: `dispatch` (Asio's `blocking.possibly`) runs the function
/// at once when the calling thread is already running this loop's work, or when it runs the
/// loop's io_context and no other thread holds the loop; otherwise it queues the function and
/// wakes the loop. `post` (`blocking.never`) always queues, and wakes the io_context's thread only
/// when nobody is inside the loop. (The library's own hand-offs from gRPC's threads may also
/// borrow the delivering thread for a short budget: see docs/architecture.md.)
///
/// Models Asio's standard executor concept, so `co_spawn`, `asio::post`, timers and
/// `any_io_executor` accept it. Valid for as long as its io_context exists, even after its Loop
/// (and the Server or Client owning it) is destroyed: work submitted then still runs, one thread
/// at a time. Thread safety: copies may be used from any thread.
class LoopExecutor {
 public:
  /// Asio operations of this library default to `asio::deferred`, which `co_await` accepts.
  using default_completion_token_type = boost::asio::deferred_t;

  /// A copy submitting to the same loop with the same properties; a copy of a tracked executor
  /// counts as outstanding work of its own.
  LoopExecutor(const LoopExecutor& other) noexcept : core_(other.core_), bits_(other.bits_) { start_work(); }
  /// Takes over `other`, including its outstanding work if tracked; `other` is left untracked.
  LoopExecutor(LoopExecutor&& other) noexcept : core_(other.core_), bits_(other.bits_) { other.bits_ &= ~TRACKED; }
  /// Becomes a copy of `other`, finishing this executor's own outstanding work if it was tracked.
  LoopExecutor& operator=(const LoopExecutor& other) noexcept {
    LoopExecutor copy(other);
    swap(copy);
    return *this;
  }
  /// Takes over `other` as the move constructor does, finishing this executor's own outstanding
  /// work if it was tracked.
  LoopExecutor& operator=(LoopExecutor&& other) noexcept {
    LoopExecutor moved(std::move(other));
    swap(moved);
    return *this;
  }
  ~LoopExecutor() { finish_work(); }

  /// The io_context whose thread runs queued loop work and whose services run timers.
  [[nodiscard]] boost::asio::io_context& query(boost::asio::execution::context_t /*unused*/) const noexcept {
    return core_->context();
  }
  /// `blocking.possibly` (the default: `execute` may run the function inline), or `blocking.never`
  /// when required.
  [[nodiscard]] constexpr boost::asio::execution::blocking_t query(
      boost::asio::execution::blocking_t /*unused*/) const noexcept {
    return (bits_ & BLOCKING_NEVER) != 0
               ? boost::asio::execution::blocking_t(boost::asio::execution::blocking.never)
               : boost::asio::execution::blocking_t(boost::asio::execution::blocking.possibly);
  }
  /// `outstanding_work.untracked` (the default), or `outstanding_work.tracked` when required: a
  /// tracked executor keeps its io_context's `run()` from returning for as long as it exists.
  [[nodiscard]] constexpr boost::asio::execution::outstanding_work_t query(
      boost::asio::execution::outstanding_work_t /*unused*/) const noexcept {
    return (bits_ & TRACKED) != 0
               ? boost::asio::execution::outstanding_work_t(boost::asio::execution::outstanding_work.tracked)
               : boost::asio::execution::outstanding_work_t(boost::asio::execution::outstanding_work.untracked);
  }
  /// `relationship.fork` (the default), or `relationship.continuation` when required. Only
  /// reported: it does not change how work is submitted.
  [[nodiscard]] constexpr boost::asio::execution::relationship_t query(
      boost::asio::execution::relationship_t /*unused*/) const noexcept {
    return (bits_ & CONTINUATION) != 0
               ? boost::asio::execution::relationship_t(boost::asio::execution::relationship.continuation)
               : boost::asio::execution::relationship_t(boost::asio::execution::relationship.fork);
  }

  /// An executor on the same loop whose `execute` may run the function inline (`dispatch`).
  [[nodiscard]] LoopExecutor require(boost::asio::execution::blocking_t::possibly_t /*unused*/) const {
    return {core_, bits_ & ~BLOCKING_NEVER};
  }
  /// An executor on the same loop whose `execute` always queues the function (`post`).
  [[nodiscard]] LoopExecutor require(boost::asio::execution::blocking_t::never_t /*unused*/) const {
    return {core_, bits_ | BLOCKING_NEVER};
  }
  /// An executor on the same loop that counts as outstanding work of its io_context while it (or
  /// a copy) exists, as an `executor_work_guard` does.
  [[nodiscard]] LoopExecutor require(boost::asio::execution::outstanding_work_t::tracked_t /*unused*/) const {
    return {core_, bits_ | TRACKED};
  }
  /// An executor on the same loop that does not count as outstanding work.
  [[nodiscard]] LoopExecutor require(boost::asio::execution::outstanding_work_t::untracked_t /*unused*/) const {
    return {core_, bits_ & ~TRACKED};
  }
  /// An executor on the same loop that reports `relationship.fork`; it submits as any other.
  [[nodiscard]] LoopExecutor require(boost::asio::execution::relationship_t::fork_t /*unused*/) const {
    return {core_, bits_ & ~CONTINUATION};
  }
  /// An executor on the same loop that reports `relationship.continuation` (as Asio's `defer`
  /// asks); it submits as any other.
  [[nodiscard]] LoopExecutor require(boost::asio::execution::relationship_t::continuation_t /*unused*/) const {
    return {core_, bits_ | CONTINUATION};
  }

  /// Runs `function` on the loop; see the class comment for when it runs inline.
  template <typename Function>
  void execute(Function&& function) const {
    if ((bits_ & BLOCKING_NEVER) == 0 && core_->running_in_this_thread()) {
      std::forward<Function>(function)();
      return;
    }
    detail::LoopJob* job = detail::make_loop_job(std::forward<Function>(function));
    if ((bits_ & BLOCKING_NEVER) != 0) {
      core_->post(job);
    } else {
      core_->dispatch(job);
    }
  }

  /// True while the calling thread is running this loop's work (also from inside another loop's
  /// work nested in it).
  [[nodiscard]] bool running_in_this_thread() const noexcept { return core_->running_in_this_thread(); }

  /// True when both submit to the same loop with the same properties (blocking, outstanding work,
  /// relationship).
  friend bool operator==(const LoopExecutor& a, const LoopExecutor& b) noexcept {
    return a.core_ == b.core_ && a.bits_ == b.bits_;
  }
  /// True when operator== is false.
  friend bool operator!=(const LoopExecutor& a, const LoopExecutor& b) noexcept { return !(a == b); }

 private:
  friend class Loop;
  friend void detail::post_job(const LoopExecutor& executor, detail::LoopJob* job);
  friend void detail::hand_off_job(const LoopExecutor& executor, detail::LoopJob* job);
  friend bool detail::same_loop(const LoopExecutor& a, const LoopExecutor& b) noexcept;
  friend std::shared_ptr<detail::LoopCore> detail::pin_loop(const LoopExecutor& executor);
  template <typename Function>
  friend void detail::hand_off(const LoopExecutor& executor, Function&& function);
  template <typename Function>
  friend void detail::run_and_wait(const LoopExecutor& executor, Function&& function);
  static constexpr unsigned BLOCKING_NEVER = 1U;
  static constexpr unsigned TRACKED = 2U;
  static constexpr unsigned CONTINUATION = 4U;

  LoopExecutor(detail::LoopCore* core, unsigned bits) noexcept : core_(core), bits_(bits) { start_work(); }

  void swap(LoopExecutor& other) noexcept {
    std::swap(core_, other.core_);
    std::swap(bits_, other.bits_);
  }
  // Work is counted on the core, which holds the io_context's work as one unit and stops touching
  // the io_context once it is being destroyed: a tracked copy may be destroyed on a gRPC thread
  // just after a completion let the application destroy its io_context.
  void start_work() const noexcept {
    if ((bits_ & TRACKED) != 0) {
      core_->work_started();
    }
  }
  void finish_work() const noexcept {
    if ((bits_ & TRACKED) != 0) {
      core_->work_finished();
    }
  }

  detail::LoopCore* core_;
  unsigned bits_;
};

inline void detail::post_job(const LoopExecutor& executor, LoopJob* job) { executor.core_->post(job); }

inline void detail::hand_off_job(const LoopExecutor& executor, LoopJob* job) { executor.core_->hand_off(job); }

inline bool detail::same_loop(const LoopExecutor& a, const LoopExecutor& b) noexcept { return a.core_ == b.core_; }

inline std::shared_ptr<detail::LoopCore> detail::pin_loop(const LoopExecutor& executor) {
  return executor.core_->shared_from_this();
}

template <typename Function>
void detail::hand_off(const LoopExecutor& executor, Function&& function) {
  executor.core_->hand_off(detail::make_loop_job(std::forward<Function>(function)));
}

template <typename Function>
void detail::run_and_wait(const LoopExecutor& executor, Function&& function) {
  if (executor.core_->running_in_this_thread()) {
    std::forward<Function>(function)();
    return;
  }
  LoopWaiter waiter;
  executor.core_->run_and_wait(detail::make_loop_job([&waiter, &function] {
                                 struct Signal {
                                   LoopWaiter& waiter;
                                   ~Signal() { waiter.signal(); }  // also when `function` throws
                                 } signal{waiter};
                                 std::forward<Function>(function)();
                               }),
                               waiter);
}

/// The event loop: one `io_context` plus the token that lets one thread at a time run loop work.
///
/// Every endpoint, task coroutine and (when completions are bound to it) client reply of a Server
/// or Client built on this Loop runs under its discipline: never two threads at once. Run the
/// io_context (`ioc.run()`) on one thread of your choice: it runs queued loop work and any backlog.
/// gRPC's threads also run loop work for a short budget when they find the loop idle, which keeps
/// a message from waking a sleeping thread (docs/architecture.md).
///
/// A Loop is a handle: its state belongs to the io_context and lives until the io_context is
/// destroyed (a few hundred bytes per Loop), so destroying a Loop, or the Server or Client that
/// owns one, with work still pending is safe. Thread safety: `get_executor` may be called from
/// any thread.
class Loop {
 public:
  /// The executor type of this loop.
  using executor_type = LoopExecutor;

  /// A new loop on `context`: its state is owned by the io_context (see the class comment). Loops
  /// on one io_context are independent: each has its own token and its own queue of work.
  explicit Loop(boost::asio::io_context& context)
      : core_(boost::asio::use_service<detail::LoopService>(context).create_core()) {}
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;
  ~Loop() = default;

  /// An executor of this loop, with the default properties: `blocking.possibly`,
  /// `outstanding_work.untracked`, `relationship.fork`.
  [[nodiscard]] executor_type get_executor() const noexcept { return {core_, 0}; }
  /// The io_context this loop was made on, whose thread runs its queued work.
  [[nodiscard]] boost::asio::io_context& context() const noexcept { return core_->context(); }

 private:
  detail::LoopCore* core_;
};

}  // namespace rx

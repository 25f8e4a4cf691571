// The loop hand-off: how work from gRPC's threads reaches the single loop without waking a
// thread, and without letting loop work capture those threads.
#include <remote_xcomm/detail/loop_core.hpp>

#include <boost/asio/post.hpp>

#include <chrono>
#include <cstdint>
#include <exception>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define REMOTE_XCOMM_BUDGET_ON_TSC 1
#endif

namespace rx::detail {
namespace {

// The loops whose work the current thread is running, innermost first (loops nest when work on
// one dispatches to another that the thread may run).
struct LoopFrame {
  const LoopCore* core;
  const LoopFrame* outer;
};
thread_local const LoopFrame* current_frames = nullptr;

// Threads outside any io_context of a loop (gRPC's pollers, thread pools) that are running loop
// work right now, over all loops of the process. At most one: gRPC's callback API has two
// poller threads here, and one must stay free to serve requests that need no loop work.
constexpr int MAX_BORROWED_THREADS = 1;
std::atomic<int> borrowed_threads{0};

std::uint64_t steady_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

constexpr auto BORROWED_LOOP_BUDGET_NS =
    static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(BORROWED_LOOP_BUDGET).count());

#if REMOTE_XCOMM_BUDGET_ON_TSC
// The borrowed budget in TSC ticks, or 0 while the TSC's rate is not known yet. The rate is
// learnt from steady_clock over the first 10 ms after the first borrowed run (steady_clock is
// used until then): no calibration delay anywhere. The budget is a soft bound, so a rate a few
// percent off is harmless, and a TSC that went backwards (a migration between unsynchronised
// cores) reads as a huge elapsed time: the run stops early, never late.
std::uint64_t tsc_budget() noexcept {
  static std::atomic<std::uint64_t> budget{0};
  if (const std::uint64_t known = budget.load(std::memory_order_relaxed); known != 0) {
    return known;
  }
  struct Sample {
    std::uint64_t ns;
    std::uint64_t ticks;
  };
  static const Sample first{steady_ns(), __rdtsc()};
  constexpr std::uint64_t CALIBRATION_NS = 10'000'000;
  const std::uint64_t elapsed_ns = steady_ns() - first.ns;
  const std::uint64_t elapsed_ticks = __rdtsc() - first.ticks;
  if (elapsed_ns < CALIBRATION_NS) {
    return 0;
  }
  const double ticks_per_ns = static_cast<double>(elapsed_ticks) / static_cast<double>(elapsed_ns);
  const auto ticks = static_cast<std::uint64_t>(ticks_per_ns * static_cast<double>(BORROWED_LOOP_BUDGET_NS));
  budget.store(ticks != 0 ? ticks : 1, std::memory_order_relaxed);
  return ticks != 0 ? ticks : 1;
}
#endif

LoopJob* reverse(LoopJob* stack) noexcept {
  LoopJob* fifo = nullptr;
  while (stack != nullptr) {
    LoopJob* next = stack->next;
    stack->next = fifo;
    fifo = stack;
    stack = next;
  }
  return fifo;
}

void destroy_all(LoopJob* list) noexcept {
  while (list != nullptr) {
    LoopJob* next = list->next;
    list->invoke(list, false);
    list = next;
  }
}

class BorrowSlot {
 public:
  BorrowSlot() noexcept {
    int borrowed = borrowed_threads.load(std::memory_order_relaxed);
    while (borrowed < MAX_BORROWED_THREADS) {
      if (borrowed_threads.compare_exchange_weak(borrowed, borrowed + 1, std::memory_order_acquire)) {
        taken_ = true;
        return;
      }
    }
  }
  BorrowSlot(const BorrowSlot&) = delete;
  BorrowSlot& operator=(const BorrowSlot&) = delete;
  ~BorrowSlot() {
    if (taken_) {
      borrowed_threads.fetch_sub(1, std::memory_order_release);
    }
  }
  explicit operator bool() const noexcept { return taken_; }

 private:
  bool taken_ = false;
};

}  // namespace

// How long a borrowed thread has run loop work. Checked after every job that has another behind
// it, so its clock must be cheap: steady_clock::now() costs 26 ns through the vDSO on the
// development machine, a quarter of a whole hand-off; the TSC costs 10 ns.
class LoopCore::Budget {
 public:
  explicit Budget(bool timed) noexcept {
    if (!timed) {
      return;
    }
#if REMOTE_XCOMM_BUDGET_ON_TSC
    if (const std::uint64_t ticks = tsc_budget(); ticks != 0) {
      on_tsc_ = true;
      length_ = ticks;
      started_ = __rdtsc();
      return;
    }
#endif
    length_ = BORROWED_LOOP_BUDGET_NS;
    started_ = steady_ns();
  }

  [[nodiscard]] bool spent() const noexcept {
#if REMOTE_XCOMM_BUDGET_ON_TSC
    if (on_tsc_) {
      return __rdtsc() - started_ >= length_;
    }
#endif
    return steady_ns() - started_ >= length_;
  }

 private:
  std::uint64_t started_ = 0;
  std::uint64_t length_ = 0;
  bool on_tsc_ = false;
};

// ---- the service -------------------------------------------------------------------------

LoopService::LoopService(boost::asio::io_context& context)
    : boost::asio::execution_context::service(context), context_(context) {}

LoopService::~LoopService() = default;

LoopCore* LoopService::create_core() {
  auto core = std::make_shared<LoopCore>(context_);
  const std::lock_guard lock(mutex_);
  cores_.push_back(core);
  return core.get();
}

void LoopService::shutdown() {
  // Runs first in the io_context's destruction (services shut down in reverse order of creation,
  // and the scheduler came first): after this, loop work left queued is destroyed with its core,
  // and a thread still finishing a borrowed run no longer touches the io_context.
  const std::lock_guard lock(mutex_);
  for (const auto& core : cores_) {
    core->detach_context();
  }
}

// ---- the core ----------------------------------------------------------------------------

LoopCore::~LoopCore() { destroy_queued(); }

void LoopCore::destroy_queued() noexcept {
  // Destroying a job may queue another (a coroutine frame whose destruction fails a request):
  // take turns until nothing is left. Only with the token held, or with no thread left to hold it.
  for (;;) {
    LoopJob* list = ready_ != nullptr ? std::exchange(ready_, nullptr) : incoming_.exchange(nullptr);
    if (list == nullptr) {
      return;
    }
    destroy_all(list);
  }
}

bool LoopCore::running_in_this_thread() const noexcept {
  for (const LoopFrame* frame = current_frames; frame != nullptr; frame = frame->outer) {
    if (frame->core == this) {
      return true;
    }
  }
  return false;
}

bool LoopCore::on_own_thread() const noexcept { return context_.get_executor().running_in_this_thread(); }

void LoopCore::push(LoopJob* job) noexcept {
  job->next = incoming_.load(std::memory_order_relaxed);
  while (!incoming_.compare_exchange_weak(job->next, job, std::memory_order_seq_cst, std::memory_order_relaxed)) {
  }
}

void LoopCore::dispatch(LoopJob* job) {
  if (on_own_thread()) {
    push(job);
    if (!running_in_this_thread()) {
      run_pending(Runner::own_thread);
    }
    return;
  }
  // A user's dispatch from a foreign thread never borrows it, as with any Asio executor.
  post(job);
}

bool LoopCore::append_if_holding(LoopJob* job) noexcept {
  // Only the token holder touches ready_, and it runs ready_ before it looks at incoming_ again;
  // so only while incoming_ is empty may a job go straight to ready_'s tail without overtaking
  // one queued before it (a push that happened before this call is visible here).
  if (!running_in_this_thread() || incoming_.load(std::memory_order_relaxed) != nullptr) {
    return false;
  }
  job->next = nullptr;
  if (ready_ == nullptr) {
    ready_ = job;
  } else {
    ready_tail_->next = job;
  }
  ready_tail_ = job;
  return true;
}

void LoopCore::post(LoopJob* job) {
  if (append_if_holding(job)) {
    return;  // the holder runs it before it lets the token go
  }
  push(job);
  // A holder re-checks the queue after releasing the token, so only an idle loop needs a wake-up.
  if (!running_.load(std::memory_order_seq_cst)) {
    schedule_drain();
  }
}

void LoopCore::hand_off(LoopJob* job) {
  if (append_if_holding(job)) {
    return;  // the enclosing run on this thread takes the job before it releases the token
  }
  // Asked before the push: once the job is queued, the token holder may run it, its user code may
  // destroy the io_context, and on_own_thread() reads the io_context.
  const bool own_thread = on_own_thread();
  push(job);
  if (running_in_this_thread()) {
    return;
  }
  if (own_thread) {
    run_pending(Runner::own_thread);
    return;
  }
  borrow_or_drain();
}

void LoopCore::borrow_or_drain() {
  if (!backlog_.load(std::memory_order_seq_cst) && !running_.load(std::memory_order_relaxed)) {
    const BorrowSlot slot;
    if (slot) {
      // The work may end the life of whatever owns this loop, and of its io_context (a caller
      // that destroys both as soon as its completion has run): the borrower keeps the core.
      const std::shared_ptr<LoopCore> keep_alive = shared_from_this();
      run_pending(Runner::borrowed);
      return;
    }
  }
  if (!running_.load(std::memory_order_seq_cst)) {
    schedule_drain();  // or, once the io_context is gone, destroys what is queued
  }
}

void LoopCore::hand_off_pinned(LoopJob* job) {
  if (append_if_holding(job)) {
    return;
  }
  push(job);
  if (running_in_this_thread()) {
    return;
  }
  // No on_own_thread() here: it reads the io_context, which may be gone (a reaction is never the
  // io_context's own thread outside loop work anyway).
  if (detached_.load(std::memory_order_acquire)) {
    destroy_queued_if_idle();
    return;
  }
  borrow_or_drain();
}

void LoopCore::run_and_wait(LoopJob* job, LoopWaiter& waiter) {
  push(job);
  const std::shared_ptr<LoopCore> keep_alive = shared_from_this();
  // Another thread may hold the token and stop for its budget, leaving our job for a loop thread
  // that nobody runs (a blocking call before the io_context runs, or after it stopped): so try
  // again until the job has run, rather than only wait.
  constexpr std::chrono::microseconds RETRY_AFTER{500};
  while (!waiter.ran()) {
    run_pending(Runner::waiting_caller, &waiter);
    if (waiter.wait_for(RETRY_AFTER)) {
      return;
    }
  }
  waiter.settle();  // the job ran on another thread, which may still be inside signal()
}

void LoopCore::schedule_drain() noexcept {
  std::unique_lock lock(context_mutex_);
  if (live_context_ == nullptr) {
    // The io_context is shutting down: what is queued can never run. Destroy it now, while the
    // io_context's services still exist (a job posted during the shutdown, such as the one an
    // awaitable's destructor posts to destroy its frames, may own a timer), not with the core.
    lock.unlock();
    destroy_queued_if_idle();
    return;
  }
  if (drain_scheduled_.exchange(true, std::memory_order_seq_cst)) {
    return;
  }
  try {
    // Cores live as long as the io_context, so `this` outlives every handler queued on it.
    boost::asio::post(*live_context_, [this] {
      drain_scheduled_.store(false, std::memory_order_seq_cst);
      run_pending(Runner::own_thread);
    });
  } catch (...) {
    // Out of memory for the handler: the queue stays as it is and the next post tries again.
    drain_scheduled_.store(false, std::memory_order_seq_cst);
  }
}

void LoopCore::rethrow_on_context(std::exception_ptr error) noexcept {
  const std::lock_guard lock(context_mutex_);
  if (live_context_ == nullptr) {
    return;
  }
  try {
    // Loop work that throws must not unwind a foreign thread (a gRPC poller): the exception
    // surfaces where the application runs the io_context, as any Asio handler's would.
    boost::asio::post(*live_context_, [error = std::move(error)] { std::rethrow_exception(error); });
  } catch (...) {  // out of memory: nothing more can be done for it
  }
}

bool LoopCore::work_left() const noexcept {
  return ready_ != nullptr || incoming_.load(std::memory_order_relaxed) != nullptr;
}

void LoopCore::run_pending(Runner runner, const LoopWaiter* waiter) {
  for (;;) {
    bool expected = false;
    if (!running_.compare_exchange_strong(expected, true, std::memory_order_seq_cst)) {
      return;  // another thread holds the token and will see our job before it leaves
    }
    const LoopFrame frame{this, current_frames};
    current_frames = &frame;
    const Budget budget(runner == Runner::borrowed);
    int jobs = 0;
    bool budget_spent = false;
    std::exception_ptr error;
    try {
      for (;;) {
        if (ready_ == nullptr) {
          // A plain load first: an empty queue, the common case at the end of a run, then costs
          // no locked instruction.
          if (incoming_.load(std::memory_order_relaxed) == nullptr) {
            break;
          }
          LoopJob* const newest = incoming_.exchange(nullptr, std::memory_order_acquire);
          ready_ = reverse(newest);
          ready_tail_ = newest;
        }
        LoopJob* job = ready_;
        ready_ = job->next;
        job->invoke(job, true);
        ++jobs;
        // What each kind of thread may run: time for a borrowed thread (read only when another
        // job waits), a batch for the loop's own thread, its own job for a waiting caller.
        const bool reached = runner == Runner::borrowed     ? work_left() && budget.spent()
                             : runner == Runner::own_thread ? jobs >= OWN_THREAD_LOOP_BUDGET_JOBS
                                                            : waiter != nullptr && waiter->ran();
        if (reached) {
          budget_spent = work_left();
          break;
        }
      }
    } catch (...) {
      error = std::current_exception();
      budget_spent = true;  // leave the rest for the io_context's thread
    }
    if (budget_spent && runner == Runner::borrowed) {
      backlog_.store(true, std::memory_order_seq_cst);
    } else if (!budget_spent && runner != Runner::borrowed) {
      backlog_.store(false, std::memory_order_seq_cst);  // the queue was emptied
    }
    current_frames = frame.outer;
    running_.store(false, std::memory_order_seq_cst);
    if (budget_spent) {
      schedule_drain();
      if (error) {
        if (runner == Runner::own_thread) {
          std::rethrow_exception(error);  // out of io_context::run, as Asio does
        }
        rethrow_on_context(std::move(error));
      }
      return;
    }
    if (incoming_.load(std::memory_order_seq_cst) == nullptr) {
      return;
    }
    // A job arrived between our last look and the release; its producer may have seen the
    // token held and left it to us.
    if (runner == Runner::borrowed && budget.spent()) {
      backlog_.store(true, std::memory_order_seq_cst);
      schedule_drain();
      return;
    }
  }
}

// ---- work counting -----------------------------------------------------------------------

void LoopCore::work_started() noexcept {
  if (work_.fetch_add(1, std::memory_order_relaxed) == 0) {
    sync_context_work();
  }
}

void LoopCore::work_finished() noexcept {
  if (work_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    sync_context_work();
  }
}

void LoopCore::sync_context_work() noexcept {
  // Transitions of the count are reconciled under the lock, so a start and a finish racing on
  // either side of zero leave the io_context holding exactly one unit while work is nonzero.
  const std::lock_guard lock(context_mutex_);
  const bool wanted = work_.load(std::memory_order_acquire) != 0;
  if (wanted == holds_context_work_ || live_context_ == nullptr) {
    return;
  }
  holds_context_work_ = wanted;
  if (wanted) {
    live_context_->get_executor().on_work_started();
  } else {
    live_context_->get_executor().on_work_finished();
  }
}

void LoopCore::detach_context() noexcept {
  {
    const std::lock_guard lock(context_mutex_);
    live_context_ = nullptr;
  }
  detached_.store(true, std::memory_order_release);
  // Destroy what is queued now, while every service of the io_context still exists (a queued
  // coroutine frame may own a timer, whose destructor needs the timer service), as Asio's
  // scheduler destroys its handlers at shutdown. Later posts are destroyed as they come
  // (schedule_drain).
  destroy_queued_if_idle();
}

void LoopCore::destroy_queued_if_idle() noexcept {
  // Skipped if a thread holds the token (a borrowed thread still running loop work): it sees
  // the queue again when it lets the token go, and schedule_drain brings it back here.
  for (;;) {
    bool expected = false;
    if (!running_.compare_exchange_strong(expected, true, std::memory_order_seq_cst)) {
      return;
    }
    destroy_queued();
    running_.store(false, std::memory_order_seq_cst);
    // A job pushed while we held the token found it taken and left it to us.
    if (incoming_.load(std::memory_order_seq_cst) == nullptr) {
      return;
    }
  }
}

}  // namespace rx::detail

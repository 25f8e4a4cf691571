// The loop hand-off: how work from gRPC's threads reaches the single loop without waking a thread.
#include <remote_xcomm/detail/loop_core.hpp>

#include <boost/asio/post.hpp>

#include <exception>

namespace rx::detail {
namespace {

// The loop whose work the current thread is running (innermost, when loops nest).
thread_local const LoopCore* current_loop = nullptr;

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

}  // namespace

LoopCore::~LoopCore() {
  destroy_all(ready_);
  destroy_all(incoming_.exchange(nullptr));
}

bool LoopCore::running_in_this_thread() const noexcept { return current_loop == this; }

void LoopCore::push(LoopJob* job) noexcept {
  job->next = incoming_.load(std::memory_order_relaxed);
  while (!incoming_.compare_exchange_weak(job->next, job, std::memory_order_seq_cst, std::memory_order_relaxed)) {
  }
}

void LoopCore::dispatch(LoopJob* job) {
  push(job);
  if (running_in_this_thread()) {
    return;  // the enclosing run_pending on this thread takes the job before it releases the token
  }
  // The work may end the life of whatever owns this loop (a Client destroyed as soon as its last
  // completion has run); the token holder must outlive its own run.
  const std::shared_ptr<LoopCore> keep_alive = shared_from_this();
  try {
    run_pending();
  } catch (...) {
    // Loop work that throws must not unwind a foreign thread (a gRPC poller): the exception
    // surfaces where the application runs the io_context, as any Asio handler's would.
    boost::asio::post(context_, [error = std::current_exception()] { std::rethrow_exception(error); });
  }
}

void LoopCore::post(LoopJob* job) {
  push(job);
  // A holder re-checks the queue after releasing the token, so only an idle loop needs a wake-up.
  if (!running_.load(std::memory_order_seq_cst)) {
    schedule_drain();
  }
}

void LoopCore::schedule_drain() {
  if (drain_scheduled_.exchange(true, std::memory_order_seq_cst)) {
    return;
  }
  boost::asio::post(context_, [weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->drain_scheduled_.store(false, std::memory_order_seq_cst);
      self->run_pending();
    }
  });
}

void LoopCore::run_pending() {
  for (;;) {
    bool expected = false;
    if (!running_.compare_exchange_strong(expected, true, std::memory_order_seq_cst)) {
      return;  // another thread holds the token and will see our job before it leaves
    }
    const LoopCore* const outer = current_loop;
    current_loop = this;
    try {
      for (;;) {
        if (ready_ == nullptr) {
          // A plain load first: an empty queue, the common case at the end of a run, then costs
          // no locked instruction.
          if (incoming_.load(std::memory_order_relaxed) == nullptr) {
            break;
          }
          ready_ = reverse(incoming_.exchange(nullptr, std::memory_order_acquire));
        }
        LoopJob* job = ready_;
        ready_ = job->next;
        job->invoke(job, true);
      }
    } catch (...) {
      // A handler threw. Leave the rest queued for the io_context's thread and let the
      // exception surface where the loop is run (io_context::run), as Asio does.
      current_loop = outer;
      running_.store(false, std::memory_order_seq_cst);
      schedule_drain();
      throw;
    }
    current_loop = outer;
    running_.store(false, std::memory_order_seq_cst);
    if (incoming_.load(std::memory_order_seq_cst) == nullptr) {
      return;
    }
    // A job arrived between our last look and the release; its producer may have seen the
    // token held and left it to us.
  }
}

}  // namespace rx::detail

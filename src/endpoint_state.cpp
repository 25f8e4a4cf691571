// The endpoint queue: arrival-ordered requests, one held request, and the task's invocations.
#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <string>
#include <utility>

namespace rx::detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;

// Completes a handler from outside its initiating function: runs inline when the handler's
// executor is the loop this thread is running, which is the common case for task coroutines.
template <typename Handler, typename... Args>
void complete_now(Handler handler, const LoopExecutor& /*io_executor*/, Args&&... args) {
  asio::dispatch(asio::append(std::move(handler), std::forward<Args>(args)...));
}

// Completes a handler from inside its initiating function, where Asio forbids completing inline:
// queued on the loop, then dispatched to the handler's own executor.
template <typename Handler, typename... Args>
void complete_later(Handler handler, const LoopExecutor& io_executor, Args&&... args) {
  asio::post(io_executor, asio::append(std::move(handler), std::forward<Args>(args)...));
}

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

}  // namespace

EndpointState::EndpointState(LoopExecutor executor, TaskInstanceKey key, Task task)
    : executor_(std::move(executor)), key_(std::move(key)), task_(std::move(task)) {}

EndpointState::~EndpointState() {
  // Destroyed with work outstanding only if the loop itself is being torn down; fail what is
  // left so no caller waits forever.
  if (!closed_) {
    close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "endpoint " + to_string(key_) + " was destroyed"));
  }
}

void EndpointState::deliver(PendingReplyPtr reply, boost::json::object payload) {
  if (closed_) {
    reply->fail(close_status_);
    return;
  }
  if (waiter_ && queue_.empty()) {
    hand_to_waiter({std::move(reply), std::move(payload)});
    return;
  }
  queue_.push_back({std::move(reply), std::move(payload)});
  if (task_ && !invocation_running_) {
    start_invocation();
  }
}

bool EndpointState::pop_live(QueuedRequest& out) {
  while (!queue_.empty()) {
    QueuedRequest front = std::move(queue_.front());
    queue_.pop_front();
    if (!front.reply->finished()) {  // skip requests whose callers already gave up
      out = std::move(front);
      return true;
    }
  }
  return false;
}

void EndpointState::hand_to_waiter(QueuedRequest request) {
  held_ = std::move(request.reply);
  ++gets_in_invocation_;
  GetHandler handler;
  handler.swap(waiter_);  // never move-assign any_completion_handler (asio#1180)
  handler.get_cancellation_slot().clear();
  complete_now(std::move(handler), executor_, error_code{}, std::move(request.payload));
}

void EndpointState::start_get(GetHandler handler) {
  if (closed_) {
    complete_later(std::move(handler), executor_, error_code(errc::endpoint_closed), boost::json::object{});
    return;
  }
  if (waiter_) {
    complete_later(std::move(handler), executor_, error_code(errc::get_already_pending), boost::json::object{});
    return;
  }
  if (held_) {
    held_->fail(grpc::Status(grpc::StatusCode::INTERNAL,
                             "task of endpoint " + to_string(key_) + " called get() again before push()"));
    held_.reset();
  }
  QueuedRequest request;
  if (pop_live(request)) {
    held_ = std::move(request.reply);
    ++gets_in_invocation_;
    complete_later(std::move(handler), executor_, error_code{}, std::move(request.payload));
    return;
  }
  auto slot = handler.get_cancellation_slot();
  if (slot.is_connected()) {
    slot.assign([this](asio::cancellation_type /*type*/) {
      // Runs on the loop (Asio requires cancellation to be emitted on the handler's executor).
      if (!waiter_) {
        return;
      }
      GetHandler cancelled;
      cancelled.swap(waiter_);
      cancelled.get_cancellation_slot().clear();
      complete_later(std::move(cancelled), executor_, error_code(asio::error::operation_aborted),
                     boost::json::object{});
    });
  }
  waiter_.swap(handler);
}

void EndpointState::start_push(boost::json::object outputs, PushHandler handler) {
  error_code result;
  if (closed_) {
    result = errc::endpoint_closed;
  } else if (!held_) {
    result = errc::no_request_held;
  } else {
    PendingReplyPtr held = std::move(held_);
    if (!held->reply(outputs)) {
      result = errc::request_cancelled;
    }
  }
  complete_later(std::move(handler), executor_, result);
}

void EndpointState::start_invocation() {
  invocation_running_ = true;
  gets_in_invocation_ = 0;
  asio::co_spawn(executor_, task_(Endpoint(shared_from_this())),
                 asio::bind_cancellation_slot(invocation_cancel_.slot(),
                                              [self = shared_from_this()](const std::exception_ptr& error) {
                                                self->on_invocation_end(error);
                                              }));
}

void EndpointState::on_invocation_end(const std::exception_ptr& error) {
  invocation_running_ = false;
  if (held_) {
    const std::string message = error ? "task of endpoint " + to_string(key_) + " threw: " + describe(error)
                                      : "task of endpoint " + to_string(key_) + " ended without pushing a reply";
    held_->fail(grpc::Status(grpc::StatusCode::INTERNAL, message));
    held_.reset();
  } else if (gets_in_invocation_ == 0 && !closed_) {
    // The task ended without taking a request: fail the oldest so the endpoint always advances.
    QueuedRequest request;
    if (pop_live(request)) {
      const std::string message = error ? "task of endpoint " + to_string(key_) + " threw before get(): " +
                                              describe(error)
                                        : "task of endpoint " + to_string(key_) + " ended without calling get()";
      request.reply->fail(grpc::Status(grpc::StatusCode::INTERNAL, message));
    }
  }
  if (!closed_ && !queue_.empty()) {
    start_invocation();
  }
}

void EndpointState::close(const grpc::Status& status) {
  if (closed_) {
    return;
  }
  closed_ = true;
  close_status_ = status;
  if (held_) {
    held_->fail(status);
    held_.reset();
  }
  for (QueuedRequest& request : queue_) {
    request.reply->fail(status);
  }
  queue_.clear();
  if (waiter_) {
    GetHandler handler;
    handler.swap(waiter_);
    handler.get_cancellation_slot().clear();
    complete_later(std::move(handler), executor_, error_code(errc::endpoint_closed), boost::json::object{});
  }
  if (invocation_running_) {
    invocation_cancel_.emit(asio::cancellation_type::all);
  }
}

}  // namespace rx::detail

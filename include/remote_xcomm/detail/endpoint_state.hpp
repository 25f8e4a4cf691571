// The endpoint queue: requests waiting for one task, and the task's get/push. Internal.
#pragma once

#include <remote_xcomm/detail/pending_reply.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/task_instance_key.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/container/devector.hpp>
#include <boost/json/object.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>

namespace rx {
class Endpoint;
}

namespace rx::detail {

/// A request queued for an endpoint: its payload and where its reply goes.
struct QueuedRequest {
  PendingReplyPtr reply;
  boost::json::object payload;
};

/// State of one endpoint. Lives on the loop: every member function runs there, one thread at a
/// time, so nothing here is locked.
///
/// Semantics (docs/endpoints.md): requests queue in arrival order. The task is invoked when a
/// request is waiting and no invocation is running; `get` hands it the oldest request and makes it
/// the held one; `push` answers the held one. When an invocation ends, a request it still holds
/// fails (INTERNAL), and if requests are still waiting the task is invoked again.
class EndpointState : public std::enable_shared_from_this<EndpointState> {
 public:
  using GetHandler = boost::asio::any_completion_handler<void(boost::system::error_code, boost::json::object)>;
  using PushHandler = boost::asio::any_completion_handler<void(boost::system::error_code)>;
  using Task = std::function<boost::asio::awaitable<void>(Endpoint)>;

  /// A state without a task serves whoever calls get/push (tests, benchmarks, custom runners).
  EndpointState(LoopExecutor executor, TaskInstanceKey key, Task task = {});
  EndpointState(const EndpointState&) = delete;
  EndpointState& operator=(const EndpointState&) = delete;
  ~EndpointState();

  /// Queues a request (or hands it to a waiting get) and starts the task if it is idle.
  void deliver(PendingReplyPtr reply, boost::json::object payload);

  void start_get(GetHandler handler);
  void start_push(boost::json::object outputs, PushHandler handler);

  /// Stops the endpoint: waiting and held requests fail with `status`, a waiting get completes
  /// with errc::endpoint_closed, the running invocation is cancelled; later deliveries fail too.
  void close(const grpc::Status& status);

  [[nodiscard]] const TaskInstanceKey& key() const noexcept { return key_; }
  [[nodiscard]] const LoopExecutor& executor() const noexcept { return executor_; }
  [[nodiscard]] std::size_t queued() const noexcept { return queue_.size(); }
  [[nodiscard]] bool holding_request() const noexcept { return held_ != nullptr; }
  [[nodiscard]] bool closed() const noexcept { return closed_; }

 private:
  void start_invocation();
  void on_invocation_end(const std::exception_ptr& error);
  void hand_to_waiter(QueuedRequest request);
  bool pop_live(QueuedRequest& out);

  LoopExecutor executor_;
  TaskInstanceKey key_;
  Task task_;
  // devector allocates nothing while empty: an idle endpoint costs no queue memory.
  boost::container::devector<QueuedRequest> queue_;
  PendingReplyPtr held_;
  GetHandler waiter_;
  boost::asio::cancellation_signal invocation_cancel_;
  grpc::Status close_status_;
  std::size_t gets_in_invocation_ = 0;
  bool invocation_running_ = false;
  bool closed_ = false;
};

}  // namespace rx::detail

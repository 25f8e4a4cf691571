// The endpoint queue: requests waiting for one task, and the task's get/push. Internal.
#pragma once

#include <remote_xcomm/detail/pending_reply.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/request.hpp>
#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/container/devector.hpp>
#include <boost/json/object.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace rx {
class Endpoint;
}

namespace rx::detail {

class XComTable;
struct TaskRecord;

/// The handlers that `co_await rx.get()` and `co_await rx.push(...)` produce inside an
/// `asio::awaitable` with the default (deferred) token. The endpoint stores these without type
/// erasure or allocation: that is the hot path. Every other token goes through
/// `any_completion_handler`. (Asio detail types: this pins the fast path to Boost 1.81's layout,
/// and a static_assert in the tests checks that the default token still lands here.)
using AwaitableGetHandler =
    boost::asio::detail::awaitable_async_op_handler<void(boost::system::error_code, boost::json::object),
                                                    boost::asio::any_io_executor>;
using AwaitablePushHandler =
    boost::asio::detail::awaitable_async_op_handler<void(boost::system::error_code), boost::asio::any_io_executor>;

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
/// fails (INTERNAL), and if requests are still waiting the task is invoked again. The queue is
/// bounded: a request arriving when `max_queued` requests already wait fails at once with
/// RESOURCE_EXHAUSTED (rx::ServerOptions::max_queued_requests).
class EndpointState final : public std::enable_shared_from_this<EndpointState>, public RequestQueue {
 public:
  using GetHandler = boost::asio::any_completion_handler<void(boost::system::error_code, boost::json::object)>;
  using NextHandler = boost::asio::any_completion_handler<void(boost::system::error_code, Request)>;
  using PushHandler = boost::asio::any_completion_handler<void(boost::system::error_code)>;
  using PullHandler = boost::asio::any_completion_handler<void(boost::system::error_code, std::vector<XCom>)>;
  using Task = std::function<boost::asio::awaitable<void>(Endpoint)>;
  /// Told, on the loop, of an exception that ended an invocation and that no caller learned of
  /// (rx::ServerOptions::on_task_error). Shared by every endpoint of a server.
  using TaskErrorHook = std::function<void(const TaskInstanceKey&, std::exception_ptr)>;

  /// No bound on the queue (the default of a state made without a server).
  static constexpr std::size_t UNBOUNDED = static_cast<std::size_t>(-1);

  /// A state without a task serves whoever calls get/push (tests, benchmarks, custom runners).
  /// Without `on_task_error`, such exceptions are rethrown from the io_context's run().
  /// `max_queued`: how many requests may wait in the queue (the held one and one handed straight
  /// to a waiting or idle task not counted); a bound of 2^32 - 1 or more is no bound.
  EndpointState(LoopExecutor executor, TaskInstanceKey key, Task task = {},
                std::shared_ptr<const TaskErrorHook> on_task_error = {}, std::size_t max_queued = UNBOUNDED);
  EndpointState(const EndpointState&) = delete;
  EndpointState& operator=(const EndpointState&) = delete;
  ~EndpointState();

  /// Queues a request (or hands it to a waiting get) and starts the task if it is idle. A request
  /// that would wait while the queue is full fails at once with RESOURCE_EXHAUSTED.
  void deliver(PendingReplyPtr reply, boost::json::object&& payload);

  void start_get(GetHandler handler);
  void start_get(AwaitableGetHandler&& handler);
  void start_next(NextHandler handler);
  /// `outputs` is taken over only when it is encoded off the loop (a large value); otherwise it
  /// is read during the call and left to the caller.
  void start_push(boost::json::object&& outputs, PushHandler handler);
  void start_push(boost::json::object&& outputs, AwaitablePushHandler&& handler);

  /// Answers `reply` (taken from this endpoint) with `outputs`: checks and encodes them, records
  /// them as the return_value XCom and the state the answer leaves, then completes `handler`
  /// (posted) with the reply's outcome. With a durable XCom store the reply goes out once the
  /// return_value is committed.
  ///
  /// A value whose JSON text reaches OFF_LOOP_BYTES is encoded on the io_context's OffLoopWorker,
  /// not on the loop. Until it is back, this endpoint's later answers and XCom pushes wait their
  /// turn (each is recorded, and each reply sent, in push order) and it hands no request to its
  /// task (its next state change follows the answer's): seen from outside, the push is just
  /// slower. Nothing is recorded before the push completes.
  void answer(PendingReplyPtr reply, boost::json::object&& outputs, PushHandler handler);
  /// A request taken from this endpoint ended without an answer: the state becomes failed.
  void record_failure(const std::string& message);

  /// Binds the endpoint to its server's XComs (Server::attach): `record` may be null, then it is
  /// made on first use. `attempt` is the attempt an endpoint without a record is in.
  void bind_xcoms(std::shared_ptr<XComTable> table, TaskRecord* record, std::uint32_t attempt) noexcept;
  /// The endpoint's record in its XCom table (made now if it had none); null without a table.
  TaskRecord* xcom_record();
  /// Records the XCom `key` = `value`; a large value is encoded off the loop, in turn as answer().
  void start_xcom_push(std::string key, boost::json::value&& value, PushHandler handler);
  void start_xcom_pull(XComQuery query, PullHandler handler);

  /// Stops the endpoint: waiting and held requests fail with `status`, a waiting get completes
  /// with errc::endpoint_closed, the running invocation is cancelled; later deliveries fail too.
  void close(const grpc::Status& status);

  [[nodiscard]] const TaskInstanceKey& key() const noexcept { return key_; }
  [[nodiscard]] const LoopExecutor& executor() const noexcept { return executor_; }
  [[nodiscard]] std::size_t queued() const noexcept { return queue_.size(); }
  /// The bound on queued(); UNBOUNDED for none.
  [[nodiscard]] std::size_t max_queued() const noexcept {
    return max_queued_ == NO_BOUND ? UNBOUNDED : std::size_t{max_queued_};
  }
  [[nodiscard]] bool holding_request() const noexcept { return held_ != nullptr; }
  /// The attempt of an endpoint that has no XCom record yet (it never changed state).
  [[nodiscard]] std::uint32_t attempt_without_record() const noexcept { return attempt_; }
  [[nodiscard]] bool closed() const noexcept { return closed_; }
  /// The status close() gave; only after close.
  [[nodiscard]] const grpc::Status& close_status() const noexcept { return *close_status_; }

  /// RequestQueue: a queued request whose caller gave up leaves at once.
  void remove(PendingReply& request) noexcept override;

 private:
  // Memory: a server may hold 100,000 idle endpoints (bench/bm_density.cpp), so members that never
  // hold a value at the same time share storage, and nothing below allocates while idle.

  // A completion decided inside an initiation (where Asio forbids completing inline), queued on
  // the loop as an intrusive job: no allocation for the awaitable handlers. Holds a get or a push,
  // never both.
  struct DeferredCompletion final : LoopJob {
    static void invoke_deferred(LoopJob* job, bool run);
    [[nodiscard]] bool busy() const noexcept { return handler.index() != 0; }
    std::shared_ptr<EndpointState> keep_alive;  // set while queued
    std::variant<std::monostate, AwaitableGetHandler, AwaitablePushHandler> handler;
    boost::system::error_code error;
    boost::json::object payload;
  };

  // The one waiting get or next: a second one fails with get_already_pending, so they share a
  // slot. AwaitableGetHandler is co_await's (stored without allocation); the others any token.
  using Waiter = std::variant<std::monostate, AwaitableGetHandler, GetHandler, NextHandler>;

  // The completion handler of an invocation's co_spawn. A type of its own (not
  // bind_cancellation_slot) so that Asio sees no associated executor and installs its smaller
  // cancellation handler, which keeps no copy of the executor.
  class InvocationEnd;

  template <typename Handler>
  void start_get_with(Handler&& handler);
  // A push or XCom push waiting for its turn: encoded inline, or off the loop (a large value).
  struct Encoding;
  using EncodingPtr = std::shared_ptr<Encoding>;

  template <typename Handler>
  void start_push_with(boost::json::object&& outputs, Handler&& handler);
  void complete_later(GetHandler&& handler, boost::system::error_code error, boost::json::object payload);
  void complete_later(AwaitableGetHandler&& handler, boost::system::error_code error, boost::json::object payload);
  void complete_later(PushHandler&& handler, boost::system::error_code error);
  void complete_later(AwaitablePushHandler&& handler, boost::system::error_code error);
  void complete_later(NextHandler&& handler, boost::system::error_code error, Request request);
  void wait(GetHandler&& handler);
  void wait(NextHandler&& handler);
  void wait(AwaitableGetHandler&& handler);
  template <typename Handler>
  void wait_type_erased(Handler&& handler);
  [[nodiscard]] bool waiting() const noexcept { return waiter_.index() != 0; }
  void enqueue(PendingReplyPtr&& reply, boost::json::object&& payload);
  void refuse_queue_full(PendingReply& reply) const;
  void complete_waiter(boost::system::error_code error, boost::json::object&& payload);
  template <typename Handler>
  [[nodiscard]] bool can_complete_without_allocation(const Handler& handler) const;

  template <typename Handler>
  void answer_with(PendingReplyPtr&& reply, boost::json::object&& outputs, Handler&& handler);
  // Sends the encoded reply and records it. `record_copy` and `store_copy`: copies of `json` for
  // the XCom record and the store, made off the loop; empty ones are copied here.
  // `owner` (may be null) keeps `outputs` alive.
  template <typename Handler>
  void send_answer(PendingReplyPtr&& held, const boost::json::object& outputs, std::shared_ptr<const Encoding> owner,
                   std::string&& json, std::string&& record_copy, std::string&& store_copy, Handler&& handler);
  void record_answer(boost::system::error_code result, std::string&& json, const PendingReply& reply);
  void record_xcom(std::string_view key, std::string&& json, std::string&& store_copy, PushHandler&& handler);
  // The pipeline of pushes waiting for their turn (answer()).
  [[nodiscard]] bool encoding() const noexcept { return encodings_ != nullptr && !encodings_->empty(); }
  void enqueue_encoding(const EncodingPtr& encoding, bool large);
  static void invoke_encoded(LoopJob* job, bool run);
  void drain_encodings();
  void finish_encoding(const EncodingPtr& encoding);
  void resume_after_encodings();
  void record_running();

  void start_invocation();
  void on_invocation_end(const std::exception_ptr& error);
  void report_task_error(const std::exception_ptr& error);
  void hand_to_waiter(PendingReplyPtr&& reply, boost::json::object&& payload);
  bool pop_live(QueuedRequest& out);
  void release_queue_storage() noexcept;

  LoopExecutor executor_;
  TaskInstanceKey key_;
  Task task_;
  std::shared_ptr<const TaskErrorHook> on_task_error_;  // null: rethrown from io_context::run()
  // devector allocates nothing while empty, and its storage is given back when the queue runs dry
  // (release_queue_storage): an idle endpoint costs no queue memory.
  boost::container::devector<QueuedRequest> queue_;
  PendingReplyPtr held_;
  Waiter waiter_;
  DeferredCompletion deferred_;
  boost::asio::cancellation_signal invocation_cancel_;
  std::shared_ptr<XComTable> xcoms_;            // null for a state made without a server
  TaskRecord* xcom_record_ = nullptr;           // made on first use: an endpoint that never serves costs no record
  std::unique_ptr<grpc::Status> close_status_;  // set by close(); a pointer keeps idle endpoints small
  // Pushes waiting for their turn, oldest first; null unless a large value is being encoded.
  std::unique_ptr<std::deque<EncodingPtr>> encodings_;
  bool took_request_in_invocation_ = false;  // a get or next of the running invocation had a request
  bool invocation_running_ = false;
  bool closed_ = false;
  // 32 bits, next to the flags, where the object had padding: the bound costs idle endpoints
  // nothing. NO_BOUND (the largest value) is no bound.
  static constexpr std::uint32_t NO_BOUND = static_cast<std::uint32_t>(-1);
  std::uint32_t max_queued_ = NO_BOUND;
  std::uint32_t attempt_ = 1;  // while xcom_record_ is null
};

}  // namespace rx::detail

// The scheduler side: send JSON payloads to endpoints by address and await their replies.
#pragma once

#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/task_instance_key.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <grpcpp/support/status.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace rx {

namespace detail {
class ClientImpl;
}

/// Options of one send.
struct SendOptions {
  /// The call's deadline, from when it starts; past it the call fails with DEADLINE_EXCEEDED
  /// and the server drops the request.
  std::chrono::milliseconds timeout{30000};
};

/// Options of a Client.
struct ClientOptions {
  /// Largest message accepted or sent, in bytes.
  int max_message_bytes = 4 * 1024 * 1024;
};

/// Sends payloads to endpoints on any number of servers, reusing one gRPC channel per target.
///
/// Replies arrive on gRPC's threads and complete each operation on its handler's associated
/// executor (the Client's Loop when the handler has none): with the Loop's executor, the thread
/// that receives a reply runs the waiting coroutine itself when the loop is idle.
///
/// Thread safety: send() may be called from any thread. Destroy the Client after its calls
/// have completed.
class Client {
 public:
  using executor_type = LoopExecutor;
  using SendHandler = boost::asio::any_completion_handler<void(grpc::Status, boost::json::object)>;

  /// A client whose completions default to `loop`, which must outlive it.
  explicit Client(Loop& loop, ClientOptions options = {});
  /// A client with a Loop of its own over `context`, which must outlive it.
  explicit Client(boost::asio::io_context& context, ClientOptions options = {});
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  /// Delivers `payload` to the endpoint `key` of the server at `target` ("host:port") and
  /// waits for the task's reply.
  ///
  /// Completion signature: `void(grpc::Status, boost::json::object reply)`; the reply is the
  /// object the task pushed when the status is OK, empty otherwise. With `co_await` it yields a
  /// `std::tuple<grpc::Status, boost::json::object>`; see docs/protocol.md for the statuses.
  ///
  /// Cancellation (any type): cancels the RPC (`ClientContext::TryCancel`); the operation then
  /// completes with CANCELLED, unless the reply was already on its way. The server drops the
  /// request, or if the task holds it, the task's push reports errc::request_cancelled.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto send(std::string_view target, const TaskInstanceKey& key, boost::json::object payload, SendOptions options,
            CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, boost::json::object)>(
        [this](auto handler, std::string_view to, const TaskInstanceKey& at, const boost::json::object& json,
               SendOptions with) { start_send(to, at, json, with, SendHandler(std::move(handler))); },
        token, std::string(target), key, std::move(payload), options);
  }

  /// send() with default SendOptions.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto send(std::string_view target, const TaskInstanceKey& key, boost::json::object payload,
            CompletionToken&& token = {}) {
    return send(target, key, std::move(payload), SendOptions{}, std::forward<CompletionToken>(token));
  }

  [[nodiscard]] executor_type get_executor() const noexcept;

 private:
  void start_send(std::string_view target, const TaskInstanceKey& key, const boost::json::object& payload,
                  SendOptions options, SendHandler handler);

  std::unique_ptr<detail::ClientImpl> impl_;
};

}  // namespace rx

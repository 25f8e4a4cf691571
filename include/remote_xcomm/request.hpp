// One request as a task sees it: payload, deadline, caller, cancellation, and its reply.
#pragma once

#include <remote_xcomm/detail/pending_reply.hpp>
#include <remote_xcomm/loop.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/json/object.hpp>
#include <boost/system/error_code.hpp>
#include <grpcpp/support/status.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rx {

namespace detail {
class EndpointState;
}

/// One request taken from an endpoint with `co_await endpoint.next()`: what the caller sent, and
/// the one reply it is owed. Move-only; an empty Request (default-constructed, moved from, or
/// answered) holds nothing.
///
/// ```
/// asio::awaitable<void> run(rx::Endpoint rx) {
///   rx::Request request = co_await rx.next();
///   asio::steady_timer work(co_await asio::this_coro::executor, 5s);
///   // Stops early if the caller gives up: bind the work to the request's cancellation.
///   co_await work.async_wait(asio::bind_cancellation_slot(request.cancellation_slot(), asio::deferred));
///   co_await request.reply(boost::json::object{{"done", true}});
/// }
/// ```
///
/// Thread safety: use it on its endpoint's loop (where the task runs), except `reply` and `fail`,
/// which may be called from any thread (they queue onto the loop). Destroying a Request that was
/// not answered fails its request with INTERNAL ("the task dropped the request"), so that no
/// caller waits for nothing. Like any Asio I/O object, a Request must not outlive the io_context
/// of its endpoint's loop; it may outlive its endpoint, its Server and its Loop.
class Request {
 public:
  Request() noexcept = default;
  /// Internal: endpoints make requests.
  Request(detail::PendingReplyPtr reply, boost::json::object payload,
          std::shared_ptr<detail::EndpointState> endpoint) noexcept;
  /// Takes over `other`'s request (and the reply it is owed); `other` is left empty.
  Request(Request&& other) noexcept = default;
  /// Takes over `other`'s request; a request this object still held unanswered is first failed
  /// with INTERNAL, as by the destructor.
  Request& operator=(Request&& other) noexcept;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request();

  /// True while the request waits for its reply from this object.
  [[nodiscard]] bool valid() const noexcept { return reply_ != nullptr; }
  /// As valid(): `if (request)` tests whether the request still waits for its reply.
  explicit operator bool() const noexcept { return valid(); }

  /// The JSON object the caller sent. Stays readable (and movable from) after the reply.
  [[nodiscard]] boost::json::object& payload() noexcept { return payload_; }
  /// \overload
  [[nodiscard]] const boost::json::object& payload() const noexcept { return payload_; }

  /// The caller's deadline, if it set one. None once answered.
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point> deadline() const;
  /// The caller's address as gRPC names it ("ipv4:127.0.0.1:50322"). Empty once answered.
  [[nodiscard]] std::string peer() const;
  /// The metadata the caller sent (keys lower case, gRPC's own entries included), except
  /// `authorization`: a caller's token never reaches task code. Empty once answered.
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> metadata() const;

  /// True once the caller gave up (cancelled its call, or its deadline passed): nobody waits for
  /// the reply any more. The request is then already finished (CANCELLED).
  [[nodiscard]] bool cancelled() const;
  /// Emits `cancellation_type::terminal` on the loop when the caller gives up while the request
  /// is held here. Bind the request's work to it (`asio::bind_cancellation_slot`) to stop early;
  /// an emission before the first call of this function is not repeated, so check `cancelled()`
  /// too. The slot belongs to this Request: operations bound to it must complete before the
  /// Request is destroyed (Asio's rule for any cancellation signal).
  [[nodiscard]] boost::asio::cancellation_slot cancellation_slot() noexcept;

  /// Answers the request with `outputs`; the Request is empty from the call on.
  ///
  /// Completion signature: `void(boost::system::error_code)`, always posted. Errors:
  /// `errc::no_request_held` when the Request is empty, `errc::request_cancelled` when the caller
  /// gave up (the reply is dropped), `errc::reply_not_json` for NaN or infinity in `outputs`,
  /// `errc::reply_too_large` over the server's message limit, `errc::endpoint_closed` when the
  /// endpoint was detached or shut down meanwhile (the caller gets that status instead). Not
  /// cancellable: the reply is handed to gRPC at once.
  template <typename CompletionToken = boost::asio::default_completion_token_t<LoopExecutor>>
  auto reply(boost::json::object outputs, CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [](auto handler, Request* self, boost::json::object reply) {
          self->start_reply(std::move(reply), ReplyHandler(std::move(handler)));
        },
        token, this, std::move(outputs));
  }

  /// Fails the request with `status` (not OK) instead of replying; the Request is empty after.
  /// Runs on the endpoint's loop (queued there when called from another thread).
  void fail(grpc::Status status);

 private:
  using ReplyHandler = boost::asio::any_completion_handler<void(boost::system::error_code)>;
  void start_reply(boost::json::object outputs, ReplyHandler handler);
  void drop() noexcept;

  detail::PendingReplyPtr reply_;
  boost::json::object payload_;
  std::shared_ptr<detail::EndpointState> endpoint_;
  // Made on first use, shared with the request's own slot so that an emission can never reach
  // a signal that is gone.
  std::shared_ptr<boost::asio::cancellation_signal> signal_;
};

}  // namespace rx

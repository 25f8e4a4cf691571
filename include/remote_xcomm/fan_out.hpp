// Fan-out: one batch of sends to many endpoints on many servers, with a window of sends in flight,
// gathered as one result per endpoint.
#pragma once

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/task_instance_key.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/json/object.hpp>
#include <boost/system/error_code.hpp>
#include <grpcpp/support/status.h>

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rx {

/// One send of a fan-out: `payload` to the endpoint `key` of the server at `target` (any gRPC
/// target, as for Client::send).
struct FanOutRequest {
  /// The server's gRPC target, as for Client::send: "host:port", "unix:/path", ...
  std::string target;
  /// The endpoint on that server to send to.
  TaskInstanceKey key;
  /// The JSON object the task gets.
  boost::json::object payload;
};

/// The outcome of one FanOutRequest: what Client::send would have completed with.
struct FanOutResult {
  /// The request's position in the fan-out's requests.
  std::size_t index = 0;
  /// OK with the task's reply, or the send's own status (see Client::send): one endpoint's or
  /// one server's failure is its result and nobody else's.
  grpc::Status status;
  /// The task's reply when `status` is OK; empty otherwise.
  boost::json::object reply;
};

/// Options of a fan-out.
struct FanOutOptions {
  /// Most sends in flight at once, over every target; the rest wait, unsent, in request order.
  /// 0 is taken as 1.
  std::size_t max_in_flight = 4096;
  /// Most sends in flight at once to one target (one server), so that a slow server holds a
  /// bounded share of the window while the others go on. 0 is taken as 1.
  std::size_t max_in_flight_per_target = 1024;
  /// Options of every send; a send's deadline runs from when that send starts, not from the
  /// fan-out's start.
  SendOptions send;
};

namespace detail {
class FanOutState;
using FanOutNextHandler = boost::asio::any_completion_handler<void(boost::system::error_code, FanOutResult)>;
using FanOutAllHandler =
    boost::asio::any_completion_handler<void(boost::system::error_code, std::vector<FanOutResult>)>;
std::shared_ptr<FanOutState> start_fan_out(Client& client, std::vector<FanOutRequest> requests,
                                           const FanOutOptions& options);
void fan_out_next(const std::shared_ptr<FanOutState>& state, FanOutNextHandler handler);
void fan_out_all(const std::shared_ptr<FanOutState>& state, FanOutAllHandler handler);
void fan_out_cancel(const std::shared_ptr<FanOutState>& state);
}  // namespace detail

/// A batch of sends in flight, whose results are taken as they complete (next()) or all at once
/// (all()). Its sends start as soon as it is constructed: at most FanOutOptions::max_in_flight at a
/// time, and FanOutOptions::max_in_flight_per_target to any one target, each next one starting when
/// one completes, taking the targets in turn so that every server progresses. They run on the
/// Client's loop, which must be run.
///
/// Cancellation (one for every send): cancel(), or cancelling a next() or an all() (cancellation
/// types terminal or partial; a total-only cancellation is ignored, as cancelling has effects)
/// cancels every send not yet complete, as cancelling a Client::send does: each completes with
/// CANCELLED unless its reply was already on its way, and the ones not yet started complete at
/// once with CANCELLED, unsent. Their results are delivered as any other.
///
/// Lifetimes: destroying a FanOut cancels what is left and completes a waiting next() or all()
/// with `asio::error::operation_aborted`; its sends then finish on their own, under Client::send's
/// rules (the Client's io_context stays alive until they have completed). The Client may be
/// destroyed before the FanOut.
///
/// Thread safety: members may be called from any thread, but at most one next() or all() may
/// wait at a time.
class FanOut {
 public:
  /// The executor type of the Client's loop.
  using executor_type = LoopExecutor;

  /// Starts sending `requests` through `client`.
  FanOut(Client& client, std::vector<FanOutRequest> requests, FanOutOptions options = {});
  FanOut(const FanOut&) = delete;
  FanOut& operator=(const FanOut&) = delete;
  /// Takes over a fan-out's sends and results; the moved-from FanOut may only be destroyed or
  /// assigned to.
  FanOut(FanOut&&) noexcept = default;
  /// Abandons this fan-out as the destructor does, then takes over `other`'s.
  FanOut& operator=(FanOut&& other) noexcept;
  ~FanOut();

  /// Waits for the next result, in the order they complete. Completion signature
  /// `void(boost::system::error_code, FanOutResult)`: success with a result, or
  /// `rx::errc::no_more_results` once every result has been taken, `rx::errc::already_waiting`
  /// while another next() or all() waits, or `asio::error::operation_aborted` when cancelled (the
  /// wait takes no result; the fan-out is cancelled, see the class comment, and its results can
  /// still be taken) or when the FanOut is destroyed.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto next(CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, FanOutResult)>(
        [](detail::FanOutNextHandler handler, const std::shared_ptr<detail::FanOutState>& state) {
          detail::fan_out_next(state, std::move(handler));
        },
        token, state_);
  }

  /// Waits until every send has completed and yields the results not taken by next(), ordered
  /// by index. Completion signature `void(boost::system::error_code, std::vector<FanOutResult>)`:
  /// success, or `asio::error::operation_aborted` when cancelled (it still waits for every send,
  /// now cancelled, and yields every result), `rx::errc::already_waiting` (no results) while
  /// another next() or all() waits, or `operation_aborted` with no results when the FanOut is
  /// destroyed.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto all(CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, std::vector<FanOutResult>)>(
        [](detail::FanOutAllHandler handler, const std::shared_ptr<detail::FanOutState>& state) {
          detail::fan_out_all(state, std::move(handler));
        },
        token, state_);
  }

  /// Cancels every send not yet complete (see the class comment). Idempotent.
  void cancel();

  /// Number of requests.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  /// The default executor of next() and all(): the Client's loop.
  [[nodiscard]] executor_type get_executor() const noexcept { return executor_; }

 private:
  std::shared_ptr<detail::FanOutState> state_;
  std::size_t size_ = 0;
  LoopExecutor executor_;
};

/// Sends every request through `client`, as a FanOut with `options` does, and completes once
/// all have completed, with one result per request: `results[i]` is request i's. Completion
/// signature `void(boost::system::error_code, std::vector<FanOutResult>)`; the error is
/// `asio::error::operation_aborted` when the operation was cancelled, which cancels every send
/// not yet complete (the results still hold every request's, CANCELLED for those cut short).
/// Completes on the token's executor, by default the Client's loop.
template <typename CompletionToken = boost::asio::default_completion_token_t<LoopExecutor>>
auto fan_out(Client& client, std::vector<FanOutRequest> requests, FanOutOptions options = {},
             CompletionToken&& token = {}) {
  return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, std::vector<FanOutResult>)>(
      [&client](detail::FanOutAllHandler handler, std::vector<FanOutRequest> batch, const FanOutOptions& with) {
        detail::fan_out_all(detail::start_fan_out(client, std::move(batch), with), std::move(handler));
      },
      token, std::move(requests), std::move(options));
}

}  // namespace rx

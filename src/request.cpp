// The request object: a task's view of one request, over the transport's PendingReply.
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/request.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/system_executor.hpp>

#include <utility>

namespace rx {

namespace asio = boost::asio;

Request::Request(detail::PendingReplyPtr reply, boost::json::object payload,
                 std::shared_ptr<detail::EndpointState> endpoint) noexcept
    : reply_(std::move(reply)), payload_(std::move(payload)), endpoint_(std::move(endpoint)) {}

Request& Request::operator=(Request&& other) noexcept {
  if (this != &other) {
    drop();
    reply_ = std::move(other.reply_);
    payload_ = std::move(other.payload_);
    endpoint_ = std::move(other.endpoint_);
    signal_ = std::move(other.signal_);
  }
  return *this;
}

Request::~Request() { drop(); }

std::optional<std::chrono::system_clock::time_point> Request::deadline() const {
  return reply_ ? reply_->deadline() : std::nullopt;
}

std::string Request::peer() const { return reply_ ? reply_->peer() : std::string(); }

std::vector<std::pair<std::string, std::string>> Request::metadata() const {
  return reply_ ? reply_->metadata() : std::vector<std::pair<std::string, std::string>>();
}

bool Request::cancelled() const { return reply_ && (reply_->caller_gave_up() || reply_->cancelled()); }

asio::cancellation_slot Request::cancellation_slot() noexcept {
  if (!signal_) {
    try {
      signal_ = std::make_shared<asio::cancellation_signal>();
      if (reply_ && !reply_->finished()) {
        reply_->cancellation_slot().assign([signal = signal_](asio::cancellation_type type) { signal->emit(type); });
      }
    } catch (...) {  // no memory: a slot that never fires, as an unconnected one
      signal_.reset();
      return {};
    }
  }
  return signal_->slot();
}

void Request::start_reply(boost::json::object outputs, ReplyHandler handler) {
  detail::PendingReplyPtr reply = std::move(reply_);
  if (!endpoint_) {
    // No loop to run on: through the system executor to the handler's own executor.
    asio::post(asio::system_executor(),
               asio::append(std::move(handler), boost::system::error_code(errc::no_request_held)));
    return;
  }
  detail::on_endpoint_loop(endpoint_, [reply = std::move(reply), outputs = std::move(outputs),
                                       handler = std::move(handler)](detail::EndpointState& endpoint) mutable {
    if (!reply) {
      asio::post(endpoint.executor(),
                 asio::append(std::move(handler), boost::system::error_code(errc::no_request_held)));
      return;
    }
    endpoint.answer(std::move(reply), std::move(outputs), std::move(handler));
  });
}

void Request::fail(grpc::Status status) {
  detail::PendingReplyPtr reply = std::move(reply_);
  if (!reply) {
    return;
  }
  detail::on_endpoint_loop(endpoint_,
                           [reply = std::move(reply), status = std::move(status)](detail::EndpointState& endpoint) {
                             if (reply->fail(endpoint.closed() ? endpoint.close_status() : status)) {
                               endpoint.record_failure(status.error_message());
                             }
                           });
}

void Request::drop() noexcept {
  if (!reply_) {
    return;
  }
  detail::PendingReplyPtr reply = std::move(reply_);
  try {
    detail::on_endpoint_loop(endpoint_, [reply = std::move(reply)](detail::EndpointState& endpoint) {
      if (reply->finished()) {
        return;
      }
      if (endpoint.closed()) {
        reply->fail(endpoint.close_status());
        return;
      }
      if (reply->cancelled()) {
        // The caller gave up and gRPC knows, but its notice has not reached the loop yet: the task
        // dropped a request nobody waits for, as cancelled() told it it could. Not a failure of
        // the task (found by tests/test_cancellation_storm.cpp: counted INTERNAL, state failed).
        reply->fail(grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the call or its deadline passed"));
        return;
      }
      const std::string message =
          "the task of endpoint " + to_string(endpoint.key()) + " dropped the request without answering it";
      reply->fail(grpc::Status(grpc::StatusCode::INTERNAL, message));
      endpoint.record_failure(message);
    });
  } catch (...) {
    // No memory to queue the notice: the reference is dropped, and a transport finishes a request
    // whose last reference goes (INTERNAL).
  }
}

}  // namespace rx

#include "unary_send_call.hpp"

#include "codec.hpp"

#include <remote_xcomm/error.hpp>

#include <grpcpp/server_context.h>

#include <exception>
#include <string>
#include <utility>

namespace rx::detail {

UnarySendCall::UnarySendCall(grpc::CallbackServerContext* context, remote_xcomm::v1::SendResponse* response,
                             std::size_t max_reply_bytes, CallObserver* observer) noexcept
    : context_(context),
      reactor_(context->DefaultReactor()),
      response_(response),
      observer_(observer),
      max_reply_bytes_(max_reply_bytes) {}

UnarySendCall::~UnarySendCall() {
  if (finished_) {
    return;
  }
  // Reached only when the last reference was dropped unanswered. gRPC would wait for this call
  // forever (and Server::Wait() with it): finish it here, on whichever thread dropped it.
  try {
    finish(grpc::Status(grpc::StatusCode::INTERNAL, "the server dropped the request without answering it"));
  } catch (...) {  // no memory for the message: the call still finishes
    finish(grpc::Status(grpc::StatusCode::INTERNAL, {}));
  }
}

boost::system::error_code UnarySendCall::reply(const boost::json::object& outputs) {
  if (finished_) {
    return errc::request_cancelled;
  }
  if (cancelled()) {
    fail(grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the call or its deadline passed"));
    return errc::request_cancelled;
  }
  if (!all_numbers_finite(outputs)) {
    fail(grpc::Status(grpc::StatusCode::INTERNAL,
                      "the task pushed a reply holding NaN or infinity, which JSON cannot carry"));
    return errc::reply_not_json;
  }
  std::size_t size = 0;
  try {
    response_->set_reply_json(serialize_json(outputs));
    size = response_->ByteSizeLong();
    if (size > max_reply_bytes_) {
      fail(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the task's reply is " + std::to_string(size) +
                                                                  " bytes, over the server's limit of " +
                                                                  std::to_string(max_reply_bytes_)));
      return errc::reply_too_large;
    }
  } catch (...) {
    // Encoding allocates (the JSON text, the message); a task's push must never leave the call
    // unfinished, nor throw out of the endpoint's push initiation.
    if (!finished_) {
      finish(grpc::Status(grpc::StatusCode::INTERNAL, "the server could not encode the task's reply"));
    }
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  finish(grpc::Status::OK);
  return {};
}

bool UnarySendCall::fail(const grpc::Status& status) {
  if (finished_) {
    return false;
  }
  finish(status);
  return true;
}

bool UnarySendCall::cancelled() const { return !finished_ && context_->IsCancelled(); }

void UnarySendCall::finish(grpc::Status status) noexcept {
  finished_ = true;
  // Before Finish: the server waits for this count before it lets gRPC's Shutdown() return, so
  // the observer is alive until the call is finished, not after.
  if (observer_ != nullptr) {
    observer_->on_call_finished();
  }
  reactor_->Finish(std::move(status));  // a move: nothing here may throw
}

}  // namespace rx::detail

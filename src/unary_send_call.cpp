#include "unary_send_call.hpp"

#include "codec.hpp"

#include <remote_xcomm/error.hpp>

#include <grpcpp/server_context.h>

#include <string>

namespace rx::detail {

UnarySendCall::UnarySendCall(grpc::CallbackServerContext* context, remote_xcomm::v1::SendResponse* response,
                             std::size_t max_reply_bytes) noexcept
    : context_(context), reactor_(context->DefaultReactor()), response_(response), max_reply_bytes_(max_reply_bytes) {}

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
  response_->set_reply_json(serialize_json(outputs));
  if (const std::size_t size = response_->ByteSizeLong(); size > max_reply_bytes_) {
    fail(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the task's reply is " + std::to_string(size) +
                                                                " bytes, over the server's limit of " +
                                                                std::to_string(max_reply_bytes_)));
    return errc::reply_too_large;
  }
  finished_ = true;
  reactor_->Finish(grpc::Status::OK);
  return {};
}

bool UnarySendCall::fail(const grpc::Status& status) {
  if (finished_) {
    return false;
  }
  finished_ = true;
  reactor_->Finish(status);
  return true;
}

bool UnarySendCall::cancelled() const { return !finished_ && context_->IsCancelled(); }

}  // namespace rx::detail

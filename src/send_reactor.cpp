#include "send_reactor.hpp"

#include "codec.hpp"

namespace rx::detail {

SendReactor::SendReactor(LoopExecutor loop, remote_xcomm::v1::SendResponse* response) noexcept
    : loop_(std::move(loop)), response_(response) {
  intrusive_ptr_add_ref(this);  // gRPC's reference, released in OnDone
}

bool SendReactor::reply(const boost::json::object& outputs) {
  if (finished_) {
    return false;
  }
  finished_ = true;
  response_->set_reply_json(serialize_json(outputs));
  Finish(grpc::Status::OK);
  return true;
}

bool SendReactor::fail(const grpc::Status& status) {
  if (finished_) {
    return false;
  }
  finished_ = true;
  Finish(status);
  return true;
}

void SendReactor::OnCancel() {
  // Finishing belongs to the loop; the job keeps the reactor alive even if OnDone comes first.
  loop_.execute([self = PendingReplyPtr(this)] {
    self->fail(grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the call or its deadline passed"));
  });
}

void SendReactor::OnDone() { intrusive_ptr_release(this); }

}  // namespace rx::detail

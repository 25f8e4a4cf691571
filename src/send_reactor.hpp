// Transport: the reactor of one unary Send call, and its hand-off to the loop.
#pragma once

#include <remote_xcomm/detail/pending_reply.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <grpcpp/support/server_callback.h>

namespace rx::detail {

/// Reactor of one Send call, and the PendingReply its endpoint answers through.
///
/// gRPC holds one reference until OnDone. The reactor is finished exactly once, on the loop
/// (or before any hand-off when the request is rejected outright); OnCancel only hands a
/// CANCELLED finish to the loop, so it cannot race with a task's push.
class SendReactor final : public grpc::ServerUnaryReactor, public PendingReply {
 public:
  SendReactor(LoopExecutor loop, remote_xcomm::v1::SendResponse* response) noexcept;

  bool reply(const boost::json::object& outputs) override;
  bool fail(const grpc::Status& status) override;
  [[nodiscard]] bool finished() const noexcept override { return finished_; }

  void OnCancel() override;
  void OnDone() override;

 private:
  LoopExecutor loop_;
  remote_xcomm::v1::SendResponse* response_;  // owned by gRPC; valid until Finish
  bool finished_ = false;                     // loop-confined
};

}  // namespace rx::detail

// Transport: the server side of one unary Send call, as the endpoint queue answers it.
#pragma once

#include <remote_xcomm/detail/pending_reply.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <grpcpp/support/server_callback.h>

#include <cstddef>

namespace grpc {
class CallbackServerContext;
}

namespace rx::detail {

/// One Send call waiting for its reply, finished through gRPC's default unary reactor.
///
/// The default reactor is the one gRPC runs `OnDone` inline for; a reactor of our own would have
/// gRPC hand `OnDone` to its executor thread, a thread wake per request. Cancellation is
/// therefore observed, not signalled: `cancelled()` asks the context, and the endpoint queue
/// checks it before handing a request to a task and when the task replies.
///
/// Finished exactly once, on the loop (or on the gRPC thread before any hand-off, when the request
/// is refused outright). Nothing touches the context, request or response after `Finish()`.
class UnarySendCall final : public PendingReply {
 public:
  UnarySendCall(grpc::CallbackServerContext* context, remote_xcomm::v1::SendResponse* response,
                std::size_t max_reply_bytes) noexcept;

  [[nodiscard]] grpc::ServerUnaryReactor* reactor() const noexcept { return reactor_; }

  boost::system::error_code reply(const boost::json::object& outputs) override;
  bool fail(const grpc::Status& status) override;
  [[nodiscard]] bool finished() const noexcept override { return finished_; }
  [[nodiscard]] bool cancelled() const override;

 private:
  grpc::CallbackServerContext* context_;      // owned by gRPC; valid until Finish
  grpc::ServerUnaryReactor* reactor_;         // gRPC's default reactor, in the call's arena
  remote_xcomm::v1::SendResponse* response_;  // owned by gRPC; valid until Finish
  std::size_t max_reply_bytes_;
  bool finished_ = false;
};

}  // namespace rx::detail

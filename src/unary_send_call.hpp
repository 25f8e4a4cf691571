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

/// Told when a call is finished, just before gRPC is: the server counts its unfinished calls so
/// that a graceful shutdown knows when every request has its status. Any thread.
class CallObserver {
 public:
  virtual void on_call_finished() noexcept = 0;

 protected:
  ~CallObserver() = default;
};

/// One Send call waiting for its reply, finished through gRPC's default unary reactor.
///
/// The default reactor is the one gRPC runs `OnDone` inline for; a reactor of our own would have
/// gRPC hand `OnDone` to its executor thread, a thread wake per request. Cancellation is
/// therefore observed, not signalled: `cancelled()` asks the context, and the endpoint queue
/// checks it before handing a request to a task and when the task replies.
///
/// Finished exactly once, on every path: by `reply` or `fail` on the loop (or on the gRPC thread
/// before any hand-off, when the request is refused outright), and otherwise by the destructor
/// (INTERNAL), so that a call dropped unanswered (an exception, a job freed unrun) still
/// completes and `grpc::Server::Wait()` cannot hang on it. Nothing touches the context, request
/// or response after `Finish()`.
class UnarySendCall final : public PendingReply {
 public:
  /// `observer` (may be null) must outlive the call's finish.
  UnarySendCall(grpc::CallbackServerContext* context, remote_xcomm::v1::SendResponse* response,
                std::size_t max_reply_bytes, CallObserver* observer = nullptr) noexcept;
  ~UnarySendCall() override;

  [[nodiscard]] grpc::ServerUnaryReactor* reactor() const noexcept { return reactor_; }

  /// Never throws: a reply that cannot be encoded (out of memory) finishes the call with INTERNAL
  /// and returns `not_enough_memory`.
  boost::system::error_code reply(const boost::json::object& outputs) override;
  bool fail(const grpc::Status& status) override;
  [[nodiscard]] bool finished() const noexcept override { return finished_; }
  [[nodiscard]] bool cancelled() const override;

 private:
  // The status is copied by the caller (which may throw); from here on nothing throws.
  void finish(grpc::Status status) noexcept;

  grpc::CallbackServerContext* context_;      // owned by gRPC; valid until Finish
  grpc::ServerUnaryReactor* reactor_;         // gRPC's default reactor, in the call's arena
  remote_xcomm::v1::SendResponse* response_;  // owned by gRPC; valid until Finish
  CallObserver* observer_;
  std::size_t max_reply_bytes_;
  bool finished_ = false;
};

}  // namespace rx::detail

// One unary call of a Client (Send, Pull, GetState): the RPC, its caller's cancellation, and its
// outcome handed to the caller's executor. Internal.
#pragma once

#include "client/completion.hpp"
#include "client/target_channel.hpp"
#include "tsan_annotations.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/cancellation_type.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

namespace rx::detail {

/// The options a unary call takes from its operation.
struct UnaryCallOptions {
  std::optional<std::chrono::milliseconds> timeout;
  bool wait_for_ready = false;
};

/// Everything one call needs until its outcome has been handed to the caller. `Rpc` names the
/// method and its types:
///
///     using Request, Response, Result; using Expect;  // what the reply is checked against
///     static void start(Stub&, grpc::ClientContext*, const Request*, Response*, std::function<void(grpc::Status)>);
///     static grpc::Status decode(Response&, const Expect&, Result&);  // on the gRPC thread
template <typename Rpc>
struct UnaryCall final : ClientCompletion<UnaryCall<Rpc>, grpc::Status, typename Rpc::Result>, DeferredStart {
  using Completion = ClientCompletion<UnaryCall<Rpc>, grpc::Status, typename Rpc::Result>;

  UnaryCall(typename Completion::Handler h, const LoopExecutor* loop, typename Rpc::Expect e)
      : Completion(std::move(h), loop), expect(std::move(e)) {}

  /// Starts `call` on `channel`, or after the current loop run when a completion that a gRPC
  /// thread runs made it (DeferredStarts). Connects the handler's cancellation slot to TryCancel.
  static void start(const TargetChannel& channel, std::unique_ptr<UnaryCall> owned, const UnaryCallOptions& options) {
    UnaryCall* call = owned.release();  // owned by the RPC until its completion
    if (options.timeout) {
      call->context.set_deadline(std::chrono::system_clock::now() + *options.timeout);
    }
    if (options.wait_for_ready) {
      call->context.set_wait_for_ready(true);
    }
    if (!channel.authorization.empty()) {
      call->context.AddMetadata("authorization", channel.authorization);
    }
    auto slot = call->handler.get_cancellation_slot();
    if (slot.is_connected()) {
      // Emitted on the caller's executor; the call lives until its completion has cleared the slot there.
      slot.assign([call](boost::asio::cancellation_type /*type*/) {
        call->caller_cancelled.store(true, std::memory_order_relaxed);
        call->context.TryCancel();
      });
    }
    if (deferred_starts.defer(call)) {
      call->deferred_channel = channel.shared_from_this();
      return;
    }
    call->start_on(*channel.stub);
  }

  std::tuple<grpc::Status, typename Rpc::Result> take_outcome() { return {std::move(status), std::move(result)}; }

  grpc::ClientContext context;
  typename Rpc::Request request;
  typename Rpc::Response response;
  typename Rpc::Expect expect;
  // The outcome, written on the gRPC thread before the completion is handed off.
  grpc::Status status;
  typename Rpc::Result result{};
  // Set by the handler's cancellation slot: a CANCELLED status is then the caller's own.
  std::atomic<bool> caller_cancelled{false};
  // Set while the call waits in this thread's DeferredStarts.
  std::shared_ptr<const TargetChannel> deferred_channel;

 private:
  void start_deferred() override {
    const std::shared_ptr<const TargetChannel> channel = std::move(deferred_channel);
    start_on(*channel->stub);  // the call may be complete and freed once this returns
  }

  void start_on(remote_xcomm::v1::RemoteXComm::Stub& stub) {
    // The callback uses nothing of the Client: a Client destroyed with calls in flight is fine.
    handed_to_grpc(this);
    Rpc::start(stub, &context, &request, &response,
               [this](grpc::Status outcome) { complete(this, std::move(outcome)); });
  }

  // Runs on a gRPC thread. Checks the reply there, off the loop, then hands it to the caller.
  static void complete(UnaryCall* raw_call, grpc::Status outcome) {
    back_from_grpc(raw_call);
    std::unique_ptr<UnaryCall> call(raw_call);
    call->status = std::move(outcome);
    if (call->status.ok()) {
      grpc::Status decoded = Rpc::decode(call->response, call->expect, call->result);
      if (!decoded.ok()) {
        call->status = std::move(decoded);
        call->result = typename Rpc::Result{};
      }
    } else if (call->status.error_code() == grpc::StatusCode::CANCELLED &&
               !call->caller_cancelled.load(std::memory_order_relaxed)) {
      // Not the caller's doing: gRPC cut the call short on the server's side (a server shutting
      // down cancels the calls it has not answered), which for the caller is a server gone away,
      // as on the Exchange transport.
      call->status = grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          "the server cancelled the call before replying (it may be shutting down): " + call->status.error_message());
    }
    Completion::deliver(std::move(call));
  }
};

}  // namespace rx::detail

// Transport: the server side of one unary Send call, as the endpoint queue answers it.
#pragma once

#include <remote_xcomm/detail/pending_reply.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/slice.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <utility>

namespace grpc {
class CallbackServerContext;
}

namespace rx::detail {

/// Told when a call is finished, just before gRPC is: the server counts its unfinished calls so
/// that a graceful shutdown knows when every request has its status, and its status and latency
/// (from `started`, the call's arrival) for Stats. Any thread.
class CallObserver {
 public:
  virtual void on_call_finished(grpc::StatusCode code, std::chrono::steady_clock::time_point started) noexcept = 0;

 protected:
  ~CallObserver() = default;
};

/// One Send call waiting for its reply, and its reactor.
///
/// The call is its own reactor so that gRPC tells it when the caller gives up (`OnCancel`: the
/// caller cancelled, or the deadline gRPC enforces passed): the notice goes to the loop, where the
/// request leaves its queue at once or its holder's cancellation slot fires. Both reactions are
/// trivial (a reference count, a queued job), so the reactor declares itself inlineable as gRPC's
/// own default reactor does: a reactor that is not would have gRPC hand `OnDone` to its executor
/// thread, a thread wake per request.
///
/// Finished exactly once, on every path: by `reply` or `fail` on the loop (or on the gRPC thread
/// before any hand-off, when the request is refused outright), and otherwise when the last
/// reference is dropped (INTERNAL), so that a call dropped unanswered (an exception, a job freed
/// unrun) still completes and `grpc::Server::Wait()` cannot hang on it. Freed when both the
/// references and gRPC (`OnDone`) are done with it. Nothing touches the context, request or
/// response after `OnDone`.
class UnarySendCall final : public PendingReply, public grpc::ServerUnaryReactor {
 public:
  /// `observer` (may be null) must outlive the call's finish. `loop` receives cancellation notices.
  UnarySendCall(grpc::CallbackServerContext* context, remote_xcomm::v1::SendResponse* response,
                std::size_t max_reply_bytes, LoopExecutor loop, CallObserver* observer = nullptr) noexcept;

  [[nodiscard]] grpc::ServerUnaryReactor* reactor() noexcept { return this; }
  /// The request's bytes, kept here so that views decoded from them stay valid (a small slice
  /// holds its bytes inline) until the call is freed.
  [[nodiscard]] grpc::Slice& request_bytes() noexcept { return request_bytes_; }

  /// Never throws: a reply that cannot be encoded (out of memory) finishes the call with INTERNAL
  /// and returns `not_enough_memory`.
  boost::system::error_code reply(const boost::json::object& outputs, std::string&& json) override;
  bool fail(const grpc::Status& status) override;
  [[nodiscard]] bool finished() const noexcept override { return finished_; }
  [[nodiscard]] bool cancelled() const override;
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point> deadline() const override;
  [[nodiscard]] std::string peer() const override;
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> metadata() const override;

  // grpc::ServerUnaryReactor, on gRPC's threads.
  void OnDone() override;
  void OnCancel() override;
  bool InternalInlineable() override { return true; }

 private:
  ~UnarySendCall() override = default;
  void last_reference_dropped() noexcept override;

  // The worker's job that hands a large reply to gRPC; finishes the call even if never run.
  class FinishOffLoop {
   public:
    explicit FinishOffLoop(UnarySendCall* call) noexcept : call_(call) {}
    FinishOffLoop(FinishOffLoop&& other) noexcept : call_(std::exchange(other.call_, nullptr)) {}
    FinishOffLoop(const FinishOffLoop&) = delete;
    FinishOffLoop& operator=(const FinishOffLoop&) = delete;
    FinishOffLoop& operator=(FinishOffLoop&&) = delete;
    ~FinishOffLoop();
    void operator()();

   private:
    UnarySendCall* call_;
  };
  void release_part() noexcept;
  // The status is copied by the caller (which may throw); from here on nothing throws.
  void finish(grpc::Status status) noexcept;

  grpc::CallbackServerContext* context_;      // owned by gRPC; valid until OnDone
  remote_xcomm::v1::SendResponse* response_;  // owned by gRPC; valid until OnDone
  LoopExecutor loop_;
  CallObserver* observer_;
  grpc::Slice request_bytes_;
  std::size_t max_reply_bytes_;
  std::chrono::steady_clock::time_point started_;  // the call's arrival: its latency counts from here
  std::atomic<int> parts_{2};                      // the references and gRPC's reactor: freed when both are done
  bool finished_ = false;
};

}  // namespace rx::detail

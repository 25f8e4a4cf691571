// The raw gRPC baseline: callback-API echo services and clients written as a gRPC user would,
// without Remote XComm. They move the same messages as the framework (SendRequest/SendResponse).
#pragma once

#include "common/closed_loop.hpp"

#include <bench_echo.grpc.pb.h>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <grpcpp/channel.h>
#include <grpcpp/server.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace rx::bench {

/// Message limit of every benchmark channel and server, as rx::Client and rx::Server default to.
inline constexpr int MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/// Deadline set on every call, baseline and framework alike (rx::SendOptions' default).
inline constexpr std::chrono::seconds CALL_DEADLINE{30};

/// A gRPC server on 127.0.0.1, port 0, answering `remote_xcomm.v1.RemoteXComm/Send` by echoing
/// payload_json into reply_json, and `remote_xcomm.bench.v1.BenchEcho/EchoStream` likewise per
/// message. Each reaction replies at once on the gRPC thread that runs it.
class RawEchoServer {
 public:
  /// Listens on `address` (a gRPC listening address: "127.0.0.1:0", "unix:/path").
  explicit RawEchoServer(const std::string& address = "127.0.0.1:0");
  RawEchoServer(const RawEchoServer&) = delete;
  RawEchoServer& operator=(const RawEchoServer&) = delete;
  ~RawEchoServer();

  [[nodiscard]] const std::string& target() const noexcept { return target_; }

 private:
  class UnaryService;
  class StreamService;
  std::unique_ptr<UnaryService> unary_;
  std::unique_ptr<StreamService> stream_;
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
};

/// An insecure channel to `target` with the same arguments rx::Client uses.
[[nodiscard]] std::shared_ptr<grpc::Channel> make_channel(const std::string& target);

/// Issues one raw callback-API unary Send of `request` for a closed loop (see run_closed_loop);
/// its completion, on a gRPC thread, issues the next.
void issue_raw_unary(remote_xcomm::v1::RemoteXComm::Stub& stub, const remote_xcomm::v1::SendRequest& request,
                     ClosedLoop& loop);

/// Echoes `loop.total()` copies of `request` over one bidirectional stream, keeping `in_flight`
/// messages sent but not yet echoed, recording each message's round trip in `loop`. Returns
/// once every message has been echoed and the stream has finished; the status is the stream's.
grpc::Status run_raw_stream(remote_xcomm::bench::v1::BenchEcho::Stub& stub,
                            const remote_xcomm::v1::SendRequest& request, int in_flight, ClosedLoop& loop);

}  // namespace rx::bench

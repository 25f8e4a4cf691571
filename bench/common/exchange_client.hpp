// A raw gRPC client of the Exchange stream (the generated stub, as a client in any language would
// use it), batching its writes: the load for benchmarks of our server's stream.
#pragma once

#include "common/closed_loop.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <grpcpp/support/status.h>

#include <string>
#include <vector>

namespace rx::bench {

/// Sends `loop.total()` requests over one Exchange stream, keeping `in_flight` sent and not yet
/// answered, spread over `keys` round robin, each with `payload_json`. Writes run one at a time
/// (gRPC's rule) and each carries every frame queued while the previous one was on the wire: no
/// timer, so a lone request goes at once. Records each request's round trip in `loop` (an error
/// if its reply is not an OK echo of the payload). Returns once every request is answered and the
/// stream has ended; the status is the stream's.
grpc::Status run_exchange_stream(remote_xcomm::v1::RemoteXComm::Stub& stub,
                                 const std::vector<remote_xcomm::v1::TaskInstanceKey>& keys,
                                 const std::string& payload_json, int in_flight, ClosedLoop& loop);

}  // namespace rx::bench

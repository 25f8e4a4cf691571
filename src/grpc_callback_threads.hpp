// Keeping gRPC's callback threads for the life of the process. Internal.
#pragma once

namespace rx::detail {

/// Makes sure gRPC's callback threads are never torn down from one of themselves.
///
/// gRPC 1.51 runs callback-API reactions on a completion queue shared by every channel and server
/// of the process, polled by threads of its own; the last channel or server to go shuts that
/// queue down and joins the threads. When that last object goes on one of those threads (a
/// completion that destroys its Client, or a Client freed by its last call's completion), the
/// thread joins itself and the queue is freed twice (AddressSanitizer: double-free in
/// grpc_cq_internal_unref). Users of this library may destroy their objects there, so the
/// library holds one reference to that queue for the life of the process: a channel that made one
/// callback call, never destroyed. Idempotent and thread-safe; called before the library creates
/// a channel or starts a server.
void hold_grpc_callback_threads() noexcept;

}  // namespace rx::detail

// Transport: the server side of the Pull, GetState and Watch calls, over the loop's XCom table.
// Internal.
#pragma once

#include "observability/server_metrics.hpp"
#include "xcom/xcom_table.hpp"

#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <grpcpp/support/server_callback.h>

#include <memory>

namespace grpc {
class CallbackServerContext;
}

namespace rx::detail {

/// Starts a Pull call: answered on the loop at once, or once its XComs are pushed when it waits.
/// The reactor lives until gRPC's OnDone; `table` until the call is finished. `metrics` (may be
/// null) must outlive the call's finish; it counts the call's status and latency.
[[nodiscard]] grpc::ServerUnaryReactor* start_pull(grpc::CallbackServerContext* context,
                                                   const remote_xcomm::v1::PullRequest& request,
                                                   remote_xcomm::v1::PullResponse* response,
                                                   std::shared_ptr<XComTable> table, LoopExecutor loop,
                                                   ServerMetrics* metrics = nullptr);

/// Starts a Watch call: replays what it asks for from the table's history, then follows the
/// table's new events; a subscriber whose unsent events reach `watch_buffer_events` is ended with
/// RESOURCE_EXHAUSTED. `metrics` (may be null) must outlive the call's finish; it counts the
/// stream as open until then, and its status.
[[nodiscard]] grpc::ServerWriteReactor<remote_xcomm::v1::WatchResponse>* start_watch(
    grpc::CallbackServerContext* context, const remote_xcomm::v1::WatchRequest& request,
    std::shared_ptr<XComTable> table, LoopExecutor loop, ServerMetrics* metrics = nullptr);

}  // namespace rx::detail

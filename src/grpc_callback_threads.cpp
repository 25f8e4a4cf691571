#include "grpc_callback_threads.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <chrono>
#include <memory>
#include <mutex>

namespace rx::detail {

// The channel and its one call, alive until the process ends.
struct CallbackThreadsHolder {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<remote_xcomm::v1::RemoteXComm::Stub> stub;
  grpc::ClientContext context;
  remote_xcomm::v1::SendRequest request;
  remote_xcomm::v1::SendResponse response;
};

// Reachable from a global of external linkage (so no compiler drops the store), which leak
// checkers do not count as a leak.
extern CallbackThreadsHolder* grpc_callback_threads_holder;
CallbackThreadsHolder* grpc_callback_threads_holder = nullptr;

void hold_grpc_callback_threads() noexcept {
#if defined(__SANITIZE_THREAD__)
  // Not under ThreadSanitizer: gRPC hands each call's callback to these threads through its own
  // (uninstrumented) queue, so TSan sees the order only through the threads' creation; threads
  // kept for the process make every later call's callback tag look raced in gRPC's own code. The
  // teardowns this guards against are exercised under AddressSanitizer (test_destroy_orders).
  return;
#endif
  static std::once_flag once;
  try {
    std::call_once(once, [] {
      auto held = std::make_unique<CallbackThreadsHolder>();
      // A channel takes its reference to the shared callback queue with its first callback call.
      // This one goes nowhere and is over at once: its deadline has passed before it starts, and
      // a Unix socket path fails without a lookup.
      held->channel =
          grpc::CreateChannel("unix:/nonexistent/remote-xcomm-keepalive", grpc::InsecureChannelCredentials());
      held->stub = remote_xcomm::v1::RemoteXComm::NewStub(held->channel);
      held->context.set_deadline(std::chrono::system_clock::now());
      held->stub->async()->Send(&held->context, &held->request, &held->response, [](const grpc::Status& /*status*/) {});
      grpc_callback_threads_holder = held.release();
    });
  } catch (...) {
    // No memory or no thread for it: the library still works; only a teardown on gRPC's own
    // threads stays exposed to gRPC's double free.
  }
}

}  // namespace rx::detail

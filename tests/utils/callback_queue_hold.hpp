// A hold on gRPC's process-wide callback queue for tests that let streams or channels outlive
// their Client (see the class comment).
#pragma once

#include "utils/wait.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>

namespace rx_test {

// Holds a reference to gRPC's process-wide callback queue for as long as it lives, as the library
// itself does for the process (src/grpc_callback_threads.cpp) except under ThreadSanitizer. A
// stream of a destroyed Client holds that Client's channel until gRPC's OnDone, so it is often the
// last channel of a test and is freed on one of gRPC's own threads; if that released the last
// reference, gRPC 1.51 would tear its callback threads down from one of them and free the queue
// twice (AddressSanitizer sees it without the library's hold). With this, the last reference goes
// on the test thread, after every stream has ended.
class CallbackQueueHold {
 public:
  CallbackQueueHold()
      : channel_(grpc::CreateChannel("unix:/nonexistent/rx-test-callback-queue", grpc::InsecureChannelCredentials())),
        stub_(remote_xcomm::v1::RemoteXComm::NewStub(channel_)) {
    // A channel takes its reference with its first callback call; this one fails at once.
    context_.set_deadline(std::chrono::system_clock::now());
    stub_->async()->Send(&context_, &request_, &response_,
                         [this](const grpc::Status& /*status*/) { done_.set_value(); });
  }
  CallbackQueueHold(const CallbackQueueHold&) = delete;
  CallbackQueueHold& operator=(const CallbackQueueHold&) = delete;
  ~CallbackQueueHold() {
    // The call's completion touches this object; its deadline has passed, so it comes at once.
    EXPECT_EQ(done_future_.wait_for(rx_test::HANG_GUARD), std::future_status::ready);
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<remote_xcomm::v1::RemoteXComm::Stub> stub_;
  grpc::ClientContext context_;
  remote_xcomm::v1::SendRequest request_;
  remote_xcomm::v1::SendResponse response_;
  std::promise<void> done_;
  std::future<void> done_future_ = done_.get_future();
};

}  // namespace rx_test

// One endpoint queue (detail::EndpointState) on a test-driven loop, fed with fake replies.
#pragma once

#include "utils/fake_reply.hpp"
#include "utils/loop_fixture.hpp"
#include "utils/server_fixture.hpp"

#include <remote_xcomm/detail/endpoint_state.hpp>

#include <boost/json/object.hpp>
#include <grpcpp/support/status.h>

#include <memory>
#include <utility>

namespace rx_test {

/// A LoopFixture holding one endpoint, closed at the end of each test so that no task is left
/// waiting on it.
class EndpointFixture : public LoopFixture {
 protected:
  void TearDown() override {
    if (state_) {
      on_loop([this] { state_->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "test over")); });
    }
  }

  /// Creates the endpoint at make_key(), running `task` for its requests (none: driven by hand).
  const std::shared_ptr<rx::detail::EndpointState>& serve(rx::detail::EndpointState::Task task = {}) {
    state_ = std::make_shared<rx::detail::EndpointState>(executor_, make_key(), std::move(task));
    return state_;
  }

  /// Delivers `payload` as a request on the loop; the returned fake records how it finished.
  FakeReplyPtr deliver(boost::json::object payload) {
    FakeReplyPtr reply = make_fake_reply();
    on_loop([&] { state_->deliver(reply, std::move(payload)); });
    return reply;
  }

  std::shared_ptr<rx::detail::EndpointState> state_;
};

}  // namespace rx_test

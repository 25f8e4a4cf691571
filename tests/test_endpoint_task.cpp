// Task invocations of an endpoint (detail::EndpointState with a task): when the task runs, and what
// happens to its requests when it throws, returns early or is cancelled. A Loop and fake replies, no gRPC.
#include "utils/endpoint_fixture.hpp"
#include "utils/fake_reply.hpp"
#include "utils/gate.hpp"
#include "utils/loop_fixture.hpp"
#include "utils/payloads.hpp"
#include "utils/server_fixture.hpp"

#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using rx::detail::EndpointState;
using rx_test::FakeReplyPtr;

using rx_test::with_id;

// What the tasks below saw, shared with them (they may outlive a test body's locals).
struct TaskLog {
  int invocations = 0;
  int running = 0;
  int most_running = 0;
  std::vector<json::object> payloads;
  std::vector<boost::system::error_code> push_results;
  std::optional<bool> gate_opened;
};

class EndpointTaskTest : public rx_test::EndpointFixture {
 protected:
  std::shared_ptr<TaskLog> log_ = std::make_shared<TaskLog>();
};

TEST_F(EndpointTaskTest, TheTaskIsNotInvokedUntilARequestArrives) {
  serve([log = log_](rx::Endpoint endpoint) {
    ++log->invocations;
    return rx_test::echo_once(std::move(endpoint));
  });
  drain();
  EXPECT_EQ(log_->invocations, 0);
  FakeReplyPtr reply = deliver(with_id(1));
  EXPECT_EQ(log_->invocations, 1);
  ASSERT_TRUE(reply->finished());
  EXPECT_EQ(reply->outputs(), with_id(1));
}

TEST_F(EndpointTaskTest, AOneShotTaskIsInvokedOncePerRequestInArrivalOrder) {
  serve([log = log_](rx::Endpoint endpoint) -> asio::awaitable<void> {
    ++log->invocations;
    json::object payload = co_await endpoint.get();
    log->payloads.push_back(payload);
    co_await endpoint.push(std::move(payload));
  });
  std::vector<FakeReplyPtr> replies;
  on_loop([&] {  // all five arrive before the task first runs
    for (int id = 0; id < 5; ++id) {
      replies.push_back(rx_test::make_fake_reply());
      state_->deliver(replies.back(), with_id(id));
    }
  });
  EXPECT_EQ(log_->invocations, 5);
  ASSERT_EQ(log_->payloads.size(), 5U);
  for (int id = 0; id < 5; ++id) {
    EXPECT_EQ(log_->payloads[static_cast<std::size_t>(id)], with_id(id));
    EXPECT_EQ(replies[static_cast<std::size_t>(id)]->outputs(), with_id(id));
  }
}

TEST_F(EndpointTaskTest, ALoopingTaskServesEveryRequestInOneInvocation) {
  serve([log = log_](rx::Endpoint endpoint) {
    ++log->invocations;
    return rx_test::echo_forever(std::move(endpoint));
  });
  std::vector<FakeReplyPtr> replies;
  for (int id = 0; id < 5; ++id) {
    replies.push_back(deliver(with_id(id)));
  }
  EXPECT_EQ(log_->invocations, 1);
  for (int id = 0; id < 5; ++id) {
    EXPECT_EQ(replies[static_cast<std::size_t>(id)]->outputs(), with_id(id));
  }
}

TEST_F(EndpointTaskTest, AtMostOneInvocationRunsAtATime) {
  serve([log = log_](rx::Endpoint endpoint) -> asio::awaitable<void> {
    ++log->invocations;
    log->most_running = std::max(log->most_running, ++log->running);
    json::object payload = co_await endpoint.get();
    for (int i = 0; i < 3; ++i) {  // give the loop a chance to start another invocation
      co_await asio::post(endpoint.get_executor(), asio::use_awaitable);
    }
    co_await endpoint.push(std::move(payload));
    --log->running;
  });
  std::vector<FakeReplyPtr> replies;
  on_loop([&] {
    for (int id = 0; id < 10; ++id) {
      replies.push_back(rx_test::make_fake_reply());
      state_->deliver(replies.back(), with_id(id));
    }
  });
  EXPECT_EQ(log_->invocations, 10);
  EXPECT_EQ(log_->most_running, 1);
  for (int id = 0; id < 10; ++id) {
    EXPECT_EQ(replies[static_cast<std::size_t>(id)]->outputs(), with_id(id));
  }
}

TEST_F(EndpointTaskTest, ATaskThatThrowsFailsItsHeldRequestWithInternalNamingTheException) {
  serve([](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    if (payload.contains("fail")) {
      throw std::runtime_error("disk on fire");
    }
    co_await endpoint.push(std::move(payload));
  });
  json::object fail;
  fail["fail"] = true;
  FakeReplyPtr failed = deliver(fail);
  FakeReplyPtr served = deliver(with_id(2));
  ASSERT_TRUE(failed->finished());
  EXPECT_EQ(failed->code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(failed->status()->error_message().find("disk on fire"), std::string::npos)
      << failed->status()->error_message();
  EXPECT_NE(failed->status()->error_message().find("threw"), std::string::npos);
  EXPECT_EQ(served->outputs(), with_id(2));  // the endpoint lives on
}

TEST_F(EndpointTaskTest, ATaskThatThrowsSomethingOtherThanAnExceptionStillFailsItsRequest) {
  serve([](rx::Endpoint endpoint) -> asio::awaitable<void> {
    co_await endpoint.get();
    throw 42;
  });
  FakeReplyPtr failed = deliver(with_id(1));
  ASSERT_TRUE(failed->finished());
  EXPECT_EQ(failed->code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(failed->status()->error_message().find("not derived from std::exception"), std::string::npos);
}

TEST_F(EndpointTaskTest, ATaskThatReturnsWithoutPushingFailsItsHeldRequestWithInternal) {
  serve([](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    if (!payload.contains("forget")) {
      co_await endpoint.push(std::move(payload));
    }
  });
  json::object forget;
  forget["forget"] = true;
  FakeReplyPtr forgotten = deliver(forget);
  FakeReplyPtr served = deliver(with_id(2));
  ASSERT_TRUE(forgotten->finished());
  EXPECT_EQ(forgotten->code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(forgotten->status()->error_message().find("ended without pushing"), std::string::npos)
      << forgotten->status()->error_message();
  EXPECT_EQ(served->outputs(), with_id(2));
}

TEST_F(EndpointTaskTest, ATaskThatNeverCallsGetFailsTheOldestRequestSoTheEndpointAdvances) {
  serve([log = log_](rx::Endpoint /*endpoint*/) -> asio::awaitable<void> {
    ++log->invocations;
    co_return;
  });
  FakeReplyPtr first = deliver(with_id(1));
  FakeReplyPtr second = deliver(with_id(2));
  for (const FakeReplyPtr& reply : {first, second}) {
    ASSERT_TRUE(reply->finished());
    EXPECT_EQ(reply->code(), grpc::StatusCode::INTERNAL);
    EXPECT_NE(reply->status()->error_message().find("ended without calling get()"), std::string::npos)
        << reply->status()->error_message();
  }
  EXPECT_EQ(log_->invocations, 2);
  EXPECT_EQ(state_->queued(), 0U);
}

TEST_F(EndpointTaskTest, ATaskThatThrowsBeforeGetFailsTheOldestRequestNamingTheException) {
  serve([](rx::Endpoint /*endpoint*/) -> asio::awaitable<void> {
    throw std::runtime_error("bad configuration");
    co_return;
  });
  FakeReplyPtr reply = deliver(with_id(1));
  ASSERT_TRUE(reply->finished());
  EXPECT_EQ(reply->code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(reply->status()->error_message().find("bad configuration"), std::string::npos)
      << reply->status()->error_message();
}

TEST_F(EndpointTaskTest, ATaskFunctionThatThrowsBeforeReturningItsCoroutineFailsTheRequestAndTheEndpointLivesOn) {
  // A Task is any std::function returning an awaitable; this one throws before any coroutine
  // exists (as a wrapper that validates its task instance might).
  auto calls = std::make_shared<int>(0);
  serve([calls](rx::Endpoint endpoint) -> asio::awaitable<void> {
    if (++*calls == 1) {
      throw std::runtime_error("task factory failed");
    }
    return rx_test::echo_once(std::move(endpoint));
  });
  FakeReplyPtr failed = rx_test::make_fake_reply();
  EXPECT_NO_THROW({
    asio::dispatch(executor_, [&] { state_->deliver(failed, with_id(1)); });
    drain();
  });
  ASSERT_TRUE(failed->finished());
  EXPECT_EQ(failed->code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(failed->status()->error_message().find("task factory failed"), std::string::npos)
      << failed->status()->error_message();

  FakeReplyPtr served = deliver(with_id(2));
  ASSERT_TRUE(served->finished()) << "the endpoint stalled after its task function threw";
  EXPECT_EQ(served->outputs(), with_id(2));
}

TEST_F(EndpointTaskTest, CloseCancelsTheRunningInvocationAndFailsItsHeldRequest) {
  auto gate = std::make_shared<rx_test::Gate>(executor_);
  serve([log = log_, gate](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    log->gate_opened = co_await gate->wait();
    auto [error] = co_await endpoint.push(std::move(payload), asio::as_tuple(asio::use_awaitable));
    log->push_results.push_back(error);
  });
  FakeReplyPtr held = deliver(with_id(1));
  EXPECT_FALSE(held->finished());
  EXPECT_FALSE(log_->gate_opened.has_value());

  on_loop([&] { state_->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "detached")); });
  ASSERT_TRUE(held->finished());
  EXPECT_EQ(held->code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_TRUE(log_->gate_opened.has_value()) << "the task's wait was not cancelled";
  EXPECT_FALSE(*log_->gate_opened);
}

TEST_F(EndpointTaskTest, ATaskWaitingInGetEndsWhenTheEndpointCloses) {
  auto ended = std::make_shared<std::optional<boost::system::error_code>>();
  serve([ended](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object first = co_await endpoint.get();
    co_await endpoint.push(std::move(first));
    auto [error, payload] = co_await endpoint.get(asio::as_tuple(asio::use_awaitable));
    *ended = error;
  });
  FakeReplyPtr reply = deliver(with_id(1));
  EXPECT_EQ(reply->outputs(), with_id(1));
  EXPECT_FALSE(ended->has_value());
  on_loop([&] { state_->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone")); });
  ASSERT_TRUE(ended->has_value());
  EXPECT_EQ(**ended, rx::errc::endpoint_closed);
}

TEST_F(EndpointTaskTest, PushAfterTheCallerGaveUpReportsRequestCancelled) {
  auto gate = std::make_shared<rx_test::Gate>(executor_);
  serve([log = log_, gate](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    co_await gate->wait();
    auto [error] = co_await endpoint.push(std::move(payload), asio::as_tuple(asio::use_awaitable));
    log->push_results.push_back(error);
  });
  FakeReplyPtr reply = deliver(with_id(1));
  on_loop([&] { reply->cancel_by_caller(); });
  gate->open();
  drain();
  ASSERT_EQ(log_->push_results.size(), 1U);
  EXPECT_EQ(log_->push_results[0], rx::errc::request_cancelled);
  EXPECT_EQ(reply->code(), grpc::StatusCode::CANCELLED);

  FakeReplyPtr next = deliver(with_id(2));  // and the endpoint serves the next request
  gate->open();
  drain();
  EXPECT_EQ(next->outputs(), with_id(2));
}

TEST_F(EndpointTaskTest, ACoAwaitedPushAfterTheCallerGaveUpThrowsRequestCancelled) {
  auto gate = std::make_shared<rx_test::Gate>(executor_);
  serve([log = log_, gate](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    co_await gate->wait();
    try {
      co_await endpoint.push(std::move(payload));  // default token: the allocation-free path
      log->push_results.emplace_back();
    } catch (const boost::system::system_error& error) {
      log->push_results.push_back(error.code());
    }
  });
  FakeReplyPtr reply = deliver(with_id(1));
  on_loop([&] { reply->cancel_by_caller(); });
  gate->open();
  drain();
  ASSERT_EQ(log_->push_results.size(), 1U);
  EXPECT_EQ(log_->push_results[0], rx::errc::request_cancelled);
}

}  // namespace

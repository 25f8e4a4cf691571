// rx::Server end to end over loopback: routing, queueing, task failures, bad payloads, deadlines,
// detach and shutdown. Every call has a deadline; the fixture listens on 127.0.0.1 port 0.
#include "utils/counted.hpp"
#include "utils/gate.hpp"
#include "utils/payloads.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/server.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/use_future.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using rx_test::describe;
using rx_test::make_key;

using rx_test::with_id;

json::object marked(const char* mark) {
  json::object object;
  object[mark] = true;
  return object;
}

// Shared between a test and a task that holds the one request marked "hold" until the gate opens.
struct Hold {
  explicit Hold(const rx::LoopExecutor& executor) : gate(executor) {}
  rx_test::Gate gate;
  std::promise<void> got;       // the task holds the request
  std::promise<bool> released;  // true: the gate opened; false: the task was cancelled while waiting
};

// Echoes every request; holds one marked "hold" until the test opens the gate.
asio::awaitable<void> echo_holding(rx::Endpoint endpoint, std::shared_ptr<Hold> hold) {
  json::object payload = co_await endpoint.get();
  if (payload.contains("hold")) {
    hold->got.set_value();
    const bool opened = co_await hold->gate.wait();
    hold->released.set_value(opened);
    if (!opened) {
      co_return;
    }
  }
  co_await endpoint.push(std::move(payload));
}

rx::Server::Task holding_task(const std::shared_ptr<Hold>& hold) {
  return [hold](rx::Endpoint endpoint) { return echo_holding(std::move(endpoint), hold); };
}

// Replies with the key it is attached at.
asio::awaitable<void> answer_with_own_key(rx::Endpoint endpoint) {
  co_await endpoint.get();
  json::object reply;
  reply["task_id"] = endpoint.key().task_id;
  reply["map_index"] = endpoint.key().map_index;
  co_await endpoint.push(std::move(reply));
}

// Echoes, but throws the text of a "throw" member, or returns without pushing on "forget".
asio::awaitable<void> misbehave_on_request(rx::Endpoint endpoint) {
  json::object payload = co_await endpoint.get();
  if (const auto* text = payload.if_contains("throw")) {
    throw std::runtime_error(std::string(text->as_string()));
  }
  if (payload.contains("forget")) {
    co_return;
  }
  co_await endpoint.push(std::move(payload));
}

class ServerTest : public rx_test::ServerFixture {
 protected:
  // Sends with the generated stub, bypassing rx::Client, so that any payload text can be sent.
  grpc::Status raw_send(const rx::TaskInstanceKey& key, const std::string& payload_json,
                        std::string* reply_json = nullptr) {
    return rx_test::raw_send(server_.target(), key, payload_json, reply_json);
  }

  // Sends 100 requests at once to make_key() and checks that each got its own echo.
  void expect_hundred_concurrent_requests_answered() {
    std::vector<std::future<std::tuple<grpc::Status, json::object>>> replies;
    for (int id = 0; id < 100; ++id) {
      replies.push_back(send_async(make_key(), with_id(id)));
    }
    for (int id = 0; id < 100; ++id) {
      auto [status, reply] = rx_test::wait_for(replies[static_cast<std::size_t>(id)], "a reply");
      EXPECT_TRUE(status.ok()) << id << ": " << describe(status);
      EXPECT_EQ(reply, with_id(id));
    }
  }

  void expect_served(const rx::TaskInstanceKey& key, int id) {
    const rx_test::SendResult result = send(key, with_id(id));
    EXPECT_TRUE(result.status.ok()) << describe(result.status);
    EXPECT_EQ(result.reply, with_id(id));
  }
};

TEST_F(ServerTest, ListensOnLoopbackAndReportsTheBoundPort) {
  EXPECT_NE(server_.port(), 0);
  EXPECT_EQ(server_.target(), "127.0.0.1:" + std::to_string(server_.port()));
}

TEST_F(ServerTest, OneRoundTripReturnsTheTasksReply) {
  ASSERT_TRUE(server_.attach(make_key(), [](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    json::object reply;
    reply["output_key"] = "hello_world";
    reply["got"] = std::move(payload);
    co_await endpoint.push(std::move(reply));
  }));
  json::object payload;
  payload["xcoms"] = json::object{{"greeting", "hello"}};
  const rx_test::SendResult result = send(make_key(), payload);
  ASSERT_TRUE(result.status.ok()) << describe(result.status);
  EXPECT_EQ(result.reply.at("output_key"), "hello_world");
  EXPECT_EQ(result.reply.at("got"), payload);
}

TEST_F(ServerTest, HundredSequentialRequestsEachGetTheirOwnReply) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  for (int id = 0; id < 100; ++id) {
    const rx_test::SendResult result = send(make_key(), with_id(id));
    ASSERT_TRUE(result.status.ok()) << id << ": " << describe(result.status);
    ASSERT_EQ(result.reply, with_id(id));
  }
}

TEST_F(ServerTest, HundredConcurrentRequestsEachGetTheirOwnReply) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  expect_hundred_concurrent_requests_answered();
}

TEST_F(ServerTest, HundredConcurrentRequestsToALoopingTaskEachGetTheirOwnReply) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  expect_hundred_concurrent_requests_answered();
}

TEST_F(ServerTest, HundredEndpointsOnOneServerEachAnswerWithTheirOwnKey) {
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(server_.attach(make_key("task_" + std::to_string(i % 10), i), answer_with_own_key));
  }
  EXPECT_EQ(server_.endpoint_count(), 100U);
  std::vector<std::future<std::tuple<grpc::Status, json::object>>> replies;
  for (int i = 0; i < 100; ++i) {
    replies.push_back(send_async(make_key("task_" + std::to_string(i % 10), i), {}));
  }
  for (int i = 0; i < 100; ++i) {
    auto [status, reply] = rx_test::wait_for(replies[static_cast<std::size_t>(i)], "a reply");
    ASSERT_TRUE(status.ok()) << i << ": " << describe(status);
    EXPECT_EQ(reply.at("task_id"), json::value("task_" + std::to_string(i % 10)));
    EXPECT_EQ(reply.at("map_index"), i);
  }
}

TEST_F(ServerTest, KeysDifferingOnlyInMapIndexAreDifferentEndpoints) {
  ASSERT_TRUE(server_.attach(make_key("mapped", -1), answer_with_own_key));
  ASSERT_TRUE(server_.attach(make_key("mapped", 0), answer_with_own_key));
  ASSERT_TRUE(server_.attach(make_key("mapped", 1), answer_with_own_key));
  for (const int index : {1, -1, 0}) {
    const rx_test::SendResult result = send(make_key("mapped", index), {});
    ASSERT_TRUE(result.status.ok()) << describe(result.status);
    EXPECT_EQ(result.reply.at("map_index"), index);
  }
  EXPECT_EQ(send(make_key("mapped", 2), {}).status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, TasksRunOnTheServersLoop) {
  ASSERT_TRUE(
      server_.attach(make_key(), [executor = server_.get_executor()](rx::Endpoint endpoint) -> asio::awaitable<void> {
        co_await endpoint.get();
        json::object reply;
        reply["on_loop"] = executor.running_in_this_thread();
        co_await endpoint.push(std::move(reply));
      }));
  const rx_test::SendResult result = send(make_key(), {});
  ASSERT_TRUE(result.status.ok()) << describe(result.status);
  EXPECT_EQ(result.reply.at("on_loop"), true);
}

TEST_F(ServerTest, ATaskThatThrowsFailsTheRequestWithInternalAndTheNextRequestIsServed) {
  ASSERT_TRUE(server_.attach(make_key(), misbehave_on_request));
  json::object payload;
  payload["throw"] = "the task broke: code 1234";
  const rx_test::SendResult failed = send(make_key(), payload);
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::INTERNAL) << describe(failed.status);
  EXPECT_NE(failed.status.error_message().find("the task broke: code 1234"), std::string::npos)
      << describe(failed.status);
  EXPECT_TRUE(failed.reply.empty());
  expect_served(make_key(), 2);
}

TEST_F(ServerTest, ATaskThatReturnsWithoutPushingFailsTheRequestWithInternalAndTheNextRequestIsServed) {
  ASSERT_TRUE(server_.attach(make_key(), misbehave_on_request));
  const rx_test::SendResult failed = send(make_key(), marked("forget"));
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::INTERNAL) << describe(failed.status);
  EXPECT_NE(failed.status.error_message().find("ended without pushing"), std::string::npos) << describe(failed.status);
  expect_served(make_key(), 2);
}

TEST_F(ServerTest, SendToUnknownEndpointReturnsNotFound) {
  ASSERT_TRUE(server_.attach(make_key("known"), rx_test::echo_once));
  const rx_test::SendResult result = send(make_key("unknown"), with_id(1));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::NOT_FOUND) << describe(result.status);
  EXPECT_NE(result.status.error_message().find("dag/unknown/run[-1]"), std::string::npos) << describe(result.status);
  expect_served(make_key("known"), 2);
}

TEST_F(ServerTest, MalformedJsonFromARawStubReturnsInvalidArgumentAndTheServerKeepsServing) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  const grpc::Status status = raw_send(make_key(), "{not json");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(status);
  EXPECT_NE(status.error_message().find("not valid JSON"), std::string::npos) << describe(status);
  expect_served(make_key(), 1);
}

TEST_F(ServerTest, AJsonArrayPayloadReturnsInvalidArgument) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  const grpc::Status status = raw_send(make_key(), R"([{"id": 1}])");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(status);
  EXPECT_NE(status.error_message().find("must be a JSON object"), std::string::npos) << describe(status);
  expect_served(make_key(), 1);
}

TEST_F(ServerTest, AScalarPayloadReturnsInvalidArgument) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  const grpc::Status status = raw_send(make_key(), "42");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(status);
}

TEST_F(ServerTest, InvalidPayloadToAnUnknownEndpointReturnsInvalidArgument) {
  // Payloads are checked before routing, on the gRPC thread.
  const grpc::Status status = raw_send(make_key("unknown"), "{not json");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(status);
}

TEST_F(ServerTest, AnEmptyPayloadReachesTheTaskAsAnEmptyObject) {
  ASSERT_TRUE(server_.attach(make_key(), [](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    json::object reply;
    reply["was_empty"] = payload.empty();
    co_await endpoint.push(std::move(reply));
  }));
  std::string reply_json;
  const grpc::Status status = raw_send(make_key(), "", &reply_json);
  ASSERT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply_json, R"({"was_empty":true})");
}

TEST_F(ServerTest, RepliesTravelAsJsonTextOnTheWire) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  std::string reply_json;
  const grpc::Status status = raw_send(make_key(), R"({"text": "h\u00e9", "n": [1, 2]})", &reply_json);
  ASSERT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(json::parse(reply_json), json::parse(R"({"text": "h\u00e9", "n": [1, 2]})"));
}

TEST_F(ServerTest, ATooDeepPayloadReturnsInvalidArgument) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  json::value nested = json::object{};
  for (int level = 0; level < 100; ++level) {
    json::object outer;
    outer["n"] = std::move(nested);
    nested = std::move(outer);
  }
  const rx_test::SendResult result = send(make_key(), nested.as_object());
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(result.status);
  EXPECT_NE(result.status.error_message().find("deep"), std::string::npos) << describe(result.status);
  expect_served(make_key(), 1);
}

TEST_F(ServerTest, AClientDeadlineReturnsDeadlineExceededAndTheEndpointServesTheNextRequest) {
  auto hold = std::make_shared<Hold>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding_task(hold)));
  // The task waits on a timer that only the test ends, far past the 100 ms deadline.
  const rx_test::SendResult expired = send(make_key(), marked("hold"), 100ms);
  EXPECT_EQ(expired.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << describe(expired.status);
  EXPECT_TRUE(expired.reply.empty());
  hold->gate.open();
  expect_served(make_key(), 2);
}

TEST_F(ServerTest, AQueuedRequestWhoseDeadlinePassesDoesNotStallTheRequestsBehindIt) {
  auto hold = std::make_shared<Hold>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding_task(hold)));
  auto held = send_async(make_key(), marked("hold"));
  rx_test::wait_for(hold->got.get_future(), "the task to hold the first request");

  const rx_test::SendResult expired = send(make_key(), with_id(2), 100ms);  // queued behind the held one
  EXPECT_EQ(expired.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << describe(expired.status);

  auto behind = send_async(make_key(), with_id(3));
  hold->gate.open();
  auto [held_status, held_reply] = rx_test::wait_for(held, "the held request's reply");
  EXPECT_TRUE(held_status.ok()) << describe(held_status);
  EXPECT_EQ(held_reply, marked("hold"));
  auto [status, reply] = rx_test::wait_for(behind, "the last request's reply");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply, with_id(3));
}

TEST_F(ServerTest, OneTaskWaitingDoesNotBlockOtherEndpoints) {
  auto hold = std::make_shared<Hold>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key("slow"), holding_task(hold)));
  ASSERT_TRUE(server_.attach(make_key("fast"), rx_test::echo_once));
  auto held = send_async(make_key("slow"), marked("hold"));
  rx_test::wait_for(hold->got.get_future(), "the slow task to hold its request");
  for (int id = 0; id < 10; ++id) {
    expect_served(make_key("fast"), id);
  }
  hold->gate.open();
  EXPECT_TRUE(std::get<0>(rx_test::wait_for(held, "the held request's reply")).ok());
}

TEST_F(ServerTest, DetachAtRunTimeFailsThePendingRequestWithUnavailableAndLaterRequestsWithNotFound) {
  auto hold = std::make_shared<Hold>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding_task(hold)));
  auto pending = send_async(make_key(), marked("hold"));
  rx_test::wait_for(hold->got.get_future(), "the task to hold the request");

  EXPECT_TRUE(server_.detach(make_key()));
  auto [status, reply] = rx_test::wait_for(pending, "the pending request's outcome");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(status);
  EXPECT_NE(status.error_message().find("detached"), std::string::npos) << describe(status);
  EXPECT_FALSE(rx_test::wait_for(hold->released.get_future(), "the task to end")) << "the task was not cancelled";

  const rx_test::SendResult later = send(make_key(), with_id(2));
  EXPECT_EQ(later.status.error_code(), grpc::StatusCode::NOT_FOUND) << describe(later.status);
  EXPECT_EQ(server_.endpoint_count(), 0U);
}

TEST_F(ServerTest, DetachOfAKeyThatIsNotAttachedReturnsFalse) {
  EXPECT_FALSE(server_.detach(make_key("never")));
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  EXPECT_TRUE(server_.detach(make_key()));
  EXPECT_FALSE(server_.detach(make_key()));
}

TEST_F(ServerTest, DetachReleasesTheTaskAndWhatItCaptured) {
  std::atomic<int> alive{0};
  ASSERT_TRUE(server_.attach(make_key(), [counted = rx_test::Counted(alive)](rx::Endpoint endpoint) {
    return rx_test::echo_once(std::move(endpoint));
  }));
  EXPECT_GT(alive.load(), 0);
  EXPECT_TRUE(server_.detach(make_key()));  // no invocation runs, so nothing else holds the task
  EXPECT_EQ(alive.load(), 0);
}

TEST_F(ServerTest, ShutdownReleasesEveryTaskAndWhatItCaptured) {
  std::atomic<int> alive{0};
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(server_.attach(make_key("task", i), [counted = rx_test::Counted(alive)](rx::Endpoint endpoint) {
      return rx_test::echo_once(std::move(endpoint));
    }));
  }
  EXPECT_GT(alive.load(), 0);
  server_.shutdown();  // no invocation runs, so the server held the only references
  EXPECT_EQ(alive.load(), 0);
}

TEST_F(ServerTest, AKeyCanBeAttachedAgainAfterDetach) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  EXPECT_TRUE(server_.detach(make_key()));
  ASSERT_TRUE(server_.attach(make_key(), answer_with_own_key));
  const rx_test::SendResult result = send(make_key(), {});
  ASSERT_TRUE(result.status.ok()) << describe(result.status);
  EXPECT_EQ(result.reply.at("task_id"), "task");
}

TEST_F(ServerTest, AttachingADuplicateKeyReturnsFalseAndKeepsTheFirstTask) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  EXPECT_FALSE(server_.attach(make_key(), answer_with_own_key));
  EXPECT_EQ(server_.endpoint_count(), 1U);
  expect_served(make_key(), 1);  // echo_once still answers
}

TEST_F(ServerTest, ShutdownWithARequestHeldByATaskFailsItWithUnavailableAndCancelsTheTask) {
  auto hold = std::make_shared<Hold>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding_task(hold)));
  auto pending = send_async(make_key(), marked("hold"));
  rx_test::wait_for(hold->got.get_future(), "the task to hold the request");

  server_.shutdown();  // from the test thread, never from the loop
  auto [status, reply] = rx_test::wait_for(pending, "the pending request's outcome");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(status);
  EXPECT_NE(status.error_message().find("shutting down"), std::string::npos) << describe(status);
  EXPECT_FALSE(rx_test::wait_for(hold->released.get_future(), "the task to end")) << "the task was not cancelled";
  EXPECT_EQ(server_.endpoint_count(), 0U);
}

TEST_F(ServerTest, ShutdownIsIdempotentAndRefusesLaterAttaches) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  server_.shutdown();
  server_.shutdown();
  EXPECT_FALSE(server_.attach(make_key("late"), rx_test::echo_once));
}

TEST_F(ServerTest, StartingTwiceThrows) { EXPECT_THROW(server_.start(), std::logic_error); }

TEST_F(ServerTest, AServerWithItsOwnLoopServesRequests) {
  asio::io_context context;
  rx::Server own(context);  // a Loop of its own over `context`
  ASSERT_TRUE(own.attach(make_key(), rx_test::echo_once));
  own.start();
  std::thread loop_thread([&context] { context.run(); });  // the started server keeps it running
  auto reply =
      client_.send(own.target(), make_key(), with_id(1), rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future);
  auto [status, payload] = rx_test::wait_for(reply, "the reply");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(payload, with_id(1));
  EXPECT_NE(own.port(), server_.port());
  own.shutdown();
  loop_thread.join();  // run() returns once the server has let go of its io_context
}

TEST(Server, ShutdownFromTheLoopReturnsAtOnceWithoutThrowing) {
  asio::io_context context;
  rx::Loop loop(context);
  rx::Server server(loop);
  server.start();
  std::promise<bool> threw;
  asio::dispatch(loop.get_executor(), [&] {
    try {
      server.shutdown();  // cannot wait here: starts the shutdown and returns
      threw.set_value(false);
    } catch (...) {
      threw.set_value(true);
    }
  });
  context.poll();  // a dispatch from outside the loop's threads runs when the io_context does
  EXPECT_FALSE(rx_test::wait_for(threw.get_future()));
  server.shutdown();  // from this thread, which runs no loop work: waits for the shutdown under way
  EXPECT_THROW(server.start(), std::logic_error);
}

TEST(Server, AServerThatWasNeverStartedCanBeDestroyed) {
  asio::io_context context;
  rx::Server server(context);
  EXPECT_TRUE(server.attach(make_key(), rx_test::echo_once));
  EXPECT_EQ(server.endpoint_count(), 1U);
}

class ShallowServerTest : public rx_test::ServerFixture {
 protected:
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.max_json_depth = 3;
    options.max_message_bytes = 4096;
    return options;
  }
  ShallowServerTest() : ServerFixture(options()) {}
};

TEST_F(ShallowServerTest, PayloadsAtTheConfiguredDepthAreServedAndDeeperOnesRefused) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  const json::object at_limit = json::parse(R"({"a": {"b": [1]}})").as_object();
  const rx_test::SendResult served = send(make_key(), at_limit);
  EXPECT_TRUE(served.status.ok()) << describe(served.status);
  EXPECT_EQ(served.reply, at_limit);

  const json::object too_deep = json::parse(R"({"a": {"b": [[1]]}})").as_object();
  const rx_test::SendResult refused = send(make_key(), too_deep);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(refused.status);
}

TEST_F(ShallowServerTest, APayloadLargerThanTheMessageLimitReturnsResourceExhausted) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  json::object big;
  big["blob"] = std::string(8192, 'x');
  const rx_test::SendResult refused = send(make_key(), big);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(refused.status);
  const rx_test::SendResult served = send(make_key(), with_id(1));
  EXPECT_TRUE(served.status.ok()) << describe(served.status);
}

}  // namespace

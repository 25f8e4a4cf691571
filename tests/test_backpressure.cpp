// Backpressure on the unary Send path: the bound on one endpoint's queue
// (ServerOptions::max_queued_requests, enforced by detail::EndpointState::deliver) and the bound on
// the server's requests in flight (ServerOptions::max_requests_in_flight, enforced on gRPC's
// thread). First the queue on its own (a test-driven loop, fake replies), then a real Server on
// 127.0.0.1 port 0 with tasks that hold their request until the test lets go, so that requests
// pile up for as long as the test wants, with no sleep: the test waits on statuses, which the
// limits themselves produce.
#include "utils/endpoint_fixture.hpp"
#include "utils/fake_reply.hpp"
#include "utils/gate.hpp"
#include "utils/payloads.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/json/object.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using boost::system::error_code;
using rx_test::describe;
using rx_test::FakeReplyPtr;
using rx_test::make_key;
using rx_test::with_id;

constexpr const char* QUEUE_LIMIT_TEXT = "requests waiting, the server's limit (ServerOptions::max_queued_requests)";
constexpr const char* IN_FLIGHT_LIMIT_TEXT = "requests in flight, its limit (ServerOptions::max_requests_in_flight)";

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

json::object marked_hold() {
  json::object object;
  object["hold"] = true;
  return object;
}

// Shared between a test and a task that holds the one request marked "hold" until the gate opens.
struct Hold {
  explicit Hold(const rx::LoopExecutor& executor) : gate(executor) {}
  rx_test::Gate gate;
  std::promise<void> got;  // the task holds the request
};

// Echoes one request per invocation; holds the one marked "hold" until the test opens the gate.
asio::awaitable<void> echo_holding(rx::Endpoint endpoint, std::shared_ptr<Hold> hold) {
  json::object payload = co_await endpoint.get();
  if (payload.contains("hold")) {
    hold->got.set_value();
    if (!co_await hold->gate.wait()) {
      co_return;  // cancelled by shutdown: the request fails with UNAVAILABLE
    }
  }
  co_await endpoint.push(std::move(payload));
}

rx::Server::Task holding_task(const std::shared_ptr<Hold>& hold) {
  return [hold](rx::Endpoint endpoint) { return echo_holding(std::move(endpoint), hold); };
}

// ---- the endpoint queue on its own -----------------------------------------------------------

class BoundedQueueTest : public rx_test::EndpointFixture {
 protected:
  // The endpoint at make_key() with room for `max_queued` waiting requests.
  void serve_bounded(std::size_t max_queued, rx::detail::EndpointState::Task task = {}) {
    state_ = std::make_shared<rx::detail::EndpointState>(executor_, make_key(), std::move(task), nullptr, max_queued);
  }

  // Takes the oldest request with get() and answers it with its own payload.
  void serve_one() {
    std::optional<error_code> got;
    std::optional<error_code> pushed;
    on_loop([&] {
      endpoint_->get(asio::bind_executor(executor_, [&](error_code error, json::object payload) {
        got = error;
        endpoint_->push(std::move(payload), asio::bind_executor(executor_, [&](error_code e) { pushed = e; }));
      }));
    });
    ASSERT_TRUE(got.has_value()) << "get did not complete";
    EXPECT_FALSE(*got) << got->message();
    ASSERT_TRUE(pushed.has_value()) << "push did not complete";
    EXPECT_FALSE(*pushed) << pushed->message();
  }

  static void expect_refused_as_full(const FakeReplyPtr& reply, std::size_t limit) {
    ASSERT_TRUE(reply->status().has_value()) << "the request was not refused at once";
    EXPECT_EQ(reply->code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(*reply->status());
    EXPECT_EQ(reply->status()->error_message(),
              "endpoint dag/task/run[-1] has " + std::to_string(limit) + " " + QUEUE_LIMIT_TEXT);
  }

  std::optional<rx::Endpoint> endpoint_;  // set by the tests that drive get/push by hand
};

TEST_F(BoundedQueueTest, ARequestArrivingAtAFullQueueIsRefusedAtOnceAndTheQueueIsStillServed) {
  serve_bounded(3);
  endpoint_.emplace(state_);
  std::vector<FakeReplyPtr> queued;
  for (int id = 0; id < 3; ++id) {
    queued.push_back(deliver(with_id(id)));
  }
  const FakeReplyPtr first_over = deliver(with_id(3));
  const FakeReplyPtr second_over = deliver(with_id(4));
  expect_refused_as_full(first_over, 3);
  expect_refused_as_full(second_over, 3);
  EXPECT_EQ(state_->queued(), 3U);
  EXPECT_FALSE(state_->closed());

  for (int id = 0; id < 3; ++id) {
    serve_one();
    EXPECT_EQ(queued[static_cast<std::size_t>(id)]->outputs(), with_id(id));
  }
  // Room again: the next request queues and is served.
  const FakeReplyPtr later = deliver(with_id(5));
  EXPECT_FALSE(later->finished());
  serve_one();
  EXPECT_EQ(later->outputs(), with_id(5));
}

TEST_F(BoundedQueueTest, ARequestHandedToAWaitingGetDoesNotCount) {
  serve_bounded(0);  // nothing may wait
  endpoint_.emplace(state_);
  std::optional<json::object> got;
  on_loop([&] {
    endpoint_->get(asio::bind_executor(executor_, [&](error_code /*error*/, json::object payload) { got = payload; }));
  });
  const FakeReplyPtr handed = deliver(with_id(1));
  ASSERT_EQ(got, with_id(1)) << "a waiting get was not given the request";
  EXPECT_FALSE(handed->finished());

  // The task holds it and waits for nothing: the next one would have to wait.
  const FakeReplyPtr refused = deliver(with_id(2));
  expect_refused_as_full(refused, 0);
  std::optional<error_code> pushed;
  on_loop(
      [&] { endpoint_->push(with_id(10), asio::bind_executor(executor_, [&](error_code error) { pushed = error; })); });
  EXPECT_EQ(pushed, error_code{});
  EXPECT_EQ(handed->outputs(), with_id(10));
}

TEST_F(BoundedQueueTest, ARequestThatStartsAnIdleTaskDoesNotCountButOneWaitingBehindItDoes) {
  auto gate = std::make_shared<rx_test::Gate>(executor_);
  serve_bounded(0, [gate](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    if (co_await gate->wait()) {
      co_await endpoint.push(std::move(payload));
    }
  });
  const FakeReplyPtr started = deliver(with_id(1));
  EXPECT_FALSE(started->finished()) << describe(started->status().value_or(grpc::Status::OK));
  EXPECT_TRUE(state_->holding_request());
  EXPECT_EQ(state_->queued(), 0U);

  const FakeReplyPtr refused = deliver(with_id(2));
  expect_refused_as_full(refused, 0);

  gate->open();
  drain();
  EXPECT_EQ(started->outputs(), with_id(1));
  // Idle again: the next request starts it again and is served (the gate stays open).
  const FakeReplyPtr next = deliver(with_id(3));
  EXPECT_EQ(next->outputs(), with_id(3));
}

TEST_F(BoundedQueueTest, AQueuedRequestWhoseCallerGaveUpFreesItsPlace) {
  serve_bounded(2);
  endpoint_.emplace(state_);
  const FakeReplyPtr first = deliver(with_id(1));
  const FakeReplyPtr abandoned = deliver(with_id(2));
  expect_refused_as_full(deliver(with_id(3)), 2);

  on_loop([&] { abandoned->cancel_by_caller(); });
  EXPECT_EQ(state_->queued(), 1U);
  const FakeReplyPtr taken = deliver(with_id(4));
  EXPECT_FALSE(taken->finished()) << describe(taken->status().value_or(grpc::Status::OK));
  EXPECT_EQ(state_->queued(), 2U);
  serve_one();
  serve_one();
  EXPECT_EQ(first->outputs(), with_id(1));
  EXPECT_EQ(taken->outputs(), with_id(4));
}

TEST_F(BoundedQueueTest, AStateMadeWithoutALimitIsUnbounded) {
  serve();
  EXPECT_EQ(state_->max_queued(), rx::detail::EndpointState::UNBOUNDED);
  std::vector<FakeReplyPtr> queued;
  for (int id = 0; id < 20'000; ++id) {
    queued.push_back(deliver(with_id(id)));
  }
  EXPECT_EQ(state_->queued(), 20'000U);
  for (const FakeReplyPtr& reply : queued) {
    ASSERT_FALSE(reply->finished());
  }
}

TEST(ServerOptionsDefaults, BoundTheQueueAtTenThousandAndTheServerAtAHundredThousand) {
  const rx::ServerOptions options;
  EXPECT_EQ(options.max_queued_requests, 10'000U);
  EXPECT_EQ(options.max_requests_in_flight, 100'000U);
}

// ---- a real server -----------------------------------------------------------------------------

// The statuses of a batch of sends, each recorded by its completion (on the client's loop).
class Outcomes {
 public:
  explicit Outcomes(std::size_t count) : statuses_(count), replies_(count), completions_(count, 0) {}

  void record(std::size_t id, grpc::Status status, json::object reply) {
    const std::lock_guard lock(mutex_);
    ++completions_.at(id);
    statuses_[id] = std::move(status);
    replies_[id] = std::move(reply);
    changed_.notify_all();
  }

  // Waits until `count` sends ended with `code`. False if that does not happen within the hang guard.
  bool wait_for(grpc::StatusCode code, std::size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, rx_test::HANG_GUARD, [&] { return count_locked(code) >= count; });
  }

  // Waits until every send completed. False if that does not happen within the hang guard.
  bool wait_for_all() {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, rx_test::HANG_GUARD, [&] { return completed_locked() == completions_.size(); });
  }

  std::size_t count(grpc::StatusCode code) {
    const std::lock_guard lock(mutex_);
    return count_locked(code);
  }

  std::size_t completed() {
    const std::lock_guard lock(mutex_);
    return completed_locked();
  }

  // After wait_for_all: each send completed exactly once; an OK one echoed its payload, a
  // refused one carries `message`. Returns how many were refused.
  std::size_t expect_each_once_ok_or_refused(const std::string& message) {
    const std::lock_guard lock(mutex_);
    std::size_t refused = 0;
    for (std::size_t id = 0; id < statuses_.size(); ++id) {
      EXPECT_EQ(completions_[id], 1) << "send " << id << " completed " << completions_[id] << " times";
      const grpc::Status& status = statuses_[id];
      if (status.ok()) {
        EXPECT_EQ(replies_[id], with_id(static_cast<int>(id))) << "send " << id;
      } else {
        ++refused;
        EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << id << ": " << describe(status);
        EXPECT_TRUE(contains(status.error_message(), message)) << id << ": " << describe(status);
      }
    }
    return refused;
  }

 private:
  std::size_t count_locked(grpc::StatusCode code) const {
    std::size_t found = 0;
    for (std::size_t id = 0; id < statuses_.size(); ++id) {
      found += completions_[id] > 0 && statuses_[id].error_code() == code ? 1 : 0;
    }
    return found;
  }

  std::size_t completed_locked() const {
    std::size_t found = 0;
    for (const int completions : completions_) {
      found += completions > 0 ? 1 : 0;
    }
    return found;
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<grpc::Status> statuses_;
  std::vector<json::object> replies_;
  std::vector<int> completions_;
};

class BackpressureServerTest : public rx_test::ServerFixture {
 protected:
  explicit BackpressureServerTest(rx::ServerOptions options) : ServerFixture(std::move(options)) {}

  // Starts `count` sends to `key` at once, payloads {"id": 0} to {"id": count - 1}.
  std::shared_ptr<Outcomes> send_all(const rx::TaskInstanceKey& key, std::size_t count) {
    auto outcomes = std::make_shared<Outcomes>(count);
    for (std::size_t id = 0; id < count; ++id) {
      client_.send(server_.target(), key, with_id(static_cast<int>(id)), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                   [outcomes, id](grpc::Status status, json::object reply) {
                     outcomes->record(id, std::move(status), std::move(reply));
                   });
    }
    return outcomes;
  }

  // Holds one request at make_key() until the returned Hold's gate opens.
  std::future<std::tuple<grpc::Status, json::object>> hold_one(const std::shared_ptr<Hold>& hold) {
    auto held = send_async(make_key(), marked_hold());
    rx_test::wait_for(hold->got.get_future(), "the task to hold the first request");
    return held;
  }

  void expect_served(const rx::TaskInstanceKey& key, int id) {
    const rx_test::SendResult result = send(key, with_id(id));
    EXPECT_TRUE(result.status.ok()) << describe(result.status);
    EXPECT_EQ(result.reply, with_id(id));
  }

  // Sends with the generated stub, so that any payload text can be sent.
  grpc::Status raw_send(const rx::TaskInstanceKey& key, const std::string& payload_json) {
    return rx_test::raw_send(server_.target(), key, payload_json);
  }
};

constexpr std::size_t QUEUE_LIMIT = 8;
constexpr std::size_t OVER = 5;

class QueueLimitTest : public BackpressureServerTest {
 protected:
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.max_queued_requests = QUEUE_LIMIT;
    return options;
  }
  QueueLimitTest() : BackpressureServerTest(options()) {}
};

TEST_F(QueueLimitTest, RequestsOverTheQueueLimitFailAtOnceAndTheQueuedOnesAreServedOnceTheTaskMovesOn) {
  auto hold = std::make_shared<Hold>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding_task(hold)));
  ASSERT_TRUE(server_.attach(make_key("other"), rx_test::echo_once));
  auto held = hold_one(hold);  // held, so it does not count: QUEUE_LIMIT more may wait

  auto outcomes = send_all(make_key(), QUEUE_LIMIT + OVER);
  // A refusal means the queue was full when it arrived: once OVER are refused, QUEUE_LIMIT wait.
  ASSERT_TRUE(outcomes->wait_for(grpc::StatusCode::RESOURCE_EXHAUSTED, OVER))
      << outcomes->count(grpc::StatusCode::RESOURCE_EXHAUSTED) << " of " << OVER << " refusals";
  // The queued ones are still waiting behind the held request: nothing else has a status.
  EXPECT_EQ(outcomes->completed(), OVER);
  // The queue stays full while the task holds its request: another request is refused too, and
  // the refusal names the endpoint and the limit.
  const rx_test::SendResult refused = send(make_key(), with_id(100));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(refused.status);
  EXPECT_EQ(refused.status.error_message(),
            "endpoint dag/task/run[-1] has " + std::to_string(QUEUE_LIMIT) + " " + QUEUE_LIMIT_TEXT);
  // One endpoint's full queue does not affect another endpoint.
  expect_served(make_key("other"), 101);

  hold->gate.open();
  auto [held_status, held_reply] = rx_test::wait_for(held, "the held request's reply");
  EXPECT_TRUE(held_status.ok()) << describe(held_status);
  ASSERT_TRUE(outcomes->wait_for_all()) << outcomes->completed() << " of " << QUEUE_LIMIT + OVER << " completed";
  EXPECT_EQ(outcomes->expect_each_once_ok_or_refused(QUEUE_LIMIT_TEXT), OVER);
  EXPECT_EQ(outcomes->count(grpc::StatusCode::OK), QUEUE_LIMIT);
  // The endpoint keeps serving.
  expect_served(make_key(), 200);
}

constexpr std::size_t IN_FLIGHT_LIMIT = 6;

class InFlightLimitTest : public BackpressureServerTest {
 protected:
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.max_requests_in_flight = IN_FLIGHT_LIMIT;
    return options;
  }
  InFlightLimitTest() : BackpressureServerTest(options()) {}
};

TEST_F(InFlightLimitTest, RequestsOverTheServersLimitFailAtOnceAndThoseInFlightAreServed) {
  auto hold = std::make_shared<Hold>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding_task(hold)));
  ASSERT_TRUE(server_.attach(make_key("other"), rx_test::echo_once));
  auto held = hold_one(hold);  // one in flight

  auto outcomes = send_all(make_key(), IN_FLIGHT_LIMIT - 1 + OVER);
  // Nothing is answered while the task holds its request, so exactly IN_FLIGHT_LIMIT are taken.
  ASSERT_TRUE(outcomes->wait_for(grpc::StatusCode::RESOURCE_EXHAUSTED, OVER))
      << outcomes->count(grpc::StatusCode::RESOURCE_EXHAUSTED) << " of " << OVER << " refusals";
  EXPECT_EQ(outcomes->completed(), OVER);

  // The server is full: any request is refused, whatever its endpoint, before it reaches the loop
  // (an unknown key would get NOT_FOUND there) and before its payload is parsed.
  const rx_test::SendResult other = send(make_key("other"), with_id(100));
  EXPECT_EQ(other.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(other.status);
  EXPECT_EQ(other.status.error_message(), "server has " + std::to_string(IN_FLIGHT_LIMIT) + " " + IN_FLIGHT_LIMIT_TEXT);
  const grpc::Status unknown = raw_send(make_key("unknown"), "{}");
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(unknown);
  const grpc::Status malformed = raw_send(make_key(), "{not json");
  EXPECT_EQ(malformed.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(malformed);

  hold->gate.open();
  auto [held_status, held_reply] = rx_test::wait_for(held, "the held request's reply");
  EXPECT_TRUE(held_status.ok()) << describe(held_status);
  ASSERT_TRUE(outcomes->wait_for_all()) << outcomes->completed() << " of " << IN_FLIGHT_LIMIT - 1 + OVER
                                        << " completed";
  EXPECT_EQ(outcomes->expect_each_once_ok_or_refused(IN_FLIGHT_LIMIT_TEXT), OVER);
  EXPECT_EQ(outcomes->count(grpc::StatusCode::OK), IN_FLIGHT_LIMIT - 1);
  // Every answered call left the count: the server serves again, every endpoint.
  expect_served(make_key(), 200);
  expect_served(make_key("other"), 201);
  const grpc::Status unknown_again = raw_send(make_key("unknown"), "{}");
  EXPECT_EQ(unknown_again.error_code(), grpc::StatusCode::NOT_FOUND) << describe(unknown_again);
}

TEST_F(InFlightLimitTest, RequestsSpreadOverManyEndpointsShareTheServersLimit) {
  // Every endpoint holds its one request: the limit counts held requests across endpoints.
  std::vector<std::shared_ptr<Hold>> holds;
  std::vector<std::future<std::tuple<grpc::Status, json::object>>> held;
  for (std::size_t i = 0; i < IN_FLIGHT_LIMIT; ++i) {
    holds.push_back(std::make_shared<Hold>(server_.get_executor()));
    const rx::TaskInstanceKey key = make_key("task", static_cast<int>(i));
    ASSERT_TRUE(server_.attach(key, holding_task(holds.back())));
    held.push_back(send_async(key, marked_hold()));
    rx_test::wait_for(holds.back()->got.get_future(), "a task to hold its request");
  }
  ASSERT_TRUE(server_.attach(make_key("free"), rx_test::echo_once));
  const rx_test::SendResult refused = send(make_key("free"), with_id(1));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(refused.status);

  holds.front()->gate.open();  // one answered: room for one more
  EXPECT_TRUE(std::get<0>(rx_test::wait_for(held.front(), "the first held reply")).ok());
  expect_served(make_key("free"), 2);
  for (std::size_t i = 1; i < IN_FLIGHT_LIMIT; ++i) {
    holds[i]->gate.open();
    EXPECT_TRUE(std::get<0>(rx_test::wait_for(held[i], "a held reply")).ok()) << i;
  }
}

// Holds every request its endpoints get until `gate` opens; counts those held at once.
struct HeldCount {
  HeldCount(const rx::LoopExecutor& executor, std::size_t at) : gate(executor), signal_at(at) {}
  rx_test::Gate gate;
  std::size_t signal_at;
  std::size_t held = 0;  // loop-confined, as are the two below
  std::size_t most_held = 0;
  bool signalled = false;  // `reached` is set once: the count may come back to `at` after the gate opens
  std::promise<void> reached;
};

rx::Server::Task counting_hold(const std::shared_ptr<HeldCount>& count) {
  return [count](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    count->most_held = std::max(count->most_held, ++count->held);
    if (count->held == count->signal_at && !count->signalled) {
      count->signalled = true;
      count->reached.set_value();
    }
    co_await count->gate.wait();
    --count->held;
    co_await endpoint.push(std::move(payload));
  };
}

constexpr std::size_t STREAM_FLOOD_LIMIT = 40;

class ExchangeOverloadTest : public BackpressureServerTest {
 protected:
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.max_requests_in_flight = STREAM_FLOOD_LIMIT;
    return options;
  }
  ExchangeOverloadTest() : BackpressureServerTest(options()) {}
};

// Memory under overload, counted: a flood on one Exchange stream, to endpoints that never answer
// until released, leaves the server holding exactly its limit; the stream stops reading (HTTP/2
// flow control holds the rest in the client) or refuses what one batch brings past the limit.
// Every request ends, once, served or refused; none is lost.
TEST_F(ExchangeOverloadTest, AFloodOnOneStreamHoldsExactlyTheServersLimitAndEveryRequestEnds) {
  constexpr std::size_t FLOOD = STREAM_FLOOD_LIMIT * 5;
  auto count = std::make_shared<HeldCount>(server_.get_executor(), STREAM_FLOOD_LIMIT);
  for (std::size_t i = 0; i < FLOOD; ++i) {
    ASSERT_TRUE(server_.attach(make_key("flood", static_cast<int>(i)), counting_hold(count)));
  }
  rx::ClientOptions client_options;
  client_options.transport = rx::Transport::exchange;
  rx::Client exchange(loop_, client_options);
  auto outcomes = std::make_shared<Outcomes>(FLOOD);
  for (std::size_t id = 0; id < FLOOD; ++id) {
    exchange.send(server_.target(), make_key("flood", static_cast<int>(id)), with_id(static_cast<int>(id)),
                  rx::SendOptions{rx_test::DEFAULT_DEADLINE}, [outcomes, id](grpc::Status status, json::object reply) {
                    outcomes->record(id, std::move(status), std::move(reply));
                  });
  }
  // The limit is reached, not one short of it.
  rx_test::wait_for(count->reached.get_future(), "the endpoints to hold the server's limit of requests");
  // Read on the loop, after the batch being taken (whose frames past the limit are refused): the
  // stream reads no more while the server is saturated, so nothing else can be counted.
  std::promise<std::size_t> at_limit;
  asio::post(server_.get_executor(), [&at_limit, this] { at_limit.set_value(server_.requests_in_flight()); });
  EXPECT_EQ(rx_test::wait_for(at_limit.get_future(), "the loop"), STREAM_FLOOD_LIMIT);

  count->gate.open();
  ASSERT_TRUE(outcomes->wait_for_all()) << outcomes->completed() << " of " << FLOOD << " completed";
  const std::size_t refused = outcomes->expect_each_once_ok_or_refused("ServerOptions::max_requests_in_flight");
  EXPECT_GE(outcomes->count(grpc::StatusCode::OK), STREAM_FLOOD_LIMIT);
  EXPECT_EQ(outcomes->count(grpc::StatusCode::OK) + refused, FLOOD);
  // Read on the loop, where the count lives, once everything is answered.
  std::promise<std::size_t> most;
  asio::post(server_.get_executor(), [&most, count] { most.set_value(count->most_held); });
  EXPECT_EQ(rx_test::wait_for(most.get_future(), "the loop"), STREAM_FLOOD_LIMIT);
  EXPECT_EQ(server_.requests_in_flight(), 0U);
}

}  // namespace

// XComs on the server, driven from outside by the plain generated gRPC client (as any language's
// client would be): push by key and return_value, mapped pulls, waiting pulls, attempts,
// retention and eviction, task-instance state, Watch with a slow subscriber, shutdown.
#include "codec.hpp"
#include "utils/gate.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace pb = remote_xcomm::v1;
using rx_test::make_key;
using namespace std::chrono_literals;

// ---- a plain client --------------------------------------------------------------------------------

class RawXComClient {
 public:
  explicit RawXComClient(const std::string& target)
      : stub_(pb::RemoteXComm::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))) {}

  static pb::PullRequest query(const std::string& task_id, const std::string& key, int map_index = -1) {
    pb::PullRequest request;
    request.set_dag_id("dag");
    request.set_run_id("run");
    request.set_task_id(task_id);
    request.set_key(key);
    request.set_map_index(map_index);
    return request;
  }

  grpc::Status pull(const pb::PullRequest& request, pb::PullResponse& response,
                    std::chrono::milliseconds deadline = rx_test::DEFAULT_DEADLINE) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    return stub_->Pull(&context, request, &response);
  }

  // The value of one XCom, or the status's code and message when the pull fails.
  std::string pull_value(const std::string& task_id, const std::string& key, int map_index = -1) {
    pb::PullResponse response;
    const grpc::Status status = pull(query(task_id, key, map_index), response);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      return "NOT_FOUND: " + status.error_message();
    }
    if (!status.ok()) {
      return rx_test::describe(status);
    }
    return response.xcoms_size() == 1 ? response.xcoms(0).value_json()
                                      : "xcoms: " + std::to_string(response.xcoms_size());
  }

  grpc::Status state(const rx::TaskInstanceKey& key, pb::TaskStateInfo& info) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
    pb::GetStateRequest request;
    rx::detail::to_proto(key, *request.mutable_task_instance());
    return stub_->GetState(&context, request, &info);
  }

  pb::RemoteXComm::Stub& stub() { return *stub_; }

 private:
  std::unique_ptr<pb::RemoteXComm::Stub> stub_;
};

// A task that records "pushed_<n>" = n for n in 0..count of the payload, then replies.
asio::awaitable<void> push_xcoms(rx::Endpoint endpoint) {
  for (;;) {
    json::object payload = co_await endpoint.get();
    const std::int64_t count = payload.contains("count") ? payload.at("count").as_int64() : 0;
    const std::size_t pad = payload.contains("pad") ? static_cast<std::size_t>(payload.at("pad").as_int64()) : 0;
    for (std::int64_t n = 0; n < count; ++n) {
      json::value value =
          pad == 0 ? json::value(n) : json::value(json::object{{"n", n}, {"pad", std::string(pad, 'p')}});
      co_await endpoint.xcom_push("pushed_" + std::to_string(n), std::move(value));
    }
    json::object reply{{"got", payload}};
    co_await endpoint.push(std::move(reply));
  }
}

class XComTest : public rx_test::ServerFixture {
 protected:
  XComTest() : ServerFixture(options()) {}
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.xcom_retention = std::chrono::minutes(10);
    return options;
  }
  RawXComClient raw() { return RawXComClient(server_.target()); }
};

TEST_F(XComTest, PushByKeyAndReturnValueArePullable) {
  ASSERT_TRUE(server_.attach(make_key("t"), push_xcoms));
  ASSERT_TRUE(send(make_key("t"), {{"count", 3}}).status.ok());
  RawXComClient client = raw();
  EXPECT_EQ(client.pull_value("t", "pushed_0"), "0");
  EXPECT_EQ(client.pull_value("t", "pushed_2"), "2");
  EXPECT_EQ(json::parse(client.pull_value("t", "return_value")), json::parse(R"({"got":{"count":3}})"));
  // An empty key means return_value.
  EXPECT_EQ(json::parse(client.pull_value("t", "")), json::parse(R"({"got":{"count":3}})"));
  EXPECT_TRUE(client.pull_value("t", "pushed_3").starts_with("NOT_FOUND")) << client.pull_value("t", "pushed_3");
  EXPECT_TRUE(client.pull_value("other", "pushed_0").starts_with("NOT_FOUND"));

  // Sequence numbers order the pushes.
  pb::PullResponse first;
  pb::PullResponse last;
  ASSERT_TRUE(client.pull(RawXComClient::query("t", "pushed_0"), first).ok());
  ASSERT_TRUE(client.pull(RawXComClient::query("t", "return_value"), last).ok());
  EXPECT_LT(first.xcoms(0).sequence(), last.xcoms(0).sequence());
  EXPECT_EQ(first.xcoms(0).attempt(), 1U);
  EXPECT_GT(first.xcoms(0).timestamp_us(), 0);
}

TEST_F(XComTest, BadPullsAreRefusedWithInvalidArgument) {
  RawXComClient client = raw();
  pb::PullResponse response;
  pb::PullRequest no_task = RawXComClient::query("", "k");
  EXPECT_EQ(client.pull(no_task, response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  pb::PullRequest bad_index = RawXComClient::query("t", "k", -2);
  EXPECT_EQ(client.pull(bad_index, response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  pb::PullRequest no_dag = RawXComClient::query("t", "k");
  no_dag.clear_dag_id();
  no_dag.set_wait(true);
  EXPECT_EQ(client.pull(no_dag, response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // The server goes on serving.
  ASSERT_TRUE(server_.attach(make_key("t"), push_xcoms));
  EXPECT_TRUE(send(make_key("t"), {}).status.ok());
}

TEST_F(XComTest, MappedPullReturnsMapIndexOrderWithGaps) {
  for (const int index : {7, 0, 3, 5}) {
    ASSERT_TRUE(server_.attach(make_key("mapped", index), push_xcoms));
  }
  for (const int index : {7, 0, 3}) {  // map index 5 never runs: a gap
    ASSERT_TRUE(send(make_key("mapped", index), {{"index", index}}).status.ok());
  }
  RawXComClient client = raw();
  pb::PullRequest request = RawXComClient::query("mapped", "return_value");
  request.set_all_map_indexes(true);
  pb::PullResponse response;
  ASSERT_TRUE(client.pull(request, response).ok());
  ASSERT_EQ(response.xcoms_size(), 3);
  std::vector<int> indexes;
  for (const auto& xcom : response.xcoms()) {
    indexes.push_back(xcom.task_instance().map_index());
    EXPECT_EQ(json::parse(xcom.value_json()).at("got").at("index").as_int64(), xcom.task_instance().map_index());
  }
  EXPECT_EQ(indexes, (std::vector<int>{0, 3, 7}));
  // Another task's XComs (a neighbour in the key order) never leak in.
  ASSERT_TRUE(server_.attach(make_key("mapped_other", 1), push_xcoms));
  ASSERT_TRUE(send(make_key("mapped_other", 1), {}).status.ok());
  ASSERT_TRUE(client.pull(request, response = {}).ok());
  EXPECT_EQ(response.xcoms_size(), 3);
}

TEST_F(XComTest, WaitingPullTimesOutThenIsWokenByAPush) {
  RawXComClient client = raw();
  pb::PullRequest request = RawXComClient::query("late", "return_value");
  request.set_wait(true);
  pb::PullResponse response;
  // Waiting, not NOT_FOUND: the task instance is not even attached yet.
  EXPECT_EQ(client.pull(request, response, 200ms).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  constexpr int WAITERS = 16;
  std::vector<std::future<std::pair<grpc::Status, std::string>>> waiters;
  for (int i = 0; i < WAITERS; ++i) {
    waiters.push_back(std::async(std::launch::async, [&] {
      RawXComClient own = raw();
      pb::PullResponse got;
      const grpc::Status status = own.pull(request, got);
      return std::pair(status, got.xcoms_size() == 1 ? got.xcoms(0).value_json() : std::string());
    }));
  }
  ASSERT_TRUE(server_.attach(make_key("late"), push_xcoms));
  ASSERT_TRUE(send(make_key("late"), {{"n", 1}}).status.ok());
  for (auto& waiter : waiters) {
    const auto [status, value] = rx_test::wait_for(waiter, "a waiting pull");
    ASSERT_TRUE(status.ok()) << rx_test::describe(status);
    EXPECT_EQ(json::parse(value), json::parse(R"({"got":{"n":1}})"));
  }
}

TEST_F(XComTest, WaitingMappedPullWaitsForMinCount) {
  for (int index = 0; index < 3; ++index) {
    ASSERT_TRUE(server_.attach(make_key("m", index), push_xcoms));
  }
  pb::PullRequest request = RawXComClient::query("m", "return_value");
  request.set_all_map_indexes(true);
  request.set_wait(true);
  request.set_min_count(3);
  auto waiter = std::async(std::launch::async, [&] {
    RawXComClient own = raw();
    pb::PullResponse got;
    const grpc::Status status = own.pull(request, got);
    return std::pair(status, got.xcoms_size());
  });
  for (const int index : {2, 0, 1}) {
    ASSERT_TRUE(send(make_key("m", index), {}).status.ok());
  }
  const auto [status, count] = rx_test::wait_for(waiter, "a mapped waiting pull");
  ASSERT_TRUE(status.ok()) << rx_test::describe(status);
  EXPECT_EQ(count, 3);
}

TEST_F(XComTest, CancelledWaitingPullLeavesTheServerServing) {
  RawXComClient client = raw();
  pb::PullRequest request = RawXComClient::query("never", "k");
  request.set_wait(true);
  for (int round = 0; round < 20; ++round) {
    grpc::ClientContext context;
    auto call = std::async(std::launch::async, [&] {
      pb::PullResponse response;
      return client.stub().Pull(&context, request, &response);
    });
    if (round % 2 == 0) {
      std::this_thread::yield();
    }
    context.TryCancel();
    EXPECT_EQ(rx_test::wait_for(call, "a cancelled pull").error_code(), grpc::StatusCode::CANCELLED);
  }
  ASSERT_TRUE(server_.attach(make_key("never"), push_xcoms));
  EXPECT_TRUE(send(make_key("never"), {}).status.ok());
}

TEST_F(XComTest, ReplyPushedAfterTheCallerLeftStaysPullable) {
  auto gate = std::make_shared<rx_test::Gate>(loop_.get_executor());
  std::promise<boost::system::error_code> pushed;
  ASSERT_TRUE(server_.attach(make_key("slow"), [gate, &pushed](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    co_await gate->wait();
    json::object reply{{"late", true}};  // own statement: GCC 12 (README)
    auto [error] = co_await endpoint.push(std::move(reply), asio::as_tuple(asio::use_awaitable));
    pushed.set_value(error);
  }));
  EXPECT_EQ(send(make_key("slow"), {}, 100ms).status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  gate->open();
  // request_cancelled once the server heard of the deadline; a push racing that notice goes out
  // into the void. Either way the value is kept.
  const boost::system::error_code push_result = rx_test::wait_for(pushed.get_future(), "the late push");
  EXPECT_TRUE(!push_result || push_result == rx::errc::request_cancelled) << push_result.message();
  EXPECT_EQ(json::parse(raw().pull_value("slow", "return_value")), json::parse(R"({"late":true})"));
  pb::TaskStateInfo info;
  ASSERT_TRUE(raw().state(make_key("slow"), info).ok());
  EXPECT_EQ(info.state(), pb::TASK_STATE_SUCCESS);
}

TEST_F(XComTest, StateFollowsTheTaskInstance) {
  auto gate = std::make_shared<rx_test::Gate>(loop_.get_executor());
  auto taken = std::make_shared<std::promise<void>>();
  ASSERT_TRUE(server_.attach(make_key("s"), [gate, taken](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    if (payload.contains("throw")) {
      throw std::runtime_error("boom");
    }
    taken->set_value();  // the request is held: running
    co_await gate->wait();
    co_await endpoint.push(std::move(payload));
  }));
  RawXComClient client = raw();
  pb::TaskStateInfo info;
  ASSERT_TRUE(client.state(make_key("s"), info).ok());
  EXPECT_EQ(info.state(), pb::TASK_STATE_IDLE);
  EXPECT_EQ(info.attempt(), 1U);

  auto reply = send_async(make_key("s"), {});
  rx_test::wait_for(taken->get_future(), "the task taking the request");
  ASSERT_TRUE(client.state(make_key("s"), info).ok());
  EXPECT_EQ(info.state(), pb::TASK_STATE_RUNNING);
  const std::int64_t running_since = info.since_us();
  const std::uint64_t running_sequence = info.sequence();
  gate->open();
  ASSERT_TRUE(std::get<0>(rx_test::wait_for(reply, "the reply")).ok());
  ASSERT_TRUE(client.state(make_key("s"), info).ok());
  EXPECT_EQ(info.state(), pb::TASK_STATE_SUCCESS);
  EXPECT_GE(info.since_us(), running_since);
  EXPECT_GT(info.sequence(), running_sequence);

  EXPECT_EQ(send(make_key("s"), {{"throw", true}}).status.error_code(), grpc::StatusCode::INTERNAL);
  ASSERT_TRUE(client.state(make_key("s"), info).ok());
  EXPECT_EQ(info.state(), pb::TASK_STATE_FAILED);
  EXPECT_NE(info.message().find("boom"), std::string::npos) << info.message();

  ASSERT_TRUE(server_.detach(make_key("s")));
  ASSERT_TRUE(client.state(make_key("s"), info).ok());
  EXPECT_EQ(info.state(), pb::TASK_STATE_DETACHED);
  EXPECT_EQ(client.state(make_key("unknown"), info).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(XComTest, NewAttemptClearsAndSameTryNumberResumes) {
  ASSERT_TRUE(server_.attach(make_key("retry"), push_xcoms));
  ASSERT_TRUE(send(make_key("retry"), {{"count", 1}}).status.ok());
  ASSERT_TRUE(server_.detach(make_key("retry")));
  RawXComClient client = raw();
  EXPECT_EQ(client.pull_value("retry", "pushed_0"), "0") << "kept after detach, for the retention time";

  // The same try resumed (a restarted worker): kept.
  ASSERT_TRUE(server_.attach(make_key("retry"), push_xcoms, rx::AttachOptions{1}));
  EXPECT_EQ(client.pull_value("retry", "pushed_0"), "0");
  ASSERT_TRUE(server_.detach(make_key("retry")));

  // A new attempt: Airflow clears the XComs of a task instance that runs again.
  ASSERT_TRUE(server_.attach(make_key("retry"), push_xcoms));
  EXPECT_TRUE(client.pull_value("retry", "pushed_0").starts_with("NOT_FOUND"));
  EXPECT_TRUE(client.pull_value("retry", "return_value").starts_with("NOT_FOUND"));
  pb::TaskStateInfo info;
  ASSERT_TRUE(client.state(make_key("retry"), info).ok());
  EXPECT_EQ(info.attempt(), 2U);
  ASSERT_TRUE(send(make_key("retry"), {}).status.ok());
  pb::PullResponse response;
  ASSERT_TRUE(client.pull(RawXComClient::query("retry", "return_value"), response).ok());
  EXPECT_EQ(response.xcoms(0).attempt(), 2U);
}

TEST_F(XComTest, TaskCodePullsAnotherTaskInstanceWaitingForIt) {
  ASSERT_TRUE(server_.attach(make_key("downstream"), [](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    rx::XComQuery query;
    query.task_id = "upstream";  // dag_id and run_id: the pulling task's own
    query.wait = true;
    auto [error, xcoms] = co_await endpoint.xcom_pull(query, asio::as_tuple(asio::use_awaitable));
    json::object reply{{"error", error.message()}, {"count", xcoms.size()}};
    if (!xcoms.empty()) {
      reply["upstream"] = json::parse(xcoms.front().value_json);
    }
    co_await endpoint.push(std::move(reply));
  }));
  ASSERT_TRUE(server_.attach(make_key("upstream"), push_xcoms));
  auto downstream = send_async(make_key("downstream"), {});
  ASSERT_TRUE(send(make_key("upstream"), {{"u", 1}}).status.ok());
  const auto [status, reply] = rx_test::wait_for(downstream, "the downstream task");
  ASSERT_TRUE(status.ok()) << rx_test::describe(status);
  EXPECT_EQ(reply.at("count").as_int64(), 1) << json::serialize(reply);
  EXPECT_EQ(reply.at("upstream"), json::parse(R"({"got":{"u":1}})"));
}

TEST_F(XComTest, TaskCodePullErrors) {
  ASSERT_TRUE(server_.attach(make_key("puller"), [](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    json::object reply;
    rx::XComQuery missing;
    missing.task_id = "nobody";
    auto [not_found, none] = co_await endpoint.xcom_pull(missing, asio::as_tuple(asio::use_awaitable));
    reply["not_found"] = not_found == rx::errc::xcom_not_found;
    missing.wait = true;
    missing.timeout = 50ms;
    auto [timed_out, still_none] = co_await endpoint.xcom_pull(missing, asio::as_tuple(asio::use_awaitable));
    reply["timed_out"] = timed_out == rx::errc::xcom_wait_timed_out;
    rx::XComQuery invalid;
    auto [bad, nothing] = co_await endpoint.xcom_pull(invalid, asio::as_tuple(asio::use_awaitable));
    reply["invalid"] = bad == rx::errc::invalid_xcom;
    auto [bad_push] = co_await endpoint.xcom_push("", json::value(1), asio::as_tuple(asio::use_awaitable));
    reply["bad_push"] = bad_push == rx::errc::invalid_xcom;
    co_await endpoint.push(std::move(reply));
  }));
  const auto result = send(make_key("puller"), {});
  ASSERT_TRUE(result.status.ok()) << rx_test::describe(result.status);
  EXPECT_EQ(result.reply, json::parse(R"({"not_found":true,"timed_out":true,"invalid":true,"bad_push":true})"));
}

// ---- retention and eviction -------------------------------------------------------------------------

class XComRetentionTest : public rx_test::ServerFixture {
 protected:
  XComRetentionTest() : ServerFixture(options()) {}
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.xcom_retention = 100ms;
    return options;
  }
};

asio::awaitable<void> push_blob(rx::Endpoint endpoint) {
  for (;;) {
    json::object payload = co_await endpoint.get();
    const auto size = static_cast<std::size_t>(payload.at("bytes").as_int64());
    auto [error] =
        co_await endpoint.xcom_push("blob", json::value(std::string(size, 'x')), asio::as_tuple(asio::use_awaitable));
    json::object reply{{"error", error.message()}, {"limit", error == rx::errc::xcom_limit_reached}};
    co_await endpoint.push(std::move(reply));
  }
}

TEST_F(XComRetentionTest, DetachedXComsExpireAfterTheRetention) {
  ASSERT_TRUE(server_.attach(make_key("r"), push_xcoms));
  ASSERT_TRUE(send(make_key("r"), {{"count", 1}}).status.ok());
  ASSERT_TRUE(server_.detach(make_key("r")));
  RawXComClient client(server_.target());
  std::string value = client.pull_value("r", "pushed_0");
  for (int tries = 0; tries < 3000 && value == "0"; ++tries) {
    std::this_thread::sleep_for(1ms);
    value = client.pull_value("r", "pushed_0");
  }
  EXPECT_TRUE(value.starts_with("NOT_FOUND")) << value;
  pb::TaskStateInfo info;
  EXPECT_EQ(client.state(make_key("r"), info).error_code(), grpc::StatusCode::NOT_FOUND);
}

class XComEvictionTest : public rx_test::ServerFixture {
 protected:
  XComEvictionTest() : ServerFixture(options()) {}
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.xcom_retention = std::chrono::minutes(10);  // only the byte bound evicts here
    options.max_retained_xcom_bytes = 16 * 1024;
    return options;
  }
};

TEST_F(XComEvictionTest, EvictsTheOldestDetachedFirstThenRefuses) {
  RawXComClient client(server_.target());
  for (const char* task : {"old", "newer", "live"}) {
    ASSERT_TRUE(server_.attach(make_key(task), push_blob));
  }
  ASSERT_TRUE(send(make_key("old"), {{"bytes", 6000}}).status.ok());
  ASSERT_TRUE(send(make_key("newer"), {{"bytes", 6000}}).status.ok());
  ASSERT_TRUE(server_.detach(make_key("old")));
  ASSERT_TRUE(server_.detach(make_key("newer")));
  // Needs room: "old" goes (the oldest detached), "newer" stays.
  auto result = send(make_key("live"), {{"bytes", 6000}});
  ASSERT_TRUE(result.status.ok());
  EXPECT_FALSE(result.reply.at("limit").as_bool()) << json::serialize(result.reply);
  EXPECT_TRUE(client.pull_value("old", "blob").starts_with("NOT_FOUND"));
  EXPECT_EQ(client.pull_value("newer", "blob").size(), 6002U);
  // More than the bound: every detached XCom goes, then it is refused; the reply still reaches
  // its caller.
  result = send(make_key("live"), {{"bytes", 20000}});
  ASSERT_TRUE(result.status.ok());
  EXPECT_TRUE(result.reply.at("limit").as_bool()) << json::serialize(result.reply);
  EXPECT_EQ(client.pull_value("live", "blob").size(), 6002U) << "the refused push left the old value";
  EXPECT_TRUE(client.pull_value("newer", "blob").starts_with("NOT_FOUND"));
}

// ---- Watch ---------------------------------------------------------------------------------------------

class XComWatchTest : public rx_test::ServerFixture {
 protected:
  XComWatchTest() : ServerFixture(options()) {}
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.watch_buffer_events = 16'384;
    options.xcom_history_events = 200'000;
    options.xcom_history_bytes = std::size_t{256} << 20;
    return options;
  }

  struct Watcher {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<pb::WatchResponse>> reader;
  };

  std::unique_ptr<Watcher> watch(RawXComClient& client, const pb::WatchRequest& request) {
    auto watcher = std::make_unique<Watcher>();
    watcher->context.set_deadline(std::chrono::system_clock::now() + rx_test::HANG_GUARD);
    watcher->reader = client.stub().Watch(&watcher->context, request);
    return watcher;
  }

  static pb::WatchRequest run_query(const std::string& task_id = {}) {
    pb::WatchRequest request;
    request.set_dag_id("dag");
    request.set_run_id("run");
    request.set_task_id(task_id);
    return request;
  }

  // Reads `watcher` until it has seen the XCom `key` or the stream ends; the events in order.
  static std::vector<pb::WatchEvent> read_until(Watcher& watcher, const std::string& key) {
    std::vector<pb::WatchEvent> events;
    pb::WatchResponse response;
    while (watcher.reader->Read(&response)) {
      for (const auto& event : response.events()) {
        events.push_back(event);
        if (event.has_xcom() && event.xcom().key() == key) {
          return events;
        }
      }
    }
    return events;
  }
};

TEST_F(XComWatchTest, SubscribersSeeEventsInOrderAndASlowOneIsEndedAlone) {
  RawXComClient client(server_.target());
  ASSERT_TRUE(server_.attach(make_key("w"), push_xcoms));
  ASSERT_TRUE(server_.attach(make_key("w_other"), push_xcoms));
  // From the start of the history, so that the first request's events reach each watch however
  // late its call reaches the loop.
  auto from_start = [](pb::WatchRequest request) {
    request.set_from_start(true);
    return request;
  };
  auto fast_a = watch(client, from_start(run_query("w")));
  auto fast_b = watch(client, from_start(run_query()));
  auto slow = watch(client, from_start(run_query("w")));
  // Every watch is subscribed once it saw the first request's event.
  ASSERT_TRUE(send(make_key("w"), {{"count", 1}}).status.ok());
  for (auto* watcher : {fast_a.get(), fast_b.get(), slow.get()}) {
    ASSERT_FALSE(read_until(*watcher, "pushed_0").empty());
  }
  // Far more than the slow one's buffer plus what HTTP/2's windows and the sockets hold (30 MB),
  // read by the fast ones as it comes, each on a thread of its own. Sent in chunks, each once the
  // fast ones have read the one before: a fast reader is never more than a chunk behind, far less
  // than its buffer, however the machine schedules its thread (a loaded host once starved both and
  // they were ended as slow); the slow one never reads and falls behind by the whole burst.
  constexpr int CHUNK = 4'000;
  constexpr int EVENTS = 15 * CHUNK;
  struct Progress {
    std::mutex mutex;
    std::condition_variable changed;
    int pushed = 0;
    bool ended = false;
    void publish(int now_pushed, bool now_ended) {
      {
        const std::lock_guard lock(mutex);
        pushed = now_pushed;
        ended = now_ended;
      }
      changed.notify_all();
    }
    // Until the reader counted `target` pushes or its watch ended; false past the hang guard.
    bool wait_for(int target) {
      std::unique_lock lock(mutex);
      return changed.wait_for(lock, rx_test::HANG_GUARD, [&] { return ended || pushed >= target; });
    }
  };
  Progress progress_a;
  Progress progress_b;
  auto read_all = [](Watcher* watcher, bool whole_run, Progress* progress) {
    pb::WatchResponse response;
    int pushed = 0;
    bool saw_other = false;
    bool in_order = true;
    std::uint64_t previous = 0;
    bool done = false;
    while (!done && watcher->reader->Read(&response)) {
      for (const auto& event : response.events()) {
        in_order = in_order && event.sequence() > previous;
        previous = event.sequence();
        if (!event.has_xcom()) {
          continue;
        }
        const auto& xcom = event.xcom();
        saw_other = saw_other || xcom.task_instance().task_id() == "w_other";
        pushed += static_cast<int>(xcom.key().starts_with("pushed_") && xcom.task_instance().task_id() == "w");
        done = done || (xcom.key() == "return_value" && xcom.value_json().find("last") != std::string::npos);
      }
      progress->publish(pushed, false);
    }
    progress->publish(pushed, true);
    EXPECT_TRUE(done);
    EXPECT_TRUE(in_order);
    EXPECT_EQ(saw_other, whole_run) << "the run watcher sees every task, the task watcher one";
    return pushed;
  };
  auto reader_a = std::async(std::launch::async, read_all, fast_a.get(), false, &progress_a);
  auto reader_b = std::async(std::launch::async, read_all, fast_b.get(), true, &progress_b);
  for (int sent = CHUNK; sent <= EVENTS; sent += CHUNK) {
    ASSERT_TRUE(send(make_key("w"), {{"count", CHUNK}, {"pad", 500}}).status.ok());
    EXPECT_TRUE(progress_a.wait_for(sent)) << "the task watcher did not read chunk " << sent / CHUNK;
    EXPECT_TRUE(progress_b.wait_for(sent)) << "the run watcher did not read chunk " << sent / CHUNK;
  }
  ASSERT_TRUE(send(make_key("w_other"), {{"count", 1}}).status.ok());
  ASSERT_TRUE(send(make_key("w"), {{"count", 0}, {"last", true}}).status.ok());
  EXPECT_EQ(rx_test::wait_for(reader_a, "the task watcher"), EVENTS);
  EXPECT_EQ(rx_test::wait_for(reader_b, "the run watcher"), EVENTS);

  // The slow one was ended, and says where to resume.
  auto is_burst_push = [](const pb::WatchEvent& event) {
    return event.has_xcom() && event.xcom().task_instance().task_id() == "w" &&
           event.xcom().key().starts_with("pushed_") && event.xcom().value_json().starts_with("{");
  };
  pb::WatchResponse response;
  std::uint64_t last_seen = 0;
  int burst_seen = 0;
  while (slow->reader->Read(&response)) {
    for (const auto& event : response.events()) {
      EXPECT_GT(event.sequence(), last_seen);
      last_seen = event.sequence();
      burst_seen += static_cast<int>(is_burst_push(event));
    }
  }
  const grpc::Status status = slow->reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << rx_test::describe(status);
  EXPECT_NE(status.error_message().find("after_sequence"), std::string::npos) << status.error_message();
  EXPECT_LT(burst_seen, EVENTS);

  // Resuming after the last event seen replays the rest from the history, up to the last reply:
  // between the two watches, nothing is lost and nothing repeated.
  pb::WatchRequest resume = run_query("w");
  resume.set_after_sequence(last_seen);
  auto resumed = watch(client, resume);
  pb::WatchResponse page;
  bool done = false;
  bool first = true;
  while (!done && resumed->reader->Read(&page)) {
    for (const auto& event : page.events()) {
      if (first) {
        EXPECT_GT(event.sequence(), last_seen);
        first = false;
      }
      burst_seen += static_cast<int>(is_burst_push(event));
      done = done || (event.has_xcom() && event.xcom().value_json().find("last") != std::string::npos);
    }
  }
  ASSERT_TRUE(done);
  EXPECT_EQ(burst_seen, EVENTS) << "the two watches together saw every push of the burst once";
  resumed->context.TryCancel();
}

TEST_F(XComWatchTest, FromStartReplaysStateChangesAndXComs) {
  ASSERT_TRUE(server_.attach(make_key("replayed"), push_xcoms));
  ASSERT_TRUE(send(make_key("replayed"), {{"count", 2}}).status.ok());
  RawXComClient client(server_.target());
  pb::WatchRequest request = run_query("replayed");
  request.set_from_start(true);
  auto watcher = watch(client, request);
  const auto events = read_until(*watcher, "return_value");
  std::vector<std::string> seen;
  for (const auto& event : events) {
    if (event.has_state()) {
      seen.push_back(std::string("state:") + pb::TaskState_Name(event.state().state()));
    } else if (event.has_xcom()) {
      seen.push_back("xcom:" + event.xcom().key());
    }
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"state:TASK_STATE_RUNNING", "xcom:pushed_0", "xcom:pushed_1",
                                            "xcom:return_value"}));
  watcher->context.TryCancel();
}

TEST_F(XComWatchTest, BadWatchesAreRefused) {
  RawXComClient client(server_.target());
  pb::WatchRequest no_run;
  no_run.set_dag_id("dag");
  auto watcher = watch(client, no_run);
  pb::WatchResponse response;
  EXPECT_FALSE(watcher->reader->Read(&response));
  EXPECT_EQ(watcher->reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

class XComShortHistoryTest : public rx_test::ServerFixture {
 protected:
  XComShortHistoryTest() : ServerFixture(options()) {}
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.xcom_history_events = 8;
    return options;
  }
};

TEST_F(XComShortHistoryTest, ResumingAfterEventsThatAreGoneIsOutOfRange) {
  ASSERT_TRUE(server_.attach(make_key("h"), push_xcoms));
  ASSERT_TRUE(send(make_key("h"), {{"count", 50}}).status.ok());
  RawXComClient client(server_.target());
  pb::WatchRequest request;
  request.set_dag_id("dag");
  request.set_run_id("run");
  request.set_after_sequence(1);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + rx_test::HANG_GUARD);
  auto reader = client.stub().Watch(&context, request);
  pb::WatchResponse response;
  EXPECT_FALSE(reader->Read(&response));
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << rx_test::describe(status);
}

// ---- shutdown ------------------------------------------------------------------------------------------

TEST(XComShutdownTest, WaitingPullsAndWatchesEndWithUnavailable) {
  asio::io_context context;
  rx::Loop loop(context);
  auto server = std::make_unique<rx::Server>(loop);
  ASSERT_TRUE(server->attach(make_key("t"), push_xcoms));
  server->start();
  std::thread runner([&] {
    auto work = asio::make_work_guard(context);
    context.run_for(rx_test::HANG_GUARD);
  });
  RawXComClient client(server->target());
  pb::PullRequest request = RawXComClient::query("nobody", "k");
  request.set_wait(true);
  auto pull = std::async(std::launch::async, [&] {
    pb::PullResponse response;
    return RawXComClient(server->target()).pull(request, response);
  });
  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + rx_test::HANG_GUARD);
  pb::WatchRequest watch_request;
  watch_request.set_dag_id("dag");
  watch_request.set_run_id("run");
  watch_request.set_from_start(true);  // the first event reaches it however late it subscribes
  auto reader = client.stub().Watch(&watch_context, watch_request);
  // The watch is subscribed once it saw an event; the pull may or may not have started waiting:
  // either way it must end with UNAVAILABLE, never hang.
  ASSERT_TRUE(rx_test::raw_send(server->target(), make_key("t"), "{}").ok());
  pb::WatchResponse first;
  ASSERT_TRUE(reader->Read(&first));
  server->shutdown();
  // UNAVAILABLE from the server once the pull reached it; a pull still on the wire when gRPC began
  // its own shutdown is cancelled by gRPC itself (CANCELLED). Never a hang.
  const grpc::StatusCode pull_code = rx_test::wait_for(pull, "the waiting pull").error_code();
  EXPECT_TRUE(pull_code == grpc::StatusCode::UNAVAILABLE || pull_code == grpc::StatusCode::CANCELLED) << pull_code;
  pb::WatchResponse response;
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  server.reset();
  context.stop();
  runner.join();
}

}  // namespace

// ---- the C++ Client against the real server ----------------------------------------------------------

namespace {

class XComClientTest : public rx_test::ServerFixture {};

TEST_F(XComClientTest, WaitingPullWatchAndStateThroughTheClient) {
  ASSERT_TRUE(server_.attach(make_key("c"), push_xcoms));
  const std::string target = server_.target();

  rx::XComQuery query;
  query.dag_id = "dag";
  query.run_id = "run";
  query.task_id = "c";
  query.key = "pushed_1";
  query.wait = true;
  auto waiting = client_.pull(target, query, asio::use_future);

  rx::WatchQuery watch_query;
  watch_query.dag_id = "dag";
  watch_query.run_id = "run";
  watch_query.task_id = "c";
  watch_query.from_start = true;
  rx::Watch watch = client_.watch(target, watch_query);

  ASSERT_TRUE(send(make_key("c"), {{"count", 2}}).status.ok());
  auto [pull_status, xcoms] = rx_test::wait_for(waiting, "the waiting pull");
  ASSERT_TRUE(pull_status.ok()) << rx_test::describe(pull_status);
  ASSERT_EQ(xcoms.size(), 1U);
  EXPECT_EQ(xcoms[0].value_json, "1");
  EXPECT_EQ(xcoms[0].task_instance, make_key("c"));

  std::vector<std::string> seen;
  while (seen.empty() || seen.back() != "state:success") {
    auto [status, event] = rx_test::wait_for(watch.next(asio::use_future), "a watch event");
    ASSERT_TRUE(status.ok()) << rx_test::describe(status);
    seen.push_back(event.kind == rx::WatchEvent::Kind::xcom ? "xcom:" + event.xcom.key
                                                            : "state:" + std::string(rx::to_string(event.state.state)));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"state:running", "xcom:pushed_0", "xcom:pushed_1", "xcom:return_value",
                                            "state:success"}));
  EXPECT_GT(watch.last_sequence(), 0U);
  watch.cancel();
  auto [ended, nothing] = rx_test::wait_for(watch.next(asio::use_future), "the end of the watch");
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::CANCELLED) << rx_test::describe(ended);

  auto [state_status, state] = rx_test::wait_for(client_.get_state(target, make_key("c"), asio::use_future));
  ASSERT_TRUE(state_status.ok()) << rx_test::describe(state_status);
  EXPECT_EQ(state.state, rx::TaskState::success);
  EXPECT_EQ(state.attempt, 1U);
}

}  // namespace

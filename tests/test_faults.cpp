// Faults in the process layout users have: a client process killed (SIGKILL) while its request is
// with the task, and a server process killed and restarted under a client with a retry policy,
// on a durable (SQLite) store. The client processes are `rxcomm send` (src/cli/); the server
// process is tests/helpers/xcom_store_server.cpp.
#include "utils/child_process.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <grpc/grpc.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using rx_test::make_key;

// ---- A client process killed mid-request ------------------------------------------------------

// What the test and the held task share: the task says when it holds the first request, waits at
// the gate until the test opens it, then reports what its push returned.
struct Gate {
  explicit Gate(asio::io_context& context) : timer(context, asio::steady_timer::time_point::max()) {}
  asio::steady_timer timer;
  std::promise<void> holding;
  std::promise<boost::system::error_code> pushed;
};

// The prototype's task shape (get, work, push), serving forever; only the first request waits.
asio::awaitable<void> held_task(rx::Endpoint endpoint, std::shared_ptr<Gate> gate) {
  for (bool first = true;; first = false) {
    json::object payload = co_await endpoint.get();
    if (first) {
      gate->holding.set_value();
      co_await gate->timer.async_wait(asio::as_tuple(asio::use_awaitable));  // until the test cancels it
    }
    payload["done"] = true;
    auto [error] = co_await endpoint.push(std::move(payload), asio::as_tuple(asio::use_awaitable));
    if (first) {
      gate->pushed.set_value(error);
    }
  }
}

class ClientProcessKilled : public rx_test::ServerFixture {
 protected:
  [[nodiscard]] std::vector<std::string> rxcomm_send(const std::string& task, const std::string& payload) const {
    return {RXCOMM_BINARY, "send",   "-t", server_.target(), "--dag", "dag",  "--run",
            "run",         "--task", task, "--timeout",      "60",    payload};
  }

  // Requests of `method` the server has ended with `code`.
  [[nodiscard]] std::uint64_t ended(const char* method, grpc::StatusCode code) const {
    const rx::ServerStats stats = server_.stats();
    const rx::MethodStats* counts = stats.find(method);
    return counts == nullptr ? 0 : counts->by_code[static_cast<std::size_t>(code)];
  }
};

TEST_F(ClientProcessKilled, MidRequestTheServerServesOnAndThePushedResultStaysPullable) {
  auto gate = std::make_shared<Gate>(context_);
  ASSERT_TRUE(server_.attach(make_key("held"), [gate](rx::Endpoint endpoint) { return held_task(endpoint, gate); }));
  ASSERT_TRUE(server_.attach(make_key("other"), rx_test::echo_forever));

  rx_test::ChildProcess client(rxcomm_send("held", R"({"n": 1})"));
  rx_test::wait_for(gate->holding.get_future(), "the task to hold the request");
  const int killed = client.kill_now();
  ASSERT_TRUE(WIFSIGNALED(killed) && WTERMSIG(killed) == SIGKILL) << "the client was still waiting for its reply";

  // The connection's end reaches the server as a cancelled call (ended CANCELLED in its counters).
  // No event marks it outside the server, so the test watches the counter, within the hang guard.
  const auto give_up = std::chrono::steady_clock::now() + rx_test::HANG_GUARD;
  while (ended("Send", grpc::StatusCode::CANCELLED) == 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(ended("Send", grpc::StatusCode::CANCELLED), 1U) << "the server never learned the client was gone";

  // The task pushes after its caller left: the push reports it (the reply has nobody to go to)...
  asio::post(context_, [gate] { gate->timer.cancel(); });
  EXPECT_EQ(rx_test::wait_for(gate->pushed.get_future(), "the push"), rx::errc::request_cancelled);

  // ...and the reply is kept: the task succeeded, its return_value is pullable.
  auto [got, state] =
      rx_test::wait_for(client_.get_state(server_.target(), make_key("held"), asio::use_future), "get_state");
  ASSERT_TRUE(got.ok()) << rx_test::describe(got);
  EXPECT_EQ(state.state, rx::TaskState::success);
  rx::XComQuery query;
  query.dag_id = "dag";
  query.run_id = "run";
  query.task_id = "held";
  auto [pulled, xcoms] = rx_test::wait_for(client_.pull(server_.target(), query, asio::use_future), "pull");
  ASSERT_TRUE(pulled.ok()) << rx_test::describe(pulled);
  ASSERT_EQ(xcoms.size(), 1U);
  EXPECT_EQ(json::parse(xcoms[0].value_json), json::parse(R"({"n": 1, "done": true})"));

  // The server goes on serving: the same endpoint and another, from this process and a new one.
  const rx_test::SendResult again = send(make_key("held"), {{"n", 2}});
  ASSERT_TRUE(again.status.ok()) << rx_test::describe(again.status);
  EXPECT_EQ(again.reply, json::parse(R"({"n": 2, "done": true})"));
  rx_test::ChildProcess next_client(rxcomm_send("other", R"({"n": 3})"));
  EXPECT_EQ(json::parse(next_client.read_line()), json::parse(R"({"n": 3})"));
  EXPECT_EQ(ended("Send", grpc::StatusCode::OK), 2U);
}

// ---- A server process killed and restarted --------------------------------------------------

// A Loop run by a thread of its own, for clients outside any fixture.
struct ClientLoop {
  ClientLoop() : thread([this] { context.run(); }) {}
  ~ClientLoop() {
    work.reset();
    thread.join();
  }
  asio::io_context context;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{context.get_executor()};
  rx::Loop loop{context};
  std::thread thread;
};

int port_of(rx_test::ChildProcess& server) {
  const std::string line = server.read_line();
  if (!line.starts_with("port ")) {
    throw std::runtime_error("unexpected line from the server process: " + line);
  }
  return std::stoi(line.substr(5));
}

// Reconnect attempts 100 ms to 500 ms apart (gRPC's defaults: 1 s, growing to 120 s), so that a
// channel finds the restarted server soon; what a deployment would tune too.
rx::ClientOptions quick_reconnect() {
  rx::ClientOptions options;
  options.channel_arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  options.channel_arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  options.channel_arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return options;
}

rx::XComQuery xcom_of(std::int64_t n, bool wait = false) {
  rx::XComQuery query;
  query.dag_id = "dag";
  query.run_id = "run";
  query.task_id = std::string("t").append(std::to_string(n % 8));
  query.key = std::string("n").append(std::to_string(n));
  query.wait = wait;
  query.timeout = rx_test::DEFAULT_DEADLINE;
  return query;
}

TEST(ServerProcessKilled, TheClientRetriesUntilTheRestartedServerAnswersAndNothingAcknowledgedIsLost) {
  const std::filesystem::path directory =
      std::filesystem::temp_directory_path() / (std::string("rx_faults_").append(std::to_string(getpid())));
  std::filesystem::remove_all(directory);
  std::filesystem::create_directories(directory);
  const std::string database = (directory / "xcoms.db").string();
  const std::string program = rx_test::sibling_program("remote_xcomm_xcom_store_server");

  auto first = std::make_unique<rx_test::ChildProcess>(std::vector<std::string>{program, database});
  const int port = port_of(*first);
  const std::string target = std::string("127.0.0.1:").append(std::to_string(port));

  ClientLoop loop;
  rx::ClientOptions retrying = quick_reconnect();
  retrying.retry.max_attempts = 5;
  retrying.retry.initial_backoff = 50ms;
  retrying.retry.max_backoff = 500ms;
  retrying.retry.wait_for_ready = true;  // a retry waits for the server instead of spending its attempts
  rx::Client client(loop.loop, retrying);
  rx::Client plain(loop.loop, quick_reconnect());  // no retry policy

  // Acknowledged pushes: each task records "n<n>" in the store before it replies.
  constexpr std::int64_t ACKNOWLEDGED = 200;
  std::vector<std::future<std::tuple<grpc::Status, json::object>>> sends;
  for (std::int64_t n = 0; n < ACKNOWLEDGED; ++n) {
    sends.push_back(client.send(target, {"dag", std::string("t").append(std::to_string(n % 8)), "run", -1}, {{"n", n}},
                                asio::use_future));
  }
  for (auto& sent : sends) {
    auto [status, reply] = rx_test::wait_for(sent, "a send");
    ASSERT_TRUE(status.ok()) << rx_test::describe(status);
  }
  auto [before, before_state] = rx_test::wait_for(plain.get_state(target, {"dag", "t0", "run", -1}, asio::use_future));
  ASSERT_TRUE(before.ok()) << rx_test::describe(before);

  // In flight when the server dies: a waiting pull of an XCom not pushed yet, and a watch.
  auto waiting_pull = client.pull(target, xcom_of(1000, /*wait=*/true), asio::use_future);
  rx::WatchQuery watched;
  watched.dag_id = "dag";
  watched.run_id = "run";
  watched.task_id = "t0";
  rx::Watch watch = client.watch(target, watched);
  auto first_event = watch.next(asio::use_future);
  // Both have reached the server once its stats show the watch (the pull went first, on the same
  // connection): bounded wait on the server's own report.
  for (int round = 0;; ++round) {
    auto [status, stats] = rx_test::wait_for(client.stats(target, asio::use_future));
    ASSERT_TRUE(status.ok()) << rx_test::describe(status);
    if (stats.watch_streams == 1) {
      break;
    }
    ASSERT_LT(round, 3000) << "the watch never reached the server";
    std::this_thread::sleep_for(5ms);
  }

  const int killed = first->kill_now();
  ASSERT_TRUE(WIFSIGNALED(killed) && WTERMSIG(killed) == SIGKILL);

  // Without a policy the call fails at once with UNAVAILABLE...
  auto [down, down_state] = rx_test::wait_for(plain.get_state(target, {"dag", "t0", "run", -1}, asio::use_future));
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE) << rx_test::describe(down);
  // ...with it, a call made now waits for the server, as do those cut off by the kill.
  auto retried_state = client.get_state(target, {"dag", "t1", "run", -1}, asio::use_future);

  // Restarted on the same database and port.
  rx_test::ChildProcess second({program, database, std::to_string(port)});
  ASSERT_EQ(port_of(second), port);

  // The watch, retried, reaches the new server before the send makes its events: a watch that
  // does not replay from the start sees only what happens once it is subscribed, and on a loaded
  // machine its retry could come after the send (the CI run of 2026-12-03 hung here once).
  for (int round = 0;; ++round) {
    auto [status, stats] = rx_test::wait_for(plain.stats(target, asio::use_future));
    if (status.ok() && stats.watch_streams == 1) {
      break;
    }
    ASSERT_LT(round, 3000) << "the retried watch never reached the restarted server";
    std::this_thread::sleep_for(5ms);
  }

  // The waiting pull (retried on the new server) gets the XCom once a send pushes it.
  rx::SendOptions wait_for_server;
  wait_for_server.wait_for_ready = true;
  auto [pushed, reply] = rx_test::wait_for(
      client.send(target, {"dag", "t0", "run", -1}, {{"n", 1000}}, wait_for_server, asio::use_future), "the send");
  ASSERT_TRUE(pushed.ok()) << rx_test::describe(pushed);
  auto [pulled, xcoms] = rx_test::wait_for(waiting_pull, "the waiting pull");
  ASSERT_TRUE(pulled.ok()) << rx_test::describe(pulled);
  ASSERT_EQ(xcoms.size(), 1U);
  EXPECT_EQ(xcoms[0].value_json, "1000");
  // The watch, retried before any event, reports the new request's events.
  auto [watching, event] = rx_test::wait_for(first_event, "the watch's first event");
  ASSERT_TRUE(watching.ok()) << rx_test::describe(watching);
  EXPECT_EQ(
      event.kind == rx::WatchEvent::Kind::xcom ? event.xcom.task_instance.task_id : event.state.task_instance.task_id,
      "t0");
  watch.cancel();
  auto [got, state] = rx_test::wait_for(retried_state, "the retried get_state");
  EXPECT_TRUE(got.ok()) << rx_test::describe(got);

  // Nothing acknowledged is lost.
  std::vector<std::future<std::tuple<grpc::Status, std::vector<rx::XCom>>>> pulls;
  for (std::int64_t n = 0; n < ACKNOWLEDGED; ++n) {
    pulls.push_back(client.pull(target, xcom_of(n), asio::use_future));
  }
  std::int64_t missing = 0;
  for (std::int64_t n = 0; n < ACKNOWLEDGED; ++n) {
    auto [status, values] = rx_test::wait_for(pulls[static_cast<std::size_t>(n)], "a pull");
    if (!status.ok() || values.size() != 1 || values[0].value_json != std::to_string(n)) {
      ++missing;
    }
  }
  EXPECT_EQ(missing, 0) << "of " << ACKNOWLEDGED << " acknowledged pushes";
  std::filesystem::remove_all(directory);
}

}  // namespace

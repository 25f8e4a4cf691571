// XComs that outlive their server: a memory store carried from one Server to the next in this
// process, and an SQLite store under a server process killed with SIGKILL mid-load, whose every
// acknowledged push must be pullable from a server restarted on the same database.
#include "codec.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace pb = remote_xcomm::v1;
using rx_test::make_key;

std::string pull_value(const std::string& target, const std::string& task_id, const std::string& key) {
  auto stub = pb::RemoteXComm::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
  pb::PullRequest request;
  request.set_dag_id("dag");
  request.set_run_id("run");
  request.set_task_id(task_id);
  request.set_key(key);
  pb::PullResponse response;
  const grpc::Status status = stub->Pull(&context, request, &response);
  if (!status.ok()) {
    return rx_test::describe(status);
  }
  return response.xcoms_size() == 1 ? response.xcoms(0).value_json() : std::string("?");
}

asio::awaitable<void> push_one(rx::Endpoint endpoint) {
  for (;;) {
    json::object payload = co_await endpoint.get();
    co_await endpoint.xcom_push("kept", payload.at("v"));
    co_await endpoint.push(std::move(payload));
  }
}

// A server on its own io_context, run by a thread, for one phase of a test.
struct ServerRun {
  explicit ServerRun(rx::ServerOptions options) : server(loop, std::move(options)) {}
  void start() {
    server.start();
    thread = std::thread([this] { context.run(); });
  }
  ~ServerRun() {
    server.shutdown();
    work.reset();
    if (thread.joinable()) {
      thread.join();
    }
  }
  asio::io_context context;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{context.get_executor()};
  rx::Loop loop{context};
  rx::Server server;
  std::thread thread;
};

TEST(XComMemoryStore, XComsOutliveTheServerAndANewAttemptClearsThem) {
  const std::shared_ptr<rx::XComStore> store = rx::make_memory_store();
  rx::ServerOptions options;
  options.xcom_store = store;
  {
    ServerRun first(options);
    ASSERT_TRUE(first.server.attach(make_key("t"), push_one));
    first.start();
    ASSERT_TRUE(rx_test::raw_send(first.server.target(), make_key("t"), R"({"v": 42})").ok());
  }
  {
    ServerRun second(options);
    second.start();
    EXPECT_EQ(pull_value(second.server.target(), "t", "kept"), "42");
    EXPECT_EQ(json::parse(pull_value(second.server.target(), "t", "return_value")), json::parse(R"({"v": 42})"));
    // Attached again: a new attempt, which clears the kept XComs, in the store too.
    ASSERT_TRUE(second.server.attach(make_key("t"), push_one));
    EXPECT_NE(pull_value(second.server.target(), "t", "kept"), "42");
  }
  EXPECT_TRUE(store->load().empty());
}

// An endpoint attached before start() on a key the store kept: start() loads the kept record
// after the attach. Its first use once made a second record for the key, which the table refused
// and freed while the endpoint still pointed at it (found by tests/test_faults.cpp: the restarted
// server crashed on its first request). Without a try_number it is a new attempt, as an attach
// after start() is.
TEST(XComMemoryStore, AnEndpointAttachedBeforeStartOnAKeptKeyServesAsANewAttempt) {
  const std::shared_ptr<rx::XComStore> store = rx::make_memory_store();
  rx::ServerOptions options;
  options.xcom_store = store;
  {
    ServerRun first(options);
    ASSERT_TRUE(first.server.attach(make_key("t"), push_one));
    first.start();
    ASSERT_TRUE(rx_test::raw_send(first.server.target(), make_key("t"), R"({"v": 42})").ok());
  }
  ServerRun second(options);
  ASSERT_TRUE(second.server.attach(make_key("t"), push_one));
  second.start();
  EXPECT_EQ(pull_value(second.server.target(), "t", "kept"), "42");  // loaded, not yet cleared
  std::string reply;
  ASSERT_TRUE(rx_test::raw_send(second.server.target(), make_key("t"), R"({"v": 7})", &reply).ok());
  EXPECT_EQ(json::parse(reply), json::parse(R"({"v": 7})"));
  EXPECT_EQ(pull_value(second.server.target(), "t", "kept"), "7");
  ASSERT_TRUE(rx_test::raw_send(second.server.target(), make_key("t"), R"({"v": 8})").ok());
  EXPECT_EQ(pull_value(second.server.target(), "t", "kept"), "8");
}

// ---- SQLite, a server process killed mid-load ---------------------------------------------------------

class ServerProcess {
 public:
  explicit ServerProcess(const std::string& database) {
    int out[2];
    if (pipe(out) != 0) {
      throw std::runtime_error("pipe failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    const std::string program =
        (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "remote_xcomm_xcom_store_server").string();
    std::vector<char*> argv{const_cast<char*>(program.c_str()), const_cast<char*>(database.c_str()), nullptr};
    const int spawned = posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    from_child_ = out[0];
    if (spawned != 0) {
      throw std::runtime_error("cannot start " + program);
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() {
    kill_now();
    close(from_child_);
  }

  // The port from the child's first line ("port P").
  int read_port() {
    std::string line;
    char c = 0;
    while (line.size() < 64) {
      pollfd fd{from_child_, POLLIN, 0};
      if (poll(&fd, 1, static_cast<int>(std::chrono::milliseconds(rx_test::HANG_GUARD).count())) <= 0 ||
          read(from_child_, &c, 1) != 1) {
        throw std::runtime_error("the server process said nothing (it failed to start)");
      }
      if (c == '\n') {
        break;
      }
      line.push_back(c);
    }
    if (!line.starts_with("port ")) {
      throw std::runtime_error("unexpected line from the server process: " + line);
    }
    return std::stoi(line.substr(5));
  }

  // SIGKILL: no shutdown, no flush, no destructor.
  void kill_now() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  int from_child_ = -1;
};

TEST(XComSqliteStore, EveryAcknowledgedPushSurvivesKill9) {
  const std::filesystem::path directory =
      std::filesystem::temp_directory_path() / ("rx_durable_" + std::to_string(getpid()));
  std::filesystem::remove_all(directory);
  std::filesystem::create_directories(directory);
  const std::string database = (directory / "xcoms.db").string();

  std::set<std::int64_t> acknowledged;
  {
    ServerProcess process(database);
    const std::string target = "127.0.0.1:" + std::to_string(process.read_port());
    auto stub = pb::RemoteXComm::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));

    // Sends from 16 threads (sync calls) over 8 endpoints; the kill comes while they run.
    constexpr int SENDERS = 16;
    constexpr std::size_t KILL_AFTER = 3000;
    std::mutex mutex;
    std::condition_variable changed;
    std::atomic<bool> stopping{false};
    std::atomic<std::int64_t> next{0};
    std::vector<std::thread> senders;
    for (int sender = 0; sender < SENDERS; ++sender) {
      senders.emplace_back([&] {
        while (!stopping.load()) {
          const std::int64_t n = next.fetch_add(1);
          pb::SendRequest request;
          rx::detail::to_proto(make_key("t" + std::to_string(n % 8)), *request.mutable_key());
          request.set_payload_json(json::serialize(json::object{{"n", n}}));
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
          pb::SendResponse response;
          if (stub->Send(&context, request, &response).ok()) {
            EXPECT_EQ(json::parse(response.reply_json()).at("n").as_int64(), n);
            const std::lock_guard lock(mutex);
            acknowledged.insert(n);
            changed.notify_all();
          }
        }
      });
    }
    {
      std::unique_lock lock(mutex);
      EXPECT_TRUE(changed.wait_for(lock, rx_test::HANG_GUARD, [&] { return acknowledged.size() >= KILL_AFTER; }))
          << "only " << acknowledged.size() << " pushes acknowledged";
    }
    process.kill_now();  // mid-load: sends are in flight
    stopping = true;
    for (std::thread& sender : senders) {
      sender.join();
    }
  }
  ASSERT_GE(acknowledged.size(), 3000U);

  // Restarted on the same database: every acknowledged push is there.
  rx::ServerOptions options;
  options.xcom_store = rx::open_sqlite_store(database);
  ServerRun restarted(options);
  restarted.start();
  auto stub =
      pb::RemoteXComm::NewStub(grpc::CreateChannel(restarted.server.target(), grpc::InsecureChannelCredentials()));
  std::size_t missing = 0;
  for (const std::int64_t n : acknowledged) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
    pb::PullRequest request;
    request.set_dag_id("dag");
    request.set_run_id("run");
    request.set_task_id("t" + std::to_string(n % 8));
    request.set_key("n" + std::to_string(n));
    pb::PullResponse response;
    const grpc::Status status = stub->Pull(&context, request, &response);
    if (!status.ok() || response.xcoms_size() != 1 || response.xcoms(0).value_json() != std::to_string(n)) {
      ++missing;
    }
  }
  EXPECT_EQ(missing, 0U) << "of " << acknowledged.size() << " acknowledged pushes";
  // The return_value of each endpoint is the reply of one of its acknowledged requests at least
  // as late as the last acknowledged one sent to it... or a later one that was committed but
  // whose reply the kill cut off: it is some request's reply, and present.
  for (int i = 0; i < 8; ++i) {
    pb::PullRequest request;
    request.set_dag_id("dag");
    request.set_run_id("run");
    request.set_task_id("t" + std::to_string(i));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
    pb::PullResponse response;
    ASSERT_TRUE(stub->Pull(&context, request, &response).ok());
    EXPECT_EQ(json::parse(response.xcoms(0).value_json()).at("n").as_int64() % 8, i);
  }
  std::filesystem::remove_all(directory);
}

}  // namespace

// Faults across hosts: several test hosts, each a network namespace joined to the root namespace
// by a veth pair with addresses of its own, each running a server with many endpoints (a process
// started with `ip netns exec`). The test fans out to all of them from the root namespace, then
// cuts one host's link and, separately, adds delay and loss to it with `tc netem`: the sends to
// that host end with UNAVAILABLE or DEADLINE_EXCEEDED, the other hosts answer as before, and once
// the link is back the client reconnects. Skips, saying why, where namespaces cannot be made.
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/fan_out.hpp>
#include <remote_xcomm/loop.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/object.hpp>
#include <grpc/grpc.h>
#include <gtest/gtest.h>

#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX declares it nowhere

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

constexpr int HOSTS = 3;  // at most 4: a run takes a block of four /24s
static_assert(HOSTS <= 4);
constexpr int ENDPOINTS_PER_HOST = 100;
// What prefixes every namespace this test makes, followed by the making process's id.
constexpr std::string_view PREFIX = "rxh";

// The outcome of a command: its exit status (127 when it could not be started) and its output.
struct CommandResult {
  int status = 127;
  std::string output;
  [[nodiscard]] bool ok() const { return status == 0; }
};

// Runs `argv` (found on PATH) to completion, its stdout and stderr captured together.
CommandResult run_command(const std::vector<std::string>& argv) {
  CommandResult result;
  int out[2];
  if (pipe(out) != 0) {
    result.output = "pipe failed";
    return result;
  }
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& arg : argv) {
    args.push_back(
        const_cast<char*>(arg.c_str()));  // NOLINT(cppcoreguidelines-pro-type-const-cast): posix_spawn's type
  }
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (spawned != 0) {
    close(out[0]);
    result.output = std::string("cannot run ").append(argv[0]).append(": ").append(std::strerror(spawned));
    return result;
  }
  char buffer[4096];
  for (;;) {
    const ssize_t got = read(out[0], buffer, sizeof buffer);
    if (got > 0) {
      result.output.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0 || errno != EINTR) {
      break;
    }
  }
  close(out[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string describe(const std::vector<std::string>& argv, const CommandResult& result) {
  std::string text;
  for (const std::string& arg : argv) {
    text.append(arg).append(" ");
  }
  text.append("exited with ").append(std::to_string(result.status)).append(": ").append(result.output);
  return text;
}

// Deletes namespaces left by earlier runs of this test that died before cleaning up (their
// process is gone): their names carry the process id.
void remove_stale_namespaces() {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", error)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(PREFIX)) {
      continue;
    }
    const std::size_t end = name.find('n', PREFIX.size());
    const long pid = std::strtol(name.substr(PREFIX.size(), end).c_str(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      (void)run_command({"ip", "netns", "del", name});
    }
  }
}

// A server process inside a namespace; stopped (SIGTERM, then SIGKILL) when destroyed.
class ServerProcess {
 public:
  ServerProcess(const std::string& netns, const std::string& address) {
    const std::string program =
        (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "remote_xcomm_hosts_server").string();
    const std::string count = std::to_string(ENDPOINTS_PER_HOST);
    std::vector<std::string> argv{"ip", "netns", "exec", netns, program, address, count};
    std::vector<char*> args;
    for (std::string& arg : argv) {
      args.push_back(arg.data());
    }
    args.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) {
      throw std::runtime_error("pipe failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    const int spawned = posix_spawnp(&pid_, "ip", &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    if (spawned != 0) {
      close(out[0]);
      throw std::runtime_error(std::string("cannot start the server: ").append(std::strerror(spawned)));
    }
    // "port P\n", read up to the hang guard.
    std::string line;
    const auto give_up = std::chrono::steady_clock::now() + rx_test::HANG_GUARD;
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < give_up) {
      pollfd ready{out[0], POLLIN, 0};
      if (poll(&ready, 1, 100) <= 0) {
        continue;
      }
      char buffer[64];
      const ssize_t got = read(out[0], buffer, sizeof buffer);
      if (got <= 0) {
        break;
      }
      line.append(buffer, static_cast<std::size_t>(got));
    }
    close(out[0]);
    if (!line.starts_with("port ")) {
      throw std::runtime_error("the server in " + netns + " did not report its port: \"" + line + "\"");
    }
    port_ = static_cast<std::uint16_t>(std::strtoul(line.c_str() + 5, nullptr, 10));
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  ~ServerProcess() {
    if (pid_ <= 0) {
      return;
    }
    ::kill(pid_, SIGTERM);  // `ip netns exec` execs the server: the signal reaches it
    int status = 0;
    for (int tries = 0; tries < 100; ++tries) {  // up to 10 s for a clean shutdown
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        return;
      }
      std::this_thread::sleep_for(100ms);
    }
    ::kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
  }

  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

// One test host: a namespace, a veth pair (one end in the root namespace, one inside) with an
// address on each end, and a server process listening on the inside address.
struct TestHost {
  std::string netns;
  std::string outside;  // the root namespace's end of the veth pair
  std::string inside;
  std::string address;  // the server's
  std::unique_ptr<ServerProcess> server;
  [[nodiscard]] std::string target() const { return address + ":" + std::to_string(server->port()); }
};

class AcrossHosts : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists("/proc/self/ns/net")) {
      GTEST_SKIP() << "no network namespaces on this system";
    }
    const CommandResult version = run_command({"ip", "-V"});
    if (!version.ok()) {
      GTEST_SKIP() << "iproute2's `ip` is not usable: " << version.output;
    }
    remove_stale_namespaces();
    const auto pid = static_cast<unsigned>(getpid());
    // 198.18.0.0/15 is reserved for network tests (RFC 2544); each run takes a block of /24s, one
    // per host, starting from one its process id picks and skipping blocks in use, so that
    // concurrent runs (the sanitizer builds) do not collide.
    const CommandResult in_use = run_command({"ip", "-o", "-4", "addr", "show"});
    unsigned block = pid % 128;
    for (int tries = 0; tries < 128; ++tries, block = (block + 1) % 128) {
      if (in_use.output.find(block_prefix(block)) == std::string::npos) {
        break;
      }
    }
    const unsigned second = 18 + block / 64;
    const unsigned third_base = block % 64 * 4;
    for (int i = 0; i < HOSTS; ++i) {
      TestHost host;
      const std::string tag = std::string(PREFIX).append(std::to_string(pid));
      host.netns = tag + "n" + std::to_string(i);
      host.outside = tag + "o" + std::to_string(i);
      host.inside = tag + "i" + std::to_string(i);
      const std::string net =
          "198." + std::to_string(second) + "." + std::to_string(third_base + static_cast<unsigned>(i)) + ".";
      host.address = net + "2";
      const CommandResult made = run_command({"ip", "netns", "add", host.netns});
      if (!made.ok()) {
        GTEST_SKIP() << "cannot create a network namespace (root or CAP_NET_ADMIN is needed): " << made.output;
      }
      hosts_.push_back(std::move(host));
      const TestHost& h = hosts_.back();
      for (const std::vector<std::string>& step : std::vector<std::vector<std::string>>{
               {"ip", "link", "add", h.outside, "type", "veth", "peer", "name", h.inside},
               {"ip", "link", "set", h.inside, "netns", h.netns},
               {"ip", "addr", "add", net + "1/24", "dev", h.outside},
               {"ip", "link", "set", h.outside, "up"},
               {"ip", "-n", h.netns, "addr", "add", h.address + "/24", "dev", h.inside},
               {"ip", "-n", h.netns, "link", "set", h.inside, "up"},
               {"ip", "-n", h.netns, "link", "set", "lo", "up"}}) {
        const CommandResult done = run_command(step);
        if (!done.ok()) {
          GTEST_SKIP() << "cannot set up the test hosts' network: " << describe(step, done);
        }
      }
    }
    if (needs_netem()) {
      // Checked before any server starts: where the kernel lacks sch_netem, skip at once.
      const std::vector<std::string> probe{"tc", "qdisc", "add", "dev", hosts_[0].outside, "root", "netem"};
      const CommandResult added = run_command(probe);
      if (!added.ok()) {
        GTEST_SKIP() << "tc netem is not available here (the kernel's sch_netem module): " << describe(probe, added);
      }
      (void)run_command({"tc", "qdisc", "del", "dev", hosts_[0].outside, "root"});
    }
    for (TestHost& host : hosts_) {
      host.server = std::make_unique<ServerProcess>(host.netns, host.address);
    }
    // Reconnect attempts a fraction of a second apart, so that the client is back soon after the
    // link (gRPC's default backoff starts at 1 s and grows to 2 min). gRPC also takes the minimum
    // as each connection attempt's timeout, which must leave an instrumented server time to answer.
    rx::ClientOptions options;
    options.channel_arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    options.channel_arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5000);
    options.channel_arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    client_.emplace(loop_, std::move(options));
    loop_thread_ = std::thread([this] { context_.run(); });
  }

  // "198.X.Y." of the first /24 of block `block` (of 128 blocks of 4 /24s).
  static std::string block_prefix(unsigned block) {
    return std::string("198.")
        .append(std::to_string(18 + block / 64))
        .append(".")
        .append(std::to_string(block % 64 * 4))
        .append(".");
  }

  // Whether the test needs `tc netem` (SetUp skips it where netem is missing).
  [[nodiscard]] virtual bool needs_netem() const { return false; }

  void TearDown() override {
    client_.reset();
    work_.reset();
    if (loop_thread_.joinable()) {
      loop_thread_.join();
    }
    hosts_servers_stop();
    for (const TestHost& host : hosts_) {
      // Deleting the namespace deletes the veth end inside it, which deletes its peer.
      const CommandResult removed = run_command({"ip", "netns", "del", host.netns});
      EXPECT_TRUE(removed.ok()) << removed.output;
      (void)run_command({"ip", "link", "del", host.outside});  // gone already, normally
    }
  }

  void hosts_servers_stop() {
    for (TestHost& host : hosts_) {
      host.server.reset();
    }
  }

  // Sends to every endpoint of every host at once; the results by host.
  std::vector<std::vector<rx::FanOutResult>> fan_out_to_all(rx::SendOptions send) {
    std::vector<rx::FanOutRequest> requests;
    for (int h = 0; h < HOSTS; ++h) {
      for (int e = 0; e < ENDPOINTS_PER_HOST; ++e) {
        rx::FanOutRequest request;
        request.target = hosts_[static_cast<std::size_t>(h)].target();
        request.key = rx::TaskInstanceKey{"dag", std::string("e").append(std::to_string(e)), "run", -1};
        request.payload = json::object{{"host", h}, {"endpoint", e}};
        requests.push_back(std::move(request));
      }
    }
    rx::FanOutOptions options;
    options.send = send;
    // use_future: an error (there is none without a cancel) would throw out of get().
    std::vector<rx::FanOutResult> results = rx_test::wait_for(
        rx::fan_out(*client_, std::move(requests), options, asio::use_future), "the fan-out's results");
    std::vector<std::vector<rx::FanOutResult>> by_host(HOSTS);
    for (rx::FanOutResult& result : results) {
      by_host[result.index / ENDPOINTS_PER_HOST].push_back(std::move(result));
    }
    return by_host;
  }

  // Every endpoint of host `h` answered with its echo.
  static void expect_answered(const std::vector<rx::FanOutResult>& results, int h, const std::string& when) {
    ASSERT_EQ(results.size(), std::size_t{ENDPOINTS_PER_HOST});
    for (const rx::FanOutResult& result : results) {
      ASSERT_TRUE(result.status.ok()) << when << ": host " << h << " request " << result.index << ": "
                                      << result.status.error_code() << " " << result.status.error_message();
      const json::object expected{{"host", h}, {"endpoint", static_cast<int>(result.index % ENDPOINTS_PER_HOST)}};
      EXPECT_EQ(result.reply, expected);
    }
  }

  // Every send to host `h` failed as a host out of reach makes it fail, and no other way.
  static void expect_unreachable(const std::vector<rx::FanOutResult>& results, const std::string& when) {
    ASSERT_EQ(results.size(), std::size_t{ENDPOINTS_PER_HOST});
    std::map<grpc::StatusCode, int> codes;
    for (const rx::FanOutResult& result : results) {
      ++codes[result.status.error_code()];
      EXPECT_TRUE(result.status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                  result.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
          << when << ": request " << result.index << " ended with " << result.status.error_code() << " "
          << result.status.error_message();
    }
    std::string summary;
    for (const auto& [code, count] : codes) {
      summary.append(std::to_string(code)).append(" x").append(std::to_string(count)).append(" ");
    }
    std::cout << when << ": the cut host's sends ended with (code x count) " << summary << "\n";
  }

  void set_link(const TestHost& host, const char* state) {
    const std::vector<std::string> step{"ip", "link", "set", host.outside, state};
    const CommandResult done = run_command(step);
    ASSERT_TRUE(done.ok()) << describe(step, done);
  }

  // After a fault is gone: every host answers again. The sends wait for their channel to
  // reconnect (wait_for_ready), within a deadline far above gRPC's reconnect backoff.
  void expect_reconnected(const std::string& when) {
    rx::SendOptions send;
    send.timeout = std::chrono::milliseconds(rx_test::DEFAULT_DEADLINE);
    send.wait_for_ready = true;
    const auto results = fan_out_to_all(send);
    for (int h = 0; h < HOSTS; ++h) {
      expect_answered(results[static_cast<std::size_t>(h)], h, when);
    }
  }

  // The deadline of the sends made while a host is out of reach: they end by it, and the other
  // hosts' answer well within it (also under ThreadSanitizer on a loaded host).
  static rx::SendOptions fault_sends() {
    rx::SendOptions send;
    send.timeout = 4000ms;
    return send;
  }

  // The first sends, which connect to every host (waiting for the connection, however long an
  // instrumented server takes to answer it).
  static rx::SendOptions first_sends() {
    rx::SendOptions send;
    send.timeout = std::chrono::milliseconds(rx_test::DEFAULT_DEADLINE);
    send.wait_for_ready = true;
    return send;
  }

  asio::io_context context_;
  rx::Loop loop_{context_};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{context_.get_executor()};
  std::thread loop_thread_;
  std::optional<rx::Client> client_;
  std::vector<TestHost> hosts_;
};

TEST_F(AcrossHosts, CutLinkFailsOnlyThatHostsSendsAndTheClientReconnectsWhenItReturns) {
  const auto before = fan_out_to_all(first_sends());
  for (int h = 0; h < HOSTS; ++h) {
    expect_answered(before[static_cast<std::size_t>(h)], h, "before the cut");
  }

  set_link(hosts_[0], "down");
  const auto during = fan_out_to_all(fault_sends());
  expect_unreachable(during[0], "link down");
  for (int h = 1; h < HOSTS; ++h) {
    expect_answered(during[static_cast<std::size_t>(h)], h, "while host 0 is cut off");
  }

  set_link(hosts_[0], "up");
  expect_reconnected("after the link returned");
}

class AcrossHostsNetem : public AcrossHosts {
 protected:
  [[nodiscard]] bool needs_netem() const override { return true; }
};

TEST_F(AcrossHostsNetem, DelayAndLossFailOnlyThatHostsSendsAndTheClientRecoversWhenTheyEnd) {
  const auto before = fan_out_to_all(first_sends());
  for (int h = 0; h < HOSTS; ++h) {
    expect_answered(before[static_cast<std::size_t>(h)], h, "before delay and loss");
  }
  // Each packet to host 0 takes longer than a send's whole deadline, and a quarter are lost.
  const std::vector<std::string> netem{"tc",    "qdisc",  "add",  "dev", hosts_[0].outside, "root", "netem",
                                       "delay", "5000ms", "loss", "25%"};
  const CommandResult added = run_command(netem);
  ASSERT_TRUE(added.ok()) << describe(netem, added);
  const auto during = fan_out_to_all(fault_sends());
  expect_unreachable(during[0], "delay and loss");
  for (int h = 1; h < HOSTS; ++h) {
    expect_answered(during[static_cast<std::size_t>(h)], h, "while host 0's link is slow and lossy");
  }

  const std::vector<std::string> restore{"tc", "qdisc", "del", "dev", hosts_[0].outside, "root"};
  const CommandResult removed = run_command(restore);
  ASSERT_TRUE(removed.ok()) << describe(restore, removed);
  expect_reconnected("after delay and loss ended");
}

}  // namespace

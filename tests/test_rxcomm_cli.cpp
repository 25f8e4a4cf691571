// The rxcomm command line, driven as users drive it: the built binary run as a subprocess, a
// `serve` process on a free loopback port and client commands talking to it (docs/cli.md).
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef RXCOMM_BINARY
#error "RXCOMM_BINARY must name the rxcomm executable ($<TARGET_FILE:rxcomm>)"
#endif

extern char** environ;

namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

// Every wait on a child is bounded by this: a hang fails the test instead of blocking CTest.
constexpr auto HANG_GUARD = 30s;
constexpr int EXIT_USAGE = 2;
constexpr int STATUS_OFFSET = 64;

struct Outcome {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string out;
  std::string err;
};

// One rxcomm process with its stdin, stdout and stderr on pipes.
class Process {
 public:
  // `launcher`: a command that runs rxcomm (e.g. {"unshare", "-rn"}), looked up on PATH.
  explicit Process(const std::vector<std::string>& args, const std::optional<std::string>& input = std::nullopt,
                   const std::vector<std::string>& launcher = {}) {
    std::array<int, 2> in{};
    std::array<int, 2> out{};
    std::array<int, 2> err{};
    if (pipe2(in.data(), O_CLOEXEC) != 0 || pipe2(out.data(), O_CLOEXEC) != 0 || pipe2(err.data(), O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
    std::vector<std::string> all(launcher);
    all.emplace_back(RXCOMM_BINARY);
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& arg : all) {
      argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    const int spawned = posix_spawnp(&pid_, all.front().c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    out_ = out[0];
    err_ = err[0];
    if (spawned != 0) {
      close(in[1]);
      throw std::runtime_error("cannot start " + std::string(RXCOMM_BINARY));
    }
    if (input) {
      // Small inputs only: they fit the pipe's buffer, so this cannot block on the child.
      const ssize_t written = write(in[1], input->data(), input->size());
      EXPECT_EQ(written, static_cast<ssize_t>(input->size()));
    }
    close(in[1]);  // EOF: a command reading stdin sees the end of its input
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    close(out_);
    close(err_);
  }

  // The next line of stdout, without its newline; throws if none comes within HANG_GUARD.
  std::string read_line() {
    const auto deadline = std::chrono::steady_clock::now() + HANG_GUARD;
    for (;;) {
      if (const auto end = out_buffer_.find('\n'); end != std::string::npos) {
        std::string line = out_buffer_.substr(0, end);
        out_buffer_.erase(0, end + 1);
        return line;
      }
      if (!pump(deadline)) {
        throw std::runtime_error("no line on stdout; stderr: " + err_buffer_);
      }
    }
  }

  void signal(int number) const { ::kill(pid_, number); }

  // Waits for the process to exit (reading what it writes meanwhile) and returns how it ended.
  Outcome wait() {
    const auto deadline = std::chrono::steady_clock::now() + HANG_GUARD;
    while (pump(deadline)) {
    }
    Outcome outcome;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        pid_ = -1;
        break;
      }
      poll(nullptr, 0, 10);
    }
    if (pid_ > 0) {
      throw std::runtime_error("rxcomm did not exit within the hang guard; stderr: " + err_buffer_);
    }
    outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    outcome.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    outcome.out = std::move(out_buffer_);
    outcome.err = std::move(err_buffer_);
    return outcome;
  }

 private:
  // Reads what is available on stdout and stderr; false once both are closed or at `deadline`.
  bool pump(std::chrono::steady_clock::time_point deadline) {
    std::array<pollfd, 2> fds{{{out_open_ ? out_ : -1, POLLIN, 0}, {err_open_ ? err_ : -1, POLLIN, 0}}};
    if (!out_open_ && !err_open_) {
      return false;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) {
      return false;
    }
    if (poll(fds.data(), fds.size(), static_cast<int>(left.count())) <= 0) {
      return errno == EINTR;
    }
    std::array<char, 4096> chunk{};
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
        continue;
      }
      const ssize_t got = read(fds[i].fd, chunk.data(), chunk.size());
      if (got <= 0) {
        (i == 0 ? out_open_ : err_open_) = false;
      } else {
        (i == 0 ? out_buffer_ : err_buffer_).append(chunk.data(), static_cast<std::size_t>(got));
      }
    }
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int err_ = -1;
  bool out_open_ = true;
  bool err_open_ = true;
  std::string out_buffer_;
  std::string err_buffer_;
};

Outcome run(const std::vector<std::string>& args, const std::optional<std::string>& input = std::nullopt) {
  Process process(args, input);
  return process.wait();
}

// `rxcomm serve ARGS` on a free loopback port; target() is the line it printed.
class Served {
 public:
  explicit Served(std::vector<std::string> args = {}) : process_(with_serve(std::move(args))) {
    target_ = process_.read_line();
  }
  [[nodiscard]] const std::string& target() const { return target_; }
  Process& process() { return process_; }

 private:
  static std::vector<std::string> with_serve(std::vector<std::string> args) {
    args.insert(args.begin(), "serve");
    return args;
  }
  Process process_;
  std::string target_;
};

json::value parse_json(const std::string& text) {
  boost::system::error_code error;
  json::value value = json::parse(text, error);
  EXPECT_FALSE(error) << "not JSON: " << text;
  return value;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) {
    lines.push_back(line);
  }
  return lines;
}

// A path in the temporary directory unique to this test process (std::string::append: GCC 12
// warns falsely, -Wrestrict, on chains of `+` with std::to_string).
std::filesystem::path temp_path(const char* suffix) {
  std::string name = "rxcomm_cli_";
  name.append(std::to_string(getpid())).append(suffix);
  return std::filesystem::temp_directory_path() / name;
}

std::string grpcurl_report(const std::string& code, const std::string& message) {
  return "ERROR:\n  Code: " + code + "\n  Message: " + message + "\n";
}

// ---- help and usage ----------------------------------------------------------------------------

TEST(RxcommCli, HelpWorksForTheToolAndEverySubcommand) {
  const Outcome root = run({"--help"});
  EXPECT_EQ(root.exit_code, 0) << root.err;
  const Outcome version = run({"--version"});
  EXPECT_EQ(version.exit_code, 0) << version.err;
  EXPECT_TRUE(version.out.starts_with("rxcomm ")) << version.out;
  for (const char* command : {"serve", "send", "pull", "watch", "health", "bench", "list", "stats"}) {
    EXPECT_NE(root.out.find(command), std::string::npos) << command << " missing from rxcomm --help";
    const Outcome help = run({command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command << ": " << help.err;
    EXPECT_NE(help.out.find(std::string("Usage: rxcomm ") + command), std::string::npos) << help.out;
  }
}

TEST(RxcommCli, UsageErrorsExitWithTwoAndSayWhy) {
  const Outcome none = run({});
  EXPECT_EQ(none.exit_code, EXIT_USAGE);
  const Outcome unknown_option = run({"send", "--target", "127.0.0.1:1", "--task", "t", "--no-such-option"});
  EXPECT_EQ(unknown_option.exit_code, EXIT_USAGE);
  EXPECT_NE(unknown_option.err.find("--no-such-option"), std::string::npos) << unknown_option.err;
  const Outcome no_task = run({"send", "--target", "127.0.0.1:1", "{}"});
  EXPECT_EQ(no_task.exit_code, EXIT_USAGE);
  EXPECT_NE(no_task.err.find("--task"), std::string::npos) << no_task.err;
  const Outcome bad_transport = run({"bench", "--target", "127.0.0.1:1", "--transport", "carrier-pigeon"});
  EXPECT_EQ(bad_transport.exit_code, EXIT_USAGE);
}

// ---- serve and send --------------------------------------------------------------------------------

TEST(RxcommCli, ServeAndSendRoundTripAcrossTwoProcesses) {
  Served served({"--endpoints", "3"});
  ASSERT_TRUE(served.target().starts_with("127.0.0.1:")) << served.target();
  const std::string payload = R"({"greeting":"hello","nested":{"list":[1,2.5,null,true]},"n":-7})";
  const Outcome sent = run({"send", "--target", served.target(), "--task", "echo-2", payload});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  EXPECT_EQ(parse_json(sent.out), parse_json(payload));
  EXPECT_EQ(lines_of(sent.out).size(), 1U) << "one JSON line on stdout";
  // Same through an Exchange stream.
  const Outcome exchanged = run({"send", "--exchange", "-t", served.target(), "--task", "echo-0", payload});
  ASSERT_EQ(exchanged.exit_code, 0) << exchanged.err;
  EXPECT_EQ(parse_json(exchanged.out), parse_json(payload));
}

TEST(RxcommCli, SendReadsThePayloadFromStdinAndFromAFile) {
  Served served;
  const Outcome from_stdin = run({"send", "-t", served.target(), "--task", "echo-0", "-"}, R"({"from":"stdin"})");
  ASSERT_EQ(from_stdin.exit_code, 0) << from_stdin.err;
  EXPECT_EQ(parse_json(from_stdin.out), parse_json(R"({"from":"stdin"})"));

  const auto file = temp_path(".json");
  std::ofstream(file) << R"({"from": "file", "n": [1, 2, 3]})";
  std::string at_path = "@";
  at_path.append(file.string());
  const Outcome at_file = run({"send", "-t", served.target(), "--task", "echo-0", at_path});
  ASSERT_EQ(at_file.exit_code, 0) << at_file.err;
  EXPECT_EQ(parse_json(at_file.out), parse_json(R"({"from":"file","n":[1,2,3]})"));
  const Outcome file_option = run({"send", "-t", served.target(), "--task", "echo-0", "--file", file.string()});
  ASSERT_EQ(file_option.exit_code, 0) << file_option.err;
  EXPECT_EQ(parse_json(file_option.out), parse_json(R"({"from":"file","n":[1,2,3]})"));
  std::filesystem::remove(file);

  const Outcome missing = run({"send", "-t", served.target(), "--task", "echo-0", "@/nonexistent/payload.json"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("/nonexistent/payload.json"), std::string::npos) << missing.err;
}

TEST(RxcommCli, APayloadThatIsNoJsonObjectFailsBeforeAnyCall) {
  Served served;
  for (const char* payload : {"[1, 2]", "{\"unterminated\": ", "42"}) {
    const Outcome sent = run({"send", "-t", served.target(), "--task", "echo-0", payload});
    EXPECT_EQ(sent.exit_code, 1) << payload;
    EXPECT_TRUE(sent.out.empty()) << sent.out;
    EXPECT_NE(sent.err.find("payload"), std::string::npos) << sent.err;
  }
  // Nothing reached the endpoint: its reply was never recorded.
  const Outcome pulled = run({"pull", "-t", served.target(), "--task", "echo-0"});
  EXPECT_EQ(pulled.exit_code, STATUS_OFFSET + 5) << pulled.out;
}

// ---- errors, as grpcurl reports them -----------------------------------------------------------------

TEST(RxcommCli, AFailingEndpointExitsWith64PlusItsCodeAndTheGrpcurlReport) {
  Served served({"--fail-endpoints", "1", "--fail-message", "no disk left"});
  const Outcome internal = run({"send", "-t", served.target(), "--task", "fail-0", "{}"});
  EXPECT_EQ(internal.exit_code, STATUS_OFFSET + 13);
  EXPECT_EQ(internal.err, grpcurl_report("Internal", "no disk left"));
  EXPECT_TRUE(internal.out.empty());

  Served precondition({"--fail-endpoints", "1", "--fail-code", "FAILED_PRECONDITION", "--fail-message", "not yet"});
  const Outcome failed = run({"send", "-t", precondition.target(), "--task", "fail-0", "{}"});
  EXPECT_EQ(failed.exit_code, STATUS_OFFSET + 9);
  EXPECT_EQ(failed.err, grpcurl_report("FailedPrecondition", "not yet"));
}

TEST(RxcommCli, ATaskThatThrowsIsInternalWithTheExceptionsTextAndServesOn) {
  Served served({"--fail-endpoints", "1", "--fail-throw", "--fail-message", "disk on fire"});
  for (int round = 0; round < 2; ++round) {  // the endpoint survives its task's exception
    const Outcome sent = run({"send", "-t", served.target(), "--task", "fail-0", "{}"});
    EXPECT_EQ(sent.exit_code, STATUS_OFFSET + 13);
    EXPECT_TRUE(sent.err.starts_with("ERROR:\n  Code: Internal\n  Message: ")) << sent.err;
    EXPECT_NE(sent.err.find("disk on fire"), std::string::npos) << sent.err;
  }
  served.process().signal(SIGTERM);
  EXPECT_EQ(served.process().wait().exit_code, 0);
}

TEST(RxcommCli, AnUnknownEndpointIsNotFound) {
  Served served;
  const Outcome sent = run({"send", "-t", served.target(), "--task", "no-such-task", "{}"});
  EXPECT_EQ(sent.exit_code, STATUS_OFFSET + 5);
  EXPECT_TRUE(sent.err.starts_with("ERROR:\n  Code: NotFound\n  Message: ")) << sent.err;
  EXPECT_NE(sent.err.find("no-such-task"), std::string::npos) << sent.err;
}

TEST(RxcommCli, APassedDeadlineIsDeadlineExceeded) {
  Served served({"--sleep-endpoints", "1", "--sleep-ms", "600000"});
  const Outcome sent = run({"send", "-t", served.target(), "--task", "sleep-0", "--timeout", "0.2", "{}"});
  EXPECT_EQ(sent.exit_code, STATUS_OFFSET + 4);
  EXPECT_TRUE(sent.err.starts_with("ERROR:\n  Code: DeadlineExceeded\n")) << sent.err;
  // The abandoned sleep does not hold the server up: it stops on SIGTERM, cleanly.
  served.process().signal(SIGTERM);
  EXPECT_EQ(served.process().wait().exit_code, 0);
}

TEST(RxcommCli, AServerThatIsGoneIsUnavailable) {
  std::string target;
  {
    Served served;
    target = served.target();
    served.process().signal(SIGTERM);
    ASSERT_EQ(served.process().wait().exit_code, 0);
  }
  const Outcome sent = run({"send", "-t", target, "--task", "echo-0", "{}"});
  EXPECT_EQ(sent.exit_code, STATUS_OFFSET + 14);
  EXPECT_TRUE(sent.err.starts_with("ERROR:\n  Code: Unavailable\n")) << sent.err;
}

// ---- XComs: pull and watch ---------------------------------------------------------------------------

TEST(RxcommCli, PullReturnsTheReplyAndTheXComTheEchoPushed) {
  Served served({"--endpoints", "2"});
  ASSERT_EQ(run({"send", "-t", served.target(), "--task", "echo-1", R"({"v":7})"}).exit_code, 0);
  const Outcome reply = run({"pull", "-t", served.target(), "--task", "echo-1"});
  ASSERT_EQ(reply.exit_code, 0) << reply.err;
  EXPECT_EQ(parse_json(reply.out), parse_json(R"({"v":7})"));
  const Outcome served_count = run({"pull", "-t", served.target(), "--task", "echo-1", "--key", "served"});
  ASSERT_EQ(served_count.exit_code, 0) << served_count.err;
  EXPECT_EQ(parse_json(served_count.out), json::value(1));
  const Outcome meta = run({"pull", "-t", served.target(), "--task", "echo-1", "--key", "served", "--with-meta"});
  ASSERT_EQ(meta.exit_code, 0) << meta.err;
  const json::value record = parse_json(meta.out);
  EXPECT_EQ(record.at("task_id"), "echo-1");
  EXPECT_EQ(record.at("key"), "served");
  EXPECT_EQ(record.at("attempt"), 1);

  // The other endpoint was never called: not found at once without --wait.
  const Outcome missing = run({"pull", "-t", served.target(), "--task", "echo-0"});
  EXPECT_EQ(missing.exit_code, STATUS_OFFSET + 5);
  EXPECT_TRUE(missing.err.starts_with("ERROR:\n  Code: NotFound\n")) << missing.err;
}

// ---- list and stats ----------------------------------------------------------------------------------

TEST(RxcommCli, ListPrintsEveryEndpointAcrossPagesWithItsState) {
  Served served({"--endpoints", "5"});
  ASSERT_EQ(run({"send", "-t", served.target(), "--task", "echo-3", R"({"v":1})"}).exit_code, 0);
  // Pages of two: the tool follows next_page_token until the last page.
  const Outcome all = run({"list", "-t", served.target(), "--page-size", "2"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  const std::vector<std::string> lines = lines_of(all.out);
  std::vector<std::string> echoes;
  for (const std::string& line : lines) {
    const json::value record = parse_json(line);
    const std::string task(record.at("task_id").as_string());
    if (task.starts_with("echo-")) {
      echoes.push_back(task);
      EXPECT_EQ(record.at("state"), task == "echo-3" ? "success" : "idle") << line;
      EXPECT_EQ(record.at("queued_requests"), 0) << line;
      EXPECT_EQ(record.at("holding_request"), false) << line;
    }
  }
  EXPECT_EQ(echoes, (std::vector<std::string>{"echo-0", "echo-1", "echo-2", "echo-3", "echo-4"})) << all.out;

  const Outcome one = run({"list", "-t", served.target(), "--task", "echo-3"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(lines_of(one.out).size(), 1U) << one.out;
  EXPECT_EQ(parse_json(one.out).at("task_id"), "echo-3");
  const Outcome limited = run({"list", "-t", served.target(), "--page-size", "2", "--limit", "3"});
  ASSERT_EQ(limited.exit_code, 0) << limited.err;
  EXPECT_EQ(lines_of(limited.out).size(), 3U) << limited.out;
  const Outcome none = run({"list", "-t", served.target(), "--dag", "no-such-dag"});
  ASSERT_EQ(none.exit_code, 0) << none.err;
  EXPECT_TRUE(none.out.empty()) << none.out;
}

TEST(RxcommCli, StatsCountsWhatTheServerServedAsTextPrometheusAndJson) {
  Served served({"--endpoints", "2"});
  ASSERT_EQ(run({"send", "-t", served.target(), "--task", "echo-0", R"({"v":1})"}).exit_code, 0);
  ASSERT_EQ(run({"send", "-t", served.target(), "--task", "echo-1", R"({"v":2})"}).exit_code, 0);
  EXPECT_EQ(run({"send", "-t", served.target(), "--task", "no-such-task", "{}"}).exit_code, STATUS_OFFSET + 5);

  const Outcome as_json = run({"stats", "-t", served.target(), "--format", "json"});
  ASSERT_EQ(as_json.exit_code, 0) << as_json.err;
  const json::value stats = parse_json(as_json.out);
  const json::value& send = stats.at("methods").at("Send");
  EXPECT_EQ(send.at("requests"), 3) << as_json.out;
  EXPECT_EQ(send.at("errors"), 1) << as_json.out;
  EXPECT_EQ(send.at("by_code").at("OK"), 2) << as_json.out;
  EXPECT_EQ(send.at("by_code").at("NOT_FOUND"), 1) << as_json.out;
  EXPECT_GT(send.at("latency_us").at("p50").to_number<double>(), 0) << as_json.out;
  EXPECT_GE(stats.at("endpoints").to_number<std::int64_t>(), 2) << as_json.out;

  const Outcome prometheus = run({"stats", "-t", served.target(), "--format", "prometheus"});
  ASSERT_EQ(prometheus.exit_code, 0) << prometheus.err;
  EXPECT_NE(prometheus.out.find("# TYPE remote_xcomm_"), std::string::npos) << prometheus.out;
  EXPECT_NE(prometheus.out.find(R"(method="Send")"), std::string::npos) << prometheus.out;
  EXPECT_NE(prometheus.out.find(R"(code="NOT_FOUND")"), std::string::npos) << prometheus.out;

  const Outcome text = run({"stats", "-t", served.target()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("Send"), std::string::npos) << text.out;

  const Outcome bad_format = run({"stats", "-t", served.target(), "--format", "xml"});
  EXPECT_EQ(bad_format.exit_code, EXIT_USAGE);
}

TEST(RxcommCli, AWaitingPullGetsWhatAnotherProcessCausesLater) {
  Served served;
  Process pull({"pull", "-t", served.target(), "--task", "echo-0", "--wait", "--timeout", "30"});
  ASSERT_EQ(run({"send", "-t", served.target(), "--task", "echo-0", R"({"late":true})"}).exit_code, 0);
  const Outcome pulled = pull.wait();
  ASSERT_EQ(pulled.exit_code, 0) << pulled.err;
  EXPECT_EQ(parse_json(pulled.out), parse_json(R"({"late":true})"));
  // A wait that nothing ends runs into its deadline.
  const Outcome never =
      run({"pull", "-t", served.target(), "--task", "echo-0", "--key", "never", "--wait", "--timeout", "0.2"});
  EXPECT_EQ(never.exit_code, STATUS_OFFSET + 4) << never.err;
}

TEST(RxcommCli, WatchPrintsEventsAsJsonLinesAndStopsAtCountOrSigint) {
  Served served;
  ASSERT_EQ(run({"send", "-t", served.target(), "--task", "echo-0", R"({"w":1})"}).exit_code, 0);
  // running, the XCom "served", return_value, success: four events of one request.
  const Outcome watched = run({"watch", "-t", served.target(), "--task", "echo-0", "--from-start", "--count", "4"});
  ASSERT_EQ(watched.exit_code, 0) << watched.err;
  const auto lines = lines_of(watched.out);
  ASSERT_EQ(lines.size(), 4U) << watched.out;
  bool saw_return_value = false;
  bool saw_success = false;
  std::int64_t last_sequence = 0;
  for (const auto& line : lines) {
    const json::value event = parse_json(line);
    ASSERT_TRUE(event.is_object()) << line;
    EXPECT_EQ(event.at("task_id"), "echo-0");
    EXPECT_GT(event.at("sequence").to_number<std::int64_t>(), last_sequence) << "in sequence order";
    last_sequence = event.at("sequence").to_number<std::int64_t>();
    if (event.at("kind") == "xcom" && event.at("key") == "return_value") {
      saw_return_value = true;
      EXPECT_EQ(event.at("value"), parse_json(R"({"w":1})"));
    }
    saw_success = saw_success || (event.at("kind") == "state" && event.at("state") == "success");
  }
  EXPECT_TRUE(saw_return_value) << watched.out;
  EXPECT_TRUE(saw_success) << watched.out;

  // Without --count it follows until Ctrl-C, which is a clean end (exit 0). The first line shows
  // the watch is running (and its signal handler set) before the signal is sent.
  Process follow({"watch", "-t", served.target(), "--from-start"});
  EXPECT_NE(follow.read_line().find("\"sequence\""), std::string::npos);
  follow.signal(SIGINT);
  const Outcome stopped = follow.wait();
  EXPECT_EQ(stopped.exit_code, 0) << stopped.err;
}

// ---- health ------------------------------------------------------------------------------------------

TEST(RxcommCli, HealthAsksTheStandardHealthService) {
  Served served;
  // Health checking is on by default (ServerOptions::health_check_service).
  const Outcome health = run({"health", "-t", served.target(), "--timeout", "10"});
  ASSERT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(parse_json(health.out), parse_json(R"({"status":"SERVING"})"));
}

// The client side on its own, against gRPC's own implementation of the health service (the
// default one of grpc::Server, in this test process): the hand-encoded messages must match it.
TEST(RxcommCli, HealthSpeaksTheStandardProtocolToAnyGrpcServer) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  // Answers everything with UNIMPLEMENTED; it makes this a callback-API server, which gRPC's
  // default health service (a callback service in 1.51) needs to run without a completion queue.
  grpc::CallbackGenericService generic;
  builder.RegisterCallbackGenericService(&generic);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  ASSERT_NE(health, nullptr);
  health->SetServingStatus("svc.Up", true);
  health->SetServingStatus("svc.Down", false);
  std::string target = "127.0.0.1:";
  target.append(std::to_string(port));

  const Outcome whole = run({"health", "-t", target});
  EXPECT_EQ(whole.exit_code, 0) << whole.err;
  EXPECT_EQ(parse_json(whole.out), parse_json(R"({"status":"SERVING"})"));
  const Outcome up = run({"health", "-t", target, "--service", "svc.Up"});
  EXPECT_EQ(up.exit_code, 0) << up.err;
  EXPECT_EQ(parse_json(up.out), parse_json(R"({"status":"SERVING"})"));
  const Outcome down = run({"health", "-t", target, "--service", "svc.Down"});
  EXPECT_EQ(down.exit_code, 1) << down.err;
  EXPECT_EQ(parse_json(down.out), parse_json(R"({"status":"NOT_SERVING"})"));
  // gRPC's service answers NOT_FOUND for a service it was never told of.
  const Outcome unknown = run({"health", "-t", target, "--service", "svc.Unknown"});
  EXPECT_EQ(unknown.exit_code, STATUS_OFFSET + 5) << unknown.err;
  EXPECT_TRUE(unknown.err.starts_with("ERROR:\n  Code: NotFound\n")) << unknown.err;
  health->SetServingStatus(false);  // every service, the whole server included
  const Outcome stopping = run({"health", "-t", target});
  EXPECT_EQ(stopping.exit_code, 1) << stopping.err;
  EXPECT_EQ(parse_json(stopping.out), parse_json(R"({"status":"NOT_SERVING"})"));
  server->Shutdown(std::chrono::system_clock::now() + HANG_GUARD);
}

TEST(RxcommCli, HealthOfAServerThatIsGoneIsUnavailable) {
  std::string target;
  {
    Served served;
    target = served.target();
  }  // killed
  const Outcome health = run({"health", "-t", target});
  EXPECT_EQ(health.exit_code, STATUS_OFFSET + 14) << health.err;
}

// ---- bench -------------------------------------------------------------------------------------------

void expect_clean_bench(const std::string& target, const std::string& transport) {
  const Outcome bench = run({"bench", "-t", target, "--duration", "0.5", "--concurrency", "4", "--fan-out", "3",
                             "--payload-bytes", "100", "--transport", transport, "--json"});
  ASSERT_EQ(bench.exit_code, 0) << bench.err << bench.out;
  EXPECT_TRUE(bench.err.empty()) << "no progress line when stderr is not a terminal: " << bench.err;
  ASSERT_EQ(lines_of(bench.out).size(), 1U) << bench.out;
  const json::value report = parse_json(bench.out);
  const auto requests = report.at("requests").to_number<std::int64_t>();
  EXPECT_GT(requests, 0);
  EXPECT_EQ(report.at("ok").to_number<std::int64_t>(), requests);
  EXPECT_EQ(report.at("errors").to_number<std::int64_t>(), 0);
  EXPECT_TRUE(report.at("errors_by_status").as_object().empty());
  EXPECT_EQ(report.at("transport").as_string(), transport);
  const auto& latency = report.at("latency_us");
  EXPECT_LE(latency.at("min").to_number<std::int64_t>(), latency.at("p50").to_number<std::int64_t>());
  EXPECT_LE(latency.at("p50").to_number<std::int64_t>(), latency.at("p90").to_number<std::int64_t>());
  EXPECT_LE(latency.at("p90").to_number<std::int64_t>(), latency.at("p99").to_number<std::int64_t>());
  EXPECT_LE(latency.at("p99").to_number<std::int64_t>(), latency.at("p99.9").to_number<std::int64_t>());
  EXPECT_LE(latency.at("p99.9").to_number<std::int64_t>(), latency.at("max").to_number<std::int64_t>());
  std::int64_t in_histogram = 0;
  for (const auto& bucket : report.at("histogram").as_array()) {
    in_histogram += bucket.at("count").to_number<std::int64_t>();
  }
  EXPECT_EQ(in_histogram, requests) << "every call in one bucket";
}

TEST(RxcommCli, BenchJsonReportsCallsWithoutErrorsOverUnaryAndExchange) {
  Served served({"--endpoints", "3"});
  expect_clean_bench(served.target(), "unary");
  expect_clean_bench(served.target(), "exchange");
  // The echo endpoints really were called, all three.
  for (const char* task : {"echo-0", "echo-1", "echo-2"}) {
    EXPECT_EQ(run({"pull", "-t", served.target(), "--task", task, "--key", "served"}).exit_code, 0) << task;
  }
}

TEST(RxcommCli, BenchCountsErrorsByStatusAndExitsNonZero) {
  Served served({"--fail-endpoints", "2", "--fail-code", "ResourceExhausted", "--fail-message", "full"});
  const Outcome bench = run({"bench", "-t", served.target(), "--task-prefix", "fail-", "--fan-out", "2", "--duration",
                             "0.3", "--concurrency", "2", "--json"});
  EXPECT_EQ(bench.exit_code, 1) << bench.err;
  const json::value report = parse_json(bench.out);
  EXPECT_EQ(report.at("ok").to_number<std::int64_t>(), 0);
  const auto errors = report.at("errors").to_number<std::int64_t>();
  EXPECT_GT(errors, 0);
  const auto& by_status = report.at("errors_by_status").at("ResourceExhausted");
  EXPECT_EQ(by_status.at("count").to_number<std::int64_t>(), errors);
  EXPECT_EQ(by_status.at("first_message"), "full");
}

// ---- serve's life --------------------------------------------------------------------------------------

TEST(RxcommCli, ServeExitsCleanlyOnSigtermAndSigint) {
  for (const int signal_number : {SIGTERM, SIGINT}) {
    Served served({"--endpoints", "4", "--sleep-endpoints", "1", "--fail-endpoints", "1"});
    ASSERT_EQ(run({"send", "-t", served.target(), "--task", "echo-3", "{}"}).exit_code, 0);
    served.process().signal(signal_number);
    const Outcome stopped = served.process().wait();
    EXPECT_EQ(stopped.exit_code, 0) << "signal " << signal_number << ": " << stopped.err;
    EXPECT_EQ(stopped.signal, 0);
    EXPECT_TRUE(stopped.out.empty()) << "stdout holds the one line with the target only: " << stopped.out;
  }
}

TEST(RxcommCli, LogLevelSendsTheLibrarysLinesToStderrWithoutPayloads) {
  // Quiet by default: a refused send leaves nothing on serve's stderr.
  {
    Served quiet;
    EXPECT_EQ(run({"send", "-t", quiet.target(), "--task", "no-such-task", "{}"}).exit_code, STATUS_OFFSET + 5);
    quiet.process().signal(SIGTERM);
    const Outcome stopped = quiet.process().wait();
    EXPECT_EQ(stopped.exit_code, 0) << stopped.err;
    EXPECT_EQ(stopped.err.find("remote_xcomm debug"), std::string::npos) << stopped.err;
  }
  Process serve({"--log-level", "debug", "serve", "--endpoints", "1"});
  const std::string target = serve.read_line();
  const Outcome refused =
      run({"send", "-t", target, "--task", "no-such-task", R"({"secret":"do-not-log-this-payload"})"});
  EXPECT_EQ(refused.exit_code, STATUS_OFFSET + 5) << refused.err;
  ASSERT_EQ(run({"send", "-t", target, "--task", "echo-0", R"({"secret":"nor-this-one"})"}).exit_code, 0);
  serve.signal(SIGTERM);
  const Outcome stopped = serve.wait();
  EXPECT_EQ(stopped.exit_code, 0) << stopped.err;
  EXPECT_NE(stopped.err.find("remote_xcomm debug"), std::string::npos) << stopped.err;
  EXPECT_NE(stopped.err.find("endpoint rxcomm/echo-0/demo[-1] attached"), std::string::npos) << stopped.err;
  EXPECT_NE(stopped.err.find("remote_xcomm info: server listening on"), std::string::npos) << stopped.err;
  EXPECT_EQ(stopped.err.find("do-not-log-this-payload"), std::string::npos) << stopped.err;
  EXPECT_EQ(stopped.err.find("nor-this-one"), std::string::npos) << stopped.err;
  EXPECT_EQ(run({"--log-level", "loud", "list", "-t", target}).exit_code, EXIT_USAGE);
}

TEST(RxcommCli, ServeAndSendOverAUnixDomainSocket) {
  std::string socket = "unix:";
  socket.append(temp_path(".sock").string());
  Served served({"--address", socket});
  EXPECT_EQ(served.target(), socket);
  const Outcome sent = run({"send", "-t", socket, "--task", "echo-0", R"({"over":"uds"})"});
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  EXPECT_EQ(parse_json(sent.out), parse_json(R"({"over":"uds"})"));
}

// ---- security (docs/security.md) -------------------------------------------------------------

// A throw-away CA (tests/helpers/make_test_ca.sh) in a directory of this test process.
class TestCa {
 public:
  TestCa() : dir_(temp_path("_ca")) {
    std::filesystem::create_directories(dir_);
    const std::string command = std::string(MAKE_TEST_CA).append(" ").append(dir_.string());
    if (std::system(command.c_str()) != 0) {
      throw std::runtime_error("make_test_ca.sh failed (is openssl installed?)");
    }
  }
  ~TestCa() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;
  [[nodiscard]] std::string operator[](const char* name) const { return (dir_ / name).string(); }

 private:
  std::filesystem::path dir_;
};

TEST(RxcommCli, MutualTlsServeAcceptsOnlyClientsWithACertificateFromItsCa) {
  const TestCa ca;
  Served served(
      {"-n", "1", "--tls-cert", ca["server.pem"], "--tls-key", ca["server.key"], "--tls-client-ca", ca["ca.pem"]});
  const std::vector<std::string> send{"send", "-t", served.target(), "--task", "echo-0", R"({"a":1})"};
  auto with = [&send](std::vector<std::string> extra) {
    std::vector<std::string> args = send;
    args.insert(args.end(), extra.begin(), extra.end());
    return run(args);
  };
  const Outcome mutual =
      with({"--tls-ca", ca["ca.pem"], "--tls-cert", ca["client.pem"], "--tls-key", ca["client.key"]});
  EXPECT_EQ(mutual.exit_code, 0) << mutual.err;
  EXPECT_EQ(parse_json(mutual.out), parse_json(R"({"a":1})"));
  const Outcome no_certificate = with({"--tls-ca", ca["ca.pem"]});
  EXPECT_EQ(no_certificate.exit_code, STATUS_OFFSET + 14) << no_certificate.err;  // Unavailable
  const Outcome plain = with({});
  EXPECT_EQ(plain.exit_code, STATUS_OFFSET + 14) << plain.err;
  const Outcome other_ca =
      with({"--tls-ca", ca["other_ca.pem"], "--tls-cert", ca["client.pem"], "--tls-key", ca["client.key"]});
  EXPECT_EQ(other_ca.exit_code, STATUS_OFFSET + 14) << other_ca.err;
  const Outcome health = run({"health", "-t", served.target(), "--tls-ca", ca["ca.pem"], "--tls-cert", ca["client.pem"],
                              "--tls-key", ca["client.key"]});
  EXPECT_EQ(health.exit_code, 0) << health.err;
}

TEST(RxcommCli, SchedulerTokenRefusesCallsWithoutItOrWithAnotherToken) {
  Served served({"-n", "1", "--scheduler-token", "cli-secret"});
  const std::vector<std::string> send{"send", "-t", served.target(), "--task", "echo-0", "{}"};
  auto with = [&send](std::vector<std::string> extra) {
    std::vector<std::string> args = send;
    args.insert(args.end(), extra.begin(), extra.end());
    return run(args);
  };
  const Outcome none = with({});
  EXPECT_EQ(none.exit_code, STATUS_OFFSET + 16) << none.err;  // Unauthenticated
  const Outcome wrong = with({"--token", "not-it"});
  EXPECT_EQ(wrong.exit_code, STATUS_OFFSET + 7) << wrong.err;  // PermissionDenied
  const Outcome right = with({"--token", "cli-secret"});
  EXPECT_EQ(right.exit_code, 0) << right.err;
  const Outcome list = run({"list", "-t", served.target(), "--token", "cli-secret"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  const Outcome health = run({"health", "-t", served.target()});  // the health service needs no token
  EXPECT_EQ(health.exit_code, 0) << health.err;
}

// Every interface, in a network namespace of its own (`unshare -rn`: a user and a network
// namespace, only a loopback device that is down), so that nothing outside can reach it.
TEST(RxcommCli, ListeningOnEveryInterfaceWithoutTlsWarns) {
  if (std::system("unshare -rn true >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "cannot create a user and network namespace here (unshare -rn failed): not binding 0.0.0.0";
  }
  Process plain({"--log-level", "warning", "serve", "--host", "0.0.0.0"}, std::nullopt, {"unshare", "-rn"});
  EXPECT_TRUE(plain.read_line().starts_with("0.0.0.0:"));
  plain.signal(SIGTERM);
  const Outcome warned = plain.wait();
  EXPECT_EQ(warned.exit_code, 0) << warned.err;
  EXPECT_NE(warned.err.find("without TLS"), std::string::npos) << warned.err;

  const TestCa ca;
  Process tls({"--log-level", "warning", "serve", "--host", "0.0.0.0", "--tls-cert", ca["server.pem"], "--tls-key",
               ca["server.key"]},
              std::nullopt, {"unshare", "-rn"});
  EXPECT_TRUE(tls.read_line().starts_with("0.0.0.0:"));
  tls.signal(SIGTERM);
  const Outcome quiet = tls.wait();
  EXPECT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err.find("without TLS"), std::string::npos) << quiet.err;

  // Loopback, the default: no warning either.
  Process loopback({"--log-level", "warning", "serve"});
  (void)loopback.read_line();
  loopback.signal(SIGTERM);
  const Outcome local = loopback.wait();
  EXPECT_EQ(local.err.find("without TLS"), std::string::npos) << local.err;
}

}  // namespace

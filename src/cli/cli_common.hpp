// What the rxcomm subcommands share: exit codes, the grpcurl-shaped error report, the options
// that name an endpoint, JSON input, and a loop thread to run the library on.
#pragma once

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/task_instance_key.hpp>

#include <CLI/CLI.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <grpcpp/support/status.h>

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace rxcomm {

/// Exit codes (docs/cli.md): grpcurl's scheme, so that scripts written for it read ours alike.
inline constexpr int EXIT_OK = 0;
/// A failure that is no RPC status: unreadable input, invalid JSON, an address that cannot be
/// bound, a health check answered with something other than SERVING, a bench with failed calls.
inline constexpr int EXIT_FAILURE_LOCAL = 1;
/// A usage error (unknown option, missing argument), reported by CLI11.
inline constexpr int EXIT_USAGE = 2;
/// An RPC that failed exits with this plus its status code (NOT_FOUND: 69, UNAVAILABLE: 78).
inline constexpr int EXIT_STATUS_OFFSET = 64;

/// A subcommand: its CLI11 app and what runs it once it was parsed (returns the exit code).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

/// A failure that ends the command with EXIT_FAILURE_LOCAL and its message on stderr.
struct LocalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// grpcurl's name of a status code ("NotFound", "DeadlineExceeded", "Canceled").
[[nodiscard]] std::string_view code_name(grpc::StatusCode code) noexcept;
/// The status code named `name`: grpcurl's spelling, the proto's ("NOT_FOUND") or a number.
[[nodiscard]] std::optional<grpc::StatusCode> parse_code(std::string_view name) noexcept;

/// Prints `status` as grpcurl does (to stderr) and returns the exit code for it.
int report_status(const grpc::Status& status);

/// The options that name an endpoint (--dag, --task, --run, --map-index), added to `app`.
struct KeyOptions {
  std::string dag_id = "rxcomm";
  std::string task_id;
  std::string run_id = "demo";
  int map_index = -1;

  void add_to(CLI::App& app, bool task_required);
  [[nodiscard]] rx::TaskInstanceKey key() const { return {dag_id, task_id, run_id, map_index}; }
};

/// The connection options every client command has: --target, --timeout, TLS and the token.
struct TargetOptions {
  std::string target;
  /// Seconds; 0: no deadline.
  double timeout_seconds = 30;
  bool wait_for_ready = false;
  // docs/security.md: --tls (system roots), --tls-ca, --tls-cert/--tls-key (mutual TLS), --token.
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string token;

  /// Adds --target, the TLS options and --token, and with `call_options` --timeout and
  /// (`wait_for_ready`) --wait-for-ready.
  void add_to(CLI::App& app, bool call_options = true, bool with_wait_for_ready = true);
  [[nodiscard]] std::optional<std::chrono::milliseconds> timeout() const;
  /// TLS and the token as ClientOptions; throws LocalError when a PEM file cannot be read.
  [[nodiscard]] rx::ClientOptions client_options() const;
};

/// ISO 8601 UTC with milliseconds: "2026-12-03T13:45:01.123Z".
[[nodiscard]] std::string iso_time(std::chrono::system_clock::time_point time);

/// Reads the JSON text `source` names: "-" for stdin, "@path" for a file, else the text itself.
[[nodiscard]] std::string read_json_source(const std::string& source);
/// Parses `text` as a JSON object; throws LocalError saying what is wrong.
[[nodiscard]] boost::json::object parse_object(std::string_view text, std::string_view what);
/// Parses `text` as any JSON value; throws LocalError.
[[nodiscard]] boost::json::value parse_value(std::string_view text, std::string_view what);
/// A JSON value from JSON text the library handed over, or the text itself as a string when it
/// is not JSON (never expected, but a CLI prints what it got).
[[nodiscard]] boost::json::value value_of(const std::string& json_text);

/// An io_context with a Loop, run by a thread of its own for as long as this object lives.
class LoopThread {
 public:
  LoopThread();
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;
  /// Stops the io_context and joins the thread.
  ~LoopThread();

  [[nodiscard]] boost::asio::io_context& context() noexcept { return context_; }
  [[nodiscard]] rx::Loop& loop() noexcept { return loop_; }

 private:
  boost::asio::io_context context_;  // first: destroyed last
  rx::Loop loop_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

}  // namespace rxcomm

// rxcomm: the Remote XComm command line (docs/cli.md). One subcommand a file:
//   serve   serve_command.cpp    demo endpoints (echo, sleep, fail) until SIGINT/SIGTERM
//   send    send_command.cpp     one payload to one endpoint, the reply on stdout
//   pull    xcom_commands.cpp    an XCom, waiting for it if asked
//   watch   xcom_commands.cpp    XCom pushes and state changes as JSON lines
//   health  health_command.cpp   grpc.health.v1.Health/Check
//   bench   bench_command.cpp    a load generator with a latency report
//   list    introspection_commands.cpp   the hosted endpoints and their states
//   stats   introspection_commands.cpp   the server's counters: text, Prometheus or JSON
#include "commands.hpp"

#include <remote_xcomm/log.hpp>

#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>
#include <string>
#include <vector>

namespace {

int run(int argc, char** argv) {
  CLI::App app{"rxcomm: serve, call, watch and load-test Remote XComm endpoints (docs/cli.md)", "rxcomm"};
  app.require_subcommand(1);
  // The library is quiet unless a sink is installed; lines never carry payloads or metadata.
  std::string log_level = "off";
  app.add_option("--log-level", log_level,
                 "the library's log lines on stderr at this level and above: off, error, warning, info or debug "
                 "(before the subcommand)")
      ->capture_default_str()
      ->check(CLI::IsMember({"off", "error", "warning", "info", "debug"}));
  app.set_version_flag("--version", std::string("rxcomm ") + RXCOMM_VERSION);
  app.footer(
      "Exit codes: 0 success; 1 a failure that is no RPC status (unreadable input, invalid JSON, ...); 2 a usage "
      "error; 64 + the gRPC status code when a call fails (as grpcurl: NotFound 69, Unavailable 78).");

  std::vector<rxcomm::Command> commands{
      rxcomm::add_serve_command(app), rxcomm::add_send_command(app),   rxcomm::add_pull_command(app),
      rxcomm::add_watch_command(app), rxcomm::add_health_command(app), rxcomm::add_bench_command(app),
      rxcomm::add_list_command(app),  rxcomm::add_stats_command(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // CLI11 prints the message (and --help's text); a usage error exits with 2, as grpcurl's.
    const int code = app.exit(error);
    return code == 0 ? rxcomm::EXIT_OK : rxcomm::EXIT_USAGE;
  }

  if (log_level != "off") {
    const rx::LogLevel level = log_level == "error"     ? rx::LogLevel::error
                               : log_level == "warning" ? rx::LogLevel::warning
                               : log_level == "info"    ? rx::LogLevel::info
                                                        : rx::LogLevel::debug;
    rx::set_log_sink(rx::stderr_log_sink(), level);
  }

  for (const auto& command : commands) {
    if (command.app->parsed()) {
      try {
        return command.run();
      } catch (const std::exception& error) {  // rxcomm::LocalError and what the library throws
        std::cerr << "rxcomm " << command.app->get_name() << ": " << error.what() << std::endl;
        return rxcomm::EXIT_FAILURE_LOCAL;
      }
    }
  }
  return rxcomm::EXIT_USAGE;  // unreachable: require_subcommand(1)
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {  // building the app itself failed: not expected
    std::cerr << "rxcomm: " << error.what() << std::endl;
    return rxcomm::EXIT_FAILURE_LOCAL;
  }
}

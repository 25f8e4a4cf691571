// A benchmark server in a process of its own (bench/bench_server.cpp), as users run client and
// server: started from the benchmark, read from /proc while it runs, stopped at the end.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace rx::bench {

/// What this process has used so far (getrusage: all its threads, exited ones included).
struct ProcessUsage {
  double cpu_us = 0.0;              ///< user + system CPU time
  double voluntary_switches = 0.0;  ///< voluntary context switches: each is a thread going to sleep
};

/// This process's usage so far.
[[nodiscard]] ProcessUsage process_usage();

/// A child process talking line by line over its stdin and stdout.
///
/// The protocol bench_server speaks: it writes one line once it listens ("ports P [P...]"),
/// answers a line "stats" with one line of "name value" pairs (its own process_usage() among
/// them, as cpu_us and voluntary_switches), and shuts down cleanly and exits
/// when its stdin closes. The destructor closes stdin and waits for the exit (5 s, then SIGKILL),
/// so a benchmark that fails midway leaves no server behind. Not thread safe.
class ChildProcess {
 public:
  /// Starts `program` with `arguments` (argv[1..]). Throws std::runtime_error if it cannot start.
  ChildProcess(const std::string& program, const std::vector<std::string>& arguments);
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  /// The next line the child writes, without its newline. Throws std::runtime_error if the child
  /// closed its stdout (it exited) or wrote nothing for `timeout_seconds`.
  [[nodiscard]] std::string read_line(int timeout_seconds = 30);

  /// Writes `line` and a newline to the child's stdin.
  void write_line(const std::string& line);

  /// Sends "stats" and parses the answer's "name value" pairs.
  [[nodiscard]] std::map<std::string, double> stats();

  /// Closes the child's stdin and waits for it to exit. Returns its exit status (as waitpid's
  /// WEXITSTATUS), or -1 if it had to be killed or died of a signal. Idempotent.
  int stop();

 private:
  pid_t pid_ = -1;
  int to_child_ = -1;
  int from_child_ = -1;
  std::string buffer_;
  int exit_status_ = -1;
};

/// The path of `name` in the directory of this process's executable (sibling binaries).
[[nodiscard]] std::string sibling_executable(const std::string& name);

/// Splits "ports 123 456" into {123, 456}. Throws std::runtime_error on anything else.
[[nodiscard]] std::vector<int> parse_ports(const std::string& line);

}  // namespace rx::bench

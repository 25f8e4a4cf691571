// A child process for the tests that put a server or a client in a process of its own: spawned
// with its stdout on a pipe the test reads lines from, killed (SIGKILL) or waited for.
#pragma once

#include "utils/wait.hpp"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace rx_test {

/// A program next to the running test binary (same build directory), by file name.
inline std::string sibling_program(const std::string& name) {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / name).string();
}

/// One child process: `argv[0]` is the program's path. Its stdout is a pipe (read_line()), its
/// stderr the test's. The destructor kills it (SIGKILL) if it still runs, and reaps it.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& argv) {
    int out[2];
    if (pipe(out) != 0) {
      throw std::runtime_error("pipe failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::vector<char*> args;
    for (const std::string& arg : argv) {
      args.push_back(const_cast<char*>(arg.c_str()));
    }
    args.push_back(nullptr);
    const int spawned = posix_spawn(&pid_, argv.at(0).c_str(), &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    from_child_ = out[0];
    if (spawned != 0) {
      close(from_child_);
      throw std::runtime_error("cannot start " + argv.at(0));
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    kill_now();
    close(from_child_);
  }

  /// The child's next line on stdout, without its newline. Throws if the child says nothing
  /// within HANG_GUARD or closes stdout first (it failed to start, or exited).
  std::string read_line() {
    std::string line;
    char c = 0;
    while (line.size() < 4096) {
      pollfd fd{from_child_, POLLIN, 0};
      if (poll(&fd, 1, static_cast<int>(std::chrono::milliseconds(HANG_GUARD).count())) <= 0 ||
          read(from_child_, &c, 1) != 1) {
        throw std::runtime_error("the child process wrote no line (it failed, or hangs)");
      }
      if (c == '\n') {
        return line;
      }
      line.push_back(c);
    }
    return line;
  }

  /// SIGKILL: no shutdown, no flush, no destructor. Returns the wait status (0 if already reaped).
  int kill_now() {
    if (pid_ <= 0) {
      return 0;
    }
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
  int from_child_ = -1;
};

}  // namespace rx_test

#include "common/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX declares it nowhere else

namespace rx::bench {
namespace {

std::runtime_error system_error(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

ProcessUsage process_usage() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto us = [](const timeval& time) {
    return static_cast<double>(time.tv_sec) * 1e6 + static_cast<double>(time.tv_usec);
  };
  return {us(usage.ru_utime) + us(usage.ru_stime), static_cast<double>(usage.ru_nvcsw)};
}

ChildProcess::ChildProcess(const std::string& program, const std::vector<std::string>& arguments) {
  std::signal(SIGPIPE, SIG_IGN);  // a child that died makes write_line fail, not kill the benchmark
  std::array<int, 2> to_child{};
  std::array<int, 2> from_child{};
  if (::pipe2(to_child.data(), O_CLOEXEC) != 0 || ::pipe2(from_child.data(), O_CLOEXEC) != 0) {
    throw system_error("pipe2");
  }
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
  std::vector<std::string> storage{program};
  storage.insert(storage.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  argv.reserve(storage.size() + 1);
  for (std::string& argument : storage) {
    argv.push_back(argument.data());
  }
  argv.push_back(nullptr);
  const int spawned = ::posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(to_child[0]);
  ::close(from_child[1]);
  to_child_ = to_child[1];
  from_child_ = from_child[0];
  if (spawned != 0) {
    ::close(to_child_);
    ::close(from_child_);
    errno = spawned;
    throw system_error("cannot start " + program);
  }
}

ChildProcess::~ChildProcess() { stop(); }

std::string ChildProcess::read_line(int timeout_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  for (;;) {
    if (const auto newline = buffer_.find('\n'); newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      throw std::runtime_error("the benchmark server wrote no line for " + std::to_string(timeout_seconds) + " s");
    }
    pollfd readable{from_child_, POLLIN, 0};
    if (::poll(&readable, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      throw system_error("poll");
    }
    std::array<char, 512> chunk{};
    if ((readable.revents & (POLLIN | POLLHUP)) != 0) {
      const ssize_t got = ::read(from_child_, chunk.data(), chunk.size());
      if (got == 0) {
        throw std::runtime_error("the benchmark server exited (see its stderr above)");
      }
      if (got > 0) {
        buffer_.append(chunk.data(), static_cast<std::size_t>(got));
      }
    }
  }
}

void ChildProcess::write_line(const std::string& line) {
  const std::string text = line + "\n";
  if (::write(to_child_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    throw system_error("write to the benchmark server");
  }
}

std::map<std::string, double> ChildProcess::stats() {
  write_line("stats");
  std::istringstream fields(read_line());
  std::map<std::string, double> values;
  std::string name;
  double value = 0;
  while (fields >> name >> value) {
    values[name] = value;
  }
  return values;
}

int ChildProcess::stop() {
  if (pid_ <= 0) {
    return exit_status_;
  }
  ::close(to_child_);  // EOF: the child shuts its servers down and exits
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  pid_t waited = 0;
  while ((waited = ::waitpid(pid_, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling a child's exit, outside any timing
  }
  if (waited == 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    exit_status_ = -1;
  } else {
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  ::close(from_child_);
  pid_ = -1;
  return exit_status_;
}

std::string sibling_executable(const std::string& name) {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / name).string();
}

std::vector<int> parse_ports(const std::string& line) {
  std::istringstream fields(line);
  std::string word;
  fields >> word;
  std::vector<int> ports;
  int port = 0;
  while (fields >> port) {
    ports.push_back(port);
  }
  if (word != "ports" || ports.empty()) {
    throw std::runtime_error(R"(the benchmark server said ")" + line + R"(" instead of "ports P...")");
  }
  return ports;
}

}  // namespace rx::bench

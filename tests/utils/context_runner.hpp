// An io_context run by a thread of its own for as long as the runner lives.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <thread>

namespace rx_test {

/// Runs `context` on a worker thread until destroyed; the destructor lets queued work finish and
/// joins. Completions handed to a loop's own thread (rather than borrowed by the gRPC thread that
/// delivered them) need someone to run its io_context: tests that wait on a Client's completion
/// from another thread use this instead of relying on a borrow that the library may refuse.
class ContextRunner {
 public:
  explicit ContextRunner(boost::asio::io_context& context)
      : work_(context.get_executor()), thread_([&context] { context.run(); }) {}
  ContextRunner(const ContextRunner&) = delete;
  ContextRunner& operator=(const ContextRunner&) = delete;
  ~ContextRunner() {
    work_.reset();
    thread_.join();
  }

 private:
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

}  // namespace rx_test

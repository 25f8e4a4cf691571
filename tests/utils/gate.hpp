// A one-shot event on a loop that task coroutines wait on and a test opens from any thread.
#pragma once

#include <remote_xcomm/loop.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace rx_test {

/// Lets a task hold its request for as long as the test wants, with no sleep: the task awaits a
/// timer that never expires by itself, and open() cancels it. Loop-confined state; open() hops
/// onto the loop. Share it with tasks through a std::shared_ptr so it outlives them.
class Gate {
 public:
  explicit Gate(const rx::LoopExecutor& executor)
      : executor_(executor), timer_(executor, boost::asio::steady_timer::time_point::max()) {}

  /// Completes once the gate is open: true if it was opened, false if the wait was cancelled by
  /// something else (the task's invocation was cancelled by detach or shutdown).
  boost::asio::awaitable<bool> wait() {
    while (!open_) {
      auto [error] = co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (error && !open_) {
        co_return false;
      }
    }
    co_return true;
  }

  /// Opens the gate. Any thread.
  void open() {
    boost::asio::dispatch(executor_, [this] {
      open_ = true;
      timer_.cancel();
    });
  }

 private:
  rx::LoopExecutor executor_;
  boost::asio::steady_timer timer_;
  bool open_ = false;  // loop-confined
};

}  // namespace rx_test

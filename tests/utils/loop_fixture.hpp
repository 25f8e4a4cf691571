// A Loop that the test thread drives itself, step by step, for tests without gRPC.
#pragma once

#include <remote_xcomm/loop.hpp>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <utility>

namespace rx_test {

/// An io_context and a Loop run by the test thread only. `on_loop(f)` runs `f` on the loop (inline:
/// the loop is idle) and then `drain()`s; `drain()` runs every handler that is ready and returns
/// when none is, so after it nothing more happens until the test acts. No other thread exists,
/// so "has not completed yet" is a fact, not a guess about timing.
class LoopFixture : public ::testing::Test {
 protected:
  template <typename Function>
  void on_loop(Function&& function) {
    boost::asio::dispatch(executor_, std::forward<Function>(function));
    drain();
  }

  void drain() {
    context_.restart();
    context_.poll();
  }

  boost::asio::io_context context_;
  rx::Loop loop_{context_};
  rx::LoopExecutor executor_ = loop_.get_executor();
};

}  // namespace rx_test

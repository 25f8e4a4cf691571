// Waiting on events in tests: on the event itself, with a generous guard against hangs.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <stdexcept>
#include <string>

namespace rx_test {

/// How long a test waits for an event that should happen before it gives up. Not a timing
/// threshold: every event a test waits on is caused by the test itself, so this bound is only
/// reached when something is broken (a lost completion, a deadlock). CTest's TIMEOUT (60 s) is
/// the outer bound.
inline constexpr std::chrono::seconds HANG_GUARD{30};

/// The deadline of every RPC a test sends unless the test is about deadlines itself.
inline constexpr std::chrono::milliseconds DEFAULT_DEADLINE{20000};

/// Waits until `future` is ready and returns its value (rethrowing its exception). Throws
/// std::runtime_error naming `what` if HANG_GUARD passes first.
template <typename T>
T wait_for(std::future<T>& future, const std::string& what = "an event") {
  if (future.wait_for(HANG_GUARD) != std::future_status::ready) {
    throw std::runtime_error("timed out waiting for " + what + " (something hangs)");
  }
  return future.get();
}

template <typename T>
T wait_for(std::future<T>&& future, const std::string& what = "an event") {
  return wait_for(future, what);
}

}  // namespace rx_test

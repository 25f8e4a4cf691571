// Running a coroutine from a test body: co_spawn with a rethrowing completion, never detached.
#pragma once

#include "utils/wait.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <exception>
#include <future>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace rx_test {

namespace detail {
template <typename T>
struct AwaitableValue;
template <typename T, typename Executor>
struct AwaitableValue<boost::asio::awaitable<T, Executor>> {
  using type = T;
};

}  // namespace detail

/// Spawns `coroutine()` on `executor`; the returned future holds its result or its exception.
/// `slot`, when connected, cancels the coroutine (and so the operation it awaits) when emitted.
template <typename Executor, typename Function>
auto spawn_with_future(const Executor& executor, Function&& coroutine,
                       boost::asio::cancellation_slot slot = boost::asio::cancellation_slot()) {
  using T = typename detail::AwaitableValue<std::invoke_result_t<Function&>>::type;
  // Shared with the completion, so the promise outlives set_value even if the waiter wakes early.
  auto done = std::make_shared<std::promise<T>>();
  auto future = done->get_future();
  if constexpr (std::is_void_v<T>) {
    boost::asio::co_spawn(executor, std::forward<Function>(coroutine),
                          boost::asio::bind_cancellation_slot(slot, [done](const std::exception_ptr& error) {
                            if (error) {
                              done->set_exception(error);
                            } else {
                              done->set_value();
                            }
                          }));
  } else {
    boost::asio::co_spawn(executor, std::forward<Function>(coroutine),
                          boost::asio::bind_cancellation_slot(slot, [done](const std::exception_ptr& error, T value) {
                            if (error) {
                              done->set_exception(error);
                            } else {
                              done->set_value(std::move(value));
                            }
                          }));
  }
  return future;
}

/// Runs `coroutine()` (a function returning an asio::awaitable) on `executor`, whose loop another
/// thread runs, and blocks until it finishes: returns its value or rethrows its exception.
template <typename Executor, typename Function>
auto spawn_and_wait(const Executor& executor, Function&& coroutine) {
  auto future = spawn_with_future(executor, std::forward<Function>(coroutine));
  return wait_for(future, "a test coroutine");
}

/// Runs `coroutine()` on `executor` and runs `context` on this thread until the coroutine
/// finishes: returns its value or rethrows its exception. Throws if `context` runs out of work
/// or has nothing to run for HANG_GUARD first (the coroutine waits on something nobody completes).
template <typename Executor, typename Function>
auto run_on_this_thread(boost::asio::io_context& context, const Executor& executor, Function&& coroutine) {
  auto future = spawn_with_future(executor, std::forward<Function>(coroutine));
  context.restart();
  while (future.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    if (context.run_one_for(HANG_GUARD) == 0) {
      throw std::runtime_error("the test coroutine waits on an event nobody completes");
    }
  }
  return future.get();
}

}  // namespace rx_test

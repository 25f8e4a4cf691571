// Lifetimes: Servers, Clients, Loops and io_contexts destroyed in the orders the headers allow,
// with work still pending. Meant for AddressSanitizer (the CI runs this suite under it): without
// it, a touch of freed memory may go unseen, so each test also checks what it can observe.
#include "utils/context_runner.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/server.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <thread>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using rx_test::make_key;

// Waits on a long timer inside the held request, reporting when it got the request and how the
// wait ended.
struct TimerTask {
  std::shared_ptr<std::promise<void>> got = std::make_shared<std::promise<void>>();
  std::shared_ptr<std::atomic<bool>> wait_cancelled = std::make_shared<std::atomic<bool>>(false);

  rx::Server::Task task() const {
    return [got = got, cancelled = wait_cancelled](rx::Endpoint endpoint) -> asio::awaitable<void> {
      json::object payload = co_await endpoint.get();
      got->set_value();
      asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::seconds(30));
      boost::system::error_code error;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, error));
      cancelled->store(error == asio::error::operation_aborted);
      co_await endpoint.push(std::move(payload));
    };
  }
};

TEST(Lifetimes, ATimerOutlivingAServerWithItsOwnLoopCompletesSafelyOnTheIoContext) {
  asio::io_context context;
  TimerTask timer_task;
  std::future<std::tuple<grpc::Status, json::object>> reply;
  asio::io_context client_context;
  const rx_test::ContextRunner client_runner(client_context);
  rx::Client client(client_context);
  {
    rx::Server server(context);
    ASSERT_TRUE(server.attach(make_key(), timer_task.task()));
    server.start();
    std::thread runner([&context] { context.run(); });
    reply = client.send(server.target(), make_key(), json::object{}, rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                        asio::use_future);
    rx_test::wait_for(timer_task.got->get_future(), "the task to hold the request");
    context.stop();  // the loop's own thread leaves, with the task waiting on its timer
    runner.join();
    server.shutdown();  // cancels the task: the timer's cancelled completion is queued on the io_context
  }
  // The Server and its Loop are gone; the cancelled timer's completion runs on the io_context now.
  context.restart();
  context.run_for(std::chrono::seconds(10));
  EXPECT_TRUE(timer_task.wait_cancelled->load());
  auto [status, body] = rx_test::wait_for(reply, "the reply");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << rx_test::describe(status);
}

TEST(Lifetimes, LoopsDestroyedBeforeTheirIoContextWithWorkQueuedOnThem) {
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> ran{0};
    asio::io_context context;
    {
      rx::Loop first(context);
      rx::Loop second(context);
      // Work crossing loops, left queued when both handles are destroyed.
      asio::post(first.get_executor(), [&ran, to = second.get_executor()] {
        ++ran;
        asio::post(to, [&ran] { ++ran; });
      });
    }
    context.run();
    EXPECT_EQ(ran.load(), 2);
  }
}

TEST(Lifetimes, AnIoContextDestroyedWhileABorrowedThreadRunsACompletionOnItsLoop) {
  // The shape of a scheduler that waits for a reply, then destroys everything while the gRPC
  // thread that delivered the reply is still inside the completion.
  for (int round = 0; round < 50; ++round) {
    auto context = std::make_unique<asio::io_context>();
    auto loop = std::make_unique<rx::Loop>(*context);
    std::promise<void> signalled;
    std::promise<void> destroyed;
    auto destroyed_future = destroyed.get_future();
    std::thread grpc_like([&, executor = loop->get_executor()] {
      rx::detail::hand_off(executor, [&, tracked = asio::prefer(executor, asio::execution::outstanding_work.tracked)] {
        asio::post(tracked, [] {});
        signalled.set_value();
        destroyed_future.wait();  // keeps running after the application was told it is done
      });
    });
    rx_test::wait_for(signalled.get_future(), "the completion");
    loop.reset();
    context.reset();
    destroyed.set_value();
    grpc_like.join();
  }
}

TEST(Nesting, ABlockingServerCallFromANestedLoopRunsInlineInsteadOfDeadlocking) {
  // Issue 6, defect 5: work on loop A dispatches to loop B, which the io_context's thread runs
  // inline; inside it, a blocking call on A's server must see that this thread holds A.
  asio::io_context context;
  rx::Loop loop_a(context);
  rx::Loop loop_b(context);
  rx::Server server_a(loop_a);
  ASSERT_TRUE(server_a.attach(make_key(), rx_test::echo_once));
  std::optional<std::size_t> counted;
  asio::post(context, [&] {
    asio::dispatch(loop_a.get_executor(),
                   [&] { asio::dispatch(loop_b.get_executor(), [&] { counted = server_a.endpoint_count(); }); });
  });
  context.run();  // before the fix this never returned: the call waited for the token its own thread held
  ASSERT_TRUE(counted.has_value());
  EXPECT_EQ(*counted, 1U);
}

}  // namespace

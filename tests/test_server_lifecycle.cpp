// rx::Server's lifecycle: graceful and immediate shutdown from any thread (the loop included),
// destruction from the loop, calls that are dropped unanswered, and task errors nobody heard of.
#include "utils/context_runner.hpp"
#include "utils/gate.hpp"
#include "utils/payloads.hpp"
#include "utils/run_coroutine.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include "unary_send_call.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using rx_test::describe;
using rx_test::make_key;
using rx_test::with_id;
using Reply = std::future<std::tuple<grpc::Status, json::object>>;

// A task that holds every request it gets until the test opens its gate, then echoes it.
struct Holder {
  explicit Holder(const rx::LoopExecutor& executor) : gate(executor) {}
  rx_test::Gate gate;
  std::promise<void> got;        // the first request is held
  std::promise<void> cancelled;  // the task was cancelled while holding
};

asio::awaitable<void> hold_then_echo(rx::Endpoint endpoint, std::shared_ptr<Holder> holder) {
  for (bool first = true;; first = false) {
    json::object payload = co_await endpoint.get();
    if (first) {
      holder->got.set_value();
    }
    if (!co_await holder->gate.wait()) {
      holder->cancelled.set_value();
      co_return;
    }
    co_await endpoint.push(std::move(payload));
  }
}

rx::Server::Task holding(const std::shared_ptr<Holder>& holder) {
  return [holder](rx::Endpoint endpoint) { return hold_then_echo(std::move(endpoint), holder); };
}

void expect_shutting_down(Reply& reply) {
  auto [status, payload] = rx_test::wait_for(reply, "the request's status");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(status);
  EXPECT_NE(status.error_message().find("shutting down"), std::string::npos) << describe(status);
}

void expect_echo(Reply& reply, int id) {
  auto [status, payload] = rx_test::wait_for(reply, "the reply");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(payload, with_id(id));
}

using ServerShutdownTest = rx_test::ServerFixture;

TEST_F(ServerShutdownTest, GracefulShutdownLetsHeldRequestsFinishAndCompletesBeforeItsDeadline) {
  auto first = std::make_shared<Holder>(server_.get_executor());
  auto second = std::make_shared<Holder>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key("first"), holding(first)));
  ASSERT_TRUE(server_.attach(make_key("second"), holding(second)));
  auto held_first = send_async(make_key("first"), with_id(1));
  auto held_second = send_async(make_key("second"), with_id(2));
  rx_test::wait_for(first->got.get_future(), "the first task to hold its request");
  rx_test::wait_for(second->got.get_future(), "the second task to hold its request");

  auto done = server_.shutdown(1h, asio::use_future);  // far past HANG_GUARD: it must end early
  auto late = send_async(make_key("first"), with_id(3));
  expect_shutting_down(late);
  EXPECT_FALSE(server_.attach(make_key("late"), rx_test::echo_once));

  first->gate.open();
  expect_echo(held_first, 1);
  second->gate.open();
  expect_echo(held_second, 2);
  EXPECT_NO_THROW(rx_test::wait_for(done, "the shutdown"));  // use_future: an error would throw
  EXPECT_EQ(server_.endpoint_count(), 0U);
}

TEST_F(ServerShutdownTest, AtTheDeadlineHeldAndQueuedRequestsFailWithUnavailableAndTheTaskIsCancelled) {
  auto holder = std::make_shared<Holder>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding(holder)));
  auto held = send_async(make_key(), with_id(1));
  rx_test::wait_for(holder->got.get_future(), "the task to hold the request");
  // Queued behind the held one, or (if it reaches the server after the shutdown began) refused:
  // either way it must get UNAVAILABLE, never hang.
  auto queued = send_async(make_key(), with_id(2));

  auto done = server_.shutdown(100ms, asio::use_future);  // the gate never opens
  expect_shutting_down(held);
  expect_shutting_down(queued);
  rx_test::wait_for(holder->cancelled.get_future(), "the task to be cancelled");
  EXPECT_NO_THROW(rx_test::wait_for(done, "the shutdown"));
}

TEST_F(ServerShutdownTest, CancellingTheShutdownSkipsTheGracePeriodAndStillShutsDown) {
  auto holder = std::make_shared<Holder>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding(holder)));
  auto held = send_async(make_key(), with_id(1));
  rx_test::wait_for(holder->got.get_future(), "the task to hold the request");

  asio::cancellation_signal cancel;
  auto done = server_.shutdown(1h, asio::bind_cancellation_slot(cancel.slot(), asio::use_future));
  cancel.emit(asio::cancellation_type::terminal);  // use_future's executor is any thread's
  expect_shutting_down(held);
  try {
    rx_test::wait_for(done, "the shutdown");
    ADD_FAILURE() << "the cancelled shutdown completed without operation_aborted";
  } catch (const boost::system::system_error& error) {
    EXPECT_EQ(error.code(), asio::error::operation_aborted);
  }
}

TEST_F(ServerShutdownTest, TheCallbackFormCompletesOnTheServersLoop) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  std::promise<std::pair<boost::system::error_code, bool>> done;
  server_.shutdown(0s, [&](boost::system::error_code error) {
    done.set_value({error, server_.get_executor().running_in_this_thread()});
  });
  auto [error, on_loop] = rx_test::wait_for(done.get_future(), "the shutdown");
  EXPECT_FALSE(error) << error.message();
  EXPECT_TRUE(on_loop);
  EXPECT_EQ(server_.endpoint_count(), 0U);
}

TEST_F(ServerShutdownTest, ShutdownAwaitedInsideLoopWorkCompletesAndTheHeldRequestGetsAStatus) {
  auto holder = std::make_shared<Holder>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding(holder)));
  auto held = send_async(make_key(), with_id(1));
  rx_test::wait_for(holder->got.get_future(), "the task to hold the request");

  const boost::system::error_code error =
      rx_test::spawn_and_wait(server_.get_executor(), [&]() -> asio::awaitable<boost::system::error_code> {
        auto [result] = co_await server_.shutdown(0s, asio::as_tuple(asio::use_awaitable));
        co_return result;
      });
  EXPECT_FALSE(error) << error.message();
  expect_shutting_down(held);
}

TEST_F(ServerShutdownTest, TwoThreadsShuttingDownAtOnceBothReturnOnceTheServerIsDown) {
  auto holder = std::make_shared<Holder>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key(), holding(holder)));
  auto held = send_async(make_key(), with_id(1));
  rx_test::wait_for(holder->got.get_future(), "the task to hold the request");

  std::promise<void> go;
  std::shared_future<void> start = go.get_future().share();
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&] {
      start.wait();
      server_.shutdown();
    });
  }
  go.set_value();
  for (std::thread& thread : threads) {
    thread.join();
  }
  // Either thread returning means the shutdown has completed: the held request has its status.
  expect_shutting_down(held);
  EXPECT_EQ(server_.endpoint_count(), 0U);
}

// Runs an io_context on a worker thread, keeping it running until release().
class LoopThread {
 public:
  explicit LoopThread(asio::io_context& context) : context_(context), work_(context.get_executor()) {
    thread_ = std::thread([this] {
      for (;;) {
        try {
          context_.run();
          return;
        } catch (const std::exception& error) {
          if (!has_error_.exchange(true)) {  // the first one is reported; the loop keeps running
            errors_.set_value(error.what());
          }
        }
      }
    });
  }
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;
  ~LoopThread() { join(); }

  // Lets run() return once nothing else holds work, and waits for it.
  void join() {
    work_.reset();
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  std::future<std::string> first_error() { return errors_.get_future(); }

 private:
  asio::io_context& context_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::promise<std::string> errors_;
  std::atomic<bool> has_error_{false};
  std::thread thread_;
};

TEST(ServerLifetime, DroppingTheLastSharedPtrInsideLoopWorkShutsDownInTheBackground) {
  asio::io_context context;
  rx::Loop loop(context);
  auto holder = std::make_shared<Holder>(loop.get_executor());
  auto server = std::make_shared<rx::Server>(loop);
  ASSERT_TRUE(server->attach(make_key(), holding(holder)));
  server->start();
  const std::string target = server->target();
  {
    LoopThread runner(context);
    rx::Client client(loop);
    auto held =
        client.send(target, make_key(), with_id(1), rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future);
    rx_test::wait_for(holder->got.get_future(), "the task to hold the request");

    std::promise<void> dropped;
    asio::post(loop.get_executor(), [&] {
      server.reset();  // the last reference, on the loop: must neither throw nor block
      dropped.set_value();
    });
    rx_test::wait_for(dropped.get_future(), "the server to be dropped");
    expect_shutting_down(held);
    rx_test::wait_for(holder->cancelled.get_future(), "the task to be cancelled");
    runner.join();  // returns: the background shutdown drained gRPC and let go of the io_context
  }
}

TEST(ServerLifetime, AServerOwningItsLoopCanBeShutDownAndDestroyedWhileATaskAwaitsALongTimer) {
  // Issue 6, defect 2: work that outlives the Server (the timer's cancelled completion) must
  // find a valid loop when the io_context finally runs. Meaningful under AddressSanitizer.
  asio::io_context context;
  std::promise<void> waiting;
  std::promise<boost::system::error_code> woke;
  {
    rx::Server server(context);
    ASSERT_TRUE(server.attach(make_key(), [&](rx::Endpoint endpoint) -> asio::awaitable<void> {
      co_await endpoint.get();
      asio::steady_timer timer(co_await asio::this_coro::executor, 30s);
      waiting.set_value();
      auto [error] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
      woke.set_value(error);
    }));
    server.start();
    std::thread runner([&context] { context.run(); });
    asio::io_context client_context;
    const rx_test::ContextRunner client_runner(client_context);
    rx::Client client(client_context);
    auto reply = client.send(server.target(), make_key(), with_id(1), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                             asio::use_future);
    rx_test::wait_for(waiting.get_future(), "the task to await its timer");
    context.stop();  // nobody runs the loop's own thread from here on
    runner.join();
    server.shutdown();
    expect_shutting_down(reply);
  }  // the Server, and with it its Loop, is gone; the timer's cancelled completion is still queued
  context.restart();
  context.run_for(2s);
  auto result = woke.get_future();
  ASSERT_EQ(result.wait_for(0s), std::future_status::ready) << "the cancelled wait never completed";
  EXPECT_EQ(result.get(), asio::error::operation_aborted);
}

TEST(ServerLifetime, AShutdownBeforeStartCompletesAtOnceAndStartIsThenRefused) {
  asio::io_context context;
  rx::Server server(context);
  EXPECT_NO_THROW(rx_test::wait_for(server.shutdown(0s, asio::use_future), "the shutdown"));
  EXPECT_THROW(server.start(), std::logic_error);
}

// ---- task errors nobody heard of -------------------------------------------------------------

asio::awaitable<void> push_then_throw(rx::Endpoint endpoint) {
  json::object payload = co_await endpoint.get();
  co_await endpoint.push(std::move(payload));
  throw std::runtime_error("after the last push");
}

TEST(ServerTaskErrors, AnExceptionAfterTheLastPushReachesTheOnTaskErrorHook) {
  asio::io_context context;
  rx::Loop loop(context);
  std::promise<std::pair<rx::TaskInstanceKey, std::string>> reported;
  rx::ServerOptions options;
  options.on_task_error = [&](const rx::TaskInstanceKey& key, std::exception_ptr error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      reported.set_value({key, e.what()});
    }
  };
  rx::Server server(loop, options);
  ASSERT_TRUE(server.attach(make_key(), push_then_throw));
  server.start();
  LoopThread runner(context);
  rx::Client client(loop);
  auto reply = client.send(server.target(), make_key(), with_id(1), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                           asio::use_future);
  expect_echo(reply, 1);
  auto [key, what] = rx_test::wait_for(reported.get_future(), "the hook");
  EXPECT_EQ(key, make_key());
  EXPECT_EQ(what, "after the last push");
  server.shutdown();
}

TEST(ServerTaskErrors, WithoutAHookAnExceptionAfterTheLastPushIsRethrownFromTheIoContextsRun) {
  asio::io_context context;
  rx::Loop loop(context);
  rx::Server server(loop);
  ASSERT_TRUE(server.attach(make_key(), push_then_throw));
  server.start();
  LoopThread runner(context);
  auto error = runner.first_error();
  rx::Client client(loop);
  auto reply = client.send(server.target(), make_key(), with_id(1), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                           asio::use_future);
  expect_echo(reply, 1);
  EXPECT_EQ(rx_test::wait_for(error, "the exception from run()"), "after the last push");
  server.shutdown();
}

// ---- calls dropped unanswered ------------------------------------------------------------------

// A bare service that drops every call without answering it, as an exception or a job freed
// unrun would: the call itself must still finish, or gRPC waits for it forever.
class DroppingService final : public remote_xcomm::v1::RemoteXComm::CallbackService {
 public:
  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context, const remote_xcomm::v1::SendRequest* /*request*/,
                                 remote_xcomm::v1::SendResponse* response) override {
    auto* const send_call = new rx::detail::UnarySendCall(context, response, 1024, loop_.get_executor());
    rx::detail::PendingReplyPtr call(send_call);
    grpc::ServerUnaryReactor* const reactor = send_call->reactor();
    call.reset();  // dropped unfinished
    return reactor;
  }

 private:
  asio::io_context context_;  // receives cancellation notices, if any; never run
  rx::Loop loop_{context_};
};

TEST(UnarySendCall, ACallDroppedUnansweredFailsWithInternalAndTheServerStillShutsDown) {
  DroppingService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);

  asio::io_context client_context;
  const rx_test::ContextRunner client_runner(client_context);
  rx::Client client(client_context);
  auto reply = client.send("127.0.0.1:" + std::to_string(port), make_key(), with_id(1),
                           rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future);
  auto [status, payload] = rx_test::wait_for(reply, "the status");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL) << describe(status);

  auto stopped = std::async(std::launch::async, [&] {
    server->Shutdown(std::chrono::system_clock::now() + 1s);
    server->Wait();
  });
  rx_test::wait_for(stopped, "gRPC to shut down");
}

}  // namespace

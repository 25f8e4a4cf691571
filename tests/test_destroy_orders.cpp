// Destruction orders: Server, Client, Loops and io_contexts torn down in every order the headers
// allow, with calls in flight in every state (queued, held through get, held as an rx::Request,
// answered), over both client transports (unary, Exchange), and client completions that signal and
// then keep running. Meant for the sanitizers; without them each round still checks that every
// call ended exactly once.
#include "utils/payloads.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include "client/exchange_stream.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/request.hpp>
#include <remote_xcomm/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using rx_test::make_key;
using rx_test::with_id;

enum class TaskKind {
  echo,          // answers at once: calls end while everything is alive, completions keep running
  holds_get,     // holds the first request through get() and waits an hour: the rest queue
  holds_request  // holds the first request as an rx::Request, its work bound to its cancellation
};

std::string name_of(TaskKind kind) {
  switch (kind) {
    case TaskKind::echo:
      return "Echo";
    case TaskKind::holds_get:
      return "HoldsGet";
    case TaskKind::holds_request:
      return "HoldsRequest";
  }
  return "Unknown";
}

rx::Server::Task make_task(TaskKind kind) {
  switch (kind) {
    case TaskKind::echo:
      return rx_test::echo_forever;
    case TaskKind::holds_get:
      return [](rx::Endpoint rx) -> asio::awaitable<void> {
        json::object payload = co_await rx.get();
        asio::steady_timer wait(co_await asio::this_coro::executor, std::chrono::hours(1));
        co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
        co_await rx.push(std::move(payload));
      };
    case TaskKind::holds_request:
      return [](rx::Endpoint rx) -> asio::awaitable<void> {
        rx::Request request = co_await rx.next();
        asio::steady_timer wait(co_await asio::this_coro::executor, std::chrono::hours(1));
        co_await wait.async_wait(
            asio::bind_cancellation_slot(request.cancellation_slot(), asio::as_tuple(asio::use_awaitable)));
        co_await request.reply(request.payload(), asio::as_tuple(asio::use_awaitable));
      };
  }
  return {};
}

// An io_context run by a thread until stop_running(); destroyed only after that.
class RunContext {
 public:
  RunContext() : work_(context_.get_executor()), thread_([this] { context_.run(); }) {}
  RunContext(const RunContext&) = delete;
  RunContext& operator=(const RunContext&) = delete;
  ~RunContext() { stop_running(); }
  void stop_running() {
    if (thread_.joinable()) {
      work_.reset();
      context_.stop();  // leaves queued work queued: its destruction with the io_context is part of the test
      thread_.join();
    }
  }
  asio::io_context& get() { return context_; }

 private:
  asio::io_context context_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

struct Order {
  TaskKind task;
  bool server_owns_loop;    // Server(io_context) rather than Server(loop)
  bool client_owns_loop;    // Client(io_context) rather than Client(loop)
  bool server_first;        // the Server is destroyed before the Client
  bool explicit_shutdown;   // shutdown() before destruction, rather than the destructor's own
  rx::Transport transport;  // the Client's: a unary call per send, or one Exchange stream
};

std::string order_name(const testing::TestParamInfo<Order>& param_info) {
  const Order& order = param_info.param;
  return name_of(order.task) + (order.server_owns_loop ? "_ServerOwnsLoop" : "_SharedServerLoop") +
         (order.client_owns_loop ? "_ClientOwnsLoop" : "_SharedClientLoop") +
         (order.server_first ? "_ServerFirst" : "_ClientFirst") +
         (order.explicit_shutdown ? "_ShutdownFirst" : "_DestructorShutsDown") +
         (order.transport == rx::Transport::exchange ? "_Exchange" : "");
}

class DestroyOrder : public testing::TestWithParam<Order> {};

TEST_P(DestroyOrder, EveryCallEndsOnceAndNothingTouchesWhatIsGone) {
  const Order order = GetParam();
  constexpr int ROUNDS = 3;
  constexpr int CALLS = 6;
  for (int round = 0; round < ROUNDS; ++round) {
    auto server_context = std::make_unique<RunContext>();
    auto client_context = std::make_unique<RunContext>();
    auto server_loop = std::make_unique<rx::Loop>(server_context->get());
    auto client_loop = std::make_unique<rx::Loop>(client_context->get());
    auto server = order.server_owns_loop ? std::make_unique<rx::Server>(server_context->get())
                                         : std::make_unique<rx::Server>(*server_loop);
    rx::ClientOptions client_options;
    client_options.transport = order.transport;
    auto client = order.client_owns_loop ? std::make_unique<rx::Client>(client_context->get(), client_options)
                                         : std::make_unique<rx::Client>(*client_loop, client_options);
    ASSERT_TRUE(server->attach(make_key(), make_task(order.task)));
    server->start();

    // Completions signal, then keep running until the objects they came from are gone.
    auto ended = std::make_shared<std::atomic<int>>(0);
    auto all_ended = std::make_shared<std::promise<void>>();
    auto released = std::make_shared<std::promise<void>>();
    std::shared_future<void> release = released->get_future().share();
    for (int call = 0; call < CALLS; ++call) {
      client->send(server->target(), make_key(), with_id(call), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                   [ended, all_ended, release](grpc::Status /*status*/, json::object /*reply*/) {
                     if (ended->fetch_add(1) + 1 == CALLS) {
                       all_ended->set_value();
                       // Keeps running while the test tears down (the Client's destructor may
                       // wait for this handler: gRPC joins its callback threads with its last
                       // channel), bounded either way.
                       release.wait_for(rx_test::HANG_GUARD);
                       for (int spin = 0; spin < 1000; ++spin) {
                         std::this_thread::yield();
                       }
                     }
                   });
    }
    if (order.task == TaskKind::echo) {
      rx_test::wait_for(all_ended->get_future(), "every call to end");
    }
    if (order.explicit_shutdown) {
      server->shutdown();
    }
    released->set_value();  // from here the last completion runs on while things are destroyed
    if (order.server_first) {
      server.reset();
      if (order.task != TaskKind::echo) {
        rx_test::wait_for(all_ended->get_future(), "every call to end");
      }
      client.reset();
    } else {
      client.reset();  // the calls it started still end, each with its status
      if (order.task != TaskKind::echo) {
        server.reset();
        rx_test::wait_for(all_ended->get_future(), "every call to end");
      } else {
        server.reset();
      }
    }
    client_context->stop_running();
    server_context->stop_running();
    client_loop.reset();
    server_loop.reset();
    if (round % 2 == 0) {
      client_context.reset();
      server_context.reset();
    } else {
      server_context.reset();
      client_context.reset();
    }
    EXPECT_EQ(ended->load(), CALLS) << "round " << round;
    // And the Exchange streams end, even those whose last jobs found the io_context gone.
    EXPECT_TRUE(rx::detail::wait_until_no_client_exchange_streams(rx_test::HANG_GUARD))
        << "round " << round << ": " << rx::detail::client_exchange_streams_alive() << " streams still open";
  }
}

std::vector<Order> every_order() {
  std::vector<Order> orders;
  for (TaskKind task : {TaskKind::echo, TaskKind::holds_get, TaskKind::holds_request}) {
    for (bool server_owns_loop : {false, true}) {
      for (bool client_owns_loop : {false, true}) {
        for (bool server_first : {true, false}) {
          for (bool explicit_shutdown : {false, true}) {
            for (rx::Transport transport : {rx::Transport::unary, rx::Transport::exchange}) {
              orders.push_back({task, server_owns_loop, client_owns_loop, server_first, explicit_shutdown, transport});
            }
          }
        }
      }
    }
  }
  return orders;
}

INSTANTIATE_TEST_SUITE_P(AllowedOrders, DestroyOrder, testing::ValuesIn(every_order()), order_name);

}  // namespace

namespace {

TEST(ClientDestroyedInItsCompletion, TheLastGrpcObjectOfTheProcessMayBeDestroyedByItsOwnCompletion) {
  // No server in this process: the Client's channel is gRPC's last object, and destroying it joins
  // gRPC's callback threads, one of which may be running this very completion (a borrowed loop).
  for (int round = 0; round < 20; ++round) {
    asio::io_context context;
    auto client = std::make_shared<std::optional<rx::Client>>();
    client->emplace(context);
    std::promise<grpc::StatusCode> ended;
    // Port 1 on loopback: refused at once.
    (*client)->send("127.0.0.1:1", make_key(), with_id(round), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                    [client, &ended](grpc::Status status, json::object /*reply*/) {
                      client->reset();  // the user's last reference, from inside its completion
                      ended.set_value(status.error_code());
                    });
    std::future<grpc::StatusCode> code = ended.get_future();
    const auto give_up = std::chrono::steady_clock::now() + rx_test::HANG_GUARD;
    while (code.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < give_up) {
      context.run_one_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(rx_test::wait_for(code, "the completion"), grpc::StatusCode::UNAVAILABLE);
  }
}

}  // namespace

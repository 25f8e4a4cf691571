// rx::Client: completion tokens, where completions run, cancellation, and replies it refuses.
#include "utils/gate.hpp"
#include "utils/payloads.hpp"
#include "utils/run_coroutine.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using rx_test::describe;
using rx_test::make_key;

using rx_test::with_id;

struct Hold {
  explicit Hold(const rx::LoopExecutor& executor) : gate(executor) {}
  rx_test::Gate gate;
  std::promise<void> got;
};

// Echoes; holds the first request until the gate opens.
rx::Server::Task echo_after_holding_first(const std::shared_ptr<Hold>& hold) {
  return [hold, first = true](rx::Endpoint endpoint) mutable -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    if (std::exchange(first, false)) {
      hold->got.set_value();
      co_await hold->gate.wait();
    }
    co_await endpoint.push(std::move(payload));
  };
}

class ClientTest : public rx_test::ServerFixture {
 protected:
  void SetUp() override {
    ServerFixture::SetUp();
    ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_once));
  }

  // A second client with a Loop of its own; destroyed after TearDown has joined the loop thread.
  std::optional<rx::Client> own_client_;
};

TEST_F(ClientTest, SendWithACallbackCompletesOnTheClientsLoop) {
  std::promise<std::tuple<grpc::Status, json::object, bool>> done;
  client_.send(server_.target(), make_key(), with_id(1), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
               [&done, executor = client_.get_executor()](grpc::Status status, json::object reply) {
                 done.set_value({std::move(status), std::move(reply), executor.running_in_this_thread()});
               });
  auto [status, reply, on_loop] = rx_test::wait_for(done.get_future(), "the callback");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply, with_id(1));
  EXPECT_TRUE(on_loop);
}

TEST_F(ClientTest, SendWithUseFutureYieldsStatusAndReply) {
  std::future<std::tuple<grpc::Status, json::object>> future = client_.send(
      server_.target(), make_key(), with_id(2), rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future);
  auto [status, reply] = rx_test::wait_for(future, "the reply");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply, with_id(2));
}

TEST_F(ClientTest, SendWithCoAwaitYieldsStatusAndReplyOnTheLoop) {
  auto [status, reply, on_loop] = rx_test::spawn_and_wait(
      loop_.get_executor(), [this]() -> asio::awaitable<std::tuple<grpc::Status, json::object, bool>> {
        auto [sent_status, sent_reply] =
            co_await client_.send(server_.target(), make_key(), with_id(3), rx::SendOptions{rx_test::DEFAULT_DEADLINE});
        co_return std::tuple{std::move(sent_status), std::move(sent_reply),
                             client_.get_executor().running_in_this_thread()};
      });
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply, with_id(3));
  EXPECT_TRUE(on_loop);
}

TEST_F(ClientTest, SendWithoutOptionsUsesTheDefaultDeadline) {
  EXPECT_EQ(rx::SendOptions{}.timeout, std::chrono::seconds(30));
  auto future = client_.send(server_.target(), make_key(), with_id(4), asio::use_future);
  auto [status, reply] = rx_test::wait_for(future, "the reply");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply, with_id(4));
}

TEST_F(ClientTest, SendCompletesOnTheHandlersAssociatedExecutor) {
  asio::io_context other;
  std::promise<std::thread::id> ran_on;
  client_.send(server_.target(), make_key(), with_id(5), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
               asio::bind_executor(other, [&ran_on](grpc::Status status, json::object reply) {
                 EXPECT_TRUE(status.ok()) << describe(status);
                 EXPECT_EQ(reply, with_id(5));
                 ran_on.set_value(std::this_thread::get_id());
               }));
  other.run();  // the pending send counts as work of `other` until its handler has run there
  EXPECT_EQ(rx_test::wait_for(ran_on.get_future()), std::this_thread::get_id());
}

TEST_F(ClientTest, AClientWithItsOwnLoopCompletesOnThatLoop) {
  rx::Client& own = own_client_.emplace(context_);
  std::promise<bool> on_own_loop;
  own.send(server_.target(), make_key(), with_id(6), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
           [&on_own_loop, executor = own.get_executor()](grpc::Status status, json::object /*reply*/) {
             EXPECT_TRUE(status.ok()) << describe(status);
             on_own_loop.set_value(executor.running_in_this_thread());
           });
  EXPECT_TRUE(rx_test::wait_for(on_own_loop.get_future()));
  EXPECT_NE(own.get_executor(), client_.get_executor());
}

TEST_F(ClientTest, AClientWithItsOwnLoopCanBeDestroyedRightAfterItsLastCallCompleted) {
  // Client's contract: destroy it after its calls have completed. The completion runs on a gRPC
  // thread inside the client's own loop, so that thread must be done with the loop by the time
  // the handler has run. Repeated because the race it guards against is narrow.
  for (int round = 0; round < 300; ++round) {
    std::promise<grpc::Status> done;
    {
      rx::Client own(context_);
      own.send(server_.target(), make_key(), with_id(round), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
               [&done](grpc::Status status, json::object /*reply*/) { done.set_value(std::move(status)); });
      EXPECT_TRUE(rx_test::wait_for(done.get_future()).ok()) << round;
    }
  }
}

TEST_F(ClientTest, SendsFromManyThreadsAtOnceAllComplete) {
  constexpr int THREADS = 4;
  constexpr int SENDS_PER_THREAD = 25;
  std::vector<std::thread> threads;
  std::vector<std::vector<std::future<std::tuple<grpc::Status, json::object>>>> futures(THREADS);
  for (int t = 0; t < THREADS; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < SENDS_PER_THREAD; ++i) {
        futures[static_cast<std::size_t>(t)].push_back(send_async(make_key(), with_id(t * 1000 + i)));
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  for (int t = 0; t < THREADS; ++t) {
    for (int i = 0; i < SENDS_PER_THREAD; ++i) {
      auto [status, reply] = rx_test::wait_for(futures[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)]);
      EXPECT_TRUE(status.ok()) << describe(status);
      EXPECT_EQ(reply, with_id(t * 1000 + i));
    }
  }
}

TEST_F(ClientTest, CancellingASendThroughItsCancellationSlotReturnsCancelled) {
  auto hold = std::make_shared<Hold>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key("held"), echo_after_holding_first(hold)));

  asio::cancellation_signal signal;
  std::promise<grpc::Status> done;
  client_.send(server_.target(), make_key("held"), with_id(1), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
               asio::bind_cancellation_slot(signal.slot(), [&done](grpc::Status status, json::object reply) {
                 EXPECT_TRUE(reply.empty());
                 done.set_value(std::move(status));
               }));
  rx_test::wait_for(hold->got.get_future(), "the task to hold the request");
  // Asio requires the signal to be emitted on the handler's executor: the client's loop.
  asio::dispatch(client_.get_executor(), [&signal] { signal.emit(asio::cancellation_type::terminal); });
  const grpc::Status status = rx_test::wait_for(done.get_future(), "the cancelled send to complete");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << describe(status);

  hold->gate.open();  // the task's push finds the caller gone; the endpoint serves on
  const rx_test::SendResult next = send(make_key("held"), with_id(2));
  EXPECT_TRUE(next.status.ok()) << describe(next.status);
  EXPECT_EQ(next.reply, with_id(2));
}

TEST_F(ClientTest, CancellingTheCoroutineThatAwaitsASendReturnsCancelled) {
  auto hold = std::make_shared<Hold>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key("held"), echo_after_holding_first(hold)));
  asio::cancellation_signal signal;
  auto outcome = rx_test::spawn_with_future(
      loop_.get_executor(),
      [this]() -> asio::awaitable<grpc::Status> {
        auto [status, reply] = co_await client_.send(server_.target(), make_key("held"), with_id(1),
                                                     rx::SendOptions{rx_test::DEFAULT_DEADLINE});
        co_return status;
      },
      signal.slot());
  rx_test::wait_for(hold->got.get_future(), "the task to hold the request");
  asio::dispatch(loop_.get_executor(), [&signal] { signal.emit(asio::cancellation_type::terminal); });
  const grpc::Status status = rx_test::wait_for(outcome, "the coroutine to finish");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << describe(status);
  hold->gate.open();
}

TEST_F(ClientTest, CancellingAfterTheReplyArrivedChangesNothing) {
  asio::cancellation_signal signal;
  std::promise<grpc::Status> done;
  client_.send(server_.target(), make_key(), with_id(1), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
               asio::bind_cancellation_slot(signal.slot(), [&done](grpc::Status status, json::object /*reply*/) {
                 done.set_value(std::move(status));
               }));
  EXPECT_TRUE(rx_test::wait_for(done.get_future()).ok());
  std::promise<void> emitted;
  asio::dispatch(client_.get_executor(), [&] {
    signal.emit(asio::cancellation_type::terminal);  // the slot was cleared on completion
    emitted.set_value();
  });
  rx_test::wait_for(emitted.get_future());
}

// A server of the same service that answers every call with fixed reply text.
class FixedReplyService final : public remote_xcomm::v1::RemoteXComm::CallbackService {
 public:
  explicit FixedReplyService(std::string reply_json) : reply_json_(std::move(reply_json)) {}

  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context, const remote_xcomm::v1::SendRequest* /*request*/,
                                 remote_xcomm::v1::SendResponse* response) override {
    response->set_reply_json(reply_json_);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  std::string reply_json_;
};

rx_test::SendResult send_to_fixed_reply_server(rx::Client& client, const std::string& reply_json) {
  FixedReplyService service(reply_json);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  EXPECT_NE(port, 0);
  auto future = client.send("127.0.0.1:" + std::to_string(port), make_key(), with_id(1),
                            rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future);
  auto [status, reply] = rx_test::wait_for(future, "the reply");
  server->Shutdown();
  return {std::move(status), std::move(reply)};
}

TEST_F(ClientTest, AReplyThatIsNotAJsonObjectFailsWithInternal) {
  const rx_test::SendResult result = send_to_fixed_reply_server(client_, "[1, 2]");
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INTERNAL) << describe(result.status);
  EXPECT_NE(result.status.error_message().find("not a JSON object"), std::string::npos) << describe(result.status);
  EXPECT_TRUE(result.reply.empty());
}

TEST_F(ClientTest, AnEmptyReplyIsTheEmptyObject) {
  const rx_test::SendResult result = send_to_fixed_reply_server(client_, "");
  EXPECT_TRUE(result.status.ok()) << describe(result.status);
  EXPECT_TRUE(result.reply.empty());
}

TEST_F(ClientTest, ADeeplyNestedReplyIsAccepted) {
  // The client trusts the server it chose: no depth limit on replies.
  const std::string deep = "{\"a\":" + std::string(200, '[') + std::string(200, ']') + "}";
  const rx_test::SendResult result = send_to_fixed_reply_server(client_, deep);
  EXPECT_TRUE(result.status.ok()) << describe(result.status);
}

}  // namespace

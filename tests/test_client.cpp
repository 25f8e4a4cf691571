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
#include <grpc/grpc.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <stdlib.h>  // mkdtemp

#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
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

// A server of the same service that answers every call with fixed reply text, and remembers
// the deadline of the last call it got.
class FixedReplyService final : public remote_xcomm::v1::RemoteXComm::CallbackService {
 public:
  explicit FixedReplyService(std::string reply_json) : reply_json_(std::move(reply_json)) {}
  FixedReplyService(const FixedReplyService&) = delete;
  FixedReplyService& operator=(const FixedReplyService&) = delete;
  // The server that called Send() has shut down by now, but through gRPC's own synchronisation,
  // which ThreadSanitizer cannot see (gRPC is not instrumented): the lock shows it the order.
  ~FixedReplyService() override { const std::lock_guard lock(mutex_); }

  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context, const remote_xcomm::v1::SendRequest* /*request*/,
                                 remote_xcomm::v1::SendResponse* response) override {
    {
      const std::lock_guard lock(mutex_);
      last_deadline_ = context->deadline();
    }
    response->set_reply_json(reply_json_);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  std::chrono::system_clock::time_point last_deadline() {
    const std::lock_guard lock(mutex_);
    return last_deadline_;
  }

 private:
  std::string reply_json_;
  std::mutex mutex_;
  std::chrono::system_clock::time_point last_deadline_;
};

// Echoes, but holds every call until release(): calls stay in flight for as long as a test needs.
class HoldingService final : public remote_xcomm::v1::RemoteXComm::CallbackService {
 public:
  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context, const remote_xcomm::v1::SendRequest* request,
                                 remote_xcomm::v1::SendResponse* response) override {
    response->set_reply_json(request->payload_json());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const std::lock_guard lock(mutex_);
    held_.push_back(reactor);
    if (held_.size() == expected_ && arrived_) {
      arrived_->set_value();
    }
    return reactor;
  }

  // The returned future is ready once `count` calls are held.
  std::future<void> expect(std::size_t count) {
    const std::lock_guard lock(mutex_);
    expected_ = count;
    arrived_.emplace();
    return arrived_->get_future();
  }

  void release() {
    const std::lock_guard lock(mutex_);
    for (grpc::ServerUnaryReactor* reactor : held_) {
      reactor->Finish(grpc::Status::OK);
    }
    held_.clear();
  }

 private:
  std::mutex mutex_;
  std::vector<grpc::ServerUnaryReactor*> held_;
  std::size_t expected_ = 0;
  std::optional<std::promise<void>> arrived_;
};

// A raw gRPC server (no Remote XComm) serving `service` at `address` ("127.0.0.1:0" or "unix:PATH").
class RawServer {
 public:
  RawServer(grpc::Service& service, const std::string& address) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr) << "cannot listen on " << address;
    target_ = address.rfind("unix:", 0) == 0 ? address : "127.0.0.1:" + std::to_string(port);
  }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;
  ~RawServer() {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now());  // cancels whatever is still held
    }
  }

  [[nodiscard]] const std::string& target() const noexcept { return target_; }

 private:
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
};

// A fresh directory for unix sockets, removed with everything in it at scope exit.
class TempDirectory {
 public:
  TempDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "rx-client-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    path_ = pattern;
  }
  TempDirectory(const TempDirectory&) = delete;
  TempDirectory& operator=(const TempDirectory&) = delete;
  ~TempDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

rx_test::SendResult send_and_wait(rx::Client& client, const std::string& target, rx::SendOptions options) {
  auto future = client.send(target, make_key(), with_id(1), options, asio::use_future);
  auto [status, reply] = rx_test::wait_for(future, "the reply");
  return {std::move(status), std::move(reply)};
}

rx_test::SendResult send_to_fixed_reply_server(rx::Client& client, const std::string& reply_json) {
  FixedReplyService service(reply_json);
  const RawServer server(service, "127.0.0.1:0");
  return send_and_wait(client, server.target(), rx::SendOptions{rx_test::DEFAULT_DEADLINE});
}

TEST_F(ClientTest, AClientAndItsIoContextMayBeDestroyedWhileTheLastCompletionStillRuns) {
  // The headers allow destroying the Client and its io_context as soon as the completion has
  // signalled. The handler signals, then keeps running until the test thread has destroyed both:
  // whatever the gRPC thread does after user code returned must not touch them (ASan checks).
  // A raw gRPC server: the client's completion is then the only loop work in the process, so the
  // gRPC thread that delivers it usually borrows the client's loop. It may also hand it to the
  // loop's own thread (another thread still holds the process's borrow slot): the test thread
  // runs the io_context while it waits, and a handler it runs itself cannot wait for itself.
  FixedReplyService service("{}");
  const RawServer raw(service, "127.0.0.1:0");
  constexpr int ROUNDS = 200;
  const std::thread::id test_thread = std::this_thread::get_id();
  for (int round = 0; round < ROUNDS; ++round) {
    auto context = std::make_unique<asio::io_context>();
    auto own = std::make_unique<rx::Client>(*context);
    std::promise<grpc::Status> signalled;
    std::promise<void> destroyed;
    std::shared_future<void> destroyed_future = destroyed.get_future().share();
    auto handler_returned = std::make_shared<std::promise<void>>();
    std::future<void> returned = handler_returned->get_future();
    own->send(
        raw.target(), make_key(), with_id(round), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
        [&signalled, destroyed_future, handler_returned, test_thread](grpc::Status status, json::object /*reply*/) {
          signalled.set_value(std::move(status));
          if (std::this_thread::get_id() != test_thread) {
            // Bounded: the test thread gives the signal right after destroying.
            EXPECT_EQ(destroyed_future.wait_for(rx_test::HANG_GUARD), std::future_status::ready);
          }
          handler_returned->set_value();
        });
    std::future<grpc::Status> signal = signalled.get_future();
    const auto give_up = std::chrono::steady_clock::now() + rx_test::HANG_GUARD;
    while (signal.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < give_up) {
      context->run_one_for(std::chrono::milliseconds(10));  // returns early once a handler ran
    }
    const grpc::Status status = rx_test::wait_for(signal, "the completion to signal");
    EXPECT_TRUE(status.ok()) << round << ": " << describe(status);
    own.reset();
    context.reset();
    destroyed.set_value();
    rx_test::wait_for(returned, "the handler to return");
  }
}

TEST_F(ClientTest, ASendFromACompletionThatThenDestroysTheClientStillCompletesExactlyOnce) {
  // A completion run by a gRPC thread that borrowed the loop sends again: that RPC is started by
  // the same thread once the loop's run is over, after the handler has destroyed the Client.
  // With the fixture's loop thread running too, some rounds take that path and some do not.
  FixedReplyService service("{}");
  const RawServer raw(service, "127.0.0.1:0");
  constexpr int ROUNDS = 50;
  for (int round = 0; round < ROUNDS; ++round) {
    auto client = std::make_unique<rx::Client>(loop_);
    auto second_count = std::make_shared<std::atomic<int>>(0);
    auto second = std::make_shared<std::promise<grpc::Status>>();
    std::future<grpc::Status> second_done = second->get_future();
    client->send(raw.target(), make_key(), with_id(round), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                 [&client, &raw, round, second_count, second](const grpc::Status& status, json::object /*reply*/) {
                   EXPECT_TRUE(status.ok()) << round << ": " << describe(status);
                   client->send(raw.target(), make_key(), with_id(round), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                                [second_count, second](grpc::Status again, json::object /*reply*/) {
                                  if (second_count->fetch_add(1) == 0) {
                                    second->set_value(std::move(again));
                                  }
                                });
                   client.reset();
                 });
    const grpc::Status status = rx_test::wait_for(std::move(second_done), "the second send to complete");
    EXPECT_TRUE(status.ok()) << round << ": " << describe(status);
    EXPECT_EQ(client, nullptr);
    EXPECT_EQ(second_count->load(), 1) << round;
  }
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

std::string nested(std::size_t depth) { return "{\"a\":" + std::string(depth, '[') + std::string(depth, ']') + "}"; }

TEST_F(ClientTest, AReplyNestedDeeperThanTheLimitFailsWithInternalInsteadOfOverflowingTheStack) {
  // 400 KB, a tenth of the message limit, 200,000 levels deep.
  const rx_test::SendResult result = send_to_fixed_reply_server(client_, nested(200'000));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INTERNAL) << describe(result.status);
  EXPECT_NE(result.status.error_message().find("server sent a reply nested deeper than 64"), std::string::npos)
      << describe(result.status);
  EXPECT_TRUE(result.reply.empty());
}

TEST_F(ClientTest, TheReplyDepthLimitIsConfigurable) {
  EXPECT_EQ(rx::ClientOptions{}.max_json_depth, 64U);
  // {"a": 199 arrays} is 200 levels deep.
  EXPECT_EQ(send_to_fixed_reply_server(client_, nested(199)).status.error_code(), grpc::StatusCode::INTERNAL);
  rx::ClientOptions options;
  options.max_json_depth = 200;
  rx::Client& deep = own_client_.emplace(loop_, options);
  const rx_test::SendResult result = send_to_fixed_reply_server(deep, nested(199));
  EXPECT_TRUE(result.status.ok()) << describe(result.status);
  EXPECT_EQ(send_to_fixed_reply_server(deep, nested(200)).status.error_code(), grpc::StatusCode::INTERNAL);
}

TEST_F(ClientTest, ASendWithoutDeadlineReachesTheServerWithNone) {
  FixedReplyService service(R"({"ok": true})");
  const RawServer server(service, "127.0.0.1:0");
  const rx_test::SendResult result = send_and_wait(client_, server.target(), rx::SendOptions{rx::no_deadline});
  EXPECT_TRUE(result.status.ok()) << describe(result.status);
  EXPECT_EQ(result.reply, (json::object{{"ok", true}}));
  // gRPC reports "no deadline" as the largest time point; a 30 s default would be far below it.
  EXPECT_GT(service.last_deadline(), std::chrono::system_clock::now() + std::chrono::hours(24 * 365));
}

TEST_F(ClientTest, ASendWithoutDeadlineToTheLibrarysServerSucceeds) {
  auto future =
      client_.send(server_.target(), make_key(), with_id(7), rx::SendOptions{rx::no_deadline}, asio::use_future);
  auto [status, reply] = rx_test::wait_for(future, "the reply");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply, with_id(7));
}

TEST_F(ClientTest, WithoutWaitForReadyASendToAServerNotListeningFailsWithUnavailable) {
  const TempDirectory directory;
  const std::string target = "unix:" + (directory.path() / "server.sock").string();
  EXPECT_FALSE(rx::SendOptions{}.wait_for_ready);
  const rx_test::SendResult result = send_and_wait(client_, target, rx::SendOptions{rx_test::DEFAULT_DEADLINE});
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(result.status);
}

TEST_F(ClientTest, AWaitForReadySendIssuedBeforeTheServerListensCompletesOnceItDoes) {
  const TempDirectory directory;
  const std::string target = "unix:" + (directory.path() / "server.sock").string();
  rx::ClientOptions options;
  // Only for speed: reconnect soon after the server appears rather than after gRPC's 1 s+ backoff.
  options.channel_arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  options.channel_arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  options.channel_arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  rx::Client& client = own_client_.emplace(loop_, options);
  rx::SendOptions send_options{rx_test::DEFAULT_DEADLINE};
  send_options.wait_for_ready = true;
  auto future = client.send(target, make_key(), with_id(8), send_options, asio::use_future);

  FixedReplyService service(R"({"ready": true})");
  const RawServer server(service, target);
  auto [status, reply] = rx_test::wait_for(future, "the send to complete once the server listens");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply, (json::object{{"ready", true}}));
}

TEST_F(ClientTest, AChannelArgumentTakesEffectOnEveryChannel) {
  const std::string large_reply = R"({"text": ")" + std::string(1000, 'x') + R"("})";
  rx::ClientOptions options;
  options.channel_arguments.SetMaxReceiveMessageSize(100);  // overrides max_message_bytes
  rx::Client& small = own_client_.emplace(loop_, options);
  const rx_test::SendResult refused = send_to_fixed_reply_server(small, large_reply);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(refused.status);
  const rx_test::SendResult accepted = send_to_fixed_reply_server(client_, large_reply);
  EXPECT_TRUE(accepted.status.ok()) << describe(accepted.status);
}

TEST_F(ClientTest, SendsAlternatingBetweenTwoServersEachReachTheirOwn) {
  FixedReplyService service(R"({"from": "raw"})");
  const RawServer raw(service, "127.0.0.1:0");
  for (int i = 0; i < 4; ++i) {
    const rx_test::SendResult ours = send(make_key(), with_id(i));
    EXPECT_TRUE(ours.status.ok()) << describe(ours.status);
    EXPECT_EQ(ours.reply, with_id(i));
    const rx_test::SendResult theirs = send_and_wait(client_, raw.target(), rx::SendOptions{rx_test::DEFAULT_DEADLINE});
    EXPECT_TRUE(theirs.status.ok()) << describe(theirs.status);
    EXPECT_EQ(theirs.reply, (json::object{{"from", "raw"}}));
  }
}

// Destroys a Client while `CALLS` of its sends are held by a server, then lets them finish:
// each completes exactly once, with its real status, on the loop it belongs to.
void destroy_a_client_with_calls_in_flight(rx::Loop& loop, asio::io_context* own_context) {
  constexpr int ROUNDS = 20;
  constexpr std::size_t CALLS = 8;
  HoldingService service;
  const RawServer server(service, "127.0.0.1:0");
  for (int round = 0; round < ROUNDS; ++round) {
    std::future<void> arrived = service.expect(CALLS);
    auto counts = std::make_shared<std::array<std::atomic<int>, CALLS>>();
    auto on_loop = std::make_shared<std::array<std::atomic<bool>, CALLS>>();
    auto statuses = std::make_shared<std::array<grpc::Status, CALLS>>();
    std::vector<std::future<void>> done;
    {
      std::optional<rx::Client> client;
      if (own_context != nullptr) {
        client.emplace(*own_context);
      } else {
        client.emplace(loop);
      }
      const rx::LoopExecutor executor = client->get_executor();
      for (std::size_t i = 0; i < CALLS; ++i) {
        auto finished = std::make_shared<std::promise<void>>();
        done.push_back(finished->get_future());
        client->send(server.target(), make_key(), with_id(static_cast<int>(i)),
                     rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                     [i, executor, counts, on_loop, statuses, finished](grpc::Status status, json::object /*reply*/) {
                       (*on_loop)[i] = executor.running_in_this_thread();
                       (*statuses)[i] = std::move(status);
                       (*counts)[i].fetch_add(1);
                       finished->set_value();
                     });
      }
      rx_test::wait_for(arrived, "the server to hold every call");
    }  // the Client goes, its calls still in flight
    service.release();
    for (std::size_t i = 0; i < CALLS; ++i) {
      rx_test::wait_for(done[i], "call " + std::to_string(i) + " to complete");
      EXPECT_EQ((*counts)[i].load(), 1) << round << "/" << i;
      EXPECT_TRUE((*on_loop)[i].load()) << round << "/" << i;
      EXPECT_TRUE((*statuses)[i].ok()) << round << "/" << i << ": " << describe((*statuses)[i]);
    }
  }
}

TEST_F(ClientTest, AClientDestroyedWithCallsInFlightCompletesEachExactlyOnceOnItsLoop) {
  destroy_a_client_with_calls_in_flight(loop_, nullptr);
}

TEST_F(ClientTest, AClientWithItsOwnLoopDestroyedWithCallsInFlightCompletesEachExactlyOnce) {
  destroy_a_client_with_calls_in_flight(loop_, &context_);
}

}  // namespace

// rx::Client over the Exchange stream (ClientOptions::transport = exchange): thousands of sends in
// flight matched to their replies, the same statuses as the unary transport, deadlines and
// cancellation, a stream that breaks, and a Client destroyed with sends in flight.
#include "utils/callback_queue_hold.hpp"
#include "utils/gate.hpp"
#include "utils/payloads.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include "client/exchange_stream.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/request.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <grpc/grpc.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <stdlib.h>  // mkdtemp

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace pb = remote_xcomm::v1;
using rx_test::describe;
using rx_test::make_key;
using rx_test::with_id;

using SendFuture = std::future<std::tuple<grpc::Status, json::object>>;

rx::ClientOptions exchange_options(rx::ClientOptions options = {}) {
  options.transport = rx::Transport::exchange;
  return options;
}

SendFuture send_with(rx::Client& client, const std::string& target, const rx::TaskInstanceKey& key,
                     const json::object& payload, std::chrono::milliseconds deadline = rx_test::DEFAULT_DEADLINE) {
  return client.send(target, key, payload, rx::SendOptions{deadline}, asio::use_future);
}

// Waits for an event that a shared_future signals (every test waits on events it caused).
void wait_ready(const std::shared_future<void>& event, const std::string& what) {
  if (event.wait_for(rx_test::HANG_GUARD) != std::future_status::ready) {
    throw std::runtime_error("timed out waiting for " + what + " (something hangs)");
  }
}

// Every stream the test's Clients opened ends once they are gone and their sends completed.
void expect_every_stream_ended() {
  EXPECT_TRUE(rx::detail::wait_until_no_client_exchange_streams(rx_test::HANG_GUARD))
      << rx::detail::client_exchange_streams_alive() << " client Exchange streams still open";
}

rx_test::SendResult wait(SendFuture future, const std::string& what = "a reply") {
  auto [status, reply] = rx_test::wait_for(future, what);
  return {std::move(status), std::move(reply)};
}

// Holds every request it takes until `gate` opens, then echoes it; signals once `enough` are held.
struct Holder {
  Holder(const rx::LoopExecutor& executor, std::size_t signal_when_holding)
      : gate(executor), enough(signal_when_holding) {}
  rx_test::Gate gate;
  std::size_t enough;
  std::size_t held = 0;  // loop-confined
  std::promise<void> holding;
  std::shared_future<void> holding_future = holding.get_future().share();
};

rx::Server::Task holding_task(const std::shared_ptr<Holder>& holder) {
  return [holder](rx::Endpoint endpoint) -> asio::awaitable<void> {
    for (;;) {
      rx::Request request = co_await endpoint.next();
      if (++holder->held == holder->enough) {
        holder->holding.set_value();
      }
      // Each request waits in a coroutine of its own, so that the task takes the next at once.
      asio::co_spawn(
          endpoint.get_executor(),
          [holder, request = std::move(request)]() mutable -> asio::awaitable<void> {
            co_await holder->gate.wait();
            json::object outputs = request.payload();
            co_await request.reply(std::move(outputs), asio::as_tuple(asio::use_awaitable));
          },
          asio::detached);
    }
  };
}

// The server side of an Exchange stream written with plain gRPC: it reads every batch and either
// answers each request frame with `reply_json` at once, or never answers; it records the cancel
// frames it reads.
class RawExchangeService final : public pb::RemoteXComm::CallbackService {
 public:
  explicit RawExchangeService(std::optional<std::string> reply_json) : reply_json_(std::move(reply_json)) {}
  RawExchangeService(const RawExchangeService&) = delete;
  RawExchangeService& operator=(const RawExchangeService&) = delete;
  // Reached after the server shut down, through gRPC's synchronisation that TSan cannot see.
  ~RawExchangeService() override { const std::lock_guard lock(mutex_); }

  grpc::ServerBidiReactor<pb::ExchangeRequest, pb::ExchangeResponse>* Exchange(
      grpc::CallbackServerContext* /*context*/) override {
    const std::lock_guard lock(mutex_);  // orders this call before the destructor for TSan
    return new Reactor(*this);
  }

  /// Ready once a cancel frame for `id` was read.
  std::shared_future<void> cancel_of(std::uint64_t id) {
    const std::lock_guard lock(mutex_);
    return cancels_[id].get_future().share();
  }

 private:
  class Reactor final : public grpc::ServerBidiReactor<pb::ExchangeRequest, pb::ExchangeResponse> {
   public:
    explicit Reactor(RawExchangeService& service) : service_(service) { StartRead(&in_); }
    void OnReadDone(bool ok) override {
      const std::lock_guard lock(mutex_);
      if (!ok) {
        finish();
        return;
      }
      out_.Clear();
      for (const pb::ExchangeFrame& frame : in_.frames()) {
        if (frame.cancel()) {
          service_.cancelled(frame.id());
        } else if (service_.reply_json_) {
          pb::ExchangeReply* reply = out_.add_replies();
          reply->set_id(frame.id());
          reply->set_reply_json(*service_.reply_json_);
        }
      }
      if (out_.replies_size() > 0) {
        StartWrite(&out_);  // the next read starts once it is written
      } else {
        StartRead(&in_);
      }
    }
    void OnWriteDone(bool ok) override {
      const std::lock_guard lock(mutex_);
      if (ok) {
        StartRead(&in_);
      } else {
        finish();
      }
    }
    void OnCancel() override {
      const std::lock_guard lock(mutex_);
      finish();
    }
    void OnDone() override { delete this; }

   private:
    void finish() {
      if (!finished_) {
        finished_ = true;
        Finish(grpc::Status::OK);
      }
    }
    RawExchangeService& service_;
    std::mutex mutex_;
    pb::ExchangeRequest in_;
    pb::ExchangeResponse out_;
    bool finished_ = false;
  };

  void cancelled(std::uint64_t id) {
    const std::lock_guard lock(mutex_);
    std::promise<void>& cancel = cancels_[id];
    try {
      cancel.set_value();
    } catch (const std::future_error&) {  // a second cancel of the same id
    }
  }

  std::optional<std::string> reply_json_;
  std::mutex mutex_;
  std::map<std::uint64_t, std::promise<void>> cancels_;
};

class ClientExchangeTest : public rx_test::ServerFixture {
 protected:
  explicit ClientExchangeTest(rx::ServerOptions options = {}) : ServerFixture(std::move(options)) {}

  void TearDown() override {
    // Its streams end while the server and the loop still run.
    exchange_.reset();
    expect_every_stream_ended();
    // Requests still held wait on their gates, which would keep the loop's io_context running.
    for (const auto& holder : holders_) {
      holder->gate.open();
    }
    ServerFixture::TearDown();
  }

  /// The Client under test: on the fixture's loop, over the Exchange transport.
  rx::Client& exchange(rx::ClientOptions options = {}) {
    if (!exchange_) {
      exchange_.emplace(loop_, exchange_options(std::move(options)));
    }
    return *exchange_;
  }

  SendFuture send_exchange(const rx::TaskInstanceKey& key, const json::object& payload,
                           std::chrono::milliseconds deadline = rx_test::DEFAULT_DEADLINE) {
    return send_with(exchange(), server_.target(), key, payload, deadline);
  }

  std::shared_ptr<Holder> attach_holder(const rx::TaskInstanceKey& key, std::size_t signal_when_holding = 1) {
    auto holder = std::make_shared<Holder>(server_.get_executor(), signal_when_holding);
    EXPECT_TRUE(server_.attach(key, holding_task(holder)));
    holders_.push_back(holder);
    return holder;
  }

  // Raw gRPC services for the tests that need one (a RawServer serves it). Built before anything
  // starts gRPC's threads: a service object built after them is read by their first call through
  // gRPC's synchronisation, which ThreadSanitizer cannot see.
  RawExchangeService silent_{std::nullopt};         // never answers
  RawExchangeService not_an_object_{"[1, 2]"};      // answers every request with a JSON array
  RawExchangeService ready_{R"({"ready": true})"};  // answers every request with {"ready": true}
  rx_test::CallbackQueueHold callback_queue_hold_;  // destroyed after exchange_
  std::optional<rx::Client> exchange_;
  std::vector<std::shared_ptr<Holder>> holders_;
};

// ---- many sends, one stream ------------------------------------------------------------------

// What the completions of many sends saw; written on the loop, read after `all` is ready.
struct Tally {
  explicit Tally(std::size_t sends) : completions(sends, 0), statuses(sends), replies(sends) {}
  std::vector<int> completions;
  std::vector<grpc::Status> statuses;
  std::vector<json::object> replies;
  std::size_t done = 0;
  std::promise<void> all;
};

json::object numbered(std::size_t i, std::size_t endpoint) {
  json::object payload;
  payload["id"] = i;
  payload["endpoint"] = endpoint;
  return payload;
}

TEST_F(ClientExchangeTest, ThousandsOfSendsInFlightToManyEndpointsAreEachMatchedToTheirOwnReply) {
  constexpr std::size_t ENDPOINTS = 64;
  constexpr std::size_t SENDS = 4096;
  for (std::size_t e = 0; e < ENDPOINTS; ++e) {
    ASSERT_TRUE(server_.attach(make_key("task", static_cast<int>(e)), rx_test::echo_forever));
  }
  rx::Client& client = exchange();
  auto tally = std::make_shared<Tally>(SENDS);
  const std::string target = server_.target();
  // All from one loop job: every send is in flight before the first completion can run.
  asio::post(loop_.get_executor(), [&client, tally, target] {
    for (std::size_t i = 0; i < SENDS; ++i) {
      const std::size_t endpoint = i % ENDPOINTS;
      client.send(target, make_key("task", static_cast<int>(endpoint)), numbered(i, endpoint),
                  rx::SendOptions{rx_test::DEFAULT_DEADLINE}, [tally, i](grpc::Status status, json::object reply) {
                    ++tally->completions[i];
                    tally->statuses[i] = std::move(status);
                    tally->replies[i] = std::move(reply);
                    if (++tally->done == SENDS) {
                      tally->all.set_value();
                    }
                  });
    }
  });
  rx_test::wait_for(tally->all.get_future(), "every send to complete");
  for (std::size_t i = 0; i < SENDS; ++i) {
    EXPECT_EQ(tally->completions[i], 1) << i;
    ASSERT_TRUE(tally->statuses[i].ok()) << i << ": " << describe(tally->statuses[i]);
    EXPECT_EQ(tally->replies[i], numbered(i, i % ENDPOINTS)) << "send " << i << " got another send's reply";
  }
}

TEST_F(ClientExchangeTest, SendsFromManyThreadsAtOnceAllCompleteWithTheirOwnReplies) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  constexpr int THREADS = 4;
  constexpr int SENDS_PER_THREAD = 200;
  rx::Client& client = exchange();
  std::vector<std::vector<SendFuture>> futures(THREADS);
  std::vector<std::thread> threads;
  for (int t = 0; t < THREADS; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < SENDS_PER_THREAD; ++i) {
        futures[static_cast<std::size_t>(t)].push_back(
            send_with(client, server_.target(), make_key(), with_id(t * 1000 + i)));
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  for (int t = 0; t < THREADS; ++t) {
    for (int i = 0; i < SENDS_PER_THREAD; ++i) {
      const rx_test::SendResult result =
          wait(std::move(futures[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)]));
      ASSERT_TRUE(result.status.ok()) << describe(result.status);
      EXPECT_EQ(result.reply, with_id(t * 1000 + i));
    }
  }
}

TEST_F(ClientExchangeTest, ACoroutineAwaitsASendAndResumesOnTheLoop) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  rx::Client& client = exchange();
  auto done = asio::co_spawn(
      loop_.get_executor(),
      [&]() -> asio::awaitable<std::tuple<grpc::Status, json::object, bool>> {
        auto [status, reply] =
            co_await client.send(server_.target(), make_key(), with_id(3), rx::SendOptions{rx_test::DEFAULT_DEADLINE});
        co_return std::tuple{std::move(status), std::move(reply), loop_.get_executor().running_in_this_thread()};
      },
      asio::use_future);
  auto [status, reply, on_loop] = rx_test::wait_for(done, "the coroutine");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply, with_id(3));
  EXPECT_TRUE(on_loop);
}

// ---- the same statuses as unary ---------------------------------------------------------------

json::object nested_payload(int depth) {
  json::value value = json::object();
  for (int i = 0; i < depth; ++i) {
    json::object outer;
    outer["a"] = std::move(value);
    value = std::move(outer);
  }
  return std::move(value.as_object());
}

TEST_F(ClientExchangeTest, WhatTheServerRefusesEndsWithTheSameStatusAsOverUnary) {
  ASSERT_TRUE(server_.attach(make_key("echo"), rx_test::echo_forever));
  ASSERT_TRUE(server_.attach(make_key("throws"), [](rx::Endpoint endpoint) -> asio::awaitable<void> {
    co_await endpoint.get();
    throw std::runtime_error("the task failed on purpose");
  }));
  struct Case {
    std::string name;
    rx::TaskInstanceKey key;
    json::object payload;
    grpc::StatusCode expected;
  };
  const std::vector<Case> cases{
      {"no such endpoint", make_key("nobody"), with_id(1), grpc::StatusCode::NOT_FOUND},
      {"payload nested deeper than the server's limit", make_key("echo"), nested_payload(100),
       grpc::StatusCode::INVALID_ARGUMENT},
      {"the task throws", make_key("throws"), with_id(2), grpc::StatusCode::INTERNAL},
  };
  for (const Case& c : cases) {
    const rx_test::SendResult unary = wait(send_with(client_, server_.target(), c.key, c.payload));
    const rx_test::SendResult streamed = wait(send_exchange(c.key, c.payload));
    EXPECT_EQ(unary.status.error_code(), c.expected) << c.name << ": " << describe(unary.status);
    EXPECT_EQ(streamed.status.error_code(), unary.status.error_code()) << c.name << ": " << describe(streamed.status);
    EXPECT_EQ(streamed.status.error_message(), unary.status.error_message()) << c.name;
    EXPECT_TRUE(streamed.reply.empty()) << c.name;
  }
  // The stream lives on after them.
  const rx_test::SendResult after = wait(send_exchange(make_key("echo"), with_id(3)));
  EXPECT_TRUE(after.status.ok()) << describe(after.status);
  EXPECT_EQ(after.reply, with_id(3));
}

TEST_F(ClientExchangeTest, ASendOverTheMessageLimitFailsAloneWithResourceExhausted) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  rx::ClientOptions options;
  options.max_message_bytes = 1000;
  rx::Client& client = exchange(options);
  json::object large;
  large["text"] = std::string(2000, 'x');
  const rx_test::SendResult refused = wait(send_with(client, server_.target(), make_key(), large));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(refused.status);
  const rx_test::SendResult next = wait(send_with(client, server_.target(), make_key(), with_id(1)));
  EXPECT_TRUE(next.status.ok()) << describe(next.status);
}

// ---- deadlines and cancellation ---------------------------------------------------------------

TEST_F(ClientExchangeTest, ASendWhoseDeadlinePassesWhileQueuedEndsWithDeadlineExceeded) {
  const auto holder = attach_holder(make_key("held"));
  SendFuture first = send_exchange(make_key("held"), with_id(1));
  wait_ready(holder->holding_future, "the task to hold the first request");
  // Queued behind the held request, which stays held until this one has its status.
  const rx_test::SendResult queued = wait(send_exchange(make_key("held"), with_id(2), std::chrono::milliseconds(50)));
  EXPECT_EQ(queued.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << describe(queued.status);
  EXPECT_TRUE(queued.reply.empty());
  holder->gate.open();
  const rx_test::SendResult answered = wait(std::move(first));
  EXPECT_TRUE(answered.status.ok()) << describe(answered.status);
  EXPECT_EQ(answered.reply, with_id(1));
  const rx_test::SendResult next = wait(send_exchange(make_key("held"), with_id(3)));
  EXPECT_TRUE(next.status.ok()) << describe(next.status);
}

// Cancels through a cancellation slot, emitted on the client's loop (the handler's executor).
struct CancellableSend {
  asio::cancellation_signal signal;
  std::promise<rx_test::SendResult> done;
  std::future<rx_test::SendResult> result = done.get_future();
  std::atomic<int> completions{0};
};

void send_cancellable(rx::Client& client, const std::string& target, const rx::TaskInstanceKey& key,
                      const json::object& payload, const std::shared_ptr<CancellableSend>& s) {
  client.send(target, key, payload, rx::SendOptions{rx_test::DEFAULT_DEADLINE},
              asio::bind_cancellation_slot(s->signal.slot(), [s](grpc::Status status, json::object reply) {
                if (s->completions.fetch_add(1) == 0) {
                  s->done.set_value({std::move(status), std::move(reply)});
                }
              }));
}

void emit_cancel(const rx::LoopExecutor& loop, const std::shared_ptr<CancellableSend>& s) {
  asio::dispatch(loop, [s] { s->signal.emit(asio::cancellation_type::terminal); });
}

TEST_F(ClientExchangeTest, CancellingAQueuedSendEndsItWithCancelledAndTheEndpointServesOn) {
  const auto holder = attach_holder(make_key("held"));
  SendFuture first = send_exchange(make_key("held"), with_id(1));
  wait_ready(holder->holding_future, "the task to hold the first request");
  auto queued = std::make_shared<CancellableSend>();
  send_cancellable(exchange(), server_.target(), make_key("held"), with_id(2), queued);
  emit_cancel(loop_.get_executor(), queued);
  const rx_test::SendResult cancelled = rx_test::wait_for(queued->result, "the cancelled send");
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED) << describe(cancelled.status);
  EXPECT_TRUE(cancelled.reply.empty());
  holder->gate.open();
  EXPECT_TRUE(wait(std::move(first)).status.ok());
  const rx_test::SendResult next = wait(send_exchange(make_key("held"), with_id(3)));
  EXPECT_TRUE(next.status.ok()) << describe(next.status);
  EXPECT_EQ(next.reply, with_id(3));
  EXPECT_EQ(queued->completions.load(), 1);
}

TEST_F(ClientExchangeTest, CancellingAHeldSendEndsItWithCancelledAndTheTaskSeesItsCancellation) {
  std::promise<void> got;
  std::promise<bool> task_saw_cancel;
  ASSERT_TRUE(server_.attach(make_key("held"), [&got, &task_saw_cancel](rx::Endpoint rx) -> asio::awaitable<void> {
    rx::Request request = co_await rx.next();
    got.set_value();
    asio::steady_timer wait(co_await asio::this_coro::executor, std::chrono::hours(1));
    co_await wait.async_wait(
        asio::bind_cancellation_slot(request.cancellation_slot(), asio::as_tuple(asio::use_awaitable)));
    task_saw_cancel.set_value(request.cancelled());
  }));
  auto held = std::make_shared<CancellableSend>();
  send_cancellable(exchange(), server_.target(), make_key("held"), with_id(1), held);
  rx_test::wait_for(got.get_future(), "the task to hold the request");
  emit_cancel(loop_.get_executor(), held);
  const rx_test::SendResult cancelled = rx_test::wait_for(held->result, "the cancelled send");
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED) << describe(cancelled.status);
  // The cancel frame reaches the task.
  EXPECT_TRUE(rx_test::wait_for(task_saw_cancel.get_future(), "the task to see the cancellation"));
  EXPECT_EQ(held->completions.load(), 1);
}

TEST_F(ClientExchangeTest, CancellingAfterTheReplyArrivedChangesNothing) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  auto s = std::make_shared<CancellableSend>();
  send_cancellable(exchange(), server_.target(), make_key(), with_id(1), s);
  EXPECT_TRUE(rx_test::wait_for(s->result).status.ok());
  std::promise<void> emitted;
  asio::dispatch(loop_.get_executor(), [&] {
    s->signal.emit(asio::cancellation_type::terminal);  // the slot was cleared on completion
    emitted.set_value();
  });
  rx_test::wait_for(emitted.get_future());
  EXPECT_EQ(s->completions.load(), 1);
}

// ---- against raw gRPC servers --------------------------------------------------------------------

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
      server_->Shutdown(std::chrono::system_clock::now());  // cancels whatever is still open
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
    std::string pattern = (std::filesystem::temp_directory_path() / "rx-exchange-XXXXXX").string();
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

TEST_F(ClientExchangeTest, AServerThatNeverAnswersCannotHoldASendPastItsDeadline) {
  RawExchangeService& silent = silent_;
  const RawServer raw(silent, "127.0.0.1:0");
  rx::Client& client = exchange();
  const std::shared_future<void> cancel = silent.cancel_of(0);  // the stream's first send has id 0
  const rx_test::SendResult result =
      wait(send_with(client, raw.target(), make_key(), with_id(1), std::chrono::milliseconds(100)));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << describe(result.status);
  // And the client tells the server it gave up.
  EXPECT_EQ(cancel.wait_for(rx_test::HANG_GUARD), std::future_status::ready) << "no cancel frame for the send";
  exchange_.reset();  // before the raw server, which cancels the stream on its shutdown anyway
}

TEST_F(ClientExchangeTest, AReplyThatIsNotAJsonObjectFailsWithInternalAsOverUnary) {
  const RawServer raw(not_an_object_, "127.0.0.1:0");
  const rx_test::SendResult result = wait(send_with(exchange(), raw.target(), make_key(), with_id(1)));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INTERNAL) << describe(result.status);
  EXPECT_NE(result.status.error_message().find("not a JSON object"), std::string::npos) << describe(result.status);
  EXPECT_TRUE(result.reply.empty());
  exchange_.reset();
}

TEST_F(ClientExchangeTest, WithoutWaitForReadyASendToAServerNotListeningFailsWithUnavailable) {
  const TempDirectory directory;
  const std::string target = "unix:" + (directory.path() / "server.sock").string();
  const rx_test::SendResult result = wait(send_with(exchange(), target, make_key(), with_id(1)));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(result.status);
  EXPECT_NE(result.status.error_message().find("Exchange stream ended"), std::string::npos) << describe(result.status);
}

TEST_F(ClientExchangeTest, AWaitForReadySendIssuedBeforeTheServerListensCompletesOnceItDoes) {
  const TempDirectory directory;
  const std::string target = "unix:" + (directory.path() / "server.sock").string();
  rx::ClientOptions options;
  // Only for speed: reconnect soon after the server appears rather than after gRPC's 1 s+ backoff.
  options.channel_arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  options.channel_arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  options.channel_arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  rx::Client& client = exchange(options);
  rx::SendOptions send_options{rx_test::DEFAULT_DEADLINE};
  send_options.wait_for_ready = true;
  SendFuture ready = client.send(target, make_key(), with_id(8), send_options, asio::use_future);
  // A send without wait_for_ready to the same target goes on a stream of its own and fails at once.
  const rx_test::SendResult impatient = wait(send_with(client, target, make_key(), with_id(9)));
  EXPECT_EQ(impatient.status.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(impatient.status);

  const RawServer server(ready_, target);
  const rx_test::SendResult result = wait(std::move(ready), "the send to complete once the server listens");
  EXPECT_TRUE(result.status.ok()) << describe(result.status);
  EXPECT_EQ(result.reply, (json::object{{"ready", true}}));
  exchange_.reset();
}

// ---- a stream that ends ----------------------------------------------------------------------

TEST_F(ClientExchangeTest, AServerShutDownWithSendsInFlightCompletesEachWithOkOrUnavailable) {
  constexpr int HOLDERS = 4;
  constexpr int ECHOES = 4;
  constexpr int SENDS_EACH = 50;
  std::vector<std::shared_ptr<Holder>> holders;
  for (int h = 0; h < HOLDERS; ++h) {
    holders.push_back(attach_holder(make_key("held", h), SENDS_EACH));
  }
  for (int e = 0; e < ECHOES; ++e) {
    ASSERT_TRUE(server_.attach(make_key("echo", e), rx_test::echo_forever));
  }
  rx::Client& client = exchange();
  constexpr std::size_t SENDS = static_cast<std::size_t>((HOLDERS + ECHOES) * SENDS_EACH);
  auto tally = std::make_shared<Tally>(SENDS);
  const std::string target = server_.target();
  asio::post(loop_.get_executor(), [&client, tally, target] {
    for (std::size_t i = 0; i < SENDS; ++i) {
      const auto endpoint = static_cast<int>(i % (HOLDERS + ECHOES));
      const rx::TaskInstanceKey key =
          endpoint < HOLDERS ? make_key("held", endpoint) : make_key("echo", endpoint - HOLDERS);
      client.send(target, key, with_id(static_cast<int>(i)), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                  [tally, i](grpc::Status status, json::object reply) {
                    ++tally->completions[i];
                    tally->statuses[i] = std::move(status);
                    tally->replies[i] = std::move(reply);
                    if (++tally->done == SENDS) {
                      tally->all.set_value();
                    }
                  });
    }
  });
  for (const auto& holder : holders) {
    wait_ready(holder->holding_future, "a task to hold its requests");
  }
  server_.shutdown();
  rx_test::wait_for(tally->all.get_future(), "every send to complete");
  int unavailable = 0;
  for (std::size_t i = 0; i < SENDS; ++i) {
    EXPECT_EQ(tally->completions[i], 1) << i;
    const grpc::StatusCode code = tally->statuses[i].error_code();
    EXPECT_TRUE(code == grpc::StatusCode::OK || code == grpc::StatusCode::UNAVAILABLE)
        << i << ": " << describe(tally->statuses[i]);
    if (code == grpc::StatusCode::OK) {
      EXPECT_EQ(tally->replies[i], with_id(static_cast<int>(i)));
    } else {
      ++unavailable;
    }
    if (static_cast<int>(i % (HOLDERS + ECHOES)) < HOLDERS) {
      EXPECT_EQ(code, grpc::StatusCode::UNAVAILABLE) << i << " was held by its task, which never answered";
    }
  }
  EXPECT_GE(unavailable, HOLDERS * SENDS_EACH);
  // The next send opens a new stream, which finds no server.
  const rx_test::SendResult after = wait(send_exchange(make_key("echo", 0), with_id(1)));
  EXPECT_EQ(after.status.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(after.status);
}

class ClientExchangeSmallServerTest : public ClientExchangeTest {
 protected:
  static constexpr int SERVER_LIMIT = 64 * 1024;
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.max_message_bytes = SERVER_LIMIT;
    return options;
  }
  ClientExchangeSmallServerTest() : ClientExchangeTest(options()) {}
};

TEST_F(ClientExchangeSmallServerTest, AfterTheStreamBreaksEverySendOnItFailsAndTheNextGoOverANewStream) {
  constexpr int HELD = 10;
  const auto holder = attach_holder(make_key("held"), HELD);
  ASSERT_TRUE(server_.attach(make_key("echo"), rx_test::echo_forever));
  rx::ClientOptions options;
  options.max_message_bytes = 1024 * 1024;  // more than the server takes: a large send breaks the stream
  rx::Client& client = exchange(options);
  std::vector<SendFuture> held;
  for (int i = 0; i < HELD; ++i) {
    held.push_back(send_with(client, server_.target(), make_key("held"), with_id(i)));
  }
  wait_ready(holder->holding_future, "the task to hold every request");
  json::object large;
  large["text"] = std::string(2 * SERVER_LIMIT, 'x');
  const rx_test::SendResult broke = wait(send_with(client, server_.target(), make_key("echo"), large));
  EXPECT_EQ(broke.status.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(broke.status);
  EXPECT_NE(broke.status.error_message().find("Exchange stream ended"), std::string::npos) << describe(broke.status);
  for (int i = 0; i < HELD; ++i) {
    const rx_test::SendResult result = wait(std::move(held[static_cast<std::size_t>(i)]));
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE) << i << ": " << describe(result.status);
  }
  // A second round, on a new stream.
  std::vector<SendFuture> round;
  for (int i = 0; i < HELD; ++i) {
    round.push_back(send_with(client, server_.target(), make_key("echo"), with_id(100 + i)));
  }
  for (int i = 0; i < HELD; ++i) {
    const rx_test::SendResult result = wait(std::move(round[static_cast<std::size_t>(i)]));
    EXPECT_TRUE(result.status.ok()) << i << ": " << describe(result.status);
    EXPECT_EQ(result.reply, with_id(100 + i));
  }
}

// ---- lifetimes -------------------------------------------------------------------------------

// Destroys an exchange Client while CALLS of its sends are held by tasks, then lets them answer:
// each completes exactly once, with its real status, on the loop it belongs to.
void destroy_a_client_with_sends_in_flight(rx::Server& server, rx::Loop& loop, asio::io_context* own_context) {
  constexpr int ROUNDS = 10;
  constexpr std::size_t CALLS = 8;
  for (int round = 0; round < ROUNDS; ++round) {
    std::string task("round-");
    task += std::to_string(round);
    std::vector<std::shared_ptr<Holder>> holders;
    for (std::size_t i = 0; i < CALLS; ++i) {
      auto holder = std::make_shared<Holder>(server.get_executor(), 1);
      ASSERT_TRUE(server.attach(make_key(task, static_cast<int>(i)), holding_task(holder)));
      holders.push_back(std::move(holder));
    }
    auto counts = std::make_shared<std::array<std::atomic<int>, CALLS>>();
    auto on_loop = std::make_shared<std::array<std::atomic<bool>, CALLS>>();
    auto statuses = std::make_shared<std::array<grpc::Status, CALLS>>();
    std::vector<std::future<void>> done;
    {
      std::optional<rx::Client> client;
      if (own_context != nullptr) {
        client.emplace(*own_context, exchange_options());
      } else {
        client.emplace(loop, exchange_options());
      }
      const rx::LoopExecutor executor = client->get_executor();
      for (std::size_t i = 0; i < CALLS; ++i) {
        auto finished = std::make_shared<std::promise<void>>();
        done.push_back(finished->get_future());
        client->send(server.target(), make_key(task, static_cast<int>(i)), with_id(static_cast<int>(i)),
                     rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                     [i, executor, counts, on_loop, statuses, finished](grpc::Status status, json::object /*reply*/) {
                       (*on_loop)[i] = executor.running_in_this_thread();
                       (*statuses)[i] = std::move(status);
                       (*counts)[i].fetch_add(1);
                       finished->set_value();
                     });
      }
      for (const auto& holder : holders) {
        wait_ready(holder->holding_future, "the tasks to hold every send");
      }
    }  // the Client goes, its sends still in flight
    for (const auto& holder : holders) {
      holder->gate.open();
    }
    for (std::size_t i = 0; i < CALLS; ++i) {
      rx_test::wait_for(done[i], "send " + std::to_string(i) + " to complete");
      EXPECT_EQ((*counts)[i].load(), 1) << round << "/" << i;
      EXPECT_TRUE((*on_loop)[i].load()) << round << "/" << i;
      EXPECT_TRUE((*statuses)[i].ok()) << round << "/" << i << ": " << describe((*statuses)[i]);
    }
    expect_every_stream_ended();  // the orphaned stream ends after its last send
  }
}

TEST_F(ClientExchangeTest, AClientDestroyedWithSendsInFlightCompletesEachExactlyOnceOnItsLoop) {
  destroy_a_client_with_sends_in_flight(server_, loop_, nullptr);
}

TEST_F(ClientExchangeTest, AClientWithItsOwnLoopDestroyedWithSendsInFlightCompletesEachExactlyOnce) {
  destroy_a_client_with_sends_in_flight(server_, loop_, &context_);
}

TEST_F(ClientExchangeTest, AClientAndItsIoContextMayBeDestroyedWhileTheLastCompletionStillRuns) {
  // As for unary (test_client): the handler signals, then keeps running until the test thread has
  // destroyed the Client and its io_context. The stream outlives both: whatever it does after
  // user code returned must touch neither (ASan checks).
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  constexpr int ROUNDS = 100;
  const std::thread::id test_thread = std::this_thread::get_id();
  for (int round = 0; round < ROUNDS; ++round) {
    auto context = std::make_unique<asio::io_context>();
    auto own = std::make_unique<rx::Client>(*context, exchange_options());
    std::promise<grpc::Status> signalled;
    std::promise<void> destroyed;
    std::shared_future<void> destroyed_future = destroyed.get_future().share();
    auto handler_returned = std::make_shared<std::promise<void>>();
    std::future<void> returned = handler_returned->get_future();
    own->send(
        server_.target(), make_key(), with_id(round), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
        [&signalled, destroyed_future, handler_returned, test_thread](grpc::Status status, json::object /*reply*/) {
          signalled.set_value(std::move(status));
          if (std::this_thread::get_id() != test_thread) {
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
    expect_every_stream_ended();  // its last jobs went to a loop whose io_context is gone
  }
}

TEST_F(ClientExchangeTest, ASendFromACompletionThatThenDestroysTheClientStillCompletesExactlyOnce) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  constexpr int ROUNDS = 50;
  for (int round = 0; round < ROUNDS; ++round) {
    auto client = std::make_unique<rx::Client>(loop_, exchange_options());
    auto second_count = std::make_shared<std::atomic<int>>(0);
    auto second = std::make_shared<std::promise<grpc::Status>>();
    std::future<grpc::Status> second_done = second->get_future();
    const std::string target = server_.target();
    client->send(target, make_key(), with_id(round), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                 [&client, target, round, second_count, second](const grpc::Status& status, json::object /*reply*/) {
                   EXPECT_TRUE(status.ok()) << round << ": " << describe(status);
                   client->send(target, make_key(), with_id(round), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
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
    expect_every_stream_ended();
  }
}

}  // namespace

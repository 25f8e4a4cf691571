// The request object (rx::Request, Endpoint::next): on the queue alone with fake replies, then end
// to end through gRPC, where the caller's deadline and cancel must reach a task while it works.
#include "utils/endpoint_fixture.hpp"
#include "utils/fake_reply.hpp"
#include "utils/gate.hpp"
#include "utils/payloads.hpp"
#include "utils/run_coroutine.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/request.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using boost::system::error_code;
using rx_test::describe;
using rx_test::FakeReply;
using rx_test::FakeReplyPtr;
using rx_test::make_key;
using rx_test::with_id;

// ---- the queue alone -------------------------------------------------------------------------

class RequestQueueTest : public rx_test::EndpointFixture {
 protected:
  struct NextOutcome {
    std::optional<error_code> error;  // set once next() completed
    rx::Request request;
  };

  std::shared_ptr<NextOutcome> start_next(asio::cancellation_slot slot = {}) {
    auto outcome = std::make_shared<NextOutcome>();
    on_loop([&] {
      endpoint_.next(asio::bind_cancellation_slot(
          slot, asio::bind_executor(executor_, [outcome](error_code error, rx::Request request) {
            outcome->error = error;
            outcome->request = std::move(request);
          })));
    });
    return outcome;
  }

  error_code answer(rx::Request& request, json::object outputs) {
    std::optional<error_code> result;
    on_loop([&] {
      request.reply(std::move(outputs),
                    asio::bind_executor(executor_, [&result](error_code error) { result = error; }));
    });
    EXPECT_TRUE(result.has_value()) << "reply did not complete";
    return result.value_or(error_code{});
  }

  rx::Endpoint endpoint_{serve()};
};

TEST_F(RequestQueueTest, NextHandsOverTheOldestRequestAndItsReplyAnswersIt) {
  FakeReplyPtr first = deliver(with_id(1));
  FakeReplyPtr second = deliver(with_id(2));
  auto got = start_next();
  ASSERT_TRUE(got->error.has_value());
  EXPECT_FALSE(*got->error);
  ASSERT_TRUE(got->request.valid());
  EXPECT_EQ(got->request.payload(), with_id(1));
  EXPECT_FALSE(got->request.cancelled());
  EXPECT_FALSE(state_->holding_request());  // the Request answers for itself

  EXPECT_FALSE(answer(got->request, with_id(10)));
  EXPECT_FALSE(got->request.valid());
  ASSERT_TRUE(first->outputs().has_value());
  EXPECT_EQ(*first->outputs(), with_id(10));
  EXPECT_FALSE(second->status().has_value());
  EXPECT_EQ(got->request.payload(), with_id(1));  // still readable after the reply
}

TEST_F(RequestQueueTest, NextWaitsForADeliveryAndCompletesOnTheLoop) {
  auto got = start_next();
  EXPECT_FALSE(got->error.has_value());
  deliver(with_id(3));
  ASSERT_TRUE(got->error.has_value());
  EXPECT_EQ(got->request.payload(), with_id(3));
}

TEST_F(RequestQueueTest, ARequestDestroyedUnansweredFailsItsCallerWithInternal) {
  FakeReplyPtr reply = deliver(with_id(1));
  {
    auto got = start_next();
    ASSERT_TRUE(got->request.valid());
  }  // the outcome, and with it the Request, is gone: the failure is queued on the loop
  drain();
  EXPECT_EQ(reply->code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(reply->status()->error_message().find("dropped the request"), std::string::npos);
}

TEST_F(RequestQueueTest, MoveAssigningOverAnUnansweredRequestFailsTheOverwrittenOne) {
  FakeReplyPtr first = deliver(with_id(1));
  FakeReplyPtr second = deliver(with_id(2));
  auto a = start_next();
  auto b = start_next();
  on_loop([&] { a->request = std::move(b->request); });
  EXPECT_EQ(first->code(), grpc::StatusCode::INTERNAL);
  EXPECT_FALSE(b->request.valid());
  EXPECT_EQ(a->request.payload(), with_id(2));
  EXPECT_FALSE(answer(a->request, with_id(20)));
  EXPECT_TRUE(second->outputs().has_value());
}

TEST_F(RequestQueueTest, ReplyOnAnEmptyRequestFailsWithNoRequestHeld) {
  rx::Request empty;
  std::promise<error_code> result;
  empty.reply(json::object{}, [&result](error_code error) { result.set_value(error); });
  EXPECT_EQ(rx_test::wait_for(result.get_future(), "the reply"), rx::errc::no_request_held);
}

TEST_F(RequestQueueTest, AQueuedRequestWhoseCallerGivesUpLeavesTheQueueAtOnce) {
  FakeReplyPtr abandoned = deliver(with_id(1));
  FakeReplyPtr waiting = deliver(with_id(2));
  ASSERT_EQ(state_->queued(), 2U);
  on_loop([&] { abandoned->cancel_by_caller(); });
  EXPECT_EQ(state_->queued(), 1U);  // not at its turn: now
  EXPECT_EQ(abandoned->code(), grpc::StatusCode::CANCELLED);
  auto got = start_next();
  EXPECT_EQ(got->request.payload(), with_id(2));
}

TEST_F(RequestQueueTest, ACallerGivingUpFiresTheRequestsCancellationSlotAndTheReplyIsRefused) {
  FakeReplyPtr reply = deliver(with_id(1));
  auto got = start_next();
  ASSERT_TRUE(got->request.valid());
  std::optional<error_code> waited;
  asio::steady_timer work(context_, std::chrono::hours(1));
  on_loop([&] {
    work.async_wait(asio::bind_cancellation_slot(got->request.cancellation_slot(),
                                                 [&waited](error_code error) { waited = error; }));
  });
  EXPECT_FALSE(waited.has_value());
  on_loop([&] { reply->cancel_by_caller(); });
  ASSERT_TRUE(waited.has_value());
  EXPECT_EQ(*waited, asio::error::operation_aborted);
  EXPECT_TRUE(got->request.cancelled());
  EXPECT_EQ(answer(got->request, with_id(9)), rx::errc::request_cancelled);
  EXPECT_EQ(reply->code(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(reply->outputs().has_value());
}

TEST_F(RequestQueueTest, NextWhileAGetWaitsFailsWithGetAlreadyPending) {
  on_loop([&] { endpoint_.get(asio::bind_executor(executor_, [](error_code, json::object) {})); });
  auto got = start_next();
  ASSERT_TRUE(got->error.has_value());
  EXPECT_EQ(*got->error, rx::errc::get_already_pending);
  EXPECT_FALSE(got->request.valid());
}

TEST_F(RequestQueueTest, CancellingAWaitingNextAbortsItAndTheRequestStaysQueued) {
  asio::cancellation_signal cancel;
  auto got = start_next(cancel.slot());
  on_loop([&] { cancel.emit(asio::cancellation_type::terminal); });
  ASSERT_TRUE(got->error.has_value());
  EXPECT_EQ(*got->error, asio::error::operation_aborted);
  deliver(with_id(4));
  EXPECT_EQ(state_->queued(), 1U);
}

TEST_F(RequestQueueTest, CloseCompletesAWaitingNextAndAReplyAfterCloseGivesTheCallerTheCloseStatus) {
  FakeReplyPtr reply = deliver(with_id(1));
  auto held = start_next();
  auto waiting = start_next();
  on_loop([&] { state_->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "detached")); });
  ASSERT_TRUE(waiting->error.has_value());
  EXPECT_EQ(*waiting->error, rx::errc::endpoint_closed);
  EXPECT_EQ(answer(held->request, with_id(2)), rx::errc::endpoint_closed);
  EXPECT_EQ(reply->code(), grpc::StatusCode::UNAVAILABLE);
}

// ---- end to end --------------------------------------------------------------------------------

class RequestTest : public rx_test::ServerFixture {};

TEST_F(RequestTest, ATaskSeesThePayloadDeadlinePeerAndMetadataOfItsRequest) {
  struct Seen {
    json::object payload;
    std::optional<std::chrono::system_clock::time_point> deadline;
    std::string peer;
    std::vector<std::pair<std::string, std::string>> metadata;
  };
  std::promise<Seen> seen;
  ASSERT_TRUE(server_.attach(make_key(), [&seen](rx::Endpoint rx) -> asio::awaitable<void> {
    rx::Request request = co_await rx.next();
    seen.set_value({request.payload(), request.deadline(), request.peer(), request.metadata()});
    json::object outputs{{"ok", true}};  // own statement: GCC 12, see README
    co_await request.reply(std::move(outputs));
  }));
  const auto before = std::chrono::system_clock::now();
  rx_test::SendResult result = send(make_key(), with_id(7), 20s);
  EXPECT_TRUE(result.status.ok()) << describe(result.status);
  EXPECT_EQ(result.reply, (json::object{{"ok", true}}));
  Seen got = rx_test::wait_for(seen.get_future(), "the task");
  EXPECT_EQ(got.payload, with_id(7));
  ASSERT_TRUE(got.deadline.has_value());
  EXPECT_GT(*got.deadline, before);
  // gRPC sends the timeout rounded up to its unit (a millisecond here) and the server counts it
  // from the arrival: a reply within that millisecond may see a deadline just past now + 20 s.
  EXPECT_LE(*got.deadline, std::chrono::system_clock::now() + 20s + 100ms);
  EXPECT_NE(got.peer.find("127.0.0.1"), std::string::npos) << got.peer;
  const bool has_user_agent = std::any_of(got.metadata.begin(), got.metadata.end(), [](const auto& entry) {
    return entry.first == "user-agent" && entry.second.find("grpc") != std::string::npos;
  });
  EXPECT_TRUE(has_user_agent);
}

// A task that works "for an hour" on its request unless the request's cancellation stops it.
struct LongWorker {
  std::shared_ptr<std::promise<void>> started = std::make_shared<std::promise<void>>();
  std::shared_ptr<std::promise<std::tuple<error_code, bool, error_code>>> stopped =
      std::make_shared<std::promise<std::tuple<error_code, bool, error_code>>>();

  rx::Server::Task task() const {
    return [started = started, stopped = stopped](rx::Endpoint rx) -> asio::awaitable<void> {
      rx::Request request = co_await rx.next();
      asio::steady_timer work(co_await asio::this_coro::executor, std::chrono::hours(1));
      started->set_value();
      auto [waited] = co_await work.async_wait(
          asio::bind_cancellation_slot(request.cancellation_slot(), asio::as_tuple(asio::use_awaitable)));
      const bool cancelled = request.cancelled();
      json::object outputs{{"late", true}};  // own statement: GCC 12, see README
      auto [replied] = co_await request.reply(std::move(outputs), asio::as_tuple(asio::use_awaitable));
      stopped->set_value({waited, cancelled, replied});
    };
  }
};

TEST_F(RequestTest, TheCallersDeadlineStopsTheTasksWorkWhenItPasses) {
  LongWorker worker;
  ASSERT_TRUE(server_.attach(make_key(), worker.task()));
  auto reply = send_async(make_key(), with_id(1), 300ms);
  rx_test::wait_for(worker.started->get_future(), "the task to start working");
  auto [waited, cancelled, replied] = rx_test::wait_for(worker.stopped->get_future(), "the work to stop");
  EXPECT_EQ(waited, asio::error::operation_aborted);
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(replied, rx::errc::request_cancelled);
  auto [status, body] = rx_test::wait_for(reply, "the caller's status");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << describe(status);
}

TEST_F(RequestTest, TheCallersCancelStopsTheTasksWork) {
  LongWorker worker;
  ASSERT_TRUE(server_.attach(make_key(), worker.task()));
  asio::cancellation_signal cancel;
  std::promise<grpc::Status> outcome;
  asio::post(loop_.get_executor(), [&] {
    client_.send(server_.target(), make_key(), with_id(1), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                 asio::bind_cancellation_slot(cancel.slot(), [&outcome](grpc::Status status, json::object /*reply*/) {
                   outcome.set_value(std::move(status));
                 }));
  });
  rx_test::wait_for(worker.started->get_future(), "the task to start working");
  asio::post(loop_.get_executor(), [&] { cancel.emit(asio::cancellation_type::terminal); });
  auto [waited, cancelled, replied] = rx_test::wait_for(worker.stopped->get_future(), "the work to stop");
  EXPECT_EQ(waited, asio::error::operation_aborted);
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(replied, rx::errc::request_cancelled);
  EXPECT_EQ(rx_test::wait_for(outcome.get_future(), "the caller's status").error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(RequestTest, AQueuedRequestWhoseCallerCancelsEndsCancelledAndTheEndpointServesTheNext) {
  // The task holds the first request until the test opens the gate; the second is cancelled
  // while it waits behind it; the third is answered. Whether the task ever sees the second
  // depends on when the server hears of the cancel (the client's CANCELLED comes from its own
  // library first), so that is checked on the queue itself (RequestQueueTest), not here.
  auto gate = std::make_shared<rx_test::Gate>(loop_.get_executor());
  auto holding = std::make_shared<std::promise<void>>();
  auto seen = std::make_shared<std::vector<json::object>>();  // loop-confined
  ASSERT_TRUE(server_.attach(make_key(), [holding, gate, seen](rx::Endpoint rx) -> asio::awaitable<void> {
    for (;;) {
      rx::Request request = co_await rx.next();
      seen->push_back(request.payload());
      if (seen->size() == 1) {
        holding->set_value();
        co_await gate->wait();
      }
      co_await request.reply(request.payload());
    }
  }));
  auto first = send_async(make_key(), with_id(1));
  rx_test::wait_for(holding->get_future(), "the task to hold the first request");
  asio::cancellation_signal cancel;
  std::promise<grpc::Status> second;
  asio::post(loop_.get_executor(), [&] {
    client_.send(server_.target(), make_key(), with_id(2), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                 asio::bind_cancellation_slot(cancel.slot(), [&second](grpc::Status status, json::object /*reply*/) {
                   second.set_value(std::move(status));
                 }));
  });
  asio::post(loop_.get_executor(), [&] { cancel.emit(asio::cancellation_type::terminal); });
  EXPECT_EQ(rx_test::wait_for(second.get_future(), "the cancelled call").error_code(), grpc::StatusCode::CANCELLED);
  auto third = send_async(make_key(), with_id(3));
  gate->open();
  EXPECT_TRUE(std::get<0>(rx_test::wait_for(first, "the first reply")).ok());
  auto [status, body] = rx_test::wait_for(third, "the third reply");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(body, with_id(3));
  auto seen_by_task = rx_test::spawn_and_wait(
      loop_.get_executor(), [seen]() -> asio::awaitable<std::vector<json::object>> { co_return *seen; });
  ASSERT_GE(seen_by_task.size(), 2U);
  EXPECT_EQ(seen_by_task.front(), with_id(1));
  EXPECT_EQ(seen_by_task.back(), with_id(3));
}

TEST_F(RequestTest, ATaskDroppingItsRequestUnansweredFailsTheCallerWithInternal) {
  ASSERT_TRUE(server_.attach(make_key(), [](rx::Endpoint rx) -> asio::awaitable<void> {
    rx::Request request = co_await rx.next();
    (void)request;
  }));
  rx_test::SendResult result = send(make_key(), with_id(1));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INTERNAL) << describe(result.status);
  EXPECT_NE(result.status.error_message().find("dropped the request"), std::string::npos) << describe(result.status);
}

TEST_F(RequestTest, RepliesRacingDeadlinesAndCancelsFinishEveryCallOnce) {
  // Each call's deadline (1-4 ms) or the caller's cancel races the task's reply: OnCancel, the
  // reply's Finish and OnDone meet on different threads in every order. Every call must end with
  // one status, and the server must still shut down (TearDown). Meant for AddressSanitizer.
#if defined(__SANITIZE_THREAD__)
  // 300 short calls racing their cancellation make ThreadSanitizer report gRPC's own bookkeeping
  // (its call objects, ordered by libgrpc's uninstrumented synchronisation) in about one run in
  // four, each time at a different gRPC frame; our side of these races is checked under TSan by
  // the cancel and deadline tests above.
  GTEST_SKIP() << "ThreadSanitizer cannot see gRPC's ordering of its call objects in this race";
#endif
  ASSERT_TRUE(server_.attach(make_key(), [](rx::Endpoint rx) -> asio::awaitable<void> {
    for (;;) {
      rx::Request request = co_await rx.next();
      if (request.payload().at("id").as_int64() % 3 == 0) {
        co_await asio::post(asio::use_awaitable);  // one more trip through the loop first
      }
      co_await request.reply(request.payload(), asio::as_tuple(asio::use_awaitable));
    }
  }));
  constexpr int CALLS = 300;
  std::vector<std::future<std::tuple<grpc::Status, json::object>>> replies;
  std::vector<std::shared_ptr<asio::cancellation_signal>> cancels;
  for (int call = 0; call < CALLS; ++call) {
    if (call % 2 == 0) {
      replies.push_back(send_async(make_key(), with_id(call), std::chrono::milliseconds(1 + call % 4)));
      continue;
    }
    auto cancel = std::make_shared<asio::cancellation_signal>();
    cancels.push_back(cancel);
    // Completes on the client's loop, where the cancellation is emitted (Asio's rule: a signal
    // is emitted where its operation's handler runs).
    auto promise = std::make_shared<std::promise<std::tuple<grpc::Status, json::object>>>();
    replies.push_back(promise->get_future());
    client_.send(server_.target(), make_key(), with_id(call), rx::SendOptions{rx_test::DEFAULT_DEADLINE},
                 asio::bind_cancellation_slot(
                     cancel->slot(),
                     asio::bind_executor(loop_.get_executor(), [promise](grpc::Status status, json::object reply) {
                       promise->set_value({std::move(status), std::move(reply)});
                     })));
    asio::post(loop_.get_executor(), [cancel] { cancel->emit(asio::cancellation_type::terminal); });
  }
  for (auto& reply : replies) {
    auto [status, body] = rx_test::wait_for(reply, "a call to end");
    const grpc::StatusCode code = status.error_code();
    EXPECT_TRUE(code == grpc::StatusCode::OK || code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                code == grpc::StatusCode::CANCELLED)
        << describe(status);
  }
  // The endpoint still serves after all that.
  rx_test::SendResult last = send(make_key(), with_id(CALLS));
  EXPECT_TRUE(last.status.ok()) << describe(last.status);
  EXPECT_EQ(last.reply, with_id(CALLS));
}

TEST_F(RequestTest, ARequestHandedToAnotherThreadIsAnsweredFromThere) {
  // The task ends and hands its Request over; the test thread replies, which queues the answer
  // on the endpoint's loop.
  auto handed = std::make_shared<std::promise<rx::Request>>();
  ASSERT_TRUE(server_.attach(
      make_key(), [handed](rx::Endpoint rx) -> asio::awaitable<void> { handed->set_value(co_await rx.next()); }));
  auto reply = send_async(make_key(), with_id(5));
  rx::Request request = rx_test::wait_for(handed->get_future(), "the request");
  std::future<void> replied = request.reply(json::object{{"from", "another thread"}}, asio::use_future);
  EXPECT_NO_THROW(rx_test::wait_for(replied, "the reply to complete"));
  auto [status, body] = rx_test::wait_for(reply, "the caller's reply");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(body, (json::object{{"from", "another thread"}}));
}

}  // namespace

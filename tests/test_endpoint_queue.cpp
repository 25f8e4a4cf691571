// The endpoint queue (detail::EndpointState) on its own: a Loop, fake replies, no gRPC, no task.
#include "utils/endpoint_fixture.hpp"
#include "utils/fake_reply.hpp"
#include "utils/loop_fixture.hpp"
#include "utils/payloads.hpp"
#include "utils/run_coroutine.hpp"
#include "utils/server_fixture.hpp"

#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using boost::system::error_code;
using rx_test::FakeReply;
using rx_test::FakeReplyPtr;

template <typename T>
bool is_ready(std::future<T>& future) {
  return future.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

// The error code a future holds as a boost::system::system_error, or success.
template <typename T>
error_code error_of(std::future<T>& future) {
  try {
    future.get();
  } catch (const boost::system::system_error& error) {
    return error.code();
  }
  return {};
}

struct GetOutcome {
  std::optional<error_code> error;  // set once the get has completed
  json::object payload;
  bool completed_on_loop = false;
};

using rx_test::with_id;

class EndpointQueueTest : public rx_test::EndpointFixture {
 protected:
  // Starts a get whose completion records its outcome; `slot` optionally makes it cancellable.
  std::shared_ptr<GetOutcome> start_get(std::optional<asio::cancellation_slot> slot = std::nullopt) {
    auto outcome = std::make_shared<GetOutcome>();
    auto handler =
        asio::bind_executor(executor_, [outcome, executor = executor_](error_code error, json::object payload) {
          outcome->error = error;
          outcome->payload = std::move(payload);
          outcome->completed_on_loop = executor.running_in_this_thread();
        });
    on_loop([&] {
      if (slot) {
        endpoint_.get(asio::bind_cancellation_slot(*slot, std::move(handler)));
      } else {
        endpoint_.get(std::move(handler));
      }
    });
    return outcome;
  }

  // Pushes `outputs` and returns the push's outcome (push always completes, posted).
  error_code push(json::object outputs) {
    std::optional<error_code> result;
    on_loop([&] {
      endpoint_.push(std::move(outputs),
                     asio::bind_executor(executor_, [&result](error_code error) { result = error; }));
    });
    EXPECT_TRUE(result.has_value()) << "push did not complete";
    return result.value_or(error_code{});
  }

  void close(const grpc::Status& status) {
    on_loop([&] { state_->close(status); });
  }

  // A coroutine on `executor` that co_awaits get() with the default token, as task code does.
  template <typename Executor>
  std::future<json::object> co_await_get(const Executor& executor, asio::cancellation_slot slot = {}) {
    auto future = rx_test::spawn_with_future(
        executor,
        [endpoint = endpoint_]() mutable -> asio::awaitable<json::object> { co_return co_await endpoint.get(); }, slot);
    drain();
    return future;
  }

  rx::Endpoint endpoint_{serve()};  // no task: the tests call get and push themselves
};

TEST_F(EndpointQueueTest, GetTakesRequestsInArrivalOrderAndPushAnswersEachOne) {
  std::vector<FakeReplyPtr> replies;
  for (int id = 0; id < 5; ++id) {
    replies.push_back(deliver(with_id(id)));
  }
  EXPECT_EQ(state_->queued(), 5U);
  for (int id = 0; id < 5; ++id) {
    auto got = start_get();
    ASSERT_TRUE(got->error.has_value());
    EXPECT_FALSE(*got->error) << got->error->message();
    EXPECT_EQ(got->payload, with_id(id));
    EXPECT_TRUE(state_->holding_request());
    json::object outputs;
    outputs["answer"] = id;
    EXPECT_FALSE(push(outputs));
  }
  for (int id = 0; id < 5; ++id) {
    const FakeReply& reply = *replies[static_cast<std::size_t>(id)];
    ASSERT_TRUE(reply.outputs().has_value()) << id;
    EXPECT_EQ(reply.outputs()->at("answer").as_int64(), id);
    EXPECT_TRUE(reply.status()->ok());
  }
  EXPECT_EQ(state_->queued(), 0U);
  EXPECT_FALSE(state_->holding_request());
}

TEST_F(EndpointQueueTest, GetWaitsUntilARequestIsDelivered) {
  auto got = start_get();
  EXPECT_FALSE(got->error.has_value());  // the loop is idle: nothing will complete it by itself
  EXPECT_FALSE(state_->holding_request());

  FakeReplyPtr reply = deliver(with_id(7));
  ASSERT_TRUE(got->error.has_value());
  EXPECT_FALSE(*got->error);
  EXPECT_EQ(got->payload, with_id(7));
  EXPECT_TRUE(got->completed_on_loop);
  EXPECT_TRUE(state_->holding_request());
  EXPECT_EQ(state_->queued(), 0U);
  EXPECT_FALSE(reply->finished());

  EXPECT_FALSE(push(with_id(8)));
  EXPECT_EQ(reply->outputs(), with_id(8));
}

TEST_F(EndpointQueueTest, GetCompletesOnTheLoopWhenARequestIsAlreadyQueued) {
  deliver(with_id(1));
  auto got = start_get();
  ASSERT_TRUE(got->error.has_value());
  EXPECT_TRUE(got->completed_on_loop);
}

TEST_F(EndpointQueueTest, PushWithoutAHeldRequestFailsWithNoRequestHeld) {
  EXPECT_EQ(push(with_id(1)), rx::errc::no_request_held);
}

TEST_F(EndpointQueueTest, ASecondPushForOneRequestFailsWithNoRequestHeld) {
  FakeReplyPtr reply = deliver(with_id(1));
  start_get();
  EXPECT_FALSE(push(with_id(2)));
  EXPECT_EQ(push(with_id(3)), rx::errc::no_request_held);
  EXPECT_EQ(reply->outputs(), with_id(2));
}

TEST_F(EndpointQueueTest, GetWhileAnotherGetWaitsFailsWithGetAlreadyPending) {
  auto first = start_get();
  auto second = start_get();
  ASSERT_TRUE(second->error.has_value());
  EXPECT_EQ(*second->error, rx::errc::get_already_pending);
  EXPECT_FALSE(first->error.has_value());

  deliver(with_id(1));  // the first get still gets the next request
  ASSERT_TRUE(first->error.has_value());
  EXPECT_FALSE(*first->error);
  EXPECT_EQ(first->payload, with_id(1));
}

TEST_F(EndpointQueueTest, CancellingAWaitingGetAbortsItAndTheNextRequestStaysQueued) {
  asio::cancellation_signal signal;
  auto got = start_get(signal.slot());
  EXPECT_FALSE(got->error.has_value());

  on_loop([&] { signal.emit(asio::cancellation_type::terminal); });  // emitted on the handler's executor
  ASSERT_TRUE(got->error.has_value());
  EXPECT_EQ(*got->error, asio::error::operation_aborted);
  EXPECT_FALSE(state_->holding_request());

  FakeReplyPtr reply = deliver(with_id(1));
  EXPECT_EQ(state_->queued(), 1U);
  EXPECT_FALSE(reply->finished());
  EXPECT_EQ(got->payload, json::object{});  // the cancelled get took nothing

  auto next = start_get();
  ASSERT_TRUE(next->error.has_value());
  EXPECT_FALSE(*next->error);
  EXPECT_EQ(next->payload, with_id(1));
}

TEST_F(EndpointQueueTest, CancellingAfterAGetCompletedDoesNothing) {
  asio::cancellation_signal signal;
  auto got = start_get(signal.slot());
  FakeReplyPtr reply = deliver(with_id(1));
  ASSERT_TRUE(got->error.has_value());
  on_loop([&] { signal.emit(asio::cancellation_type::terminal); });
  EXPECT_FALSE(*got->error);
  EXPECT_TRUE(state_->holding_request());
  EXPECT_FALSE(push(with_id(2)));
  EXPECT_EQ(reply->outputs(), with_id(2));
}

TEST_F(EndpointQueueTest, CloseFailsQueuedAndHeldRequestsWithItsStatus) {
  FakeReplyPtr held = deliver(with_id(1));
  FakeReplyPtr queued_a = deliver(with_id(2));
  FakeReplyPtr queued_b = deliver(with_id(3));
  start_get();
  ASSERT_TRUE(state_->holding_request());

  close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "endpoint went away"));
  for (const FakeReplyPtr& reply : {held, queued_a, queued_b}) {
    ASSERT_TRUE(reply->finished());
    EXPECT_EQ(reply->code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(reply->status()->error_message(), "endpoint went away");
    EXPECT_FALSE(reply->outputs().has_value());
  }
  EXPECT_TRUE(state_->closed());
  EXPECT_EQ(state_->queued(), 0U);
  EXPECT_FALSE(state_->holding_request());
}

TEST_F(EndpointQueueTest, CloseCompletesAWaitingGetWithEndpointClosed) {
  auto got = start_get();
  close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone"));
  ASSERT_TRUE(got->error.has_value());
  EXPECT_EQ(*got->error, rx::errc::endpoint_closed);
  EXPECT_TRUE(got->completed_on_loop);
}

TEST_F(EndpointQueueTest, AfterCloseDeliveriesFailAndGetAndPushReportEndpointClosed) {
  close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone"));
  FakeReplyPtr late = deliver(with_id(1));
  ASSERT_TRUE(late->finished());
  EXPECT_EQ(late->code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(late->status()->error_message(), "gone");

  auto got = start_get();
  ASSERT_TRUE(got->error.has_value());
  EXPECT_EQ(*got->error, rx::errc::endpoint_closed);
  EXPECT_EQ(push(with_id(2)), rx::errc::endpoint_closed);
}

TEST_F(EndpointQueueTest, CloseTwiceKeepsTheFirstStatus) {
  close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "first"));
  close(grpc::Status(grpc::StatusCode::INTERNAL, "second"));
  FakeReplyPtr late = deliver(with_id(1));
  EXPECT_EQ(late->code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(late->status()->error_message(), "first");
}

TEST_F(EndpointQueueTest, ARequestWhoseCallerGaveUpIsSkipped) {
  FakeReplyPtr abandoned = deliver(with_id(1));
  FakeReplyPtr live = deliver(with_id(2));
  on_loop([&] { abandoned->cancel_by_caller(); });

  auto got = start_get();
  ASSERT_TRUE(got->error.has_value());
  EXPECT_FALSE(*got->error);
  EXPECT_EQ(got->payload, with_id(2));
  EXPECT_EQ(abandoned->code(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(abandoned->outputs().has_value());
  EXPECT_EQ(state_->queued(), 0U);
}

TEST_F(EndpointQueueTest, AGetFindingOnlyAbandonedRequestsWaits) {
  FakeReplyPtr abandoned = deliver(with_id(1));
  on_loop([&] { abandoned->cancel_by_caller(); });
  auto got = start_get();
  EXPECT_FALSE(got->error.has_value());
  EXPECT_EQ(state_->queued(), 0U);
  deliver(with_id(2));
  ASSERT_TRUE(got->error.has_value());
  EXPECT_EQ(got->payload, with_id(2));
}

TEST_F(EndpointQueueTest, PushToARequestWhoseCallerGaveUpFailsWithRequestCancelled) {
  FakeReplyPtr reply = deliver(with_id(1));
  start_get();
  on_loop([&] { reply->cancel_by_caller(); });
  EXPECT_EQ(push(with_id(2)), rx::errc::request_cancelled);
  EXPECT_FALSE(state_->holding_request());  // released all the same
  EXPECT_EQ(reply->code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(push(with_id(3)), rx::errc::no_request_held);
}

TEST_F(EndpointQueueTest, AQueuedRequestWhoseCallerGaveUpUnnoticedIsFinishedWithCancelledAndSkipped) {
  FakeReplyPtr abandoned = deliver(with_id(1));
  FakeReplyPtr live = deliver(with_id(2));
  abandoned->give_up();  // not finished yet: only the queue can notice
  auto got = start_get();
  ASSERT_TRUE(got->error.has_value());
  EXPECT_FALSE(*got->error);
  EXPECT_EQ(got->payload, with_id(2));
  ASSERT_TRUE(abandoned->finished());
  EXPECT_EQ(abandoned->code(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(abandoned->outputs().has_value());
}

TEST_F(EndpointQueueTest, PushToAHeldRequestWhoseCallerGaveUpUnnoticedFailsWithRequestCancelled) {
  FakeReplyPtr reply = deliver(with_id(1));
  start_get();
  reply->give_up();
  EXPECT_EQ(push(with_id(2)), rx::errc::request_cancelled);
  EXPECT_FALSE(state_->holding_request());
  EXPECT_EQ(reply->code(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(reply->outputs().has_value());
}

TEST_F(EndpointQueueTest, GetAgainBeforePushFailsTheHeldRequestWithInternal) {
  FakeReplyPtr first = deliver(with_id(1));
  FakeReplyPtr second = deliver(with_id(2));
  start_get();
  auto again = start_get();
  ASSERT_TRUE(first->finished());
  EXPECT_EQ(first->code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(first->status()->error_message().find("called get() again before push()"), std::string::npos)
      << first->status()->error_message();
  ASSERT_TRUE(again->error.has_value());
  EXPECT_EQ(again->payload, with_id(2));
}

TEST_F(EndpointQueueTest, TheQueueReleasesEveryRequestOnceFinished) {
  const int before = FakeReply::live.load();
  {
    deliver(with_id(1));
    deliver(with_id(2));
    deliver(with_id(3));
    start_get();
    EXPECT_FALSE(push(with_id(4)));
    start_get();
  }
  EXPECT_EQ(FakeReply::live.load(), before + 2);  // one held, one queued
  close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone"));
  EXPECT_EQ(FakeReply::live.load(), before);
}

// co_await with the default token inside a coroutine on the endpoint's loop takes the library's
// allocation-free path; these pin that it behaves exactly like the generic one above.
using DefaultGet = decltype(std::declval<rx::Endpoint&>().get());
using DefaultPush = decltype(std::declval<rx::Endpoint&>().push(json::object{}));
static_assert(asio::is_async_operation<DefaultGet>::value);
static_assert(std::is_same_v<asio::detail::awaitable_async_op_handler<asio::completion_signature_of<DefaultGet>::type,
                                                                      asio::any_io_executor>,
                             rx::detail::AwaitableGetHandler>,
              "co_await endpoint.get() no longer produces the handler type the fast path stores");
static_assert(std::is_same_v<asio::detail::awaitable_async_op_handler<asio::completion_signature_of<DefaultPush>::type,
                                                                      asio::any_io_executor>,
                             rx::detail::AwaitablePushHandler>,
              "co_await endpoint.push() no longer produces the handler type the fast path stores");

TEST_F(EndpointQueueTest, ACoAwaitedGetWaitsUntilARequestIsDelivered) {
  auto got = co_await_get(executor_);
  EXPECT_FALSE(is_ready(got));
  FakeReplyPtr reply = deliver(with_id(1));
  ASSERT_TRUE(is_ready(got));
  EXPECT_EQ(got.get(), with_id(1));
  EXPECT_TRUE(state_->holding_request());
}

TEST_F(EndpointQueueTest, ACoAwaitedGetTakesAQueuedRequestAndACoAwaitedPushAnswersIt) {
  FakeReplyPtr reply = deliver(with_id(1));
  auto result = rx_test::spawn_with_future(executor_, [endpoint = endpoint_]() mutable -> asio::awaitable<void> {
    json::object payload = co_await endpoint.get();
    payload["answered"] = true;
    co_await endpoint.push(std::move(payload));
  });
  drain();
  ASSERT_TRUE(is_ready(result));
  EXPECT_NO_THROW(result.get());
  json::object expected = with_id(1);
  expected["answered"] = true;
  EXPECT_EQ(reply->outputs(), expected);
}

TEST_F(EndpointQueueTest, ACoAwaitedPushWithoutAHeldRequestThrowsNoRequestHeld) {
  auto pushed = rx_test::spawn_with_future(
      executor_, [endpoint = endpoint_]() mutable -> asio::awaitable<void> { co_await endpoint.push(with_id(1)); });
  drain();
  ASSERT_TRUE(is_ready(pushed));
  EXPECT_EQ(error_of(pushed), rx::errc::no_request_held);
}

TEST_F(EndpointQueueTest, ACoAwaitedGetWhileAnotherWaitsThrowsGetAlreadyPending) {
  auto first = co_await_get(executor_);
  auto second = co_await_get(executor_);
  ASSERT_TRUE(is_ready(second));
  EXPECT_EQ(error_of(second), rx::errc::get_already_pending);
  EXPECT_FALSE(is_ready(first));
  deliver(with_id(1));
  ASSERT_TRUE(is_ready(first));
  EXPECT_EQ(first.get(), with_id(1));
}

TEST_F(EndpointQueueTest, CancellingACoAwaitedGetAbortsItAndTheNextRequestStaysQueued) {
  asio::cancellation_signal signal;
  auto got = co_await_get(executor_, signal.slot());
  EXPECT_FALSE(is_ready(got));
  on_loop([&] { signal.emit(asio::cancellation_type::terminal); });
  ASSERT_TRUE(is_ready(got));
  EXPECT_EQ(error_of(got), asio::error::operation_aborted);

  FakeReplyPtr reply = deliver(with_id(1));
  EXPECT_EQ(state_->queued(), 1U);
  EXPECT_FALSE(reply->finished());
  auto next = co_await_get(executor_);
  ASSERT_TRUE(is_ready(next));
  EXPECT_EQ(next.get(), with_id(1));
}

TEST_F(EndpointQueueTest, CloseCompletesACoAwaitedGetWithEndpointClosed) {
  auto got = co_await_get(executor_);
  close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone"));
  ASSERT_TRUE(is_ready(got));
  EXPECT_EQ(error_of(got), rx::errc::endpoint_closed);
}

TEST_F(EndpointQueueTest, ACoroutineOnAnotherExecutorCanGetAndPushAndResumesOnItsOwnExecutor) {
  // Not the endpoint's loop: the endpoint takes its generic path and completes on the coroutine's executor.
  auto result = rx_test::spawn_with_future(
      context_.get_executor(),
      [endpoint = endpoint_, own = context_.get_executor()]() mutable -> asio::awaitable<bool> {
        json::object payload = co_await endpoint.get();
        const bool resumed_on_own_executor = own.running_in_this_thread();
        co_await endpoint.push(std::move(payload));
        co_return resumed_on_own_executor;
      });
  drain();
  EXPECT_FALSE(is_ready(result));
  FakeReplyPtr reply = deliver(with_id(1));
  ASSERT_TRUE(is_ready(result));
  EXPECT_TRUE(result.get());
  EXPECT_EQ(reply->outputs(), with_id(1));
}

TEST(EndpointState, DestroyingItFailsWhatIsLeftWithUnavailable) {
  asio::io_context context;
  rx::Loop loop(context);
  FakeReplyPtr queued = rx_test::make_fake_reply();
  FakeReplyPtr held = rx_test::make_fake_reply();
  {
    auto state = std::make_shared<rx::detail::EndpointState>(loop.get_executor(), rx_test::make_key("doomed"));
    asio::dispatch(loop.get_executor(), [&] {
      state->deliver(held, with_id(1));
      state->deliver(queued, with_id(2));
      rx::Endpoint(state).get([](error_code, json::object) {});
    });
    context.poll();
  }
  for (const FakeReplyPtr& reply : {held, queued}) {
    ASSERT_TRUE(reply->finished());
    EXPECT_EQ(reply->code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(reply->status()->error_message().find("dag/doomed/run[-1]"), std::string::npos);
  }
}

}  // namespace

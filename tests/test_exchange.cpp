// The Exchange stream, driven from outside by a plain gRPC client (the stub generated from the
// proto, as any language's client would be): ids, batches, per-frame errors, cancel frames,
// frame deadlines, flow control, a cancelled stream and a server shutting down mid-stream.
#include "codec.hpp"
#include "utils/gate.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/request.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace pb = remote_xcomm::v1;
using rx_test::make_key;

pb::ExchangeFrame request_frame(std::uint64_t id, const rx::TaskInstanceKey& key, const std::string& payload_json,
                                std::uint64_t timeout_ms = 0) {
  pb::ExchangeFrame frame;
  frame.set_id(id);
  rx::detail::to_proto(key, *frame.mutable_key());
  frame.set_payload_json(payload_json);
  frame.set_timeout_ms(timeout_ms);
  return frame;
}

pb::ExchangeFrame cancel_frame(std::uint64_t id) {
  pb::ExchangeFrame frame;
  frame.set_id(id);
  frame.set_cancel(true);
  return frame;
}

std::string id_payload(std::uint64_t id) { return json::serialize(json::object{{"id", id}}); }

/// A plain gRPC client's Exchange stream, used synchronously from the test thread. Its deadline
/// only guards against a hang: every reply a test reads is caused by the test.
class RawStream {
 public:
  explicit RawStream(const std::string& target, const grpc::ChannelArguments& arguments = {})
      : channel_(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments)),
        stub_(pb::RemoteXComm::NewStub(channel_)) {
    context_.set_deadline(std::chrono::system_clock::now() + rx_test::HANG_GUARD);
    stream_ = stub_->Exchange(&context_);
  }

  bool write(const std::vector<pb::ExchangeFrame>& frames) {
    pb::ExchangeRequest batch;
    for (const pb::ExchangeFrame& frame : frames) {
      *batch.add_frames() = frame;
    }
    return stream_->Write(batch);
  }

  /// Reads until `count` replies arrived (or the stream ended), in arrival order.
  std::vector<pb::ExchangeReply> read(std::size_t count) {
    std::vector<pb::ExchangeReply> replies;
    pb::ExchangeResponse batch;
    while (replies.size() < count && stream_->Read(&batch)) {
      EXPECT_GT(batch.replies_size(), 0) << "the server wrote an empty batch";
      for (const pb::ExchangeReply& reply : batch.replies()) {
        replies.push_back(reply);
      }
    }
    EXPECT_EQ(replies.size(), count) << "the stream ended early: " << rx_test::describe(stream_->Finish());
    return replies;
  }

  pb::ExchangeReply read_one() {
    auto replies = read(1);
    return replies.empty() ? pb::ExchangeReply() : replies.front();
  }

  /// Half-closes, expects no further reply, and returns the stream's status.
  grpc::Status close() {
    stream_->WritesDone();
    pb::ExchangeResponse extra;
    while (stream_->Read(&extra)) {
      ADD_FAILURE() << "unexpected replies after the last one: " << extra.DebugString();
    }
    return stream_->Finish();
  }

  /// Reads to the end of the stream without half-closing; returns what came and the status.
  std::pair<std::vector<pb::ExchangeReply>, grpc::Status> drain() {
    std::vector<pb::ExchangeReply> replies;
    pb::ExchangeResponse batch;
    while (stream_->Read(&batch)) {
      for (const pb::ExchangeReply& reply : batch.replies()) {
        replies.push_back(reply);
      }
    }
    return {std::move(replies), stream_->Finish()};
  }

  void writes_done() { stream_->WritesDone(); }
  grpc::Status finish() { return stream_->Finish(); }
  grpc::ClientContext& context() { return context_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::RemoteXComm::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::ExchangeRequest, pb::ExchangeResponse>> stream_;
};

class ExchangeTest : public rx_test::ServerFixture {
 protected:
  explicit ExchangeTest(rx::ServerOptions options = {}) : ServerFixture(std::move(options)) {}

  /// Attaches an endpoint whose task takes requests with next() and answers each once `gate` is
  /// open, recording what it saw (loop-confined; read it through on_loop()).
  struct Holder {
    explicit Holder(const rx::LoopExecutor& executor) : gate(executor) {}
    rx_test::Gate gate;
    std::size_t held = 0;
    std::size_t most_held = 0;
    std::vector<std::optional<std::chrono::system_clock::time_point>> deadlines;
    std::vector<boost::system::error_code> reply_results;
    std::promise<void> holding_enough;  // set the first time `enough` requests are held at once
    std::size_t enough = 0;
    bool signalled = false;
  };

  std::shared_ptr<Holder> attach_holder(const rx::TaskInstanceKey& key, std::size_t signal_when_holding = 1) {
    auto holder = std::make_shared<Holder>(server_.get_executor());
    holder->enough = signal_when_holding;
    EXPECT_TRUE(server_.attach(key, [holder](rx::Endpoint endpoint) -> asio::awaitable<void> {
      for (;;) {
        rx::Request request = co_await endpoint.next();
        holder->deadlines.push_back(request.deadline());
        ++holder->held;
        holder->most_held = std::max(holder->most_held, holder->held);
        if (holder->held == holder->enough && !holder->signalled) {
          holder->signalled = true;
          holder->holding_enough.set_value();
        }
        // Each request waits in a coroutine of its own, so that the task takes the next at once.
        asio::co_spawn(
            endpoint.get_executor(),
            [holder, request = std::move(request)]() mutable -> asio::awaitable<void> {
              co_await holder->gate.wait();
              json::object outputs = request.payload();
              --holder->held;  // the reply goes out inside reply()'s initiation, below
              auto [error] = co_await request.reply(std::move(outputs), asio::as_tuple(asio::use_awaitable));
              holder->reply_results.push_back(error);
            },
            asio::detached);
      }
    }));
    return holder;
  }

  template <typename Function>
  auto on_loop(Function function) {
    std::promise<decltype(function())> done;
    auto result = done.get_future();
    asio::post(server_.get_executor(), [&] { done.set_value(function()); });
    return rx_test::wait_for(result, "a loop job");
  }
};

TEST_F(ExchangeTest, ThousandsOfRequestsOverOneStreamAreEachAnsweredOnceAndMatchedById) {
  constexpr int ENDPOINTS = 8;
  constexpr std::uint64_t REQUESTS = 3000;
  constexpr std::uint64_t BATCH = 250;
  for (int i = 0; i < ENDPOINTS; ++i) {
    ASSERT_TRUE(server_.attach(make_key("task", i), rx_test::echo_forever));
  }
  RawStream stream(server_.target());
  for (std::uint64_t first = 0; first < REQUESTS; first += BATCH) {
    std::vector<pb::ExchangeFrame> frames;
    for (std::uint64_t id = first; id < first + BATCH; ++id) {
      frames.push_back(request_frame(id, make_key("task", static_cast<int>(id % ENDPOINTS)), id_payload(id)));
    }
    ASSERT_TRUE(stream.write(frames));
  }
  std::set<std::uint64_t> answered;
  for (const pb::ExchangeReply& reply : stream.read(REQUESTS)) {
    ASSERT_EQ(reply.code(), 0) << reply.id() << ": " << reply.message();
    EXPECT_TRUE(answered.insert(reply.id()).second) << "request " << reply.id() << " answered twice";
    const json::object echoed = json::parse(reply.reply_json()).as_object();
    EXPECT_EQ(echoed.at("id").to_number<std::uint64_t>(), reply.id()) << "a reply matched to the wrong request";
  }
  EXPECT_EQ(answered.size(), REQUESTS);
  const grpc::Status end = stream.close();
  EXPECT_TRUE(end.ok()) << rx_test::describe(end);
}

TEST_F(ExchangeTest, BadFramesGetTheirOwnErrorsAndTheStreamLivesOn) {
  ASSERT_TRUE(server_.attach(make_key("echo"), rx_test::echo_forever));
  RawStream stream(server_.target());
  ASSERT_TRUE(
      stream.write({request_frame(1, make_key("echo"), "{not json"), request_frame(2, make_key("nobody"), "{}"),
                    request_frame(3, make_key("echo"), "[1, 2]"), request_frame(4, make_key("echo"), id_payload(4))}));
  std::map<std::uint64_t, pb::ExchangeReply> replies;
  for (const pb::ExchangeReply& reply : stream.read(4)) {
    replies[reply.id()] = reply;
  }
  EXPECT_EQ(replies[1].code(), grpc::StatusCode::INVALID_ARGUMENT) << replies[1].message();
  EXPECT_NE(replies[1].message().find("not valid JSON"), std::string::npos) << replies[1].message();
  EXPECT_EQ(replies[2].code(), grpc::StatusCode::NOT_FOUND) << replies[2].message();
  EXPECT_EQ(replies[3].code(), grpc::StatusCode::INVALID_ARGUMENT) << replies[3].message();
  EXPECT_EQ(replies[4].code(), grpc::StatusCode::OK) << replies[4].message();
  EXPECT_TRUE(replies[1].reply_json().empty());
  // And the stream goes on after them.
  ASSERT_TRUE(stream.write({request_frame(5, make_key("echo"), id_payload(5))}));
  EXPECT_EQ(stream.read_one().code(), grpc::StatusCode::OK);
  EXPECT_TRUE(stream.close().ok());
}

TEST_F(ExchangeTest, AFrameWhoseIdIsInFlightIsRefusedAndTheRequestUnderThatIdGoesOn) {
  const auto holder = attach_holder(make_key("held"));
  RawStream stream(server_.target());
  ASSERT_TRUE(stream.write({request_frame(7, make_key("held"), R"({"first": true})"),
                            request_frame(7, make_key("held"), R"({"second": true})")}));
  const pb::ExchangeReply refused = stream.read_one();
  EXPECT_EQ(refused.id(), 7U);
  EXPECT_EQ(refused.code(), grpc::StatusCode::ALREADY_EXISTS) << refused.message();
  holder->gate.open();
  const pb::ExchangeReply answered = stream.read_one();
  EXPECT_EQ(answered.id(), 7U);
  ASSERT_EQ(answered.code(), grpc::StatusCode::OK) << answered.message();
  EXPECT_TRUE(json::parse(answered.reply_json()).as_object().contains("first"));
  // Once answered, the id is free again.
  ASSERT_TRUE(stream.write({request_frame(7, make_key("held"), R"({"third": true})")}));
  EXPECT_EQ(stream.read_one().code(), grpc::StatusCode::OK);
  EXPECT_TRUE(stream.close().ok());
}

TEST_F(ExchangeTest, ACancelFrameFailsAQueuedOrHeldRequestAtOnceAndTheTaskLearnsOfIt) {
  // A plain get/push task holds one request at a time, so a second one waits in the queue.
  auto gate = std::make_shared<rx_test::Gate>(server_.get_executor());
  std::promise<boost::system::error_code> pushed;
  std::promise<void> took_first;
  int invocations = 0;  // loop-confined
  ASSERT_TRUE(server_.attach(make_key("slow"), [&, gate](rx::Endpoint endpoint) -> asio::awaitable<void> {
    ++invocations;
    json::object payload = co_await endpoint.get();
    took_first.set_value();
    co_await gate->wait();
    auto [error] = co_await endpoint.push(std::move(payload), asio::as_tuple(asio::use_awaitable));
    pushed.set_value(error);
  }));
  RawStream stream(server_.target());
  ASSERT_TRUE(stream.write({request_frame(1, make_key("slow"), "{}"), request_frame(2, make_key("slow"), "{}")}));
  rx_test::wait_for(took_first.get_future(), "the task to take request 1");
  ASSERT_TRUE(stream.write({cancel_frame(2), cancel_frame(1), cancel_frame(99)}));
  std::map<std::uint64_t, pb::ExchangeReply> replies;
  for (const pb::ExchangeReply& reply : stream.read(3)) {
    replies[reply.id()] = reply;
  }
  EXPECT_EQ(replies[2].code(), grpc::StatusCode::CANCELLED) << replies[2].message();  // left the queue
  EXPECT_EQ(replies[1].code(), grpc::StatusCode::CANCELLED) << replies[1].message();  // held by the task
  EXPECT_EQ(replies[99].code(), grpc::StatusCode::NOT_FOUND) << replies[99].message();
  gate->open();
  // The task's late push is refused cleanly; the queued request never reached a task.
  EXPECT_EQ(rx_test::wait_for(pushed.get_future(), "the task's push"), rx::errc::request_cancelled);
  EXPECT_TRUE(stream.close().ok());
  EXPECT_EQ(on_loop([&] { return invocations; }), 1);
}

TEST_F(ExchangeTest, AFrameDeadlineReachesTheTaskAndFailsTheRequestWhenItPasses) {
  const auto holder = attach_holder(make_key("held"), 2);
  RawStream stream(server_.target());
  ASSERT_TRUE(stream.write(
      {request_frame(1, make_key("held"), "{}", /*timeout_ms=*/50), request_frame(2, make_key("held"), "{}")}));
  const pb::ExchangeReply expired = stream.read_one();
  EXPECT_EQ(expired.id(), 1U);
  EXPECT_EQ(expired.code(), grpc::StatusCode::DEADLINE_EXCEEDED) << expired.message();
  rx_test::wait_for(holder->holding_enough.get_future(), "the task to take both requests");
  // Both carry a deadline (the stream's own, RawStream's hang guard, applies to each); the frame's
  // is the earlier.
  const auto deadlines = on_loop([&] { return holder->deadlines; });
  ASSERT_EQ(deadlines.size(), 2U);
  ASSERT_TRUE(deadlines[0].has_value() && deadlines[1].has_value());
  EXPECT_LT(*deadlines[0], *deadlines[1]);
  holder->gate.open();
  EXPECT_EQ(stream.read_one().id(), 2U);
  const auto results = on_loop([&] { return holder->reply_results; });
  ASSERT_EQ(results.size(), 2U);
  EXPECT_EQ(std::count(results.begin(), results.end(), rx::errc::request_cancelled), 1);
  EXPECT_TRUE(stream.close().ok());
}

class ExchangeFlowControlTest : public ExchangeTest {
 protected:
  static rx::ServerOptions limited() {
    rx::ServerOptions options;
    options.max_stream_requests_in_flight = 4;
    return options;
  }
  ExchangeFlowControlTest() : ExchangeTest(limited()) {}
};

TEST_F(ExchangeFlowControlTest, AStreamReadsNoFurtherThanItsLimitOfRequestsInFlightAndReadsOnWhenAnswered) {
  constexpr std::uint64_t REQUESTS = 60;
  const auto holder = attach_holder(make_key("held"), 4);
  RawStream stream(server_.target());
  for (std::uint64_t id = 0; id < REQUESTS; ++id) {
    ASSERT_TRUE(stream.write({request_frame(id, make_key("held"), id_payload(id))}));  // a message each
  }
  rx_test::wait_for(holder->holding_enough.get_future(), "the task to hold the first requests");
  // A full round trip through the same server: had the stream read on, more would be held by now.
  ASSERT_TRUE(server_.attach(make_key("echo"), rx_test::echo_forever));
  ASSERT_TRUE(send(make_key("echo"), {}).status.ok());
  EXPECT_EQ(on_loop([&] { return holder->held; }), 4U);
  holder->gate.open();
  std::set<std::uint64_t> answered;
  for (const pb::ExchangeReply& reply : stream.read(REQUESTS)) {
    EXPECT_EQ(reply.code(), 0) << reply.message();
    answered.insert(reply.id());
  }
  EXPECT_EQ(answered.size(), REQUESTS);
  EXPECT_LE(on_loop([&] { return holder->most_held; }), 4U);
  EXPECT_TRUE(stream.close().ok());
}

TEST_F(ExchangeFlowControlTest, FramesOfOneBatchPastTheStreamsLimitAreRefusedAndTheRestServed) {
  const auto holder = attach_holder(make_key("held"), 4);
  RawStream stream(server_.target());
  std::vector<pb::ExchangeFrame> frames;
  for (std::uint64_t id = 0; id < 10; ++id) {
    frames.push_back(request_frame(id, make_key("held"), id_payload(id)));
  }
  ASSERT_TRUE(stream.write(frames));  // one message: pacing reads cannot stop it halfway
  std::map<std::uint64_t, pb::ExchangeReply> refused;
  for (const pb::ExchangeReply& reply : stream.read(6)) {
    refused[reply.id()] = reply;
  }
  for (std::uint64_t id = 4; id < 10; ++id) {
    EXPECT_EQ(refused[id].code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << id << ": " << refused[id].message();
  }
  rx_test::wait_for(holder->holding_enough.get_future(), "the task to hold the first four");
  holder->gate.open();
  for (const pb::ExchangeReply& reply : stream.read(4)) {
    EXPECT_LT(reply.id(), 4U);
    EXPECT_EQ(reply.code(), 0) << reply.message();
  }
  EXPECT_TRUE(stream.close().ok());
}

TEST_F(ExchangeTest, AStreamCancelledWhileItsWriteIsStuckOnAClientThatDoesNotReadStillEnds) {
  // The client reads nothing and its receive window is small, so the server's write of the
  // replies cannot complete; the stream is cancelled while that write is in flight. Whichever
  // order gRPC reports the cancel and the failed write in, the server must still finish the
  // stream, or its shutdown (bounded below) waits forever.
  auto pushed = std::make_shared<std::promise<void>>();
  constexpr int FRAMES = 12;
  ASSERT_TRUE(server_.attach(make_key("echo"), [pushed](rx::Endpoint endpoint) -> asio::awaitable<void> {
    for (int i = 0; i < FRAMES; ++i) {
      json::object payload = co_await endpoint.get();
      co_await endpoint.push(std::move(payload));
    }
    pushed->set_value();
  }));
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);  // keep the client's window at its initial 64 KiB
  RawStream stream(server_.target(), arguments);
  const std::string blob = json::serialize(json::object{{"blob", std::string(256 * 1024, 'x')}});
  std::vector<pb::ExchangeFrame> frames;
  for (int id = 0; id < FRAMES; ++id) {
    frames.push_back(request_frame(static_cast<std::uint64_t>(id), make_key("echo"), blob));
  }
  ASSERT_TRUE(stream.write(frames));
  rx_test::wait_for(pushed->get_future(), "the task to push every reply");
  stream.context().TryCancel();
  auto stopped = std::async(std::launch::async, [this] { server_.shutdown(); });
  rx_test::wait_for(stopped, "the server's shutdown (a stream never finished would hold it)");
}

TEST_F(ExchangeTest, ACancelledStreamGivesUpItsRequestsAndTheServerServesOn) {
  auto cancelled = std::make_shared<std::promise<void>>();
  std::promise<void> took;
  ASSERT_TRUE(server_.attach(make_key("held"), [&, cancelled](rx::Endpoint endpoint) -> asio::awaitable<void> {
    rx::Request request = co_await endpoint.next();
    took.set_value();
    asio::steady_timer forever(endpoint.get_executor(), asio::steady_timer::time_point::max());
    auto [error] = co_await forever.async_wait(
        asio::bind_cancellation_slot(request.cancellation_slot(), asio::as_tuple(asio::use_awaitable)));
    if (error == asio::error::operation_aborted) {
      cancelled->set_value();
    }
  }));
  {
    RawStream stream(server_.target());
    ASSERT_TRUE(stream.write({request_frame(1, make_key("held"), "{}")}));
    rx_test::wait_for(took.get_future(), "the task to take the request");
    stream.context().TryCancel();
    rx_test::wait_for(cancelled->get_future(), "the task to see the stream's cancel");
    EXPECT_EQ(stream.drain().second.error_code(), grpc::StatusCode::CANCELLED);
  }
  ASSERT_TRUE(server_.attach(make_key("echo"), rx_test::echo_forever));
  EXPECT_TRUE(send(make_key("echo"), {}).status.ok());
  RawStream next(server_.target());
  ASSERT_TRUE(next.write({request_frame(1, make_key("echo"), "{}")}));
  EXPECT_EQ(next.read_one().code(), grpc::StatusCode::OK);
  EXPECT_TRUE(next.close().ok());
}

TEST_F(ExchangeTest, AShutdownAnswersEveryRequestInFlightThenEndsTheStreamWithUnavailable) {
  const auto holder = attach_holder(make_key("held"), 3);
  RawStream stream(server_.target());
  ASSERT_TRUE(stream.write({request_frame(1, make_key("held"), "{}"), request_frame(2, make_key("held"), "{}"),
                            request_frame(3, make_key("held"), "{}")}));
  rx_test::wait_for(holder->holding_enough.get_future(), "the task to hold every request");
  std::thread stopping([this] { server_.shutdown(); });  // no grace: what is held fails at once
  auto [replies, status] = stream.drain();
  stopping.join();
  ASSERT_EQ(replies.size(), 3U);
  for (const pb::ExchangeReply& reply : replies) {
    EXPECT_EQ(reply.code(), grpc::StatusCode::UNAVAILABLE) << reply.id() << ": " << reply.message();
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << rx_test::describe(status);
  // A stream opened after the shutdown is refused.
  RawStream late(server_.target());
  EXPECT_NE(late.drain().second.error_code(), grpc::StatusCode::OK);
  holder->gate.open();  // the task's coroutines end, so the loop runs out of work
}

TEST_F(ExchangeTest, AClientThatHalfClosesWithRequestsInFlightGetsEveryReplyBeforeTheEnd) {
  const auto holder = attach_holder(make_key("held"), 2);
  RawStream stream(server_.target());
  ASSERT_TRUE(stream.write({request_frame(1, make_key("held"), "{}"), request_frame(2, make_key("held"), "{}")}));
  rx_test::wait_for(holder->holding_enough.get_future(), "the task to hold both");
  stream.writes_done();  // before the replies exist: the server must still send them, then end
  holder->gate.open();
  const std::vector<pb::ExchangeReply> replies = stream.read(2);
  for (const pb::ExchangeReply& reply : replies) {
    EXPECT_EQ(reply.code(), 0) << reply.message();
  }
  const grpc::Status end = stream.finish();
  EXPECT_TRUE(end.ok()) << rx_test::describe(end);
}

}  // namespace

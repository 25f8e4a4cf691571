// Loop hand-off: a payload delivered to a task coroutine waiting in get(), until its push() has
// completed. One loop, no network, the loop run on the benchmark thread: ns per message.
//
// The endpoint queue (detail::EndpointState, built without a task) is driven directly, with a
// reusable fake reply sink standing in for the gRPC reactor. The task recycles each payload
// object back to the deliverer, so a message costs no JSON copy: only the hand-off is timed.
#include "common/payloads.hpp"

#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/detail/pending_reply.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;

/// Stands in for the transport: counts replies, never finishes, is never freed mid-run.
class CountingReply final : public rx::detail::PendingReply {
 public:
  boost::system::error_code reply(const boost::json::object& /*outputs*/, std::string&& /*json*/) override {
    ++replies;
    return {};
  }
  bool fail(const grpc::Status& /*status*/) override {
    ++failures;
    return true;
  }
  [[nodiscard]] bool finished() const noexcept override { return false; }

  std::int64_t replies = 0;
  std::int64_t failures = 0;
};

/// The task as users write it (default token, `co_await rx.get()`), except that it hands the
/// payload object back to the deliverer instead of dropping it. Ends when the endpoint closes.
asio::awaitable<void> recycling_task(rx::Endpoint endpoint, std::vector<boost::json::object>& pool) {
  for (;;) {
    pool.push_back(co_await endpoint.get());
    co_await endpoint.push(boost::json::object{});
  }
}

/// One endpoint whose task waits in get(), on a loop driven by the benchmark thread.
class Handoff {
 public:
  /// `payloads`: how many messages may be on their way at once.
  explicit Handoff(std::size_t payloads)
      : state_(std::make_shared<rx::detail::EndpointState>(loop_.get_executor(), rx::bench::make_key(0))),
        sink_(new CountingReply),
        reply_(sink_) {
    const boost::json::object payload = rx::bench::make_xcom_payload(64);
    pool_.assign(payloads, payload);
    asio::co_spawn(loop_.get_executor(), recycling_task(rx::Endpoint(state_), pool_),
                   [this](const std::exception_ptr& /*error*/) { task_ended_ = true; });
    poll();  // runs the task up to its first get()
    // One message end to end proves the plumbing before anything is timed.
    loop_.get_executor().execute([this] { deliver_one(); });
    poll();
  }
  Handoff(const Handoff&) = delete;
  Handoff& operator=(const Handoff&) = delete;
  ~Handoff() {
    loop_.get_executor().execute([this] { state_->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "done")); });
    poll();  // the task's get() fails with endpoint_closed and the task ends
  }

  /// A job that delivers one message, reused for every message: the server's request reactor is
  /// its own intrusive loop job the same way, so handing a request over allocates nothing.
  struct DeliverJob final : rx::detail::LoopJob {
    explicit DeliverJob(Handoff& owner) : handoff(&owner) { invoke = &run; }
    static void run(rx::detail::LoopJob* job, bool run) {
      if (run) {
        static_cast<DeliverJob*>(job)->handoff->deliver_one();
      }
    }
    Handoff* handoff;
  };

  /// Hands the recycled payload to the endpoint. Runs on the loop.
  void deliver_one() {
    ++delivered_;
    state_->deliver(reply_, std::move(pool_.back()));
    pool_.pop_back();
  }

  void poll() {
    if (context_.stopped()) {
      context_.restart();
    }
    context_.poll();
  }

  [[nodiscard]] rx::LoopExecutor executor() const { return loop_.get_executor(); }
  [[nodiscard]] std::int64_t delivered() const noexcept { return delivered_; }

  /// Empty if every delivered message was pushed and the task still waits; else what went wrong.
  [[nodiscard]] std::string check() const {
    if (task_ended_) {
      return "the task ended early";
    }
    if (sink_->failures != 0 || sink_->replies != delivered_) {
      return "delivered " + std::to_string(delivered_) + ", pushed " + std::to_string(sink_->replies) + ", failed " +
             std::to_string(sink_->failures);
    }
    return {};
  }

 private:
  asio::io_context context_;
  rx::Loop loop_{context_};
  std::shared_ptr<rx::detail::EndpointState> state_;
  CountingReply* sink_;
  rx::detail::PendingReplyPtr reply_;  // the fixture's reference keeps the sink alive
  std::vector<boost::json::object> pool_;
  std::int64_t delivered_ = 0;
  bool task_ended_ = false;
};

void finish(benchmark::State& state, const Handoff& handoff) {
  if (const std::string error = handoff.check(); !error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  state.SetItemsProcessed(state.iterations());
}

// Each message submitted on its own with the library's hand-off from outside the loop, as a gRPC
// thread hands over a request (an intrusive job, as the request's reactor is): the loop is idle,
// so this thread takes the token and runs the delivery, the task's resumption and its push's
// completion before returning.
void BM_LoopHandoffDispatchEach(benchmark::State& state) {
  Handoff handoff(1);
  Handoff::DeliverJob job(handoff);  // runs (or is polled) before it is handed over again
  const rx::LoopExecutor executor = handoff.executor();
  while (state.KeepRunningBatch(1000)) {
    for (int i = 0; i < 1000; ++i) {
      const std::int64_t before = handoff.delivered();
      rx::detail::hand_off_job(executor, &job);
      if (handoff.delivered() == before) {
        handoff.poll();  // a preempted run spent its budget and left the rest to the loop's own thread
      }
    }
  }
  finish(state, handoff);
}
BENCHMARK(BM_LoopHandoffDispatchEach)->ArgName("payload_bytes")->Arg(64);

// A batch of messages queued on the loop from outside it (intrusive jobs, as a burst of request
// reactors is), then the io_context run on this thread until they are drained: one drain, `batch`
// deliveries and pushes. The task is busy pushing when the next delivery comes, so messages queue
// and every get() completes posted: the path of a burst.
void BM_LoopHandoffPostBatch(benchmark::State& state) {
  const auto batch = static_cast<int>(state.range(1));
  Handoff handoff(static_cast<std::size_t>(batch));
  std::vector<Handoff::DeliverJob> jobs(static_cast<std::size_t>(batch), Handoff::DeliverJob(handoff));
  const rx::LoopExecutor executor = handoff.executor();
  while (state.KeepRunningBatch(batch)) {
    for (Handoff::DeliverJob& job : jobs) {
      rx::detail::post_job(executor, &job);
    }
    handoff.poll();
  }
  finish(state, handoff);
}
BENCHMARK(BM_LoopHandoffPostBatch)->ArgNames({"payload_bytes", "batch"})->Args({64, 1000});

}  // namespace

BENCHMARK_MAIN();

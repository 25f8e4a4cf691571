// XComs through the server: a waiting Pull's wake-up, Watch fan-out to many subscribers, and
// xcom_push throughput from task code with each store. The client side is the plain generated
// gRPC stub (remote_xcomm::v1::RemoteXComm), as a scheduler in any language would use it; server
// and client run in this one process (they share gRPC's pollers and the machine's cores), over
// TCP loopback (127.0.0.1, port 0).
//
//   BM_UnaryRoundTrip/rxcomm_server   raw callback Send -> rx::Server -> echo task -> reply, one
//       in flight, 64-byte payload: the unit the wake-up is compared with (docs/benchmarks.md).
//   BM_PullWakeUp                     a waiting Pull (wait=true) for a fresh key K; then a Send
//       whose task records a steady_clock timestamp and does `co_await rx.xcom_push(K, ...)`. The
//       iteration's (manual) time is from that timestamp to the Pull's completion callback on the
//       client. The server offers no way to see that a Pull is registered, so the Send goes out
//       2 ms after the Pull; an iteration whose push came less than 1 ms after the Pull was issued
//       is not counted (unconfirmed_iterations says how many), so each counted Pull had at least
//       1 ms to reach the loop and register before the push.
//   BM_WatchFanOut/subscribers:S/events:E   S Watch streams (raw async ClientReadReactors, over 4
//       connections) on one DAG run, registration confirmed by a "ready" XCom each of them saw;
//       then a task pushes E XComs in a loop. The iteration's (manual) time is from just before
//       the first push (the task's timestamp) to the moment the last subscriber received the
//       last event. events_per_second: events delivered, summed over subscribers, per second of
//       that time. ServerOptions::watch_buffer_events is E + 1,024, so no subscriber is cut: a
//       stream that ends with RESOURCE_EXHAUSTED (or any status but CANCELLED, ours) is an error.
//   BM_PushThroughput/store:K/endpoints:N   N endpoints, each a task that pushes C XComs in a
//       loop (keys cycling over 256 per endpoint, 64-byte values), each push awaited (with SQLite:
//       until its group is committed). One iteration is one round (a Send to each endpoint, all
//       at once, answered after its C pushes), all of it timed. Stores: none (memory only),
//       memory (rx::make_memory_store), sqlite (rx::open_sqlite_store in a fresh temporary
//       directory, synchronous=NORMAL). pushes_per_second; p50_us and p99_us of one push
//       (xcom_push initiation to completion, in the task).
//
// Targets (issue): a waiting Pull wakes within the same order of time as one unary round trip;
// SQLite group commit sustains at least 50,000 pushes/s. With RX_BENCH_XCOM_SMOKE set (the CTest
// smoke run), fan-out and push rounds are small so the run takes a few seconds.
#include "codec.hpp"
#include "common/closed_loop.hpp"
#include "common/payloads.hpp"
#include "common/raw_echo.hpp"
#include "common/rxcomm_echo.hpp"
#include "common/temp_directory.hpp"

#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/xcom.hpp>

#include <benchmark/benchmark.h>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_callback.h>

#include <stdlib.h>  // mkdtemp

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace rx::bench;  // NOLINT(google-build-using-namespace): benchmark-local helpers
using remote_xcomm::v1::RemoteXComm;
using remote_xcomm::v1::SendRequest;
using remote_xcomm::v1::SendResponse;

bool smoke() { return std::getenv("RX_BENCH_XCOM_SMOKE") != nullptr; }

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

/// The `q` quantile (0..1) of `samples_ns`, in microseconds (reorders them).
double quantile_us(std::vector<std::int64_t>& samples_ns, double q) {
  if (samples_ns.empty()) {
    return 0.0;
  }
  const auto rank = static_cast<std::size_t>(q * static_cast<double>(samples_ns.size() - 1) + 0.5);
  std::nth_element(samples_ns.begin(), samples_ns.begin() + static_cast<std::ptrdiff_t>(rank), samples_ns.end());
  return static_cast<double>(samples_ns[rank]) / 1000.0;
}

/// Counts down to zero; wait() returns once it got there. The last count_down() notifies under
/// the lock, so the waiter may destroy it once wait() returns.
class Countdown {
 public:
  explicit Countdown(std::int64_t count) : count_(count) {}
  void count_down() {
    const std::lock_guard lock(mutex_);
    if (--count_ == 0) {
      condition_.notify_all();
    }
  }
  void wait() {
    std::unique_lock lock(mutex_);
    condition_.wait(lock, [this] { return count_ <= 0; });
  }
  /// False if `timeout` passed first.
  bool wait_for(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return condition_.wait_for(lock, timeout, [this] { return count_ <= 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable condition_;
  std::int64_t count_;
};

/// One raw async Send; `done(status)` runs on a gRPC thread, then the call is freed.
template <typename Done>
void send_async(RemoteXComm::Stub& stub, const rx::TaskInstanceKey& key, std::string payload_json, Done done) {
  struct Call {
    grpc::ClientContext context;
    SendRequest request;
    SendResponse response;
  };
  auto* call = new Call;
  rx::detail::to_proto(key, *call->request.mutable_key());
  call->request.set_payload_json(std::move(payload_json));
  call->context.set_deadline(std::chrono::system_clock::now() + CALL_DEADLINE);
  stub.async()->Send(&call->context, &call->request, &call->response,
                     [call, done = std::move(done)](const grpc::Status& status) mutable {
                       delete call;
                       done(status);
                     });
}

/// Sends `payload_json` to each of `keys` at once and waits for every reply; the first error's
/// message, or empty.
std::string send_to_all(RemoteXComm::Stub& stub, const std::vector<rx::TaskInstanceKey>& keys,
                        const std::string& payload_json) {
  Countdown replies(static_cast<std::int64_t>(keys.size()));
  std::mutex error_mutex;
  std::string error;
  for (const auto& key : keys) {
    send_async(stub, key, payload_json, [&](const grpc::Status& status) {
      if (!status.ok()) {
        const std::lock_guard lock(error_mutex);
        if (error.empty()) {
          error = "Send failed: " + status.error_message();
        }
      }
      replies.count_down();
    });
  }
  replies.wait();
  return error;
}

using rx::bench::TempDirectory;

// ---- Wake-up of a waiting Pull, and the unary round trip it is compared with ------------------

/// The wake-up task: for each request {"key": K}, records when it pushes, pushes K, replies {}.
struct WakeContext {
  std::atomic<std::int64_t> push_ns{0};
};

asio::awaitable<void> wake_task(rx::Endpoint endpoint, WakeContext* context) {
  const boost::json::value value = make_xcom_payload(64);
  for (;;) {
    boost::json::object payload;
    try {
      payload = co_await endpoint.get();
    } catch (const boost::system::system_error&) {
      co_return;  // closed
    }
    std::string key(payload.at("key").as_string());
    context->push_ns.store(now_ns(), std::memory_order_release);
    co_await endpoint.xcom_push(std::move(key), value);
    co_await endpoint.push(boost::json::object{});
  }
}

/// The server of the wake-up and round-trip benchmarks: a wake task at key 0, an echo at key 1.
struct WakeServer {
  WakeServer() : channel(make_channel(server.target())), stub(RemoteXComm::NewStub(channel)), wake_key(make_key(0)) {
    if (!server.server().attach(wake_key, [this](rx::Endpoint e) { return wake_task(std::move(e), &context); })) {
      throw std::logic_error("wake key taken");
    }
    server.attach_echo(make_key(1));
  }
  WakeContext context;
  RxcommEchoServer server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<RemoteXComm::Stub> stub;
  rx::TaskInstanceKey wake_key;
};

std::unique_ptr<WakeServer> wake_server;

WakeServer& get_wake_server() {
  if (!wake_server) {
    wake_server = std::make_unique<WakeServer>();
  }
  return *wake_server;
}

void BM_UnaryRoundTrip(benchmark::State& state) {
  WakeServer& s = get_wake_server();
  SendRequest request;
  rx::detail::to_proto(make_key(1), *request.mutable_key());
  request.set_payload_json(boost::json::serialize(make_xcom_payload(64)));
  run_closed_loop(
      state, 1, [&](ClosedLoop& loop, int /*slot*/) { issue_raw_unary(*s.stub, request, loop); },
      "requests_per_second");
}

void BM_PullWakeUp(benchmark::State& state) {
  WakeServer& s = get_wake_server();
  static std::atomic<std::uint64_t> next_key{0};  // a fresh key per iteration, across runs
  std::vector<std::int64_t> latencies_ns;
  std::int64_t unconfirmed = 0;
  for (auto _ : state) {
    const std::string key = "wake_" + std::to_string(next_key.fetch_add(1));
    remote_xcomm::v1::PullRequest request;
    request.set_dag_id(s.wake_key.dag_id);
    request.set_run_id(s.wake_key.run_id);
    request.set_task_id(s.wake_key.task_id);
    request.set_key(key);
    request.set_wait(true);
    remote_xcomm::v1::PullResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + CALL_DEADLINE);
    std::atomic<std::int64_t> pulled_ns{0};
    grpc::Status pull_status;
    Countdown pulled(1);
    const std::int64_t issued_ns = now_ns();
    s.stub->async()->Pull(&context, &request, &response, [&](const grpc::Status& status) {
      pulled_ns.store(now_ns(), std::memory_order_relaxed);
      pull_status = status;
      pulled.count_down();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    Countdown sent(1);
    grpc::Status send_status;
    send_async(*s.stub, s.wake_key, R"({"key":")" + key + R"("})", [&](const grpc::Status& status) {
      send_status = status;
      sent.count_down();
    });
    pulled.wait();
    sent.wait();
    if (!pull_status.ok() || !send_status.ok() || response.xcoms_size() != 1) {
      state.SkipWithError(
          ("Pull or Send failed: " + pull_status.error_message() + " / " + send_status.error_message()).c_str());
      return;
    }
    const std::int64_t push_ns = s.context.push_ns.load(std::memory_order_acquire);
    const std::int64_t wake_ns = pulled_ns.load(std::memory_order_relaxed) - push_ns;
    state.SetIterationTime(static_cast<double>(wake_ns) / 1e9);
    if (push_ns - issued_ns < 1'000'000) {
      ++unconfirmed;
    } else {
      latencies_ns.push_back(wake_ns);
    }
  }
  state.counters["unconfirmed_iterations"] = static_cast<double>(unconfirmed);
  state.counters["p50_us"] = quantile_us(latencies_ns, 0.50);
  state.counters["p99_us"] = quantile_us(latencies_ns, 0.99);
}

// ---- Watch fan-out ------------------------------------------------------------------------------

/// The fan-out task: {"ready": true} pushes "ready"; {"count": E} records when it starts, then
/// pushes E - 1 XComs "e" and one "last", each awaited; then it replies {}.
struct FanContext {
  std::atomic<std::int64_t> start_ns{0};
};

asio::awaitable<void> fan_task(rx::Endpoint endpoint, FanContext* context) {
  for (;;) {
    boost::json::object payload;
    try {
      payload = co_await endpoint.get();
    } catch (const boost::system::system_error&) {
      co_return;
    }
    if (payload.contains("ready")) {
      co_await endpoint.xcom_push("ready", true);
    } else {
      const std::int64_t count = payload.at("count").as_int64();
      context->start_ns.store(now_ns(), std::memory_order_release);
      for (std::int64_t i = 0; i + 1 < count; ++i) {
        co_await endpoint.xcom_push("e", i);
      }
      co_await endpoint.xcom_push("last", count);
    }
    co_await endpoint.push(boost::json::object{});
  }
}

/// What the subscribers of one iteration share.
struct FanRun {
  explicit FanRun(std::int64_t subscribers) : all_last(subscribers), all_done(subscribers) {}
  std::atomic<std::int64_t> ready{0};
  std::atomic<std::int64_t> delivered{0};
  std::atomic<std::int64_t> last_seen_ns{0};  // the latest arrival of "last"
  Countdown all_last;
  Countdown all_done;
  std::mutex error_mutex;
  std::string error;

  void saw_last() {
    const std::int64_t now = now_ns();
    std::int64_t seen = last_seen_ns.load(std::memory_order_relaxed);
    while (seen < now && !last_seen_ns.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
    all_last.count_down();
  }
  void fail(std::string message) {
    const std::lock_guard lock(error_mutex);
    if (error.empty()) {
      error = std::move(message);
    }
  }
};

/// One Watch stream: counts the XComs "e" and "last" it receives, reads until cancelled.
class Subscriber final : public grpc::ClientReadReactor<remote_xcomm::v1::WatchResponse> {
 public:
  Subscriber(RemoteXComm::Stub& stub, const remote_xcomm::v1::WatchRequest& request, FanRun& run)
      : request_(request), run_(run) {
    stub.async()->Watch(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      return;  // OnDone follows
    }
    std::int64_t delivered = 0;
    bool last = false;
    for (const auto& event : response_.events()) {
      if (!event.has_xcom()) {
        continue;
      }
      const std::string& key = event.xcom().key();
      if (key == "e") {
        ++delivered;
      } else if (key == "last") {
        ++delivered;
        last = true;
      } else if (key == "ready" && !ready_) {
        ready_ = true;
        run_.ready.fetch_add(1, std::memory_order_relaxed);
      }
    }
    run_.delivered.fetch_add(delivered, std::memory_order_relaxed);
    if (last) {
      run_.saw_last();
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    if (status.error_code() != grpc::StatusCode::CANCELLED) {
      run_.fail("a Watch ended with status " + std::to_string(status.error_code()) + ": " + status.error_message());
    }
    FanRun& run = run_;
    delete this;
    run.all_done.count_down();
  }

 private:
  grpc::ClientContext context_;
  remote_xcomm::v1::WatchRequest request_;
  remote_xcomm::v1::WatchResponse response_;
  FanRun& run_;
  bool ready_ = false;
};

/// `count` channels, each its own TCP connection (distinct arguments keep gRPC from sharing one).
std::vector<std::shared_ptr<grpc::Channel>> make_channels(const std::string& target, int count) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < count; ++i) {
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(MAX_MESSAGE_BYTES);
    arguments.SetMaxSendMessageSize(MAX_MESSAGE_BYTES);
    arguments.SetInt("rx.bench.connection", i);
    channels.push_back(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments));
  }
  return channels;
}

void BM_WatchFanOut(benchmark::State& state) {
  const auto subscribers = state.range(0);
  const auto events = smoke() ? std::min<std::int64_t>(state.range(1), 200) : state.range(1);
  rx::ServerOptions options;
  options.watch_buffer_events = static_cast<std::size_t>(events) + 1024;
  FanContext context;
  RxcommEchoServer server(options);
  const rx::TaskInstanceKey key = make_key(0);
  if (!server.server().attach(key, [&context](rx::Endpoint e) { return fan_task(std::move(e), &context); })) {
    state.SkipWithError("attach failed");
    return;
  }
  const auto channels = make_channels(server.target(), 4);
  std::vector<std::unique_ptr<RemoteXComm::Stub>> stubs;
  for (const auto& channel : channels) {
    stubs.push_back(RemoteXComm::NewStub(channel));
  }
  remote_xcomm::v1::WatchRequest request;
  request.set_dag_id(key.dag_id);
  request.set_run_id(key.run_id);

  std::vector<double> all_delivered_ms;
  std::int64_t delivered_total = 0;
  for (auto _ : state) {
    FanRun run(subscribers);
    std::vector<Subscriber*> streams;
    for (std::int64_t i = 0; i < subscribers; ++i) {
      streams.push_back(new Subscriber(*stubs[static_cast<std::size_t>(i) % stubs.size()], request, run));
    }
    // Registered once each has seen a "ready" pushed after it subscribed.
    std::string error;
    for (int attempt = 0; run.ready.load() < subscribers && error.empty(); ++attempt) {
      if (attempt == 500) {
        error = "subscribers not registered after 500 ready pushes";
        break;
      }
      error = send_to_all(*stubs[0], {key}, R"({"ready":true})");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (error.empty()) {
      error = send_to_all(*stubs[0], {key}, R"({"count":)" + std::to_string(events) + "}");
    }
    if (error.empty() && !run.all_last.wait_for(std::chrono::seconds(120))) {
      error = "not every subscriber saw the last event within 120 s";
    }
    const std::int64_t elapsed_ns = run.last_seen_ns.load() - context.start_ns.load();
    for (Subscriber* stream : streams) {
      stream->cancel();  // each frees itself in OnDone
    }
    run.all_done.wait();
    if (error.empty()) {
      const std::lock_guard lock(run.error_mutex);
      error = run.error;
    }
    if (error.empty() && run.delivered.load() != subscribers * events) {
      error = "delivered " + std::to_string(run.delivered.load()) + " events, expected " +
              std::to_string(subscribers * events);
    }
    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      return;
    }
    state.SetIterationTime(static_cast<double>(elapsed_ns) / 1e9);
    all_delivered_ms.push_back(static_cast<double>(elapsed_ns) / 1e6);
    delivered_total += run.delivered.load();
  }
  state.counters["events_per_second"] =
      benchmark::Counter(static_cast<double>(delivered_total), benchmark::Counter::kIsRate);
  if (!all_delivered_ms.empty()) {
    state.counters["all_delivered_ms"] = *std::max_element(all_delivered_ms.begin(), all_delivered_ms.end());
  }
}

// ---- Push throughput ----------------------------------------------------------------------------

/// Each endpoint's task, for {"count": C}: C pushes, each awaited and timed, then a reply.
struct PushContext {
  explicit PushContext(std::size_t endpoints) : latencies_ns(endpoints) {}
  std::vector<std::vector<std::int64_t>> latencies_ns;  // per endpoint, touched by its task only
  std::atomic<std::int64_t> failures{0};
};

asio::awaitable<void> push_task(rx::Endpoint endpoint, PushContext* context, std::size_t slot) {
  const boost::json::value value = make_xcom_payload(64);
  std::vector<std::string> keys;
  for (int i = 0; i < 256; ++i) {
    keys.push_back("x" + std::to_string(i));
  }
  for (;;) {
    boost::json::object payload;
    try {
      payload = co_await endpoint.get();
    } catch (const boost::system::system_error&) {
      co_return;
    }
    const std::int64_t count = payload.at("count").as_int64();
    std::vector<std::int64_t>& latencies = context->latencies_ns[slot];
    for (std::int64_t i = 0; i < count; ++i) {
      const Clock::time_point started = Clock::now();
      try {
        co_await endpoint.xcom_push(keys[static_cast<std::size_t>(i) % keys.size()], value);
      } catch (const boost::system::system_error&) {
        context->failures.fetch_add(1, std::memory_order_relaxed);
      }
      latencies.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count());
    }
    co_await endpoint.push(boost::json::object{});
  }
}

enum StoreKind : std::int64_t { no_store = 0, memory_store = 1, sqlite_store = 2 };

void BM_PushThroughput(benchmark::State& state) {
  const auto store_kind = static_cast<StoreKind>(state.range(0));
  const auto endpoints = static_cast<std::size_t>(state.range(1));
  // Pushes per endpoint per round: about 64,000 a round with 64 endpoints.
  const std::int64_t count = smoke() ? 20 : (endpoints == 1 ? 4000 : 1000);
  std::optional<TempDirectory> directory;
  rx::ServerOptions options;
  try {
    if (store_kind == memory_store) {
      options.xcom_store = rx::make_memory_store();
    } else if (store_kind == sqlite_store) {
      directory.emplace("rx-bm-xcom");
      options.xcom_store = rx::open_sqlite_store(directory->file("xcoms.db"));  // NORMAL
    }
  } catch (const std::exception& error) {
    state.SkipWithError(error.what());
    return;
  }
  PushContext context(endpoints);
  {
    RxcommEchoServer server(options);
    std::vector<rx::TaskInstanceKey> keys;
    for (std::size_t slot = 0; slot < endpoints; ++slot) {
      keys.push_back(make_key(slot));
      if (!server.server().attach(
              keys.back(), [&context, slot](rx::Endpoint e) { return push_task(std::move(e), &context, slot); })) {
        state.SkipWithError("attach failed");
        return;
      }
    }
    const auto channel = make_channel(server.target());
    const auto stub = RemoteXComm::NewStub(channel);
    const std::string payload = R"({"count":)" + std::to_string(count) + "}";
    for (auto _ : state) {
      if (const std::string error = send_to_all(*stub, keys, payload); !error.empty()) {
        state.SkipWithError(error.c_str());
        return;
      }
    }
  }  // the server shuts down before the store goes
  if (context.failures.load() != 0) {
    state.SkipWithError((std::to_string(context.failures.load()) + " pushes failed").c_str());
    return;
  }
  std::vector<std::int64_t> latencies;
  for (auto& slot : context.latencies_ns) {
    latencies.insert(latencies.end(), slot.begin(), slot.end());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(latencies.size()));
  state.counters["pushes_per_second"] =
      benchmark::Counter(static_cast<double>(latencies.size()), benchmark::Counter::kIsRate);
  state.counters["p50_us"] = quantile_us(latencies, 0.50);
  state.counters["p99_us"] = quantile_us(latencies, 0.99);
}

BENCHMARK(BM_UnaryRoundTrip)->Name("BM_UnaryRoundTrip/rxcomm_server")->UseRealTime();
BENCHMARK(BM_PullWakeUp)->UseManualTime();
BENCHMARK(BM_WatchFanOut)->Args({1000, 500})->ArgNames({"subscribers", "events"})->UseManualTime();
BENCHMARK(BM_PushThroughput)
    ->ArgsProduct({{no_store, memory_store, sqlite_store}, {1, 64}})
    ->ArgNames({"store", "endpoints"})
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  wake_server.reset();  // shut down before gRPC's statics go
  return 0;
}

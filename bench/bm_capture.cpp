// Poller capture: can requests that need no loop work still be served while loops are busy?
//
//   BM_PollerCapture/loaded_servers:L/in_flight:32/task_us:200
//
// bench_server hosts two rx::Servers in one process, each on a Loop with an io_context thread of
// its own, whose tasks compute for task_us (200 µs) without yielding before they reply. This
// process loads L of them (1 or 2) with a raw gRPC client keeping 32 requests in flight each, one
// per endpoint, so each loaded loop always has work queued. Meanwhile a probe sends, one at a
// time on a channel of its own, requests that need no loop work (an invalid JSON payload, refused
// with INVALID_ARGUMENT on the gRPC thread that received it) to the first server, and records
// their latency. Before loading, it takes the probe's p50 on the idle servers.
//
// Counters: probe_p50_idle_us, probe_p50_us and probe_p99_us (under load), capture_ratio
// (probe p50 under load ÷ idle; target ≤ 2), load_requests_per_second, and
// task_bodies_on_loop_thread (the fraction of task bodies run by a loop's own io_context
// thread rather than a borrowed gRPC thread; a loop that captured a gRPC poller runs its
// backlog there). One iteration is one probe.
//
// The load comes from this process, not from the servers' process, so that the servers'
// process runs only what a worker process runs: its gRPC threads and its loops. A load client
// there would share (and compete for) the very pollers under test. The probe and the load share
// this process, but the probe's blocking call waits on a completion queue of its own.
#include "common/child_process.hpp"
#include "common/closed_loop.hpp"
#include "common/payloads.hpp"
#include "common/raw_echo.hpp"

#include "codec.hpp"

#include <benchmark/benchmark.h>

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_callback.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace rx::bench;  // NOLINT(google-build-using-namespace): benchmark-local helpers
using remote_xcomm::v1::SendRequest;
using remote_xcomm::v1::SendResponse;
using Stub = remote_xcomm::v1::RemoteXComm::Stub;

constexpr int SERVERS = 2;
constexpr int IN_FLIGHT = 32;
constexpr int TASK_US = 200;

/// Probes taken on the idle servers before each run (fewer in smoke mode: RX_BENCH_CAPTURE_IDLE_PROBES).
int idle_probes() {
  const char* value = std::getenv("RX_BENCH_CAPTURE_IDLE_PROBES");
  return value != nullptr ? std::max(1, std::atoi(value)) : 300;
}

/// A channel with a subchannel of its own, so the probe and each load share no connection.
std::unique_ptr<Stub> private_stub(const std::string& target) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(MAX_MESSAGE_BYTES);
  arguments.SetMaxSendMessageSize(MAX_MESSAGE_BYTES);
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return remote_xcomm::v1::RemoteXComm::NewStub(
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments));
}

/// The busy servers' process and a stub to each server, started once.
class Environment {
 public:
  Environment()
      : child_(sibling_executable("bench_server"),
               {"--server=busy", "--servers=" + std::to_string(SERVERS), "--endpoints=" + std::to_string(IN_FLIGHT),
                "--task_us=" + std::to_string(TASK_US)}) {
    for (const int port : parse_ports(child_.read_line())) {
      const std::string target = "127.0.0.1:" + std::to_string(port);
      load_stubs_.push_back(private_stub(target));
      if (!probe_stub_) {
        probe_stub_ = private_stub(target);
      }
    }
    for (std::size_t slot = 0; slot < IN_FLIGHT; ++slot) {
      SendRequest& request = load_requests_.emplace_back();
      rx::detail::to_proto(make_key(slot), *request.mutable_key());
      request.set_payload_json(rx::detail::serialize_json(make_xcom_payload(64)));
    }
    rx::detail::to_proto(make_key(0), *probe_request_.mutable_key());
    probe_request_.set_payload_json("{\"this is\": not JSON");
  }

  [[nodiscard]] ChildProcess& child() { return child_; }
  [[nodiscard]] Stub& load_stub(int server) { return *load_stubs_.at(static_cast<std::size_t>(server)); }
  [[nodiscard]] const SendRequest& load_request(int slot) const {
    return load_requests_.at(static_cast<std::size_t>(slot));
  }

  /// One probe: a blocking Send that the server must refuse with INVALID_ARGUMENT. Returns its
  /// latency in µs, or a negative value and `error` set.
  double probe(std::string& error) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + CALL_DEADLINE);
    SendResponse response;
    const Clock::time_point started = Clock::now();
    const grpc::Status status = probe_stub_->Send(&context, probe_request_, &response);
    const Clock::time_point finished = Clock::now();
    if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
      error = "the probe expected INVALID_ARGUMENT, got code " + std::to_string(status.error_code()) + ": " +
              status.error_message();
      return -1.0;
    }
    return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(finished - started).count()) /
           1000.0;
  }

 private:
  ChildProcess child_;
  std::vector<std::unique_ptr<Stub>> load_stubs_;
  std::unique_ptr<Stub> probe_stub_;
  std::vector<SendRequest> load_requests_;
  SendRequest probe_request_;
};

std::unique_ptr<Environment> environment;

/// Keeps IN_FLIGHT requests in flight on each loaded server until stop(): each completion issues
/// the next. Thread safety: completions run on gRPC threads; start, wait_for and stop on the
/// benchmark thread.
class Load {
 public:
  explicit Load(Environment& e) : environment_(e) {}
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;
  /// Stops first: completions in flight point at this.
  ~Load() { stop(); }

  void start(int servers) {
    for (int server = 0; server < servers; ++server) {
      for (int slot = 0; slot < IN_FLIGHT; ++slot) {
        in_flight_.fetch_add(1, std::memory_order_relaxed);
        issue(server, slot);
      }
    }
  }

  /// Blocks until `count` requests have completed since start (the loops' queues are full).
  void wait_for(std::int64_t count) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return completed_ >= count || !error_.empty(); });
  }

  /// Stops issuing and waits for every request in flight to complete.
  void stop() {
    stopping_.store(true, std::memory_order_relaxed);
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return in_flight_.load(std::memory_order_relaxed) == 0; });
  }

  [[nodiscard]] std::int64_t completed() {
    const std::lock_guard lock(mutex_);
    return completed_;
  }
  [[nodiscard]] std::string error() {
    const std::lock_guard lock(mutex_);
    return error_;
  }

 private:
  struct Call {
    grpc::ClientContext context;
    SendResponse response;
  };

  void issue(int server, int slot) {
    auto* call = new Call;
    call->context.set_deadline(std::chrono::system_clock::now() + CALL_DEADLINE);
    environment_.load_stub(server).async()->Send(
        &call->context, &environment_.load_request(slot), &call->response,
        [this, call, server, slot](const grpc::Status& status) {
          delete call;
          const bool again = status.ok() && !stopping_.load(std::memory_order_relaxed);
          {
            const std::lock_guard lock(mutex_);
            ++completed_;
            if (!status.ok() && error_.empty()) {
              error_ = "a load request failed: " + status.error_message();
            }
            if (!again) {
              in_flight_.fetch_sub(1, std::memory_order_relaxed);
            }
            changed_.notify_all();  // under the lock: stop() may destroy this once it sees 0
          }
          if (again) {
            issue(server, slot);
          }
        });
  }

  Environment& environment_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> in_flight_{0};
  std::mutex mutex_;
  std::condition_variable changed_;
  std::int64_t completed_ = 0;
  std::string error_;
};

double quantile_of(std::vector<double>& samples, double q) {
  const auto rank = static_cast<std::size_t>(std::lround(q * static_cast<double>(samples.size() - 1)));
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(rank), samples.end());
  return samples[rank];
}

void measure_capture(benchmark::State& state) {
  const int loaded_servers = static_cast<int>(state.range(0));
  try {
    if (!environment) {
      environment = std::make_unique<Environment>();
    }
  } catch (const std::exception& error) {
    state.SkipWithError((std::string("cannot start bench_server: ") + error.what()).c_str());
    return;
  }
  Environment& e = *environment;
  std::string error;

  std::vector<double> idle;
  for (int probe = 0; probe < idle_probes() && error.empty(); ++probe) {
    idle.push_back(e.probe(error));
  }
  if (!error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }

  Load load(e);
  load.start(loaded_servers);
  load.wait_for(std::int64_t{2} * IN_FLIGHT * loaded_servers);  // every endpoint has been busy at least once
  const auto stats_before = e.child().stats();
  const std::int64_t load_before = load.completed();
  const Clock::time_point load_started = Clock::now();

  std::vector<double> loaded;
  for (auto _ : state) {
    const double us = e.probe(error);
    if (us < 0) {
      state.SkipWithError(error.c_str());  // before leaving the loop early, as Google Benchmark requires
      error.clear();
      break;
    }
    loaded.push_back(us);
  }
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_started).count();
  const std::int64_t load_requests = load.completed() - load_before;
  const auto stats_after = e.child().stats();
  load.stop();

  if (state.error_occurred()) {
    return;
  }
  if (error = load.error(); !error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  if (loaded.empty()) {
    return;
  }
  const double idle_p50 = quantile_of(idle, 0.5);
  const double loaded_p50 = quantile_of(loaded, 0.5);
  state.SetItemsProcessed(state.iterations());
  state.counters["probe_p50_idle_us"] = idle_p50;
  state.counters["probe_p50_us"] = loaded_p50;
  state.counters["probe_p99_us"] = quantile_of(loaded, 0.99);
  state.counters["capture_ratio"] = loaded_p50 / idle_p50;
  state.counters["load_requests_per_second"] = static_cast<double>(load_requests) / load_seconds;
  const double bodies = stats_after.at("task_bodies") - stats_before.at("task_bodies");
  const double on_loop_thread =
      stats_after.at("task_bodies_on_loop_thread") - stats_before.at("task_bodies_on_loop_thread");
  state.counters["task_bodies_on_loop_thread"] = bodies > 0 ? on_loop_thread / bodies : 0.0;
}

void poller_capture(benchmark::State& state) {
  try {
    measure_capture(state);
  } catch (const std::exception& error) {  // the servers' process died: ChildProcess::stats throws
    state.SkipWithError(error.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  // The servers' process is started once with IN_FLIGHT endpoints a server and TASK_US tasks; the
  // arguments name them so that the run's JSON says what was measured.
  benchmark::RegisterBenchmark("BM_PollerCapture", &poller_capture)
      ->ArgNames({"loaded_servers", "in_flight", "task_us"})
      ->Args({1, IN_FLIGHT, TASK_US})
      ->Args({SERVERS, IN_FLIGHT, TASK_US})
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  environment.reset();  // the servers' process exits before gRPC's own statics go
  return 0;
}

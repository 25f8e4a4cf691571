// A large value in flight (issue 10, "Large values"): the latency of small requests to one
// endpoint while 64 MiB requests, echoed back, travel to and from another endpoint of the same
// server, against the same small requests with nothing else in flight.
//
// One process, three loops: the server's, the small requests' client and the large requests'
// client (so that the client side's own work on 64 MiB, serialising and parsing it, does not sit
// on the loop the small requests complete on). The large requests go one after another without a
// gap: a thread of their own issues the next as soon as one completes, so one is always in flight.
// Reported: p50_us, p99_us and max_us of the small requests, how many were measured, and
// large_round_trips (64 MiB echoes completed meanwhile). With RX_BENCH_LARGE_SMOKE set (the CTest
// smoke run) it measures one 4 MiB round trip, or 50 small requests, instead.
#include "common/closed_loop.hpp"
#include "common/rxcomm_echo.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/server.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/json/object.hpp>
#include <boost/json/string.hpp>
#include <grpc/grpc.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using rx::bench::LoopThread;

bool smoke() { return std::getenv("RX_BENCH_LARGE_SMOKE") != nullptr; }

std::size_t large_bytes() { return smoke() ? std::size_t{4} << 20 : std::size_t{64} << 20; }
constexpr int LIMIT = 80 * 1024 * 1024;

const rx::TaskInstanceKey SMALL_KEY{"bench_dag", "small", "run", -1};
const rx::TaskInstanceKey LARGE_KEY{"bench_dag", "large", "run", -1};

rx::ClientOptions client_options(bool own_connection) {
  rx::ClientOptions options;
  options.max_message_bytes = LIMIT;
  if (own_connection) {
    // Channels with the same arguments to the same target share gRPC's connection (its global
    // subchannel pool); this one gets a connection of its own.
    options.channel_arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  return options;
}

// A Client on a LoopThread of its own, running until destroyed.
class ClientThread {
 public:
  explicit ClientThread(bool own_connection = false)
      : client_(std::in_place, thread_.loop(), client_options(own_connection)) {
    work_.emplace(thread_.context().get_executor());
    thread_.start();
  }
  ClientThread(const ClientThread&) = delete;
  ClientThread& operator=(const ClientThread&) = delete;
  ~ClientThread() {
    client_.reset();
    work_.reset();
    thread_.join();
  }
  rx::Client& client() { return *client_; }

 private:
  LoopThread thread_;
  std::optional<rx::Client> client_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
};

// Sends the large value again and again, one in flight at a time, from a thread of its own,
// until stopped; counts the echoes that came back intact.
class LargeTraffic {
 public:
  LargeTraffic(rx::Client& client, std::string target)
      : client_(client), target_(std::move(target)), payload_{{"v", json::string(large_bytes() - 8, 'x')}} {
    thread_ = std::thread([this] { run(); });
    // Measure only once the first one is on its way.
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return sent_ > 0; });
  }
  LargeTraffic(const LargeTraffic&) = delete;
  LargeTraffic& operator=(const LargeTraffic&) = delete;
  ~LargeTraffic() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }

  [[nodiscard]] std::int64_t round_trips() const { return round_trips_.load(); }
  [[nodiscard]] std::string error() {
    const std::lock_guard lock(mutex_);
    return error_;
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      in_flight_ = true;
      ++sent_;
      changed_.notify_all();
      lock.unlock();
      client_.send(target_, LARGE_KEY, payload_, rx::SendOptions{std::chrono::seconds(120)},
                   [this](grpc::Status status, json::object reply) {
                     const bool intact = status.ok() && reply.size() == 1;
                     const std::lock_guard guard(mutex_);
                     if (!intact && error_.empty()) {
                       error_ = "the large request failed: " + status.error_message();
                     }
                     round_trips_ += intact ? 1 : 0;
                     in_flight_ = false;
                     changed_.notify_all();
                   });
      lock.lock();
      changed_.wait(lock, [this] { return !in_flight_; });  // waits for the send even when stopping
    }
  }

  rx::Client& client_;
  std::string target_;
  json::object payload_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  bool in_flight_ = false;
  std::int64_t sent_ = 0;
  std::string error_;
  std::atomic<std::int64_t> round_trips_{0};
};

// Small requests (a 64-byte payload) one at a time, each timed; with `large_in_flight`, for as
// long as it takes LARGE_ROUNDS large echoes to complete (so every small request measured had a
// large one in flight beside it), else IDLE_REQUESTS of them.
std::int64_t large_rounds() { return smoke() ? 1 : 4; }
std::size_t idle_requests() { return smoke() ? 50 : 5000; }

double quantile_us(std::vector<std::int64_t>& ns, double q) {
  if (ns.empty()) {
    return 0.0;
  }
  const auto rank = static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1) + 0.5);
  std::nth_element(ns.begin(), ns.begin() + static_cast<std::ptrdiff_t>(rank), ns.end());
  return static_cast<double>(ns[rank]) / 1000.0;
}

void BM_SmallRequestLatency(benchmark::State& state) {
  // 0: nothing else in flight; 1: the large requests share the small ones' connection (two
  // Clients with the same options in one process); 2: they have a connection of their own.
  const bool large = state.range(0) != 0;
  rx::ServerOptions options;
  options.max_message_bytes = LIMIT;
  options.max_json_string_bytes = LIMIT;  // the large value is one string
  rx::bench::RxcommEchoServer server(options);
  server.attach_echo(SMALL_KEY);
  server.attach_echo(LARGE_KEY);
  ClientThread small_client;
  ClientThread large_client(state.range(0) == 2);
  const json::object small_payload{{"v", std::string(56, 's')}};
  std::vector<std::int64_t> latencies_ns;
  std::vector<std::int64_t> loop_lag_ns;
  std::string error;
  std::int64_t round_trips = 0;
  for (auto _ : state) {
    std::optional<LargeTraffic> traffic;
    if (large) {
      traffic.emplace(large_client.client(), server.target());
    }
    const auto started = rx::bench::Clock::now();
    while (large ? traffic->round_trips() < large_rounds() : latencies_ns.size() < idle_requests()) {
      // The server's loop: how long a job posted to it waits before it runs.
      std::promise<void> probed;
      const auto posted = rx::bench::Clock::now();
      asio::post(server.server().get_executor(), [&probed] { probed.set_value(); });
      probed.get_future().get();
      loop_lag_ns.push_back(
          std::chrono::duration_cast<std::chrono::nanoseconds>(rx::bench::Clock::now() - posted).count());
      std::promise<grpc::Status> done;
      const auto sent = rx::bench::Clock::now();
      small_client.client().send(server.target(), SMALL_KEY, small_payload,
                                 [&done](grpc::Status status, json::object /*reply*/) { done.set_value(status); });
      const grpc::Status status = done.get_future().get();
      latencies_ns.push_back(
          std::chrono::duration_cast<std::chrono::nanoseconds>(rx::bench::Clock::now() - sent).count());
      if (!status.ok() && error.empty()) {
        error = "a small request failed: " + status.error_message();
      }
      if (traffic && !traffic->error().empty()) {
        error = traffic->error();
        break;
      }
    }
    state.SetIterationTime(std::chrono::duration<double>(rx::bench::Clock::now() - started).count());
    if (traffic) {
      round_trips = traffic->round_trips();
    }
  }
  if (!error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  state.counters["small_requests"] = static_cast<double>(latencies_ns.size());
  state.counters["p50_us"] = quantile_us(latencies_ns, 0.50);
  state.counters["p99_us"] = quantile_us(latencies_ns, 0.99);
  state.counters["max_us"] = quantile_us(latencies_ns, 1.0);
  state.counters["loop_lag_p99_us"] = quantile_us(loop_lag_ns, 0.99);
  state.counters["loop_lag_max_us"] = quantile_us(loop_lag_ns, 1.0);
  if (large) {
    state.counters["large_round_trips"] = static_cast<double>(round_trips);
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RegisterBenchmark("BM_SmallRequestLatency", BM_SmallRequestLatency)
      ->ArgName("large_in_flight")
      ->Arg(0)
      ->Arg(1)
      ->Arg(2)
      ->Iterations(1)
      ->UseManualTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

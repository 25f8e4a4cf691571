// Endpoint density: resident memory per idle endpoint, a task suspended in get().
//
// Two ways to get there, reported side by side:
//
//   BM_EndpointDensity/server_attached/endpoints:N  the real thing. N endpoints attached to one
//       rx::Server, then one request sent to each through rx::Client (64 in flight). The server
//       invokes a task only when a request waits, so this is how a task gets running: it gets
//       the request, pushes the reply and waits in get() again, and stays there. Counts the
//       server's registry entry, the endpoint state, the task's std::function and the suspended
//       coroutine with its waiting handler.
//   BM_EndpointDensity/state_only/endpoints:N       a lower bound without the server: N
//       detail::EndpointState built directly, with no task, and the same coroutine co_spawned
//       on each, awaiting rx::Endpoint(state).get(). Shows how much the server adds.
//
// VmRSS is read before and after, each time after glibc's malloc_trim, so that memory freed by
// earlier work (the warm-up, an earlier benchmark, gRPC's per-call buffers) does not hide or
// inflate the growth; keys are built before the first reading. Counters: bytes_per_endpoint,
// kib_per_endpoint. Timing means nothing here (one iteration of set-up work).
//
// Endpoint counts: 10,000 and 100,000, or the comma-separated list in --density_endpoints=...
// or the RX_BENCH_DENSITY_ENDPOINTS environment variable (the smoke test uses 1000). Run each
// benchmark in a process of its own for the cleanest figure (scripts/bench.sh does).
#include "common/closed_loop.hpp"
#include "common/payloads.hpp"
#include "common/process_stats.hpp"
#include "common/raw_echo.hpp"
#include "common/rxcomm_echo.hpp"

#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace rx::bench;  // NOLINT(google-build-using-namespace): benchmark-local helpers
namespace asio = boost::asio;

constexpr int TOUCH_IN_FLIGHT = 64;

void report(benchmark::State& state, std::int64_t count, std::int64_t before, std::int64_t after) {
  const double per_endpoint = static_cast<double>(after - before) / static_cast<double>(count);
  state.counters["endpoints"] = static_cast<double>(count);
  state.counters["bytes_per_endpoint"] = per_endpoint;
  state.counters["kib_per_endpoint"] = per_endpoint / 1024.0;
  state.counters["rss_before_mib"] = static_cast<double>(before) / (1024.0 * 1024.0);
  state.counters["rss_after_mib"] = static_cast<double>(after) / (1024.0 * 1024.0);
}

// Sends one request to keys[next], and from its completion to the next key, until the loop's
// budget is spent.
void touch_next(RxcommEcho& echo, const std::vector<rx::TaskInstanceKey>& keys, std::atomic<std::size_t>& next,
                const boost::json::object& payload, ClosedLoop& loop) {
  const rx::TaskInstanceKey& key = keys[next.fetch_add(1, std::memory_order_relaxed)];
  const Clock::time_point started = Clock::now();
  echo.client().send(echo.target(), key, payload, rx::SendOptions{CALL_DEADLINE},
                     [&echo, &keys, &next, &payload, &loop, started](const grpc::Status& status,
                                                                     const boost::json::object& /*reply*/) {
                       const Clock::time_point finished = Clock::now();
                       if (loop.claim()) {
                         touch_next(echo, keys, next, payload, loop);
                       }
                       loop.complete(started, finished,
                                     status.ok() ? std::string() : "send failed: " + status.error_message());
                     });
}

// Sends one request to each key, TOUCH_IN_FLIGHT at a time; returns the first error, if any.
std::string touch_all(RxcommEcho& echo, const std::vector<rx::TaskInstanceKey>& keys,
                      const boost::json::object& payload) {
  ClosedLoop loop(static_cast<std::int64_t>(keys.size()));
  std::atomic<std::size_t> next{0};
  for (int i = 0; i < TOUCH_IN_FLIGHT; ++i) {
    if (loop.claim()) {
      touch_next(echo, keys, next, payload, loop);
    }
  }
  loop.wait();
  return loop.error();
}

void BM_EndpointDensityServerAttached(benchmark::State& state) {
  const std::int64_t count = state.range(0);
  const boost::json::object payload = make_xcom_payload(64);
  RxcommEcho echo;
  // Warm-up: channel, connection, gRPC's and the loops' steady-state allocations.
  const std::vector<rx::TaskInstanceKey> warm_keys(1000, make_key(static_cast<std::size_t>(count)));
  echo.attach_echo(warm_keys.front());
  if (const std::string error = touch_all(echo, warm_keys, payload); !error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  std::vector<rx::TaskInstanceKey> keys;
  keys.reserve(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    keys.push_back(make_key(static_cast<std::size_t>(i)));
  }

  for (auto _ : state) {
    trim_heap();
    const std::int64_t before = resident_bytes();
    for (const rx::TaskInstanceKey& key : keys) {
      echo.attach_echo(key);
    }
    if (const std::string error = touch_all(echo, keys, payload); !error.empty()) {
      state.SkipWithError(error.c_str());
      return;
    }
    trim_heap();
    const std::int64_t after = resident_bytes();
    if (echo.server().endpoint_count() != keys.size() + 1) {
      state.SkipWithError("the server does not hold every endpoint");
      return;
    }
    report(state, count, before, after);
  }
}

void BM_EndpointDensityStateOnly(benchmark::State& state) {
  const std::int64_t count = state.range(0);
  asio::io_context context;
  rx::Loop loop(context);
  const rx::LoopExecutor executor = loop.get_executor();
  std::vector<std::shared_ptr<rx::detail::EndpointState>> endpoints;
  endpoints.reserve(static_cast<std::size_t>(count));  // a registry's slot is part of the cost
  std::int64_t ended = 0;

  for (auto _ : state) {
    trim_heap();
    const std::int64_t before = resident_bytes();
    executor.execute([&] {
      for (std::int64_t i = 0; i < count; ++i) {
        auto endpoint = std::make_shared<rx::detail::EndpointState>(executor, make_key(static_cast<std::size_t>(i)));
        asio::co_spawn(executor, echo_task(rx::Endpoint(endpoint)),
                       [&ended](const std::exception_ptr& /*error*/) { ++ended; });
        endpoints.push_back(std::move(endpoint));
      }
    });
    context.poll();  // every task runs up to its get() and suspends there
    trim_heap();
    const std::int64_t after = resident_bytes();
    if (ended != 0) {
      state.SkipWithError("a task ended instead of waiting in get()");
      break;
    }
    report(state, count, before, after);
  }

  executor.execute([&] {
    for (const auto& endpoint : endpoints) {
      endpoint->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "done"));
    }
  });
  context.restart();
  context.poll();
  endpoints.clear();
}

// Endpoint counts from --density_endpoints=A,B (removed from argv), else the environment.
std::vector<std::int64_t> endpoint_counts(int& argc, char** argv) {
  std::string list;
  if (const char* from_env = std::getenv("RX_BENCH_DENSITY_ENDPOINTS")) {
    list = from_env;
  }
  constexpr std::string_view FLAG = "--density_endpoints=";
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]).substr(0, FLAG.size()) == FLAG) {
      list = argv[i] + FLAG.size();
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  std::vector<std::int64_t> counts;
  std::istringstream items(list);
  for (std::string item; std::getline(items, item, ',');) {
    if (const std::int64_t count = std::atoll(item.c_str()); count > 0) {
      counts.push_back(count);
    }
  }
  if (counts.empty()) {
    counts = {10000, 100000};
  }
  return counts;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::int64_t> counts = endpoint_counts(argc, argv);
  for (const std::int64_t count : counts) {
    for (const auto& [name, run] : {std::pair{"BM_EndpointDensity/server_attached", &BM_EndpointDensityServerAttached},
                                    std::pair{"BM_EndpointDensity/state_only", &BM_EndpointDensityStateOnly}}) {
      benchmark::RegisterBenchmark(name, run)->ArgName("endpoints")->Arg(count)->Iterations(1)->UseRealTime();
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

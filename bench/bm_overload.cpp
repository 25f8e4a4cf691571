// Memory under overload: a server whose tasks never answer (bench_server --server=hold, in a
// process of its own) flooded by our Client, with the server's limits on and off.
//
//   BM_OverloadMemory/transport:T/flood:N/limits:on|off
//       N sends at once through rx::Client on transport T (unary Send or the Exchange stream) to
//       64 endpoints that hold every request. With limits on, the server keeps its defaults
//       (ServerOptions::max_requests_in_flight 100,000, max_stream_requests_in_flight 16,384;
//       unary runs lower the first to 10,000 so that the flood overflows it): a unary call over
//       the limit is refused at once, and an Exchange stream stops reading once it holds its
//       limit, so HTTP/2 flow control keeps the rest in the client. With limits off both are
//       10^9: the server takes everything it is sent.
//
// Once the server's count of requests in flight and the client's count of completions have not
// moved for 0.5 s, the server's VmRSS (after malloc_trim) is read again. Counters:
// server_rss_growth_mib, held (requests the server holds), refused (sends that failed at once
// with RESOURCE_EXHAUSTED), kib_per_held, client_rss_growth_mib (this process: what waits in
// the client). Timing means nothing here: one iteration of set-up work.
#include "common/child_process.hpp"
#include "common/payloads.hpp"
#include "common/process_stats.hpp"
#include "common/raw_echo.hpp"
#include "common/rxcomm_echo.hpp"

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace rx::bench;  // NOLINT(google-build-using-namespace): benchmark-local helpers

constexpr int ENDPOINTS = 64;
constexpr double MIB = 1024.0 * 1024.0;

struct Counts {
  std::atomic<std::int64_t> completed{0};
  std::atomic<std::int64_t> refused{0};
};

void overload(benchmark::State& state, rx::Transport transport, std::int64_t flood, bool limits) {
  std::vector<std::string> arguments{"--server=hold", "--endpoints=" + std::to_string(ENDPOINTS)};
  if (!limits) {
    arguments.emplace_back("--max_in_flight=1000000000");
    arguments.emplace_back("--max_stream_in_flight=1000000000");
  } else if (transport == rx::Transport::unary) {
    arguments.emplace_back("--max_in_flight=10000");
  }
  std::vector<rx::TaskInstanceKey> keys;
  for (int slot = 0; slot < ENDPOINTS; ++slot) {
    keys.push_back(make_key(static_cast<std::size_t>(slot)));
  }
  const boost::json::object payload = make_xcom_payload(64);
  for (auto _ : state) {
    try {
      ChildProcess child(sibling_executable("bench_server"), arguments);
      const std::string target = "127.0.0.1:" + std::to_string(parse_ports(child.read_line()).at(0));
      const double server_before = child.stats()["rss_bytes"];
      Counts counts;
      {
        RxcommEchoClient clients;
        rx::Client& client = transport == rx::Transport::exchange ? clients.exchange_client() : clients.client();
        trim_heap();
        const auto client_before = static_cast<double>(resident_bytes());
        for (std::int64_t i = 0; i < flood; ++i) {
          client.send(target, keys[static_cast<std::size_t>(i % ENDPOINTS)], payload,
                      rx::SendOptions{std::chrono::minutes(5)},
                      [&counts](const grpc::Status& status, const boost::json::object& /*reply*/) {
                        if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
                          counts.refused.fetch_add(1, std::memory_order_relaxed);
                        }
                        counts.completed.fetch_add(1, std::memory_order_relaxed);
                      });
        }
        // Settled: nothing moved for 0.5 s (bounded at two minutes).
        double held = -1;
        std::int64_t completed = -1;
        int still = 0;
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(2);
        while (still < 5 && std::chrono::steady_clock::now() < give_up) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          const double now_held = child.stats()["requests_in_flight"];
          const std::int64_t now_completed = counts.completed.load(std::memory_order_relaxed);
          still = now_held == held && now_completed == completed ? still + 1 : 0;
          held = now_held;
          completed = now_completed;
        }
        const double server_after = child.stats()["rss_bytes"];
        trim_heap();
        const auto client_after = static_cast<double>(resident_bytes());
        state.counters["held"] = held;
        state.counters["refused"] = static_cast<double>(counts.refused.load());
        state.counters["server_rss_growth_mib"] = (server_after - server_before) / MIB;
        state.counters["kib_per_held"] = held > 0 ? (server_after - server_before) / 1024.0 / held : 0.0;
        state.counters["client_rss_growth_mib"] = (client_after - client_before) / MIB;
        // The server shuts down (its held requests fail), so every send completes before the
        // client goes.
        child.stop();
        const auto drained_by = std::chrono::steady_clock::now() + std::chrono::minutes(1);
        while (counts.completed.load() < flood && std::chrono::steady_clock::now() < drained_by) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        if (counts.completed.load() < flood) {
          state.SkipWithError("sends still pending a minute after the server stopped");
        }
      }
    } catch (const std::exception& error) {
      state.SkipWithError(error.what());
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  struct Case {
    rx::Transport transport;
    std::int64_t flood;
    bool limits;
  };
  const char* smoke = std::getenv("RX_BENCH_OVERLOAD_SMOKE");
  std::vector<Case> cases;
  if (smoke != nullptr) {
    cases = {{rx::Transport::exchange, 20'000, true}, {rx::Transport::unary, 12'000, true}};
  } else {
    cases = {{rx::Transport::exchange, 100'000, true},
             {rx::Transport::exchange, 1'000'000, true},
             {rx::Transport::exchange, 100'000, false},
             {rx::Transport::unary, 50'000, true},
             {rx::Transport::unary, 50'000, false}};
  }
  for (const Case& c : cases) {
    const std::string name = std::string("BM_OverloadMemory/transport:") +
                             (c.transport == rx::Transport::unary ? "unary" : "exchange") +
                             "/flood:" + std::to_string(c.flood) + "/limits:" + (c.limits ? "on" : "off");
    benchmark::RegisterBenchmark(name.c_str(), &overload, c.transport, c.flood, c.limits)->Iterations(1);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// rxcomm bench: a closed-loop load generator. --concurrency coroutines on the client's loop each
// send, await the reply and send again, spreading their sends over --fan-out endpoints
// (TASK-PREFIX0 .. TASK-PREFIX(N-1)), for --duration seconds; then a latency report.
#include "commands.hpp"

#include <remote_xcomm/client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/json/serialize.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <future>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace rxcomm {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

struct BenchOptions {
  TargetOptions target;
  std::string dag_id = "rxcomm";
  std::string run_id = "demo";
  std::string task_prefix = "echo-";
  int map_index = -1;
  int fan_out = 1;
  int concurrency = 16;
  double duration_seconds = 5;
  std::size_t payload_bytes = 16;
  std::string transport = "unary";
  bool json = false;
};

struct ErrorCount {
  std::uint64_t count = 0;
  std::string first_message;
};

// The run's state. The workers run on the loop, one at a time, so the latencies and error
// table need no lock; the counters are atomic only for the progress line, read by main().
struct BenchRun {
  explicit BenchRun(rx::Connection to) : connection(std::move(to)) {}

  rx::Connection connection;
  std::vector<rx::TaskInstanceKey> keys;
  boost::json::object payload;
  rx::SendOptions send_options;
  Clock::time_point end;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ok{0};
  std::atomic<std::uint64_t> failed{0};
  std::vector<std::uint32_t> latencies_us;  // of the calls that succeeded
  std::map<grpc::StatusCode, ErrorCount> errors;
  std::exception_ptr worker_error;
  int workers_left = 0;
};

asio::awaitable<void> bench_worker(BenchRun& run, std::size_t first) {
  for (std::size_t next = first; !run.stop.load(std::memory_order_relaxed) && Clock::now() < run.end; ++next) {
    const rx::TaskInstanceKey& key = run.keys[next % run.keys.size()];
    const auto start = Clock::now();
    auto [status, reply] = co_await run.connection.send(key, run.payload, run.send_options);
    const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    if (status.ok()) {
      run.latencies_us.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(elapsed, UINT32_MAX)));
      run.ok.fetch_add(1, std::memory_order_relaxed);
    } else {
      ErrorCount& error = run.errors[status.error_code()];
      if (error.count++ == 0) {
        error.first_message = status.error_message();
      }
      run.failed.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

struct Report {
  double seconds = 0;
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::vector<std::uint32_t> sorted;                               // latencies, µs
  std::vector<std::pair<std::uint64_t, std::uint64_t>> histogram;  // (upper bound µs, count)

  [[nodiscard]] std::uint64_t percentile(double p) const {
    if (sorted.empty()) {
      return 0;
    }
    const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
    return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
  }
};

// Buckets on a 1-2-5 series, from the first that holds a latency to the first that holds the max.
std::vector<std::pair<std::uint64_t, std::uint64_t>> make_histogram(const std::vector<std::uint32_t>& sorted) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> buckets;
  if (sorted.empty()) {
    return buckets;
  }
  std::vector<std::uint64_t> bounds;
  for (std::uint64_t decade = 1; decade <= 10'000'000'000ULL; decade *= 10) {
    for (const std::uint64_t step : {1, 2, 5}) {
      bounds.push_back(decade * step);
    }
  }
  std::size_t at = 0;
  for (const std::uint64_t bound : bounds) {
    const auto end = static_cast<std::size_t>(std::upper_bound(sorted.begin(), sorted.end(), bound) - sorted.begin());
    if (end > 0) {
      buckets.emplace_back(bound, end - at);
    }
    at = end;
    if (at == sorted.size()) {
      break;
    }
  }
  return buckets;
}

void print_json(const BenchOptions& options, const BenchRun& run, const Report& report) {
  boost::json::object out;
  out["target"] = options.target.target;
  out["transport"] = options.transport;
  out["concurrency"] = options.concurrency;
  out["fan_out"] = options.fan_out;
  out["payload_bytes"] = options.payload_bytes;
  out["duration_s"] = report.seconds;
  out["requests"] = report.ok + report.failed;
  out["ok"] = report.ok;
  out["errors"] = report.failed;
  out["rate_per_s"] = report.seconds > 0 ? static_cast<double>(report.ok + report.failed) / report.seconds : 0.0;
  boost::json::object latency;
  latency["min"] = report.sorted.empty() ? 0 : report.sorted.front();
  double sum = 0;
  for (const auto value : report.sorted) {
    sum += value;
  }
  latency["mean"] = report.sorted.empty() ? 0.0 : sum / static_cast<double>(report.sorted.size());
  latency["p50"] = report.percentile(50);
  latency["p90"] = report.percentile(90);
  latency["p99"] = report.percentile(99);
  latency["p99.9"] = report.percentile(99.9);
  latency["max"] = report.sorted.empty() ? 0 : report.sorted.back();
  out["latency_us"] = std::move(latency);
  boost::json::array histogram;
  for (const auto& [bound, count] : report.histogram) {
    boost::json::object bucket;
    bucket["le_us"] = bound;
    bucket["count"] = count;
    histogram.push_back(std::move(bucket));
  }
  out["histogram"] = std::move(histogram);
  boost::json::object errors;
  for (const auto& [code, error] : run.errors) {
    boost::json::object entry;
    entry["count"] = error.count;
    entry["first_message"] = error.first_message;
    errors[code_name(code)] = std::move(entry);
  }
  out["errors_by_status"] = std::move(errors);
  std::cout << boost::json::serialize(out) << std::endl;
}

void print_human(const BenchOptions& options, const BenchRun& run, const Report& report) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2);
  const std::uint64_t total = report.ok + report.failed;
  out << "rxcomm bench: " << options.target.target << " over " << options.transport << ", " << options.concurrency
      << " in flight to " << options.fan_out << " endpoint(s), " << options.payload_bytes << "-byte payloads, "
      << report.seconds << " s\n";
  out << "  requests " << total << " (" << std::setprecision(0)
      << (report.seconds > 0 ? static_cast<double>(total) / report.seconds : 0.0) << "/s), ok " << report.ok
      << ", errors " << report.failed << "\n";
  out << "  latency of the calls that succeeded (µs): p50 " << report.percentile(50) << ", p90 "
      << report.percentile(90) << ", p99 " << report.percentile(99) << ", p99.9 " << report.percentile(99.9) << ", max "
      << (report.sorted.empty() ? 0 : report.sorted.back()) << "\n";
  if (!report.histogram.empty()) {
    std::uint64_t largest = 0;
    for (const auto& bucket : report.histogram) {
      largest = std::max(largest, bucket.second);
    }
    out << "\n  latency histogram (µs, each row counts the calls up to its bound):\n";
    for (const auto& [bound, count] : report.histogram) {
      const auto width = static_cast<int>(40 * count / largest);
      out << "  <= " << std::setw(9) << bound << " | " << std::string(static_cast<std::size_t>(width), '#')
          << std::string(static_cast<std::size_t>(40 - width), ' ') << " | " << std::setw(9) << count << "  "
          << std::setprecision(2) << std::setw(6) << 100.0 * static_cast<double>(count) / static_cast<double>(report.ok)
          << "%\n";
    }
  }
  if (!run.errors.empty()) {
    out << "\n  errors by status:\n";
    for (const auto& [code, error] : run.errors) {
      out << "    " << code_name(code) << ": " << error.count << " (first: " << error.first_message << ")\n";
    }
  }
  std::cout << out.str() << std::flush;
}

int run_bench(const BenchOptions& options) {
  LoopThread thread;
  rx::ClientOptions client_options = options.target.client_options();
  client_options.transport = options.transport == "exchange" ? rx::Transport::exchange : rx::Transport::unary;
  rx::Client client(thread.loop(), std::move(client_options));

  BenchRun run(client.connect(options.target.target));
  for (int i = 0; i < options.fan_out; ++i) {
    run.keys.push_back({options.dag_id, options.task_prefix + std::to_string(i), options.run_id, options.map_index});
  }
  run.payload["data"] = std::string(options.payload_bytes, 'x');
  run.send_options.timeout = options.target.timeout();
  run.send_options.wait_for_ready = options.target.wait_for_ready;
  run.latencies_us.reserve(1 << 20);

  // Ctrl-C ends the run early, with a report of what was done.
  asio::signal_set signals(thread.context(), SIGINT, SIGTERM);
  signals.async_wait([&run](const boost::system::error_code& error, int /*signal_number*/) {
    if (!error) {
      run.stop = true;
    }
  });

  std::promise<void> finished;
  const auto start = Clock::now();
  run.end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.duration_seconds));
  run.workers_left = options.concurrency;
  for (int i = 0; i < options.concurrency; ++i) {
    // Each completion runs on the loop, one at a time, like the workers.
    asio::co_spawn(thread.loop().get_executor(), bench_worker(run, static_cast<std::size_t>(i)),
                   [&run, &finished](const std::exception_ptr& error) {
                     if (error && !run.worker_error) {
                       run.worker_error = error;
                     }
                     if (--run.workers_left == 0) {
                       finished.set_value();
                     }
                   });
  }

  // The progress line: a terminal only, refreshed in place; a pipe or file stays quiet.
  const bool progress = isatty(STDERR_FILENO) != 0;
  auto done = finished.get_future();
  std::uint64_t last_total = 0;
  auto last_time = start;
  while (done.wait_for(std::chrono::milliseconds(500)) != std::future_status::ready) {
    if (!progress) {
      continue;
    }
    const auto now = Clock::now();
    const std::uint64_t ok = run.ok.load(std::memory_order_relaxed);
    const std::uint64_t failed = run.failed.load(std::memory_order_relaxed);
    const double interval = std::chrono::duration<double>(now - last_time).count();
    std::fprintf(stderr, "\r\033[K  %6.1f s  %10.0f req/s  ok %llu  errors %llu",
                 std::chrono::duration<double>(now - start).count(),
                 interval > 0 ? static_cast<double>(ok + failed - last_total) / interval : 0.0,
                 static_cast<unsigned long long>(ok), static_cast<unsigned long long>(failed));
    std::fflush(stderr);
    last_total = ok + failed;
    last_time = now;
  }
  if (progress) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
  }
  signals.cancel();
  if (run.worker_error) {
    std::rethrow_exception(run.worker_error);
  }

  Report report;
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  report.ok = run.ok.load();
  report.failed = run.failed.load();
  report.sorted = std::move(run.latencies_us);
  std::sort(report.sorted.begin(), report.sorted.end());
  report.histogram = make_histogram(report.sorted);
  if (options.json) {
    print_json(options, run, report);
  } else {
    print_human(options, run, report);
  }
  return report.failed == 0 ? EXIT_OK : EXIT_FAILURE_LOCAL;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* bench = app.add_subcommand("bench", "load-test a server and report latency percentiles");
  bench->footer(
      "Each of --concurrency workers sends, awaits the reply and sends again, to the endpoints "
      "DAG/PREFIX0..PREFIX(N-1)/RUN in turn (N = --fan-out), until --duration has passed or Ctrl-C. A progress line "
      "(rate, errors) is shown on stderr when it is a terminal. Exits 1 if any call failed.\n"
      "Example (against `rxcomm serve --endpoints 8`):\n"
      "  rxcomm bench -t 127.0.0.1:8081 --fan-out 8 --concurrency 64 --duration 10 --transport exchange");
  options->target.add_to(*bench);
  bench->add_option("--dag", options->dag_id, "the endpoints' dag_id")->capture_default_str();
  bench->add_option("--run", options->run_id, "the endpoints' run_id")->capture_default_str();
  bench->add_option("--task-prefix", options->task_prefix, "the endpoints' task_id, before their number")
      ->capture_default_str();
  bench->add_option("--map-index", options->map_index, "the endpoints' map_index")
      ->capture_default_str()
      ->check(CLI::Range(-1, std::numeric_limits<int>::max()));
  bench->add_option("--fan-out", options->fan_out, "how many endpoints to address")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  bench->add_option("-c,--concurrency", options->concurrency, "calls in flight")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  bench->add_option("-d,--duration", options->duration_seconds, "seconds to run")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  bench->add_option("--payload-bytes", options->payload_bytes, R"(size of the payload's string {"data": "xxx..."})")
      ->capture_default_str();
  bench->add_option("--transport", options->transport, "unary (one Send call each) or exchange (one stream)")
      ->capture_default_str()
      ->check(CLI::IsMember({"unary", "exchange"}));
  bench->add_flag("--json", options->json, "print one JSON object instead of the human report");
  return {bench, [options] { return run_bench(*options); }};
}

}  // namespace rxcomm

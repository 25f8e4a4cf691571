// The server half of the two-process benchmarks, started by bm_roundtrip and bm_capture (never
// run by hand, though it can be): a server on 127.0.0.1, port 0, in a process of its own, as
// users run it.
//
//   bench_server --server=raw [--address=A]    raw gRPC callback echo (bench/common/raw_echo.hpp)
//   bench_server --server=rxcomm [--endpoints=64] [--address=A]
//       rx::Server on a Loop with its own io_context thread; endpoints make_key(0..N-1) echo
//   bench_server --server=hold [--endpoints=64] [--max_in_flight=N] [--max_stream_in_flight=N]
//       rx::Server whose endpoints take every request and hold it, unanswered, until shutdown:
//       a saturated server, for memory under overload (bm_overload). The limits are its
//       ServerOptions' max_requests_in_flight and max_stream_requests_in_flight
//   --address: a gRPC listening address instead of 127.0.0.1:0, e.g. unix:/tmp/rx.sock (its port
//       is then reported as 0; the parent knows the target it asked for)
//   bench_server --server=busy [--servers=2] [--endpoints=32] [--task_us=200]
//       N rx::Servers, each on a Loop and io_context thread of its own, whose endpoints' tasks
//       compute for task_us without yielding before they reply (the poller-capture benchmark)
//
// Protocol (bench/common/child_process.hpp): once listening it writes "ports P [P...]"; each
// line "stats" on stdin is answered with one line of "name value" pairs (cumulative counts, and
// rss_bytes after a malloc_trim, requests_in_flight now);
// when stdin closes it shuts its servers down and exits 0. Errors go to stderr, exit 1.
#include "common/child_process.hpp"
#include "common/payloads.hpp"
#include "common/process_stats.hpp"
#include "common/raw_echo.hpp"
#include "common/rxcomm_echo.hpp"

#include <remote_xcomm/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <iomanip>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace rx::bench;  // NOLINT(google-build-using-namespace): benchmark-local helpers

std::chrono::microseconds busy_task_time{200};
std::atomic<std::int64_t> task_bodies{0};
std::atomic<std::int64_t> task_bodies_on_loop_thread{0};

/// Computes for `busy_task_time` without yielding, as a task doing real work between get() and
/// push() would; the loop (and whichever thread runs it) is busy for that long.
std::uint64_t compute_for(std::chrono::microseconds duration) {
  const auto until = std::chrono::steady_clock::now() + duration;
  std::uint64_t state = 0x9E3779B97F4A7C15ULL;
  do {
    for (int round = 0; round < 64; ++round) {
      state ^= state << 13U;
      state ^= state >> 7U;
      state ^= state << 17U;
    }
  } while (std::chrono::steady_clock::now() < until);
  return state;
}

asio::awaitable<void> busy_task(rx::Endpoint endpoint) {
  for (;;) {
    auto [get_error, payload] = co_await endpoint.get(asio::as_tuple(asio::use_awaitable));
    if (get_error) {
      co_return;
    }
    task_bodies.fetch_add(1, std::memory_order_relaxed);
    if (LoopThread::on_a_loop_thread()) {
      task_bodies_on_loop_thread.fetch_add(1, std::memory_order_relaxed);
    }
    payload["checksum"] = compute_for(busy_task_time);
    auto [push_error] = co_await endpoint.push(std::move(payload), asio::as_tuple(asio::use_awaitable));
    if (push_error && push_error != rx::errc::request_cancelled) {
      co_return;
    }
  }
}

int port_of(const std::string& target) { return std::stoi(target.substr(target.rfind(':') + 1)); }

// "--name=value" from argv, or `fallback`.
std::string option(int argc, char** argv, std::string_view name, std::string fallback) {
  const std::string prefix = "--" + std::string(name) + "=";
  for (int index = 1; index < argc; ++index) {
    const std::string_view argument = argv[index];
    if (argument.rfind(prefix, 0) == 0) {
      return std::string(argument.substr(prefix.size()));
    }
  }
  return fallback;
}

/// Takes every request and holds it, unanswered, until the endpoint closes (at shutdown the held
/// requests fail with UNAVAILABLE as they are destroyed).
asio::awaitable<void> hold_task(rx::Endpoint endpoint) {
  std::vector<rx::Request> held;
  for (;;) {
    auto [error, request] = co_await endpoint.next(asio::as_tuple(asio::use_awaitable));
    if (error) {
      co_return;
    }
    held.push_back(std::move(request));
  }
}

int run(int argc, char** argv) {
  const std::string kind = option(argc, argv, "server", "rxcomm");
  const std::string address = option(argc, argv, "address", "");
  const auto port_or_zero = [&](const std::string& target) {
    return address.starts_with("unix") ? 0 : port_of(target);
  };
  std::unique_ptr<RawEchoServer> raw;
  std::vector<std::unique_ptr<RxcommEchoServer>> servers;
  std::string ports = "ports";
  if (kind == "raw") {
    raw = address.empty() ? std::make_unique<RawEchoServer>() : std::make_unique<RawEchoServer>(address);
    ports.append(" ").append(std::to_string(port_or_zero(raw->target())));
  } else if (kind == "rxcomm" || kind == "busy" || kind == "hold") {
    const bool busy = kind == "busy";
    const bool hold = kind == "hold";
    rx::ServerOptions options;
    options.address = address;
    options.max_requests_in_flight = std::stoul(option(argc, argv, "max_in_flight", "100000"));
    options.max_stream_requests_in_flight = std::stoul(option(argc, argv, "max_stream_in_flight", "16384"));
    const int count = busy ? std::stoi(option(argc, argv, "servers", "2")) : 1;
    const auto endpoints = static_cast<std::size_t>(std::stoul(option(argc, argv, "endpoints", busy ? "32" : "64")));
    busy_task_time = std::chrono::microseconds(std::stol(option(argc, argv, "task_us", "200")));
    for (int index = 0; index < count; ++index) {
      auto& server = *servers.emplace_back(std::make_unique<RxcommEchoServer>(options));
      for (std::size_t slot = 0; slot < endpoints; ++slot) {
        if (hold) {
          if (!server.server().attach(make_key(slot), &hold_task)) {
            throw std::logic_error("endpoint attached twice");
          }
        } else if (busy) {
          if (!server.server().attach(make_key(slot), &busy_task)) {
            throw std::logic_error("endpoint attached twice");
          }
        } else {
          server.attach_echo(make_key(slot));
        }
      }
      ports.append(" ").append(std::to_string(port_or_zero(server.target())));
    }
  } else {
    std::cerr << "bench_server: unknown --server=" << kind << " (raw, rxcomm, busy or hold)\n";
    return 1;
  }
  std::cout << std::setprecision(15) << ports << std::endl;  // flushed: the parent waits for this line

  for (std::string line; std::getline(std::cin, line);) {
    if (line == "stats") {
      std::int64_t handlers = 0;
      std::size_t in_flight = 0;
      for (const auto& server : servers) {
        handlers += server->loop_thread_handlers();
        in_flight += server->server().requests_in_flight();
      }
      const ProcessUsage usage = process_usage();
      trim_heap();
      std::cout << "cpu_us " << usage.cpu_us << " voluntary_switches " << usage.voluntary_switches
                << " loop_thread_handlers " << handlers << " task_bodies " << task_bodies.load()
                << " task_bodies_on_loop_thread " << task_bodies_on_loop_thread.load() << " rss_bytes "
                << resident_bytes() << " requests_in_flight " << in_flight << std::endl;
    }
  }
  servers.clear();  // each shuts down and joins its loop thread
  raw.reset();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "bench_server: " << error.what() << '\n';
    return 1;
  }
}

// Loopback round trips: Remote XComm against a raw gRPC callback-API echo, in one process and in
// two (the benchmark starts bench_server, a server process of its own, as users run them).
//
//   BM_UnaryRoundTrip/processes:P/in_flight:N/payload_bytes:B/raw_grpc       raw callback client ->
//       raw callback echo server (replies inside the reaction, on the gRPC thread)
//   BM_UnaryRoundTrip/processes:P/in_flight:N/payload_bytes:B/rxcomm         rx::Client::send ->
//       rx::Server -> endpoint -> task get() -> push(payload) -> reply -> completion on the client's Loop
//   BM_UnaryRoundTrip/processes:P/in_flight:N/payload_bytes:B/rxcomm_server  raw callback client ->
//       rx::Server (our server alone, as a client in another language would use it)
//   BM_StreamEcho/processes:P/in_flight:N/payload_bytes:B/raw_grpc           raw bidirectional-stream
//       echo, N messages in flight on one stream, one request per message: the baseline of Exchange
//   BM_StreamEcho/processes:P/in_flight:N/payload_bytes:B/rxcomm_server      raw Exchange client ->
//       rx::Server's Exchange stream -> endpoints -> echo tasks: N requests in flight on one stream,
//       batched as the protocol asks (every frame queued while a write is on the wire goes in the
//       next message, both ways), spread over the endpoints round robin
//   BM_StreamEcho/processes:P/in_flight:N/payload_bytes:B/rxcomm             rx::Client on the
//       Exchange transport (Client::send, each completion sending the next) -> the same server
//   BM_FanOut/processes:P/endpoints:E/payload_bytes:B/transport:T/rxcomm     rx::fan_out of one
//       request to each of E endpoints of one server, over the Client's transport T, with a window
//       of 4,096 in flight; batch after batch. Its baseline is raw unary at 64 in flight (above):
//       requests_per_second counts results; batch_p50_ms is one whole batch's time.
//   .../socket:unix/...   the same twin with the server on a Unix domain socket (unix:/tmp/...)
//       instead of TCP loopback: two processes only, as scheduler and worker share a host
//
// processes:1 runs client and server in this process: they share gRPC's pollers, which hides
// part of a client's cost. processes:2 runs the server in a child process (bench/bench_server.cpp,
// started once per server kind, stopped at exit) and counts both processes' CPU.
//
// Twins put the same bytes on the wire (a SendRequest with the same key length and payload text,
// a SendResponse echoing it, the same deadline and channel arguments) and report the same
// counters, so a ratio reads straight off one run: requests_per_second (messages_per_second for
// streams), p50_us, p99_us, cpu_us_per_request (both sides' CPU per request; in two processes
// also client_cpu_us_per_request and server_cpu_us_per_request), sleeps_per_request (voluntary
// context switches of all threads, both processes: each sleep is a wake-up, the cost the hand-off
// design must not add) and loop_thread_jobs_per_request (work that reached a Loop's own thread,
// both sides; 0 for raw gRPC). Each completion issues the next request, so N stay in flight;
// every request of the budget is waited for inside the timed region. Each in-flight slot sends to
// an endpoint of its own, whose task always waits in get() when its request arrives: a scheduler
// talking to N task instances.
#include "codec.hpp"
#include "common/child_process.hpp"
#include "common/closed_loop.hpp"
#include "common/exchange_client.hpp"
#include "common/payloads.hpp"
#include "common/raw_echo.hpp"
#include "common/rxcomm_echo.hpp"

#include <remote_xcomm/fan_out.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/use_future.hpp>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace rx::bench;  // NOLINT(google-build-using-namespace): benchmark-local helpers
using remote_xcomm::v1::SendRequest;

constexpr int MAX_UNARY_IN_FLIGHT = 64;
// Endpoints every rxcomm echo server hosts: the fan-out's widest batch. The round trips use the
// first MAX_UNARY_IN_FLIGHT.
constexpr int SERVER_ENDPOINTS = 10'000;

/// Payloads and keys, and what rx::Client puts on the wire for them, shared by both modes.
class Messages {
 public:
  Messages() {
    for (int slot = 0; slot < SERVER_ENDPOINTS; ++slot) {
      keys_.push_back(make_key(static_cast<std::size_t>(slot)));
    }
  }

  [[nodiscard]] const std::vector<rx::TaskInstanceKey>& keys() const { return keys_; }
  [[nodiscard]] const rx::TaskInstanceKey& key(int slot) const { return keys_.at(static_cast<std::size_t>(slot)); }

  [[nodiscard]] const boost::json::object& payload(std::size_t bytes) {
    auto it = payloads_.find(bytes);
    if (it == payloads_.end()) {
      it = payloads_.emplace(bytes, make_xcom_payload(bytes)).first;
    }
    return it->second;
  }

  /// The round trips' endpoints' keys as the wire has them.
  [[nodiscard]] const std::vector<remote_xcomm::v1::TaskInstanceKey>& wire_keys() {
    if (wire_keys_.empty()) {
      for (int slot = 0; slot < MAX_UNARY_IN_FLIGHT; ++slot) {
        rx::detail::to_proto(key(slot), wire_keys_.emplace_back());
      }
    }
    return wire_keys_;
  }

  /// What rx::Client puts on the wire for payload(bytes) sent to key(slot).
  [[nodiscard]] const SendRequest& raw_request(std::size_t bytes, int slot) {
    const auto id = std::make_pair(bytes, slot);
    auto it = raw_requests_.find(id);
    if (it == raw_requests_.end()) {
      SendRequest request;
      rx::detail::to_proto(key(slot), *request.mutable_key());
      request.set_payload_json(rx::detail::serialize_json(payload(bytes)));
      it = raw_requests_.emplace(id, std::move(request)).first;
    }
    return it->second;
  }

 private:
  std::vector<rx::TaskInstanceKey> keys_;
  std::vector<remote_xcomm::v1::TaskInstanceKey> wire_keys_;
  std::map<std::size_t, boost::json::object> payloads_;
  std::map<std::pair<std::size_t, int>, SendRequest> raw_requests_;
};

/// One process: servers, channels and endpoints in this process, built once, outside every
/// timed region, on first use.
class OneProcess {
 public:
  explicit OneProcess(const Messages& messages)
      : raw_channel_(make_channel(raw_server_.target())),
        rxcomm_channel_(make_channel(rxcomm_.target())),
        raw_unary_(remote_xcomm::v1::RemoteXComm::NewStub(raw_channel_)),
        rxcomm_unary_(remote_xcomm::v1::RemoteXComm::NewStub(rxcomm_channel_)),
        raw_stream_(remote_xcomm::bench::v1::BenchEcho::NewStub(raw_channel_)) {
    for (const auto& key : messages.keys()) {  // SERVER_ENDPOINTS of them
      rxcomm_.attach_echo(key);
    }
  }

  [[nodiscard]] remote_xcomm::v1::RemoteXComm::Stub& raw_unary() { return *raw_unary_; }
  [[nodiscard]] remote_xcomm::v1::RemoteXComm::Stub& raw_to_rxcomm() { return *rxcomm_unary_; }
  [[nodiscard]] remote_xcomm::bench::v1::BenchEcho::Stub& raw_stream() { return *raw_stream_; }
  [[nodiscard]] RxcommEcho& rxcomm() { return rxcomm_; }

 private:
  RawEchoServer raw_server_;
  RxcommEcho rxcomm_;
  std::shared_ptr<grpc::Channel> raw_channel_;
  std::shared_ptr<grpc::Channel> rxcomm_channel_;
  std::unique_ptr<remote_xcomm::v1::RemoteXComm::Stub> raw_unary_;
  std::unique_ptr<remote_xcomm::v1::RemoteXComm::Stub> rxcomm_unary_;
  std::unique_ptr<remote_xcomm::bench::v1::BenchEcho::Stub> raw_stream_;
};

/// A bench_server child and a raw stub to it.
struct ServerProcess {
  /// `unix_target`, when not empty, is the Unix socket the arguments ask it to listen on.
  explicit ServerProcess(const std::vector<std::string>& arguments, const std::string& unix_target = {})
      : child(sibling_executable("bench_server"), arguments),
        target(target_of(parse_ports(child.read_line()).at(0), unix_target)),
        channel(make_channel(target)),
        stub(remote_xcomm::v1::RemoteXComm::NewStub(channel)),
        stream_stub(remote_xcomm::bench::v1::BenchEcho::NewStub(channel)) {}

  ChildProcess child;
  std::string target;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<remote_xcomm::v1::RemoteXComm::Stub> stub;
  std::unique_ptr<remote_xcomm::bench::v1::BenchEcho::Stub> stream_stub;  // the raw server's stream echo

 private:
  static std::string target_of(int port, const std::string& unix_target) {
    return unix_target.empty() ? "127.0.0.1:" + std::to_string(port) : unix_target;
  }
};

/// "unix:/tmp/rx-bench-PID-NAME.sock", a socket path of this run's own.
std::string unix_socket_target(const std::string& name) {
  return "unix:" +
         (std::filesystem::temp_directory_path() / ("rx-bench-" + std::to_string(::getpid()) + "-" + name + ".sock"))
             .string();
}

/// Two processes: a raw and an rx server process, started on first use, and our client here.
class TwoProcess {
 public:
  ServerProcess& raw_server() {
    if (!raw_) {
      raw_.emplace(std::vector<std::string>{"--server=raw"});
    }
    return *raw_;
  }
  ServerProcess& rxcomm_server() {
    if (!rxcomm_) {
      rxcomm_.emplace(std::vector<std::string>{"--server=rxcomm", "--endpoints=" + std::to_string(SERVER_ENDPOINTS)});
    }
    return *rxcomm_;
  }
  ServerProcess& raw_unix_server() {
    if (!raw_unix_) {
      const std::string target = unix_socket_target("raw");
      raw_unix_.emplace(std::vector<std::string>{"--server=raw", "--address=" + target}, target);
    }
    return *raw_unix_;
  }
  ServerProcess& rxcomm_unix_server() {
    if (!rxcomm_unix_) {
      const std::string target = unix_socket_target("rxcomm");
      rxcomm_unix_.emplace(std::vector<std::string>{"--server=rxcomm", "--address=" + target,
                                                    "--endpoints=" + std::to_string(MAX_UNARY_IN_FLIGHT)},
                           target);
    }
    return *rxcomm_unix_;
  }
  /// The server of `variant` (raw_grpc: the raw one), on TCP or a Unix socket.
  ServerProcess& server_for(bool raw, bool unix_socket) {
    if (unix_socket) {
      return raw ? raw_unix_server() : rxcomm_unix_server();
    }
    return raw ? raw_server() : rxcomm_server();
  }
  [[nodiscard]] RxcommEchoClient& client() { return client_; }

 private:
  RxcommEchoClient client_;
  std::optional<ServerProcess> raw_;
  std::optional<ServerProcess> rxcomm_;
  std::optional<ServerProcess> raw_unix_;
  std::optional<ServerProcess> rxcomm_unix_;
};

struct Environment {
  Messages messages;
  std::unique_ptr<OneProcess> one;
  std::unique_ptr<TwoProcess> two;
};

std::unique_ptr<Environment> environment;

Environment& env() {
  if (!environment) {
    environment = std::make_unique<Environment>();
  }
  return *environment;
}

OneProcess& one_process() {
  Environment& e = env();
  if (!e.one) {
    e.one = std::make_unique<OneProcess>(e.messages);
  }
  return *e.one;
}

TwoProcess& two_process() {
  Environment& e = env();
  if (!e.two) {
    e.two = std::make_unique<TwoProcess>();
  }
  return *e.two;
}

/// Takes, around a run, what both sides used: CPU time, sleeps (voluntary context switches:
/// each sleep is a thread that a later message has to wake) and work that reached a Loop's own
/// thread, and reports each per request. A server process reports its own figures (its "stats"
/// answer); they are reported apart too. Raw gRPC has no loop threads; it reports 0 there so
/// that twins report the same counters.
class UsageProbe {
 public:
  UsageProbe(const RxcommEcho* in_process, const RxcommEchoClient* client, ChildProcess* server)
      : in_process_(in_process),
        client_(client),
        server_(server),
        self_(process_usage()),
        loop_jobs_(local_loop_jobs()) {
    if (server_ != nullptr) {
      server_stats_ = server_->stats();
    }
  }

  void report(benchmark::State& state) {
    if (state.error_occurred() || state.iterations() == 0) {
      return;
    }
    const auto requests = static_cast<double>(state.iterations());
    const ProcessUsage self = process_usage();
    double cpu = self.cpu_us - self_.cpu_us;
    double sleeps = self.voluntary_switches - self_.voluntary_switches;
    auto loop_jobs = static_cast<double>(local_loop_jobs() - loop_jobs_);
    if (server_ != nullptr) {
      auto after = server_->stats();
      const auto delta = [&](const char* name) { return after[name] - server_stats_[name]; };
      state.counters["client_cpu_us_per_request"] = cpu / requests;
      state.counters["server_cpu_us_per_request"] = delta("cpu_us") / requests;
      state.counters["client_sleeps_per_request"] = sleeps / requests;
      state.counters["server_sleeps_per_request"] = delta("voluntary_switches") / requests;
      cpu += delta("cpu_us");
      sleeps += delta("voluntary_switches");
      loop_jobs += delta("loop_thread_handlers");
    }
    state.counters["cpu_us_per_request"] = cpu / requests;
    state.counters["sleeps_per_request"] = sleeps / requests;
    state.counters["loop_thread_jobs_per_request"] = loop_jobs / requests;
  }

 private:
  [[nodiscard]] std::int64_t local_loop_jobs() const {
    return (in_process_ != nullptr ? in_process_->loop_thread_handlers() : 0) +
           (client_ != nullptr ? client_->loop_thread_handlers() : 0);
  }

  const RxcommEcho* in_process_;
  const RxcommEchoClient* client_;
  ChildProcess* server_;
  ProcessUsage self_;
  std::int64_t loop_jobs_;
  std::map<std::string, double> server_stats_;
};

/// Which client talks to which server.
enum class Variant { raw_grpc, rxcomm, rxcomm_server };

const char* name_of(Variant variant) {
  switch (variant) {
    case Variant::raw_grpc:
      return "raw_grpc";
    case Variant::rxcomm:
      return "rxcomm";
    case Variant::rxcomm_server:
      return "rxcomm_server";
  }
  return "?";
}

void run_raw_client(benchmark::State& state, remote_xcomm::v1::RemoteXComm::Stub& stub, Messages& messages,
                    int in_flight, std::size_t bytes) {
  std::vector<const SendRequest*> requests;
  requests.reserve(static_cast<std::size_t>(in_flight));
  for (int slot = 0; slot < in_flight; ++slot) {
    requests.push_back(&messages.raw_request(bytes, slot));
  }
  run_closed_loop(
      state, in_flight,
      [&](ClosedLoop& loop, int slot) { issue_raw_unary(stub, *requests[static_cast<std::size_t>(slot)], loop); },
      "requests_per_second");
}

void run_rxcomm_client(benchmark::State& state, rx::Client& client, const std::string& target, Messages& messages,
                       int in_flight, std::size_t bytes, const char* rate_counter = "requests_per_second") {
  const boost::json::object& payload = messages.payload(bytes);
  run_closed_loop(
      state, in_flight,
      [&](ClosedLoop& loop, int slot) {
        issue_rxcomm_unary(client, target, messages.key(slot % MAX_UNARY_IN_FLIGHT), payload, loop);
      },
      rate_counter);
}

void unary_one_process(benchmark::State& state, Variant variant, int in_flight, std::size_t bytes) {
  Messages& messages = env().messages;
  OneProcess& one = one_process();
  UsageProbe probe(&one.rxcomm(), nullptr, nullptr);
  switch (variant) {
    case Variant::raw_grpc:
      run_raw_client(state, one.raw_unary(), messages, in_flight, bytes);
      break;
    case Variant::rxcomm:
      run_rxcomm_client(state, one.rxcomm().client(), one.rxcomm().target(), messages, in_flight, bytes);
      break;
    case Variant::rxcomm_server:
      run_raw_client(state, one.raw_to_rxcomm(), messages, in_flight, bytes);
      break;
  }
  probe.report(state);
}

/// Where a run's server is: in this process (`one`) or in a bench_server child (`server`).
struct Setup {
  OneProcess* one = nullptr;
  ServerProcess* server = nullptr;
};

/// The set-up of a run in `processes` processes, built on first use (a raw server when `raw`);
/// nullopt, with the benchmark skipped, when the server process cannot start.
std::optional<Setup> set_up(benchmark::State& state, int processes, bool raw, bool unix_socket) {
  try {
    if (processes == 1) {
      return Setup{&one_process(), nullptr};
    }
    return Setup{nullptr, &two_process().server_for(raw, unix_socket)};
  } catch (const std::exception& error) {
    state.SkipWithError((std::string("cannot start bench_server: ") + error.what()).c_str());
    return std::nullopt;
  }
}

void unary_two_process(benchmark::State& state, Variant variant, int in_flight, std::size_t bytes, bool unix_socket) {
  Messages& messages = env().messages;
  const std::optional<Setup> setup = set_up(state, 2, variant == Variant::raw_grpc, unix_socket);
  if (!setup) {
    return;
  }
  TwoProcess& two = two_process();
  ServerProcess* const server = setup->server;
  try {
    UsageProbe probe(nullptr, variant == Variant::rxcomm ? &two.client() : nullptr, &server->child);
    if (variant == Variant::rxcomm) {
      run_rxcomm_client(state, two.client().client(), server->target, messages, in_flight, bytes);
    } else {
      run_raw_client(state, *server->stub, messages, in_flight, bytes);
    }
    probe.report(state);
  } catch (const std::exception& error) {  // the server process died: ChildProcess::stats throws
    state.SkipWithError(error.what());
  }
}

// One stream, raw echo or our Exchange (a raw client or ours), in one process or two.
void stream_echo(benchmark::State& state, Variant variant, int processes, int in_flight, std::size_t bytes,
                 bool unix_socket) {
  Messages& messages = env().messages;
  const SendRequest& request = messages.raw_request(bytes, 0);
  const std::optional<Setup> setup = set_up(state, processes, variant == Variant::raw_grpc, unix_socket);
  if (!setup) {
    return;
  }
  OneProcess* const one = setup->one;
  ServerProcess* const server = setup->server;
  try {
    RxcommEchoClient* our_client = one == nullptr && variant == Variant::rxcomm ? &two_process().client() : nullptr;
    UsageProbe probe(one != nullptr ? &one->rxcomm() : nullptr, our_client,
                     server != nullptr ? &server->child : nullptr);
    if (variant == Variant::rxcomm) {
      rx::Client& client = one != nullptr ? one->rxcomm().exchange_client() : our_client->exchange_client();
      run_rxcomm_client(state, client, one != nullptr ? one->rxcomm().target() : server->target, messages, in_flight,
                        bytes, "messages_per_second");
      probe.report(state);
      return;
    }
    ClosedLoop loop(std::max<std::int64_t>(state.max_iterations, 1));
    grpc::Status status;
    while (state.KeepRunningBatch(loop.total())) {
      if (variant == Variant::raw_grpc) {
        status = run_raw_stream(one != nullptr ? one->raw_stream() : *server->stream_stub, request, in_flight, loop);
      } else {
        status = run_exchange_stream(one != nullptr ? one->raw_to_rxcomm() : *server->stub, messages.wire_keys(),
                                     request.payload_json(), in_flight, loop);
      }
    }
    if (!status.ok()) {
      state.SkipWithError(("the stream failed: " + status.error_message()).c_str());
      return;
    }
    report_closed_loop(state, loop, "messages_per_second");
    probe.report(state);
  } catch (const std::exception& error) {  // the server process died: ChildProcess::stats throws
    state.SkipWithError(error.what());
  }
}

// Batches of one request to each of `endpoints` endpoints through rx::fan_out, one after another.
void fan_out(benchmark::State& state, int processes, int endpoints, rx::Transport transport, std::size_t bytes) {
  Messages& messages = env().messages;
  const std::optional<Setup> setup = set_up(state, processes, /*raw=*/false, /*unix_socket=*/false);
  if (!setup) {
    return;
  }
  OneProcess* const one = setup->one;
  ServerProcess* const server = setup->server;
  try {
    RxcommEchoClient* our_client = one == nullptr ? &two_process().client() : nullptr;
    UsageProbe probe(one != nullptr ? &one->rxcomm() : nullptr, our_client,
                     server != nullptr ? &server->child : nullptr);
    rx::Client& client = transport == rx::Transport::exchange
                             ? (one != nullptr ? one->rxcomm().exchange_client() : our_client->exchange_client())
                             : (one != nullptr ? one->rxcomm().client() : our_client->client());
    const std::string& target = one != nullptr ? one->rxcomm().target() : server->target;
    std::vector<rx::FanOutRequest> requests;
    requests.reserve(static_cast<std::size_t>(endpoints));
    for (int slot = 0; slot < endpoints; ++slot) {
      requests.push_back({target, messages.key(slot), messages.payload(bytes)});
    }
    rx::FanOutOptions options;
    options.max_in_flight = 4096;
    options.max_in_flight_per_target = 4096;  // one server takes the whole window
    options.send = rx::SendOptions{CALL_DEADLINE};
    std::vector<double> batch_ms;
    std::int64_t results = 0;
    while (state.KeepRunningBatch(endpoints)) {
      state.PauseTiming();
      std::vector<rx::FanOutRequest> batch = requests;  // fan_out consumes its requests
      state.ResumeTiming();
      const Clock::time_point started = Clock::now();
      const std::vector<rx::FanOutResult> outcome =
          rx::fan_out(client, std::move(batch), options, boost::asio::use_future).get();
      batch_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - started).count());
      for (const rx::FanOutResult& result : outcome) {
        if (!result.status.ok()) {
          state.SkipWithError(("a fan-out send failed: " + result.status.error_message()).c_str());
          return;
        }
      }
      results += static_cast<std::int64_t>(outcome.size());
    }
    state.SetItemsProcessed(results);
    state.counters["requests_per_second"] =
        benchmark::Counter(static_cast<double>(results), benchmark::Counter::kIsRate);
    std::nth_element(batch_ms.begin(), batch_ms.begin() + static_cast<std::ptrdiff_t>(batch_ms.size() / 2),
                     batch_ms.end());
    state.counters["batch_p50_ms"] = batch_ms[batch_ms.size() / 2];
    probe.report(state);
  } catch (const std::exception& error) {  // the server process died, or the fan-out failed
    state.SkipWithError(error.what());
  }
}

std::string name(const std::string& family, int processes, int in_flight, std::size_t bytes, Variant variant,
                 bool unix_socket = false) {
  return family + "/processes:" + std::to_string(processes) + "/in_flight:" + std::to_string(in_flight) +
         "/payload_bytes:" + std::to_string(bytes) + (unix_socket ? "/socket:unix/" : "/") + name_of(variant);
}

}  // namespace

int main(int argc, char** argv) {
  // The parameters sit in the name, in Google Benchmark's "name:value" form, so that the
  // variant (raw_grpc / rxcomm / rxcomm_server) is the last part a twin's name differs by. Twins
  // are registered next to each other so that they run close together in time.
  constexpr std::size_t BYTES = 64;
  // RX_BENCH_ITERATIONS=N fixes every round trip at N requests, one run each: for profilers
  // (callgrind's instructions per request are a difference of two such runs).
  const char* fixed_iterations = std::getenv("RX_BENCH_ITERATIONS");
  const auto configure = [&](benchmark::internal::Benchmark* benchmark) {
    benchmark->UseRealTime()->MeasureProcessCPUTime();
    if (fixed_iterations != nullptr) {
      benchmark->Iterations(std::atoll(fixed_iterations));
    }
  };
  for (const int processes : {1, 2}) {
    for (const int in_flight : {1, MAX_UNARY_IN_FLIGHT}) {
      for (const Variant variant : {Variant::raw_grpc, Variant::rxcomm, Variant::rxcomm_server}) {
        const std::string id = name("BM_UnaryRoundTrip", processes, in_flight, BYTES, variant);
        if (processes == 1) {
          configure(benchmark::RegisterBenchmark(id.c_str(), &unary_one_process, variant, in_flight, BYTES));
        } else {
          configure(benchmark::RegisterBenchmark(id.c_str(), &unary_two_process, variant, in_flight, BYTES, false));
        }
      }
    }
  }
  for (const int processes : {1, 2}) {
    for (const int in_flight : {1, 256, 4096}) {
      for (const Variant variant : {Variant::raw_grpc, Variant::rxcomm, Variant::rxcomm_server}) {
        configure(benchmark::RegisterBenchmark(name("BM_StreamEcho", processes, in_flight, BYTES, variant).c_str(),
                                               &stream_echo, variant, processes, in_flight, BYTES, false));
      }
    }
  }
  for (const int processes : {1, 2}) {
    for (const int endpoints : {1, 100, SERVER_ENDPOINTS}) {
      for (const rx::Transport transport : {rx::Transport::unary, rx::Transport::exchange}) {
        const std::string id = "BM_FanOut/processes:" + std::to_string(processes) +
                               "/endpoints:" + std::to_string(endpoints) + "/payload_bytes:" + std::to_string(BYTES) +
                               "/transport:" + (transport == rx::Transport::unary ? "unary" : "exchange") + "/rxcomm";
        configure(benchmark::RegisterBenchmark(id.c_str(), &fan_out, processes, endpoints, transport, BYTES));
      }
    }
  }
  // Unix domain socket against TCP loopback (the twins above), in two processes.
  for (const int in_flight : {1, MAX_UNARY_IN_FLIGHT}) {
    for (const Variant variant : {Variant::raw_grpc, Variant::rxcomm}) {
      configure(benchmark::RegisterBenchmark(name("BM_UnaryRoundTrip", 2, in_flight, BYTES, variant, true).c_str(),
                                             &unary_two_process, variant, in_flight, BYTES, true));
    }
  }
  for (const Variant variant : {Variant::raw_grpc, Variant::rxcomm}) {
    configure(benchmark::RegisterBenchmark(name("BM_StreamEcho", 2, 256, BYTES, variant, true).c_str(), &stream_echo,
                                           variant, 2, 256, BYTES, true));
  }

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  environment.reset();  // servers shut down (and server processes exit) before gRPC's own statics go
  return 0;
}

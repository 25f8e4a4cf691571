// Loopback round trips: Remote XComm against a raw gRPC callback-API echo, in one binary.
//
//   BM_UnaryRoundTrip/in_flight:N/payload_bytes:B/raw_grpc  raw callback client -> raw callback
//       echo server (replies inside the reaction, on the gRPC thread)
//   BM_UnaryRoundTrip/in_flight:N/payload_bytes:B/rxcomm    rx::Client::send -> rx::Server ->
//       endpoint -> task get() -> push(payload) -> reply -> completion on the client's Loop
//   BM_StreamEcho/in_flight:N/payload_bytes:B/raw_grpc      raw bidirectional-stream echo, N
//       messages in flight on one stream: the baseline of the coming multiplexed stream
//
// Twins put the same bytes on the wire (a SendRequest with the same key length and payload text,
// a SendResponse echoing it, the same deadline and channel arguments) and report the same
// counters, so a ratio reads straight off one run: requests_per_second (messages_per_second for
// streams), p50_us, p99_us, CPU time = the whole process's CPU per request (client and server
// share the machine, as they do on the target VM), sleeps_per_request (voluntary context
// switches of all threads: each sleep is a wake-up, the cost the hand-off design must not add)
// and loop_thread_jobs_per_request (work that reached a Loop's own thread; 0 for raw gRPC). Each completion issues the
// next request, so N stay in flight; every request of the budget is waited for inside the timed region. In the rxcomm
// run each in-flight slot sends to an endpoint of its own, whose task always waits in get() when its request arrives: a
// scheduler talking to N task instances.
#include "codec.hpp"
#include "common/closed_loop.hpp"
#include "common/payloads.hpp"
#include "common/process_stats.hpp"
#include "common/raw_echo.hpp"
#include "common/rxcomm_echo.hpp"

#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace rx::bench;  // NOLINT(google-build-using-namespace): benchmark-local helpers
using remote_xcomm::v1::SendRequest;

constexpr int MAX_UNARY_IN_FLIGHT = 64;

/// Servers, channels and endpoints, built once, outside every timed region, on first use.
class Environment {
 public:
  Environment()
      : raw_channel_(make_channel(raw_server_.target())),
        raw_unary_(remote_xcomm::v1::RemoteXComm::NewStub(raw_channel_)),
        raw_stream_(remote_xcomm::bench::v1::BenchEcho::NewStub(raw_channel_)) {
    for (int slot = 0; slot < MAX_UNARY_IN_FLIGHT; ++slot) {
      keys_.push_back(make_key(static_cast<std::size_t>(slot)));
      rxcomm_.attach_echo(keys_.back());
    }
  }

  [[nodiscard]] remote_xcomm::v1::RemoteXComm::Stub& raw_unary() { return *raw_unary_; }
  [[nodiscard]] remote_xcomm::bench::v1::BenchEcho::Stub& raw_stream() { return *raw_stream_; }
  [[nodiscard]] RxcommEcho& rxcomm() { return rxcomm_; }
  [[nodiscard]] const rx::TaskInstanceKey& key(int slot) const { return keys_.at(static_cast<std::size_t>(slot)); }

  [[nodiscard]] const boost::json::object& payload(std::size_t bytes) {
    auto it = payloads_.find(bytes);
    if (it == payloads_.end()) {
      it = payloads_.emplace(bytes, make_xcom_payload(bytes)).first;
    }
    return it->second;
  }

  /// What rx::Client puts on the wire for payload(bytes) sent to key(0).
  [[nodiscard]] const SendRequest& raw_request(std::size_t bytes) {
    auto it = raw_requests_.find(bytes);
    if (it == raw_requests_.end()) {
      SendRequest request;
      rx::detail::to_proto(key(0), *request.mutable_key());
      request.set_payload_json(rx::detail::serialize_json(payload(bytes)));
      it = raw_requests_.emplace(bytes, std::move(request)).first;
    }
    return it->second;
  }

 private:
  RawEchoServer raw_server_;
  std::shared_ptr<grpc::Channel> raw_channel_;
  std::unique_ptr<remote_xcomm::v1::RemoteXComm::Stub> raw_unary_;
  std::unique_ptr<remote_xcomm::bench::v1::BenchEcho::Stub> raw_stream_;
  RxcommEcho rxcomm_;
  std::vector<rx::TaskInstanceKey> keys_;
  std::map<std::size_t, boost::json::object> payloads_;
  std::map<std::size_t, SendRequest> raw_requests_;
};

std::unique_ptr<Environment> environment;

Environment& env() {
  if (!environment) {
    environment = std::make_unique<Environment>();
  }
  return *environment;
}

/// Counts, around a run, how often threads went to sleep (so had to be woken) and how much work
/// reached Remote XComm's loop threads, and reports both per request. Raw gRPC has no loop
/// threads; it reports 0 there so that twins report the same counters.
class WakeProbe {
 public:
  explicit WakeProbe(Environment& e)
      : environment_(e), switches_(voluntary_context_switches()), loop_handlers_(e.rxcomm().loop_thread_handlers()) {}

  void report(benchmark::State& state) const {
    if (state.error_occurred() || state.iterations() == 0) {
      return;
    }
    const auto requests = static_cast<double>(state.iterations());
    state.counters["sleeps_per_request"] = static_cast<double>(voluntary_context_switches() - switches_) / requests;
    state.counters["loop_thread_jobs_per_request"] =
        static_cast<double>(environment_.rxcomm().loop_thread_handlers() - loop_handlers_) / requests;
  }

 private:
  Environment& environment_;
  std::int64_t switches_;
  std::int64_t loop_handlers_;
};

void unary_raw_grpc(benchmark::State& state, int in_flight, std::size_t bytes) {
  Environment& e = env();
  const SendRequest& request = e.raw_request(bytes);
  const WakeProbe probe(e);
  run_closed_loop(
      state, in_flight, [&](ClosedLoop& loop, int /*slot*/) { issue_raw_unary(e.raw_unary(), request, loop); },
      "requests_per_second");
  probe.report(state);
}

void unary_rxcomm(benchmark::State& state, int in_flight, std::size_t bytes) {
  Environment& e = env();
  const boost::json::object& payload = e.payload(bytes);
  const WakeProbe probe(e);
  run_closed_loop(
      state, in_flight, [&](ClosedLoop& loop, int slot) { issue_rxcomm_unary(e.rxcomm(), e.key(slot), payload, loop); },
      "requests_per_second");
  probe.report(state);
}

void stream_raw_grpc(benchmark::State& state, int in_flight, std::size_t bytes) {
  Environment& e = env();
  const SendRequest& request = e.raw_request(bytes);
  const WakeProbe probe(e);
  ClosedLoop loop(std::max<std::int64_t>(state.max_iterations, 1));
  grpc::Status status;
  while (state.KeepRunningBatch(loop.total())) {
    status = run_raw_stream(e.raw_stream(), request, in_flight, loop);
  }
  if (!status.ok()) {
    state.SkipWithError(("raw EchoStream failed: " + status.error_message()).c_str());
    return;
  }
  report_closed_loop(state, loop, "messages_per_second");
  probe.report(state);
}

using Variant = void (*)(benchmark::State&, int, std::size_t);

void add(const std::string& family, int in_flight, std::size_t bytes, const std::string& variant, Variant run) {
  const std::string name =
      family + "/in_flight:" + std::to_string(in_flight) + "/payload_bytes:" + std::to_string(bytes) + "/" + variant;
  benchmark::RegisterBenchmark(name.c_str(), run, in_flight, bytes)->UseRealTime()->MeasureProcessCPUTime();
}

}  // namespace

int main(int argc, char** argv) {
  // The parameters sit in the name, in Google Benchmark's "name:value" form, so that the
  // variant (raw_grpc / rxcomm) is the last part a twin's name differs by. Twins are registered
  // next to each other so that they run close together in time.
  for (const int in_flight : {1, MAX_UNARY_IN_FLIGHT}) {
    add("BM_UnaryRoundTrip", in_flight, 64, "raw_grpc", &unary_raw_grpc);
    add("BM_UnaryRoundTrip", in_flight, 64, "rxcomm", &unary_rxcomm);
  }
  for (const int in_flight : {1, 256}) {
    add("BM_StreamEcho", in_flight, 64, "raw_grpc", &stream_raw_grpc);
  }

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  environment.reset();  // servers shut down before gRPC's own statics go
  return 0;
}

// Codec: what every message costs before and after the wire, by payload size.
//
// JSON parse/serialise use the library's own codec (src/codec.hpp: boost::json, the server's
// depth limit); proto encode/decode move a SendRequest carrying that JSON text, as gRPC does
// for every call. Sizes are the compact JSON text of a realistic XCom payload.
#include "codec.hpp"
#include "common/payloads.hpp"

#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>

namespace {

using rx::bench::make_key;
using rx::bench::make_xcom_payload;

std::string payload_text(const benchmark::State& state) {
  return rx::detail::serialize_json(make_xcom_payload(static_cast<std::size_t>(state.range(0))));
}

remote_xcomm::v1::SendRequest make_request(const std::string& payload_json) {
  remote_xcomm::v1::SendRequest request;
  rx::detail::to_proto(make_key(0), *request.mutable_key());
  request.set_payload_json(payload_json);
  return request;
}

void set_bytes(benchmark::State& state, std::size_t bytes_per_iteration) {
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes_per_iteration));
  state.counters["message_bytes"] = static_cast<double>(bytes_per_iteration);
}

void BM_JsonParse(benchmark::State& state) {
  const std::string text = payload_text(state);
  std::string error;
  for (auto _ : state) {
    boost::json::object object;
    if (!rx::detail::parse_json_object(text, rx::detail::DEFAULT_MAX_JSON_DEPTH, object, error)) {
      state.SkipWithError(error.c_str());
      return;
    }
    benchmark::DoNotOptimize(object);
  }
  set_bytes(state, text.size());
}

void BM_JsonSerialize(benchmark::State& state) {
  const boost::json::object object = make_xcom_payload(static_cast<std::size_t>(state.range(0)));
  std::size_t size = 0;
  for (auto _ : state) {
    std::string text = rx::detail::serialize_json(object);
    size = text.size();
    benchmark::DoNotOptimize(text);
  }
  set_bytes(state, size);
}

void BM_ProtoEncode(benchmark::State& state) {
  const remote_xcomm::v1::SendRequest request = make_request(payload_text(state));
  std::string wire;
  for (auto _ : state) {
    if (!request.SerializeToString(&wire)) {
      state.SkipWithError("SerializeToString failed");
      return;
    }
    benchmark::DoNotOptimize(wire);
  }
  set_bytes(state, wire.size());
}

void BM_ProtoDecode(benchmark::State& state) {
  const std::string wire = make_request(payload_text(state)).SerializeAsString();
  for (auto _ : state) {
    remote_xcomm::v1::SendRequest request;  // fresh, as gRPC gives every call its own
    if (!request.ParseFromString(wire)) {
      state.SkipWithError("ParseFromString failed");
      return;
    }
    benchmark::DoNotOptimize(request);
  }
  set_bytes(state, wire.size());
}

// 64 B, 1 KiB, 64 KiB, 1 MiB.
void payload_sizes(benchmark::internal::Benchmark* benchmark) {
  benchmark->ArgName("payload_bytes")->Arg(64)->Arg(1 << 10)->Arg(64 << 10)->Arg(1 << 20);
}

BENCHMARK(BM_JsonParse)->Apply(payload_sizes);
BENCHMARK(BM_JsonSerialize)->Apply(payload_sizes);
BENCHMARK(BM_ProtoEncode)->Apply(payload_sizes);
BENCHMARK(BM_ProtoDecode)->Apply(payload_sizes);

}  // namespace

BENCHMARK_MAIN();

// The RPC fuzz targets' harness: one in-process Server per fuzzing process, and raw request bytes
// sent to it through grpc::GenericStub, so that every input goes through the server's real
// decoding and handling path (gRPC's framing, protobuf parsing, limits, the loop, the endpoints).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rx_fuzz {

/// One record of a fuzzer input: `selector` picks what to do with `bytes` (the target decides).
struct Record {
  std::uint8_t selector = 0;
  std::string_view bytes;
};

/// Splits a fuzzer input into records: each is a selector byte, a little-endian 16-bit length
/// and that many bytes (fewer for the last one when the input ends first). At most `max_records`.
std::vector<Record> split_records(std::span<const std::uint8_t> input, std::size_t max_records);

/// One call of a method of remote_xcomm.v1.RemoteXComm ("Send", "Exchange", "Pull", ...): the
/// `messages` are written as they are (serialized protobuf, or whatever the fuzzer made of it),
/// the stream half-closed, then every response read. A call still open after `patience_ms`
/// (a Watch, a waiting Pull, a request its task holds) is cancelled. Returns once gRPC has
/// finished the call. Any status is fine: what is checked is that the server survives (and the
/// sanitizers stay silent).
void call(std::string_view method, const std::vector<std::string_view>& messages, int patience_ms);

/// Starts the server (once per process; later calls do nothing). Endpoints on it: the keys
/// {"dag", "task", "run", -1} and {"dag", "mapped", "run", 0..2}, each answering every request
/// with its payload after recording the payload as XCom "last" (so Pull and Watch find XComs).
/// The server is shut down at exit.
void start_server();

/// The serialized requests that give the server some XComs and task states to pull and watch.
void seed_server_state();

}  // namespace rx_fuzz

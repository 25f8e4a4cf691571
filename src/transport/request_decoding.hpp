// Transport: the server's decoding of request bytes, with its limits and checks. gRPC hands every
// method's request over undecoded (a grpc::ByteBuffer) and these pure functions decode it, so that
// a bad request gets a precise status (INVALID_ARGUMENT naming the field) rather than gRPC's empty
// UNIMPLEMENTED, length limits hold before anything is copied, and UTF-8 is checked field by field
// without protobuf's per-request ERROR log line. The wire format is the public
// remote_xcomm/v1/remote_xcomm.proto, whose descriptor reflection still serves.
#pragma once

#include "codec.hpp"

#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <boost/json/object.hpp>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>
#include <grpcpp/support/status.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rx::detail {

/// Longest key field (dag_id, task_id, run_id, an XCom key, a filter) a request may carry, in bytes,
/// unless configured otherwise. Airflow's ids are at most 250 characters (its XCom keys 512).
inline constexpr std::size_t DEFAULT_MAX_KEY_FIELD_BYTES = 1024;
/// Most frames one ExchangeRequest batch may carry unless configured otherwise.
inline constexpr std::size_t DEFAULT_MAX_BATCH_FRAMES = 16384;
/// A List page_token may be this many times max_key_field_bytes (it holds three key fields as JSON).
inline constexpr std::size_t PAGE_TOKEN_KEY_FIELDS = 8;

struct RequestLimits {
  std::size_t max_key_field_bytes = DEFAULT_MAX_KEY_FIELD_BYTES;
  std::size_t max_batch_frames = DEFAULT_MAX_BATCH_FRAMES;
  JsonLimits json;
};

/// proto3's default key: an unset map_index reads as 0 (not TaskInstanceKeyView's -1).
inline constexpr TaskInstanceKeyView WIRE_DEFAULT_KEY{{}, {}, {}, 0};

/// A decoded SendRequest: views into the bytes it was decoded from.
struct SendRequestView {
  TaskInstanceKeyView key = WIRE_DEFAULT_KEY;
  std::string_view payload_json;
};

/// The wire part of a Send: the fields, their lengths and UTF-8. OK or INVALID_ARGUMENT.
[[nodiscard]] grpc::Status decode_send_request(std::string_view bytes, const RequestLimits& limits,
                                               SendRequestView& out);
/// All a Send's request is checked for before it is routed: decode_send_request, then the payload
/// parsed within limits.json into `payload`.
[[nodiscard]] grpc::Status decode_send(std::string_view bytes, const RequestLimits& limits, SendRequestView& request,
                                       boost::json::object& payload);

/// One decoded ExchangeFrame: views into the batch's bytes. `error`, when not empty, is the
/// INVALID_ARGUMENT message of this frame alone (a key field too long or not UTF-8); the other
/// fields are then as far as they decoded, `id` included.
struct ExchangeFrameView {
  std::uint64_t id = 0;
  TaskInstanceKeyView key = WIRE_DEFAULT_KEY;
  std::string_view payload_json;
  std::uint64_t timeout_ms = 0;
  bool cancel = false;
  std::string error;
};

/// Decodes one ExchangeRequest batch into `frames` (cleared first). A status that is not OK is
/// about the whole batch: INVALID_ARGUMENT when it is not a valid ExchangeRequest,
/// RESOURCE_EXHAUSTED when it holds more than limits.max_batch_frames frames (decoding stops
/// there). Payloads are not parsed here.
[[nodiscard]] grpc::Status decode_exchange_request(std::string_view bytes, const RequestLimits& limits,
                                                   std::vector<ExchangeFrameView>& frames);

/// The other methods' requests, decoded into their (owning) messages; OK or INVALID_ARGUMENT.
[[nodiscard]] grpc::Status decode_request(std::string_view bytes, const RequestLimits& limits,
                                          remote_xcomm::v1::PullRequest& out);
[[nodiscard]] grpc::Status decode_request(std::string_view bytes, const RequestLimits& limits,
                                          remote_xcomm::v1::GetStateRequest& out);
[[nodiscard]] grpc::Status decode_request(std::string_view bytes, const RequestLimits& limits,
                                          remote_xcomm::v1::WatchRequest& out);
[[nodiscard]] grpc::Status decode_request(std::string_view bytes, const RequestLimits& limits,
                                          remote_xcomm::v1::ListRequest& out);
[[nodiscard]] grpc::Status decode_request(std::string_view bytes, const RequestLimits& limits,
                                          remote_xcomm::v1::StatsRequest& out);

/// The bytes of a received message in one slice (no copy when gRPC holds them in one already).
/// CANCELLED when the call ended without a complete message (see flatten's comment).
[[nodiscard]] grpc::Status flatten(const grpc::ByteBuffer& buffer, grpc::Slice& slice);
[[nodiscard]] inline std::string_view view_of(const grpc::Slice& slice) noexcept {
  return {reinterpret_cast<const char*>(slice.begin()), slice.size()};
}

}  // namespace rx::detail

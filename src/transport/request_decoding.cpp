#include "transport/request_decoding.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/stubs/common.h>
#include <google/protobuf/wire_format_lite.h>

#include <limits>

namespace rx::detail {

namespace {

using google::protobuf::io::CodedInputStream;
using WireFormat = google::protobuf::internal::WireFormatLite;

enum class Problem { none, too_long, not_utf8 };

// Reads one message's fields with protobuf's CodedInputStream; string fields are views into the
// bytes, each checked for its length before it is taken and for UTF-8 as protobuf checks a
// proto3 string. The first problem of a field is kept (and decoding goes on, so that an Exchange
// frame's id is still read); malformed wire data stops everything.
class WireReader {
 public:
  explicit WireReader(std::string_view bytes)
      : base_(bytes.data()),
        input_(reinterpret_cast<const std::uint8_t*>(bytes.data()), static_cast<int>(bytes.size())) {
    input_.PushLimit(static_cast<int>(bytes.size()));
  }

  // The next field's tag, or 0 at the end of the current message (or when malformed).
  std::uint32_t next() {
    if (malformed_ || input_.BytesUntilLimit() <= 0) {
      return 0;
    }
    const std::uint32_t tag = input_.ReadTag();
    if (tag == 0 || WireFormat::GetTagFieldNumber(tag) == 0) {
      malformed_ = true;
      return 0;
    }
    return tag;
  }

  static int field(std::uint32_t tag) noexcept { return WireFormat::GetTagFieldNumber(tag); }
  static bool delimited(std::uint32_t tag) noexcept {
    return WireFormat::GetTagWireType(tag) == WireFormat::WIRETYPE_LENGTH_DELIMITED;
  }
  static bool varint(std::uint32_t tag) noexcept {
    return WireFormat::GetTagWireType(tag) == WireFormat::WIRETYPE_VARINT;
  }

  // A string field of at most `max_bytes`; `utf8`: a proto3 string (else bytes of JSON text,
  // which the JSON parser checks).
  void string(std::string_view& out, std::size_t max_bytes, std::string_view name, bool utf8 = true) {
    std::uint32_t length = 0;
    if (!input_.ReadVarint32(&length) || static_cast<std::int64_t>(length) > input_.BytesUntilLimit()) {
      malformed_ = true;
      return;
    }
    const std::string_view value(base_ + input_.CurrentPosition(), length);
    input_.Skip(static_cast<int>(length));
    if (length > max_bytes) {
      note(Problem::too_long, name, value, max_bytes);
      return;
    }
    if (utf8 && !google::protobuf::internal::IsStructurallyValidUTF8(value.data(), static_cast<int>(value.size()))) {
      note(Problem::not_utf8, name, value, max_bytes);
      return;
    }
    out = value;
  }

  template <typename T, WireFormat::FieldType TYPE>
  void scalar(T& out) {
    if (!WireFormat::ReadPrimitive<T, TYPE>(&input_, &out)) {
      malformed_ = true;
    }
  }
  void int32(std::int32_t& out) { scalar<std::int32_t, WireFormat::TYPE_INT32>(out); }
  void uint32(std::uint32_t& out) { scalar<std::uint32_t, WireFormat::TYPE_UINT32>(out); }
  void uint64(std::uint64_t& out) { scalar<std::uint64_t, WireFormat::TYPE_UINT64>(out); }
  void boolean(bool& out) { scalar<bool, WireFormat::TYPE_BOOL>(out); }

  // A field this decoder does not read (an unknown one, or a known number with another wire
  // type: protobuf keeps both as unknown fields).
  void skip(std::uint32_t tag) {
    if (!WireFormat::SkipField(&input_, tag)) {
      malformed_ = true;
    }
  }

  // Enters a length-delimited submessage; leave() with what it returned.
  CodedInputStream::Limit enter() {
    std::uint32_t length = 0;
    if (!input_.ReadVarint32(&length) || static_cast<std::int64_t>(length) > input_.BytesUntilLimit()) {
      malformed_ = true;
      return input_.PushLimit(0);
    }
    return input_.PushLimit(static_cast<int>(length));
  }
  void leave(CodedInputStream::Limit limit) {
    if (!malformed_ && input_.BytesUntilLimit() != 0) {
      malformed_ = true;
    }
    input_.PopLimit(limit);
  }

  [[nodiscard]] bool malformed() const noexcept { return malformed_; }
  [[nodiscard]] bool has_problem() const noexcept { return problem_ != Problem::none; }
  void forget_problem() noexcept { problem_ = Problem::none; }

  // INVALID_ARGUMENT for the first problem: the field's name, never more than a short prefix of it.
  [[nodiscard]] std::string problem_message() const {
    std::string message(problem_field_);
    if (problem_ == Problem::too_long) {
      message.append(" is ")
          .append(std::to_string(problem_value_.size()))
          .append(" bytes, over the server's limit of ")
          .append(std::to_string(problem_limit_))
          .append(" (ServerOptions::max_key_field_bytes): \"");
    } else {
      message.append(" is not valid UTF-8: \"");
    }
    append_caller_text(message, problem_value_);
    message.push_back('"');
    return message;
  }

  [[nodiscard]] grpc::Status status(std::string_view type) const {
    if (malformed_) {
      std::string message = "the request does not decode as a remote_xcomm.v1.";
      message.append(type).append(" (malformed protobuf)");
      return {grpc::StatusCode::INVALID_ARGUMENT, message};
    }
    if (problem_ != Problem::none) {
      return {grpc::StatusCode::INVALID_ARGUMENT, problem_message()};
    }
    return grpc::Status::OK;
  }

 private:
  void note(Problem problem, std::string_view name, std::string_view value, std::size_t limit) {
    if (problem_ == Problem::none) {
      problem_ = problem;
      problem_field_ = name;
      problem_value_ = value;
      problem_limit_ = limit;
    }
  }

  const char* base_;
  CodedInputStream input_;
  bool malformed_ = false;
  Problem problem_ = Problem::none;
  std::string_view problem_field_;
  std::string_view problem_value_;
  std::size_t problem_limit_ = 0;
};

// A TaskInstanceKey submessage (its tag just read), field names under `prefix`.
struct KeyNames {
  std::string_view dag_id, task_id, run_id;
};
constexpr KeyNames SEND_KEY{"key.dag_id", "key.task_id", "key.run_id"};
constexpr KeyNames STATE_KEY{"task_instance.dag_id", "task_instance.task_id", "task_instance.run_id"};

void read_key(WireReader& reader, const RequestLimits& limits, const KeyNames& names, TaskInstanceKeyView& key) {
  const auto limit = reader.enter();
  while (const std::uint32_t tag = reader.next()) {
    switch (WireReader::field(tag)) {
      case 1:
        if (WireReader::delimited(tag)) {
          reader.string(key.dag_id, limits.max_key_field_bytes, names.dag_id);
          continue;
        }
        break;
      case 2:
        if (WireReader::delimited(tag)) {
          reader.string(key.task_id, limits.max_key_field_bytes, names.task_id);
          continue;
        }
        break;
      case 3:
        if (WireReader::delimited(tag)) {
          reader.string(key.run_id, limits.max_key_field_bytes, names.run_id);
          continue;
        }
        break;
      case 4:
        if (WireReader::varint(tag)) {
          reader.int32(key.map_index);
          continue;
        }
        break;
      default:
        break;
    }
    reader.skip(tag);
  }
  reader.leave(limit);
}

void read_frame(WireReader& reader, const RequestLimits& limits, ExchangeFrameView& frame) {
  const auto limit = reader.enter();
  while (const std::uint32_t tag = reader.next()) {
    switch (WireReader::field(tag)) {
      case 1:
        if (WireReader::varint(tag)) {
          reader.uint64(frame.id);
          continue;
        }
        break;
      case 2:
        if (WireReader::delimited(tag)) {
          // proto3 merges a repeated submessage field; a key sent twice is read as its last.
          read_key(reader, limits, SEND_KEY, frame.key);
          continue;
        }
        break;
      case 3:
        if (WireReader::delimited(tag)) {
          reader.string(frame.payload_json, std::numeric_limits<std::size_t>::max(), "payload_json", false);
          continue;
        }
        break;
      case 4:
        if (WireReader::varint(tag)) {
          reader.uint64(frame.timeout_ms);
          continue;
        }
        break;
      case 5:
        if (WireReader::varint(tag)) {
          reader.boolean(frame.cancel);
          continue;
        }
        break;
      default:
        break;
    }
    reader.skip(tag);
  }
  reader.leave(limit);
}

// Reads a string field into an owning message field.
template <typename Setter>
void read_owned(WireReader& reader, std::size_t max_bytes, std::string_view name, Setter set) {
  std::string_view value;
  reader.string(value, max_bytes, name);
  set(value);
}

}  // namespace

grpc::Status decode_send_request(std::string_view bytes, const RequestLimits& limits, SendRequestView& out) {
  out = {};
  WireReader reader(bytes);
  while (const std::uint32_t tag = reader.next()) {
    if (WireReader::field(tag) == 1 && WireReader::delimited(tag)) {
      read_key(reader, limits, SEND_KEY, out.key);
    } else if (WireReader::field(tag) == 2 && WireReader::delimited(tag)) {
      reader.string(out.payload_json, std::numeric_limits<std::size_t>::max(), "payload_json", false);
    } else {
      reader.skip(tag);
    }
  }
  return reader.status("SendRequest");
}

grpc::Status decode_send(std::string_view bytes, const RequestLimits& limits, SendRequestView& request,
                         boost::json::object& payload) {
  grpc::Status status = decode_send_request(bytes, limits, request);
  if (!status.ok()) {
    return status;
  }
  std::string error;
  if (!parse_json_object(request.payload_json, limits.json, payload, error)) {
    return {grpc::StatusCode::INVALID_ARGUMENT, error};
  }
  return grpc::Status::OK;
}

grpc::Status decode_exchange_request(std::string_view bytes, const RequestLimits& limits,
                                     std::vector<ExchangeFrameView>& frames) {
  frames.clear();
  WireReader reader(bytes);
  while (const std::uint32_t tag = reader.next()) {
    if (WireReader::field(tag) != 1 || !WireReader::delimited(tag)) {
      reader.skip(tag);
      continue;
    }
    if (frames.size() == limits.max_batch_frames) {
      std::string message = "the batch holds more than ";
      message.append(std::to_string(limits.max_batch_frames))
          .append(" frames, the server's limit (ServerOptions::max_exchange_batch_frames)");
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, message};
    }
    ExchangeFrameView& frame = frames.emplace_back();
    read_frame(reader, limits, frame);
    if (reader.has_problem()) {
      frame.error = reader.problem_message();
      reader.forget_problem();
    }
  }
  if (reader.malformed()) {
    frames.clear();
  }
  return reader.status("ExchangeRequest");
}

grpc::Status decode_request(std::string_view bytes, const RequestLimits& limits, remote_xcomm::v1::PullRequest& out) {
  out.Clear();
  WireReader reader(bytes);
  const std::size_t max = limits.max_key_field_bytes;
  while (const std::uint32_t tag = reader.next()) {
    const int field = WireReader::field(tag);
    if (WireReader::delimited(tag) && field >= 1 && field <= 4) {
      switch (field) {
        case 1:
          read_owned(reader, max, "dag_id", [&](std::string_view v) { out.set_dag_id(v.data(), v.size()); });
          break;
        case 2:
          read_owned(reader, max, "run_id", [&](std::string_view v) { out.set_run_id(v.data(), v.size()); });
          break;
        case 3:
          read_owned(reader, max, "task_id", [&](std::string_view v) { out.set_task_id(v.data(), v.size()); });
          break;
        default:
          read_owned(reader, max, "key", [&](std::string_view v) { out.set_key(v.data(), v.size()); });
          break;
      }
    } else if (WireReader::varint(tag) && field >= 5 && field <= 8) {
      switch (field) {
        case 5: {
          std::int32_t value = 0;
          reader.int32(value);
          out.set_map_index(value);
          break;
        }
        case 6: {
          bool value = false;
          reader.boolean(value);
          out.set_all_map_indexes(value);
          break;
        }
        case 7: {
          bool value = false;
          reader.boolean(value);
          out.set_wait(value);
          break;
        }
        default: {
          std::uint32_t value = 0;
          reader.uint32(value);
          out.set_min_count(value);
          break;
        }
      }
    } else {
      reader.skip(tag);
    }
  }
  return reader.status("PullRequest");
}

grpc::Status decode_request(std::string_view bytes, const RequestLimits& limits,
                            remote_xcomm::v1::GetStateRequest& out) {
  out.Clear();
  WireReader reader(bytes);
  // A submessage sent twice merges, as protobuf merges it: the later fields win.
  TaskInstanceKeyView key = WIRE_DEFAULT_KEY;
  bool has_key = false;
  while (const std::uint32_t tag = reader.next()) {
    if (WireReader::field(tag) == 1 && WireReader::delimited(tag)) {
      read_key(reader, limits, STATE_KEY, key);
      has_key = true;
    } else {
      reader.skip(tag);
    }
  }
  if (has_key) {
    remote_xcomm::v1::TaskInstanceKey& target = *out.mutable_task_instance();
    target.set_dag_id(key.dag_id.data(), key.dag_id.size());
    target.set_task_id(key.task_id.data(), key.task_id.size());
    target.set_run_id(key.run_id.data(), key.run_id.size());
    target.set_map_index(key.map_index);
  }
  return reader.status("GetStateRequest");
}

grpc::Status decode_request(std::string_view bytes, const RequestLimits& limits, remote_xcomm::v1::WatchRequest& out) {
  out.Clear();
  WireReader reader(bytes);
  const std::size_t max = limits.max_key_field_bytes;
  while (const std::uint32_t tag = reader.next()) {
    const int field = WireReader::field(tag);
    if (WireReader::delimited(tag) && field >= 1 && field <= 3) {
      switch (field) {
        case 1:
          read_owned(reader, max, "dag_id", [&](std::string_view v) { out.set_dag_id(v.data(), v.size()); });
          break;
        case 2:
          read_owned(reader, max, "run_id", [&](std::string_view v) { out.set_run_id(v.data(), v.size()); });
          break;
        default:
          read_owned(reader, max, "task_id", [&](std::string_view v) { out.set_task_id(v.data(), v.size()); });
          break;
      }
    } else if (WireReader::varint(tag) && field >= 4 && field <= 7) {
      switch (field) {
        case 4: {
          std::int32_t value = 0;
          reader.int32(value);
          out.set_map_index(value);
          break;
        }
        case 5: {
          bool value = false;
          reader.boolean(value);
          out.set_all_map_indexes(value);
          break;
        }
        case 6: {
          bool value = false;
          reader.boolean(value);
          out.set_from_start(value);
          break;
        }
        default: {
          std::uint64_t value = 0;
          reader.uint64(value);
          out.set_after_sequence(value);
          break;
        }
      }
    } else {
      reader.skip(tag);
    }
  }
  return reader.status("WatchRequest");
}

grpc::Status decode_request(std::string_view bytes, const RequestLimits& limits, remote_xcomm::v1::ListRequest& out) {
  out.Clear();
  WireReader reader(bytes);
  const std::size_t max = limits.max_key_field_bytes;
  while (const std::uint32_t tag = reader.next()) {
    const int field = WireReader::field(tag);
    if (WireReader::delimited(tag) && (field == 1 || field == 2 || field == 3 || field == 5)) {
      switch (field) {
        case 1:
          read_owned(reader, max, "dag_id", [&](std::string_view v) { out.set_dag_id(v.data(), v.size()); });
          break;
        case 2:
          read_owned(reader, max, "run_id", [&](std::string_view v) { out.set_run_id(v.data(), v.size()); });
          break;
        case 3:
          read_owned(reader, max, "task_id", [&](std::string_view v) { out.set_task_id(v.data(), v.size()); });
          break;
        default:
          read_owned(reader, max * PAGE_TOKEN_KEY_FIELDS, "page_token",
                     [&](std::string_view v) { out.set_page_token(v.data(), v.size()); });
          break;
      }
    } else if (field == 4 && WireReader::varint(tag)) {
      std::uint32_t value = 0;
      reader.uint32(value);
      out.set_page_size(value);
    } else {
      reader.skip(tag);
    }
  }
  return reader.status("ListRequest");
}

grpc::Status decode_request(std::string_view bytes, const RequestLimits& /*limits*/,
                            remote_xcomm::v1::StatsRequest& out) {
  out.Clear();
  WireReader reader(bytes);
  while (const std::uint32_t tag = reader.next()) {
    reader.skip(tag);
  }
  return reader.status("StatsRequest");
}

grpc::Status flatten(const grpc::ByteBuffer& buffer, grpc::Slice& slice) {
  if (!buffer.Valid()) {
    // gRPC starts a unary method without a message when the stream ended first: the caller
    // cancelled or its deadline passed (it never reads this status), or it half-closed without a
    // whole, readable message: a length prefix past the bytes it sent, or a message gRPC 1.51's
    // transport dropped for reserved bits in its flag byte (docs/protocol.md, "Bad input"). The
    // server cannot tell these apart reliably, so the code stays CANCELLED and the message says all.
    return {grpc::StatusCode::CANCELLED,
            "the call ended without a complete request message (cancelled, past its deadline, or half-closed "
            "after a truncated message or one gRPC dropped for reserved bits in its flag byte)"};
  }
  if (buffer.TrySingleSlice(&slice).ok()) {
    return grpc::Status::OK;
  }
  if (!buffer.DumpToSingleSlice(&slice).ok()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "the request message could not be read"};
  }
  return grpc::Status::OK;
}

}  // namespace rx::detail

// Conversions between the wire (protobuf messages, JSON text) and the library's C++ types.
// Internal to the library; tests include it to check the conversions.
#pragma once

#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace rx::detail {

/// Deepest nesting of arrays and objects that a payload may have unless configured otherwise.
inline constexpr std::size_t DEFAULT_MAX_JSON_DEPTH = 64;

/// Most values (object members, array elements and the top object, all levels counted) a payload
/// may hold unless configured otherwise: each costs the server a 16-byte boost::json::value or a
/// 32-byte member for as little as two bytes of text.
inline constexpr std::size_t DEFAULT_MAX_JSON_VALUES = 1'000'000;
/// Longest string (or member name) in a payload, in bytes of its decoded UTF-8, unless configured otherwise.
inline constexpr std::size_t DEFAULT_MAX_JSON_STRING_BYTES = std::size_t{16} << 20;

/// What a payload may hold; each is enforced while parsing, before the excess is stored.
struct JsonLimits {
  std::size_t max_depth = DEFAULT_MAX_JSON_DEPTH;
  std::size_t max_values = DEFAULT_MAX_JSON_VALUES;
  std::size_t max_string_bytes = DEFAULT_MAX_JSON_STRING_BYTES;
};

/// Which limit (or rule) a payload broke; `none` for a syntax error or success.
enum class JsonViolation { none, too_deep, too_many_values, string_too_long, number_too_large, not_utf8 };

/// Parses UTF-8 JSON text that must hold one object, within `limits`; empty text is the empty
/// object. A number whose exponent is beyond what Boost.JSON reads (|exponent| >= 2^31) is refused
/// as too large when it would be infinite, and read as 0 when it is that small (a payload may hold
/// up to MAX_TINY_EXPONENT_NUMBERS of them; each costs one more parse).
/// On failure returns false and says why in `error` (the text of an INVALID_ARGUMENT status,
/// never quoting the payload) and, when given, which rule in `violation`.
bool parse_json_object(std::string_view text, const JsonLimits& limits, boost::json::object& out, std::string& error,
                       JsonViolation* violation = nullptr);

inline constexpr std::size_t MAX_TINY_EXPONENT_NUMBERS = 8;

/// Parses UTF-8 JSON text that must hold one object; empty text is the empty object.
/// On failure returns false and says why in `error` (the text of an INVALID_ARGUMENT status);
/// `too_deep`, when given, is set to whether it failed for nesting deeper than `max_depth`.
/// Only the depth is limited (the client's reading of replies).
bool parse_json_object(std::string_view text, std::size_t max_depth, boost::json::object& out, std::string& error,
                       bool* too_deep = nullptr);

/// How many bytes of caller input a status message or log line may quote.
inline constexpr std::size_t QUOTE_PREFIX_BYTES = 64;

/// Appends `text`, which came from a caller (or a peer), so that a message stays short and
/// printable whatever it holds: at most `max_bytes` of it, cut at a character boundary, with
/// control characters, backslashes and bytes that are not UTF-8 written as \xNN, and
/// "...(N bytes)" after a cut. The one way every status message quotes caller input.
void append_caller_text(std::string& out, std::string_view text, std::size_t max_bytes = QUOTE_PREFIX_BYTES);
[[nodiscard]] std::string caller_text(std::string_view text, std::size_t max_bytes = QUOTE_PREFIX_BYTES);
/// A key a caller sent, as `dag_id/task_id/run_id[map_index]` with each field through append_caller_text.
[[nodiscard]] std::string caller_key(TaskInstanceKeyView key);

/// False if `value` holds a NaN or an infinity anywhere: JSON text cannot carry them.
[[nodiscard]] bool all_numbers_finite(const boost::json::value& value);
[[nodiscard]] bool all_numbers_finite(const boost::json::object& object);

[[nodiscard]] std::string serialize_json(const boost::json::object& object);

void to_proto(const TaskInstanceKey& key, remote_xcomm::v1::TaskInstanceKey& out);
[[nodiscard]] TaskInstanceKeyView view_of(const remote_xcomm::v1::TaskInstanceKey& key) noexcept;

}  // namespace rx::detail

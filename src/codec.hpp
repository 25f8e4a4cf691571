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

/// Parses UTF-8 JSON text that must hold one object; empty text is the empty object.
/// On failure returns false and says why in `error` (the text of an INVALID_ARGUMENT status);
/// `too_deep`, when given, is set to whether it failed for nesting deeper than `max_depth`.
bool parse_json_object(std::string_view text, std::size_t max_depth, boost::json::object& out, std::string& error,
                       bool* too_deep = nullptr);

/// False if `value` holds a NaN or an infinity anywhere: JSON text cannot carry them.
[[nodiscard]] bool all_numbers_finite(const boost::json::value& value);
[[nodiscard]] bool all_numbers_finite(const boost::json::object& object);

[[nodiscard]] std::string serialize_json(const boost::json::object& object);

void to_proto(const TaskInstanceKey& key, remote_xcomm::v1::TaskInstanceKey& out);
[[nodiscard]] TaskInstanceKeyView view_of(const remote_xcomm::v1::TaskInstanceKey& key) noexcept;

}  // namespace rx::detail

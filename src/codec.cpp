#include "codec.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/error.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_stack.hpp>

#include <google/protobuf/stubs/common.h>

#include <boost/container/small_vector.hpp>
#include <cmath>
#include <limits>
#include <optional>

namespace rx::detail {

namespace {

namespace json = boost::json;

// Boost.JSON's parser with a handler that builds the value as boost::json::parse does (onto a
// value_stack) and enforces the limits as it goes: a container, string or number over a limit
// stops the parse before it is stored.
class LimitedHandler {
 public:
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  LimitedHandler(const JsonLimits& limits, unsigned char* temp, std::size_t temp_size)
      : stack(json::storage_ptr(), temp, temp_size), limits_(limits) {}

  json::value_stack stack;
  JsonViolation violation = JsonViolation::none;

  bool on_document_begin(json::error_code& /*ec*/) { return true; }
  bool on_document_end(json::error_code& /*ec*/) { return true; }
  bool on_object_begin(json::error_code& ec) { return count(ec); }
  bool on_object_end(std::size_t n, json::error_code& /*ec*/) {
    stack.push_object(n);
    return true;
  }
  bool on_array_begin(json::error_code& ec) { return count(ec); }
  bool on_array_end(std::size_t n, json::error_code& /*ec*/) {
    stack.push_array(n);
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t n, json::error_code& ec) {
    if (!length_ok(n, ec)) {
      return false;
    }
    stack.push_chars(s);
    return true;
  }
  bool on_key(json::string_view s, std::size_t n, json::error_code& ec) {
    if (!length_ok(n, ec)) {
      return false;
    }
    stack.push_key(s);
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t n, json::error_code& ec) {
    if (!length_ok(n, ec)) {
      return false;
    }
    stack.push_chars(s);
    return true;
  }
  bool on_string(json::string_view s, std::size_t n, json::error_code& ec) {
    if (!length_ok(n, ec) || !count(ec)) {
      return false;
    }
    stack.push_string(s);
    return true;
  }
  bool on_number_part(json::string_view /*s*/, json::error_code& /*ec*/) { return true; }
  bool on_int64(std::int64_t i, json::string_view /*s*/, json::error_code& ec) {
    if (!count(ec)) {
      return false;
    }
    stack.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, json::string_view /*s*/, json::error_code& ec) {
    if (!count(ec)) {
      return false;
    }
    stack.push_uint64(u);
    return true;
  }
  bool on_double(double d, json::string_view /*s*/, json::error_code& ec) {
    // Boost.JSON reads 1e400 as infinity, which no JSON text can carry back out.
    if (!std::isfinite(d)) {
      return fail(JsonViolation::number_too_large, ec);
    }
    if (!count(ec)) {
      return false;
    }
    stack.push_double(d);
    return true;
  }
  bool on_bool(bool b, json::error_code& ec) {
    if (!count(ec)) {
      return false;
    }
    stack.push_bool(b);
    return true;
  }
  bool on_null(json::error_code& ec) {
    if (!count(ec)) {
      return false;
    }
    stack.push_null();
    return true;
  }
  bool on_comment_part(json::string_view /*s*/, json::error_code& /*ec*/) { return true; }
  bool on_comment(json::string_view /*s*/, json::error_code& /*ec*/) { return true; }

 private:
  bool fail(JsonViolation what, json::error_code& ec) {
    violation = what;
    ec = json::error::exception;  // any error stops the parser; `violation` says which
    return false;
  }
  bool count(json::error_code& ec) {
    if (++values_ > limits_.max_values) {
      return fail(JsonViolation::too_many_values, ec);
    }
    return true;
  }
  bool length_ok(std::size_t n, json::error_code& ec) {
    return n <= limits_.max_string_bytes || fail(JsonViolation::string_too_long, ec);
  }

  const JsonLimits& limits_;
  std::size_t values_ = 0;
};

using LimitedParser = json::basic_parser<LimitedHandler>;

[[nodiscard]] bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// The parser stopped with exponent_overflow at `at`, inside a number whose exponent has 10 or
// more digits. When that number is exactly representable as 0 (a negative exponent, or a zero
// mantissa), rewrites its exponent digits in `text` to an equivalent that Boost.JSON reads (a
// large negative exponent of the same width, or 0) and returns true; false when the number is
// beyond the double range (read as infinity).
bool rewrite_extreme_exponent(std::string& text, std::size_t at) {
  std::size_t digits_end = std::min(at, text.size());
  while (digits_end < text.size() && is_digit(text[digits_end])) {
    ++digits_end;
  }
  std::size_t digits_begin = std::min(at, text.size());
  while (digits_begin > 0 && is_digit(text[digits_begin - 1])) {
    --digits_begin;
  }
  if (digits_begin == 0) {
    return false;
  }
  std::size_t e = digits_begin - 1;
  const bool negative = text[e] == '-';
  if (text[e] == '-' || text[e] == '+') {
    if (e == 0) {
      return false;
    }
    --e;
  }
  if (text[e] != 'e' && text[e] != 'E') {
    return false;
  }
  bool zero_mantissa = true;
  for (std::size_t i = e; i > 0 && (is_digit(text[i - 1]) || text[i - 1] == '.'); --i) {
    zero_mantissa = zero_mantissa && (text[i - 1] == '0' || text[i - 1] == '.');
  }
  // 100000000: far below any double once negative (the mantissa cannot have 10^8 digits in a
  // message), and within what the parser accumulates.
  constexpr std::string_view TINY = "100000000";
  const std::size_t width = digits_end - digits_begin;
  if (zero_mantissa) {
    std::fill(text.begin() + static_cast<std::ptrdiff_t>(digits_begin),
              text.begin() + static_cast<std::ptrdiff_t>(digits_end), '0');
    return true;
  }
  if (!negative || width < TINY.size()) {
    return false;
  }
  std::fill(text.begin() + static_cast<std::ptrdiff_t>(digits_begin),
            text.begin() + static_cast<std::ptrdiff_t>(digits_end - TINY.size()), '0');
  std::copy(TINY.begin(), TINY.end(), text.begin() + static_cast<std::ptrdiff_t>(digits_end - TINY.size()));
  return true;
}

struct ParseOutcome {
  json::error_code ec;
  std::size_t stopped_at = 0;  // where the parser stopped, on error
  JsonViolation violation = JsonViolation::none;
};

ParseOutcome parse_limited(std::string_view text, const JsonLimits& limits, json::value& out) {
  json::parse_options options;
  options.max_depth = limits.max_depth;
  unsigned char temp[BOOST_JSON_STACK_BUFFER_SIZE];
  LimitedParser parser(options, limits, temp, sizeof temp);
  parser.handler().stack.reset();
  ParseOutcome outcome;
  outcome.stopped_at = parser.write_some(false, text.data(), text.size(), outcome.ec);
  if (!outcome.ec && outcome.stopped_at < text.size()) {
    outcome.ec = json::error::extra_data;
  }
  outcome.violation = parser.handler().violation;
  if (!outcome.ec) {
    out = parser.handler().stack.release();
  }
  return outcome;
}

}  // namespace

bool parse_json_object(std::string_view text, const JsonLimits& limits, boost::json::object& out, std::string& error,
                       JsonViolation* violation) {
  JsonViolation broken = JsonViolation::none;
  const auto refuse = [&](JsonViolation what, std::string message) {
    broken = what;
    error = std::move(message);
    if (violation != nullptr) {
      *violation = broken;
    }
    return false;
  };
  if (violation != nullptr) {
    *violation = JsonViolation::none;
  }
  if (text.empty()) {
    out = boost::json::object{};
    return true;
  }
  json::value value;
  ParseOutcome outcome = parse_limited(text, limits, value);
  std::optional<std::string> rewritten;  // only when a number's exponent is beyond 2^31
  for (std::size_t rewrites = 0; outcome.ec == json::error::exponent_overflow; ++rewrites) {
    if (!rewritten) {
      rewritten.emplace(text);
    }
    if (!rewrite_extreme_exponent(*rewritten, outcome.stopped_at)) {
      outcome.violation = JsonViolation::number_too_large;
      break;
    }
    if (rewrites == MAX_TINY_EXPONENT_NUMBERS) {
      std::string message = "payload has more than ";
      message.append(std::to_string(MAX_TINY_EXPONENT_NUMBERS))
          .append(" numbers with an exponent below -2147483647 (write them as 0)");
      return refuse(JsonViolation::number_too_large, std::move(message));
    }
    outcome = parse_limited(*rewritten, limits, value);
  }
  switch (outcome.violation) {
    case JsonViolation::none:
    case JsonViolation::not_utf8:
    case JsonViolation::too_deep:
      break;
    case JsonViolation::too_many_values:
      return refuse(outcome.violation, std::string("payload holds more than ")
                                           .append(std::to_string(limits.max_values))
                                           .append(" values (ServerOptions::max_json_values)"));
    case JsonViolation::string_too_long:
      return refuse(outcome.violation, std::string("payload has a string longer than ")
                                           .append(std::to_string(limits.max_string_bytes))
                                           .append(" bytes (ServerOptions::max_json_string_bytes)"));
    case JsonViolation::number_too_large:
      return refuse(outcome.violation, "payload has a number too large for a double (JSON cannot represent infinity)");
  }
  if (outcome.ec == json::error::too_deep) {
    return refuse(JsonViolation::too_deep,
                  "payload nests arrays and objects deeper than " + std::to_string(limits.max_depth) + " levels");
  }
  if (outcome.ec) {
    // Boost.JSON reports bytes that are not UTF-8 as a syntax error; say which it was.
    if (!google::protobuf::internal::IsStructurallyValidUTF8(text.data(), static_cast<int>(text.size()))) {
      return refuse(JsonViolation::not_utf8, "payload is not valid UTF-8");
    }
    return refuse(JsonViolation::none, "payload is not valid JSON: " + outcome.ec.message());
  }
  if (!value.is_object()) {
    return refuse(JsonViolation::none,
                  "payload must be a JSON object, got a JSON " + std::string(boost::json::to_string(value.kind())));
  }
  out = std::move(value.get_object());
  return true;
}

void append_caller_text(std::string& out, std::string_view text, std::size_t max_bytes) {
  std::size_t shown = std::min(text.size(), max_bytes);
  // Cut at a character boundary: never in the middle of a UTF-8 sequence.
  while (shown > 0 && shown < text.size() && (static_cast<unsigned char>(text[shown]) & 0xC0U) == 0x80U) {
    --shown;
  }
  std::string_view rest = text.substr(0, shown);
  constexpr std::string_view HEX = "0123456789abcdef";
  const auto escape = [&out, HEX](unsigned char byte) {
    out.append("\\x").push_back(HEX[byte >> 4U]);
    out.push_back(HEX[byte & 0xFU]);
  };
  while (!rest.empty()) {
    // The longest valid UTF-8 run, as protobuf checks string fields; then one byte that is not.
    const auto valid = static_cast<std::size_t>(
        google::protobuf::internal::UTF8SpnStructurallyValid(google::protobuf::StringPiece(rest.data(), rest.size())));
    for (std::size_t i = 0; i < valid; ++i) {
      const auto byte = static_cast<unsigned char>(rest[i]);
      if (byte < 0x20U || byte == 0x7FU || byte == '\\') {
        escape(byte);
      } else {
        out.push_back(rest[i]);
      }
    }
    if (valid < rest.size()) {
      escape(static_cast<unsigned char>(rest[valid]));
      rest.remove_prefix(valid + 1);
    } else {
      rest = {};
    }
  }
  if (shown < text.size()) {
    out.append("...(").append(std::to_string(text.size())).append(" bytes)");
  }
}

std::string caller_text(std::string_view text, std::size_t max_bytes) {
  std::string out;
  append_caller_text(out, text, max_bytes);
  return out;
}

std::string caller_key(TaskInstanceKeyView key) {
  std::string out;
  append_caller_text(out, key.dag_id);
  out.push_back('/');
  append_caller_text(out, key.task_id);
  out.push_back('/');
  append_caller_text(out, key.run_id);
  out.append("[").append(std::to_string(key.map_index)).append("]");
  return out;
}

bool parse_json_object(std::string_view text, std::size_t max_depth, boost::json::object& out, std::string& error,
                       bool* too_deep) {
  JsonLimits limits;
  limits.max_depth = max_depth;
  limits.max_values = std::numeric_limits<std::size_t>::max();
  limits.max_string_bytes = std::numeric_limits<std::size_t>::max();
  JsonViolation violation = JsonViolation::none;
  const bool ok = parse_json_object(text, limits, out, error, &violation);
  if (too_deep != nullptr) {
    *too_deep = violation == JsonViolation::too_deep;
  }
  return ok;
}

bool all_numbers_finite(const boost::json::object& object) {
  for (const auto& member : object) {
    if (!all_numbers_finite(member.value())) {
      return false;
    }
  }
  return true;
}

bool all_numbers_finite(const boost::json::value& root) {
  boost::container::small_vector<const boost::json::value*, 32> pending{&root};  // no allocation for small payloads
  while (!pending.empty()) {
    const boost::json::value* value = pending.back();
    pending.pop_back();
    switch (value->kind()) {
      case boost::json::kind::double_:
        if (!std::isfinite(value->get_double())) {
          return false;
        }
        break;
      case boost::json::kind::array:
        for (const boost::json::value& element : value->get_array()) {
          pending.push_back(&element);
        }
        break;
      case boost::json::kind::object:
        for (const auto& member : value->get_object()) {
          pending.push_back(&member.value());
        }
        break;
      default:
        break;
    }
  }
  return true;
}

std::string serialize_json(const boost::json::object& object) { return boost::json::serialize(object); }

void to_proto(const TaskInstanceKey& key, remote_xcomm::v1::TaskInstanceKey& out) {
  out.set_dag_id(key.dag_id);
  out.set_task_id(key.task_id);
  out.set_run_id(key.run_id);
  out.set_map_index(key.map_index);
}

TaskInstanceKeyView view_of(const remote_xcomm::v1::TaskInstanceKey& key) noexcept {
  return {key.dag_id(), key.task_id(), key.run_id(), key.map_index()};
}

}  // namespace rx::detail

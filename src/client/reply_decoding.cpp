#include "reply_decoding.hpp"

#include "../codec.hpp"

#include <boost/json/parser.hpp>

#include <optional>
#include <string>

namespace rx::detail {
namespace {

// The thread parser keeps the stack it grew for its largest reply; larger replies, whose parse
// dwarfs a parser's construction anyway, get a parser of their own.
constexpr std::size_t LARGEST_REPLY_FOR_THREAD_PARSER = 64 * 1024;

// True when `text` is one JSON object within `max_depth` with finite numbers, now in `out`.
bool parse_reply_fast(std::string_view text, std::size_t max_depth, boost::json::object& out) {
  if (text.size() > LARGEST_REPLY_FOR_THREAD_PARSER) {
    return false;
  }
  struct ThreadParser {
    explicit ThreadParser(std::size_t depth) : max_depth(depth), parser({}, options(depth)) {}
    static boost::json::parse_options options(std::size_t depth) {
      boost::json::parse_options options;
      options.max_depth = depth;
      return options;
    }
    std::size_t max_depth;
    boost::json::parser parser;
  };
  thread_local std::optional<ThreadParser> cached;
  if (!cached || cached->max_depth != max_depth) {
    cached.emplace(max_depth);
  }
  boost::json::parser& parser = cached->parser;
  parser.reset();  // the reply's memory comes from the default resource, as the codec's
  boost::system::error_code ec;
  parser.write(text.data(), text.size(), ec);
  if (ec) {
    return false;
  }
  boost::json::value value = parser.release();
  if (!value.is_object() || !all_numbers_finite(value)) {
    return false;
  }
  out = std::move(value.get_object());
  return true;
}

}  // namespace

grpc::Status decode_reply_json(std::string_view text, std::size_t max_depth, boost::json::object& out) {
  if (text.empty()) {
    return grpc::Status::OK;  // the empty object
  }
  // The common case (a valid object) uses this thread's parser, kept between replies so that its
  // construction and its stack are paid once; a reply that fails is parsed again by the codec for
  // its exact error.
  if (parse_reply_fast(text, max_depth, out)) {
    return grpc::Status::OK;
  }
  std::string error;
  bool too_deep = false;
  if (parse_json_object(text, max_depth, out, error, &too_deep)) {
    return grpc::Status::OK;
  }
  return too_deep ? grpc::Status(grpc::StatusCode::INTERNAL, "server sent a reply nested deeper than " +
                                                                 std::to_string(max_depth) +
                                                                 " levels (ClientOptions::max_json_depth)")
                  : grpc::Status(grpc::StatusCode::INTERNAL, "server sent a reply that is not a JSON object: " + error);
}

}  // namespace rx::detail

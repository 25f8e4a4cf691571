// The client's decoding of a reply's JSON text, shared by the unary and the Exchange transports.
#pragma once

#include <boost/json/object.hpp>
#include <grpcpp/support/status.h>

#include <cstddef>
#include <string_view>

namespace rx::detail {

/// Parses `text`, a reply the server sent, into `out` (empty text is the empty object). Returns
/// OK, or INTERNAL saying why it was refused: not a JSON object, or nested deeper than
/// `max_depth` (ClientOptions::max_json_depth). Runs on whichever thread received the reply.
grpc::Status decode_reply_json(std::string_view text, std::size_t max_depth, boost::json::object& out);

}  // namespace rx::detail

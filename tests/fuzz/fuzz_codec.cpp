// libFuzzer target: payload decoding (src/codec.hpp) on its own, without gRPC. The first byte of
// the input is the nesting limit (1 to 80), the rest the payload text. Beyond the sanitizers, it
// checks what the server relies on: a refusal says why in a message short enough for any client
// to read; an accepted payload has only finite numbers, and its serialization (what the server
// sends back) is accepted again with the same limit.
#include "codec.hpp"

#include <boost/json/object.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

void check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_codec: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::size_t max_depth = 1 + data[0] % 80;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  boost::json::object object;
  std::string error;
  bool too_deep = false;
  if (!rx::detail::parse_json_object(text, max_depth, object, error, &too_deep)) {
    check(!error.empty(), "a refusal without a message");
    check(error.size() <= 512, "a refusal message longer than 512 bytes");
    return 0;
  }
  check(!too_deep, "accepted, yet flagged too deep");
  check(rx::detail::all_numbers_finite(object), "accepted a payload with a NaN or an infinity");
  const std::string serialized = rx::detail::serialize_json(object);
  boost::json::object again;
  std::string again_error;
  check(rx::detail::parse_json_object(serialized, max_depth, again, again_error),
        "the serialization of an accepted payload is refused");
  check(again.size() == object.size(), "the serialization of an accepted payload has other members");
  return 0;
}

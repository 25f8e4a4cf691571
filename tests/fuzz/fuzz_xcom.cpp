// libFuzzer target: the XCom RPCs, as raw bytes, to an in-process server (rpc_harness.hpp) that
// holds XComs and task states (seed_server_state). Each record of the input (split_records) is
// one call; its selector picks the method: Pull, Watch, GetState, List or Send (which records
// an XCom). A waiting Pull or a Watch is cancelled 50 ms after it started, having streamed what
// it had by then: the point is the server's handling of the request, not the wait.
#include "rpc_harness.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace {

struct Method {
  std::string_view name;
  int patience_ms;
};

constexpr std::array<Method, 5> METHODS{
    {{"Pull", 50}, {"Watch", 50}, {"GetState", 2000}, {"List", 2000}, {"Send", 2000}}};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool seeded = [] {
    rx_fuzz::start_server();
    rx_fuzz::seed_server_state();
    return true;
  }();
  (void)seeded;
  for (const rx_fuzz::Record& record : rx_fuzz::split_records({data, size}, 8)) {
    const Method& method = METHODS[record.selector % METHODS.size()];
    rx_fuzz::call(method.name, {record.bytes}, method.patience_ms);
  }
  return 0;
}

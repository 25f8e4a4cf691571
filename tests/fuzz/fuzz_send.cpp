// libFuzzer target: unary Send requests, as raw bytes, to an in-process server (rpc_harness.hpp).
// Each record of the input (split_records) is one call; its selector sends the bytes once
// (selector % 3 == 0), twice on the same call (1), or sends nothing and half-closes (2).
#include "rpc_harness.hpp"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rx_fuzz::start_server();
  for (const rx_fuzz::Record& record : rx_fuzz::split_records({data, size}, 8)) {
    switch (record.selector % 3) {
      case 0:
        rx_fuzz::call("Send", {record.bytes}, 2000);
        break;
      case 1:
        rx_fuzz::call("Send", {record.bytes, record.bytes}, 2000);
        break;
      default:
        rx_fuzz::call("Send", {}, 2000);
        break;
    }
  }
  return 0;
}

// libFuzzer target: Exchange streams, as raw bytes, to an in-process server (rpc_harness.hpp).
// Each record of the input (split_records) is one ExchangeRequest message (a batch of frames);
// consecutive records go on one stream, and a record whose selector is odd starts a new stream.
// A stream still open 2 s after it started (a frame whose task never answers) is cancelled.
#include "rpc_harness.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rx_fuzz::start_server();
  std::vector<std::string_view> batches;
  for (const rx_fuzz::Record& record : rx_fuzz::split_records({data, size}, 16)) {
    if ((record.selector & 1) != 0 && !batches.empty()) {
      rx_fuzz::call("Exchange", batches, 2000);
      batches.clear();
    }
    batches.push_back(record.bytes);
  }
  if (!batches.empty()) {
    rx_fuzz::call("Exchange", batches, 2000);
  }
  return 0;
}

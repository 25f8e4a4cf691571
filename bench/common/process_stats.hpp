// Resident memory of this process, for the endpoint-density benchmark.
#pragma once

#include <cstdint>

namespace rx::bench {

/// VmRSS from /proc/self/status, in bytes; 0 if it cannot be read.
[[nodiscard]] std::int64_t resident_bytes();

/// Returns free heap pages to the kernel (glibc malloc_trim), so that an RSS difference counts
/// live memory rather than what earlier work freed but the allocator kept.
void trim_heap();

}  // namespace rx::bench

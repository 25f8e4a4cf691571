// What this process uses, read from /proc: resident memory, and how often its threads sleep.
#pragma once

#include <cstdint>

namespace rx::bench {

/// VmRSS from /proc/self/status, in bytes; 0 if it cannot be read.
[[nodiscard]] std::int64_t resident_bytes();

/// Returns free heap pages to the kernel (glibc malloc_trim), so that an RSS difference counts
/// live memory rather than what earlier work freed but the allocator kept.
void trim_heap();

/// Voluntary context switches of all this process's threads so far (/proc/self/task/*/status):
/// each is a thread going to sleep, so each costs a wake-up later. On the 2-vCPU target a
/// wake-up costs about as much as a loopback round trip.
[[nodiscard]] std::int64_t voluntary_context_switches();

}  // namespace rx::bench

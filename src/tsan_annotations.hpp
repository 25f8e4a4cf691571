// Telling ThreadSanitizer about ordering that gRPC guarantees but cannot show. Internal.
#pragma once

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace rx::detail {

// Debian's gRPC is not instrumented, so its internal synchronisation is invisible to TSan: a
// reaction to a call (a client's completion, a server reactor's OnCancel or OnDone) runs after
// the code that handed the call to gRPC, and sees everything written before the hand-over.
inline void handed_to_grpc([[maybe_unused]] const void* call) noexcept {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(const_cast<void*>(call));  // NOLINT(cppcoreguidelines-pro-type-const-cast): TSan's C API
#endif
}
inline void back_from_grpc([[maybe_unused]] const void* call) noexcept {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(const_cast<void*>(call));  // NOLINT(cppcoreguidelines-pro-type-const-cast): TSan's C API
#endif
}

}  // namespace rx::detail

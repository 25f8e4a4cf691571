// Batch messages reused from one batch to the next on an Exchange stream, both sides.
#pragma once

#include <cstddef>

namespace rx::detail {

/// A batch at most this large (encoded) is kept for the next batch; a larger one is freed, so
/// that one large batch is not held for the life of the stream.
inline constexpr std::size_t MAX_RECYCLED_BATCH_BYTES = std::size_t{1} << 20;

/// Leaves `spare` with `used`'s memory, cleared, when `used` was small enough, and `used` empty.
/// Clear() keeps a repeated field's elements and their strings' capacity, so the next batch
/// parses or is filled into memory already allocated: otherwise a batch of thousands of frames
/// allocates and frees each frame, its key and its strings (a third of the client's and server's
/// CPU in a fan-out profile went to malloc and free). `spare` must be empty or cleared.
template <typename Message>
void recycle_batch(Message& used, std::size_t used_bytes, Message& spare) {
  if (used_bytes <= MAX_RECYCLED_BATCH_BYTES) {
    used.Clear();
    spare.Swap(&used);
  }
  used = Message();
}

}  // namespace rx::detail

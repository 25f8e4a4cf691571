// Where values too large to encode on the loop are encoded: one worker thread per io_context.
// Internal.
#pragma once

#include <remote_xcomm/loop.hpp>

#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <atomic>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>

namespace rx::detail {

/// A value whose JSON text reaches this many bytes (estimated) is encoded off the loop. Below it,
/// encoding inline costs less than the two thread hand-offs (20-60 µs each on the development VM;
/// Boost.JSON serialises 64 KiB of text in about 0.1-0.6 ms there).
inline constexpr std::size_t OFF_LOOP_BYTES = std::size_t{64} * 1024;

enum class ValueSize {
  small,       // every number finite, JSON text under the threshold: encode it inline
  large,       // JSON text reaches the threshold (numbers not all checked yet): encode it off the loop
  not_finite,  // a NaN or an infinity, which JSON cannot carry
};

/// Walks `value` until its JSON text is known to reach `threshold` bytes, checking numbers on the
/// way. Its cost is bounded by the threshold, not by the value's size. The size counted is a lower
/// bound of the text's (escapes and number digits are not counted in full).
[[nodiscard]] ValueSize classify(const boost::json::value& value, std::size_t threshold) noexcept;
[[nodiscard]] ValueSize classify(const boost::json::object& object, std::size_t threshold) noexcept;

/// The JSON text of `value`, encoded in slices; none if `stop` was set meanwhile (checked
/// between slices, so that a shutdown does not wait for a whole 64 MiB value). Throws
/// std::bad_alloc.
[[nodiscard]] std::optional<std::string> serialize_json_unless(const boost::json::value& value,
                                                               const std::atomic<bool>& stop);

/// The io_context service that runs work too long for the loop (encoding large values, handing
/// large messages to gRPC) on one worker thread, started on first use.
///
/// One thread: bounded, and enough (a 2-core host runs the loop beside it); large values are
/// encoded in the order they came. Not gRPC's callback threads: a few, shared by every call of
/// the process, and a second of encoding there would stall gRPC's own I/O.
///
/// Lifetime: a service of the io_context, so that work queued here never outlives the loop it
/// hands results back to. The io_context's destruction shuts it down first (services go in
/// reverse order of creation, and the loop's came first): `stopping()` is set, the running job
/// finishes (an encoding gives up at its next slice) and jobs never started are destroyed on the
/// destroying thread, while every other service still exists.
class OffLoopWorker final : public boost::asio::execution_context::service {
 public:
  static inline boost::asio::execution_context::id id;  // NOLINT(readability-identifier-naming): Asio's name

  explicit OffLoopWorker(boost::asio::execution_context& context);
  OffLoopWorker(const OffLoopWorker&) = delete;
  OffLoopWorker& operator=(const OffLoopWorker&) = delete;
  ~OffLoopWorker() override;

  /// The worker of `loop`'s io_context (made on first use). Any thread.
  [[nodiscard]] static OffLoopWorker& of(const LoopExecutor& loop);

  /// Runs `function` on the worker thread. Any thread; never runs it inline. A job never started
  /// is destroyed unrun at shutdown, on the thread destroying the io_context.
  template <typename Function>
  void run(Function&& function) {
    boost::asio::post(pool_->get_executor(), std::forward<Function>(function));
  }

  /// Set once the io_context is being destroyed: long work gives up.
  [[nodiscard]] const std::atomic<bool>& stopping() const noexcept { return stopping_; }

 private:
  void shutdown() override;

  std::atomic<bool> stopping_{false};
  std::optional<boost::asio::thread_pool> pool_;
};

}  // namespace rx::detail

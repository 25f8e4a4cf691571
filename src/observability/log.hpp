// The library's logging, through the application's sink (rx::set_log_sink). Internal.
#pragma once

#include <remote_xcomm/log.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string_view>

namespace rx::detail {

/// The most detailed level a sink takes; -1 with no sink. Read relaxed: a check costs one load.
extern std::atomic<int> log_threshold;

[[nodiscard]] inline bool log_enabled(LogLevel level) noexcept {
  return static_cast<int>(level) <= log_threshold.load(std::memory_order_relaxed);
}

/// Writes `line` to the sink if it takes `level`. Never throws. Never pass a payload, a reply or
/// metadata: lines name endpoints, addresses and status messages only.
void log(LogLevel level, std::string_view line) noexcept;

/// Lets at most `per_second` lines through in each second and counts the others, for lines that
/// a client can cause at will (bad requests). Any thread; taken only on such paths.
class RateLimit {
 public:
  explicit RateLimit(std::uint32_t per_second = 5) noexcept : per_second_(per_second) {}
  /// True when a line may be written now; `suppressed` is then how many were held back since the
  /// last one let through.
  bool allow(std::uint64_t& suppressed) noexcept {
    const auto now = std::chrono::steady_clock::now();
    const std::lock_guard lock(mutex_);
    if (now - window_start_ >= std::chrono::seconds(1)) {
      window_start_ = now;
      in_window_ = 0;
    }
    if (in_window_ >= per_second_) {
      ++suppressed_;
      return false;
    }
    ++in_window_;
    suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  std::mutex mutex_;
  std::chrono::steady_clock::time_point window_start_{};
  std::uint32_t per_second_;
  std::uint32_t in_window_ = 0;
  std::uint64_t suppressed_ = 0;
};

}  // namespace rx::detail

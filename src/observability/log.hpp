// The library's logging, through the application's sink (rx::set_log_sink). Internal.
#pragma once

#include <remote_xcomm/log.hpp>

#include <atomic>
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

}  // namespace rx::detail

// Where the library's log lines go: nowhere unless the application installs a sink.
#pragma once

#include <functional>
#include <string_view>

namespace rx {

/// How much a log line matters; a sink receives the lines at its level and the levels above it.
enum class LogLevel : int {
  /// Something failed that the library could not report through a status or an error code.
  error = 0,
  /// Something unusual that the library handled (a task error with no hook to take it, ...).
  warning = 1,
  /// Lifecycle: a server listening, shutting down, shut down.
  info = 2,
  /// One line per call refused before reaching the loop, per endpoint attached or detached.
  debug = 3,
};

/// "error", "warning", "info" or "debug".
[[nodiscard]] std::string_view to_string(LogLevel level) noexcept;

/// Receives one log line (no trailing newline) with its level. Called on whichever thread logs:
/// gRPC's, the loop's or the application's, possibly concurrently, so it must be thread-safe and
/// quick; it must not throw (an exception is swallowed) nor call back into the library.
using LogSink = std::function<void(LogLevel level, std::string_view line)>;

/// Installs `sink` for the whole process, receiving lines of `level` and above (more important);
/// an empty sink (the default) makes the library quiet. Lines name endpoints, addresses and
/// status messages, never a payload, a reply or a request's metadata. Thread-safe; a line being
/// written while the sink changes goes to the old sink or the new one.
void set_log_sink(LogSink sink, LogLevel level = LogLevel::info);

/// A sink writing "remote_xcomm LEVEL: line" to standard error, for applications that want the
/// lines without writing a sink.
[[nodiscard]] LogSink stderr_log_sink();

}  // namespace rx

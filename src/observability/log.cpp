#include "observability/log.hpp"

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

namespace rx {
namespace detail {

std::atomic<int> log_threshold{-1};

namespace {

// The sink, replaced whole under the mutex; a line copies the pointer and writes outside it, so a
// slow sink holds up no other thread's logging nor set_log_sink.
std::mutex sink_mutex;
std::shared_ptr<const LogSink> current_sink;

}  // namespace

void log(LogLevel level, std::string_view line) noexcept {
  if (!log_enabled(level)) {
    return;
  }
  std::shared_ptr<const LogSink> sink;
  {
    const std::lock_guard lock(sink_mutex);
    sink = current_sink;
  }
  if (!sink) {
    return;
  }
  try {
    (*sink)(level, line);
  } catch (...) {  // a sink's failure must not become the library's
  }
}

}  // namespace detail

std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::error:
      return "error";
    case LogLevel::warning:
      return "warning";
    case LogLevel::info:
      return "info";
    case LogLevel::debug:
      return "debug";
  }
  return "unknown";
}

void set_log_sink(LogSink sink, LogLevel level) {
  std::shared_ptr<const LogSink> next = sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
  const std::lock_guard lock(detail::sink_mutex);
  detail::current_sink.swap(next);
  detail::log_threshold.store(detail::current_sink ? static_cast<int>(level) : -1, std::memory_order_relaxed);
  // The old sink, now in `next`, is destroyed once the lock is released (declared before it).
}

LogSink stderr_log_sink() {
  return [](LogLevel level, std::string_view line) {
    std::string text = "remote_xcomm ";
    text.append(to_string(level)).append(": ").append(line).push_back('\n');
    std::fwrite(text.data(), 1, text.size(), stderr);  // one write: lines of threads do not interleave
  };
}

}  // namespace rx

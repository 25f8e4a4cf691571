// ServerStats for people and for Prometheus.
#include <remote_xcomm/stats.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>

namespace rx {
namespace {

constexpr std::array<std::string_view, 17> STATUS_NAMES = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

// A number as Prometheus and people read it: integers without a fraction, others in the shortest
// form that reads back the same; "+Inf" for infinity.
void append_number(std::string& out, double value) {
  if (std::isinf(value)) {
    out.append(value > 0 ? "+Inf" : "-Inf");
    return;
  }
  if (std::isnan(value)) {
    out.append("NaN");
    return;
  }
  std::array<char, 64> buffer{};
  const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  out.append(buffer.data(), result.ptr);
}

void append_number(std::string& out, std::uint64_t value) {
  std::array<char, 24> buffer{};
  const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  out.append(buffer.data(), result.ptr);
}

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void gauge(std::string& out, std::string_view name, std::string_view help, std::uint64_t value) {
  family(out, name, "gauge", help);
  out.append(name).append(" ");
  append_number(out, value);
  out.append("\n");
}

// A label value in the exposition format: backslash, double quote and newline escaped.
void append_label_value(std::string& out, std::string_view value) {
  for (const char c : value) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
}

// A latency in microseconds, with its unit, for people.
void append_latency(std::string& out, double microseconds) {
  if (std::isinf(microseconds)) {
    out.append("inf");
    return;
  }
  char buffer[32];
  const char* unit = "us";
  double value = microseconds;
  if (value >= 1e6) {
    value /= 1e6;
    unit = "s";
  } else if (value >= 1e3) {
    value /= 1e3;
    unit = "ms";
  }
  const auto result =
      std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::fixed, value < 10 ? 2 : 0);
  out.append(buffer, result.ptr).append(" ").append(unit);
}

void pad(std::string& out, std::size_t line_start, std::size_t column) {
  const std::size_t length = out.size() - line_start;
  out.append(length < column ? column - length : 1, ' ');
}

}  // namespace

std::string status_code_name(int code) {
  if (code >= 0 && static_cast<std::size_t>(code) < STATUS_NAMES.size()) {
    return std::string(STATUS_NAMES[static_cast<std::size_t>(code)]);
  }
  std::string name = "CODE_";
  name.append(std::to_string(code));
  return name;
}

std::uint64_t MethodStats::requests() const noexcept {
  std::uint64_t total = 0;
  for (const std::uint64_t count : by_code) {
    total += count;
  }
  return total;
}

std::uint64_t MethodStats::errors() const noexcept { return requests() - by_code[0]; }

double MethodStats::percentile_us(double q) const noexcept {
  std::uint64_t total = 0;
  for (const LatencyBucket& bucket : latency) {
    total += bucket.count;
  }
  if (total == 0) {
    return 0;
  }
  const double clamped = std::clamp(q, 0.0, 1.0);
  const auto rank =
      std::max<std::uint64_t>(static_cast<std::uint64_t>(std::ceil(clamped * static_cast<double>(total))), 1);
  std::uint64_t seen = 0;
  for (const LatencyBucket& bucket : latency) {
    seen += bucket.count;
    if (seen >= rank) {
      return bucket.upper_bound_us;
    }
  }
  return latency.back().upper_bound_us;
}

const MethodStats* ServerStats::find(std::string_view method) const noexcept {
  for (const MethodStats& entry : methods) {
    if (entry.method == method) {
      return &entry;
    }
  }
  return nullptr;
}

std::string to_prometheus(const ServerStats& stats) {
  std::string out;
  out.reserve(16384);
  gauge(out, "remote_xcomm_endpoints", "Endpoints attached now.", stats.endpoints);
  gauge(out, "remote_xcomm_requests_in_flight", "Requests received and not yet answered (Send and Exchange).",
        stats.requests_in_flight);
  gauge(out, "remote_xcomm_queued_requests", "Requests waiting in the endpoints' queues.", stats.queued_requests);
  family(out, "remote_xcomm_open_streams", "gauge", "Streams open now, by method.");
  out.append("remote_xcomm_open_streams{method=\"Exchange\"} ");
  append_number(out, stats.exchange_streams);
  out.append("\nremote_xcomm_open_streams{method=\"Watch\"} ");
  append_number(out, stats.watch_streams);
  out.append("\n");
  family(out, "remote_xcomm_uptime_seconds", "gauge", "Time since the server started.");
  out.append("remote_xcomm_uptime_seconds ");
  append_number(out, static_cast<double>(stats.uptime.count()) / 1e6);
  out.append("\n");

  family(out, "remote_xcomm_requests_total", "counter",
         "Calls that ended (Exchange: requests), by method and status code.");
  for (const MethodStats& method : stats.methods) {
    for (std::size_t code = 0; code < method.by_code.size(); ++code) {
      if (method.by_code[code] == 0 && code != 0) {
        continue;  // OK always, other codes once seen: the series a dashboard expects exist
      }
      out.append("remote_xcomm_requests_total{method=\"");
      append_label_value(out, method.method);
      out.append("\",code=\"").append(STATUS_NAMES[code]).append("\"} ");
      append_number(out, method.by_code[code]);
      out.append("\n");
    }
  }

  // Powers of two of nanoseconds, from 1.024 us to about 4.6 minutes: the histogram's own bucket
  // bounds, so each count lands exactly.
  constexpr int FIRST_EXPONENT = 10;
  constexpr int LAST_EXPONENT = 38;
  family(out, "remote_xcomm_request_duration_seconds", "histogram",
         "Server-side time from a call's arrival (an Exchange request's read) to its status.");
  for (const MethodStats& method : stats.methods) {
    if (method.method == "Watch") {
      continue;  // a stream has no latency
    }
    std::size_t next = 0;
    std::uint64_t cumulative = 0;
    std::uint64_t total = 0;
    for (const LatencyBucket& bucket : method.latency) {
      total += bucket.count;
    }
    for (int exponent = FIRST_EXPONENT; exponent <= LAST_EXPONENT + 1; ++exponent) {
      const bool last = exponent > LAST_EXPONENT;
      const double bound_us = last ? std::numeric_limits<double>::infinity() : std::ldexp(1.0, exponent) / 1000.0;
      while (next < method.latency.size() && (last || method.latency[next].upper_bound_us <= bound_us * (1 + 1e-12))) {
        cumulative += method.latency[next].count;
        ++next;
      }
      out.append("remote_xcomm_request_duration_seconds_bucket{method=\"");
      append_label_value(out, method.method);
      out.append("\",le=\"");
      append_number(out, last ? bound_us : bound_us / 1e6);
      out.append("\"} ");
      append_number(out, last ? total : cumulative);
      out.append("\n");
    }
    out.append("remote_xcomm_request_duration_seconds_sum{method=\"");
    append_label_value(out, method.method);
    out.append("\"} ");
    append_number(out, method.latency_sum_us / 1e6);
    out.append("\nremote_xcomm_request_duration_seconds_count{method=\"");
    append_label_value(out, method.method);
    out.append("\"} ");
    append_number(out, total);
    out.append("\n");
  }
  return out;
}

std::string to_text(const ServerStats& stats) {
  std::string out;
  const auto line = [&out](std::string_view name, std::uint64_t value) {
    const std::size_t start = out.size();
    out.append(name);
    pad(out, start, 20);
    append_number(out, value);
    out.append("\n");
  };
  line("endpoints", stats.endpoints);
  line("requests in flight", stats.requests_in_flight);
  line("queued requests", stats.queued_requests);
  line("exchange streams", stats.exchange_streams);
  line("watch streams", stats.watch_streams);
  {
    const std::size_t start = out.size();
    out.append("uptime");
    pad(out, start, 20);
    append_latency(out, static_cast<double>(stats.uptime.count()));
    out.append("\n");
  }
  out.append("\n");
  constexpr std::array<std::size_t, 7> COLUMNS = {0, 10, 22, 32, 44, 56, 68};
  const auto header = [&](std::initializer_list<std::string_view> cells) {
    const std::size_t start = out.size();
    std::size_t i = 0;
    for (const std::string_view cell : cells) {
      if (i > 0) {
        pad(out, start, COLUMNS[i]);
      }
      out.append(cell);
      ++i;
    }
    out.append("\n");
  };
  header({"method", "calls", "errors", "p50", "p90", "p99", "p99.9"});
  for (const MethodStats& method : stats.methods) {
    const std::size_t start = out.size();
    out.append(method.method);
    pad(out, start, COLUMNS[1]);
    append_number(out, method.requests());
    pad(out, start, COLUMNS[2]);
    append_number(out, method.errors());
    const std::array<double, 4> quantiles = {0.5, 0.9, 0.99, 0.999};
    for (std::size_t i = 0; i < quantiles.size(); ++i) {
      pad(out, start, COLUMNS[3 + i]);
      if (method.latency.empty()) {
        out.append("-");
      } else {
        append_latency(out, method.percentile_us(quantiles[i]));
      }
    }
    out.append("\n");
    for (std::size_t code = 1; code < method.by_code.size(); ++code) {
      if (method.by_code[code] != 0) {
        out.append("  ").append(STATUS_NAMES[code]).append(" ");
        append_number(out, method.by_code[code]);
        out.append("\n");
      }
    }
  }
  return out;
}

}  // namespace rx

#include "observability/server_metrics.hpp"

#include "xcom/wire.hpp"

#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <bit>
#include <cmath>
#include <limits>

namespace rx::detail {
namespace {

constexpr std::array<std::string_view, METHOD_COUNT> METHOD_NAMES = {"Send",  "Exchange", "Pull", "GetState",
                                                                     "Watch", "List",     "Stats"};

}  // namespace

std::size_t latency_bucket(std::uint64_t nanoseconds) noexcept {
  if (nanoseconds < 4) {
    return static_cast<std::size_t>(nanoseconds);
  }
  const auto octave = static_cast<std::size_t>(std::bit_width(nanoseconds) - 1);  // >= 2
  const auto quarter = static_cast<std::size_t>((nanoseconds >> (octave - 2)) & 3U);
  const std::size_t index = 4 + (octave - 2) * 4 + quarter;
  return index < LATENCY_BUCKETS ? index : LATENCY_BUCKETS - 1;
}

double latency_bucket_upper_bound_ns(std::size_t index) noexcept {
  if (index + 1 >= LATENCY_BUCKETS) {
    return std::numeric_limits<double>::infinity();
  }
  if (index < 4) {
    return static_cast<double>(index + 1);
  }
  const std::size_t octave = (index - 4) / 4 + 2;
  const std::size_t quarter = (index - 4) % 4;
  return std::ldexp(static_cast<double>(5 + quarter), static_cast<int>(octave - 2));
}

ServerMetrics::ServerMetrics() noexcept : started_(std::chrono::steady_clock::now().time_since_epoch().count()) {}

void ServerMetrics::record(Method method, int code, std::chrono::steady_clock::time_point started) noexcept {
  PerMethod& counters = methods_[static_cast<std::size_t>(method)];
  const auto elapsed = std::chrono::steady_clock::now() - started;
  const auto nanoseconds = static_cast<std::uint64_t>(std::max<std::chrono::nanoseconds::rep>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count(), 0));
  counters
      .by_code[static_cast<std::size_t>(code) < STATUS_CODE_COUNT ? static_cast<std::size_t>(code)
                                                                  : std::size_t{2}]  // UNKNOWN
      .fetch_add(1, std::memory_order_relaxed);
  counters.latency[latency_bucket(nanoseconds)].fetch_add(1, std::memory_order_relaxed);
  counters.latency_sum_ns.fetch_add(nanoseconds, std::memory_order_relaxed);
}

void ServerMetrics::record_code(Method method, int code) noexcept {
  PerMethod& counters = methods_[static_cast<std::size_t>(method)];
  counters.by_code[static_cast<std::size_t>(code) < STATUS_CODE_COUNT ? static_cast<std::size_t>(code) : std::size_t{2}]
      .fetch_add(1, std::memory_order_relaxed);
}

void ServerMetrics::snapshot(ServerStats& out) const {
  out.watch_streams =
      static_cast<std::uint64_t>(std::max<std::int64_t>(watch_streams_.load(std::memory_order_relaxed), 0));
  const std::chrono::steady_clock::time_point started(
      std::chrono::steady_clock::duration(started_.load(std::memory_order_relaxed)));
  out.uptime = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
  out.methods.clear();
  out.methods.reserve(METHOD_COUNT);
  for (std::size_t m = 0; m < METHOD_COUNT; ++m) {
    const PerMethod& counters = methods_[m];
    MethodStats& stats = out.methods.emplace_back();
    stats.method = METHOD_NAMES[m];
    for (std::size_t c = 0; c < STATUS_CODE_COUNT; ++c) {
      stats.by_code[c] = counters.by_code[c].load(std::memory_order_relaxed);
    }
    for (std::size_t b = 0; b < LATENCY_BUCKETS; ++b) {
      if (const std::uint64_t count = counters.latency[b].load(std::memory_order_relaxed); count != 0) {
        stats.latency.push_back({latency_bucket_upper_bound_ns(b) / 1000.0, count});
      }
    }
    stats.latency_sum_us = static_cast<double>(counters.latency_sum_ns.load(std::memory_order_relaxed)) / 1000.0;
  }
}

void to_proto(const ServerStats& stats, remote_xcomm::v1::StatsResponse& out) {
  out.set_endpoints(stats.endpoints);
  out.set_requests_in_flight(stats.requests_in_flight);
  out.set_queued_requests(stats.queued_requests);
  out.set_exchange_streams(stats.exchange_streams);
  out.set_watch_streams(stats.watch_streams);
  out.set_uptime_us(static_cast<std::uint64_t>(std::max<std::int64_t>(stats.uptime.count(), 0)));
  for (const MethodStats& method : stats.methods) {
    remote_xcomm::v1::MethodStats& wire = *out.add_methods();
    wire.set_method(method.method);
    for (std::size_t c = 0; c < method.by_code.size(); ++c) {
      if (method.by_code[c] != 0) {
        remote_xcomm::v1::StatusCount& count = *wire.add_statuses();
        count.set_code(static_cast<std::int32_t>(c));
        count.set_count(method.by_code[c]);
      }
    }
    for (const LatencyBucket& bucket : method.latency) {
      remote_xcomm::v1::LatencyBucket& wire_bucket = *wire.add_latency();
      wire_bucket.set_upper_bound_us(bucket.upper_bound_us);
      wire_bucket.set_count(bucket.count);
    }
    wire.set_latency_sum_us(method.latency_sum_us);
  }
}

ServerStats from_proto(const remote_xcomm::v1::StatsResponse& response) {
  ServerStats stats;
  stats.endpoints = response.endpoints();
  stats.requests_in_flight = response.requests_in_flight();
  stats.queued_requests = response.queued_requests();
  stats.exchange_streams = response.exchange_streams();
  stats.watch_streams = response.watch_streams();
  stats.uptime = std::chrono::microseconds(static_cast<std::int64_t>(
      std::min<std::uint64_t>(response.uptime_us(), std::numeric_limits<std::int64_t>::max())));
  stats.methods.reserve(static_cast<std::size_t>(response.methods_size()));
  for (const remote_xcomm::v1::MethodStats& wire : response.methods()) {
    MethodStats& method = stats.methods.emplace_back();
    method.method = wire.method();
    for (const remote_xcomm::v1::StatusCount& count : wire.statuses()) {
      // A code this client does not know (a newer gRPC's) counts as UNKNOWN, as gRPC maps it.
      const std::size_t code = count.code() >= 0 && static_cast<std::size_t>(count.code()) < method.by_code.size()
                                   ? static_cast<std::size_t>(count.code())
                                   : std::size_t{2};
      method.by_code[code] += count.count();
    }
    method.latency.reserve(static_cast<std::size_t>(wire.latency_size()));
    for (const remote_xcomm::v1::LatencyBucket& bucket : wire.latency()) {
      method.latency.push_back({bucket.upper_bound_us(), bucket.count()});
    }
    method.latency_sum_us = wire.latency_sum_us();
  }
  return stats;
}

void to_proto(const EndpointInfo& info, remote_xcomm::v1::EndpointInfo& out) {
  to_proto(info.state, *out.mutable_state());
  out.set_queued_requests(info.queued_requests);
  out.set_holding_request(info.holding_request);
}

EndpointInfo from_proto(const remote_xcomm::v1::EndpointInfo& info, bool* known) {
  EndpointInfo out;
  out.state = from_proto(info.state(), known);
  out.queued_requests = info.queued_requests();
  out.holding_request = info.holding_request();
  return out;
}

}  // namespace rx::detail

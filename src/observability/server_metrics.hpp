// The server's counters: calls by method and status code, and a latency histogram per method.
// Internal. Recording costs a clock read and three relaxed atomic adds, no lock and no allocation:
// it runs on the hot path of every Send.
#pragma once

#include <remote_xcomm/stats.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace rx::detail {

/// The methods of the service, in its order (ServerStats::methods follows it).
enum class Method : std::uint8_t { send, exchange, pull, get_state, watch, list, stats };
inline constexpr std::size_t METHOD_COUNT = 7;
inline constexpr std::size_t STATUS_CODE_COUNT = 17;

/// Latency buckets: 4 per power of two of nanoseconds (a quarter-octave, at most 19% wide), from
/// 1 ns up to 2^38 ns (about 4.6 minutes); longer ones fall in the last bucket, whose bound is
/// infinite.
inline constexpr std::size_t LATENCY_BUCKETS = 4 + 4 * 37;

/// The bucket of a latency of `nanoseconds` (cheap: a bit scan and two shifts).
[[nodiscard]] std::size_t latency_bucket(std::uint64_t nanoseconds) noexcept;
/// The exclusive upper bound of bucket `index`, in nanoseconds; infinity for the last.
[[nodiscard]] double latency_bucket_upper_bound_ns(std::size_t index) noexcept;

class ServerMetrics {
 public:
  ServerMetrics() noexcept;

  /// A call (or an Exchange request) of `method` that arrived at `started` ended with `code`.
  /// Any thread.
  void record(Method method, int code, std::chrono::steady_clock::time_point started) noexcept;
  /// As above, without a latency (streams).
  void record_code(Method method, int code) noexcept;

  /// Uptime counts from here (Server::start); from construction until then.
  void mark_started() noexcept {
    started_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }

  void watch_opened() noexcept { watch_streams_.fetch_add(1, std::memory_order_relaxed); }
  void watch_closed() noexcept { watch_streams_.fetch_sub(1, std::memory_order_relaxed); }

  /// The counters into `out` (methods, watch_streams and uptime; the caller fills the rest).
  void snapshot(ServerStats& out) const;

 private:
  // One cache line apart, so that calls of different methods do not share lines.
  struct alignas(64) PerMethod {
    std::array<std::atomic<std::uint64_t>, STATUS_CODE_COUNT> by_code{};
    std::array<std::atomic<std::uint64_t>, LATENCY_BUCKETS> latency{};
    std::atomic<std::uint64_t> latency_sum_ns{0};
  };

  std::array<PerMethod, METHOD_COUNT> methods_;
  std::atomic<std::int64_t> watch_streams_{0};
  std::atomic<std::chrono::steady_clock::rep> started_;
};

/// ServerStats to its wire message and back.
}  // namespace rx::detail

namespace remote_xcomm::v1 {
class StatsResponse;
class EndpointInfo;
}  // namespace remote_xcomm::v1

namespace rx::detail {
void to_proto(const ServerStats& stats, remote_xcomm::v1::StatsResponse& out);
[[nodiscard]] ServerStats from_proto(const remote_xcomm::v1::StatsResponse& response);
void to_proto(const EndpointInfo& info, remote_xcomm::v1::EndpointInfo& out);
[[nodiscard]] EndpointInfo from_proto(const remote_xcomm::v1::EndpointInfo& info, bool* known = nullptr);
}  // namespace rx::detail

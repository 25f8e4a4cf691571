// What a server reports about itself: its counters (Stats) and its endpoints (List).
#pragma once

#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/xcom.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rx {

/// One bucket of a latency histogram: `count` calls took more than the previous bucket's bound
/// and at most `upper_bound_us` microseconds.
struct LatencyBucket {
  /// The bucket's upper bound, in microseconds (inclusive).
  double upper_bound_us = 0;
  /// Calls whose latency fell in this bucket.
  std::uint64_t count = 0;
};

/// The counters of one method of the `remote_xcomm.v1.RemoteXComm` service.
struct MethodStats {
  /// "Send", "Exchange" (counted per request frame, not per stream), "Pull", "GetState", "Watch",
  /// "List" or "Stats".
  std::string method;
  /// Calls that ended, by status code: `by_code[c]` counts grpc::StatusCode `c` (0 is OK).
  std::array<std::uint64_t, 17> by_code{};
  /// Server-side latency from a call's arrival (an Exchange frame's read) to its status: the
  /// buckets that counted something, ascending. Empty for Watch (a stream has no latency).
  std::vector<LatencyBucket> latency;
  /// The sum of the latencies, in microseconds.
  double latency_sum_us = 0;

  /// Calls that ended, any status.
  [[nodiscard]] std::uint64_t requests() const noexcept;
  /// Calls that ended with a status other than OK.
  [[nodiscard]] std::uint64_t errors() const noexcept;
  /// The latency under which a fraction `q` (0 to 1) of the calls ended, in microseconds: the
  /// upper bound of the bucket holding that rank (the histogram's buckets are a quarter of a
  /// power of two wide, so this overstates by at most 19%). 0 when nothing was counted.
  [[nodiscard]] double percentile_us(double q) const noexcept;
};

/// A snapshot of a server's counters (rx::Server::stats(), rx::Client::stats(), the `Stats` RPC).
struct ServerStats {
  /// Endpoints attached now.
  std::uint64_t endpoints = 0;
  /// Requests received and not yet answered, over Send and every Exchange stream.
  std::uint64_t requests_in_flight = 0;
  /// Requests waiting in the endpoints' queues, summed (a task's held request not counted).
  std::uint64_t queued_requests = 0;
  /// Exchange streams open now.
  std::uint64_t exchange_streams = 0;
  /// Watch streams open now.
  std::uint64_t watch_streams = 0;
  /// Time since the server started.
  std::chrono::microseconds uptime{0};
  /// One entry per method, in the service's order (Send, Exchange, Pull, GetState, Watch, List,
  /// Stats), each present even when it counted nothing.
  std::vector<MethodStats> methods;

  /// The entry of `method`, or null.
  [[nodiscard]] const MethodStats* find(std::string_view method) const noexcept;
};

/// `stats` in the Prometheus text exposition format (version 0.0.4): metric families prefixed
/// `remote_xcomm_`, with `# HELP` and `# TYPE` lines: gauges for the current values, counters of
/// calls by `method` and `code` (the status's name, "OK", "NOT_FOUND", ...), and a histogram of
/// latencies in seconds by `method` (buckets at powers of two microseconds, then `+Inf`).
[[nodiscard]] std::string to_prometheus(const ServerStats& stats);

/// `stats` as text for people: the gauges, then a line per method with its calls, errors by
/// status name and latency percentiles (p50, p90, p99, p99.9).
[[nodiscard]] std::string to_text(const ServerStats& stats);

/// The name of a gRPC status code, as gRPC spells it ("OK", "DEADLINE_EXCEEDED", ...);
/// "CODE_<n>" for a value outside 0 to 16.
[[nodiscard]] std::string status_code_name(int code);

/// What to list (rx::Client::list, the `List` RPC): every filter that is not empty must match
/// exactly.
struct ListQuery {
  /// Only endpoints of this DAG; empty: any.
  std::string dag_id;
  /// Only endpoints of this DAG run; empty: any.
  std::string run_id;
  /// Only endpoints of this task (every map index); empty: any.
  std::string task_id;
  /// Most endpoints in one page: 0 means the server's default (1,000); the server caps it at
  /// 10,000.
  std::uint32_t page_size = 0;
  /// Empty for the first page, else the previous page's `next_page_token`.
  std::string page_token;
  /// The call's deadline, measured from when it starts; std::nullopt: none.
  std::optional<std::chrono::milliseconds> timeout{std::chrono::seconds(30)};
};

/// One hosted endpoint, as `List` reports it.
struct EndpointInfo {
  /// Its key and state, as get_state reports them; `since` is the epoch for an endpoint that has
  /// not changed state since it was attached.
  TaskStateInfo state;
  /// Requests waiting in its queue (not counting the one the task holds).
  std::uint64_t queued_requests = 0;
  /// Whether its task holds a request.
  bool holding_request = false;
};

/// One page of a `List`.
struct EndpointPage {
  /// Ordered by dag_id, run_id, task_id, then map_index.
  std::vector<EndpointInfo> endpoints;
  /// Not empty when more endpoints match: the ListQuery::page_token of the next page.
  std::string next_page_token;
  /// How many endpoints match, over every page.
  std::uint64_t total_matching = 0;
};

}  // namespace rx

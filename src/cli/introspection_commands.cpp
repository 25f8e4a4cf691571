// rxcomm list and rxcomm stats: the hosted endpoints and the server's counters (the List and
// Stats RPCs).
#include "commands.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/stats.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/use_future.hpp>
#include <boost/json/serialize.hpp>

#include <cstdint>
#include <iostream>
#include <limits>
#include <memory>
#include <string>

namespace rxcomm {

namespace {

// ---- list -----------------------------------------------------------------------------------------

struct ListOptions {
  TargetOptions target;
  std::string dag_id;
  std::string run_id;
  std::string task_id;
  std::uint32_t page_size = 0;
  std::uint64_t limit = 0;
};

boost::json::object endpoint_record(const rx::EndpointInfo& endpoint) {
  const rx::TaskStateInfo& state = endpoint.state;
  boost::json::object record;
  record["dag_id"] = state.task_instance.dag_id;
  record["task_id"] = state.task_instance.task_id;
  record["run_id"] = state.task_instance.run_id;
  record["map_index"] = state.task_instance.map_index;
  record["state"] = std::string(rx::to_string(state.state));
  record["attempt"] = state.attempt;
  record["since"] = iso_time(state.since);
  record["queued_requests"] = endpoint.queued_requests;
  record["holding_request"] = endpoint.holding_request;
  if (!state.message.empty()) {
    record["message"] = state.message;
  }
  return record;
}

// One JSON line per endpoint, following the pages until the last (or --limit endpoints).
int run_list(const ListOptions& options) {
  rx::ListQuery query;
  query.dag_id = options.dag_id;
  query.run_id = options.run_id;
  query.task_id = options.task_id;
  query.page_size = options.page_size;
  query.timeout = options.target.timeout();
  const std::uint64_t limit = options.limit == 0 ? std::numeric_limits<std::uint64_t>::max() : options.limit;

  LoopThread thread;
  rx::Client client(thread.loop(), options.target.client_options());
  std::uint64_t printed = 0;
  for (;;) {
    auto [status, page] = client.list(options.target.target, query, boost::asio::use_future).get();
    if (!status.ok()) {
      std::cout.flush();
      return report_status(status);
    }
    for (const rx::EndpointInfo& endpoint : page.endpoints) {
      if (printed == limit) {
        break;
      }
      std::cout << boost::json::serialize(endpoint_record(endpoint)) << '\n';
      ++printed;
    }
    if (page.next_page_token.empty() || printed == limit) {
      break;
    }
    query.page_token = std::move(page.next_page_token);
  }
  std::cout.flush();
  return EXIT_OK;
}

// ---- stats ----------------------------------------------------------------------------------------

struct StatsCommandOptions {
  TargetOptions target;
  std::string format = "text";
};

boost::json::object stats_record(const rx::ServerStats& stats) {
  boost::json::object record;
  record["endpoints"] = stats.endpoints;
  record["requests_in_flight"] = stats.requests_in_flight;
  record["queued_requests"] = stats.queued_requests;
  record["exchange_streams"] = stats.exchange_streams;
  record["watch_streams"] = stats.watch_streams;
  record["uptime_seconds"] = static_cast<double>(stats.uptime.count()) / 1e6;
  boost::json::object methods;
  for (const rx::MethodStats& method : stats.methods) {
    boost::json::object entry;
    entry["requests"] = method.requests();
    entry["errors"] = method.errors();
    boost::json::object by_code;
    for (std::size_t code = 0; code < method.by_code.size(); ++code) {
      if (method.by_code[code] != 0) {
        by_code[rx::status_code_name(static_cast<int>(code))] = method.by_code[code];
      }
    }
    entry["by_code"] = std::move(by_code);
    if (!method.latency.empty()) {
      boost::json::object percentiles;
      percentiles["p50"] = method.percentile_us(0.50);
      percentiles["p90"] = method.percentile_us(0.90);
      percentiles["p99"] = method.percentile_us(0.99);
      percentiles["p999"] = method.percentile_us(0.999);
      entry["latency_us"] = std::move(percentiles);
    }
    methods[method.method] = std::move(entry);
  }
  record["methods"] = std::move(methods);
  return record;
}

int run_stats(const StatsCommandOptions& options) {
  rx::StatsOptions stats_options;
  stats_options.timeout = options.target.timeout();
  stats_options.wait_for_ready = options.target.wait_for_ready;

  LoopThread thread;
  rx::Client client(thread.loop(), options.target.client_options());
  auto [status, stats] = client.stats(options.target.target, stats_options, boost::asio::use_future).get();
  if (!status.ok()) {
    return report_status(status);
  }
  if (options.format == "prometheus") {
    std::cout << rx::to_prometheus(stats);
  } else if (options.format == "json") {
    std::cout << boost::json::serialize(stats_record(stats)) << '\n';
  } else {
    std::cout << rx::to_text(stats);
  }
  std::cout.flush();
  return EXIT_OK;
}

}  // namespace

Command add_list_command(CLI::App& app) {
  auto options = std::make_shared<ListOptions>();
  CLI::App* list = app.add_subcommand("list", "list the endpoints a server hosts, with their states (JSON lines)");
  list->footer(
      "Examples:\n"
      "  rxcomm list -t 127.0.0.1:8081\n"
      "  rxcomm list -t 127.0.0.1:8081 --dag etl --run r1 --limit 10");
  options->target.add_to(*list, true, false);
  list->add_option("--dag", options->dag_id, "only endpoints of this DAG");
  list->add_option("--run", options->run_id, "only endpoints of this DAG run");
  list->add_option("--task", options->task_id, "only endpoints of this task (every map index)");
  list->add_option("--page-size", options->page_size,
                   "endpoints asked for per List call (0: the server's default, 1,000; it caps at 10,000)");
  list->add_option("--limit", options->limit, "stop after this many endpoints (0: all)");
  return {list, [options] { return run_list(*options); }};
}

Command add_stats_command(CLI::App& app) {
  auto options = std::make_shared<StatsCommandOptions>();
  CLI::App* stats = app.add_subcommand("stats", "print a server's counters: requests, errors, latency, queues");
  stats->footer(
      "Examples:\n"
      "  rxcomm stats -t 127.0.0.1:8081\n"
      "  rxcomm stats -t 127.0.0.1:8081 --format prometheus > metrics.prom");
  options->target.add_to(*stats);
  stats->add_option("--format", options->format, "text (for people), prometheus (the text exposition format) or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "prometheus", "json"}));
  return {stats, [options] { return run_stats(*options); }};
}

}  // namespace rxcomm

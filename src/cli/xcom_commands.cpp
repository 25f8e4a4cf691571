// rxcomm pull and rxcomm watch: a task instance's XComs, once or as they change.
#include "commands.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/watch.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/serialize.hpp>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <iostream>
#include <limits>
#include <memory>
#include <string>

namespace rxcomm {

namespace {

void put_key(boost::json::object& object, const rx::TaskInstanceKey& key) {
  object["dag_id"] = key.dag_id;
  object["task_id"] = key.task_id;
  object["run_id"] = key.run_id;
  object["map_index"] = key.map_index;
}

boost::json::object xcom_record(const rx::XCom& xcom, const char* kind = nullptr) {
  boost::json::object record;
  if (kind != nullptr) {
    record["kind"] = kind;  // first, for readers scanning the lines
  }
  put_key(record, xcom.task_instance);
  record["key"] = xcom.key;
  record["value"] = value_of(xcom.value_json);
  record["attempt"] = xcom.attempt;
  record["sequence"] = xcom.sequence;
  record["timestamp"] = iso_time(xcom.timestamp);
  return record;
}

boost::json::object event_record(const rx::WatchEvent& event) {
  if (event.kind == rx::WatchEvent::Kind::xcom) {
    return xcom_record(event.xcom, "xcom");
  }
  boost::json::object record;
  record["kind"] = event.kind == rx::WatchEvent::Kind::state ? "state" : "cleared";
  put_key(record, event.state.task_instance);
  record["state"] = std::string(rx::to_string(event.state.state));
  record["attempt"] = event.state.attempt;
  record["sequence"] = event.sequence;
  record["since"] = iso_time(event.state.since);
  if (!event.state.message.empty()) {
    record["message"] = event.state.message;
  }
  return record;
}

// ---- pull -----------------------------------------------------------------------------------------

struct PullOptions {
  TargetOptions target;
  KeyOptions key;
  std::string xcom_key = std::string(rx::return_value_key);
  bool all_map_indexes = false;
  bool wait = false;
  std::size_t min_count = 1;
  bool with_meta = false;
};

int run_pull(const PullOptions& options) {
  rx::XComQuery query;
  query.dag_id = options.key.dag_id;
  query.run_id = options.key.run_id;
  query.task_id = options.key.task_id;
  query.map_index = options.key.map_index;
  query.key = options.xcom_key;
  query.all_map_indexes = options.all_map_indexes;
  query.wait = options.wait;
  query.min_count = options.min_count;
  query.timeout = options.target.timeout();

  LoopThread thread;
  rx::Client client(thread.loop(), options.target.client_options());
  auto [status, xcoms] = client.pull(options.target.target, query, boost::asio::use_future).get();
  if (!status.ok()) {
    return report_status(status);
  }
  for (const rx::XCom& xcom : xcoms) {
    if (options.with_meta) {
      std::cout << boost::json::serialize(xcom_record(xcom)) << '\n';
    } else {
      std::cout << boost::json::serialize(value_of(xcom.value_json)) << '\n';
    }
  }
  std::cout.flush();
  return EXIT_OK;
}

// ---- watch ----------------------------------------------------------------------------------------

struct WatchOptions {
  TargetOptions target;
  std::string dag_id = "rxcomm";
  std::string run_id = "demo";
  std::string task_id;
  int map_index = -1;
  bool all_map_indexes = false;
  bool from_start = false;
  std::uint64_t after_sequence = 0;
  std::uint64_t count = 0;
};

int run_watch(const WatchOptions& options) {
  rx::WatchQuery query;
  query.dag_id = options.dag_id;
  query.run_id = options.run_id;
  query.task_id = options.task_id;
  query.map_index = options.map_index;
  query.all_map_indexes = options.all_map_indexes;
  query.from_start = options.from_start;
  query.after_sequence = options.after_sequence;

  LoopThread thread;
  rx::Client client(thread.loop(), options.target.client_options());
  rx::Watch watch = client.watch(options.target.target, query);
  std::atomic<bool> interrupted{false};
  {
    // Declared after the watch, so destroyed (and cancelled) before it.
    boost::asio::signal_set signals(thread.context(), SIGINT, SIGTERM);
    signals.async_wait([&watch, &interrupted](const boost::system::error_code& error, int /*signal_number*/) {
      if (!error) {
        interrupted = true;
        watch.cancel();
      }
    });
    for (std::uint64_t seen = 0; options.count == 0 || seen < options.count; ++seen) {
      auto [status, event] = watch.next(boost::asio::use_future).get();
      if (!status.ok()) {
        if (interrupted && status.error_code() == grpc::StatusCode::CANCELLED) {
          break;  // Ctrl-C: the end the user asked for
        }
        std::cerr << "rxcomm watch: resume after sequence " << watch.last_sequence() << " with --after-sequence"
                  << std::endl;
        return report_status(status);
      }
      std::cout << boost::json::serialize(event_record(event)) << std::endl;
    }
    signals.cancel();
  }
  return EXIT_OK;
}

}  // namespace

Command add_pull_command(CLI::App& app) {
  auto options = std::make_shared<PullOptions>();
  CLI::App* pull = app.add_subcommand("pull", "pull an XCom of a task instance, waiting for it if asked");
  pull->footer(
      "Prints the XCom's value as one JSON line (one line per map index with --all-map-indexes; --with-meta prints "
      "records with the key, attempt, sequence and timestamp). --timeout bounds the call, and so the wait.\n"
      "Example:\n"
      "  rxcomm pull -t 127.0.0.1:8081 --task echo-0 --key served --wait --timeout 60");
  options->target.add_to(*pull, true, false);
  options->key.add_to(*pull, true);
  pull->add_option("-k,--key", options->xcom_key, "the XCom's key")->capture_default_str();
  pull->add_flag("--all-map-indexes", options->all_map_indexes,
                 "every map index of the task that has the key, in map-index order");
  pull->add_flag("-w,--wait", options->wait, "wait until the XCom exists instead of failing with NotFound");
  pull->add_option("--min-count", options->min_count,
                   "with --wait and --all-map-indexes: wait for at least this many map indexes")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  pull->add_flag("--with-meta", options->with_meta, "print whole records, not just the values");
  return {pull, [options] { return run_pull(*options); }};
}

Command add_watch_command(CLI::App& app) {
  auto options = std::make_shared<WatchOptions>();
  CLI::App* watch = app.add_subcommand("watch", "print a DAG run's XCom pushes and state changes as JSON lines");
  watch->footer(
      "Runs until Ctrl-C (exit 0) or --count events; a stream the server ends exits with its status, and says which "
      "sequence to resume after.\n"
      "Example:\n"
      "  rxcomm watch -t 127.0.0.1:8081 --dag rxcomm --run demo --from-start --count 10");
  options->target.add_to(*watch, false);
  watch->add_option("--dag", options->dag_id, "the DAG run's dag_id")->capture_default_str();
  watch->add_option("--run", options->run_id, "the DAG run's run_id")->capture_default_str();
  watch->add_option("--task", options->task_id, "only this task (default: every task of the run)");
  watch->add_option("--map-index", options->map_index, "with --task: only this map index")
      ->capture_default_str()
      ->check(CLI::Range(-1, std::numeric_limits<int>::max()));
  watch->add_flag("--all-map-indexes", options->all_map_indexes, "with --task: every map index");
  watch->add_flag("--from-start", options->from_start, "replay the events the server retains first");
  watch->add_option("--after-sequence", options->after_sequence, "resume after this sequence number");
  watch->add_option("-c,--count", options->count, "stop after this many events (0: until Ctrl-C)")
      ->capture_default_str();
  return {watch, [options] { return run_watch(*options); }};
}

}  // namespace rxcomm

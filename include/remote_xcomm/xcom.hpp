// XComs as Airflow knows them: named JSON values a task instance records, its state, and where
// they are kept (docs/xcoms.md).
#pragma once

#include <remote_xcomm/task_instance_key.hpp>

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rx {

/// The key a task's reply is recorded under, as Airflow records a task's return value.
inline constexpr std::string_view return_value_key = "return_value";

/// What a task instance is doing, as its endpoint sees it (docs/endpoints.md, "Task-instance
/// state"). The values are the wire's `remote_xcomm.v1.TaskState`.
enum class TaskState : int {
  /// Attached, holding no request.
  idle = 1,
  /// The task holds a request (took it with get() or next()) and has not answered it yet.
  running = 2,
  /// The task answered its last request.
  success = 3,
  /// The task threw, ended without pushing, or dropped or failed the request it held.
  failed = 4,
  /// The endpoint was detached or its server shut down; its XComs stay for the retention time.
  detached = 5,
};

/// "idle", "running", "success", "failed" or "detached".
[[nodiscard]] std::string_view to_string(TaskState state) noexcept;

/// One recorded XCom.
struct XCom {
  /// The task instance that pushed it.
  TaskInstanceKey task_instance;
  /// Its key: the name given to xcom_push, or rx::return_value_key for a task's reply.
  std::string key;
  /// The value as JSON text (any JSON value: an object, a number, a string, ...).
  std::string value_json;
  /// The task instance's attempt that pushed it, from 1 (docs/xcoms.md, "Attempts").
  std::uint32_t attempt = 0;
  /// Position in the server's event order (pushes and state changes), from 1.
  std::uint64_t sequence = 0;
  /// When it was pushed (the server's clock).
  std::chrono::system_clock::time_point timestamp;
};

/// A task instance's state, and when it entered it.
struct TaskStateInfo {
  /// The task instance this is the state of.
  TaskInstanceKey task_instance;
  /// Its state.
  TaskState state = TaskState::idle;
  /// When it entered `state` (the server's clock). An endpoint that has not served yet reports
  /// `idle` since it was first asked about.
  std::chrono::system_clock::time_point since;
  /// The attempt the state belongs to, from 1 (docs/xcoms.md, "Attempts").
  std::uint32_t attempt = 0;
  /// For TaskState::failed: the status message the caller got. Empty otherwise.
  std::string message;
  /// The sequence number of the change; 0 before the first change after attach.
  std::uint64_t sequence = 0;
};

/// What to pull: one key of one task instance, or of every map index of a mapped task.
struct XComQuery {
  /// The DAG of the task instance to pull from. In task code (Endpoint::xcom_pull), empty means
  /// the pulling task's own; a Client's pull needs it.
  std::string dag_id;
  /// The DAG run of the task instance to pull from; empty as for `dag_id`.
  std::string run_id;
  /// The task to pull from. Required: empty is refused (INVALID_ARGUMENT, errc::invalid_xcom).
  std::string task_id;
  /// The XCom's key.
  std::string key = std::string(return_value_key);
  /// The task instance's map index; -1 for a task that is not mapped. Ignored with
  /// `all_map_indexes`.
  int map_index = -1;
  /// Every map index that has the key, in map-index order (gaps left out).
  bool all_map_indexes = false;
  /// Wait until the key exists instead of failing at once (NOT_FOUND, errc::xcom_not_found).
  bool wait = false;
  /// With `wait` and `all_map_indexes`: wait until at least this many map indexes have the key.
  std::size_t min_count = 1;
  /// How long to wait (with `wait`); none: until cancelled. Past it the pull fails with
  /// DEADLINE_EXCEEDED (client) or errc::xcom_wait_timed_out (task code).
  std::optional<std::chrono::milliseconds> timeout = std::chrono::seconds(30);
};

/// One change a Watch reports.
struct WatchEvent {
  /// Which change the event reports, and so which of `xcom` and `state` it fills.
  enum class Kind {
    /// An XCom was pushed (`xcom`).
    xcom,
    /// The task instance changed state (`state`).
    state,
    /// A new attempt began and cleared the earlier attempts' XComs (`state` carries the attempt).
    cleared,
  };
  /// Which change this is.
  Kind kind = Kind::xcom;
  /// Position of the event in the server's event order, from 1: resume after it with
  /// WatchQuery::after_sequence.
  std::uint64_t sequence = 0;
  /// For Kind::xcom: the XCom pushed. Default-constructed otherwise.
  XCom xcom;
  /// For Kind::state: the new state. For Kind::cleared: the task instance as the clearing found
  /// it, with the new attempt in `attempt`. Default-constructed for Kind::xcom.
  TaskStateInfo state;
};

/// What a Watch follows: a DAG run, one task of it (every map index, or one), from now, from the
/// start of what is retained, or resuming after the last sequence number seen.
struct WatchQuery {
  /// The DAG of the run to watch. Required: a watch without it ends with INVALID_ARGUMENT.
  std::string dag_id;
  /// The DAG run to watch. Required, as `dag_id`.
  std::string run_id;
  /// Empty: every task of the run.
  std::string task_id;
  /// With `task_id`: the map index to watch, unless `all_map_indexes`.
  int map_index = -1;
  /// With `task_id`: every map index of the task; `map_index` is then ignored.
  bool all_map_indexes = false;
  /// Replay the retained events that match before the new ones.
  bool from_start = false;
  /// Resume after this sequence number (the last one seen); 0: not resuming.
  std::uint64_t after_sequence = 0;
};

/// Where a server writes its XComs so that they outlive it (ServerOptions::xcom_store). The server
/// keeps every retained XCom in memory, which is what Pull and Watch read; a store holds a copy
/// that a later server, given the same store, loads when it starts. Two implementations:
/// rx::make_memory_store() (outlives a Server, not the process) and rx::open_sqlite_store()
/// (outlives the process: a push acknowledged is on disk).
///
/// Thread safety: `write` is called on the server's loop and must not block it; `done` may run on
/// any thread (the server moves it to its loop). `load` is called by Server::start().
class XComStore {
 public:
  /// One change to write: put an XCom (replacing the one with the same task instance and key), or
  /// erase every XCom of a task instance (`xcom.task_instance`; a new attempt, or retention).
  struct Change {
    /// What to do with `xcom`.
    enum class Kind {
      /// Write `xcom`, replacing the stored one with the same task instance and key.
      put,
      /// Erase every stored XCom of `xcom.task_instance` (the rest of `xcom` is unused).
      erase_task_instance,
    };
    /// What this change does.
    Kind kind = Kind::put;
    /// The XCom to put, or for Kind::erase_task_instance the task instance to erase.
    XCom xcom;
  };
  /// Called once the changes are durable (or failed to be): an empty error code, or why not.
  using WriteDone = std::function<void(boost::system::error_code)>;

  virtual ~XComStore() = default;

  /// Every XCom kept, for a server that starts. Throws std::runtime_error if the store cannot be read.
  [[nodiscard]] virtual std::vector<XCom> load() = 0;
  /// Writes `changes` in order and calls `done` once they are durable. Never blocks: a store that
  /// writes to disk queues the changes for a writer of its own, which commits them in groups.
  virtual void write(std::vector<Change> changes, WriteDone done) = 0;
};

/// A store in this process's memory: XComs survive a Server being destroyed and another started
/// with the same store, not the process. Writes complete at once.
[[nodiscard]] std::shared_ptr<XComStore> make_memory_store();

/// Options of rx::open_sqlite_store.
struct SqliteStoreOptions {
  /// SQLite's `synchronous` setting in WAL mode. false (NORMAL): a committed push survives the
  /// process being killed (kill -9), not the machine losing power. true (FULL): it survives both,
  /// at the cost of an fsync per group commit.
  bool sync_every_commit = false;
  /// Most changes committed in one transaction (one group).
  std::size_t max_group_changes = 8192;
};

/// A store in an SQLite database at `path` (created if missing), in WAL mode, written by a thread
/// of its own that commits queued changes in groups: a push completes once its group is committed.
/// Throws std::runtime_error (with SQLite's message) if the database cannot be opened.
[[nodiscard]] std::shared_ptr<XComStore> open_sqlite_store(const std::string& path, SqliteStoreOptions options = {});

}  // namespace rx

// The server's XComs and task-instance states, on the loop: records by task instance, waiting
// pulls, Watch subscribers, the event history, retention and the store's copy. Internal.
#pragma once

#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>
#include <remote_xcomm/xcom.hpp>

#include <atomic>
#include <boost/system/error_code.hpp>
#include <grpcpp/support/status.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rx::detail {

struct XComTableOptions {
  std::chrono::milliseconds retention{std::chrono::hours(1)};
  std::size_t max_bytes = std::size_t{256} << 20;
  std::size_t history_events = 65'536;
  std::size_t history_bytes = std::size_t{64} << 20;
  std::size_t watch_buffer_events = 4096;
  std::shared_ptr<XComStore> store;
  // The largest message the server sends (ServerOptions::max_message_bytes): a Pull reply or a
  // Watch message over it is refused with a status naming the limit, not left to gRPC.
  std::size_t max_message_bytes = std::size_t{4} << 20;
};

/// One change (an XCom pushed, a state entered, an attempt's XComs cleared), made once and shared
/// by the history and every subscriber it is queued for.
struct XComEvent {
  std::uint64_t sequence = 0;
  WatchEvent::Kind kind = WatchEvent::Kind::xcom;
  std::shared_ptr<const TaskInstanceKey> task_instance;
  std::uint32_t attempt = 0;
  std::int64_t timestamp_us = 0;
  TaskState state = TaskState::idle;         // state, cleared
  std::string text;                          // xcom: its key; state: the failure message
  std::shared_ptr<const std::string> value;  // xcom: its JSON text

  [[nodiscard]] std::size_t bytes() const noexcept;
  void to_proto(remote_xcomm::v1::WatchEvent& out) const;
};
using XComEventPtr = std::shared_ptr<const XComEvent>;

/// One XCom as the table keeps it; the value is shared with the events that carry it.
struct StoredXCom {
  std::shared_ptr<const std::string> value;
  std::uint64_t sequence = 0;
  std::int64_t timestamp_us = 0;
};

/// One task instance: its attempt, state and XComs. Attached while its endpoint is; once
/// detached it is kept until its retention passes (or it is evicted).
struct TaskRecord {
  std::shared_ptr<const TaskInstanceKey> key;
  std::uint32_t attempt = 1;
  TaskState state = TaskState::idle;
  std::int64_t since_us = 0;
  std::uint64_t state_sequence = 0;
  std::string message;
  std::map<std::string, StoredXCom, std::less<>> xcoms;
  std::size_t bytes = 0;  // of its XComs, counted against XComTableOptions::max_bytes
  bool attached = false;
  std::chrono::steady_clock::time_point expires;  // once detached
  std::list<TaskRecord*>::iterator detached_position;
};

/// A pull waiting for its XComs: a Pull call, or a task's xcom_pull. Owned by its maker, which
/// unregisters it (cancel_wait) before it goes; the table unregisters it before calling it.
class XComWaiter {
 public:
  explicit XComWaiter(XComQuery query) : query_(std::move(query)) {}
  [[nodiscard]] const XComQuery& query() const noexcept { return query_; }
  /// The XComs it waited for (once); or the table closing (server shutdown).
  virtual void on_ready(std::vector<XCom> xcoms) = 0;
  virtual void on_closed(const grpc::Status& status) = 0;

 protected:
  virtual ~XComWaiter() = default;

 private:
  friend class XComTable;
  XComQuery query_;
  std::string index_key_;
  bool registered_ = false;
};

/// A Watch subscriber. The table calls it for every matching event, in sequence order.
class XComSubscriber {
 public:
  explicit XComSubscriber(WatchQuery query) : query_(std::move(query)) {}
  [[nodiscard]] const WatchQuery& query() const noexcept { return query_; }
  /// False: the subscriber ended (fell behind); the table forgets it without calling it again.
  virtual bool on_event(const XComEventPtr& event) = 0;
  /// The table is closing (server shutdown): the subscriber is forgotten.
  virtual void on_closed(const grpc::Status& status) = 0;

 protected:
  virtual ~XComSubscriber() = default;

 private:
  friend class XComTable;
  WatchQuery query_;
  bool registered_ = false;
};

/// The table. Every member runs on the loop, one thread at a time.
class XComTable : public std::enable_shared_from_this<XComTable> {
 public:
  using PutDone = std::function<void(boost::system::error_code)>;

  XComTable(LoopExecutor executor, XComTableOptions options);
  XComTable(const XComTable&) = delete;
  XComTable& operator=(const XComTable&) = delete;

  [[nodiscard]] const XComTableOptions& options() const noexcept { return options_; }
  /// Whether puts are acknowledged only once a store made them durable.
  [[nodiscard]] bool durable() const noexcept { return options_.store != nullptr; }

  /// Loads the store's XComs (Server::start): each task instance detached as of now.
  void load();

  /// The endpoint at `key` was attached: its record (a new attempt clears the XComs of the earlier
  /// ones; `try_number` equal to the kept attempt resumes it). Null if nothing is kept for `key`
  /// and no try_number was given: the record is made on first use (make_record).
  TaskRecord* attach(const TaskInstanceKey& key, std::optional<std::uint32_t> try_number);
  /// The record of an attached endpoint that had none (first state change or push).
  TaskRecord& make_record(const TaskInstanceKey& key, std::uint32_t attempt);
  /// The endpoint was detached: state detached, retention starts.
  void detach(TaskRecord& record);

  void set_state(TaskRecord& record, TaskState state, std::string message = {});
  /// Records `value_json` under `key` and tells waiters and subscribers. With a store, `done`
  /// runs on the loop once the store made it durable (or failed to); without, it is not called.
  /// Errors, at once (nothing recorded): errc::xcom_limit_reached. `store_copy`, when not empty,
  /// is a copy of `value_json` for the store made off the loop (a large value); else it is
  /// copied here.
  boost::system::error_code put(TaskRecord& record, std::string_view key, std::string value_json, PutDone done,
                                std::string store_copy = {});

  /// INVALID_ARGUMENT for a query that cannot match anything, else OK.
  [[nodiscard]] static grpc::Status check(const XComQuery& query);
  /// The XComs `query` asks for as they are now, and whether they satisfy it.
  [[nodiscard]] std::vector<XCom> find(const XComQuery& query, bool& satisfied) const;
  /// Registers `waiter` until its query is satisfied (then on_ready) or cancel_wait.
  void wait(XComWaiter& waiter);
  void cancel_wait(XComWaiter& waiter) noexcept;

  [[nodiscard]] std::optional<TaskStateInfo> state(TaskInstanceKeyView key) const;

  /// INVALID_ARGUMENT for a watch query that cannot match anything, else OK.
  [[nodiscard]] static grpc::Status check(const WatchQuery& query);
  /// Up to `max_events` retained events after sequence `after` that `query` matches, into `out`;
  /// `caught_up` once no retained event is left after them. OUT_OF_RANGE when events after `after`
  /// are no longer retained.
  grpc::Status replay(const WatchQuery& query, std::uint64_t after, std::size_t max_events,
                      std::vector<XComEventPtr>& out, bool& caught_up) const;
  /// Registers `subscriber` for the events published from now on.
  void subscribe(XComSubscriber& subscriber);
  void unsubscribe(XComSubscriber& subscriber) noexcept;
  /// The oldest sequence number the history still holds (next_sequence() when it is empty).
  [[nodiscard]] std::uint64_t first_retained_sequence() const noexcept { return first_retained_sequence_; }
  /// The sequence number the next event will get.
  [[nodiscard]] std::uint64_t next_sequence() const noexcept { return next_sequence_; }
  /// Set by close(): the status that ended waiters and subscribers.
  [[nodiscard]] const std::optional<grpc::Status>& closed() const noexcept { return closed_; }

  /// Any thread: blocks until every store write made so far has reported back to the loop's queue
  /// (a shutdown waits for it, so that no store thread posts to an io_context that is gone).
  void wait_for_store_writes() const noexcept;

  /// Forgets the detached records whose retention passed; returns when the next one expires.
  std::optional<std::chrono::steady_clock::time_point> expire(std::chrono::steady_clock::time_point now);
  [[nodiscard]] std::optional<std::chrono::steady_clock::time_point> next_expiry() const;

  /// Server shutdown: waiters and subscribers end with `status`; nothing more is accepted.
  void close(const grpc::Status& status);

  [[nodiscard]] std::size_t retained_bytes() const noexcept { return total_bytes_; }
  [[nodiscard]] std::size_t record_count() const noexcept { return records_.size(); }

 private:
  struct KeyLess {
    using is_transparent = void;
    bool operator()(const TaskInstanceKeyView& a, const TaskInstanceKeyView& b) const noexcept;
  };

  XComEventPtr publish(XComEvent event);
  // Drops `last` (a value or an event); one holding a large value is freed off the loop.
  template <typename Shared>
  void retire(Shared&& last) noexcept;
  void clear_xcoms(TaskRecord& record);
  void forget(TaskRecord& record);
  bool make_room(std::size_t needed);
  void write_to_store(XComStore::Change change, PutDone done);
  void wake_waiters(const TaskInstanceKey& key, std::string_view xcom_key);
  [[nodiscard]] static std::string waiter_index(std::string_view dag_id, std::string_view run_id,
                                                std::string_view task_id, std::string_view key);
  [[nodiscard]] static std::string run_index(std::string_view dag_id, std::string_view run_id);
  [[nodiscard]] static bool matches(const WatchQuery& query, const TaskInstanceKey& key) noexcept;
  [[nodiscard]] std::int64_t now_us() const;
  TaskRecord& new_record(const TaskInstanceKey& key, std::uint32_t attempt);

  LoopExecutor executor_;
  XComTableOptions options_;
  // Ordered by (dag_id, run_id, task_id, map_index): the map indexes of a task are adjacent. The
  // key views point into each record's own key.
  std::map<TaskInstanceKeyView, std::unique_ptr<TaskRecord>, KeyLess> records_;
  std::list<TaskRecord*> detached_;  // in detach order: retention and eviction take the oldest
  std::size_t total_bytes_ = 0;
  std::uint64_t next_sequence_ = 1;
  std::deque<XComEventPtr> history_;
  std::size_t history_bytes_ = 0;
  std::uint64_t first_retained_sequence_ = 1;  // every event from here on is in history_
  std::unordered_multimap<std::string, XComWaiter*> waiters_;
  std::unordered_map<std::string, std::vector<XComSubscriber*>> subscribers_;
  std::optional<grpc::Status> closed_;
  std::atomic<std::size_t> store_writes_{0};  // written, and not yet handed back to the loop
};

}  // namespace rx::detail

#include "xcom/xcom_table.hpp"

#include "codec.hpp"
#include "off_loop_worker.hpp"
#include "xcom/wire.hpp"

#include <remote_xcomm/error.hpp>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <climits>
#include <tuple>
#include <type_traits>
#include <utility>

namespace rx::detail {

namespace {

// What a record's XCom costs beyond its key and value: the map node, the shared value's control
// block and the sizes kept. An estimate, so that many tiny XComs count too.
constexpr std::size_t XCOM_OVERHEAD_BYTES = 128;
constexpr std::size_t EVENT_OVERHEAD_BYTES = 160;

std::size_t xcom_bytes(std::string_view key, const std::string& value) noexcept {
  return key.size() + value.size() + XCOM_OVERHEAD_BYTES;
}

XCom make_xcom(const TaskRecord& record, const std::string& key, const StoredXCom& stored) {
  XCom xcom;
  xcom.task_instance = *record.key;
  xcom.key = key;
  xcom.value_json = *stored.value;
  xcom.attempt = record.attempt;
  xcom.sequence = stored.sequence;
  xcom.timestamp = from_unix_micros(stored.timestamp_us);
  return xcom;
}

}  // namespace

// ---- events ------------------------------------------------------------------------------------

std::size_t XComEvent::bytes() const noexcept {
  return EVENT_OVERHEAD_BYTES + text.size() + (value ? value->size() : 0);
}

void XComEvent::to_proto(remote_xcomm::v1::WatchEvent& out) const {
  out.set_sequence(sequence);
  if (kind == WatchEvent::Kind::xcom) {
    auto& xcom = *out.mutable_xcom();
    detail::to_proto(*task_instance, *xcom.mutable_task_instance());
    xcom.set_key(text);
    xcom.set_value_json(*value);
    xcom.set_attempt(attempt);
    xcom.set_sequence(sequence);
    xcom.set_timestamp_us(timestamp_us);
    return;
  }
  auto& info = kind == WatchEvent::Kind::state ? *out.mutable_state() : *out.mutable_cleared();
  detail::to_proto(*task_instance, *info.mutable_task_instance());
  info.set_state(static_cast<remote_xcomm::v1::TaskState>(state));
  info.set_since_us(timestamp_us);
  info.set_attempt(attempt);
  info.set_message(text);
  info.set_sequence(sequence);
}

// ---- the table -----------------------------------------------------------------------------------

bool XComTable::KeyLess::operator()(const TaskInstanceKeyView& a, const TaskInstanceKeyView& b) const noexcept {
  return std::tie(a.dag_id, a.run_id, a.task_id, a.map_index) < std::tie(b.dag_id, b.run_id, b.task_id, b.map_index);
}

XComTable::XComTable(LoopExecutor executor, XComTableOptions options)
    : executor_(std::move(executor)), options_(std::move(options)) {}

std::int64_t XComTable::now_us() const { return to_unix_micros(std::chrono::system_clock::now()); }

TaskRecord& XComTable::new_record(const TaskInstanceKey& key, std::uint32_t attempt) {
  auto record = std::make_unique<TaskRecord>();
  record->key = std::make_shared<const TaskInstanceKey>(key);
  record->attempt = attempt;
  record->since_us = now_us();
  TaskRecord& made = *record;
  records_.emplace(made.key->view(), std::move(record));
  return made;
}

void XComTable::load() {
  if (!options_.store) {
    return;
  }
  std::vector<XCom> kept = options_.store->load();
  const auto expires = std::chrono::steady_clock::now() + options_.retention;
  for (XCom& xcom : kept) {
    auto it = records_.find(xcom.task_instance.view());
    TaskRecord* record = it == records_.end() ? nullptr : it->second.get();
    if (record == nullptr) {
      record = &new_record(xcom.task_instance, xcom.attempt);
      record->state = TaskState::detached;
      record->expires = expires;
      record->detached_position = detached_.insert(detached_.end(), record);
    }
    record->attempt = std::max(record->attempt, xcom.attempt);
    const std::size_t bytes = xcom_bytes(xcom.key, xcom.value_json);
    StoredXCom stored{std::make_shared<const std::string>(std::move(xcom.value_json)), xcom.sequence,
                      to_unix_micros(xcom.timestamp)};
    record->xcoms.insert_or_assign(std::move(xcom.key), std::move(stored));
    record->bytes += bytes;
    total_bytes_ += bytes;
    next_sequence_ = std::max(next_sequence_, xcom.sequence + 1);
  }
  // Nothing before the restart is in the history: a resume from an older sequence is refused.
  first_retained_sequence_ = next_sequence_;
}

TaskRecord* XComTable::attach(const TaskInstanceKey& key, std::optional<std::uint32_t> try_number) {
  auto it = records_.find(key.view());
  if (it == records_.end()) {
    if (!try_number) {
      return nullptr;  // made on first use: an endpoint that never serves costs nothing here
    }
    TaskRecord& record = new_record(key, std::max<std::uint32_t>(*try_number, 1));
    record.attached = true;
    set_state(record, TaskState::idle);
    return &record;
  }
  TaskRecord& record = *it->second;
  if (!record.attached) {
    detached_.erase(record.detached_position);
  }
  record.attached = true;
  if (!try_number || *try_number != record.attempt) {
    // A new attempt: Airflow clears a task instance's XComs when it runs again.
    record.attempt = try_number ? std::max<std::uint32_t>(*try_number, 1) : record.attempt + 1;
    clear_xcoms(record);
  }
  set_state(record, TaskState::idle);
  return &record;
}

TaskRecord& XComTable::make_record(const TaskInstanceKey& key, std::uint32_t attempt) {
  if (records_.contains(key.view())) {
    // The endpoint was attached without a try_number before start() loaded the store, which
    // kept this key: attach it now as attach() would have then (a new attempt, clearing what
    // the store kept; docs/xcoms.md). Making a second record would leave the endpoint pointing
    // at one the map refused and freed.
    return *attach(key, std::nullopt);
  }
  TaskRecord& record = new_record(key, attempt);
  record.attached = true;
  return record;
}

void XComTable::detach(TaskRecord& record) {
  record.attached = false;
  set_state(record, TaskState::detached);
  record.expires = std::chrono::steady_clock::now() + options_.retention;
  record.detached_position = detached_.insert(detached_.end(), &record);
  if (options_.retention.count() <= 0) {
    forget(record);
  }
}

void XComTable::set_state(TaskRecord& record, TaskState state, std::string message) {
  XComEvent event;
  event.kind = WatchEvent::Kind::state;
  event.task_instance = record.key;
  event.attempt = record.attempt;
  event.timestamp_us = now_us();
  event.state = state;
  event.text = message;
  const XComEventPtr published = publish(std::move(event));
  record.state = state;
  record.since_us = published->timestamp_us;
  record.state_sequence = published->sequence;
  record.message = std::move(message);
}

void XComTable::clear_xcoms(TaskRecord& record) {
  if (record.xcoms.empty()) {
    return;
  }
  total_bytes_ -= record.bytes;
  record.bytes = 0;
  record.xcoms.clear();
  if (options_.store) {
    XComStore::Change change;
    change.kind = XComStore::Change::Kind::erase_task_instance;
    change.xcom.task_instance = *record.key;
    write_to_store(std::move(change), {});
  }
  XComEvent event;
  event.kind = WatchEvent::Kind::cleared;
  event.task_instance = record.key;
  event.attempt = record.attempt;
  event.timestamp_us = now_us();
  event.state = record.state;
  publish(std::move(event));
}

void XComTable::forget(TaskRecord& record) {
  if (!record.attached) {
    detached_.erase(record.detached_position);
  }
  total_bytes_ -= record.bytes;
  if (options_.store && !record.xcoms.empty()) {
    XComStore::Change change;
    change.kind = XComStore::Change::Kind::erase_task_instance;
    change.xcom.task_instance = *record.key;
    write_to_store(std::move(change), {});
  }
  const std::shared_ptr<const TaskInstanceKey> key = record.key;  // the map's key views point into it
  records_.erase(key->view());
}

bool XComTable::make_room(std::size_t needed) {
  // Detached task instances go first, oldest detach first: nobody runs there any more.
  while (total_bytes_ + needed > options_.max_bytes && !detached_.empty()) {
    forget(*detached_.front());
  }
  return total_bytes_ + needed <= options_.max_bytes;
}

void XComTable::write_to_store(XComStore::Change change, PutDone done) {
  std::vector<XComStore::Change> changes;
  changes.push_back(std::move(change));
  store_writes_.fetch_add(1, std::memory_order_relaxed);
  try {
    options_.store->write(std::move(changes),
                          [self = shared_from_this(), done = std::move(done)](boost::system::error_code error) mutable {
                            if (done) {
                              // The store's thread: back to the loop, queued (a store may call this from its writer).
                              boost::asio::post(self->executor_, [done = std::move(done), error] { done(error); });
                            }
                            if (self->store_writes_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                              self->store_writes_.notify_all();
                            }
                          });
  } catch (...) {
    store_writes_.fetch_sub(1, std::memory_order_relaxed);
    throw;
  }
}

void XComTable::wait_for_store_writes() const noexcept {
  for (std::size_t count = store_writes_.load(std::memory_order_acquire); count != 0;
       count = store_writes_.load(std::memory_order_acquire)) {
    store_writes_.wait(count, std::memory_order_acquire);
  }
}

boost::system::error_code XComTable::put(TaskRecord& record, std::string_view key, std::string value_json, PutDone done,
                                         std::string store_copy) {
  const std::size_t bytes = xcom_bytes(key, value_json);
  auto existing = record.xcoms.find(key);
  const std::size_t replaced = existing == record.xcoms.end() ? 0 : xcom_bytes(key, *existing->second.value);
  if (bytes > replaced && !make_room(bytes - replaced)) {
    return errc::xcom_limit_reached;
  }
  auto value = std::make_shared<const std::string>(std::move(value_json));
  XComEvent event;
  event.kind = WatchEvent::Kind::xcom;
  event.task_instance = record.key;
  event.attempt = record.attempt;
  event.timestamp_us = now_us();
  event.text = std::string(key);
  event.value = value;
  const XComEventPtr published = publish(std::move(event));
  StoredXCom stored{std::move(value), published->sequence, published->timestamp_us};
  if (existing == record.xcoms.end()) {
    record.xcoms.emplace(std::string(key), std::move(stored));
  } else {
    std::shared_ptr<const std::string> replaced_value = std::move(existing->second.value);
    existing->second = std::move(stored);
    retire(std::move(replaced_value));
  }
  record.bytes += bytes - replaced;
  total_bytes_ += bytes - replaced;
  if (options_.store) {
    XComStore::Change change;
    change.xcom.task_instance = *record.key;
    change.xcom.key = std::string(key);
    change.xcom.value_json = store_copy.empty() ? *published->value : std::move(store_copy);
    change.xcom.attempt = record.attempt;
    change.xcom.sequence = published->sequence;
    change.xcom.timestamp = from_unix_micros(published->timestamp_us);
    write_to_store(std::move(change), std::move(done));
  }
  if (!waiters_.empty()) {
    wake_waiters(*record.key, key);
  }
  return {};
}

template <typename Shared>
void XComTable::retire(Shared&& last) noexcept {
  // Freeing 64 MiB takes the loop about 10 ms on the development VM: a large value that nobody
  // else holds is freed by the worker that encodes large values.
  if (last.use_count() != 1) {
    return;
  }
  std::size_t bytes = 0;
  if constexpr (std::is_same_v<std::decay_t<Shared>, XComEventPtr>) {
    bytes = last->value && last->value.use_count() == 1 ? last->value->size() : 0;
  } else {
    bytes = last ? last->size() : 0;
  }
  if (bytes < OFF_LOOP_BYTES) {
    return;
  }
  try {
    OffLoopWorker::of(executor_).run([freed = std::move(last)] {});
  } catch (...) {  // no memory to queue it: freed here
  }
}

XComEventPtr XComTable::publish(XComEvent event) {
  event.sequence = next_sequence_++;
  auto shared = std::make_shared<const XComEvent>(std::move(event));
  if (options_.history_events > 0) {
    history_bytes_ += shared->bytes();
    history_.push_back(shared);
    while (!history_.empty() &&
           (history_.size() > options_.history_events || history_bytes_ > options_.history_bytes)) {
      history_bytes_ -= history_.front()->bytes();
      XComEventPtr evicted = std::move(history_.front());
      history_.pop_front();
      retire(std::move(evicted));
    }
  }
  first_retained_sequence_ = history_.empty() ? next_sequence_ : history_.front()->sequence;
  if (!subscribers_.empty()) {
    auto it = subscribers_.find(run_index(shared->task_instance->dag_id, shared->task_instance->run_id));
    if (it != subscribers_.end()) {
      std::vector<XComSubscriber*>& list = it->second;
      // A subscriber that falls behind ends itself (returns false) and is dropped here.
      std::erase_if(list, [&](XComSubscriber* subscriber) {
        if (!matches(subscriber->query(), *shared->task_instance)) {
          return false;
        }
        if (subscriber->on_event(shared)) {
          return false;
        }
        subscriber->registered_ = false;
        return true;
      });
      if (list.empty()) {
        subscribers_.erase(it);
      }
    }
  }
  return shared;
}

// ---- pulls ---------------------------------------------------------------------------------------

grpc::Status XComTable::check(const XComQuery& query) {
  if (query.dag_id.empty() || query.run_id.empty() || query.task_id.empty()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "a pull needs a dag_id, a run_id and a task_id"};
  }
  if (query.key.empty()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "a pull needs an XCom key"};
  }
  if (!query.all_map_indexes && query.map_index < -1) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "map_index " + std::to_string(query.map_index) + " is below -1 (-1: a task that is not mapped)"};
  }
  return grpc::Status::OK;
}

std::vector<XCom> XComTable::find(const XComQuery& query, bool& satisfied) const {
  std::vector<XCom> found;
  if (!query.all_map_indexes) {
    const auto it = records_.find({query.dag_id, query.task_id, query.run_id, query.map_index});
    if (it != records_.end()) {
      const auto xcom = it->second->xcoms.find(query.key);
      if (xcom != it->second->xcoms.end()) {
        found.push_back(make_xcom(*it->second, xcom->first, xcom->second));
      }
    }
    satisfied = !found.empty();
    return found;
  }
  // The map indexes of one task are adjacent in the key order, ascending.
  for (auto it = records_.lower_bound({query.dag_id, query.task_id, query.run_id, INT_MIN});
       it != records_.end() && it->first.dag_id == query.dag_id && it->first.run_id == query.run_id &&
       it->first.task_id == query.task_id;
       ++it) {
    const auto xcom = it->second->xcoms.find(query.key);
    if (xcom != it->second->xcoms.end()) {
      found.push_back(make_xcom(*it->second, xcom->first, xcom->second));
    }
  }
  satisfied = !found.empty() && found.size() >= std::max<std::size_t>(query.min_count, 1);
  return found;
}

std::string XComTable::waiter_index(std::string_view dag_id, std::string_view run_id, std::string_view task_id,
                                    std::string_view key) {
  std::string index;
  index.reserve(dag_id.size() + run_id.size() + task_id.size() + key.size() + 3);
  index.append(dag_id).push_back('\0');
  index.append(run_id).push_back('\0');
  index.append(task_id).push_back('\0');
  index.append(key);
  return index;
}

void XComTable::wait(XComWaiter& waiter) {
  if (closed_) {
    waiter.on_closed(*closed_);
    return;
  }
  const XComQuery& query = waiter.query();
  waiter.index_key_ = waiter_index(query.dag_id, query.run_id, query.task_id, query.key);
  waiters_.emplace(waiter.index_key_, &waiter);
  waiter.registered_ = true;
}

void XComTable::cancel_wait(XComWaiter& waiter) noexcept {
  if (!waiter.registered_) {
    return;
  }
  auto [first, last] = waiters_.equal_range(waiter.index_key_);
  for (auto it = first; it != last; ++it) {
    if (it->second == &waiter) {
      waiters_.erase(it);
      break;
    }
  }
  waiter.registered_ = false;
}

void XComTable::wake_waiters(const TaskInstanceKey& key, std::string_view xcom_key) {
  auto [first, last] = waiters_.equal_range(waiter_index(key.dag_id, key.run_id, key.task_id, xcom_key));
  std::vector<std::pair<XComWaiter*, std::vector<XCom>>> ready;
  for (auto it = first; it != last;) {
    XComWaiter* const waiter = it->second;
    const XComQuery& query = waiter->query();
    if (!query.all_map_indexes && query.map_index != key.map_index) {
      ++it;
      continue;
    }
    bool satisfied = false;
    std::vector<XCom> found = find(query, satisfied);
    if (!satisfied) {
      ++it;
      continue;
    }
    waiter->registered_ = false;
    it = waiters_.erase(it);
    ready.emplace_back(waiter, std::move(found));
  }
  // Called after the index is settled: a waiter's reaction may register another waiter.
  for (auto& [waiter, found] : ready) {
    waiter->on_ready(std::move(found));
  }
}

std::optional<TaskStateInfo> XComTable::state(TaskInstanceKeyView key) const {
  const auto it = records_.find(key);
  if (it == records_.end()) {
    return std::nullopt;
  }
  const TaskRecord& record = *it->second;
  TaskStateInfo info;
  info.task_instance = *record.key;
  info.state = record.state;
  info.since = from_unix_micros(record.since_us);
  info.attempt = record.attempt;
  info.message = record.message;
  info.sequence = record.state_sequence;
  return info;
}

// ---- watches -------------------------------------------------------------------------------------

std::string XComTable::run_index(std::string_view dag_id, std::string_view run_id) {
  std::string index;
  index.reserve(dag_id.size() + run_id.size() + 1);
  index.append(dag_id).push_back('\0');
  index.append(run_id);
  return index;
}

bool XComTable::matches(const WatchQuery& query, const TaskInstanceKey& key) noexcept {
  if (key.dag_id != query.dag_id || key.run_id != query.run_id) {
    return false;
  }
  if (query.task_id.empty()) {
    return true;
  }
  return key.task_id == query.task_id && (query.all_map_indexes || key.map_index == query.map_index);
}

grpc::Status XComTable::check(const WatchQuery& query) {
  if (query.dag_id.empty() || query.run_id.empty()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "a watch needs a dag_id and a run_id"};
  }
  if (!query.task_id.empty() && !query.all_map_indexes && query.map_index < -1) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "map_index " + std::to_string(query.map_index) + " is below -1 (-1: a task that is not mapped)"};
  }
  return grpc::Status::OK;
}

grpc::Status XComTable::replay(const WatchQuery& query, std::uint64_t after, std::size_t max_events,
                               std::vector<XComEventPtr>& out, bool& caught_up) const {
  caught_up = false;
  if (after + 1 < first_retained_sequence_) {
    return {grpc::StatusCode::OUT_OF_RANGE,
            "the events after sequence " + std::to_string(after) + " are no longer retained (the oldest kept is " +
                std::to_string(first_retained_sequence_) + "): pull the XComs, then watch from now"};
  }
  auto it =
      std::upper_bound(history_.begin(), history_.end(), after,
                       [](std::uint64_t sequence, const XComEventPtr& event) { return sequence < event->sequence; });
  for (; it != history_.end() && out.size() < max_events; ++it) {
    if (matches(query, *(*it)->task_instance)) {
      out.push_back(*it);
    }
  }
  caught_up = it == history_.end();
  return grpc::Status::OK;
}

void XComTable::subscribe(XComSubscriber& subscriber) {
  if (subscriber.registered_) {
    return;
  }
  subscribers_[run_index(subscriber.query().dag_id, subscriber.query().run_id)].push_back(&subscriber);
  subscriber.registered_ = true;
}

void XComTable::unsubscribe(XComSubscriber& subscriber) noexcept {
  if (!subscriber.registered_) {
    return;
  }
  subscriber.registered_ = false;
  auto it = subscribers_.find(run_index(subscriber.query().dag_id, subscriber.query().run_id));
  if (it == subscribers_.end()) {
    return;
  }
  std::erase(it->second, &subscriber);
  if (it->second.empty()) {
    subscribers_.erase(it);
  }
}

// ---- retention and shutdown ----------------------------------------------------------------------

std::optional<std::chrono::steady_clock::time_point> XComTable::expire(std::chrono::steady_clock::time_point now) {
  while (!detached_.empty() && detached_.front()->expires <= now) {
    forget(*detached_.front());
  }
  return next_expiry();
}

std::optional<std::chrono::steady_clock::time_point> XComTable::next_expiry() const {
  if (detached_.empty()) {
    return std::nullopt;
  }
  return detached_.front()->expires;
}

void XComTable::close(const grpc::Status& status) {
  if (closed_) {
    return;
  }
  closed_ = status;
  auto waiters = std::move(waiters_);
  waiters_.clear();
  for (auto& [index, waiter] : waiters) {
    waiter->registered_ = false;
    waiter->on_closed(status);
  }
  auto subscribers = std::move(subscribers_);
  subscribers_.clear();
  for (auto& [index, list] : subscribers) {
    for (XComSubscriber* subscriber : list) {
      subscriber->registered_ = false;
      subscriber->on_closed(status);
    }
  }
}

}  // namespace rx::detail

#include "xcom/wire.hpp"

#include "codec.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

namespace rx::detail {

std::int64_t to_unix_micros(std::chrono::system_clock::time_point time) noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
}

std::chrono::system_clock::time_point from_unix_micros(std::int64_t micros) noexcept {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::microseconds(micros)));
}

void to_proto(const XCom& xcom, remote_xcomm::v1::XCom& out) {
  to_proto(xcom.task_instance, *out.mutable_task_instance());
  out.set_key(xcom.key);
  out.set_value_json(xcom.value_json);
  out.set_attempt(xcom.attempt);
  out.set_sequence(xcom.sequence);
  out.set_timestamp_us(to_unix_micros(xcom.timestamp));
}

void to_proto(const TaskStateInfo& state, remote_xcomm::v1::TaskStateInfo& out) {
  to_proto(state.task_instance, *out.mutable_task_instance());
  out.set_state(static_cast<remote_xcomm::v1::TaskState>(state.state));
  out.set_since_us(to_unix_micros(state.since));
  out.set_attempt(state.attempt);
  out.set_message(state.message);
  out.set_sequence(state.sequence);
}

void to_proto(const XComQuery& query, remote_xcomm::v1::PullRequest& out) {
  out.set_dag_id(query.dag_id);
  out.set_run_id(query.run_id);
  out.set_task_id(query.task_id);
  out.set_key(query.key);
  out.set_map_index(query.map_index);
  out.set_all_map_indexes(query.all_map_indexes);
  out.set_wait(query.wait);
  out.set_min_count(static_cast<std::uint32_t>(std::min<std::size_t>(query.min_count, UINT32_MAX)));
}

void to_proto(const WatchQuery& query, remote_xcomm::v1::WatchRequest& out) {
  out.set_dag_id(query.dag_id);
  out.set_run_id(query.run_id);
  out.set_task_id(query.task_id);
  out.set_map_index(query.map_index);
  out.set_all_map_indexes(query.all_map_indexes);
  out.set_from_start(query.from_start);
  out.set_after_sequence(query.after_sequence);
}

TaskInstanceKey from_proto(const remote_xcomm::v1::TaskInstanceKey& key) { return TaskInstanceKey::from(view_of(key)); }

XCom from_proto(const remote_xcomm::v1::XCom& xcom) {
  XCom out;
  out.task_instance = from_proto(xcom.task_instance());
  out.key = xcom.key();
  out.value_json = xcom.value_json();
  out.attempt = xcom.attempt();
  out.sequence = xcom.sequence();
  out.timestamp = from_unix_micros(xcom.timestamp_us());
  return out;
}

TaskStateInfo from_proto(const remote_xcomm::v1::TaskStateInfo& state, bool* known) {
  TaskStateInfo out;
  out.task_instance = from_proto(state.task_instance());
  const int value = state.state();
  const bool valid = value >= static_cast<int>(TaskState::idle) && value <= static_cast<int>(TaskState::detached);
  out.state = valid ? static_cast<TaskState>(value) : TaskState::idle;
  if (known != nullptr) {
    *known = valid;
  }
  out.since = from_unix_micros(state.since_us());
  out.attempt = state.attempt();
  out.message = state.message();
  out.sequence = state.sequence();
  return out;
}

XComQuery from_proto(const remote_xcomm::v1::PullRequest& request) {
  XComQuery out;
  out.dag_id = request.dag_id();
  out.run_id = request.run_id();
  out.task_id = request.task_id();
  out.key = request.key().empty() ? std::string(return_value_key) : request.key();
  out.map_index = request.has_map_index() ? request.map_index() : -1;
  out.all_map_indexes = request.all_map_indexes();
  out.wait = request.wait();
  out.min_count = request.min_count() == 0 ? 1 : request.min_count();
  out.timeout.reset();  // the call's deadline bounds a wait on the server
  return out;
}

WatchQuery from_proto(const remote_xcomm::v1::WatchRequest& request) {
  WatchQuery out;
  out.dag_id = request.dag_id();
  out.run_id = request.run_id();
  out.task_id = request.task_id();
  out.map_index = request.has_map_index() ? request.map_index() : -1;
  out.all_map_indexes = request.all_map_indexes();
  out.from_start = request.from_start();
  out.after_sequence = request.after_sequence();
  return out;
}

bool from_proto(const remote_xcomm::v1::WatchEvent& event, WatchEvent& out) {
  out.sequence = event.sequence();
  switch (event.change_case()) {
    case remote_xcomm::v1::WatchEvent::kXcom:
      out.kind = WatchEvent::Kind::xcom;
      out.xcom = from_proto(event.xcom());
      return true;
    case remote_xcomm::v1::WatchEvent::kState:
      out.kind = WatchEvent::Kind::state;
      out.state = from_proto(event.state());
      return true;
    case remote_xcomm::v1::WatchEvent::kCleared:
      out.kind = WatchEvent::Kind::cleared;
      out.state = from_proto(event.cleared());
      return true;
    case remote_xcomm::v1::WatchEvent::CHANGE_NOT_SET:
      break;
  }
  return false;
}

}  // namespace rx::detail

// The address of an endpoint: Airflow's task-instance key.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace rx {

/// A borrowed view of a TaskInstanceKey, for look-ups that must not copy strings.
struct TaskInstanceKeyView {
  std::string_view dag_id;
  std::string_view task_id;
  std::string_view run_id;
  int map_index = -1;

  friend bool operator==(const TaskInstanceKeyView&, const TaskInstanceKeyView&) = default;
};

/// Addresses one endpoint, as Airflow's `TaskInstanceKey` addresses a task instance.
/// `map_index` is -1 for a task that is not mapped.
struct TaskInstanceKey {
  std::string dag_id;
  std::string task_id;
  std::string run_id;
  int map_index = -1;

  [[nodiscard]] TaskInstanceKeyView view() const noexcept { return {dag_id, task_id, run_id, map_index}; }
  [[nodiscard]] static TaskInstanceKey from(const TaskInstanceKeyView& view) {
    return {std::string(view.dag_id), std::string(view.task_id), std::string(view.run_id), view.map_index};
  }

  friend bool operator==(const TaskInstanceKey&, const TaskInstanceKey&) = default;
};

/// "dag_id/task_id/run_id[map_index]", for messages and logs.
[[nodiscard]] std::string to_string(const TaskInstanceKeyView& key);
[[nodiscard]] inline std::string to_string(const TaskInstanceKey& key) { return to_string(key.view()); }

/// Hash and equality that accept both TaskInstanceKey and TaskInstanceKeyView, so that an
/// unordered container of keys can be searched with a view (heterogeneous look-up).
struct TaskInstanceKeyHash {
  using is_transparent = void;
  [[nodiscard]] std::size_t operator()(const TaskInstanceKeyView& key) const noexcept;
  [[nodiscard]] std::size_t operator()(const TaskInstanceKey& key) const noexcept { return (*this)(key.view()); }
};

struct TaskInstanceKeyEqual {
  using is_transparent = void;
  [[nodiscard]] bool operator()(const TaskInstanceKeyView& a, const TaskInstanceKeyView& b) const noexcept {
    return a == b;
  }
  [[nodiscard]] bool operator()(const TaskInstanceKey& a, const TaskInstanceKeyView& b) const noexcept {
    return a.view() == b;
  }
  [[nodiscard]] bool operator()(const TaskInstanceKeyView& a, const TaskInstanceKey& b) const noexcept {
    return a == b.view();
  }
  [[nodiscard]] bool operator()(const TaskInstanceKey& a, const TaskInstanceKey& b) const noexcept { return a == b; }
};

}  // namespace rx

template <>
struct std::hash<rx::TaskInstanceKey> {
  std::size_t operator()(const rx::TaskInstanceKey& key) const noexcept { return rx::TaskInstanceKeyHash{}(key); }
};

// The address of an endpoint: Airflow's task-instance key.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace rx {

/// A borrowed view of a TaskInstanceKey, for look-ups that must not copy strings.
struct TaskInstanceKeyView {
  /// The DAG's id.
  std::string_view dag_id;
  /// The task's id within the DAG.
  std::string_view task_id;
  /// The DAG run's id.
  std::string_view run_id;
  /// The index of a mapped task's instance; -1 for a task that is not mapped.
  int map_index = -1;

  /// True when all four fields are equal (the strings by content, not by address).
  friend bool operator==(const TaskInstanceKeyView&, const TaskInstanceKeyView&) = default;
};

/// Addresses one endpoint, as Airflow's `TaskInstanceKey` addresses a task instance.
/// `map_index` is -1 for a task that is not mapped.
struct TaskInstanceKey {
  /// The DAG's id.
  std::string dag_id;
  /// The task's id within the DAG.
  std::string task_id;
  /// The DAG run's id.
  std::string run_id;
  /// The index of a mapped task's instance; -1 for a task that is not mapped.
  int map_index = -1;

  /// A view of this key's strings, valid while this key is alive and unchanged.
  [[nodiscard]] TaskInstanceKeyView view() const noexcept { return {dag_id, task_id, run_id, map_index}; }
  /// An owning copy of the key `view` borrows.
  [[nodiscard]] static TaskInstanceKey from(const TaskInstanceKeyView& view) {
    return {std::string(view.dag_id), std::string(view.task_id), std::string(view.run_id), view.map_index};
  }

  /// True when all four fields are equal.
  friend bool operator==(const TaskInstanceKey&, const TaskInstanceKey&) = default;
};

/// "dag_id/task_id/run_id[map_index]", for messages and logs.
[[nodiscard]] std::string to_string(const TaskInstanceKeyView& key);
[[nodiscard]] inline std::string to_string(const TaskInstanceKey& key) { return to_string(key.view()); }

/// Hash and equality that accept both TaskInstanceKey and TaskInstanceKeyView, so that an
/// unordered container of keys can be searched with a view (heterogeneous look-up).
struct TaskInstanceKeyHash {
  /// Marks the hash as transparent, which enables heterogeneous look-up in unordered containers.
  using is_transparent = void;
  /// Hashes the four fields; a key and a view of it hash alike.
  [[nodiscard]] std::size_t operator()(const TaskInstanceKeyView& key) const noexcept;
  /// \overload
  [[nodiscard]] std::size_t operator()(const TaskInstanceKey& key) const noexcept { return (*this)(key.view()); }
};

/// The equality that goes with TaskInstanceKeyHash: compares keys and views, in any mix, field
/// by field.
struct TaskInstanceKeyEqual {
  /// Marks the equality as transparent, which enables heterogeneous look-up in unordered containers.
  using is_transparent = void;
  /// True when `a` and `b` name the same task instance.
  [[nodiscard]] bool operator()(const TaskInstanceKeyView& a, const TaskInstanceKeyView& b) const noexcept {
    return a == b;
  }
  /// \overload
  [[nodiscard]] bool operator()(const TaskInstanceKey& a, const TaskInstanceKeyView& b) const noexcept {
    return a.view() == b;
  }
  /// \overload
  [[nodiscard]] bool operator()(const TaskInstanceKeyView& a, const TaskInstanceKey& b) const noexcept {
    return a == b.view();
  }
  /// \overload
  [[nodiscard]] bool operator()(const TaskInstanceKey& a, const TaskInstanceKey& b) const noexcept { return a == b; }
};

}  // namespace rx

// std::hash for TaskInstanceKey (as TaskInstanceKeyHash): a standard customisation point, hidden
// from the API reference.
/// \cond
template <>
struct std::hash<rx::TaskInstanceKey> {
  std::size_t operator()(const rx::TaskInstanceKey& key) const noexcept { return rx::TaskInstanceKeyHash{}(key); }
};
/// \endcond

#include <remote_xcomm/task_instance_key.hpp>

#include <boost/container_hash/hash.hpp>

namespace rx {

std::string to_string(const TaskInstanceKeyView& key) {
  std::string text;
  text.reserve(key.dag_id.size() + key.task_id.size() + key.run_id.size() + 8);
  text.append(key.dag_id).append("/").append(key.task_id).append("/").append(key.run_id);
  text.append("[").append(std::to_string(key.map_index)).append("]");
  return text;
}

std::size_t TaskInstanceKeyHash::operator()(const TaskInstanceKeyView& key) const noexcept {
  std::size_t seed = std::hash<std::string_view>{}(key.dag_id);
  boost::hash_combine(seed, std::hash<std::string_view>{}(key.task_id));
  boost::hash_combine(seed, std::hash<std::string_view>{}(key.run_id));
  boost::hash_combine(seed, key.map_index);
  return seed;
}

}  // namespace rx

#include "codec.hpp"

#include <boost/json/error.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <boost/container/small_vector.hpp>
#include <cmath>

namespace rx::detail {

bool parse_json_object(std::string_view text, std::size_t max_depth, boost::json::object& out, std::string& error,
                       bool* too_deep) {
  if (text.empty()) {
    out = boost::json::object{};
    return true;
  }
  boost::json::parse_options options;
  options.max_depth = max_depth;
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(text, ec, {}, options);
  if (too_deep != nullptr) {
    *too_deep = ec == boost::json::error::too_deep;
  }
  if (ec == boost::json::error::too_deep) {
    error = "payload nests arrays and objects deeper than " + std::to_string(max_depth) + " levels";
    return false;
  }
  if (ec) {
    error = "payload is not valid JSON: " + ec.message();
    return false;
  }
  if (!value.is_object()) {
    error = "payload must be a JSON object, got a JSON " + std::string(boost::json::to_string(value.kind()));
    return false;
  }
  // Boost.JSON reads 1e400 as infinity, which no JSON text can carry back out.
  if (!all_numbers_finite(value)) {
    error = "payload has a number too large for a double (JSON cannot represent infinity)";
    return false;
  }
  out = std::move(value.get_object());
  return true;
}

bool all_numbers_finite(const boost::json::object& object) {
  for (const auto& member : object) {
    if (!all_numbers_finite(member.value())) {
      return false;
    }
  }
  return true;
}

bool all_numbers_finite(const boost::json::value& root) {
  boost::container::small_vector<const boost::json::value*, 32> pending{&root};  // no allocation for small payloads
  while (!pending.empty()) {
    const boost::json::value* value = pending.back();
    pending.pop_back();
    switch (value->kind()) {
      case boost::json::kind::double_:
        if (!std::isfinite(value->get_double())) {
          return false;
        }
        break;
      case boost::json::kind::array:
        for (const boost::json::value& element : value->get_array()) {
          pending.push_back(&element);
        }
        break;
      case boost::json::kind::object:
        for (const auto& member : value->get_object()) {
          pending.push_back(&member.value());
        }
        break;
      default:
        break;
    }
  }
  return true;
}

std::string serialize_json(const boost::json::object& object) { return boost::json::serialize(object); }

void to_proto(const TaskInstanceKey& key, remote_xcomm::v1::TaskInstanceKey& out) {
  out.set_dag_id(key.dag_id);
  out.set_task_id(key.task_id);
  out.set_run_id(key.run_id);
  out.set_map_index(key.map_index);
}

TaskInstanceKeyView view_of(const remote_xcomm::v1::TaskInstanceKey& key) noexcept {
  return {key.dag_id(), key.task_id(), key.run_id(), key.map_index()};
}

}  // namespace rx::detail

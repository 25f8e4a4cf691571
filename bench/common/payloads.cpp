#include "common/payloads.hpp"

#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <string>

namespace rx::bench {
namespace {

boost::json::object make_row(std::size_t index) {
  char name[32];
  std::snprintf(name, sizeof name, "customer_%06zu", index);
  return {{"id", index},
          {"name", name},
          {"amount", 1234.5 + static_cast<double>(index % 1000)},
          {"active", index % 3 != 0},
          {"tags", boost::json::array{"eu", "retail"}}};
}

}  // namespace

boost::json::object make_xcom_payload(std::size_t bytes) {
  boost::json::object payload;
  if (bytes >= 256) {
    payload["dag_id"] = "etl_daily_orders";
    payload["task_id"] = "transform_orders";
    payload["run_id"] = "scheduled__2026-11-29T00:00:00+00:00";
    payload["map_index"] = -1;
  }
  boost::json::object& xcoms = payload["xcoms"].emplace_object();
  if (bytes >= 512) {
    // Size the table from one row instead of growing it a row at a time, then trim the excess
    // (rows differ by a few bytes).
    const std::size_t row_bytes = boost::json::serialize(make_row(100000)).size() + 1;  // + comma
    const std::size_t base = boost::json::serialize(payload).size() + 64;               // + keys, padding
    boost::json::array rows;
    for (std::size_t i = 0; base + (i + 1) * row_bytes < bytes; ++i) {
      rows.push_back(make_row(100000 + i));
    }
    xcoms["rows"] = std::move(rows);
    xcoms["return_value"] = "";
    for (std::size_t size = boost::json::serialize(payload).size(); size > bytes;
         size = boost::json::serialize(payload).size()) {
      boost::json::array& table = xcoms["rows"].as_array();
      const std::size_t excess_rows = std::min(table.size(), (size - bytes) / row_bytes + 1);
      table.erase(table.end() - static_cast<std::ptrdiff_t>(excess_rows), table.end());
    }
  }
  xcoms["return_value"] = "";
  const std::size_t size = boost::json::serialize(payload).size();
  if (size < bytes) {
    xcoms["return_value"] = std::string(bytes - size, 'x');
  }
  return payload;
}

TaskInstanceKey make_key(std::size_t index) {
  char task_id[32];
  std::snprintf(task_id, sizeof task_id, "transform_%07zu", index);
  return {"etl_daily_orders", task_id, "scheduled__2026-11-29T00:00:00+00:00", -1};
}

}  // namespace rx::bench

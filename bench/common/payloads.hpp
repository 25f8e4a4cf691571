// Realistic XCom payloads and endpoint keys of a chosen size, shared by the benchmarks.
#pragma once

#include <remote_xcomm/task_instance_key.hpp>

#include <boost/json/object.hpp>

#include <cstddef>

namespace rx::bench {

/// An XCom payload as a scheduler sends it, whose compact JSON text is exactly `bytes` long
/// (or as short as the smallest such payload, 30 bytes, when `bytes` is smaller).
///
/// Small payloads are a single `return_value` string; from 256 bytes on the payload carries the
/// task-instance annotations (`dag_id`, `task_id`, `run_id`, `map_index`); from 512 bytes its
/// `xcoms` hold a table of records (integers, strings, floats, booleans, a tag array), as a
/// task returning rows would. The last field is padded so the size is exact.
[[nodiscard]] boost::json::object make_xcom_payload(std::size_t bytes);

/// The key of endpoint `index`, shaped like an Airflow task instance's (a run_id too long for
/// the small-string buffer). Keys of different indexes have the same length.
[[nodiscard]] TaskInstanceKey make_key(std::size_t index);

}  // namespace rx::bench

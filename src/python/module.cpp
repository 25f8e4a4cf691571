// remote_xcomm._core: the C++ engine under the remote_xcomm Python package (src/python/remote_xcomm/).
// The package's Python code shapes the API; this module does the networking.
#include "client_calls.hpp"
#include "runtime.hpp"
#include "serve.hpp"

#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>

namespace py = pybind11;

namespace {

rx::XComQuery make_query(std::string dag_id, std::string run_id, std::string task_id, std::string key, int map_index,
                         bool all_map_indexes, bool wait, std::size_t min_count, const std::optional<double>& timeout) {
  rx::XComQuery query;
  query.dag_id = std::move(dag_id);
  query.run_id = std::move(run_id);
  query.task_id = std::move(task_id);
  query.key = std::move(key);
  query.map_index = map_index;
  query.all_map_indexes = all_map_indexes;
  query.wait = wait;
  query.min_count = min_count;
  query.timeout = rx::python::to_timeout(timeout);
  return query;
}

}  // namespace

PYBIND11_MODULE(_core, module) {
  using namespace rx::python;
  module.doc() = "Remote XComm's C++ engine; use the remote_xcomm package, not this module.";

  py::class_<RxComm>(module, "RxComm", "ti.rxcomm: the request a task instance is handling.")
      .def(py::init<>())
      .def("get", &RxComm::get, "The scheduler's payload (a dict) of the request being handled.")
      .def("push", &RxComm::push, py::arg("data"), "Replies to the request with `data` (a dict).")
      .def("xcom_push", &RxComm::xcom_push, py::arg("key"), py::arg("value"),
           "Records the XCom `key` = `value` (any JSON value) for this task instance.");

  py::class_<ServeControl>(module, "ServeControl")
      .def(py::init<>())
      .def("stop", &ServeControl::stop, py::arg("signal_number") = 0,
           "Stops serving (safe from a signal handler or another thread).");

  module.def(
      "serve",
      [](std::string dag_id, std::string task_id, std::string run_id, int map_index, const py::object& function,
         RxComm& rxcomm, ServeControl& control, std::string host, std::uint16_t port, std::string address) {
        rx::ServerOptions options;
        options.host = std::move(host);
        options.port = port;
        options.address = std::move(address);
        const rx::TaskInstanceKey key{std::move(dag_id), std::move(task_id), std::move(run_id), map_index};
        return serve(key, options, function, rxcomm, control);
      },
      py::arg("dag_id"), py::arg("task_id"), py::arg("run_id"), py::arg("map_index"), py::arg("function"),
      py::arg("rxcomm"), py::arg("control"), py::arg("host"), py::arg("port"), py::arg("address"));

  module.def("send", &rx::python::send, py::arg("target"), py::arg("data"), py::arg("timeout"),
             py::arg("wait_for_ready"));

  py::class_<PendingCall>(module, "PendingCall").def("cancel", &PendingCall::cancel);
  module.def("start_send", &start_send, py::arg("target"), py::arg("data"), py::arg("timeout"),
             py::arg("wait_for_ready"), py::arg("done"));

  module.def(
      "pull",
      [](const std::string& target, std::string dag_id, std::string run_id, std::string task_id, std::string key,
         int map_index, bool all_map_indexes, bool wait, std::size_t min_count, const std::optional<double>& timeout) {
        return pull(target, make_query(std::move(dag_id), std::move(run_id), std::move(task_id), std::move(key),
                                       map_index, all_map_indexes, wait, min_count, timeout));
      },
      py::arg("target"), py::arg("dag_id"), py::arg("run_id"), py::arg("task_id"), py::arg("key"), py::arg("map_index"),
      py::arg("all_map_indexes"), py::arg("wait"), py::arg("min_count"), py::arg("timeout"));
  module.def(
      "start_pull",
      [](const std::string& target, std::string dag_id, std::string run_id, std::string task_id, std::string key,
         int map_index, bool all_map_indexes, bool wait, std::size_t min_count, const std::optional<double>& timeout,
         const py::function& done) {
        return start_pull(target,
                          make_query(std::move(dag_id), std::move(run_id), std::move(task_id), std::move(key),
                                     map_index, all_map_indexes, wait, min_count, timeout),
                          done);
      },
      py::arg("target"), py::arg("dag_id"), py::arg("run_id"), py::arg("task_id"), py::arg("key"), py::arg("map_index"),
      py::arg("all_map_indexes"), py::arg("wait"), py::arg("min_count"), py::arg("timeout"), py::arg("done"));

  py::class_<WatchIterator>(module, "Watch")
      .def(py::init([](const std::string& target, std::string dag_id, std::string run_id, std::string task_id,
                       int map_index, bool all_map_indexes, bool from_start, std::uint64_t after_sequence) {
             rx::WatchQuery query;
             query.dag_id = std::move(dag_id);
             query.run_id = std::move(run_id);
             query.task_id = std::move(task_id);
             query.map_index = map_index;
             query.all_map_indexes = all_map_indexes;
             query.from_start = from_start;
             query.after_sequence = after_sequence;
             return std::make_unique<WatchIterator>(target, query);
           }),
           py::arg("target"), py::arg("dag_id"), py::arg("run_id"), py::arg("task_id"), py::arg("map_index"),
           py::arg("all_map_indexes"), py::arg("from_start"), py::arg("after_sequence"))
      .def("next", &WatchIterator::next, py::arg("timeout") = py::none(),
           "The next event (a dict); TimeoutError after `timeout` seconds without one.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", [](WatchIterator& watch) { return watch.next(std::nullopt); })
      .def("cancel", &WatchIterator::cancel, "Ends the watch: iteration stops.")
      .def_property_readonly("last_sequence", &WatchIterator::last_sequence,
                             "Sequence number of the last event handed out (resume with after_sequence).");

  module.def("_shutdown", &ClientRuntime::shutdown, "Stops the module's threads (registered with atexit).");
}

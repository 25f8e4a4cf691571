#include "client_calls.hpp"

#include "json_convert.hpp"
#include "runtime.hpp"

#include <remote_xcomm/blocking.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/json/parse.hpp>

#include <cmath>
#include <future>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace rx::python {

namespace {

double seconds_since_epoch(std::chrono::system_clock::time_point at) {
  return std::chrono::duration<double>(at.time_since_epoch()).count();
}

void add_key(py::dict& out, const TaskInstanceKey& key) {
  out["dag_id"] = key.dag_id;
  out["task_id"] = key.task_id;
  out["run_id"] = key.run_id;
  out["map_index"] = key.map_index;
}

py::dict xcom_to_dict(const XCom& xcom) {
  py::dict out;
  add_key(out, xcom.task_instance);
  out["key"] = xcom.key;
  boost::system::error_code error;
  const boost::json::value value = boost::json::parse(xcom.value_json, error);
  if (error) {
    throw std::runtime_error("the server sent an XCom value that is not JSON: " + error.message());
  }
  out["value"] = from_json(value);
  out["attempt"] = xcom.attempt;
  out["sequence"] = xcom.sequence;
  out["timestamp"] = seconds_since_epoch(xcom.timestamp);
  return out;
}

py::dict state_to_dict(const TaskStateInfo& state) {
  py::dict out;
  add_key(out, state.task_instance);
  out["state"] = std::string(to_string(state.state));
  out["since"] = seconds_since_epoch(state.since);
  out["attempt"] = state.attempt;
  out["message"] = state.message;
  out["sequence"] = state.sequence;
  return out;
}

py::dict event_to_dict(const WatchEvent& event) {
  py::dict out;
  out["sequence"] = event.sequence;
  switch (event.kind) {
    case WatchEvent::Kind::xcom:
      out["kind"] = "xcom";
      out["xcom"] = xcom_to_dict(event.xcom);
      break;
    case WatchEvent::Kind::state:
      out["kind"] = "state";
      out["state"] = state_to_dict(event.state);
      break;
    case WatchEvent::Kind::cleared:
      out["kind"] = "cleared";
      out["state"] = state_to_dict(event.state);
      break;
  }
  return out;
}

py::list xcoms_to_list(const std::vector<XCom>& xcoms) {
  py::list out;
  for (const auto& xcom : xcoms) {
    out.append(xcom_to_dict(xcom));
  }
  return out;
}

// Hands a call's outcome to `done` on the callback thread, converting it there with the GIL.
template <typename Result, typename Convert>
auto deliver_to(ClientRuntime& runtime, const PythonCallback& done, Convert convert) {
  return [runtime = &runtime, done, convert](grpc::Status status, Result result) {
    runtime->post_python([done, convert, status = std::move(status), result = std::move(result)] {
      const py::object callback = done.take();
      if (!status.ok()) {
        callback(static_cast<int>(status.error_code()), status.error_message(), py::none());
        return;
      }
      py::object value;
      try {
        value = convert(result);
      } catch (py::error_already_set& error) {
        callback(static_cast<int>(grpc::StatusCode::INTERNAL), std::string(py::str(error.value())), py::none());
        return;
      }
      callback(0, std::string(), value);
    });
  };
}

}  // namespace

std::optional<std::chrono::milliseconds> to_timeout(const std::optional<double>& seconds) {
  if (!seconds) {
    return std::nullopt;
  }
  if (!(*seconds >= 0.0) || !std::isfinite(*seconds)) {
    throw py::value_error("timeout must be a finite number of seconds >= 0, or None");
  }
  return std::chrono::milliseconds(std::llround(*seconds * 1000.0));
}

py::dict send(const std::string& target, const py::dict& data, const std::optional<double>& timeout,
              bool wait_for_ready) {
  const boost::json::object payload = to_json_object(data, "data");
  const TaskInstanceKey key = key_from_annotations(payload);  // std::invalid_argument: ValueError
  SendOptions options;
  options.timeout = to_timeout(timeout);
  options.wait_for_ready = wait_for_ready;

  ClientRuntime& runtime = ClientRuntime::get();
  const Cancellation cancellation(runtime.executor());
  auto promise = std::make_shared<std::promise<std::pair<grpc::Status, boost::json::object>>>();
  auto future = promise->get_future();
  runtime.client().send(
      target, key, payload, options,
      boost::asio::bind_cancellation_slot(cancellation.slot(), [promise, signal = cancellation.signal()](
                                                                   grpc::Status status, boost::json::object reply) {
        promise->set_value({std::move(status), std::move(reply)});
      }));
  auto [status, reply] = wait_interruptibly(future, [&cancellation] { cancellation.cancel(); });
  if (!status.ok()) {
    raise_rpc_error(status);
  }
  return from_json(reply);
}

void PendingCall::cancel() const { cancellation_->cancel(); }

PendingCall start_send(const std::string& target, const py::dict& data, const std::optional<double>& timeout,
                       bool wait_for_ready, const py::function& done) {
  const boost::json::object payload = to_json_object(data, "data");
  const TaskInstanceKey key = key_from_annotations(payload);
  SendOptions options;
  options.timeout = to_timeout(timeout);
  options.wait_for_ready = wait_for_ready;

  ClientRuntime& runtime = ClientRuntime::get();
  auto cancellation = std::make_shared<const Cancellation>(runtime.executor());
  const PythonCallback callback(done);
  auto deliver = deliver_to<boost::json::object>(
      runtime, callback, [](const boost::json::object& reply) -> py::object { return from_json(reply); });
  runtime.client().send(
      target, key, payload, options,
      boost::asio::bind_cancellation_slot(cancellation->slot(),
                                          [deliver, cancellation](grpc::Status status, boost::json::object reply) {
                                            deliver(std::move(status), std::move(reply));
                                          }));
  return PendingCall(std::move(cancellation));
}

py::list pull(const std::string& target, const XComQuery& query) {
  ClientRuntime& runtime = ClientRuntime::get();
  const Cancellation cancellation(runtime.executor());
  auto promise = std::make_shared<std::promise<std::pair<grpc::Status, std::vector<XCom>>>>();
  auto future = promise->get_future();
  runtime.client().pull(
      target, query,
      boost::asio::bind_cancellation_slot(
          cancellation.slot(), [promise, signal = cancellation.signal()](grpc::Status status, std::vector<XCom> xcoms) {
            promise->set_value({std::move(status), std::move(xcoms)});
          }));
  auto [status, xcoms] = wait_interruptibly(future, [&cancellation] { cancellation.cancel(); });
  if (!status.ok()) {
    raise_rpc_error(status);
  }
  return xcoms_to_list(xcoms);
}

PendingCall start_pull(const std::string& target, const XComQuery& query, const py::function& done) {
  ClientRuntime& runtime = ClientRuntime::get();
  auto cancellation = std::make_shared<const Cancellation>(runtime.executor());
  const PythonCallback callback(done);
  auto deliver = deliver_to<std::vector<XCom>>(
      runtime, callback, [](const std::vector<XCom>& xcoms) -> py::object { return xcoms_to_list(xcoms); });
  runtime.client().pull(
      target, query,
      boost::asio::bind_cancellation_slot(cancellation->slot(),
                                          [deliver, cancellation](grpc::Status status, std::vector<XCom> xcoms) {
                                            deliver(std::move(status), std::move(xcoms));
                                          }));
  return PendingCall(std::move(cancellation));
}

// One next() of the stream: its outcome, kept across a timed-out wait so that no event is lost.
struct WatchIterator::Waiting {
  std::promise<std::pair<grpc::Status, WatchEvent>> promise;
  std::future<std::pair<grpc::Status, WatchEvent>> future = promise.get_future();
};

WatchIterator::WatchIterator(const std::string& target, const WatchQuery& query)
    : watch_(ClientRuntime::get().client().watch(target, query)) {}

py::dict WatchIterator::next(const std::optional<double>& timeout) {
  if (cancelled_ || !watch_) {
    throw py::stop_iteration();
  }
  if (!waiting_) {
    waiting_ = std::make_shared<Waiting>();
    watch_->next([waiting = waiting_](grpc::Status status, WatchEvent event) {
      waiting->promise.set_value({std::move(status), std::move(event)});
    });
  }
  const auto limit = to_timeout(timeout);
  const auto deadline = std::chrono::steady_clock::now() + limit.value_or(std::chrono::milliseconds(0));
  for (;;) {
    {
      const py::gil_scoped_release release;
      if (waiting_->future.wait_for(SIGNAL_POLL) == std::future_status::ready) {
        break;
      }
    }
    if (PyErr_CheckSignals() != 0) {
      py::error_already_set error;
      cancel();
      throw error;
    }
    if (limit && std::chrono::steady_clock::now() >= deadline) {
      PyErr_SetString(PyExc_TimeoutError, "no watch event within the timeout (the watch goes on)");
      throw py::error_already_set();
    }
  }
  auto [status, event] = waiting_->future.get();
  waiting_.reset();
  if (!status.ok()) {
    if (cancelled_ || status.error_code() == grpc::StatusCode::CANCELLED) {
      cancelled_ = true;
      throw py::stop_iteration();
    }
    raise_rpc_error(status);
  }
  return event_to_dict(event);
}

void WatchIterator::cancel() {
  cancelled_ = true;
  if (watch_) {
    watch_->cancel();
  }
}

std::uint64_t WatchIterator::last_sequence() const noexcept { return watch_ ? watch_->last_sequence() : 0; }

}  // namespace rx::python

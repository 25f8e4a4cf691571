#include "runtime.hpp"

#include <remote_xcomm/error.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/json/object.hpp>

#include <condition_variable>
#include <deque>
#include <exception>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace py = pybind11;

namespace rx::python {

namespace {

py::object error_class(const char* name) { return py::module_::import("remote_xcomm._errors").attr(name); }

[[noreturn]] void raise_instance(const py::object& type, const py::object& instance) {
  PyErr_SetObject(type.ptr(), instance.ptr());
  throw py::error_already_set();
}

// rx::errc's enumerators, by value, for EndpointError.reason.
const char* errc_name(int value) {
  static constexpr const char* NAMES[] = {
      "",
      "no_request_held",
      "get_already_pending",
      "endpoint_closed",
      "request_cancelled",
      "reply_not_json",
      "reply_too_large",
      "no_more_results",
      "already_waiting",
      "xcom_not_found",
      "xcom_wait_timed_out",
      "xcom_limit_reached",
      "invalid_xcom",
      "xcom_store_failed",
  };
  constexpr int COUNT = static_cast<int>(sizeof(NAMES) / sizeof(NAMES[0]));
  return value > 0 && value < COUNT ? NAMES[value] : "";
}

}  // namespace

void raise_rpc_error(const grpc::Status& status) {
  const py::object type = error_class("RpcError");
  raise_instance(type, type(static_cast<int>(status.error_code()), status.error_message()));
}

void raise_endpoint_error(const boost::system::error_code& error) {
  std::string reason;
  if (error.category() == rx::error_category()) {
    reason = errc_name(error.value());
  } else if (error == boost::asio::error::operation_aborted) {
    reason = "operation_aborted";
  } else {
    reason = error.category().name();
    reason.push_back(':');
    reason.append(std::to_string(error.value()));
  }
  const py::object type = error_class("EndpointError");
  raise_instance(type, type(reason, error.message()));
}

void Cancellation::cancel() const {
  boost::asio::post(loop_, [signal = signal_] { signal->emit(boost::asio::cancellation_type::terminal); });
}

struct ClientRuntime::State {
  boost::asio::io_context context;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work{context.get_executor()};
  Client client{context};
  std::thread loop_thread;

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::function<void()>> jobs;
  bool stopping = false;
  std::thread callback_thread;

  void run_loop() {
    for (;;) {
      try {
        context.run();
        return;
      } catch (const std::exception& error) {
        // Our completions only set promises and queue jobs; report anything else and go on.
        std::cerr << "remote_xcomm: client loop handler threw: " << error.what() << std::endl;
      }
    }
  }

  void run_callbacks() {
    std::vector<std::function<void()>> batch;
    for (;;) {
      {
        std::unique_lock lock(mutex);
        wake.wait(lock, [this] { return stopping || !jobs.empty(); });
        if (stopping) {
          return;  // the interpreter is finalising: what is left is dropped (its references leak)
        }
        batch.assign(std::make_move_iterator(jobs.begin()), std::make_move_iterator(jobs.end()));
        jobs.clear();
      }
      const py::gil_scoped_acquire gil;
      for (auto& job : batch) {
        try {
          job();
        } catch (py::error_already_set& error) {
          error.discard_as_unraisable("remote_xcomm asynchronous call completion");
        } catch (const std::exception& error) {
          std::cerr << "remote_xcomm: asynchronous call completion threw: " << error.what() << std::endl;
        }
      }
      batch.clear();  // the jobs' captures are released with the GIL held
    }
  }
};

namespace {
ClientRuntime* runtime = nullptr;  // guarded by the GIL
bool runtime_shut_down = false;    // guarded by the GIL
}  // namespace

ClientRuntime::ClientRuntime(std::unique_ptr<State> state) : state_(std::move(state)) {}

ClientRuntime& ClientRuntime::get() {
  if (runtime_shut_down) {
    throw std::runtime_error("remote_xcomm: the interpreter is shutting down");
  }
  if (runtime == nullptr) {
    auto state = std::make_unique<State>();
    State& started = *state;
    started.loop_thread = std::thread([&started] { started.run_loop(); });
    started.callback_thread = std::thread([&started] { started.run_callbacks(); });
    runtime = new ClientRuntime(std::move(state));  // NOLINT(cppcoreguidelines-owning-memory): lives to exit
  }
  return *runtime;
}

void ClientRuntime::shutdown() {
  runtime_shut_down = true;
  if (runtime == nullptr) {
    return;
  }
  State& state = *runtime->state_;
  const py::gil_scoped_release release;
  {
    const std::lock_guard lock(state.mutex);
    state.stopping = true;
  }
  state.wake.notify_all();
  state.callback_thread.join();
  // Calls still in flight are left to the process's exit: their completions only set promises.
  state.work.reset();
  state.context.stop();
  state.loop_thread.join();
  // The runtime itself is never destroyed: gRPC may still deliver to the Client while the process
  // exits, and its channels must not be torn down behind it.
}

Client& ClientRuntime::client() noexcept { return state_->client; }

LoopExecutor ClientRuntime::executor() const noexcept { return state_->client.get_executor(); }

void ClientRuntime::post_python(std::function<void()> job) {
  {
    const std::lock_guard lock(state_->mutex);
    if (state_->stopping) {
      return;
    }
    state_->jobs.push_back(std::move(job));
  }
  state_->wake.notify_one();
}

}  // namespace rx::python

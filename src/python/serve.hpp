// The task side: serve one task instance, running its Python function on the serving thread.
#pragma once

#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/task_instance_key.hpp>

#include <pybind11/pybind11.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace rx::python {

/// `ti.rxcomm`: what task code calls while it handles a request. Its calls wait with the GIL
/// released; they may be made from any Python thread.
class RxComm {
 public:
  /// The scheduler's payload of the request (blocks until one is there): a dict.
  [[nodiscard]] pybind11::dict get();
  /// Replies to the request taken with get().
  void push(const pybind11::handle& data);
  /// Records the XCom `key` = `value` (any JSON value) for this task instance.
  void xcom_push(const std::string& key, const pybind11::handle& value);

  void bind(const Endpoint& endpoint);
  void unbind();

 private:
  [[nodiscard]] Endpoint endpoint(const char* call);
  std::mutex mutex_;
  std::optional<Endpoint> endpoint_;
};

/// Stops a serve() from any thread or from a signal handler (SIGTERM).
class ServeControl {
 public:
  void stop(int signal_number);
  [[nodiscard]] int stop_requested() const noexcept { return stop_signal_.load(); }

  struct Queue;
  std::shared_ptr<Queue> queue;

  ServeControl();

 private:
  std::atomic<int> stop_signal_{0};
};

/// Serves `key` with `options` until SIGINT (KeyboardInterrupt), control.stop() (the SIGTERM
/// handler) or a BaseException from the task: each request runs `function()` on this thread,
/// with `rxcomm` bound to the request's endpoint. Returns the stopping signal number (0 when
/// stopped without one); rethrows a non-KeyboardInterrupt BaseException after shutting down.
int serve(const TaskInstanceKey& key, const ServerOptions& options, const pybind11::object& function, RxComm& rxcomm,
          ServeControl& control);

}  // namespace rx::python

// What the module's calls share: the scheduler-side Client and its loop thread, the thread that
// runs Python callbacks for asynchronous calls, interruptible waits, and the Python exceptions.
#pragma once

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/loop.hpp>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/system/error_code.hpp>
#include <grpcpp/support/status.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <utility>

namespace rx::python {

/// How often a blocking call wakes, with the GIL, to let Python run signal handlers (Ctrl-C).
inline constexpr std::chrono::milliseconds SIGNAL_POLL{50};

/// Raises remote_xcomm.RpcError(code, details) for a failed call.
[[noreturn]] void raise_rpc_error(const grpc::Status& status);
/// Raises remote_xcomm.EndpointError for a failed endpoint operation (rx::errc and others).
[[noreturn]] void raise_endpoint_error(const boost::system::error_code& error);

/// Waits until `future` is ready, with the GIL released, and returns its value. Every
/// SIGNAL_POLL it takes the GIL and runs Python's pending signal handlers: if one raises
/// (KeyboardInterrupt), `on_interrupt()` runs (to cancel the operation) and the exception
/// propagates. Needs the GIL.
template <typename T, typename OnInterrupt>
T wait_interruptibly(std::future<T>& future, OnInterrupt&& on_interrupt) {
  for (;;) {
    {
      pybind11::gil_scoped_release release;
      if (future.wait_for(SIGNAL_POLL) == std::future_status::ready) {
        break;
      }
    }
    if (PyErr_CheckSignals() != 0) {
      pybind11::error_already_set error;
      std::forward<OnInterrupt>(on_interrupt)();
      throw error;
    }
  }
  return future.get();
}

/// A cancellation signal that lives as long as the operation bound to it and is emitted on the
/// loop, where the library's operations expect it.
class Cancellation {
 public:
  explicit Cancellation(LoopExecutor loop)
      : loop_(std::move(loop)), signal_(std::make_shared<boost::asio::cancellation_signal>()) {}
  [[nodiscard]] boost::asio::cancellation_slot slot() const { return signal_->slot(); }
  [[nodiscard]] const std::shared_ptr<boost::asio::cancellation_signal>& signal() const { return signal_; }
  /// Terminal cancellation, from any thread; no effect once the operation has completed.
  void cancel() const;

 private:
  LoopExecutor loop_;
  std::shared_ptr<boost::asio::cancellation_signal> signal_;
};

/// The module's scheduler side: one Client on a loop that a thread of the module runs, and one
/// thread that runs Python callbacks (with the GIL) for the asynchronous calls, so that neither
/// the loop nor gRPC's threads ever wait for the GIL. Started by the first call, stopped by the
/// module's atexit hook.
class ClientRuntime {
 public:
  /// The runtime, started on first use. Needs the GIL. Raises RuntimeError after shutdown().
  static ClientRuntime& get();
  /// Stops the threads (atexit). Needs the GIL; releases it while joining.
  static void shutdown();

  [[nodiscard]] Client& client() noexcept;
  [[nodiscard]] LoopExecutor executor() const noexcept;
  /// Runs `job` with the GIL on the callback thread, in order. Any thread; dropped after shutdown.
  void post_python(std::function<void()> job);

  struct State;

 private:
  explicit ClientRuntime(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

/// A Python callable kept alive by a reference taken with the GIL and released by the one call
/// that consumes it, on the callback thread. Copyable as a raw pointer (std::function needs it);
/// exactly one copy is consumed.
class PythonCallback {
 public:
  explicit PythonCallback(const pybind11::function& function) : object_(function.inc_ref().ptr()) {}
  /// Needs the GIL. Takes the reference: call once.
  [[nodiscard]] pybind11::object take() const { return pybind11::reinterpret_steal<pybind11::object>(object_); }

 private:
  PyObject* object_;
};

}  // namespace rx::python

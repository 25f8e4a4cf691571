#include "serve.hpp"

#include "json_convert.hpp"
#include "runtime.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <exception>
#include <future>
#include <iostream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

namespace py = pybind11;
namespace asio = boost::asio;

namespace rx::python {

// ---- RxComm: task code's calls, waiting with the GIL released ----

Endpoint RxComm::endpoint(const char* call) {
  const std::lock_guard lock(mutex_);
  if (!endpoint_) {
    throw std::logic_error(std::string("rxcomm.") + call +
                           "() is only available while remote_xcomm.connect_ti_function serves this task instance");
  }
  return *endpoint_;
}

void RxComm::bind(const Endpoint& endpoint) {
  const std::lock_guard lock(mutex_);
  endpoint_.emplace(endpoint);
}

void RxComm::unbind() {
  const std::lock_guard lock(mutex_);
  endpoint_.reset();
}

py::dict RxComm::get() {
  Endpoint rx = endpoint("get");
  auto promise = std::make_shared<std::promise<std::pair<boost::system::error_code, boost::json::object>>>();
  auto future = promise->get_future();
  // Interrupted (Ctrl-C), the wait is cancelled: no request is taken, a later get() finds it.
  const Cancellation cancellation(rx.get_executor());
  rx.get(asio::bind_cancellation_slot(
      cancellation.slot(),
      [promise, signal = cancellation.signal()](boost::system::error_code error, boost::json::object payloads) {
        promise->set_value({error, std::move(payloads)});
      }));
  auto [error, payloads] = wait_interruptibly(future, [&cancellation] { cancellation.cancel(); });
  if (error) {
    raise_endpoint_error(error);
  }
  return from_json(payloads);
}

void RxComm::push(const py::handle& data) {
  Endpoint rx = endpoint("push");
  boost::json::object outputs = to_json_object(data, "rxcomm.push() data");
  auto promise = std::make_shared<std::promise<boost::system::error_code>>();
  auto future = promise->get_future();
  rx.push(std::move(outputs), [promise](boost::system::error_code error) { promise->set_value(error); });
  if (const auto error = wait_interruptibly(future, [] {})) {
    raise_endpoint_error(error);
  }
}

void RxComm::xcom_push(const std::string& key, const py::handle& value) {
  Endpoint rx = endpoint("xcom_push");
  boost::json::value json = to_json(value);
  auto promise = std::make_shared<std::promise<boost::system::error_code>>();
  auto future = promise->get_future();
  rx.xcom_push(key, std::move(json), [promise](boost::system::error_code error) { promise->set_value(error); });
  if (const auto error = wait_interruptibly(future, [] {})) {
    raise_endpoint_error(error);
  }
}

// ---- The hand-off: the task coroutine (on the loop) queues an invocation for the serving thread ----

namespace {

using InvocationHandler = asio::any_completion_handler<void(std::exception_ptr)>;

// One run of the task function for one request. Whoever claims it first completes it: the serving
// thread (it runs the function, then completes it with the outcome) or the coroutine's
// cancellation (shutdown, detach) when the function has not started.
struct Invocation {
  // The handler is stored where it was first wrapped and invoked in place: Asio 1.81's
  // any_completion_handler, moved into another one, wraps itself recursively.
  template <typename Handler>
  Invocation(Endpoint rx, LoopExecutor executor, Handler&& completion)
      : endpoint(std::move(rx)), loop(std::move(executor)), handler(std::forward<Handler>(completion)) {}
  Endpoint endpoint;
  LoopExecutor loop;
  InvocationHandler handler;  // touched on the loop only, once queued
  asio::cancellation_slot slot;
  std::atomic<bool> claimed{false};
};

// Resumes the task coroutine on the loop with `outcome`. The slot is cleared there first: its
// handler holds this invocation, which holds the coroutine.
void complete(const std::shared_ptr<Invocation>& invocation, std::exception_ptr outcome) {
  LoopExecutor loop = invocation->loop;
  asio::post(loop, [invocation, outcome = std::move(outcome)]() mutable {
    if (invocation->slot.is_connected()) {
      invocation->slot.clear();
    }
    if (invocation->handler) {
      std::move(invocation->handler)(std::move(outcome));
    }
  });
}

}  // namespace

struct ServeControl::Queue {
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Invocation>> invocations;

  void push(std::shared_ptr<Invocation> invocation) {
    {
      const std::lock_guard lock(mutex);
      invocations.push_back(std::move(invocation));
    }
    wake.notify_one();
  }

  // The next invocation, or null after `timeout` or a stop.
  std::shared_ptr<Invocation> pop_for(std::chrono::milliseconds timeout, const ServeControl& control) {
    std::unique_lock lock(mutex);
    wake.wait_for(lock, timeout, [&] { return !invocations.empty() || control.stop_requested() != 0; });
    if (invocations.empty()) {
      return nullptr;
    }
    auto invocation = std::move(invocations.front());
    invocations.pop_front();
    return invocation;
  }

  std::deque<std::shared_ptr<Invocation>> take_all() {
    const std::lock_guard lock(mutex);
    return std::exchange(invocations, {});
  }
};

ServeControl::ServeControl() : queue(std::make_shared<Queue>()) {}

void ServeControl::stop(int signal_number) {
  stop_signal_.store(signal_number == 0 ? -1 : signal_number);
  { const std::lock_guard lock(queue->mutex); }  // so that a waiting pop_for sees the flag
  queue->wake.notify_all();
}

namespace {

std::string describe(const py::error_already_set& error) {
  std::string text = py::str(py::type::handle_of(error.value()).attr("__name__"));
  const std::string message = py::str(error.value());
  if (!message.empty()) {
    text.append(": ").append(message);
  }
  return text;
}

void print_line(const std::string& line) { py::print(line, py::arg("flush") = true); }

// Best effort: a closed stdout must not stop the shutdown.
void print_stopping(const std::string& line) noexcept {
  try {
    print_line(line);
  } catch (py::error_already_set& error) {
    error.discard_as_unraisable("remote_xcomm.connect_ti_function");
  } catch (...) {  // NOLINT(bugprone-empty-catch): nothing more to say
  }
}

void fail_unclaimed(const std::shared_ptr<Invocation>& invocation, const char* why) {
  if (invocation && !invocation->claimed.exchange(true)) {
    complete(invocation, std::make_exception_ptr(std::runtime_error(why)));
  }
}

// The serving thread's loop: takes invocations, runs the function with the GIL, checks signals.
void serve_requests(ServeControl::Queue& queue, const py::object& function, RxComm& rxcomm, const ServeControl& control,
                    int& stopped_by, std::optional<py::error_already_set>& failure) {
  for (;;) {
    std::shared_ptr<Invocation> invocation;
    {
      const py::gil_scoped_release release;
      invocation = queue.pop_for(SIGNAL_POLL, control);
    }
    if (PyErr_CheckSignals() != 0) {
      py::error_already_set error;
      if (error.matches(PyExc_KeyboardInterrupt)) {
        stopped_by = SIGINT;
      } else if (control.stop_requested() > 0 && !error.matches(PyExc_Exception)) {
        stopped_by = control.stop_requested();  // the SIGTERM handler's own exception
      } else {
        failure.emplace(std::move(error));
      }
      fail_unclaimed(invocation, "the task instance's server is stopping");
      return;
    }
    if (control.stop_requested() != 0) {
      stopped_by = std::max(control.stop_requested(), 0);
      fail_unclaimed(invocation, "the task instance's server is stopping");
      return;
    }
    if (!invocation || invocation->claimed.exchange(true)) {
      continue;  // nothing yet, or cancelled before it started
    }
    rxcomm.bind(invocation->endpoint);
    std::exception_ptr outcome;
    bool stop = false;
    try {
      function();
    } catch (py::error_already_set& error) {
      const std::string text = describe(error);
      if (error.matches(PyExc_KeyboardInterrupt)) {
        stopped_by = SIGINT;
        stop = true;
      } else if (control.stop_requested() > 0 && !error.matches(PyExc_Exception)) {
        stopped_by = control.stop_requested();  // the SIGTERM handler interrupted the task
        stop = true;
      } else if (!error.matches(PyExc_Exception)) {
        failure.emplace(std::move(error));  // SystemExit and other BaseExceptions end serving
        stop = true;
      } else {
        // The caller gets INTERNAL with the text; the traceback goes where Python's go.
        try {
          py::module_::import("traceback").attr("print_exception")(error.value());
        } catch (py::error_already_set& print_error) {
          print_error.discard_as_unraisable("remote_xcomm.connect_ti_function");
        }
      }
      outcome = std::make_exception_ptr(std::runtime_error(text));
    } catch (const std::exception& error) {
      outcome = std::make_exception_ptr(std::runtime_error(error.what()));
    }
    complete(invocation, std::move(outcome));
    if (stop) {
      return;
    }
  }
}

// The task coroutine, on the loop: queues the request's invocation for the serving thread and
// waits for its outcome. Cancelled (shutdown, detach) before the function started, it ends.
// A free function, not a capturing lambda: the coroutine outlives the server's copy of the closure.
asio::awaitable<void> hand_to_serving_thread(std::shared_ptr<ServeControl::Queue> queue, Endpoint rx) {
  LoopExecutor loop = rx.get_executor();
  // The function's exception, if any, is rethrown here: the server fails the request with it.
  co_await asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr)>(
      [&queue, &rx, &loop](auto handler) {
        asio::cancellation_slot slot = asio::get_associated_cancellation_slot(handler);
        auto invocation = std::make_shared<Invocation>(rx, loop, std::move(handler));
        invocation->slot = slot;
        if (invocation->slot.is_connected()) {
          invocation->slot.assign([weak = std::weak_ptr<Invocation>(invocation)](asio::cancellation_type) {
            if (auto cancelled = weak.lock(); cancelled && !cancelled->claimed.exchange(true)) {
              complete(cancelled, std::make_exception_ptr(boost::system::system_error(asio::error::operation_aborted)));
            }
          });
        }
        queue->push(std::move(invocation));
      },
      asio::use_awaitable);
}

}  // namespace

int serve(const TaskInstanceKey& key, const ServerOptions& options, const py::object& function, RxComm& rxcomm,
          ServeControl& control) {
  const std::shared_ptr<ServeControl::Queue> queue = control.queue;
  ServerOptions with = options;
  if (!with.on_task_error) {
    with.on_task_error = [](const TaskInstanceKey& of, const std::exception_ptr& error) {
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& thrown) {
        std::cerr << "remote_xcomm: task " << to_string(of) << " failed: " << thrown.what() << std::endl;
      } catch (...) {
        std::cerr << "remote_xcomm: task " << to_string(of) << " failed" << std::endl;
      }
    };
  }

  asio::io_context context;
  std::thread loop_thread;
  int stopped_by = 0;
  std::optional<py::error_already_set> failure;
  std::exception_ptr cpp_failure;
  {
    Server server(context, with);
    const bool attached =
        server.attach(key, [queue](Endpoint rx) { return hand_to_serving_thread(queue, std::move(rx)); });
    if (!attached) {
      throw std::logic_error("endpoint " + to_string(key) + " could not be attached");
    }
    server.start();  // std::runtime_error (RuntimeError) when it cannot listen
    loop_thread = std::thread([&context] {
      for (;;) {
        try {
          context.run();
          return;
        } catch (const std::exception& error) {
          std::cerr << "remote_xcomm: loop handler threw: " << error.what() << std::endl;
        }
      }
    });

    // From here on nothing may leave before the teardown below: the loop thread must be joined.
    try {
      print_line("remote_xcomm: serving " + to_string(key) + " on " + server.target());
      serve_requests(*queue, function, rxcomm, control, stopped_by, failure);
    } catch (py::error_already_set& error) {
      failure.emplace(std::move(error));
    } catch (...) {
      cpp_failure = std::current_exception();
    }

    if (stopped_by != 0) {
      print_stopping("remote_xcomm: signal " + std::to_string(stopped_by) + " received, shutting down");
    } else {
      print_stopping("remote_xcomm: shutting down");
    }
    {
      const py::gil_scoped_release release;
      // Fails what is queued and held with UNAVAILABLE and cancels the waiting task coroutines
      // (their invocations then complete on the loop); blocks until gRPC has drained.
      server.shutdown();
      for (auto& left : queue->take_all()) {
        if (!left->claimed.exchange(true)) {
          complete(left, std::make_exception_ptr(std::runtime_error("the task instance's server stopped")));
        }
      }
      context.stop();
      loop_thread.join();
      // Whatever the loop queued meanwhile goes now, before the io_context its coroutines need.
      queue->take_all();
    }
    rxcomm.unbind();
  }
  if (failure) {
    throw std::move(*failure);
  }
  if (cpp_failure) {
    std::rethrow_exception(cpp_failure);
  }
  return stopped_by;
}

}  // namespace rx::python

// The scheduler side: send (blocking and asynchronous), pull and watch, on the module's Client.
#pragma once

#include "runtime.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/watch.hpp>
#include <remote_xcomm/xcom.hpp>

#include <pybind11/pybind11.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace rx::python {

/// Seconds from Python (None: no deadline) as a deadline; ValueError when negative or NaN.
[[nodiscard]] std::optional<std::chrono::milliseconds> to_timeout(const std::optional<double>& seconds);

/// rx.requests: sends `data` to the task instance its annotations name; returns the reply dict.
[[nodiscard]] pybind11::dict send(const std::string& target, const pybind11::dict& data,
                                  const std::optional<double>& timeout, bool wait_for_ready);

/// A call started by a start_* function; cancel() cancels its RPC.
class PendingCall {
 public:
  explicit PendingCall(std::shared_ptr<const Cancellation> cancellation) : cancellation_(std::move(cancellation)) {}
  void cancel() const;

 private:
  std::shared_ptr<const Cancellation> cancellation_;
};

/// Starts a send; `done(code, details, reply_or_None)` runs later with the GIL on the module's
/// callback thread (never on a gRPC or loop thread).
[[nodiscard]] PendingCall start_send(const std::string& target, const pybind11::dict& data,
                                     const std::optional<double>& timeout, bool wait_for_ready,
                                     const pybind11::function& done);

/// rx.pull: the XComs the query names, as dicts (XCom fields, with `value` decoded).
[[nodiscard]] pybind11::list pull(const std::string& target, const XComQuery& query);
/// As pull, asynchronously: `done(code, details, list_or_None)` as for start_send.
[[nodiscard]] PendingCall start_pull(const std::string& target, const XComQuery& query, const pybind11::function& done);

/// rx.watch: an iterator over a Watch stream's events (dicts).
class WatchIterator {
 public:
  WatchIterator(const std::string& target, const WatchQuery& query);
  /// The next event; StopIteration once cancelled; RpcError when the stream ended otherwise.
  /// `timeout` (seconds, None: none): TimeoutError when no event came in time (the watch goes on).
  [[nodiscard]] pybind11::dict next(const std::optional<double>& timeout);
  void cancel();
  [[nodiscard]] std::uint64_t last_sequence() const noexcept;

 private:
  struct Waiting;
  std::optional<Watch> watch_;
  std::shared_ptr<Waiting> waiting_;  // a next() whose wait timed out, still to be collected
  bool cancelled_ = false;
};

}  // namespace rx::python

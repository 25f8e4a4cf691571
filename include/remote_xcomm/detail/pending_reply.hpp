// The reply side of one request waiting on the loop. Internal.
#pragma once

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/json/object.hpp>
#include <boost/smart_ptr/intrusive_ptr.hpp>
#include <boost/system/error_code.hpp>
#include <grpcpp/support/status.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rx::detail {

class PendingReply;

/// Where a request waits until a task takes it (an endpoint's queue). Told, on the loop, when the
/// request's caller gives up, so that the request leaves at once and its payload is freed.
class RequestQueue {
 public:
  virtual void remove(PendingReply& request) noexcept = 0;

 protected:
  ~RequestQueue() = default;
};

/// What a transport (the unary Send reactor today, a stream later) gives the endpoint queue so
/// that a task can answer one request. Reference counted: the transport's reactor and whoever
/// queues or holds the request each hold references.
///
/// Everything except the reference count runs on the loop, one thread at a time.
class PendingReply {
 public:
  PendingReply() = default;
  PendingReply(const PendingReply&) = delete;
  PendingReply& operator=(const PendingReply&) = delete;

  /// Answers the request with `outputs`, which the endpoint checked (no NaN or infinity) and
  /// encoded as `json` (a transport sends `json`; a test's fake may keep `outputs`). Errors (the
  /// request is then finished with an error status instead): errc::request_cancelled when the
  /// caller gave up or it was already finished, errc::reply_too_large when the encoded reply
  /// exceeds the transport's limit.
  virtual boost::system::error_code reply(const boost::json::object& outputs, std::string&& json) = 0;
  /// Finishes the request with `status`; false if it was already finished.
  virtual bool fail(const grpc::Status& status) = 0;
  [[nodiscard]] virtual bool finished() const noexcept = 0;
  /// True when the caller gave up (cancelled, or its deadline passed) and the request is not
  /// finished yet. The endpoint queue then finishes it with CANCELLED instead of delivering it.
  [[nodiscard]] virtual bool cancelled() const { return false; }

  // What the caller sent besides the payload. Read from the transport while the request is
  // unfinished; empty (or none) once it is finished.
  [[nodiscard]] virtual std::optional<std::chrono::system_clock::time_point> deadline() const { return {}; }
  [[nodiscard]] virtual std::string peer() const { return {}; }
  [[nodiscard]] virtual std::vector<std::pair<std::string, std::string>> metadata() const { return {}; }

  /// Whether the caller gave up and the transport said so (give_up ran).
  [[nodiscard]] bool caller_gave_up() const noexcept { return gave_up_; }
  /// Emitted (terminal) when the caller gives up: a task binds its work to it to stop early.
  [[nodiscard]] boost::asio::cancellation_slot cancellation_slot() noexcept { return cancellation_.slot(); }

  /// The queue the request waits in, or null once it left (taken by a task, failed, closed).
  void enter_queue(RequestQueue* queue) noexcept { queue_ = queue; }
  void leave_queue() noexcept { queue_ = nullptr; }

  /// The transport, on the loop, when the caller gave up (cancelled, or its deadline passed): the
  /// request leaves its queue (freeing its payload), is finished with `status`, and whoever holds
  /// it is told through the cancellation slot.
  void give_up(const grpc::Status& status) {
    if (finished() || gave_up_) {
      return;
    }
    gave_up_ = true;
    const boost::intrusive_ptr<PendingReply> keep_alive(this);  // the queue may hold the last reference
    if (RequestQueue* queue = std::exchange(queue_, nullptr)) {
      queue->remove(*this);
    }
    fail(status);
    cancellation_.emit(boost::asio::cancellation_type::terminal);
  }

  friend void intrusive_ptr_add_ref(PendingReply* reply) noexcept {
    reply->references_.fetch_add(1, std::memory_order_relaxed);
  }
  friend void intrusive_ptr_release(PendingReply* reply) noexcept {
    if (reply->references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      reply->last_reference_dropped();
    }
  }

 protected:
  virtual ~PendingReply() = default;

  /// Called once the reference count reached zero. A transport that outlives its references
  /// (a reactor gRPC still calls) overrides this.
  virtual void last_reference_dropped() noexcept { delete this; }

  /// Takes a reference unless the count already reached zero (any thread).
  [[nodiscard]] bool try_add_reference() noexcept {
    int count = references_.load(std::memory_order_relaxed);
    while (count > 0) {
      if (references_.compare_exchange_weak(count, count + 1, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        return true;
      }
    }
    return false;
  }

 private:
  std::atomic<int> references_{0};
  boost::asio::cancellation_signal cancellation_;
  RequestQueue* queue_ = nullptr;
  bool gave_up_ = false;
};

using PendingReplyPtr = boost::intrusive_ptr<PendingReply>;

}  // namespace rx::detail

// The reply side of one request waiting on the loop. Internal.
#pragma once

#include <boost/json/object.hpp>
#include <boost/smart_ptr/intrusive_ptr.hpp>
#include <boost/system/error_code.hpp>
#include <grpcpp/support/status.h>

#include <atomic>

namespace rx::detail {

/// What a transport (the unary Send reactor today, a stream later) gives the endpoint queue so
/// that a task's push can answer one request. Reference counted: the transport holds one
/// reference until gRPC is done with the call, and whoever queues the request holds another.
///
/// `reply` and `fail` run on the loop only and finish the request once.
class PendingReply {
 public:
  PendingReply() = default;
  PendingReply(const PendingReply&) = delete;
  PendingReply& operator=(const PendingReply&) = delete;

  /// Answers the request with `outputs`. Errors (the request is then finished with an error
  /// status instead): errc::request_cancelled when the caller gave up or it was already finished,
  /// errc::reply_not_json when `outputs` holds NaN or infinity, errc::reply_too_large when the
  /// encoded reply exceeds the transport's limit.
  virtual boost::system::error_code reply(const boost::json::object& outputs) = 0;
  /// Finishes the request with `status`; false if it was already finished.
  virtual bool fail(const grpc::Status& status) = 0;
  [[nodiscard]] virtual bool finished() const noexcept = 0;
  /// True when the caller gave up (cancelled, or its deadline passed) and the request is not
  /// finished yet. The endpoint queue then finishes it with CANCELLED instead of delivering it.
  [[nodiscard]] virtual bool cancelled() const { return false; }

  friend void intrusive_ptr_add_ref(PendingReply* reply) noexcept {
    reply->references_.fetch_add(1, std::memory_order_relaxed);
  }
  friend void intrusive_ptr_release(PendingReply* reply) noexcept {
    if (reply->references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete reply;
    }
  }

 protected:
  virtual ~PendingReply() = default;

 private:
  std::atomic<int> references_{0};
};

using PendingReplyPtr = boost::intrusive_ptr<PendingReply>;

}  // namespace rx::detail

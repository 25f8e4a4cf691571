// The reply side of one request waiting on the loop. Internal.
#pragma once

#include <boost/json/object.hpp>
#include <boost/smart_ptr/intrusive_ptr.hpp>
#include <grpcpp/support/status.h>

#include <atomic>

namespace rx::detail {

/// What a transport (the unary Send reactor today, a stream later) gives the endpoint queue so
/// that a task's push can answer one request. Reference counted: the transport holds one
/// reference until gRPC is done with the call, and whoever queues the request holds another.
///
/// `reply` and `fail` run on the loop only and finish the request once; both return false if it
/// was already finished (the caller gave up and the transport answered CANCELLED).
class PendingReply {
 public:
  PendingReply() = default;
  PendingReply(const PendingReply&) = delete;
  PendingReply& operator=(const PendingReply&) = delete;

  virtual bool reply(const boost::json::object& outputs) = 0;
  virtual bool fail(const grpc::Status& status) = 0;
  [[nodiscard]] virtual bool finished() const noexcept = 0;

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

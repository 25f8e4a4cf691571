// A PendingReply without gRPC, for testing the endpoint queue on its own.
#pragma once

#include <remote_xcomm/detail/pending_reply.hpp>
#include <remote_xcomm/error.hpp>

#include <boost/json/object.hpp>
#include <boost/smart_ptr/intrusive_ptr.hpp>
#include <grpcpp/support/status.h>

#include <atomic>
#include <optional>

namespace rx_test {

/// Records how the endpoint queue finished one request. Like the real transport, it finishes
/// once: a second reply() fails with errc::request_cancelled, a second fail() returns false; and a
/// caller that gave up is observed through cancelled(), as gRPC's IsCancelled() is observed.
class FakeReply final : public rx::detail::PendingReply {
 public:
  FakeReply() noexcept { live.fetch_add(1); }
  ~FakeReply() override { live.fetch_sub(1); }

  boost::system::error_code reply(const boost::json::object& outputs, std::string&& /*json*/) override {
    if (finished_) {
      return rx::errc::request_cancelled;
    }
    if (gave_up_) {
      fail(grpc::Status(grpc::StatusCode::CANCELLED, "caller gave up"));
      return rx::errc::request_cancelled;
    }
    finished_ = true;
    outputs_ = outputs;
    status_ = grpc::Status::OK;
    return {};
  }

  bool fail(const grpc::Status& status) override {
    if (finished_) {
      return false;
    }
    finished_ = true;
    status_ = status;
    return true;
  }

  [[nodiscard]] bool finished() const noexcept override { return finished_; }
  [[nodiscard]] bool cancelled() const override { return gave_up_ && !finished_; }

  using PendingReply::give_up;

  /// The caller gives up (cancels, or its deadline passes) and the transport tells the loop at
  /// once, as the Send reactor's OnCancel does: the request leaves its queue, finishes with
  /// CANCELLED, and its holder's cancellation slot fires. Call on the loop.
  void cancel_by_caller() { give_up(grpc::Status(grpc::StatusCode::CANCELLED, "caller gave up")); }
  /// The caller gives up and the request stays unfinished until the queue notices (cancelled()),
  /// as with gRPC's default reactor.
  void give_up() { gave_up_ = true; }

  /// The task's reply, if it replied.
  [[nodiscard]] const std::optional<boost::json::object>& outputs() const noexcept { return outputs_; }
  /// How the request finished, if it did.
  [[nodiscard]] const std::optional<grpc::Status>& status() const noexcept { return status_; }
  [[nodiscard]] grpc::StatusCode code() const { return status_ ? status_->error_code() : grpc::StatusCode::UNKNOWN; }

  /// Number of FakeReply objects alive, to check that the queue releases what it holds.
  static inline std::atomic<int> live{0};

 private:
  bool finished_ = false;
  bool gave_up_ = false;
  std::optional<boost::json::object> outputs_;
  std::optional<grpc::Status> status_;
};

using FakeReplyPtr = boost::intrusive_ptr<FakeReply>;

inline FakeReplyPtr make_fake_reply() { return FakeReplyPtr(new FakeReply); }

}  // namespace rx_test

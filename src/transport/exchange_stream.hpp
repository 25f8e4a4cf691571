// Transport: the server side of one Exchange stream, many requests matched by id, read and
// written in batches.
#pragma once

#include <remote_xcomm/detail/loop_core.hpp>
#include <remote_xcomm/detail/pending_reply.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include "security/access.hpp"
#include "transport/request_decoding.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/set.hpp>
#include <boost/json/object.hpp>
#include <grpcpp/support/server_callback.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace grpc {
class CallbackServerContext;
}

namespace rx::detail {

class ExchangeStream;

/// What an Exchange stream needs from its server.
class StreamHost {
 public:
  /// Any thread: the server refuses new requests (it is shutting down).
  [[nodiscard]] virtual bool refusing() const noexcept = 0;
  /// Any thread: the server holds as many requests as it may (ServerOptions::max_requests_in_flight).
  [[nodiscard]] virtual bool saturated() const noexcept = 0;
  /// Any thread: the server holds more than it may, counting a request just started: that one
  /// is over the limit and must be refused (saturated() counts as full what this admits last).
  [[nodiscard]] virtual bool over_limit() const noexcept = 0;
  /// Any thread: a request was taken in / has its status. A graceful shutdown waits for them.
  virtual void request_started() noexcept = 0;
  virtual void request_finished() noexcept = 0;
  /// Loop: a reply frame with `code` is queued for a request (or a frame) read at `read_at`;
  /// every frame's outcome passes here once, for Stats.
  virtual void request_replied(grpc::StatusCode code, std::chrono::steady_clock::time_point read_at) noexcept = 0;
  /// Loop: delivers a request to its endpoint, or fails it (NOT_FOUND, UNAVAILABLE).
  virtual void route(TaskInstanceKeyView key, PendingReplyPtr reply, boost::json::object&& payload) = 0;
  /// Loop: the stream is tracked from here until it is closed, so that a shutdown can end it.
  /// False when the server is already closed: the stream must end at once.
  virtual bool stream_opened(ExchangeStream& stream) = 0;
  virtual void stream_closed(ExchangeStream& stream) noexcept = 0;

 protected:
  ~StreamHost() = default;
};

/// Limits of one stream, from rx::ServerOptions.
struct StreamLimits {
  std::size_t max_message_bytes = 4 * 1024 * 1024;  // each message written, and each reply
  RequestLimits request;                            // decoding a batch: key fields, frames per batch, payloads
  std::size_t max_in_flight = 4096;                 // requests read and unanswered before the stream stops reading
};

/// Whose token the stream carries. `control` null: nothing to check per frame (no tokens on the
/// server, or the scheduler's token). Otherwise each frame is checked against its task instance
/// before its payload is parsed, and one that the token does not reach is answered with
/// PERMISSION_DENIED; the stream goes on.
struct StreamAccess {
  const AccessControl* control = nullptr;
  Caller caller;
};

/// One Exchange stream and its reactor.
///
/// gRPC's reactions stay short: a batch read is parsed on the thread that read it (bad JSON is
/// refused there), then handed to the loop as one job; a finished write hands the next one to the
/// loop the same way. Everything else (requests in flight, the outgoing batch, the deadlines)
/// lives on the loop, one thread at a time, without locks.
///
/// Writes coalesce: replies made while a write is on the wire, or during the loop run that made
/// the first of them, go out together in the next message, split only at the message size
/// limit. No timer: a lone reply goes out at once.
///
/// Flow control: once `max_in_flight` requests are read and unanswered, or the server is
/// saturated while this stream has requests in flight, the stream stops reading until one of its
/// replies goes out, so HTTP/2 flow control holds the client back. (A stream with nothing in
/// flight always reads, so that each stream makes progress; it may take one batch past a
/// saturated server's limit.)
///
/// Lifetime: reference counted by gRPC (until OnDone) and by whatever the loop holds (queued
/// jobs, requests, the deadline timer's wait). Finished exactly once, always on the loop: OK after
/// the client's half-close once every request is answered; UNAVAILABLE when the server shuts
/// down; CANCELLED when the stream breaks (every request in flight is then given up).
class ExchangeStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, remote_xcomm::v1::ExchangeResponse> {
 public:
  /// Starts reading. `host` must outlive the stream's finish (a server's graceful shutdown waits
  /// for every stream to finish).
  ExchangeStream(grpc::CallbackServerContext* context, StreamHost& host, LoopExecutor loop, StreamLimits limits,
                 StreamAccess access = {});

  /// Loop: the server is shutting down and its endpoints are closed: end the stream with
  /// UNAVAILABLE once the replies already made are written.
  void end_for_shutdown();

  // grpc::ServerBidiReactor, on gRPC's threads.
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  bool InternalInlineable() override { return true; }  // OnDone only drops a reference

  friend void intrusive_ptr_add_ref(ExchangeStream* stream) noexcept {
    stream->references_.fetch_add(1, std::memory_order_relaxed);
  }
  friend void intrusive_ptr_release(ExchangeStream* stream) noexcept {
    if (stream->references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete stream;
    }
  }

 private:
  class Request;
  struct ReadBatch;
  struct MemberJob final : LoopJob {
    MemberJob(ExchangeStream* owner, void (ExchangeStream::*function)()) noexcept : stream(owner), run(function) {
      invoke = &invoke_member;
    }
    static void invoke_member(LoopJob* job, bool run) noexcept;
    ExchangeStream* stream;
    void (ExchangeStream::*run)();
  };
  struct DeadlineOrder {
    bool operator()(const Request& a, const Request& b) const noexcept;
  };
  using DeadlineSet = boost::intrusive::multiset<Request, boost::intrusive::compare<DeadlineOrder>>;

  ~ExchangeStream() override;

  // Queues `function` on the loop with a reference to the stream (any thread).
  template <typename Function>
  void to_loop(Function&& function);

  // ---- the loop: every member below ----
  void open();
  void take_batch(ReadBatch& batch);
  void take_request(std::uint64_t id, TaskInstanceKeyView key, boost::json::object&& payload, std::uint64_t timeout_ms,
                    std::chrono::steady_clock::time_point read_at);
  void take_cancel(std::uint64_t id, std::chrono::steady_clock::time_point read_at);
  void read_on();
  void reads_ended();
  void refuse_batch(grpc::Status status);
  void write_done(bool ok);
  void break_stream(const grpc::Status& for_requests, grpc::Status for_stream);
  /// A request's status is decided: queue its reply frame, let the stream read on.
  void answer(Request& request, grpc::StatusCode code, const std::string& message, std::string&& reply_json);
  void queue_reply(std::uint64_t id, grpc::StatusCode code, const std::string& message, std::string&& reply_json,
                   std::chrono::steady_clock::time_point read_at);
  void schedule_flush();
  void scheduled_flush();
  void flush();
  void request_finish(grpc::Status status);
  void maybe_finish();
  void give_up_all(const grpc::Status& status);
  void arm_deadline_timer();
  void deadlines_passed();

  StreamHost& host_;
  LoopExecutor loop_;
  StreamLimits limits_;
  StreamAccess access_;
  std::atomic<int> references_{1};  // gRPC's, until OnDone

  // Set in the constructor, read-only afterwards.
  std::string peer_;
  std::shared_ptr<const std::vector<std::pair<std::string, std::string>>> metadata_;
  std::optional<std::chrono::system_clock::time_point> stream_deadline_;

  // The message being read: gRPC's until OnReadDone, which moves it into a batch for the loop.
  // Every read after the first is started on the loop, as are writes and the finish, so that
  // none of them can race another.
  grpc::ByteBuffer reading_;  // the batch being read, undecoded
  grpc::Status end_status_;   // how the stream ends once its last request is answered (a refused batch)

  // Loop state.
  std::unordered_map<std::uint64_t, Request*> in_flight_;
  // The requests in flight that have a deadline, earliest first (made with the first one).
  std::unique_ptr<DeadlineSet> deadlines_;
  std::unique_ptr<boost::asio::steady_timer> deadline_timer_;
  std::chrono::steady_clock::time_point timer_armed_for_ = std::chrono::steady_clock::time_point::max();
  std::deque<remote_xcomm::v1::ExchangeResponse> outbox_;        // batches waiting for the wire
  std::size_t outbox_back_bytes_ = 0;                            // bound on the encoded size of outbox_.back()
  remote_xcomm::v1::ExchangeResponse writing_;                   // gRPC's while a write is in flight
  remote_xcomm::v1::ExchangeResponse spare_;                     // a written batch, cleared, for the next
  MemberJob flush_job_{this, &ExchangeStream::scheduled_flush};  // queued while flush_scheduled_
  grpc::Status finish_status_;
  bool opened_ = false;
  bool registered_ = false;
  bool read_paused_ = false;
  bool write_in_flight_ = false;
  bool flush_scheduled_ = false;
  bool reads_ended_ = false;
  bool broken_ = false;  // cancelled, or a write failed: nothing more reaches the client
  bool finish_requested_ = false;
  bool finished_ = false;
};

/// The reactor of an Exchange call the server refuses outright (it is shutting down).
class RefusedStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, remote_xcomm::v1::ExchangeResponse> {
 public:
  explicit RefusedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
  bool InternalInlineable() override { return true; }

 private:
  ~RefusedStream() override = default;
};

}  // namespace rx::detail

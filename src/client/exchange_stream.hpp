// Transport: the client side of one Exchange stream. A Client's sends to one target, multiplexed
// by id and written in batches; replies matched by id and completed on each caller's executor.
#pragma once

#include "target_channel.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/detail/loop_core.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <boost/asio/any_completion_executor.hpp>
#include <boost/intrusive/set.hpp>
#include <boost/json/object.hpp>
#include <grpcpp/alarm.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace rx::detail {

/// Client::send over the Exchange stream of `channel` (any thread; see Client::send). The send
/// goes to the Client's loop (`channel->loop`), which owns every stream of the Client.
void send_on_exchange(const std::shared_ptr<TargetChannel>& channel, const TaskInstanceKey& key,
                      std::string payload_json, const SendOptions& options, const LoopExecutor* handler_loop,
                      Client::SendHandler handler);

/// The Client is being destroyed (any thread; no send of its own may start any more): each of
/// its streams ends as soon as it has no send in flight, and never touches the Client again.
void close_exchange_streams(const LoopExecutor& client_loop, std::vector<std::shared_ptr<ExchangeSlots>> slots);

/// How many client Exchange streams exist in the process, and a wait until there are none (with
/// a bound; false if it passed first). For tests: every stream a test's Clients opened must be
/// gone once they are destroyed and their sends have completed.
[[nodiscard]] std::size_t client_exchange_streams_alive() noexcept;
[[nodiscard]] bool wait_until_no_client_exchange_streams(std::chrono::milliseconds bound);

/// One send over an Exchange stream, from Client::send until its handler has run.
///
/// It is the loop job that takes it to its stream on the Client's loop, then the job that
/// completes it on the handler's executor. Reference counted: the send's own reference goes from
/// send() through its stream to the completion, which releases it before running the handler; the
/// handler's cancellation slot and a cancel on its way to the loop hold others, so that a cancel
/// arriving late finds the send settled rather than freed.
class ExchangeSend final : public LoopJob, public boost::intrusive::set_base_hook<> {
 public:
  ExchangeSend(Client::SendHandler handler, const LoopExecutor* handler_loop);
  ExchangeSend(const ExchangeSend&) = delete;
  ExchangeSend& operator=(const ExchangeSend&) = delete;

  [[nodiscard]] std::chrono::steady_clock::time_point deadline_or_max() const noexcept {
    return expires.value_or(std::chrono::steady_clock::time_point::max());
  }

  friend void intrusive_ptr_add_ref(ExchangeSend* send) noexcept {
    send->references_.fetch_add(1, std::memory_order_relaxed);
  }
  friend void intrusive_ptr_release(ExchangeSend* send) noexcept {
    if (send->references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete send;
    }
  }

  // The caller's side. Exactly one of loop_work and other_work is set: tracked work on the
  // handler's executor, released only after the handler has run.
  Client::SendHandler handler;
  std::optional<LoopExecutor> loop_work;
  boost::asio::any_completion_executor other_work;

  // The request, until its stream takes it.
  std::shared_ptr<TargetChannel> channel;
  remote_xcomm::v1::ExchangeFrame frame;
  std::optional<std::chrono::steady_clock::time_point> expires;
  bool wait_for_ready = false;

  // On the Client's loop only.
  ClientExchangeStream* stream = nullptr;  // the stream it is in flight on, until settled
  std::uint64_t id = 0;
  bool settled = false;           // its outcome is decided; its completion is on its way
  bool cancel_requested = false;  // cancelled before it reached a stream

  // The outcome, written on the loop before the completion is handed to the handler's executor.
  grpc::Status status;
  boost::json::object reply;

 private:
  ~ExchangeSend() = default;
  std::atomic<int> references_{1};  // the send's own
};

/// One Exchange stream and its reactor: every send of one Client to one target (and one
/// wait_for_ready setting) in flight at once, each under an id of its own.
///
/// Threads, as the server's stream (src/transport/exchange_stream.hpp): gRPC's reactions stay
/// short. A batch of replies is parsed on the thread that read it, then handed to the Client's
/// loop as one job, which matches each reply to its send by id and completes the send on its
/// handler's executor. Everything else lives on the loop, one thread at a time, without locks:
/// the sends in flight, the outgoing batches, the deadlines, and every gRPC operation after the
/// call's start (StartRead, StartWrite, RemoveHold, TryCancel), made under a hold.
///
/// Writes coalesce: frames queued while a write is on the wire, or during the loop run that queued
/// the first of them, go out together in the next message, split only at the message size limit.
/// No timer: a lone send goes out at once.
///
/// Deadlines: a send with a deadline carries it as the frame's timeout_ms and sits in a set
/// ordered by deadline, with one gRPC alarm per stream armed for the earliest. Past its deadline a
/// send completes with DEADLINE_EXCEEDED and a cancel frame follows it. gRPC's alarm rather than
/// an Asio timer: the stream may outlive its Client's io_context (below) and must own nothing
/// that needs it.
///
/// Ending: a stream that breaks (its read or a write fails, or the server ends it) unregisters at
/// once, so that the next send opens a new stream, and fails every send in flight on it with
/// UNAVAILABLE once gRPC reports its status (OnDone). A stream whose Client is gone ends (it
/// cancels the call) as soon as it has no send in flight.
///
/// Lifetime: reference counted by gRPC (until OnDone), by its registration with its target, and by
/// whatever the loop holds (queued jobs, the alarm). It may outlive its Client and the Client's
/// io_context: it pins the loop's core (detail::pin_loop) and hands work over with
/// LoopCore::hand_off_pinned, which destroys a job unrun once the io_context is gone; such a job
/// gives the loop up (lost_loop: the call is cancelled, its hold released). The last job of a
/// stream with nothing in flight needs nothing but the core and gRPC, so the application may
/// destroy the io_context as soon as its last completion has run.
class ClientExchangeStream final
    : public grpc::ClientBidiReactor<remote_xcomm::v1::ExchangeRequest, remote_xcomm::v1::ExchangeResponse> {
 public:
  /// Loop: takes `send` (its own reference) to the open stream of its channel, opening one if
  /// needed, or completes it at once (cancelled or past its deadline already).
  static void submit(ExchangeSend* send);
  /// Loop: the caller cancelled `send` through its cancellation slot.
  static void cancel(ExchangeSend& send);
  /// Loop: the Client is gone.
  void orphan();
  /// A job of this stream was destroyed unrun, or the Client's close was: the io_context is gone.
  void lost_loop() noexcept;

  // grpc::ClientBidiReactor, on gRPC's threads.
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  friend void intrusive_ptr_add_ref(ClientExchangeStream* stream) noexcept {
    stream->references_.fetch_add(1, std::memory_order_relaxed);
  }
  friend void intrusive_ptr_release(ClientExchangeStream* stream) noexcept {
    if (stream->references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete stream;
    }
  }

 private:
  struct ReplyBatch;
  template <typename Function>
  struct Job;
  struct FlushJob final : LoopJob {
    explicit FlushJob(ClientExchangeStream* owner) noexcept : stream(owner) { invoke = &invoke_flush; }
    static void invoke_flush(LoopJob* job, bool run) noexcept;
    ClientExchangeStream* stream;
  };
  struct DeadlineOrder {
    bool operator()(const ExchangeSend& a, const ExchangeSend& b) const noexcept {
      return a.deadline_or_max() < b.deadline_or_max();
    }
  };
  using DeadlineSet = boost::intrusive::multiset<ExchangeSend, boost::intrusive::compare<DeadlineOrder>>;
  using Settled = std::vector<ExchangeSend*>;

  ClientExchangeStream(const TargetChannel& channel, bool wait_for_ready);
  ~ClientExchangeStream() override;

  // Hands `function(stream)` to the loop with a reference to the stream (any thread).
  template <typename Function>
  void to_loop(Function&& function);

  // ---- the loop: every member below ----
  void start(const TargetChannel& channel);
  void take(ExchangeSend* send, Settled& settled);
  void take_replies(ReplyBatch& batch);
  void read_failed();
  void write_done(bool ok);
  void done(const grpc::Status& status);
  void give_up(ExchangeSend& send, grpc::Status status, Settled& settled);
  // Records `send`'s outcome and takes it out of the stream; its completion goes out later
  // (deliver), once the stream's own bookkeeping is done.
  void settle(ExchangeSend& send, grpc::Status status, Settled& settled);
  void queue_frame(remote_xcomm::v1::ExchangeFrame&& frame, std::size_t bytes);
  void queue_cancel(std::uint64_t id);
  void schedule_flush();
  void flush();
  // The stream takes no more sends and starts no more operations: it leaves its target's slot
  // and releases its hold; `cancel_call` also cancels the call so that OnDone comes soon.
  void end(bool cancel_call);
  // An orphaned stream with nothing in flight ends.
  void end_if_unused();
  void arm_alarm();
  void deadlines_passed();
  // Hands each settled send's completion to its handler's executor. Last in every loop job that
  // settles sends: after it, that job touches nothing the application may have destroyed.
  static void deliver(Settled& settled);

  // Keeps gRPC initialised while the stream lives: its last reactions may come after every
  // channel and server of the process is gone (its Client's channel among them), and gRPC must
  // not shut down under the call. Counts the stream as alive until then. First, so that it goes
  // last.
  struct Lifetime {
    Lifetime();
    Lifetime(const Lifetime&) = delete;
    Lifetime& operator=(const Lifetime&) = delete;
    ~Lifetime();
  } lifetime_;
  grpc::ClientContext context_;
  std::shared_ptr<LoopCore> core_;  // pinned: reactions may come after the io_context is gone
  LoopExecutor loop_;               // untracked: the stream itself keeps no io_context alive
  ExchangeLimits limits_;
  std::shared_ptr<ExchangeSlots> slots_;
  std::size_t slot_index_;
  std::atomic<int> references_{1};  // gRPC's, until OnDone

  // The message being read: gRPC's until OnReadDone, which moves it into a batch for the loop.
  remote_xcomm::v1::ExchangeResponse reading_;

  // Loop state.
  std::uint64_t next_id_ = 0;
  std::unordered_map<std::uint64_t, ExchangeSend*> in_flight_;  // each holds the send's own reference
  DeadlineSet deadlines_;
  std::unique_ptr<grpc::Alarm> alarm_;
  std::chrono::steady_clock::time_point alarm_armed_for_ = std::chrono::steady_clock::time_point::max();
  std::deque<remote_xcomm::v1::ExchangeRequest> outbox_;  // batches waiting for the wire
  std::size_t outbox_back_bytes_ = 0;                     // encoded size of outbox_.back()
  remote_xcomm::v1::ExchangeRequest writing_;             // gRPC's while a write is in flight
  remote_xcomm::v1::ExchangeRequest spare_;               // a written batch, cleared, for the next
  FlushJob flush_job_{this};
  bool registered_ = false;
  bool holding_ = false;  // the hold added before StartCall, for operations started on the loop
  bool write_in_flight_ = false;
  bool flush_scheduled_ = false;
  bool ending_ = false;    // takes no more sends, starts no more operations
  bool orphaned_ = false;  // its Client is gone
  bool done_ = false;      // OnDone was handled: every send has its outcome
};

}  // namespace rx::detail

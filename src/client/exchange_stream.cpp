#include "exchange_stream.hpp"

#include "../codec.hpp"
#include "../transport/batch_recycling.hpp"
#include "../tsan_annotations.hpp"
#include "reply_decoding.hpp"

#include <remote_xcomm/stats.hpp>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/smart_ptr/intrusive_ptr.hpp>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <utility>

namespace rx::detail {
namespace {

namespace asio = boost::asio;
namespace pb = remote_xcomm::v1;
using std::chrono::steady_clock;

// Room for one frame's framing inside an ExchangeRequest: its field tag and length prefix.
constexpr std::size_t FRAME_FRAMING_BYTES = 6;

// Most frames in one message. What queues during a write goes out together, but in messages of
// at most this many, so that the server starts on the first while the rest are still being
// written and read: one message of thousands makes the two sides take turns instead of
// overlapping. Measured with bm_roundtrip's 10,000-endpoint fan-out (two runs each, noisy host):
// 10.8-12.9 us per result with no cap, 4.1-9.3 us with 256. The server's replies are not capped:
// capping them measured no better.
constexpr int MAX_FRAMES_PER_MESSAGE = 256;

// What TSan is told an alarm's callback is handed over with (tsan_annotations.hpp): gRPC's alarm
// moves the callback into state of its own and runs it on its executor thread, so no address of
// ours is known to both sides except a fixed one.
constexpr char ALARM_HANDOFF = 0;

// A century: as good as no deadline, and far from any clock arithmetic's overflow.
constexpr std::chrono::hours LONGEST_TIMEOUT{100LL * 365 * 24};

// The statuses the client decides itself, worded as gRPC words them for a unary call.
grpc::Status cancelled() { return {grpc::StatusCode::CANCELLED, "Cancelled"}; }
grpc::Status deadline_exceeded() { return {grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"}; }

// What the server said about one request: a gRPC status code and its message.
grpc::Status status_of(const pb::ExchangeReply& reply) {
  const int code = reply.code();
  if (code < 0 || code > static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) {
    return {grpc::StatusCode::UNKNOWN, "server sent status code " + std::to_string(code) + ": " + reply.message()};
  }
  return {static_cast<grpc::StatusCode>(code), reply.message()};
}

// How long until `deadline`, as the frame's timeout_ms: rounded up, at least 1 (0 means none).
std::uint64_t timeout_ms_until(steady_clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady_clock::now()).count();
  return left > 0 ? static_cast<std::uint64_t>(left) : 1U;
}

// The handler's cancellation slot: the caller cancelled. Emitted on the handler's executor, as
// Asio requires; the send's state lives on the Client's loop, so the cancel is taken there.
struct CancelSend {
  boost::intrusive_ptr<ExchangeSend> send;
  LoopExecutor loop;  // the Client's; alive while the send is in flight (Client::send's rules)

  void operator()(asio::cancellation_type /*type*/) const {
    if (loop.running_in_this_thread()) {
      ClientExchangeStream::cancel(*send);
      return;
    }
    asio::post(loop, [send = send] { ClientExchangeStream::cancel(*send); });
  }
};

// The Client's close, as a loop job that still reaches its streams if it is destroyed unrun.
struct CloseStreams final : LoopJob {
  explicit CloseStreams(std::vector<std::shared_ptr<ExchangeSlots>> of) : slots(std::move(of)) {
    invoke = &invoke_close;
  }

  static void invoke_close(LoopJob* job, bool run) noexcept {
    const std::unique_ptr<CloseStreams> self(static_cast<CloseStreams*>(job));
    for (const std::shared_ptr<ExchangeSlots>& target : self->slots) {
      target->client_gone = true;
      const std::array<ClientExchangeStream*, 2> open = target->open;  // orphan() may unregister
      for (ClientExchangeStream* stream : open) {
        if (stream == nullptr) {
          continue;
        }
        const boost::intrusive_ptr<ClientExchangeStream> keep(stream);
        if (run) {
          stream->orphan();
        } else {
          stream->lost_loop();
        }
      }
    }
  }

  std::vector<std::shared_ptr<ExchangeSlots>> slots;
};

}  // namespace

// ---- one send --------------------------------------------------------------------------------

namespace {

// Runs the handler of a settled send on the handler's executor. Takes everything it still needs
// out of the send and drops the send's own reference before running the handler (as SendCall does
// for a unary call), so nothing of the send is touched once user code has run; the tracked work
// outlives the handler's run.
void finish(boost::intrusive_ptr<ExchangeSend> send) {
  Client::SendHandler handler;
  handler.swap(send->handler);  // swap, not move-assign: chriskohlhoff/asio#1180
  // The slot's handler holds a reference to the send; it may only be cleared here, on the
  // handler's executor.
  if (handler.get_cancellation_slot().is_connected()) {
    handler.get_cancellation_slot().clear();
  }
  std::optional<LoopExecutor> work_on_loop = std::move(send->loop_work);
  asio::any_completion_executor work_elsewhere = std::move(send->other_work);
  grpc::Status outcome = std::move(send->status);
  boost::json::object result = std::move(send->reply);
  send.reset();
  std::move(handler)(std::move(outcome), std::move(result));
}

// A send whose loop is gone: its handler is destroyed unrun, as a unary call's is when its
// completion is destroyed with its io_context.
void abandon(ExchangeSend& send) noexcept {
  Client::SendHandler gone;
  gone.swap(send.handler);
  send.loop_work.reset();
  send.other_work = {};
}

void complete_job(LoopJob* job, bool run) {
  boost::intrusive_ptr<ExchangeSend> send(static_cast<ExchangeSend*>(job), /*add_ref=*/false);
  if (run) {
    finish(std::move(send));
  } else {
    abandon(*send);
  }
}

void submit_job(LoopJob* job, bool run) {
  auto* const send = static_cast<ExchangeSend*>(job);
  if (run) {
    ClientExchangeStream::submit(send);
    return;
  }
  abandon(*send);
  intrusive_ptr_release(send);
}

// Records a send's outcome; its completion goes out with the others of the same loop job.
void record(ExchangeSend& send, grpc::Status status, std::vector<ExchangeSend*>& settled) {
  send.status = std::move(status);
  send.settled = true;
  settled.push_back(&send);
}

}  // namespace

ExchangeSend::ExchangeSend(Client::SendHandler h, const LoopExecutor* handler_loop) : handler(std::move(h)) {
  // Keeps the caller's executor (and so its io_context) from running out of work while the reply
  // is on its way.
  if (handler_loop != nullptr) {
    loop_work.emplace(asio::prefer(*handler_loop, asio::execution::outstanding_work.tracked));
  } else {
    other_work = asio::prefer(asio::get_associated_executor(handler), asio::execution::outstanding_work.tracked);
  }
}

void send_on_exchange(const std::shared_ptr<TargetChannel>& channel, const TaskInstanceKey& key,
                      std::string payload_json, const SendOptions& options, const LoopExecutor* handler_loop,
                      Client::SendHandler handler) {
  auto* const send = new ExchangeSend(std::move(handler), handler_loop);
  to_proto(key, *send->frame.mutable_key());
  send->frame.set_payload_json(std::move(payload_json));
  if (options.timeout) {
    send->expires = steady_clock::now() + std::min<steady_clock::duration>(*options.timeout, LONGEST_TIMEOUT);
  }
  send->wait_for_ready = options.wait_for_ready;
  send->channel = channel;
  auto slot = send->handler.get_cancellation_slot();
  if (slot.is_connected()) {
    slot.assign(CancelSend{boost::intrusive_ptr<ExchangeSend>(send), channel->loop});
  }
  send->invoke = &submit_job;
  const LoopExecutor& loop = channel->loop;
  if (loop.running_in_this_thread()) {
    ClientExchangeStream::submit(send);
  } else {
    post_job(loop, send);  // the send may be complete and freed once this returns
  }
}

void close_exchange_streams(const LoopExecutor& client_loop, std::vector<std::shared_ptr<ExchangeSlots>> slots) {
  auto* const close = new CloseStreams(std::move(slots));
  if (client_loop.running_in_this_thread()) {
    CloseStreams::invoke_close(close, true);
  } else {
    post_job(client_loop, close);
  }
}

// ---- the streams of the process -------------------------------------------------------------

namespace {

struct StreamCount {
  std::mutex mutex;
  std::condition_variable none;
  std::size_t alive = 0;
};

StreamCount& stream_count() {
  static StreamCount count;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)
  return count;
}

}  // namespace

ClientExchangeStream::Lifetime::Lifetime() {
  grpc_init();
  StreamCount& count = stream_count();
  const std::lock_guard lock(count.mutex);
  ++count.alive;
}

ClientExchangeStream::Lifetime::~Lifetime() {
  grpc_shutdown();
  StreamCount& count = stream_count();
  const std::lock_guard lock(count.mutex);
  if (--count.alive == 0) {
    count.none.notify_all();
  }
}

std::size_t client_exchange_streams_alive() noexcept {
  StreamCount& count = stream_count();
  const std::lock_guard lock(count.mutex);
  return count.alive;
}

bool wait_until_no_client_exchange_streams(std::chrono::milliseconds bound) {
  StreamCount& count = stream_count();
  std::unique_lock lock(count.mutex);
  return count.none.wait_for(lock, bound, [&count] { return count.alive == 0; });
}

// ---- the stream: jobs ------------------------------------------------------------------------

/// A batch read from the stream, parsed on the thread that read it, on its way to the loop.
struct ClientExchangeStream::ReplyBatch {
  pb::ExchangeResponse message;
  std::size_t reply_bytes = 0;               // of every reply: whether the message is kept for reuse
  std::vector<boost::json::object> replies;  // one per reply: the parsed reply_json when its code is OK
  std::vector<grpc::Status> decoded;         // one per reply: INTERNAL when its reply_json was refused
};

/// A loop job of the stream holding a reference to it. Destroyed unrun, it gives the loop up.
template <typename Function>
struct ClientExchangeStream::Job final : LoopJob {
  Job(ClientExchangeStream* owner, Function&& f) : stream(owner), function(std::move(f)) { invoke = &invoke_job; }

  static void invoke_job(LoopJob* job, bool run) {
    const std::unique_ptr<Job> self(static_cast<Job*>(job));
    const boost::intrusive_ptr<ClientExchangeStream> stream(self->stream, /*add_ref=*/false);
    if (run) {
      self->function(*stream);
    } else {
      stream->lost_loop();
    }
  }

  ClientExchangeStream* stream;
  Function function;
};

template <typename Function>
void ClientExchangeStream::to_loop(Function&& function) {
  intrusive_ptr_add_ref(this);
  using Decayed = std::decay_t<Function>;
  core_->hand_off_pinned(new Job<Decayed>(this, Decayed(std::forward<Function>(function))));
}

void ClientExchangeStream::FlushJob::invoke_flush(LoopJob* job, bool run) noexcept {
  const boost::intrusive_ptr<ClientExchangeStream> stream(static_cast<FlushJob*>(job)->stream, /*add_ref=*/false);
  if (run) {
    stream->flush();
  } else {
    stream->lost_loop();
  }
}

// ---- gRPC's threads --------------------------------------------------------------------------

ClientExchangeStream::ClientExchangeStream(const TargetChannel& channel, bool wait_for_ready)
    : core_(pin_loop(channel.loop)),
      loop_(channel.loop),
      limits_(channel.exchange_limits),
      slots_(channel.exchange),
      slot_index_(wait_for_ready ? 1 : 0) {
  // The stream lives as long as it is used: no deadline of its own (each send has its own), and
  // gRPC's wait_for_ready as its sends asked (a target has one stream of each kind).
  context_.set_wait_for_ready(wait_for_ready);
  if (!channel.authorization.empty()) {
    context_.AddMetadata("authorization", channel.authorization);  // the stream's token, once
  }
}

ClientExchangeStream::~ClientExchangeStream() {
  // Only a stream whose loop was lost still holds sends here: their handlers are destroyed unrun.
  deadlines_.clear();
  for (const auto& [id, send] : in_flight_) {
    abandon(*send);
    intrusive_ptr_release(send);
  }
}

void ClientExchangeStream::OnReadDone(bool ok) {
  back_from_grpc(this);
  if (!ok) {  // the server ended the stream, or it broke
    to_loop([](ClientExchangeStream& self) { self.read_failed(); });
    return;
  }
  // Parsed here, on the thread that read the batch, as a unary reply is: the loop only matches.
  auto batch = std::make_unique<ReplyBatch>();
  batch->message.Swap(&reading_);
  const auto count = static_cast<std::size_t>(batch->message.replies_size());
  batch->replies.resize(count);
  batch->decoded.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    const pb::ExchangeReply& reply = batch->message.replies(static_cast<int>(i));
    batch->reply_bytes += reply.reply_json().size() + reply.message().size();
    if (reply.code() == 0) {
      batch->decoded[i] = decode_reply_json(reply.reply_json(), limits_.max_json_depth, batch->replies[i]);
    }
  }
  to_loop([batch = std::move(batch)](ClientExchangeStream& self) { self.take_replies(*batch); });
}

void ClientExchangeStream::OnWriteDone(bool ok) {
  back_from_grpc(this);
  to_loop([ok](ClientExchangeStream& self) { self.write_done(ok); });
}

void ClientExchangeStream::OnDone(const grpc::Status& status) {
  back_from_grpc(this);
  to_loop([status](ClientExchangeStream& self) { self.done(status); });
  intrusive_ptr_release(this);  // gRPC's reference
}

// ---- the loop --------------------------------------------------------------------------------

void ClientExchangeStream::submit(ExchangeSend* send) {
  const std::shared_ptr<TargetChannel> channel = std::move(send->channel);
  Settled settled;
  if (send->cancel_requested) {
    record(*send, cancelled(), settled);
  } else if (send->expires && *send->expires <= steady_clock::now()) {
    record(*send, deadline_exceeded(), settled);
  } else {
    ExchangeSlots& slots = *channel->exchange;
    ClientExchangeStream* stream = slots.open[send->wait_for_ready ? 1 : 0];
    if (stream == nullptr) {
      stream = new ClientExchangeStream(*channel, send->wait_for_ready);
      stream->start(*channel);
    }
    const boost::intrusive_ptr<ClientExchangeStream> keep(stream);
    stream->take(send, settled);
    if (slots.client_gone) {
      stream->orphan();  // a send the Client made just before it went; the stream ends after it
    }
  }
  deliver(settled);
}

void ClientExchangeStream::start(const TargetChannel& channel) {
  registered_ = true;
  intrusive_ptr_add_ref(this);  // the registration's
  slots_->open[slot_index_] = this;
  channel.stub->async()->Exchange(&context_, this);
  // Every operation after StartCall is started on the loop, outside gRPC's reactions: the hold
  // keeps gRPC from ending the call (OnDone) before the loop has started its last one.
  AddHold();
  holding_ = true;
  handed_to_grpc(this);
  StartRead(&reading_);
  StartCall();
}

void ClientExchangeStream::take(ExchangeSend* send, Settled& settled) {
  pb::ExchangeFrame& frame = send->frame;
  const std::uint64_t id = next_id_++;  // 2^64 ids: never reused on one stream
  frame.set_id(id);
  if (send->expires) {
    frame.set_timeout_ms(timeout_ms_until(*send->expires));
  }
  const std::size_t bytes = frame.ByteSizeLong() + FRAME_FRAMING_BYTES;
  if (bytes > limits_.max_message_bytes) {
    // Written, it would end the whole stream; alone, it fails as a unary call over the limit does.
    record(*send,
           {grpc::StatusCode::RESOURCE_EXHAUSTED, "Sent message larger than max (" + std::to_string(bytes) + " vs. " +
                                                      std::to_string(limits_.max_message_bytes) + ")"},
           settled);
    return;
  }
  send->stream = this;
  send->id = id;
  in_flight_.emplace(id, send);
  if (send->expires) {
    deadlines_.insert(*send);
    arm_alarm();
  }
  queue_frame(std::move(frame), bytes);
}

void ClientExchangeStream::cancel(ExchangeSend& send) {
  if (send.settled) {
    return;  // its outcome is on its way
  }
  if (send.stream == nullptr) {
    send.cancel_requested = true;  // still on its way to its stream, which completes it at once
    return;
  }
  const boost::intrusive_ptr<ClientExchangeStream> stream(send.stream);
  Settled settled;
  stream->give_up(send, cancelled(), settled);
  stream->end_if_unused();
  deliver(settled);
}

void ClientExchangeStream::orphan() {
  orphaned_ = true;
  end_if_unused();
}

void ClientExchangeStream::lost_loop() noexcept {
  // The io_context is gone (or going): nothing will run on the loop again. Let gRPC end the call,
  // so that OnDone comes and the stream is freed; what is still in flight is abandoned with it.
  orphaned_ = true;
  alarm_.reset();
  outbox_.clear();
  end(/*cancel_call=*/true);
}

void ClientExchangeStream::take_replies(ReplyBatch& batch) {
  Settled settled;
  const int count = batch.message.replies_size();
  for (int i = 0; i < count; ++i) {
    const pb::ExchangeReply& reply = batch.message.replies(i);
    const auto found = in_flight_.find(reply.id());
    if (found == in_flight_.end()) {
      // Settled already (cancelled, or past its deadline), or the NOT_FOUND of a cancel frame
      // whose request was answered first.
      continue;
    }
    ExchangeSend& send = *found->second;
    const auto at = static_cast<std::size_t>(i);
    grpc::Status status = reply.code() == 0 ? std::move(batch.decoded[at]) : status_of(reply);
    if (status.ok()) {
      send.reply = std::move(batch.replies[at]);
    }
    settle(send, std::move(status), settled);
  }
  if (!ending_) {
    // No read is in flight until this one: the next batch is parsed into this one's memory.
    recycle_batch(batch.message, batch.reply_bytes, reading_);
    handed_to_grpc(this);
    StartRead(&reading_);
  }
  end_if_unused();
  deliver(settled);
}

void ClientExchangeStream::read_failed() {
  // The server ended the stream (its status comes with OnDone), or the connection broke.
  end(/*cancel_call=*/true);
}

void ClientExchangeStream::write_done(bool ok) {
  write_in_flight_ = false;
  // gRPC's serialisation left the encoded size cached.
  recycle_batch(writing_, static_cast<std::size_t>(writing_.GetCachedSize()), spare_);
  if (!ok) {
    end(/*cancel_call=*/true);  // the stream broke; OnDone fails what is in flight
    return;
  }
  flush();
}

void ClientExchangeStream::done(const grpc::Status& status) {
  done_ = true;
  end(/*cancel_call=*/false);
  alarm_.reset();
  outbox_.clear();
  Settled settled;
  if (!in_flight_.empty()) {
    // A stream the server refused for its token fails its sends with that verdict (retrying cannot
    // help); any other end is a broken stream.
    const bool refused = status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
                         status.error_code() == grpc::StatusCode::PERMISSION_DENIED;
    const grpc::Status broke(refused ? status.error_code() : grpc::StatusCode::UNAVAILABLE,
                             std::string("the Exchange stream ended before the reply arrived: ") +
                                 status_code_name(status.error_code()) +
                                 (status.error_message().empty() ? "" : ": " + status.error_message()));
    std::vector<ExchangeSend*> sends;
    sends.reserve(in_flight_.size());
    for (const auto& [id, send] : in_flight_) {
      sends.push_back(send);
    }
    for (ExchangeSend* send : sends) {
      settle(*send, broke, settled);
    }
  }
  deliver(settled);
}

void ClientExchangeStream::give_up(ExchangeSend& send, grpc::Status status, Settled& settled) {
  const std::uint64_t id = send.id;
  settle(send, std::move(status), settled);
  queue_cancel(id);  // the server drops the request, or the task holding it sees its cancellation
}

void ClientExchangeStream::settle(ExchangeSend& send, grpc::Status status, Settled& settled) {
  in_flight_.erase(send.id);
  if (send.is_linked()) {
    deadlines_.erase(deadlines_.iterator_to(send));
  }
  send.stream = nullptr;
  record(send, std::move(status), settled);
}

void ClientExchangeStream::queue_frame(pb::ExchangeFrame&& frame, std::size_t bytes) {
  if (ending_) {
    return;  // nothing more goes out on this stream
  }
  if (outbox_.empty() || outbox_back_bytes_ + bytes > limits_.max_message_bytes ||
      outbox_.back().frames_size() >= MAX_FRAMES_PER_MESSAGE) {
    outbox_.emplace_back().Swap(&spare_);
    outbox_back_bytes_ = 0;
  }
  *outbox_.back().add_frames() = std::move(frame);
  outbox_back_bytes_ += bytes;
  schedule_flush();
}

void ClientExchangeStream::queue_cancel(std::uint64_t id) {
  pb::ExchangeFrame frame;
  frame.set_id(id);
  frame.set_cancel(true);
  const std::size_t bytes = frame.ByteSizeLong() + FRAME_FRAMING_BYTES;
  queue_frame(std::move(frame), bytes);
}

void ClientExchangeStream::schedule_flush() {
  if (flush_scheduled_ || write_in_flight_) {
    return;  // a flush is queued, or the end of the write in flight sends what queued meanwhile
  }
  // Behind the loop work already queued, so that the sends it makes go out in this message.
  flush_scheduled_ = true;
  intrusive_ptr_add_ref(this);
  post_job(loop_, &flush_job_);
}

void ClientExchangeStream::flush() {
  flush_scheduled_ = false;
  if (write_in_flight_ || outbox_.empty() || ending_) {
    return;
  }
  writing_.Swap(&outbox_.front());
  outbox_.pop_front();
  if (outbox_.empty()) {
    outbox_back_bytes_ = 0;
  }
  write_in_flight_ = true;
  handed_to_grpc(this);
  StartWrite(&writing_);
}

void ClientExchangeStream::end(bool cancel_call) {
  const boost::intrusive_ptr<ClientExchangeStream> keep(this);  // the registration's reference may be the last
  if (!ending_) {
    ending_ = true;
    if (registered_) {
      registered_ = false;
      if (slots_->open[slot_index_] == this) {
        slots_->open[slot_index_] = nullptr;
      }
      intrusive_ptr_release(this);
    }
    if (holding_) {
      // No operation starts on the loop any more; one in flight still holds the call until its
      // reaction.
      holding_ = false;
      handed_to_grpc(this);
      RemoveHold();
    }
  }
  if (cancel_call && !done_) {
    handed_to_grpc(this);
    context_.TryCancel();
  }
}

void ClientExchangeStream::end_if_unused() {
  if (orphaned_ && !ending_ && in_flight_.empty()) {
    alarm_.reset();
    end(/*cancel_call=*/true);
  }
}

// ---- deadlines -------------------------------------------------------------------------------

void ClientExchangeStream::arm_alarm() {
  if (deadlines_.empty() || ending_) {
    return;
  }
  const steady_clock::time_point earliest = deadlines_.begin()->deadline_or_max();
  if (earliest >= alarm_armed_for_) {
    return;  // the alarm goes off by then; it re-arms for what is left
  }
  alarm_armed_for_ = earliest;
  const auto wait = std::chrono::ceil<std::chrono::microseconds>(earliest - steady_clock::now());
  const gpr_timespec at = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                       gpr_time_from_micros(std::max<std::int64_t>(wait.count(), 0), GPR_TIMESPAN));
  // A new alarm for each arming: the one it replaces is cancelled (its callback gets false).
  alarm_ = std::make_unique<grpc::Alarm>();
  std::function<void(bool)> callback = [self = boost::intrusive_ptr<ClientExchangeStream>(this)](bool expired) {
    back_from_grpc(&ALARM_HANDOFF);  // before anything reads the callback's own state
    if (expired) {
      self->to_loop([](ClientExchangeStream& stream) { stream.deadlines_passed(); });
    }
  };
  handed_to_grpc(&ALARM_HANDOFF);
  alarm_->Set(at, std::move(callback));
}

void ClientExchangeStream::deadlines_passed() {
  alarm_armed_for_ = steady_clock::time_point::max();
  const steady_clock::time_point now = steady_clock::now();
  Settled settled;
  while (!deadlines_.empty() && deadlines_.begin()->deadline_or_max() <= now) {
    give_up(*deadlines_.begin(), deadline_exceeded(), settled);
  }
  arm_alarm();
  end_if_unused();
  deliver(settled);
}

// ---- completions -----------------------------------------------------------------------------

void ClientExchangeStream::deliver(Settled& settled) {
  for (ExchangeSend* send : settled) {
    // The send's own reference goes with its completion.
    send->invoke = &complete_job;
    if (send->loop_work) {
      // With the Client's loop (the common case), this only appends to the run under way.
      post_job(*send->loop_work, send);
    } else {
      // An untracked copy outlives the send, which the execution may free at once.
      const asio::any_completion_executor executor =
          asio::prefer(send->other_work, asio::execution::outstanding_work.untracked);
      executor.execute(
          [send = boost::intrusive_ptr<ExchangeSend>(send, /*add_ref=*/false)]() mutable { finish(std::move(send)); });
    }
  }
  settled.clear();
}

}  // namespace rx::detail

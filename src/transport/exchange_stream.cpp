#include "exchange_stream.hpp"

#include "../codec.hpp"
#include "../tsan_annotations.hpp"
#include "batch_recycling.hpp"

#include <remote_xcomm/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/smart_ptr/intrusive_ptr.hpp>
#include <grpcpp/server_context.h>

#include <exception>
#include <string>
#include <string_view>
#include <utility>

namespace rx::detail {
namespace {

namespace asio = boost::asio;

// Room kept in a message for one reply's framing besides its JSON text and message: the id,
// the code and the length prefixes take at most 3 × 11 bytes.
constexpr std::size_t REPLY_FRAMING_BYTES = 64;
// Longest status message a reply carries.
constexpr std::size_t MAX_STATUS_MESSAGE_BYTES = 16 * 1024;

std::string cancelled_message(std::uint64_t id) { return "the caller cancelled request " + std::to_string(id); }

}  // namespace

// ---- one request ---------------------------------------------------------------------------

/// One request of the stream, as the endpoint queue sees it. Lives on the loop; holds the
/// stream until it has its status.
class ExchangeStream::Request final : public PendingReply, public boost::intrusive::set_base_hook<> {
 public:
  Request(ExchangeStream& stream, std::uint64_t id, std::optional<std::chrono::steady_clock::time_point> expires,
          std::optional<std::chrono::system_clock::time_point> deadline,
          std::chrono::steady_clock::time_point read_at) noexcept
      : stream_(&stream), id_(id), expires_(expires), deadline_(deadline), read_at_(read_at) {}

  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  [[nodiscard]] std::chrono::steady_clock::time_point read_at() const noexcept { return read_at_; }

  /// A reference, unless the last one was already dropped (its answer is on its way to the loop).
  [[nodiscard]] PendingReplyPtr acquire() noexcept {
    return try_add_reference() ? PendingReplyPtr(this, /*add_ref=*/false) : PendingReplyPtr();
  }
  [[nodiscard]] std::chrono::steady_clock::time_point expires() const noexcept {
    return expires_.value_or(std::chrono::steady_clock::time_point::max());
  }

  boost::system::error_code reply(const boost::json::object& /*outputs*/, std::string&& json) override {
    if (finished_) {
      return errc::request_cancelled;
    }
    const std::size_t limit = stream_->limits_.max_message_bytes;
    if (json.size() + REPLY_FRAMING_BYTES > limit) {
      const std::size_t size = json.size();
      fail(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the task's reply is " + std::to_string(size) +
                                                                  " bytes, over the server's limit of " +
                                                                  std::to_string(limit)));
      return errc::reply_too_large;
    }
    finish(grpc::StatusCode::OK, {}, std::move(json));
    return {};
  }

  bool fail(const grpc::Status& status) override {
    if (finished_) {
      return false;
    }
    finish(status.error_code(), status.error_message(), {});
    return true;
  }

  [[nodiscard]] bool finished() const noexcept override { return finished_; }
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point> deadline() const override {
    return finished_ ? std::nullopt : deadline_;
  }
  [[nodiscard]] std::string peer() const override { return finished_ ? std::string() : stream_->peer_; }
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> metadata() const override {
    return finished_ || !stream_->metadata_ ? std::vector<std::pair<std::string, std::string>>() : *stream_->metadata_;
  }

 private:
  ~Request() override = default;

  void finish(grpc::StatusCode code, const std::string& message, std::string&& reply_json) {
    finished_ = true;
    stream_->answer(*this, code, message, std::move(reply_json));
  }

  void last_reference_dropped() noexcept override {
    if (finished_) {
      delete this;
      return;
    }
    // Dropped unanswered: the client must still get a status. On the loop, at once; elsewhere
    // (a loop job freed unrun while its io_context was destroyed) through the loop, if it still
    // runs; if it never does, the server is gone and the stream with it.
    struct Dropped {
      Request* request;
      explicit Dropped(Request* dropped) noexcept : request(dropped) {}
      Dropped(Dropped&& other) noexcept : request(std::exchange(other.request, nullptr)) {}
      Dropped(const Dropped&) = delete;
      Dropped& operator=(const Dropped&) = delete;
      Dropped& operator=(Dropped&&) = delete;
      ~Dropped() { delete request; }
      void operator()() {
        Request* const dropped = std::exchange(request, nullptr);
        try {
          dropped->fail(
              grpc::Status(grpc::StatusCode::INTERNAL, "the server dropped the request without answering it"));
        } catch (...) {  // no memory for the message: the request still gets its status
          dropped->finish(grpc::StatusCode::INTERNAL, {}, {});
        }
        delete dropped;
      }
    };
    Dropped dropped(this);
    if (stream_->loop_.running_in_this_thread()) {
      dropped();
      return;
    }
    try {
      asio::post(stream_->loop_, std::move(dropped));
    } catch (...) {  // out of memory: freed with `dropped`; the stream's end gives up what is left
    }
  }

  boost::intrusive_ptr<ExchangeStream> stream_;
  std::uint64_t id_;
  std::optional<std::chrono::steady_clock::time_point> expires_;
  std::optional<std::chrono::system_clock::time_point> deadline_;
  std::chrono::steady_clock::time_point read_at_;  // its latency (Stats) counts from here
  bool finished_ = false;
};

bool ExchangeStream::DeadlineOrder::operator()(const Request& a, const Request& b) const noexcept {
  return a.expires() < b.expires();
}

/// A batch read from the stream, parsed on the thread that read it, on its way to the loop.
struct ExchangeStream::ReadBatch {
  std::chrono::steady_clock::time_point read_at;  // frames' timeouts count from here
  grpc::Slice bytes;                              // the batch as read: the frames' views point into it
  std::vector<ExchangeFrameView> frames;          // error: why a frame is refused (key or payload), or empty
  std::vector<boost::json::object> payloads;      // one per frame, empty for a cancel or a bad payload
  std::vector<bool> denied;                       // per frame when tokens are checked: its error is PERMISSION_DENIED's
};

void ExchangeStream::MemberJob::invoke_member(LoopJob* job, bool run) noexcept {
  auto* const self = static_cast<MemberJob*>(job);
  const boost::intrusive_ptr<ExchangeStream> stream(self->stream, /*add_ref=*/false);
  if (run) {
    (stream.get()->*(self->run))();
  }
}

// ---- gRPC's threads -----------------------------------------------------------------------

ExchangeStream::ExchangeStream(grpc::CallbackServerContext* context, StreamHost& host, LoopExecutor loop,
                               StreamLimits limits, StreamAccess access)
    : host_(host), loop_(std::move(loop)), limits_(limits), access_(access) {
  peer_ = context->peer();
  auto metadata = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  for (const auto& [key, value] : context->client_metadata()) {
    if (is_authorization_metadata(std::string_view(key.data(), key.size()))) {
      continue;  // a token is never shown to task code
    }
    metadata->emplace_back(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
  }
  metadata_ = std::move(metadata);
  if (const auto at = context->deadline(); at != std::chrono::system_clock::time_point::max()) {
    stream_deadline_ = at;
  }
  // The first read, and the registration with the server; every later read starts on the loop.
  StartRead(&reading_);
  handed_to_grpc(this);
  to_loop([](ExchangeStream& self) { self.open(); });
}

ExchangeStream::~ExchangeStream() = default;

template <typename Function>
void ExchangeStream::to_loop(Function&& function) {
  intrusive_ptr_add_ref(this);
  boost::intrusive_ptr<ExchangeStream> self(this, /*add_ref=*/false);
  hand_off(loop_, [self = std::move(self), function = std::forward<Function>(function)]() mutable { function(*self); });
}

void ExchangeStream::OnReadDone(bool ok) {
  back_from_grpc(this);
  if (!ok) {  // the client half-closed, or the stream broke (OnCancel follows)
    to_loop([](ExchangeStream& self) { self.reads_ended(); });
    return;
  }
  // Decoded and parsed here, on the thread that read the batch, as Send's request is: a bad one
  // is refused without costing the loop anything but its reply.
  auto batch = std::make_unique<ReadBatch>();
  batch->read_at = std::chrono::steady_clock::now();
  grpc::Status status = flatten(reading_, batch->bytes);
  reading_.Clear();
  if (status.ok()) {
    status = decode_exchange_request(view_of(batch->bytes), limits_.request, batch->frames);
  }
  if (!status.ok()) {
    to_loop([status = std::move(status)](ExchangeStream& self) mutable { self.refuse_batch(std::move(status)); });
    return;
  }
  batch->payloads.resize(batch->frames.size());
  if (access_.control != nullptr) {
    batch->denied.resize(batch->frames.size());
  }
  for (std::size_t i = 0; i < batch->frames.size(); ++i) {
    ExchangeFrameView& frame = batch->frames[i];
    if (!frame.cancel && frame.error.empty()) {
      // The token against the frame's task instance, before its payload is parsed.
      if (access_.control != nullptr) {
        if (auto refused = access_.control->check_task(access_.caller, frame.key)) {
          batch->denied[i] = true;
          frame.error = refused->error_message();
          continue;
        }
      }
      if (!parse_json_object(frame.payload_json, limits_.request.json, batch->payloads[i], frame.error)) {
        batch->payloads[i] = {};
      }
    }
  }
  to_loop([batch = std::move(batch)](ExchangeStream& self) { self.take_batch(*batch); });
}

void ExchangeStream::OnWriteDone(bool ok) {
  back_from_grpc(this);
  to_loop([ok](ExchangeStream& self) { self.write_done(ok); });
}

void ExchangeStream::OnCancel() {
  back_from_grpc(this);
  to_loop([](ExchangeStream& self) {
    self.break_stream(grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the stream"),
                      grpc::Status(grpc::StatusCode::CANCELLED, "the stream was cancelled"));
  });
}

void ExchangeStream::OnDone() {
  back_from_grpc(this);
  intrusive_ptr_release(this);  // gRPC's reference
}

// ---- the loop -----------------------------------------------------------------------------

void ExchangeStream::open() {
  if (opened_) {
    return;
  }
  opened_ = true;
  registered_ = host_.stream_opened(*this);
  if (!registered_) {
    request_finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
  }
}

void ExchangeStream::take_batch(ReadBatch& batch) {
  open();  // a batch may reach the loop before the job that opens the stream
  const std::size_t frames = batch.frames.size();
  for (std::size_t at = 0; at < frames && !finished_; ++at) {
    const ExchangeFrameView& frame = batch.frames[at];
    if (frame.cancel) {
      take_cancel(frame.id, batch.read_at);
      continue;
    }
    if (in_flight_.contains(frame.id)) {
      // The request already in flight under this id goes on; this frame is refused.
      queue_reply(frame.id, grpc::StatusCode::ALREADY_EXISTS,
                  "request " + std::to_string(frame.id) + " is already in flight on this stream", {}, batch.read_at);
      continue;
    }
    // Counted before the checks, as Send counts its call before it looks at the server's state:
    // a graceful shutdown that saw the count at zero cannot miss a request taken after.
    host_.request_started();
    std::optional<grpc::Status> refused;
    if (finish_requested_ || host_.refusing()) {
      refused.emplace(grpc::StatusCode::UNAVAILABLE, "server is shutting down");
    } else if (!frame.error.empty()) {
      const bool denied = !batch.denied.empty() && batch.denied[at];
      refused.emplace(denied ? grpc::StatusCode::PERMISSION_DENIED : grpc::StatusCode::INVALID_ARGUMENT, frame.error);
    } else if (in_flight_.size() >= limits_.max_in_flight) {
      // The pacing below stops reading at the limit; a batch larger than what is left is refused
      // past it, so the limit holds whatever the client packs into one message.
      refused.emplace(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      "the stream has " + std::to_string(in_flight_.size()) +
                          " requests in flight, the server's limit (ServerOptions::max_stream_requests_in_flight)");
    } else if (host_.over_limit()) {  // counted above, so at the limit this request is the last admitted
      refused.emplace(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      "server has reached its limit of requests in flight (ServerOptions::max_requests_in_flight)");
    }
    if (refused) {
      host_.request_finished();
      queue_reply(frame.id, refused->error_code(), refused->error_message(), {}, batch.read_at);
      continue;
    }
    take_request(frame.id, frame.key, std::move(batch.payloads[at]), frame.timeout_ms, batch.read_at);
  }
  // The replies the batch made at once (tasks that answer without waiting) leave now, before the
  // next read is started; later ones follow the queued flush or the end of this write.
  flush();
  read_on();
}

void ExchangeStream::take_request(std::uint64_t id, TaskInstanceKeyView key, boost::json::object&& payload,
                                  std::uint64_t timeout_ms, std::chrono::steady_clock::time_point read_at) {
  // Counted already (take_batch): from here every path ends in answer(), which uncounts it.
  std::optional<std::chrono::steady_clock::time_point> expires;
  std::optional<std::chrono::system_clock::time_point> deadline = stream_deadline_;
  if (timeout_ms != 0) {
    // Clamped so that no clock arithmetic overflows: a century is as good as no deadline.
    constexpr std::uint64_t LONGEST_MS = 100ULL * 365 * 24 * 3600 * 1000;
    const std::chrono::milliseconds timeout(std::min(timeout_ms, LONGEST_MS));
    expires = read_at + timeout;  // counted from the read, as the protocol says
    const auto wall = std::chrono::system_clock::now() + (*expires - std::chrono::steady_clock::now());
    deadline = deadline ? std::min(*deadline, wall) : wall;
  }
  Request* request = nullptr;
  try {
    request = new Request(*this, id, expires, deadline, read_at);
  } catch (...) {
    host_.request_finished();
    queue_reply(id, grpc::StatusCode::RESOURCE_EXHAUSTED, "the server is out of memory", {}, read_at);
    return;
  }
  PendingReplyPtr reply(request);
  in_flight_.emplace(id, request);  // a throw here drops `reply` unanswered: it answers INTERNAL
  if (expires) {
    if (!deadlines_) {
      deadlines_ = std::make_unique<DeadlineSet>();
    }
    deadlines_->insert(*request);
    arm_deadline_timer();
  }
  host_.route(key, std::move(reply), std::move(payload));
}

void ExchangeStream::take_cancel(std::uint64_t id, std::chrono::steady_clock::time_point read_at) {
  const auto it = in_flight_.find(id);
  if (it == in_flight_.end()) {
    // Answered already (its reply may be on its way) or never sent: the client ignores a reply
    // for an id it no longer waits for.
    queue_reply(id, grpc::StatusCode::NOT_FOUND, "no request " + std::to_string(id) + " in flight on this stream", {},
                read_at);
    return;
  }
  if (const PendingReplyPtr request = it->second->acquire()) {
    request->give_up(grpc::Status(grpc::StatusCode::CANCELLED, cancelled_message(id)));
  }
}

void ExchangeStream::read_on() {
  if (reads_ended_ || finished_ || broken_ || finish_requested_) {
    return;  // a stream that is finishing reads no more
  }
  // Paused while the stream has its limit of requests in flight, while the server is saturated
  // and this stream holds some of it, or while a whole message of replies waits behind the write
  // in flight (a client that does not read its replies): the next answer, or the end of the
  // write, reads on.
  if (in_flight_.size() >= limits_.max_in_flight || (!in_flight_.empty() && host_.saturated()) ||
      (write_in_flight_ && outbox_.size() > 1)) {
    read_paused_ = true;
    return;
  }
  read_paused_ = false;
  handed_to_grpc(this);  // the read parses into memory the loop just recycled
  StartRead(&reading_);
}

void ExchangeStream::reads_ended() {
  reads_ended_ = true;
  if (in_flight_.empty() && !broken_) {
    request_finish(end_status_);
  }
}

// A batch that does not decode, or holds too many frames: nothing of it is taken, the stream reads
// no more, and it ends with the batch's status once the requests read before it are answered.
void ExchangeStream::refuse_batch(grpc::Status status) {
  open();
  if (end_status_.ok()) {
    end_status_ = std::move(status);
  }
  reads_ended();
}

void ExchangeStream::write_done(bool ok) {
  write_in_flight_ = false;
  // gRPC's serialisation left the encoded size cached.
  recycle_batch(writing_, static_cast<std::size_t>(writing_.GetCachedSize()), spare_);
  if (!ok) {
    break_stream(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream to the caller broke"),
                 grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream broke"));
    return;
  }
  flush();
  if (read_paused_) {
    read_on();  // reading may have paused for the outbox
  }
  maybe_finish();
}

void ExchangeStream::break_stream(const grpc::Status& for_requests, grpc::Status for_stream) {
  if (broken_) {
    // Broken already (OnCancel, then the failed write): the finish may have waited for this write.
    maybe_finish();
    return;
  }
  broken_ = true;
  outbox_.clear();
  outbox_back_bytes_ = 0;
  give_up_all(for_requests);
  request_finish(std::move(for_stream));
}

void ExchangeStream::end_for_shutdown() {
  // The endpoints are closed: what is still in flight is held outside them (a task's
  // rx::Request) or on its way; it ends here, with the status every other request got.
  const grpc::Status status(grpc::StatusCode::UNAVAILABLE, "server is shutting down");
  give_up_all(status);
  request_finish(status);
}

void ExchangeStream::give_up_all(const grpc::Status& status) {
  std::vector<PendingReplyPtr> requests;
  requests.reserve(in_flight_.size());
  for (const auto& [id, request] : in_flight_) {
    if (PendingReplyPtr held = request->acquire()) {
      requests.push_back(std::move(held));
    }
  }
  for (const PendingReplyPtr& request : requests) {
    request->give_up(status);
  }
}

void ExchangeStream::answer(Request& request, grpc::StatusCode code, const std::string& message,
                            std::string&& reply_json) {
  if (const auto it = in_flight_.find(request.id()); it != in_flight_.end() && it->second == &request) {
    in_flight_.erase(it);
  }
  if (request.is_linked()) {
    deadlines_->erase(deadlines_->iterator_to(request));
  }
  host_.request_finished();
  queue_reply(request.id(), code, message, std::move(reply_json), request.read_at());
  if (read_paused_) {
    read_on();
  }
  if (in_flight_.empty() && reads_ended_ && !finish_requested_) {
    request_finish(end_status_);
  }
}

void ExchangeStream::queue_reply(std::uint64_t id, grpc::StatusCode code, const std::string& message,
                                 std::string&& reply_json, std::chrono::steady_clock::time_point read_at) {
  if (!finished_) {  // once finished, the server may be gone
    host_.request_replied(code, read_at);
  }
  if (broken_ || finished_) {
    return;  // nothing reaches the client any more
  }
  // A status message can quote client input (a key) or a task's exception text: capped, so that
  // one reply cannot exceed the message limit and break the stream for every other request.
  const std::string_view text = std::string_view(message).substr(0, MAX_STATUS_MESSAGE_BYTES);
  const std::size_t bytes = reply_json.size() + text.size() + REPLY_FRAMING_BYTES;
  if (outbox_.empty() || outbox_back_bytes_ + bytes > limits_.max_message_bytes) {
    outbox_.emplace_back().Swap(&spare_);
    outbox_back_bytes_ = 0;
  }
  remote_xcomm::v1::ExchangeReply* const reply = outbox_.back().add_replies();
  reply->set_id(id);
  reply->set_code(static_cast<int>(code));
  if (!text.empty()) {
    reply->set_message(std::string(text));
  }
  if (!reply_json.empty()) {
    reply->set_reply_json(std::move(reply_json));
  }
  outbox_back_bytes_ += bytes;
  schedule_flush();
}

void ExchangeStream::schedule_flush() {
  if (flush_scheduled_ || write_in_flight_) {
    return;  // a flush is queued, or the end of the write in flight sends what queued meanwhile
  }
  // Behind the loop work already queued, so that the replies it makes go out in this message.
  flush_scheduled_ = true;
  intrusive_ptr_add_ref(this);
  post_job(loop_, &flush_job_);
}

void ExchangeStream::scheduled_flush() {
  flush_scheduled_ = false;
  flush();
}

void ExchangeStream::flush() {
  if (write_in_flight_ || outbox_.empty() || broken_ || finished_) {
    return;
  }
  writing_.Swap(&outbox_.front());
  outbox_.pop_front();
  if (outbox_.empty()) {
    outbox_back_bytes_ = 0;
  }
  write_in_flight_ = true;
  handed_to_grpc(this);  // its reaction sees the batch as the loop left it
  StartWrite(&writing_);
}

void ExchangeStream::request_finish(grpc::Status status) {
  if (finish_requested_) {
    maybe_finish();
    return;
  }
  finish_requested_ = true;
  finish_status_ = std::move(status);
  maybe_finish();
}

void ExchangeStream::maybe_finish() {
  if (!finish_requested_ || finished_ || write_in_flight_) {
    return;  // a write in flight ends first (gRPC finishes after it either way; this keeps order plain)
  }
  if (!broken_ && !outbox_.empty()) {
    flush();
    return;
  }
  finished_ = true;
  if (deadline_timer_) {
    deadline_timer_->cancel();
  }
  if (registered_) {
    registered_ = false;
    host_.stream_closed(*this);
  }
  Finish(finish_status_);
}

// ---- deadlines ----------------------------------------------------------------------------

void ExchangeStream::arm_deadline_timer() {
  if (!deadlines_ || deadlines_->empty() || finished_) {
    return;
  }
  const auto earliest = deadlines_->begin()->expires();
  if (earliest >= timer_armed_for_) {
    return;  // the timer already fires by then
  }
  if (!deadline_timer_) {
    deadline_timer_ = std::make_unique<asio::steady_timer>(loop_);
  }
  timer_armed_for_ = earliest;
  deadline_timer_->expires_at(earliest);  // a wait already pending ends with operation_aborted
  intrusive_ptr_add_ref(this);
  deadline_timer_->async_wait(
      [self = boost::intrusive_ptr<ExchangeStream>(this, /*add_ref=*/false)](const boost::system::error_code& error) {
        if (error != asio::error::operation_aborted) {
          self->deadlines_passed();
        }
      });
}

void ExchangeStream::deadlines_passed() {
  timer_armed_for_ = std::chrono::steady_clock::time_point::max();
  const auto now = std::chrono::steady_clock::now();
  while (!deadlines_->empty() && deadlines_->begin()->expires() <= now) {
    Request& expired = *deadlines_->begin();
    deadlines_->erase(deadlines_->begin());
    if (const PendingReplyPtr request = expired.acquire()) {
      request->give_up(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                    "the deadline of request " + std::to_string(expired.id()) + " passed"));
    }
  }
  arm_deadline_timer();
}

}  // namespace rx::detail

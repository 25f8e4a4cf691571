#include "xcom/xcom_calls.hpp"

#include "tsan_annotations.hpp"
#include "xcom/wire.hpp"

#include <boost/asio/post.hpp>
#include <google/protobuf/io/coded_stream.h>
#include <grpcpp/server_context.h>

#include <algorithm>
#include <deque>
#include <string>
#include <utility>
#include <vector>

namespace rx::detail {
namespace {

// Most events one Watch message carries, and roughly its largest size: large enough that a
// subscriber catching up moves in big batches, small enough to stay far below message limits.
constexpr std::size_t MAX_EVENTS_PER_MESSAGE = 512;
constexpr std::size_t MAX_BYTES_PER_MESSAGE = std::size_t{1} << 20;

// ---- Pull ----------------------------------------------------------------------------------------

// Owned by itself (self_) until gRPC's OnDone, and by the loop jobs that reach it, so that a
// reaction queued on the loop never finds it freed. Finished exactly once, on the loop.
class PullCall final : public grpc::ServerUnaryReactor,
                       public XComWaiter,
                       public std::enable_shared_from_this<PullCall> {
 public:
  PullCall(XComQuery query, remote_xcomm::v1::PullResponse* response, std::shared_ptr<XComTable> table,
           LoopExecutor loop, ServerMetrics* metrics)
      : XComWaiter(std::move(query)),
        response_(response),
        table_(std::move(table)),
        loop_(std::move(loop)),
        metrics_(metrics),
        started_(std::chrono::steady_clock::now()) {}

  void start(std::shared_ptr<PullCall> self) {
    self_ = self;
    handed_to_grpc(this);
    hand_off(loop_, [self = std::move(self)] { self->run(); });
  }

  void OnCancel() override {
    back_from_grpc(this);
    hand_off(loop_, [self = shared_from_this()] {
      self->table_->cancel_wait(*self);
      self->finish(grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the pull or its deadline passed"));
    });
  }

  void OnDone() override {
    back_from_grpc(this);
    self_.reset();  // may free this
  }

  void on_ready(std::vector<XCom> xcoms) override { answer(xcoms); }
  void on_closed(const grpc::Status& status) override { finish(status); }

 private:
  void run() {
    if (finished_) {
      return;  // cancelled before it reached the loop
    }
    if (const grpc::Status status = XComTable::check(query()); !status.ok()) {
      finish(status);
      return;
    }
    bool satisfied = false;
    std::vector<XCom> found = table_->find(query(), satisfied);
    if (satisfied || (!query().wait && !found.empty())) {
      answer(found);
      return;
    }
    if (!query().wait) {
      finish(grpc::Status(grpc::StatusCode::NOT_FOUND, describe_missing()));
      return;
    }
    table_->wait(*this);  // or on_closed at once, when the server is shutting down
  }

  std::string describe_missing() const {
    // Appended piece by piece: GCC 12 flags `"..." + std::string` chains with a false -Wrestrict.
    const XComQuery& q = query();
    std::string message = "no XCom \"";
    message.append(q.key).append("\" of ");
    if (q.all_map_indexes) {
      message.append(q.dag_id).append("/").append(q.task_id).append("/").append(q.run_id).append(" (any map index)");
    } else {
      message.append(to_string(TaskInstanceKeyView{q.dag_id, q.task_id, q.run_id, q.map_index}));
    }
    message.append(" (never pushed, cleared by a new attempt, or past its retention: docs/xcoms.md)");
    return message;
  }

  void answer(const std::vector<XCom>& xcoms) {
    if (finished_) {
      return;
    }
    for (const XCom& xcom : xcoms) {
      to_proto(xcom, *response_->add_xcoms());
    }
    // Checked here rather than left to gRPC, whose refusal names neither the limit nor a remedy.
    const std::size_t bytes = response_->ByteSizeLong();
    if (const std::size_t limit = table_->options().max_message_bytes; bytes > limit) {
      response_->Clear();
      std::string message = "the XComs matched make a reply of ";
      message.append(std::to_string(bytes))
          .append(" bytes, over the server's message limit of ")
          .append(std::to_string(limit))
          .append(" (ServerOptions::max_message_bytes)");
      if (xcoms.size() > 1) {
        message.append("; pull fewer at a time (one map index)");
      }
      finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, message));
      return;
    }
    finish(grpc::Status::OK);
  }

  void finish(grpc::Status status) {
    if (finished_) {
      return;
    }
    finished_ = true;
    if (metrics_ != nullptr) {
      metrics_->record(Method::pull, status.error_code(), started_);
    }
    // OnDone may free this on another thread as soon as Finish is called: nothing here touches
    // the call after it (the release tells ThreadSanitizer of the order gRPC keeps).
    handed_to_grpc(this);
    Finish(std::move(status));
  }

  remote_xcomm::v1::PullResponse* response_;  // owned by gRPC; valid until OnDone
  std::shared_ptr<XComTable> table_;
  LoopExecutor loop_;
  ServerMetrics* metrics_;  // the server's; it outlives every call's finish
  std::chrono::steady_clock::time_point started_;
  std::shared_ptr<PullCall> self_;  // gRPC's part, released at OnDone
  bool finished_ = false;           // on the loop
};

// ---- Watch ---------------------------------------------------------------------------------------

class WatchCall final : public grpc::ServerWriteReactor<remote_xcomm::v1::WatchResponse>,
                        public XComSubscriber,
                        public std::enable_shared_from_this<WatchCall> {
 public:
  WatchCall(WatchQuery query, std::shared_ptr<XComTable> table, LoopExecutor loop, ServerMetrics* metrics)
      : XComSubscriber(std::move(query)),
        table_(std::move(table)),
        loop_(std::move(loop)),
        metrics_(metrics),
        buffer_limit_(std::max<std::size_t>(table_->options().watch_buffer_events, 1)) {}

  void start(std::shared_ptr<WatchCall> self) {
    self_ = self;
    if (metrics_ != nullptr) {
      metrics_->watch_opened();
    }
    handed_to_grpc(this);
    hand_off(loop_, [self = std::move(self)] { self->run(); });
  }

  void OnWriteDone(bool ok) override {
    back_from_grpc(this);
    hand_off(loop_, [self = shared_from_this(), ok] { self->write_done(ok); });
  }

  void OnCancel() override {
    back_from_grpc(this);
    hand_off(loop_, [self = shared_from_this()] {
      self->end(grpc::Status(grpc::StatusCode::CANCELLED, "the watcher cancelled the watch"));
    });
  }

  void OnDone() override {
    back_from_grpc(this);
    self_.reset();  // may free this
  }

  bool on_event(const XComEventPtr& event) override {
    if (finish_requested_) {
      return false;  // ended (an event too large to send); the table forgets it now
    }
    if (pending_.size() >= buffer_limit_) {
      // Falling behind: ended rather than buffered without bound, so that it neither grows the
      // server's memory nor holds up the others. It resumes after what it received.
      end_unregistered(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          "the watcher fell " + std::to_string(buffer_limit_) +
              " events behind (ServerOptions::watch_buffer_events); resume with after_sequence = the last sequence "
              "received (the server wrote up to " +
              std::to_string(last_written_) + ")"));
      return false;
    }
    pending_.push_back(event);
    write_next();
    return true;
  }

  void on_closed(const grpc::Status& status) override { end_unregistered(status); }

 private:
  void run() {
    if (finish_requested_) {
      return;
    }
    if (const auto& closed = table_->closed()) {
      end(*closed);
      return;
    }
    if (const grpc::Status status = XComTable::check(query()); !status.ok()) {
      end(status);
      return;
    }
    if (query().after_sequence > 0) {
      cursor_ = query().after_sequence;
      replaying_ = true;
    } else if (query().from_start) {
      cursor_ = table_->first_retained_sequence() - 1;
      replaying_ = true;
    }
    if (replaying_) {
      replay();
    } else {
      table_->subscribe(*this);
    }
    write_next();
  }

  // Replays the history in chunks, one buffer at a time, paced by the writes; once caught up it
  // follows the live events, in the same loop turn, so that none falls between the two.
  void replay() {
    std::vector<XComEventPtr> chunk;
    bool caught_up = false;
    const grpc::Status status = table_->replay(query(), cursor_, buffer_limit_, chunk, caught_up);
    if (!status.ok()) {
      end(status);
      return;
    }
    for (XComEventPtr& event : chunk) {
      cursor_ = event->sequence;
      pending_.push_back(std::move(event));
    }
    if (caught_up) {
      replaying_ = false;
      table_->subscribe(*this);
    } else if (chunk.empty()) {
      cursor_ = table_->next_sequence() - 1;  // scanned to the end without a match
    }
  }

  void write_next() {
    if (writing_ || finish_requested_) {
      return;
    }
    if (pending_.empty() && replaying_) {
      replay();
      if (finish_requested_) {
        return;
      }
    }
    if (pending_.empty()) {
      return;
    }
    message_.Clear();
    std::size_t bytes = 0;  // of message_, as serialised
    const std::size_t limit = table_->options().max_message_bytes;
    while (!pending_.empty() && message_.events_size() < static_cast<int>(MAX_EVENTS_PER_MESSAGE) &&
           bytes < MAX_BYTES_PER_MESSAGE) {
      const XComEventPtr& event = pending_.front();
      remote_xcomm::v1::WatchEvent& added = *message_.add_events();
      event->to_proto(added);
      const std::size_t event_bytes = added.ByteSizeLong();
      const std::size_t framed = 1 + google::protobuf::io::CodedOutputStream::VarintSize64(event_bytes) + event_bytes;
      if (bytes + framed > limit) {
        message_.mutable_events()->RemoveLast();
        if (message_.events_size() > 0) {
          break;  // it goes alone in the next message
        }
        // Alone over the limit: no message can carry it. Ended, never skipped silently; the
        // watcher can resume past it.
        std::string message = "the event with sequence ";
        message.append(std::to_string(event->sequence))
            .append(" makes a message of ")
            .append(std::to_string(framed))
            .append(" bytes, over the server's message limit of ")
            .append(std::to_string(limit))
            .append(" (ServerOptions::max_message_bytes); resume with after_sequence = ")
            .append(std::to_string(event->sequence))
            .append(" to skip it (Pull cannot carry it either)");
        // This may run inside the table's publish (on_event), which must not be unsubscribed
        // from: ended now, unsubscribed by a job of its own, which keeps it alive until then.
        end_unregistered(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, message));
        boost::asio::post(loop_, [self = shared_from_this()] { self->table_->unsubscribe(*self); });
        return;
      }
      bytes += framed;
      last_written_ = event->sequence;
      pending_.pop_front();
    }
    writing_ = true;
    handed_to_grpc(this);
    StartWrite(&message_);
  }

  void write_done(bool ok) {
    writing_ = false;
    if (finish_requested_) {
      send_finish();  // it waited for this write
      return;
    }
    if (!ok) {
      end(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the watch stream broke"));
      return;
    }
    write_next();
  }

  void end(grpc::Status status) {
    table_->unsubscribe(*this);
    end_unregistered(std::move(status));
  }

  // The table already forgot this subscriber (or never knew it).
  void end_unregistered(grpc::Status status) {
    if (finish_requested_) {
      return;
    }
    finish_requested_ = true;
    replaying_ = false;
    pending_.clear();
    finish_status_ = std::move(status);
    if (!writing_) {
      send_finish();  // else once the write in flight is done
    }
  }

  void send_finish() {
    if (finished_) {
      return;
    }
    finished_ = true;
    if (metrics_ != nullptr) {
      metrics_->record_code(Method::watch, finish_status_.error_code());
      metrics_->watch_closed();
    }
    handed_to_grpc(this);  // OnDone may free this on another thread once Finish is called
    Finish(finish_status_);
  }

  std::shared_ptr<XComTable> table_;
  LoopExecutor loop_;
  ServerMetrics* metrics_;  // the server's; it outlives every call's finish
  std::size_t buffer_limit_;
  std::shared_ptr<WatchCall> self_;  // gRPC's part, released at OnDone
  // On the loop.
  std::deque<XComEventPtr> pending_;
  remote_xcomm::v1::WatchResponse message_;  // the message being written
  std::uint64_t cursor_ = 0;                 // replay: the last history sequence looked at
  std::uint64_t last_written_ = 0;
  grpc::Status finish_status_;
  bool replaying_ = false;
  bool writing_ = false;
  bool finish_requested_ = false;
  bool finished_ = false;
};

}  // namespace

grpc::ServerUnaryReactor* start_pull(grpc::CallbackServerContext* /*context*/,
                                     const remote_xcomm::v1::PullRequest& request,
                                     remote_xcomm::v1::PullResponse* response, std::shared_ptr<XComTable> table,
                                     LoopExecutor loop, ServerMetrics* metrics) {
  auto call = std::make_shared<PullCall>(from_proto(request), response, std::move(table), std::move(loop), metrics);
  grpc::ServerUnaryReactor* reactor = call.get();
  call->start(std::move(call));
  return reactor;
}

grpc::ServerWriteReactor<remote_xcomm::v1::WatchResponse>* start_watch(grpc::CallbackServerContext* /*context*/,
                                                                       const remote_xcomm::v1::WatchRequest& request,
                                                                       std::shared_ptr<XComTable> table,
                                                                       LoopExecutor loop, ServerMetrics* metrics) {
  auto call = std::make_shared<WatchCall>(from_proto(request), std::move(table), std::move(loop), metrics);
  grpc::ServerWriteReactor<remote_xcomm::v1::WatchResponse>* reactor = call.get();
  call->start(std::move(call));
  return reactor;
}

}  // namespace rx::detail

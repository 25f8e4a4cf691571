// The client side of a Watch stream, and rx::Watch, its handle.
#include "client/watch_stream.hpp"

#include "tsan_annotations.hpp"
#include "xcom/wire.hpp"

#include <boost/asio/cancellation_signal.hpp>

#include <string>

namespace rx {
namespace detail {

namespace asio = boost::asio;

namespace {

constexpr auto ENDING = asio::cancellation_type::terminal | asio::cancellation_type::partial;

grpc::Status cancelled_by_caller() { return {grpc::StatusCode::CANCELLED, "the watch was cancelled by its caller"}; }

// The status next() reports for the end of a stream the caller did not end: never OK, and a
// server's CANCELLED is a server gone away (as for a unary call).
grpc::Status end_status(const grpc::Status& status) {
  if (status.ok()) {
    return {grpc::StatusCode::UNAVAILABLE,
            "the server ended the watch with OK, which the Watch contract has no use for; resume after "
            "last_sequence()"};
  }
  if (status.error_code() == grpc::StatusCode::CANCELLED) {
    return {grpc::StatusCode::UNAVAILABLE,
            "the server cancelled the watch (it may be shutting down): " + status.error_message()};
  }
  return status;
}

}  // namespace

WatchStream::WatchStream(std::shared_ptr<const TargetChannel> channel, const LoopExecutor& fallback)
    : channel_(std::move(channel)), fallback_(asio::prefer(fallback, asio::execution::outstanding_work.untracked)) {}

std::shared_ptr<WatchStream> WatchStream::start(std::shared_ptr<const TargetChannel> channel, const WatchQuery& query,
                                                const LoopExecutor& fallback) {
  std::shared_ptr<WatchStream> stream(new WatchStream(std::move(channel), fallback));
  to_proto(query, stream->request_);
  stream->last_sequence_.store(query.after_sequence, std::memory_order_relaxed);
  stream->grpc_reference_ = stream;
  if (!stream->channel_->authorization.empty()) {
    stream->context_.AddMetadata("authorization", stream->channel_->authorization);
  }
  stream->channel_->stub->async()->Watch(&stream->context_, &stream->request_, stream.get());
  stream->AddHold();
  stream->holding_ = true;
  stream->reading_ = true;
  stream->StartRead(&stream->response_);
  handed_to_grpc(stream.get());  // before StartCall: the reactions may run from then on
  stream->StartCall();
  return stream;
}

void WatchStream::hand_out(WatchNext& job) {
  job.status = grpc::Status::OK;
  job.event = std::move(buffer_.front());
  buffer_.pop_front();
  last_sequence_.store(job.event.sequence, std::memory_order_release);
}

bool WatchStream::stop_reads() {
  reads_stopped_ = true;
  if (!holding_ || starting_read_) {
    return false;
  }
  holding_ = false;
  return true;
}

void WatchStream::start_read_outside_reactions() {
  handed_to_grpc(this);
  StartRead(&response_);  // the hold keeps the call alive
  bool release = false;
  {
    const std::lock_guard lock(mutex_);
    starting_read_ = false;
    if (reads_stopped_ && holding_) {
      holding_ = false;
      release = true;
    }
  }
  if (release) {
    RemoveHold();
  }
}

void WatchStream::next(std::unique_ptr<WatchNext> job) {
  bool start_read = false;
  {
    const std::lock_guard lock(mutex_);
    if (waiting_) {
      job->status = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                 "another next() is already waiting on this Watch (one at a time)");
    } else if (caller_ended_) {
      job->status = cancelled_by_caller();
    } else if (!buffer_.empty()) {
      hand_out(*job);
      if (buffer_.empty() && !reading_ && !reads_stopped_) {
        reading_ = true;
        starting_read_ = true;
        start_read = true;
      }
    } else if (done_) {
      job->status = end_;
    } else {
      const std::uint64_t id = ++wait_ids_;
      if (auto slot = job->handler.get_cancellation_slot(); slot.is_connected()) {
        // Emitted on the handler's executor; cleared there when the next() completes. A weak
        // reference: the stream may be gone by then.
        slot.assign([weak = weak_from_this(), id](asio::cancellation_type type) {
          if (const std::shared_ptr<WatchStream> stream = weak.lock()) {
            stream->cancel_next(id, type);
          }
        });
      }
      waiting_ = std::move(job);
      waiting_id_ = id;
      return;
    }
  }
  if (start_read) {
    start_read_outside_reactions();
  }
  WatchNext::post(std::move(job), fallback_);
}

void WatchStream::cancel_next(std::uint64_t id, asio::cancellation_type type) {
  if ((type & ENDING) != asio::cancellation_type::none) {
    {
      const std::lock_guard lock(mutex_);
      if (!waiting_ || waiting_id_ != id) {
        return;  // that next() has completed already
      }
    }
    end_by_caller();
    return;
  }
  if ((type & asio::cancellation_type::total) == asio::cancellation_type::none) {
    return;
  }
  std::unique_ptr<WatchNext> job;
  {
    const std::lock_guard lock(mutex_);
    if (!waiting_ || waiting_id_ != id) {
      return;
    }
    job = std::move(waiting_);
  }
  job->status = grpc::Status(grpc::StatusCode::CANCELLED, "the next() was cancelled; the watch goes on");
  WatchNext::post(std::move(job), fallback_);
}

void WatchStream::end_by_caller() {
  std::unique_ptr<WatchNext> job;
  bool release = false;
  {
    const std::lock_guard lock(mutex_);
    if (caller_ended_ || done_) {
      return;  // an ended stream keeps the status it ended with
    }
    caller_ended_ = true;
    buffer_.clear();
    job = std::move(waiting_);
    release = stop_reads();
  }
  context_.TryCancel();
  if (release) {
    RemoveHold();
  }
  if (job) {
    job->status = cancelled_by_caller();
    WatchNext::post(std::move(job), fallback_);
  }
}

void WatchStream::OnReadDone(bool ok) {
  back_from_grpc(this);
  std::unique_ptr<WatchNext> ready;
  bool read_more = false;
  bool release = false;
  {
    const std::lock_guard lock(mutex_);
    reading_ = false;
    if (!ok) {
      release = stop_reads();  // the stream is ending: OnDone follows once the hold is released
    } else if (!caller_ended_) {
      for (const remote_xcomm::v1::WatchEvent& wire : response_.events()) {
        WatchEvent event;
        if (from_proto(wire, event)) {  // a newer server's kind of event is skipped
          buffer_.push_back(std::move(event));
        }
      }
      if (waiting_ && !buffer_.empty()) {
        ready = std::move(waiting_);
        hand_out(*ready);
      }
      if (buffer_.empty() && !reads_stopped_) {
        reading_ = true;  // started below, inside this reaction: the call lives until it returns
        read_more = true;
      }
    }
    response_.Clear();
  }
  if (read_more) {
    handed_to_grpc(this);
    StartRead(&response_);
  }
  if (release) {
    RemoveHold();
  }
  if (ready) {
    // User code may run here and destroy the Watch, its Client and their io_context: after this,
    // only the stream itself is touched (by gRPC), which gRPC keeps alive until OnDone.
    WatchNext::deliver(std::move(ready));
  }
}

void WatchStream::OnDone(const grpc::Status& status) {
  back_from_grpc(this);
  std::unique_ptr<WatchNext> ready;
  std::shared_ptr<WatchStream> self;
  {
    const std::lock_guard lock(mutex_);
    done_ = true;
    end_ = caller_ended_ ? cancelled_by_caller() : end_status(status);
    if (waiting_) {
      ready = std::move(waiting_);
      ready->status = end_;
    }
    self = std::move(grpc_reference_);
  }
  if (ready) {
    WatchNext::deliver(std::move(ready));
  }
  // `self` goes last: this may free the stream, on this thread, touching no io_context.
}

void watch_next(const std::shared_ptr<WatchStream>& stream, const LoopExecutor& fallback, const LoopExecutor* loop,
                WatchNextHandler handler) {
  auto job = std::make_unique<WatchNext>(std::move(handler), loop);
  if (!stream) {
    job->status = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "next() on a moved-from Watch");
    WatchNext::post(std::move(job), fallback);
    return;
  }
  stream->next(std::move(job));
}

}  // namespace detail

Watch::Watch(std::shared_ptr<detail::WatchStream> stream, LoopExecutor executor) noexcept
    : stream_(std::move(stream)), executor_(std::move(executor)) {}

Watch& Watch::operator=(Watch&& other) noexcept {
  if (this != &other) {
    if (stream_) {
      stream_->end_by_caller();
    }
    stream_ = std::move(other.stream_);
    executor_ = std::move(other.executor_);
  }
  return *this;
}

Watch::~Watch() {
  if (stream_) {
    stream_->end_by_caller();
  }
}

void Watch::cancel() {
  if (stream_) {
    stream_->end_by_caller();
  }
}

std::uint64_t Watch::last_sequence() const noexcept { return stream_ ? stream_->last_sequence() : 0; }

}  // namespace rx

#include "common/exchange_client.hpp"

#include <grpcpp/client_context.h>
#include <grpcpp/support/client_callback.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace rx::bench {
namespace {

using remote_xcomm::v1::ExchangeRequest;
using remote_xcomm::v1::ExchangeResponse;

// Owns itself and is freed in OnDone, the stream's last reaction.
class ExchangeClient final : public grpc::ClientBidiReactor<ExchangeRequest, ExchangeResponse> {
 public:
  ExchangeClient(const std::vector<remote_xcomm::v1::TaskInstanceKey>& keys, const std::string& payload_json,
                 int in_flight, ClosedLoop& loop, grpc::Status& status, Signal& done)
      : keys_(keys),
        payload_json_(payload_json),
        in_flight_(in_flight),
        loop_(loop),
        status_(status),
        done_(done),
        answered_once_(static_cast<std::size_t>(loop.total())),
        sent_at_(static_cast<std::size_t>(loop.total())) {}

  void start(remote_xcomm::v1::RemoteXComm::Stub& stub) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(1));
    stub.async()->Exchange(&context_, this);
    StartRead(&response_);
    {
      const std::lock_guard lock(mutex_);
      while (sent_ < loop_.total() && sent_ < in_flight_) {
        queue_locked();
      }
      write_locked();
    }
    StartCall();
  }

  void OnWriteDone(bool ok) override {
    const std::lock_guard lock(mutex_);
    writing_ = false;
    written_.Clear();
    if (ok) {
      write_locked();
    }  // else the stream broke; OnDone reports its status
  }

  void OnReadDone(bool ok) override {
    const Clock::time_point finished = Clock::now();
    if (!ok) {
      return;
    }
    // Locals: once StartRead is called below, the next OnReadDone may run on another thread.
    std::vector<std::pair<std::uint64_t, std::string>> answered;
    std::vector<Clock::time_point> started;
    for (const remote_xcomm::v1::ExchangeReply& reply : response_.replies()) {
      std::string error;
      if (reply.code() != 0) {
        error = "Exchange request failed: " + reply.message();
      } else if (reply.reply_json().size() != payload_json_.size()) {
        error = "Exchange echoed a reply of the wrong size";
      } else if (reply.id() >= sent_at_.size() || answered_once_[reply.id()]) {
        ++stray_replies_;  // not counted: each request completes exactly once in `loop`
        continue;
      }
      answered_once_[reply.id()] = true;
      answered.emplace_back(reply.id(), std::move(error));
    }
    bool more_to_read = false;
    {
      const std::lock_guard lock(mutex_);
      received_ += static_cast<std::int64_t>(answered.size());
      while (sent_ < loop_.total() && sent_ - received_ < in_flight_) {
        queue_locked();
      }
      write_locked();
      more_to_read = received_ < loop_.total();
      for (auto& [id, error] : answered) {
        started.push_back(sent_at_[id]);
      }
    }
    if (more_to_read) {
      StartRead(&response_);
    }
    for (std::size_t i = 0; i < answered.size(); ++i) {
      loop_.complete(started[i], finished, answered[i].second);
    }
  }

  void OnDone(const grpc::Status& status) override {
    status_ = stray_replies_ == 0
                  ? status
                  : grpc::Status(grpc::StatusCode::INTERNAL,
                                 std::to_string(stray_replies_) + " replies for ids never sent or already answered");
    Signal& done = done_;
    delete this;
    done.set();
  }

 private:
  void queue_locked() {
    const auto id = static_cast<std::uint64_t>(sent_++);
    sent_at_[id] = Clock::now();
    remote_xcomm::v1::ExchangeFrame* frame = pending_.add_frames();
    frame->set_id(id);
    *frame->mutable_key() = keys_[id % keys_.size()];
    frame->set_payload_json(payload_json_);
  }

  void write_locked() {
    if (writing_) {
      return;
    }
    if (pending_.frames_size() > 0) {
      written_.Swap(&pending_);
      writing_ = true;
      StartWrite(&written_);
    } else if (received_ == loop_.total() && !writes_done_) {
      writes_done_ = true;
      StartWritesDone();
    }
  }

  grpc::ClientContext context_;
  const std::vector<remote_xcomm::v1::TaskInstanceKey>& keys_;
  const std::string& payload_json_;
  const std::int64_t in_flight_;
  ClosedLoop& loop_;
  grpc::Status& status_;
  Signal& done_;
  ExchangeResponse response_;  // the read in flight's
  // The reader's: reads run one at a time, each after the previous one's StartRead.
  std::vector<bool> answered_once_;  // by id
  std::int64_t stray_replies_ = 0;

  std::mutex mutex_;
  std::vector<Clock::time_point> sent_at_;  // by id
  ExchangeRequest pending_;                 // frames queued for the next write
  ExchangeRequest written_;                 // the write in flight's
  std::int64_t sent_ = 0;
  std::int64_t received_ = 0;
  bool writing_ = false;
  bool writes_done_ = false;
};

}  // namespace

grpc::Status run_exchange_stream(remote_xcomm::v1::RemoteXComm::Stub& stub,
                                 const std::vector<remote_xcomm::v1::TaskInstanceKey>& keys,
                                 const std::string& payload_json, int in_flight, ClosedLoop& loop) {
  grpc::Status status;
  Signal done;
  (new ExchangeClient(keys, payload_json, in_flight, loop, status, done))->start(stub);
  done.wait();
  return status;
}

}  // namespace rx::bench

#include "unary_send_call.hpp"

#include "security/access.hpp"

#include "codec.hpp"
#include "off_loop_worker.hpp"
#include "tsan_annotations.hpp"

#include <remote_xcomm/error.hpp>

#include <boost/asio/post.hpp>
#include <grpcpp/server_context.h>

#include <exception>
#include <string>
#include <utility>

namespace rx::detail {

UnarySendCall::UnarySendCall(grpc::CallbackServerContext* context, remote_xcomm::v1::SendResponse* response,
                             std::size_t max_reply_bytes, LoopExecutor loop, CallObserver* observer) noexcept
    : context_(context),
      response_(response),
      loop_(std::move(loop)),
      observer_(observer),
      max_reply_bytes_(max_reply_bytes),
      started_(std::chrono::steady_clock::now()) {}

void UnarySendCall::last_reference_dropped() noexcept {
  if (!finished_) {
    // Reached only when the last reference was dropped unanswered. gRPC would wait for this call
    // forever (and Server::Wait() with it): finish it here, on whichever thread dropped it.
    try {
      finish(grpc::Status(grpc::StatusCode::INTERNAL, "the server dropped the request without answering it"));
    } catch (...) {  // no memory for the message: the call still finishes
      finish(grpc::Status(grpc::StatusCode::INTERNAL, {}));
    }
  }
  release_part();
}

void UnarySendCall::release_part() noexcept {
  if (parts_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    delete this;
  }
}

void UnarySendCall::OnDone() {
  back_from_grpc(this);
  release_part();
}

void UnarySendCall::OnCancel() {
  back_from_grpc(this);
  // gRPC calls this at most once, before OnDone, on whichever thread saw the cancellation. No
  // reference left means the call is finished: nobody is left to tell.
  if (!try_add_reference()) {
    return;
  }
  PendingReplyPtr self(this, /*add_ref=*/false);
  try {
    // Queued, never run here: gRPC may call this from inside a Finish() the loop is making.
    boost::asio::post(loop_, [self = std::move(self)] {
      self->give_up(grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the call or its deadline passed"));
    });
  } catch (...) {
    // No memory for the notice: the queue still sees the cancellation when the request's turn comes.
  }
}

std::optional<std::chrono::system_clock::time_point> UnarySendCall::deadline() const {
  if (finished_) {
    return std::nullopt;
  }
  const auto at = context_->deadline();
  // gRPC reports "no deadline" as the largest time point.
  if (at == std::chrono::system_clock::time_point::max()) {
    return std::nullopt;
  }
  return at;
}

std::string UnarySendCall::peer() const { return finished_ ? std::string() : context_->peer(); }

std::vector<std::pair<std::string, std::string>> UnarySendCall::metadata() const {
  std::vector<std::pair<std::string, std::string>> entries;
  if (finished_) {
    return entries;
  }
  const auto& received = context_->client_metadata();
  entries.reserve(received.size());
  for (const auto& [key, value] : received) {
    if (is_authorization_metadata(std::string_view(key.data(), key.size()))) {
      continue;  // a token is never shown to task code
    }
    entries.emplace_back(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
  }
  return entries;
}

boost::system::error_code UnarySendCall::reply(const boost::json::object& /*outputs*/, std::string&& json) {
  if (finished_) {
    return errc::request_cancelled;
  }
  if (cancelled()) {
    fail(grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the call or its deadline passed"));
    return errc::request_cancelled;
  }
  std::size_t size = 0;
  try {
    response_->set_reply_json(std::move(json));
    size = response_->ByteSizeLong();
    if (size > max_reply_bytes_) {
      fail(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the task's reply is " + std::to_string(size) +
                                                                  " bytes, over the server's limit of " +
                                                                  std::to_string(max_reply_bytes_)));
      return errc::reply_too_large;
    }
  } catch (...) {
    // The messages allocate; a task's push must never leave the call unfinished, nor throw out of
    // the endpoint's push initiation.
    if (!finished_) {
      finish(grpc::Status(grpc::StatusCode::INTERNAL, "the server could not encode the task's reply"));
    }
    return make_error_code(boost::system::errc::not_enough_memory);
  }
  if (size >= OFF_LOOP_BYTES) {
    // gRPC serialises the response inside Finish(), on the calling thread: for 64 MiB that is a
    // copy into fresh memory, about 0.2 s here. The call is finished now, as far as the loop is
    // concerned (nothing below touches it again); the worker hands it to gRPC.
    finished_ = true;
    if (observer_ != nullptr) {
      observer_->on_call_finished(grpc::StatusCode::OK, started_);
    }
    FinishOffLoop job(this);
    try {
      OffLoopWorker::of(loop_).run(std::move(job));
    } catch (...) {  // no worker or no memory to queue it: `job`, never run, finishes the call here
    }
    return {};
  }
  finish(grpc::Status::OK);
  return {};
}

UnarySendCall::FinishOffLoop::~FinishOffLoop() {
  if (call_ != nullptr) {
    // Never run (the io_context is being destroyed): gRPC still needs its Finish.
    handed_to_grpc(call_);
    call_->Finish(grpc::Status::OK);
  }
}

void UnarySendCall::FinishOffLoop::operator()() {
  // OnDone may free the call as soon as Finish is called: the pointer is dropped first. The
  // release tells ThreadSanitizer of the order gRPC keeps between this thread and OnDone's.
  UnarySendCall* const call = std::exchange(call_, nullptr);
  handed_to_grpc(call);
  call->Finish(grpc::Status::OK);
}

bool UnarySendCall::fail(const grpc::Status& status) {
  if (finished_) {
    return false;
  }
  finish(status);
  return true;
}

bool UnarySendCall::cancelled() const { return !finished_ && context_->IsCancelled(); }

void UnarySendCall::finish(grpc::Status status) noexcept {
  finished_ = true;
  // Before Finish: the server waits for this count before it lets gRPC's Shutdown() return, so
  // the observer is alive until the call is finished, not after.
  if (observer_ != nullptr) {
    observer_->on_call_finished(status.error_code(), started_);
  }
  Finish(std::move(status));  // a move: nothing here may throw; OnDone may follow at once
}

}  // namespace rx::detail

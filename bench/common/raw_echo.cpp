#include "common/raw_echo.hpp"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/server_callback.h>

#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

namespace rx::bench {

using remote_xcomm::v1::SendRequest;
using remote_xcomm::v1::SendResponse;

class RawEchoServer::UnaryService final : public remote_xcomm::v1::RemoteXComm::CallbackService {
  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context, const SendRequest* request,
                                 SendResponse* response) override {
    response->set_reply_json(request->payload_json());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

class RawEchoServer::StreamService final : public remote_xcomm::bench::v1::BenchEcho::CallbackService {
  // Read, echo, read again: one read or one write in flight, as gRPC allows per stream.
  class Reactor final : public grpc::ServerBidiReactor<SendRequest, SendResponse> {
   public:
    Reactor() { StartRead(&request_); }

    void OnReadDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status::OK);  // the client half-closed
        return;
      }
      response_.set_reply_json(request_.payload_json());
      StartWrite(&response_);
    }
    void OnWriteDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
        return;
      }
      StartRead(&request_);
    }
    void OnDone() override { delete this; }

   private:
    SendRequest request_;
    SendResponse response_;
  };

  grpc::ServerBidiReactor<SendRequest, SendResponse>* EchoStream(grpc::CallbackServerContext* /*context*/) override {
    return new Reactor();
  }
};

RawEchoServer::RawEchoServer(const std::string& address)
    : unary_(std::make_unique<UnaryService>()), stream_(std::make_unique<StreamService>()) {
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(unary_.get());
  builder.RegisterService(stream_.get());
  builder.SetMaxReceiveMessageSize(MAX_MESSAGE_BYTES);
  builder.SetMaxSendMessageSize(MAX_MESSAGE_BYTES);
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    throw std::runtime_error("raw echo server cannot listen on " + address);
  }
  // A Unix socket's target is its address; a TCP one's has the bound port.
  target_ = address.starts_with("unix") ? address : address.substr(0, address.rfind(':') + 1) + std::to_string(port);
}

RawEchoServer::~RawEchoServer() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& target) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(MAX_MESSAGE_BYTES);
  arguments.SetMaxSendMessageSize(MAX_MESSAGE_BYTES);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
}

namespace {

struct RawUnaryCall {
  grpc::ClientContext context;
  SendRequest request;
  SendResponse response;
  Clock::time_point started;
};

}  // namespace

void issue_raw_unary(remote_xcomm::v1::RemoteXComm::Stub& stub, const SendRequest& request, ClosedLoop& loop) {
  auto* call = new RawUnaryCall;
  call->request = request;
  call->started = Clock::now();
  call->context.set_deadline(std::chrono::system_clock::now() + CALL_DEADLINE);
  stub.async()->Send(&call->context, &call->request, &call->response,
                     [call, &stub, &request, &loop](const grpc::Status& status) {
                       const Clock::time_point finished = Clock::now();
                       const Clock::time_point started = call->started;
                       std::string error;
                       if (!status.ok()) {
                         error = "raw Send failed: " + status.error_message();
                       } else if (call->response.reply_json().size() != request.payload_json().size()) {
                         error = "raw Send echoed a reply of the wrong size";
                       }
                       delete call;
                       if (loop.claim()) {
                         issue_raw_unary(stub, request, loop);
                       }
                       loop.complete(started, finished, error);
                     });
}

namespace {

// Client half of the stream echo. Writes run one at a time (gRPC's rule); a write starts when
// the previous one is done and fewer than `in_flight` messages await their echo. Owns itself and
// is freed in OnDone, the stream's last reaction.
class StreamEchoClient final : public grpc::ClientBidiReactor<SendRequest, SendResponse> {
 public:
  StreamEchoClient(const SendRequest& request, int in_flight, ClosedLoop& loop, grpc::Status& status, Signal& done)
      : request_(request),
        in_flight_(in_flight),
        loop_(loop),
        status_(status),
        done_(done),
        sent_at_(static_cast<std::size_t>(loop.total())) {}

  void start(remote_xcomm::bench::v1::BenchEcho::Stub& stub) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(1));
    stub.async()->EchoStream(&context_, this);
    StartRead(&response_);
    {
      const std::lock_guard lock(mutex_);
      write_next_locked();
    }
    StartCall();
  }

  void OnWriteDone(bool ok) override {
    const std::lock_guard lock(mutex_);
    writing_ = false;
    if (ok) {
      write_next_locked();
    }  // else the stream broke; OnDone reports its status
  }

  void OnReadDone(bool ok) override {
    const Clock::time_point finished = Clock::now();
    if (!ok) {
      return;
    }
    std::string error;
    if (response_.reply_json().size() != request_.payload_json().size()) {
      error = "raw EchoStream echoed a reply of the wrong size";
    }
    bool more_to_read = false;
    Clock::time_point started;
    {
      const std::lock_guard lock(mutex_);
      started = sent_at_[static_cast<std::size_t>(received_)];
      ++received_;
      more_to_read = received_ < loop_.total();
      write_next_locked();
    }
    if (more_to_read) {
      StartRead(&response_);
    }
    loop_.complete(started, finished, error);
  }

  void OnDone(const grpc::Status& status) override {
    status_ = status;
    Signal& done = done_;
    delete this;
    done.set();
  }

 private:
  void write_next_locked() {
    if (writing_) {
      return;
    }
    if (sent_ < loop_.total() && sent_ - received_ < in_flight_) {
      sent_at_[static_cast<std::size_t>(sent_)] = Clock::now();
      ++sent_;
      writing_ = true;
      StartWrite(&request_);
    } else if (received_ == loop_.total() && !writes_done_) {
      writes_done_ = true;
      StartWritesDone();
    }
  }

  grpc::ClientContext context_;
  const SendRequest& request_;  // written as is, every time
  SendResponse response_;
  const std::int64_t in_flight_;
  ClosedLoop& loop_;
  grpc::Status& status_;
  Signal& done_;

  std::mutex mutex_;
  std::vector<Clock::time_point> sent_at_;
  std::int64_t sent_ = 0;
  std::int64_t received_ = 0;
  bool writing_ = false;
  bool writes_done_ = false;
};

}  // namespace

grpc::Status run_raw_stream(remote_xcomm::bench::v1::BenchEcho::Stub& stub, const SendRequest& request, int in_flight,
                            ClosedLoop& loop) {
  grpc::Status status;
  Signal done;
  (new StreamEchoClient(request, in_flight, loop, status, done))->start(stub);
  done.wait();
  return status;
}

}  // namespace rx::bench

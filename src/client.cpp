// The client: one gRPC channel per target; replies go back to each caller's executor.
#include <remote_xcomm/client.hpp>

#include "codec.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <mutex>
#include <string>
#include <unordered_map>

namespace rx {
namespace detail {

namespace asio = boost::asio;
using Stub = remote_xcomm::v1::RemoteXComm::Stub;

// Everything one call needs until its reply has been handed to the caller.
struct SendCall {
  SendCall(Client::SendHandler h, const LoopExecutor& fallback)
      : handler(std::move(h)),
        work(asio::prefer(asio::get_associated_executor(handler, fallback),
                          asio::execution::outstanding_work.tracked)) {}

  grpc::ClientContext context;
  remote_xcomm::v1::SendRequest request;
  remote_xcomm::v1::SendResponse response;
  Client::SendHandler handler;
  // Keeps the caller's executor (and so the loop's io_context) from running out of work while
  // the reply is on its way.
  asio::any_completion_executor work;
};

class ClientImpl {
 public:
  ClientImpl(Loop* loop, std::unique_ptr<Loop> owned, ClientOptions options)
      : owned_loop_(std::move(owned)),
        executor_((loop != nullptr ? loop : owned_loop_.get())->get_executor()),
        options_(options) {}

  void start_send(std::string_view target, const TaskInstanceKey& key, const boost::json::object& payload,
                  SendOptions options, Client::SendHandler handler) {
    auto* call = new SendCall(std::move(handler), executor_);
    to_proto(key, *call->request.mutable_key());
    call->request.set_payload_json(serialize_json(payload));
    call->context.set_deadline(std::chrono::system_clock::now() + options.timeout);

    auto slot = call->handler.get_cancellation_slot();
    if (slot.is_connected()) {
      // Emitted on the caller's executor; the call lives until its completion has cleared the slot there.
      slot.assign([context = &call->context](asio::cancellation_type /*type*/) { context->TryCancel(); });
    }
    stub_for(target).async()->Send(&call->context, &call->request, &call->response,
                                   [call](grpc::Status status) { complete(call, std::move(status)); });
  }

  [[nodiscard]] const LoopExecutor& executor() const noexcept { return executor_; }

 private:
  // Runs on a gRPC thread. Decodes the reply there, off the loop, then hands it to the caller.
  static void complete(SendCall* call, grpc::Status status) {
    boost::json::object reply;
    if (status.ok()) {
      std::string error;
      if (!parse_json_object(call->response.reply_json(), std::numeric_limits<std::size_t>::max(), reply, error)) {
        status = grpc::Status(grpc::StatusCode::INTERNAL, "server sent a reply that is not a JSON object: " + error);
      }
    }
    asio::any_completion_executor executor = call->work;
    asio::dispatch(executor, [call, status = std::move(status), reply = std::move(reply)]() mutable {
      Client::SendHandler handler;
      handler.swap(call->handler);
      if (handler.get_cancellation_slot().is_connected()) {
        handler.get_cancellation_slot().clear();
      }
      delete call;
      std::move(handler)(std::move(status), std::move(reply));
    });
  }

  Stub& stub_for(std::string_view target) {
    const std::lock_guard lock(stubs_mutex_);
    auto it = stubs_.find(target);
    if (it == stubs_.end()) {
      grpc::ChannelArguments arguments;
      arguments.SetMaxReceiveMessageSize(options_.max_message_bytes);
      arguments.SetMaxSendMessageSize(options_.max_message_bytes);
      auto channel = grpc::CreateCustomChannel(std::string(target), grpc::InsecureChannelCredentials(), arguments);
      it = stubs_.emplace(std::string(target), remote_xcomm::v1::RemoteXComm::NewStub(channel)).first;
    }
    return *it->second;
  }

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };

  std::unique_ptr<Loop> owned_loop_;
  LoopExecutor executor_;
  ClientOptions options_;
  std::mutex stubs_mutex_;
  std::unordered_map<std::string, std::unique_ptr<Stub>, StringHash, std::equal_to<>> stubs_;
};

}  // namespace detail

Client::Client(Loop& loop, ClientOptions options)
    : impl_(std::make_unique<detail::ClientImpl>(&loop, nullptr, options)) {}

Client::Client(boost::asio::io_context& context, ClientOptions options)
    : impl_(std::make_unique<detail::ClientImpl>(nullptr, std::make_unique<Loop>(context), options)) {}

Client::~Client() = default;

Client::executor_type Client::get_executor() const noexcept { return impl_->executor(); }

void Client::start_send(std::string_view target, const TaskInstanceKey& key, const boost::json::object& payload,
                        SendOptions options, SendHandler handler) {
  impl_->start_send(target, key, payload, options, std::move(handler));
}

}  // namespace rx

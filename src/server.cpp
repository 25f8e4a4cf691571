// The server: gRPC's callback service routing each Send to its endpoint on the loop.
#include <remote_xcomm/server.hpp>

#include "address.hpp"
#include "codec.hpp"
#include "unary_send_call.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/executor_work_guard.hpp>

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <future>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace rx {
namespace detail {

class ServerImpl final : public remote_xcomm::v1::RemoteXComm::CallbackService {
 public:
  ServerImpl(Loop* owned_or_null, std::unique_ptr<Loop> owned, ServerOptions options)
      : owned_loop_(std::move(owned)),
        loop_(owned_or_null != nullptr ? owned_or_null : owned_loop_.get()),
        executor_(loop_->get_executor()),
        options_(std::move(options)) {}

  ~ServerImpl() override { shutdown(); }

  void start() {
    if (server_) {
      throw std::logic_error("rx::Server::start() called twice");
    }
    grpc::ServerBuilder builder;
    builder.AddListeningPort(host_port(options_.host, options_.port), grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
    builder.SetMaxSendMessageSize(options_.max_message_bytes);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      server_.reset();
      throw std::runtime_error("rx::Server cannot listen on " + host_port(options_.host, options_.port));
    }
    work_.emplace(loop_->context().get_executor());  // the loop must run until shutdown() returns
  }

  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context, const remote_xcomm::v1::SendRequest* request,
                                 remote_xcomm::v1::SendResponse* response) override {
    PendingReplyPtr call(new UnarySendCall(context, response, static_cast<std::size_t>(options_.max_message_bytes)));
    // Taken now: once handed to the loop, the call may be finished (and freed) before we return.
    grpc::ServerUnaryReactor* const reactor = static_cast<UnarySendCall&>(*call).reactor();
    boost::json::object payload;
    std::string error;
    // Parsed here, on the gRPC thread, so that bad input is refused without touching the loop.
    if (!parse_json_object(request->payload_json(), options_.max_json_depth, payload, error)) {
      call->fail(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error));
      return reactor;
    }
    detail::hand_off(executor_, [this, call = std::move(call), request, payload = std::move(payload)]() mutable {
      route(view_of(request->key()), std::move(call), std::move(payload));
    });
    return reactor;
  }

  bool attach(TaskInstanceKey key, Server::Task task) {
    return on_loop([&] {
      if (closing_ || endpoints_.contains(key.view())) {
        return false;
      }
      auto state = std::make_shared<EndpointState>(executor_, std::move(key), std::move(task));
      const TaskInstanceKeyView view = state->key().view();  // the map borrows the endpoint's own key
      endpoints_.emplace(view, std::move(state));
      return true;
    });
  }

  bool detach(const TaskInstanceKey& key) {
    return on_loop([&] {
      auto it = endpoints_.find(key.view());
      if (it == endpoints_.end()) {
        return false;
      }
      it->second->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "endpoint " + to_string(key) + " was detached"));
      endpoints_.erase(it);
      return true;
    });
  }

  std::size_t endpoint_count() {
    return on_loop([&] { return endpoints_.size(); });
  }

  void shutdown() {
    if (!server_ || shut_down_) {
      return;
    }
    if (executor_.running_in_this_thread()) {
      throw std::logic_error("rx::Server::shutdown() must not be called from a thread running the loop");
    }
    shut_down_ = true;
    on_loop([&] {
      closing_ = true;
      const grpc::Status status(grpc::StatusCode::UNAVAILABLE, "server is shutting down");
      for (auto& [key, endpoint] : endpoints_) {
        endpoint->close(status);
      }
      endpoints_.clear();
      return true;
    });
    // Calls that arrive meanwhile are refused on the loop (closing_), by whichever thread runs it.
    server_->Shutdown(std::chrono::system_clock::now() + options_.shutdown_grace);
    server_->Wait();
    work_.reset();
  }

  [[nodiscard]] std::uint16_t port() const noexcept { return static_cast<std::uint16_t>(port_); }
  [[nodiscard]] std::string target() const { return host_port(options_.host, port()); }
  [[nodiscard]] const LoopExecutor& executor() const noexcept { return executor_; }

 private:
  void route(TaskInstanceKeyView key, PendingReplyPtr reply, boost::json::object payload) {
    if (closing_) {
      reply->fail(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
      return;
    }
    auto it = endpoints_.find(key);
    if (it == endpoints_.end()) {
      reply->fail(grpc::Status(grpc::StatusCode::NOT_FOUND, "no endpoint " + to_string(key) + " on this server"));
      return;
    }
    it->second->deliver(std::move(reply), std::move(payload));
  }

  // Runs `function` on the loop and waits for its result; inline when this thread may run it.
  template <typename Function>
  auto on_loop(Function function) -> decltype(function()) {
    if (executor_.running_in_this_thread()) {
      return function();
    }
    std::promise<decltype(function())> done;
    auto result = done.get_future();
    run_for_waiting_caller(executor_, [&] {
      try {
        done.set_value(function());
      } catch (...) {
        done.set_exception(std::current_exception());
      }
    });
    return result.get();
  }

  std::unique_ptr<Loop> owned_loop_;
  Loop* loop_;
  LoopExecutor executor_;
  ServerOptions options_;
  std::unique_ptr<grpc::Server> server_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  int port_ = 0;
  bool shut_down_ = false;
  // Loop state.
  // Keyed by views of each endpoint's own key: a key's strings are stored once.
  std::unordered_map<TaskInstanceKeyView, std::shared_ptr<EndpointState>, TaskInstanceKeyHash, TaskInstanceKeyEqual>
      endpoints_;
  bool closing_ = false;
};

}  // namespace detail

Server::Server(Loop& loop, ServerOptions options)
    : impl_(std::make_unique<detail::ServerImpl>(&loop, nullptr, std::move(options))) {}

Server::Server(boost::asio::io_context& context, ServerOptions options)
    : impl_(std::make_unique<detail::ServerImpl>(nullptr, std::make_unique<Loop>(context), std::move(options))) {}

Server::~Server() = default;

void Server::start() { impl_->start(); }
std::uint16_t Server::port() const noexcept { return impl_->port(); }
std::string Server::target() const { return impl_->target(); }
bool Server::attach(TaskInstanceKey key, Task task) { return impl_->attach(std::move(key), std::move(task)); }
bool Server::detach(const TaskInstanceKey& key) { return impl_->detach(key); }
std::size_t Server::endpoint_count() const { return impl_->endpoint_count(); }
void Server::shutdown() { impl_->shutdown(); }
Server::executor_type Server::get_executor() const noexcept { return impl_->executor(); }

}  // namespace rx

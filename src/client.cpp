// The client: one gRPC channel per target; replies go back to each caller's executor. Each send
// is a unary call made here, or travels on its target's Exchange stream (src/client/).
#include <remote_xcomm/client.hpp>

#include "client/exchange_stream.hpp"
#include "client/reply_decoding.hpp"
#include "client/retry_policy.hpp"
#include "client/target_channel.hpp"
#include "client/unary_call.hpp"
#include "client/watch_stream.hpp"
#include "client_internal.hpp"
#include "codec.hpp"
#include "grpc_callback_threads.hpp"
#include "observability/log.hpp"
#include "observability/server_metrics.hpp"
#include "security/tls.hpp"
#include "xcom/wire.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>

#include <grpc/grpc.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rx {
namespace detail {

namespace asio = boost::asio;
using Stub = remote_xcomm::v1::RemoteXComm::Stub;

// The unary methods a Client calls (UnaryCall's `Rpc`), each with the check of its response.

struct SendRpc {
  using Request = remote_xcomm::v1::SendRequest;
  using Response = remote_xcomm::v1::SendResponse;
  using Result = boost::json::object;
  using Expect = std::size_t;  // ClientOptions::max_json_depth
  static void start(Stub& stub, grpc::ClientContext* context, const Request* request, Response* response,
                    std::function<void(grpc::Status)> done) {
    stub.async()->Send(context, request, response, std::move(done));
  }
  static grpc::Status decode(Response& response, const Expect& max_depth, Result& out) {
    return decode_reply_json(response.reply_json(), max_depth, out);
  }
};

// What a pull's response must hold: exactly one XCom for one task instance; with a wait for all
// map indexes, at least min_count. Anything else would answer another question than the one asked.
struct PullExpect {
  bool all_map_indexes = false;
  std::size_t min_count = 0;  // 0: any number
};

struct PullRpc {
  using Request = remote_xcomm::v1::PullRequest;
  using Response = remote_xcomm::v1::PullResponse;
  using Result = std::vector<XCom>;
  using Expect = PullExpect;
  static void start(Stub& stub, grpc::ClientContext* context, const Request* request, Response* response,
                    std::function<void(grpc::Status)> done) {
    stub.async()->Pull(context, request, response, std::move(done));
  }
  static grpc::Status decode(Response& response, const Expect& expect, Result& out) {
    const auto count = static_cast<std::size_t>(response.xcoms_size());
    if (!expect.all_map_indexes && count != 1) {
      return {grpc::StatusCode::INTERNAL,
              "the server answered a pull of one task instance's XCom with " + std::to_string(count) + " XComs"};
    }
    if (count < expect.min_count) {
      return {grpc::StatusCode::INTERNAL, "the server answered a pull waiting for " + std::to_string(expect.min_count) +
                                              " map indexes with " + std::to_string(count) + " XComs"};
    }
    out.reserve(count);
    for (const remote_xcomm::v1::XCom& xcom : response.xcoms()) {
      out.push_back(from_proto(xcom));
    }
    return grpc::Status::OK;
  }
};

struct GetStateRpc {
  using Request = remote_xcomm::v1::GetStateRequest;
  using Response = remote_xcomm::v1::TaskStateInfo;
  using Result = TaskStateInfo;
  struct Expect {};
  static void start(Stub& stub, grpc::ClientContext* context, const Request* request, Response* response,
                    std::function<void(grpc::Status)> done) {
    stub.async()->GetState(context, request, response, std::move(done));
  }
  static grpc::Status decode(Response& response, const Expect& /*expect*/, Result& out) {
    bool known = false;
    out = from_proto(response, &known);
    if (!known) {
      return {grpc::StatusCode::INTERNAL, "the server sent task state " + std::to_string(response.state()) +
                                              ", which this client does not know (a newer server?)"};
    }
    return grpc::Status::OK;
  }
};

struct StatsRpc {
  using Request = remote_xcomm::v1::StatsRequest;
  using Response = remote_xcomm::v1::StatsResponse;
  using Result = ServerStats;
  struct Expect {};
  static void start(Stub& stub, grpc::ClientContext* context, const Request* request, Response* response,
                    std::function<void(grpc::Status)> done) {
    stub.async()->Stats(context, request, response, std::move(done));
  }
  static grpc::Status decode(Response& response, const Expect& /*expect*/, Result& out) {
    out = from_proto(response);
    return grpc::Status::OK;
  }
};

struct ListRpc {
  using Request = remote_xcomm::v1::ListRequest;
  using Response = remote_xcomm::v1::ListResponse;
  using Result = EndpointPage;
  struct Expect {};
  static void start(Stub& stub, grpc::ClientContext* context, const Request* request, Response* response,
                    std::function<void(grpc::Status)> done) {
    stub.async()->List(context, request, response, std::move(done));
  }
  static grpc::Status decode(Response& response, const Expect& /*expect*/, Result& out) {
    out.endpoints.reserve(static_cast<std::size_t>(response.endpoints_size()));
    for (const remote_xcomm::v1::EndpointInfo& info : response.endpoints()) {
      bool known = false;
      out.endpoints.push_back(from_proto(info, &known));
      if (!known) {
        return {grpc::StatusCode::INTERNAL, "the server sent task state " + std::to_string(info.state().state()) +
                                                ", which this client does not know (a newer server?)"};
      }
    }
    out.next_page_token = std::move(*response.mutable_next_page_token());
    out.total_matching = response.total_matching();
    return grpc::Status::OK;
  }
};

using SendCall = UnaryCall<SendRpc>;
using StatsCall = UnaryCall<StatsRpc>;
using ListCall = UnaryCall<ListRpc>;
using PullCall = UnaryCall<PullRpc>;
using GetStateCall = UnaryCall<GetStateRpc>;

class ClientImpl {
 public:
  ClientImpl(Loop* loop, std::unique_ptr<Loop> owned, ClientOptions options)
      : owned_loop_(std::move(owned)),
        executor_((loop != nullptr ? loop : owned_loop_.get())->get_executor()),
        options_(std::move(options)),
        exchange_limits_(exchange_limits()),
        credentials_(channel_credentials(options_.tls)) {
    check_retry_policy(options_.retry);
    hold_grpc_callback_threads();  // this Client's channels may be freed on gRPC's threads
  }

  ClientImpl(const ClientImpl&) = delete;
  ClientImpl& operator=(const ClientImpl&) = delete;

  ~ClientImpl() {
    if (options_.transport != Transport::exchange) {
      return;
    }
    // Its streams end once their sends have completed; none touches this Client again.
    std::vector<std::shared_ptr<ExchangeSlots>> slots;
    slots.reserve(stubs_.size());
    for (const auto& [target, channel] : stubs_) {
      slots.push_back(channel->exchange);
    }
    close_exchange_streams(executor_, std::move(slots));
  }

  void start_send(std::string_view target, const TaskInstanceKey& key, std::string payload_json,
                  const SendOptions& options, const LoopExecutor* loop, Client::SendHandler handler) {
    send_via(channel_for(target), key, std::move(payload_json), options, loop, std::move(handler));
  }

  // A send to `channel`'s target, by its Client's transport; uses nothing of the Client itself.
  static void send_via(TargetChannel& channel, const TaskInstanceKey& key, std::string payload_json,
                       const SendOptions& options, const LoopExecutor* loop, Client::SendHandler handler) {
    if (channel.transport == Transport::exchange) {
      send_on_exchange(channel.shared_from_this(), key, std::move(payload_json), options, loop, std::move(handler));
      return;
    }
    auto call = std::make_unique<SendCall>(std::move(handler), loop, channel.exchange_limits.max_json_depth);
    to_proto(key, *call->request.mutable_key());
    call->request.set_payload_json(std::move(payload_json));
    SendCall::start(channel, std::move(call), {options.timeout, options.wait_for_ready});
  }

  // A pull from `channel`'s target: always a unary call.
  static void pull_via(const TargetChannel& channel, const XComQuery& query, const LoopExecutor* loop,
                       PullHandler handler) {
    PullExpect expect;
    expect.all_map_indexes = query.all_map_indexes;
    expect.min_count = query.all_map_indexes && query.wait ? std::max<std::size_t>(query.min_count, 1) : 0;
    auto call = std::make_unique<PullCall>(std::move(handler), loop, expect);
    to_proto(query, call->request);
    PullCall::start(channel, std::move(call), {query.timeout, false});
  }

  // A get_state from `channel`'s target: always a unary call.
  static void get_state_via(const TargetChannel& channel, const TaskInstanceKey& key, const GetStateOptions& options,
                            const LoopExecutor* loop, GetStateHandler handler) {
    auto call = std::make_unique<GetStateCall>(std::move(handler), loop, GetStateRpc::Expect{});
    to_proto(key, *call->request.mutable_task_instance());
    GetStateCall::start(channel, std::move(call), {options.timeout, options.wait_for_ready});
  }

  static void stats_via(const TargetChannel& channel, const StatsOptions& options, const LoopExecutor* loop,
                        StatsHandler handler) {
    auto call = std::make_unique<StatsCall>(std::move(handler), loop, StatsRpc::Expect{});
    StatsCall::start(channel, std::move(call), {options.timeout, options.wait_for_ready});
  }

  static void list_via(const TargetChannel& channel, const ListQuery& query, const LoopExecutor* loop,
                       ListHandler handler) {
    auto call = std::make_unique<ListCall>(std::move(handler), loop, ListRpc::Expect{});
    call->request.set_dag_id(query.dag_id);
    call->request.set_run_id(query.run_id);
    call->request.set_task_id(query.task_id);
    call->request.set_page_size(query.page_size);
    call->request.set_page_token(query.page_token);
    ListCall::start(channel, std::move(call), {query.timeout, false});
  }

  void start_stats(std::string_view target, const StatsOptions& options, const LoopExecutor* loop,
                   StatsHandler handler) {
    stats_via(channel_for(target), options, loop, std::move(handler));
  }

  void start_list(std::string_view target, const ListQuery& query, const LoopExecutor* loop, ListHandler handler) {
    list_via(channel_for(target), query, loop, std::move(handler));
  }

  // A watch of `channel`'s target: a stream of its own.
  static std::shared_ptr<WatchStream> watch_via(const TargetChannel& channel, const WatchQuery& query,
                                                const LoopExecutor& fallback) {
    return WatchStream::start(channel.shared_from_this(), query, fallback);
  }

  void start_pull(std::string_view target, const XComQuery& query, const LoopExecutor* loop, PullHandler handler) {
    pull_via(channel_for(target), query, loop, std::move(handler));
  }

  void start_get_state(std::string_view target, const TaskInstanceKey& key, const GetStateOptions& options,
                       const LoopExecutor* loop, GetStateHandler handler) {
    get_state_via(channel_for(target), key, options, loop, std::move(handler));
  }

  std::shared_ptr<WatchStream> watch(std::string_view target, const WatchQuery& query) {
    return watch_via(channel_for(target), query, executor_);
  }

  // The channel behind Client::connect(target).
  std::shared_ptr<TargetChannel> connect(std::string_view target) { return channel_for(target).shared_from_this(); }

  [[nodiscard]] const LoopExecutor& executor() const noexcept { return executor_; }

 private:
  // Lock-free for a send to the same target as the last new channel's or the last lookup's (one
  // server per Client is the common case); other targets take the mutex.
  TargetChannel& channel_for(std::string_view target) {
    if (TargetChannel* last = last_.load(std::memory_order_acquire); last != nullptr && last->target == target) {
      return *last;
    }
    const std::lock_guard lock(stubs_mutex_);
    auto it = stubs_.find(target);
    if (it == stubs_.end()) {
      auto channel =
          std::make_shared<TargetChannel>(std::string(target), options_.transport, executor_, exchange_limits_);
      channel->stub = remote_xcomm::v1::RemoteXComm::NewStub(
          grpc::CreateCustomChannel(channel->target, credentials_, channel_arguments()));
      if (!options_.token.empty()) {
        channel->authorization = std::string("Bearer ").append(options_.token);
        if (!options_.tls && !is_local_address(channel->target)) {
          std::string line = "client sends a bearer token to ";
          line.append(channel->target)
              .append(" without TLS: it crosses the network in clear text (ClientOptions::tls)");
          log(LogLevel::warning, line);
        }
      }
      it = stubs_.emplace(channel->target, std::move(channel)).first;
    }
    last_.store(it->second.get(), std::memory_order_release);
    return *it->second;
  }

  // The user's channel arguments, plus the message limits and the retry policy's service config
  // unless the user set them.
  [[nodiscard]] grpc::ChannelArguments channel_arguments() const {
    grpc::ChannelArguments arguments = options_.channel_arguments;
    const grpc_channel_args given = options_.channel_arguments.c_channel_args();
    auto has = [&given](const char* key) {
      for (std::size_t i = 0; i < given.num_args; ++i) {
        if (std::strcmp(given.args[i].key, key) == 0) {
          return true;
        }
      }
      return false;
    };
    if (!has(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH)) {
      arguments.SetMaxReceiveMessageSize(options_.max_message_bytes);
    }
    if (!has(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH)) {
      arguments.SetMaxSendMessageSize(options_.max_message_bytes);
    }
    if (!has(GRPC_ARG_SERVICE_CONFIG)) {
      if (std::optional<std::string> config = retry_service_config(options_.retry)) {
        arguments.SetServiceConfigJSON(*config);
      }
    }
    return arguments;
  }

  // The Exchange streams' message limit: what gRPC lets this Client send (a channel argument
  // overrides ClientOptions::max_message_bytes; a negative one means no limit).
  [[nodiscard]] ExchangeLimits exchange_limits() const {
    ExchangeLimits limits;
    limits.max_json_depth = options_.max_json_depth;
    int send_limit = options_.max_message_bytes;
    const grpc_channel_args given = options_.channel_arguments.c_channel_args();
    for (std::size_t i = 0; i < given.num_args; ++i) {
      if (std::strcmp(given.args[i].key, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH) == 0 &&
          given.args[i].type == GRPC_ARG_INTEGER) {
        send_limit = given.args[i].value.integer;
      }
    }
    limits.max_message_bytes = send_limit < 0 ? std::numeric_limits<int>::max() : static_cast<std::size_t>(send_limit);
    return limits;
  }

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };

  std::unique_ptr<Loop> owned_loop_;
  LoopExecutor executor_;
  ClientOptions options_;
  ExchangeLimits exchange_limits_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;  // every target's: plain, TLS or mutual TLS
  std::atomic<TargetChannel*> last_{nullptr};
  std::mutex stubs_mutex_;
  std::unordered_map<std::string, std::shared_ptr<TargetChannel>, StringHash, std::equal_to<>> stubs_;
};

void start_sends_deferred_on_this_thread() { deferred_starts.start_all(); }

}  // namespace detail

Client::Client(Loop& loop, ClientOptions options)
    : impl_(std::make_unique<detail::ClientImpl>(&loop, nullptr, std::move(options))), executor_(impl_->executor()) {}

Client::Client(boost::asio::io_context& context, ClientOptions options)
    : impl_(std::make_unique<detail::ClientImpl>(nullptr, std::make_unique<Loop>(context), std::move(options))),
      executor_(impl_->executor()) {}

Client::~Client() = default;

Client::executor_type Client::get_executor() const noexcept { return executor_; }

Connection Client::connect(std::string_view target) { return {impl_->connect(target), executor_}; }

Connection::Connection(std::shared_ptr<detail::TargetChannel> channel, LoopExecutor executor) noexcept
    : channel_(std::move(channel)), executor_(std::move(executor)) {}

const std::string& Connection::target() const noexcept { return channel_->target; }

std::string Connection::encode_payload(const boost::json::object& payload) { return detail::serialize_json(payload); }

void Connection::start_send(const TaskInstanceKey& key, std::string payload_json, const SendOptions& options,
                            const LoopExecutor* loop, detail::SendHandler handler) const {
  detail::ClientImpl::send_via(*channel_, key, std::move(payload_json), options, loop, std::move(handler));
}

void Connection::start_pull(const XComQuery& query, const LoopExecutor* loop, detail::PullHandler handler) const {
  detail::ClientImpl::pull_via(*channel_, query, loop, std::move(handler));
}

void Connection::start_get_state(const TaskInstanceKey& key, const GetStateOptions& options, const LoopExecutor* loop,
                                 detail::GetStateHandler handler) const {
  detail::ClientImpl::get_state_via(*channel_, key, options, loop, std::move(handler));
}

void Connection::start_stats(const StatsOptions& options, const LoopExecutor* loop,
                             detail::StatsHandler handler) const {
  detail::ClientImpl::stats_via(*channel_, options, loop, std::move(handler));
}

void Connection::start_list(const ListQuery& query, const LoopExecutor* loop, detail::ListHandler handler) const {
  detail::ClientImpl::list_via(*channel_, query, loop, std::move(handler));
}

Watch Connection::watch(const WatchQuery& query) const {
  return {detail::ClientImpl::watch_via(*channel_, query, executor_), executor_};
}

std::string Client::encode_payload(const boost::json::object& payload) { return detail::serialize_json(payload); }

void Client::start_send(std::string_view target, const TaskInstanceKey& key, std::string payload_json,
                        const SendOptions& options, const LoopExecutor* loop, SendHandler handler) {
  impl_->start_send(target, key, std::move(payload_json), options, loop, std::move(handler));
}

void Client::start_pull(std::string_view target, const XComQuery& query, const LoopExecutor* loop,
                        detail::PullHandler handler) {
  impl_->start_pull(target, query, loop, std::move(handler));
}

void Client::start_get_state(std::string_view target, const TaskInstanceKey& key, const GetStateOptions& options,
                             const LoopExecutor* loop, detail::GetStateHandler handler) {
  impl_->start_get_state(target, key, options, loop, std::move(handler));
}

void Client::start_stats(std::string_view target, const StatsOptions& options, const LoopExecutor* loop,
                         detail::StatsHandler handler) {
  impl_->start_stats(target, options, loop, std::move(handler));
}

void Client::start_list(std::string_view target, const ListQuery& query, const LoopExecutor* loop,
                        detail::ListHandler handler) {
  impl_->start_list(target, query, loop, std::move(handler));
}

Watch Client::watch(std::string_view target, const WatchQuery& query) {
  return {impl_->watch(target, query), executor_};
}

}  // namespace rx

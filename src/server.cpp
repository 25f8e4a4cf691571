// The server: gRPC's callback service routing each Send to its endpoint on the loop, and its
// lifecycle (start, graceful shutdown, destruction from any thread).
#include <remote_xcomm/server.hpp>

#include "address.hpp"
#include "codec.hpp"
#include "grpc_callback_threads.hpp"
#include "observability/log.hpp"
#include "observability/server_metrics.hpp"
#include "security/access.hpp"
#include "security/tls.hpp"
#include "transport/exchange_stream.hpp"
#include "transport/request_decoding.hpp"
#include "tsan_annotations.hpp"
#include "unary_send_call.hpp"
#include "xcom/wire.hpp"
#include "xcom/xcom_calls.hpp"
#include "xcom/xcom_table.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/unordered/unordered_flat_set.hpp>

#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

namespace rx {
namespace detail {

namespace asio = boost::asio;

// Hash and equality for the server's set of endpoints: an endpoint is found by its key's view.
struct EndpointKeyHash {
  using is_transparent = void;
  [[nodiscard]] std::size_t operator()(TaskInstanceKeyView key) const noexcept { return TaskInstanceKeyHash{}(key); }
  [[nodiscard]] std::size_t operator()(const std::shared_ptr<EndpointState>& endpoint) const noexcept {
    return TaskInstanceKeyHash{}(endpoint->key().view());
  }
};

struct EndpointKeyEqual {
  using is_transparent = void;
  [[nodiscard]] static TaskInstanceKeyView view(TaskInstanceKeyView key) noexcept { return key; }
  [[nodiscard]] static TaskInstanceKeyView view(const std::shared_ptr<EndpointState>& endpoint) noexcept {
    return endpoint->key().view();
  }
  template <typename A, typename B>
  [[nodiscard]] bool operator()(const A& a, const B& b) const noexcept {
    return view(a) == view(b);
  }
};

// Turns gRPC's reflection service on or off for one builder. Loading libgrpc++_reflection
// registers its plugin for every builder of the process (a static initializer calls
// grpc::reflection::InitProtoReflectionServerBuilderPlugin()), so "on" adds the plugin only when it
// is missing (two reflection services would fail the build) and "off" removes it.
class ReflectionSwitch final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionSwitch(bool on) noexcept : on_(on) {}
  void UpdateArguments(grpc::ChannelArguments* /*arguments*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    const auto is_reflection = [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
      return plugin->name() == "proto_server_reflection";
    };
    if (!on_) {
      std::erase_if(*plugins, is_reflection);
    } else if (std::none_of(plugins->begin(), plugins->end(), is_reflection)) {
      plugins->push_back(std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
    }
  }

 private:
  bool on_;
};

// gRPC turns its default health service on with a process-wide flag, read when a server starts.
// Set only around our own start, under this mutex, so that the application's other servers keep
// the setting it chose.
std::mutex health_flag_mutex;

// Where a List page starts: after this key, in the order (dag_id, run_id, task_id, map_index).
// The page token is this key as JSON text, ["dag", "run", "task", 3]: UTF-8 (a proto3 string), and
// meaningful only to the server that made it.
struct ListCursor {
  std::string dag_id;
  std::string run_id;
  std::string task_id;
  int map_index = -1;
};

using ListOrder = std::tuple<std::string_view, std::string_view, std::string_view, int>;

[[nodiscard]] ListOrder list_order(const TaskInstanceKey& key) noexcept {
  return {key.dag_id, key.run_id, key.task_id, key.map_index};
}

[[nodiscard]] std::string list_token(const TaskInstanceKey& key) {
  boost::json::array token;
  token.emplace_back(key.dag_id);
  token.emplace_back(key.run_id);
  token.emplace_back(key.task_id);
  token.emplace_back(key.map_index);
  return boost::json::serialize(token);
}

[[nodiscard]] std::optional<ListCursor> parse_list_token(std::string_view text) {
  boost::system::error_code error;
  const boost::json::value value = boost::json::parse(text, error);
  if (error || !value.is_array() || value.as_array().size() != 4) {
    return std::nullopt;
  }
  const boost::json::array& parts = value.as_array();
  if (!parts[0].is_string() || !parts[1].is_string() || !parts[2].is_string() || !parts[3].is_int64()) {
    return std::nullopt;
  }
  const std::int64_t map_index = parts[3].as_int64();
  if (map_index < std::numeric_limits<int>::min() || map_index > std::numeric_limits<int>::max()) {
    return std::nullopt;
  }
  return ListCursor{std::string(parts[0].as_string()), std::string(parts[1].as_string()),
                    std::string(parts[2].as_string()), static_cast<int>(map_index)};
}

constexpr std::uint32_t LIST_DEFAULT_PAGE = 1000;
constexpr std::uint32_t LIST_MAX_PAGE = 10000;
constexpr std::string_view SERVICE_NAME = "remote_xcomm.v1.RemoteXComm";

using remote_xcomm::v1::RemoteXComm;

class ServerImpl final : public RemoteXComm::Service,
                         public CallObserver,
                         public StreamHost,
                         public std::enable_shared_from_this<ServerImpl> {
 public:
  ServerImpl(Loop* owned_or_null, std::unique_ptr<Loop> owned, ServerOptions options)
      : owned_loop_(std::move(owned)),
        loop_(owned_or_null != nullptr ? owned_or_null : owned_loop_.get()),
        executor_(loop_->get_executor()),
        options_(std::move(options)),
        access_(options_.scheduler_token),
        in_flight_refusal_("server has " + std::to_string(options_.max_requests_in_flight) +
                           " requests in flight, its limit (ServerOptions::max_requests_in_flight)") {
    options_.scheduler_token.clear();  // kept only as its digest, in access_
    limits_.max_key_field_bytes = options_.max_key_field_bytes;
    limits_.max_batch_frames = options_.max_exchange_batch_frames;
    limits_.json.max_depth = options_.max_json_depth;
    limits_.json.max_values = options_.max_json_values;
    limits_.json.max_string_bytes = options_.max_json_string_bytes;
    register_methods();
    if (options_.on_task_error) {
      on_task_error_ = std::make_shared<const EndpointState::TaskErrorHook>(std::move(options_.on_task_error));
    }
    XComTableOptions xcom_options;
    xcom_options.retention = options_.xcom_retention;
    xcom_options.max_bytes = options_.max_retained_xcom_bytes;
    xcom_options.history_events = options_.xcom_history_events;
    xcom_options.history_bytes = options_.xcom_history_bytes;
    xcom_options.watch_buffer_events = options_.watch_buffer_events;
    xcom_options.store = options_.xcom_store;
    xcom_options.max_message_bytes = static_cast<std::size_t>(options_.max_message_bytes);
    xcoms_ = std::make_shared<XComTable>(executor_, std::move(xcom_options));
  }

  // Reached after the shutdown completed (or without a start): gRPC no longer calls this service.
  ~ServerImpl() override = default;

  void start() {
    const std::lock_guard lock(mutex_);
    if (phase_ != Phase::created) {
      throw std::logic_error(phase_ == Phase::serving ? "rx::Server::start() called twice"
                                                      : "rx::Server::start() called after shutdown");
    }
    // Before listening: a Pull must see what the store kept. A store that cannot be read throws.
    on_loop([&] {
      xcoms_->load();
      arm_retention_timer();
      return true;
    });
    hold_grpc_callback_threads();  // the Server may be destroyed on one of gRPC's threads
    metrics_.mark_started();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(listening_address(), server_credentials(options_.tls), &port_);
    builder.RegisterService(this);
    builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
    builder.SetMaxSendMessageSize(options_.max_message_bytes);
    builder.SetOption(std::make_unique<ReflectionSwitch>(options_.reflection));
    if (!options_.health_check_service) {
      // A null service turns gRPC's default one off for this server, whatever the process flag says.
      builder.SetOption(std::make_unique<grpc::HealthCheckServiceServerBuilderOption>(nullptr));
    }
    handed_to_grpc(this);  // its calls into Send and Exchange see it constructed
    {
      const std::lock_guard health_lock(health_flag_mutex);
      const bool process_setting = grpc::DefaultHealthCheckServiceEnabled();
      grpc::EnableDefaultHealthCheckService(options_.health_check_service || process_setting);
      server_ = builder.BuildAndStart();
      grpc::EnableDefaultHealthCheckService(process_setting);
    }
    if (!server_ || port_ <= 0) {
      server_.reset();
      std::string message = "rx::Server cannot listen on ";
      message.append(listening_address())
          .append(" (gRPC's log says why: an address in use, a bad path or a malformed address)");
      log(LogLevel::error, message);
      throw std::runtime_error(message);
    }
    if (is_unix_address(options_.address)) {
      port_ = 0;  // gRPC reports 1 for a Unix socket's "port"
    }
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService(); health != nullptr) {
      // "" (the whole server) is SERVING from the start; our service by name too.
      health->SetServingStatus(std::string(SERVICE_NAME), true);
    }
    if (!options_.tls && !is_local_address(listening_address())) {
      std::string line = "server listening on ";
      line.append(listening_address())
          .append(" without TLS: requests, replies, XComs")
          .append(access_.enabled() ? " and bearer tokens" : "")
          .append(" cross the network in clear text (set ServerOptions::tls, docs/security.md)");
      log(LogLevel::warning, line);
    }
    if (log_enabled(LogLevel::info)) {
      std::string line = "server listening on ";
      line.append(target());
      line.append(options_.health_check_service ? " (health service on" : " (health service off");
      line.append(options_.reflection ? ", reflection on)" : ", reflection off)");
      log(LogLevel::info, line);
    }
    work_.emplace(loop_->context().get_executor());  // the loop must run until gRPC has drained
    phase_ = Phase::serving;
  }

  // Every method takes its request undecoded (grpc::ByteBuffer) and decodes it with
  // request_decoding.hpp: bad input gets a precise status instead of gRPC's empty UNIMPLEMENTED,
  // and limits hold while decoding. Responses stay gRPC's typed messages. The service's method
  // table (paths, reflection) is the generated one.
  void register_methods() {
    using grpc::ByteBuffer;
    using grpc::CallbackServerContext;
    using grpc::internal::CallbackBidiHandler;
    using grpc::internal::CallbackServerStreamingHandler;
    using grpc::internal::CallbackUnaryHandler;
    namespace v1 = remote_xcomm::v1;
    MarkMethodCallback(0, new CallbackUnaryHandler<ByteBuffer, v1::SendResponse>(
                              [this](CallbackServerContext* context, const ByteBuffer* request,
                                     v1::SendResponse* response) { return on_send(context, request, response); }));
    MarkMethodCallback(1, new CallbackBidiHandler<ByteBuffer, v1::ExchangeResponse>(
                              [this](CallbackServerContext* context) { return on_exchange(context); }));
    MarkMethodCallback(2, new CallbackUnaryHandler<ByteBuffer, v1::PullResponse>(
                              [this](CallbackServerContext* context, const ByteBuffer* request,
                                     v1::PullResponse* response) { return on_pull(context, request, response); }));
    MarkMethodCallback(
        3, new CallbackUnaryHandler<ByteBuffer, v1::TaskStateInfo>(
               [this](CallbackServerContext* context, const ByteBuffer* request, v1::TaskStateInfo* response) {
                 return on_get_state(context, request, response);
               }));
    MarkMethodCallback(4, new CallbackServerStreamingHandler<ByteBuffer, v1::WatchResponse>(
                              [this](CallbackServerContext* context, const ByteBuffer* request) {
                                return on_watch(context, request);
                              }));
    MarkMethodCallback(5, new CallbackUnaryHandler<ByteBuffer, v1::ListResponse>(
                              [this](CallbackServerContext* context, const ByteBuffer* request,
                                     v1::ListResponse* response) { return on_list(context, request, response); }));
    MarkMethodCallback(6, new CallbackUnaryHandler<ByteBuffer, v1::StatsResponse>(
                              [this](CallbackServerContext* context, const ByteBuffer* request,
                                     v1::StatsResponse* response) { return on_stats(context, request, response); }));
  }

  // The caller, from the call's `authorization` metadata, before its request is decoded: a call
  // without a token gets UNAUTHENTICATED before anything it sent is looked at. Whether the token
  // reaches the task instance is checked once the request is decoded (check_task), before its
  // payload is parsed. A server without a scheduler token checks nothing (one branch).
  [[nodiscard]] std::optional<grpc::Status> identify_caller(const grpc::ServerContextBase& context,
                                                            Caller& caller) const {
    if (!access_.enabled()) {
      return std::nullopt;
    }
    caller = access_.identify(context);
    return AccessControl::check_authenticated(caller);
  }

  // Decodes a unary method's request into `out`; logs (rate-limited) a refusal.
  template <typename Message>
  grpc::Status decode(const grpc::ByteBuffer& request, Message& out, std::string_view method) const {
    grpc::Slice bytes;
    grpc::Status status = flatten(request, bytes);
    if (status.ok()) {
      status = decode_request(view_of(bytes), limits_, out);
    }
    if (!status.ok()) {
      log_bad_request(method, status);
    }
    return status;
  }

  grpc::ServerUnaryReactor* on_send(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                    remote_xcomm::v1::SendResponse* response) {
    back_from_grpc(this);
    // The calls received before this one and not yet answered: the in-flight count, for free.
    const std::size_t in_flight = unfinished_calls_.fetch_add(1, std::memory_order_relaxed);
    auto* const send_call =
        new UnarySendCall(context, response, static_cast<std::size_t>(options_.max_message_bytes), executor_, this);
    PendingReplyPtr call(send_call);
    // Taken now. The reactor stays valid until gRPC's OnDone, however soon the loop answers.
    grpc::ServerUnaryReactor* const reactor = send_call->reactor();
    handed_to_grpc(send_call);  // its reactions (OnCancel, OnDone) see it constructed
    if (stopping_.load(std::memory_order_acquire)) {
      call->fail(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
      return reactor;
    }
    Caller caller;
    if (auto refused = identify_caller(*context, caller)) {
      log_refusal("UNAUTHENTICATED (no bearer token)");
      call->fail(*refused);
      return reactor;
    }
    // Decoded here, on the gRPC thread, so that bad input is refused without touching the loop.
    // The key's views point into the call's copy of the bytes, valid until it is freed.
    SendRequestView decoded;
    grpc::Status status = flatten(*request, send_call->request_bytes());
    if (status.ok()) {
      status = decode_send_request(view_of(send_call->request_bytes()), limits_, decoded);
    }
    if (!status.ok()) {
      log_bad_request("Send", status);
      call->fail(status);
      return reactor;
    }
    // The caller's token against the key, before the payload is parsed (one branch without).
    if (auto refused = access_.check_task(caller, decoded.key)) {
      log_refusal("PERMISSION_DENIED (the token does not reach it)");
      call->fail(*refused);
      return reactor;
    }
    // Refused before parsing and before the loop: a saturated server spends nothing more on a
    // request it cannot take, and its memory stays bounded by the limit. Relaxed is enough: the
    // count only decides whether to refuse, and refused calls count until they are finished a
    // few lines below, so a burst may be refused a little early, never admitted over the limit.
    if (in_flight >= options_.max_requests_in_flight) {
      log_refusal("RESOURCE_EXHAUSTED (max_requests_in_flight)");
      call->fail(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, in_flight_refusal_));
      return reactor;
    }
    // Parsed within the JSON limits, still on the gRPC thread.
    boost::json::object payload;
    if (std::string error; !parse_json_object(decoded.payload_json, limits_.json, payload, error)) {
      status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error);
      log_bad_request("Send", status);
      call->fail(status);
      return reactor;
    }
    detail::hand_off(executor_,
                     [this, call = std::move(call), key = decoded.key, payload = std::move(payload)]() mutable {
                       route_to_endpoint(key, std::move(call), std::move(payload));
                     });
    return reactor;
  }

  grpc::ServerBidiReactor<grpc::ByteBuffer, remote_xcomm::v1::ExchangeResponse>* on_exchange(
      grpc::CallbackServerContext* context) {
    back_from_grpc(this);
    if (stopping_.load(std::memory_order_acquire)) {
      metrics_.record_code(Method::exchange, grpc::StatusCode::UNAVAILABLE);
      return new RefusedStream(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
    }
    StreamAccess access;
    if (access_.enabled()) {
      // The stream's token, once; each frame is then checked against its task instance.
      const Caller caller = access_.identify(*context);
      if (auto refused = AccessControl::check_authenticated(caller)) {
        metrics_.record_code(Method::exchange, refused->error_code());
        return new RefusedStream(*refused);
      }
      if (caller.kind != Caller::Kind::scheduler) {
        access.control = &access_;
        access.caller = caller;
      }
    }
    StreamLimits limits;
    limits.max_message_bytes = static_cast<std::size_t>(options_.max_message_bytes);
    limits.request = limits_;
    limits.max_in_flight = options_.max_stream_requests_in_flight;
    return new ExchangeStream(context, *this, executor_, limits, access);
  }

  grpc::ServerUnaryReactor* on_pull(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                    remote_xcomm::v1::PullResponse* response) {
    back_from_grpc(this);
    const auto started = std::chrono::steady_clock::now();
    if (stopping_.load(std::memory_order_acquire)) {
      metrics_.record_code(Method::pull, grpc::StatusCode::UNAVAILABLE);
      return refuse_unary(context);
    }
    Caller caller;
    if (auto refused = identify_caller(*context, caller)) {
      return finish_unary(context, Method::pull, *refused, started);
    }
    remote_xcomm::v1::PullRequest decoded;
    if (grpc::Status status = decode(*request, decoded, "Pull"); !status.ok()) {
      return finish_unary(context, Method::pull, status, started);
    }
    if (auto refused = decoded.all_map_indexes() ? access_.check_scheduler(caller, "a Pull of every map index")
                                                 : access_.check_task(caller, pulled_key(decoded))) {
      return finish_unary(context, Method::pull, *refused, started);
    }
    return start_pull(context, decoded, response, xcoms_, executor_, &metrics_);
  }

  grpc::ServerUnaryReactor* on_get_state(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                         remote_xcomm::v1::TaskStateInfo* response) {
    back_from_grpc(this);
    const auto started = std::chrono::steady_clock::now();
    if (stopping_.load(std::memory_order_acquire)) {
      return finish_unary(context, Method::get_state,
                          grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"), started);
    }
    Caller caller;
    if (auto refused = identify_caller(*context, caller)) {
      return finish_unary(context, Method::get_state, *refused, started);
    }
    remote_xcomm::v1::GetStateRequest decoded;
    if (grpc::Status status = decode(*request, decoded, "GetState"); !status.ok()) {
      return finish_unary(context, Method::get_state, status, started);
    }
    if (auto refused = access_.check_task(caller, view_of(decoded.task_instance()))) {
      return finish_unary(context, Method::get_state, *refused, started);
    }
    // Taken once: gRPC allows one DefaultReactor per call (finish_unary takes it on the paths above).
    grpc::ServerUnaryReactor* const reactor = context->DefaultReactor();
    // The response lives until Finish, which the job calls; the service until the drain, which
    // waits for every call.
    detail::hand_off(executor_, [this, reactor, owned_key = from_proto(decoded.task_instance()), response, started] {
      const TaskInstanceKeyView key = owned_key.view();
      std::optional<TaskStateInfo> state = xcoms_->state(key);
      if (!state) {
        // An attached endpoint that has not changed state yet has no record: it is idle.
        auto it = endpoints_.find(key);
        if (it != endpoints_.end() && (*it)->xcom_record() != nullptr) {
          state = xcoms_->state(key);
        }
      }
      if (!state) {
        metrics_.record(Method::get_state, grpc::StatusCode::NOT_FOUND, started);
        reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "the server knows nothing of " + caller_key(key) +
                                                                      " (never attached here, or past its retention)"));
        return;
      }
      to_proto(*state, *response);
      metrics_.record(Method::get_state, grpc::StatusCode::OK, started);
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }

  grpc::ServerUnaryReactor* on_list(grpc::CallbackServerContext* context, const grpc::ByteBuffer* encoded,
                                    remote_xcomm::v1::ListResponse* response) {
    back_from_grpc(this);
    const auto started = std::chrono::steady_clock::now();
    // Only the scheduler token reaches List, whatever it asks: checked before it is decoded.
    if (auto refused = access_.authorize_scheduler(*context, "List")) {
      return finish_unary(context, Method::list, *refused, started);
    }
    auto request = std::make_unique<remote_xcomm::v1::ListRequest>();
    if (grpc::Status status = decode(*encoded, *request, "List"); !status.ok()) {
      return finish_unary(context, Method::list, status, started);
    }
    grpc::ServerUnaryReactor* const reactor = context->DefaultReactor();
    std::optional<ListCursor> after;
    if (!request->page_token().empty()) {
      after = parse_list_token(request->page_token());
      if (!after) {
        metrics_.record(Method::list, grpc::StatusCode::INVALID_ARGUMENT, started);
        reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                     "page_token is not a token this server made (pass next_page_token as it came)"));
        return reactor;
      }
    }
    // Answered during a shutdown too: what is still attached. The request and response live until
    // Finish; the service until gRPC's drain, which waits for every call.
    detail::hand_off(executor_,
                     [this, reactor, request = std::move(request), response, after = std::move(after), started] {
                       list(*request, after, *response);
                       metrics_.record(Method::list, grpc::StatusCode::OK, started);
                       reactor->Finish(grpc::Status::OK);
                     });
    return reactor;
  }

  grpc::ServerUnaryReactor* on_stats(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     remote_xcomm::v1::StatsResponse* response) {
    back_from_grpc(this);
    const auto started = std::chrono::steady_clock::now();
    if (auto refused = access_.authorize_scheduler(*context, "Stats")) {
      return finish_unary(context, Method::stats, *refused, started);
    }
    remote_xcomm::v1::StatsRequest decoded;
    if (grpc::Status status = decode(*request, decoded, "Stats"); !status.ok()) {
      return finish_unary(context, Method::stats, status, started);
    }
    grpc::ServerUnaryReactor* const reactor = context->DefaultReactor();
    detail::hand_off(executor_, [this, reactor, response, started] {
      to_proto(stats_on_loop(), *response);
      metrics_.record(Method::stats, grpc::StatusCode::OK, started);
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }

  // On the loop: the counters and the loop's own figures.
  [[nodiscard]] ServerStats stats_on_loop() const {
    ServerStats stats;
    metrics_.snapshot(stats);
    stats.endpoints = endpoints_.size();
    stats.requests_in_flight = unfinished_calls_.load(std::memory_order_relaxed);
    for (const auto& endpoint : endpoints_) {
      stats.queued_requests += endpoint->queued();
    }
    stats.exchange_streams = streams_.size();
    return stats;
  }

  ServerStats stats() {
    return on_loop([&] { return stats_on_loop(); });
  }

  // On the loop: one page of the endpoints that match, after `after`, in key order. Linear in the
  // endpoints hosted, and the page is chosen with a partial sort, so a page costs O(n log page)
  // whatever its position; no state is kept between pages.
  void list(const remote_xcomm::v1::ListRequest& request, const std::optional<ListCursor>& after,
            remote_xcomm::v1::ListResponse& response) {
    const std::uint32_t page_size =
        request.page_size() == 0 ? LIST_DEFAULT_PAGE : std::min(request.page_size(), LIST_MAX_PAGE);
    std::optional<ListOrder> start;
    if (after) {
      start.emplace(after->dag_id, after->run_id, after->task_id, after->map_index);
    }
    std::vector<const EndpointState*> candidates;
    std::uint64_t total = 0;
    for (const auto& endpoint : endpoints_) {
      const TaskInstanceKey& key = endpoint->key();
      if ((!request.dag_id().empty() && key.dag_id != request.dag_id()) ||
          (!request.run_id().empty() && key.run_id != request.run_id()) ||
          (!request.task_id().empty() && key.task_id != request.task_id())) {
        continue;
      }
      ++total;
      if (start && !(list_order(key) > *start)) {
        continue;
      }
      candidates.push_back(endpoint.get());
    }
    const auto by_key = [](const EndpointState* a, const EndpointState* b) {
      return list_order(a->key()) < list_order(b->key());
    };
    const std::size_t taken = std::min<std::size_t>(candidates.size(), page_size);
    std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(taken), candidates.end(),
                      by_key);
    response.mutable_endpoints()->Reserve(static_cast<int>(taken));
    for (std::size_t i = 0; i < taken; ++i) {
      const EndpointState& endpoint = *candidates[i];
      EndpointInfo info;
      if (std::optional<TaskStateInfo> state = xcoms_->state(endpoint.key().view())) {
        info.state = std::move(*state);
      } else {
        // No record: attached and never changed state (records are made on first use).
        info.state.task_instance = endpoint.key();
        info.state.state = TaskState::idle;
        info.state.attempt = endpoint.attempt_without_record();
      }
      info.queued_requests = endpoint.queued();
      info.holding_request = endpoint.holding_request();
      to_proto(info, *response.add_endpoints());
    }
    if (candidates.size() > taken) {
      response.set_next_page_token(list_token(candidates[taken - 1]->key()));
    }
    response.set_total_matching(total);
  }

  grpc::ServerWriteReactor<remote_xcomm::v1::WatchResponse>* on_watch(grpc::CallbackServerContext* context,
                                                                      const grpc::ByteBuffer* request) {
    back_from_grpc(this);
    if (stopping_.load(std::memory_order_acquire)) {
      metrics_.record_code(Method::watch, grpc::StatusCode::UNAVAILABLE);
      return new RefusedWatch(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
    }
    Caller caller;
    if (auto refused = identify_caller(*context, caller)) {
      metrics_.record_code(Method::watch, refused->error_code());
      return new RefusedWatch(*refused);
    }
    remote_xcomm::v1::WatchRequest decoded;
    if (grpc::Status status = decode(*request, decoded, "Watch"); !status.ok()) {
      metrics_.record_code(Method::watch, status.error_code());
      return new RefusedWatch(status);
    }
    if (auto refused = watches_one_task_instance(decoded)
                           ? access_.check_task(caller, watched_key(decoded))
                           : access_.check_scheduler(caller, "a Watch of more than one task instance")) {
      metrics_.record_code(Method::watch, refused->error_code());
      return new RefusedWatch(*refused);
    }
    return start_watch(context, decoded, xcoms_, executor_, &metrics_);
  }

  // ---- StreamHost ------------------------------------------------------------------------------

  [[nodiscard]] bool refusing() const noexcept override { return stopping_.load(std::memory_order_acquire); }
  [[nodiscard]] bool saturated() const noexcept override {
    return unfinished_calls_.load(std::memory_order_relaxed) >= options_.max_requests_in_flight;
  }
  [[nodiscard]] std::size_t requests_in_flight() const noexcept {
    return unfinished_calls_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] bool over_limit() const noexcept override {
    return unfinished_calls_.load(std::memory_order_relaxed) > options_.max_requests_in_flight;
  }
  void request_started() noexcept override { unfinished_calls_.fetch_add(1, std::memory_order_relaxed); }
  void request_finished() noexcept override { call_finished(); }
  void request_replied(grpc::StatusCode code, std::chrono::steady_clock::time_point read_at) noexcept override {
    metrics_.record(Method::exchange, code, read_at);
  }
  void route(TaskInstanceKeyView key, PendingReplyPtr reply, boost::json::object&& payload) override {
    route_to_endpoint(key, std::move(reply), std::move(payload));
  }
  bool stream_opened(ExchangeStream& stream) override {
    if (closed_) {
      return false;
    }
    streams_.insert(&stream);
    return true;
  }
  void stream_closed(ExchangeStream& stream) noexcept override { streams_.erase(&stream); }

  void on_call_finished(grpc::StatusCode code, std::chrono::steady_clock::time_point started) noexcept override {
    metrics_.record(Method::send, code, started);
    call_finished();
  }

  void call_finished() noexcept {
    if (unfinished_calls_.fetch_sub(1, std::memory_order_acq_rel) == 1 && stopping_.load(std::memory_order_acquire)) {
      // Through the mutex, so the draining thread cannot miss it between its check and its wait.
      const std::lock_guard lock(mutex_);
      changed_.notify_all();
    }
  }

  bool attach(TaskInstanceKey key, Server::Task task, const AttachOptions& attach_options) {
    if (!attach_options.token.empty() && !access_.enabled()) {
      throw std::invalid_argument(
          "AttachOptions::token needs ServerOptions::scheduler_token: without it the server checks no token");
    }
    if (stopping_.load(std::memory_order_acquire)) {
      return false;
    }
    return on_loop([&] {
      if (closed_ || endpoints_.contains(key.view())) {
        return false;
      }
      TaskRecord* const record = xcoms_->attach(key, attach_options.try_number);
      auto endpoint = std::make_shared<EndpointState>(executor_, std::move(key), std::move(task), on_task_error_,
                                                      options_.max_queued_requests);
      endpoint->bind_xcoms(xcoms_, record, std::max<std::uint32_t>(attach_options.try_number.value_or(1), 1));
      access_.add_endpoint(endpoint->key(), attach_options.token);  // before a request can reach it
      if (log_enabled(LogLevel::debug)) {
        std::string line = "endpoint ";
        line.append(to_string(endpoint->key())).append(" attached");
        log(LogLevel::debug, line);
      }
      endpoints_.insert(std::move(endpoint));
      return true;
    });
  }

  bool detach(const TaskInstanceKey& key) {
    return on_loop([&] {
      auto it = endpoints_.find(key.view());
      if (it == endpoints_.end()) {
        return false;
      }
      const std::shared_ptr<EndpointState> endpoint = *it;
      endpoints_.erase(it);
      access_.remove_endpoint(key.view());                 // its token reaches nothing from here on
      TaskRecord* const record = endpoint->xcom_record();  // made now if it had none: detached is a state
      endpoint->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "endpoint " + to_string(key) + " was detached"));
      xcoms_->detach(*record);
      arm_retention_timer();
      if (log_enabled(LogLevel::debug)) {
        std::string line = "endpoint ";
        line.append(to_string(key)).append(" detached");
        log(LogLevel::debug, line);
      }
      return true;
    });
  }

  std::size_t endpoint_count() {
    return on_loop([&] { return endpoints_.size(); });
  }

  // ---- shutdown ------------------------------------------------------------------------------

  // The blocking form: at once; from the loop, in the background.
  void shutdown() {
    const auto now = std::chrono::steady_clock::now();
    if (executor_.running_in_this_thread()) {
      if (request_shutdown(now, std::nullopt)) {
        drain_in_background();
      }
      return;
    }
    if (request_shutdown(now, std::nullopt)) {
      drain(shared_from_this());
      return;
    }
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return phase_ == Phase::stopped; });
  }

  void shutdown_async(std::chrono::steady_clock::time_point deadline, ShutdownHandler handler) {
    Waiter waiter;
    // The completion runs on the handler's executor, by default the server's loop; tracked, so
    // that executor's context keeps running until the handler has run.
    waiter.work =
        asio::prefer(asio::get_associated_executor(handler, executor_), asio::execution::outstanding_work.tracked);
    auto slot = handler.get_cancellation_slot();
    if (slot.is_connected()) {
      slot.assign([weak = weak_from_this()](asio::cancellation_type type) {
        if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial)) ==
            asio::cancellation_type::none) {
          return;
        }
        if (const auto self = weak.lock()) {
          self->skip_grace();
        }
      });
    }
    waiter.handler.swap(handler);  // never move-assign any_completion_handler (asio#1180)
    if (request_shutdown(deadline, std::move(waiter))) {
      drain_in_background();
    }
  }

  // The destructor of Server: never throws, never blocks on the loop from the loop.
  void shutdown_on_destruction() noexcept {
    try {
      shutdown();
    } catch (const std::exception& error) {
      // Only starting the draining thread can fail (out of threads or memory). Keep the service
      // alive for gRPC rather than free it under a running grpc::Server.
      std::string line = "rx::Server: could not shut down (";
      line.append(error.what()).append("); leaking the server");
      log(LogLevel::error, line);
      leak_ = shared_from_this();
    } catch (...) {
      log(LogLevel::error, "rx::Server: could not shut down; leaking the server");
      leak_ = shared_from_this();
    }
  }

  [[nodiscard]] std::uint16_t port() const noexcept { return static_cast<std::uint16_t>(port_); }
  [[nodiscard]] std::string target() const {
    if (options_.address.empty()) {
      return host_port(options_.host, port());
    }
    if (is_unix_address(options_.address)) {
      return options_.address;
    }
    // "host:port" given as an address: its host with the bound port (the address may ask for 0).
    return options_.address.substr(0, options_.address.rfind(':') + 1) + std::to_string(port());
  }
  [[nodiscard]] const LoopExecutor& executor() const noexcept { return executor_; }

  [[nodiscard]] std::string listening_address() const {
    return options_.address.empty() ? host_port(options_.host, options_.port) : options_.address;
  }

  static bool is_unix_address(std::string_view address) noexcept {
    return address.starts_with("unix:") || address.starts_with("unix-abstract:");
  }

 private:
  enum class Phase { created, serving, draining, stopped };

  struct Waiter {
    ShutdownHandler handler;
    asio::any_completion_executor work;
  };

  // Records a shutdown request. Returns true when the caller must drain (it started the
  // shutdown); otherwise a shutdown is under way (the request joined it) or already over.
  bool request_shutdown(std::chrono::steady_clock::time_point deadline, std::optional<Waiter> waiter) {
    std::vector<Waiter> complete_now;
    bool must_drain = false;
    {
      const std::lock_guard lock(mutex_);
      switch (phase_) {
        case Phase::created:  // nothing listens: nothing to drain
          phase_ = Phase::stopped;
          stopping_.store(true, std::memory_order_release);
          [[fallthrough]];
        case Phase::stopped:
          if (waiter) {
            complete_now.push_back(std::move(*waiter));
          }
          break;
        case Phase::serving:
          phase_ = Phase::draining;
          deadline_ = deadline;
          // New calls are refused from here on, on gRPC's thread; the loop is not needed for that.
          stopping_.store(true, std::memory_order_release);
          // Health checks answer NOT_SERVING from now on, so that load balancers move away
          // while the grace period lets the last requests finish.
          if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService(); health != nullptr) {
            health->Shutdown();
          }
          must_drain = true;
          [[fallthrough]];
        case Phase::draining:
          deadline_ = std::min(deadline_, deadline);
          if (waiter) {
            waiters_.push_back(std::move(*waiter));
          }
          changed_.notify_all();
          break;
      }
    }
    complete(std::move(complete_now), {});
    return must_drain;
  }

  void skip_grace() {
    const std::lock_guard lock(mutex_);
    if (phase_ == Phase::draining) {
      grace_skipped_ = true;
      changed_.notify_all();
    }
  }

  void drain_in_background() {
    // gRPC's Shutdown() and Wait() block until every call is finished, and only the loop finishes
    // calls: they must not run on the loop. The thread keeps this service alive, as gRPC requires,
    // even when the Server was destroyed from the loop; it is detached, and touches nothing of
    // the application once it has handed the completions over.
    try {
      std::thread([self = shared_from_this()]() mutable { drain(std::move(self)); }).detach();
    } catch (...) {
      // No thread (resources exhausted): back to serving, so that a later shutdown can try again
      // and complete the handlers recorded meanwhile; the caller sees the exception.
      {
        const std::lock_guard lock(mutex_);
        phase_ = Phase::serving;
        deadline_ = std::chrono::steady_clock::time_point::max();
        stopping_.store(false, std::memory_order_release);
      }
      throw;
    }
  }

  // The whole shutdown, on a thread that is not running the loop.
  static void drain(std::shared_ptr<ServerImpl> self) {
    {
      std::unique_lock lock(self->mutex_);
      // Held and queued requests finish, or the deadline passes, or cancellation cuts it short.
      // Every unfinished call is counted, those still on their way to the loop included.
      while (self->unfinished_calls_.load(std::memory_order_acquire) != 0 && !self->grace_skipped_ &&
             std::chrono::steady_clock::now() < self->deadline_) {
        self->changed_.wait_until(lock, self->deadline_);
      }
    }
    if (log_enabled(LogLevel::info)) {
      std::string line = "server on ";
      line.append(self->target()).append(" shutting down: closing its endpoints");
      log(LogLevel::info, line);
    }
    // Runs on this thread when the loop is free, so this works with nobody running the
    // io_context; waited for so that shutdown() returns with every endpoint gone.
    detail::run_and_wait(self->executor_, [&self] { self->close_endpoints(); });
    // Every request now has its status (or is being given it on the loop); gRPC delivers them.
    self->server_->Shutdown(std::chrono::system_clock::now() + self->options_.shutdown_grace);
    self->server_->Wait();
    self->server_.reset();
    // A store's writer may still hand completions to the loop: they must be queued before the
    // io_context may go.
    self->xcoms_->wait_for_store_writes();

    // The io_context may stop once this work is gone; each completion holds work of its own.
    // Released before `stopped` is published: a blocking shutdown() then returns, and its caller
    // may destroy the io_context at once.
    self->work_.reset();
    std::vector<Waiter> waiters;
    bool aborted = false;
    {
      const std::lock_guard lock(self->mutex_);
      self->phase_ = Phase::stopped;
      waiters.swap(self->waiters_);
      aborted = self->grace_skipped_;
      self->changed_.notify_all();
    }
    // Released before the handlers run: one may end the application (the io_context, the
    // Server), and the service may be destroyed here only while its io_context surely lives.
    self.reset();
    complete(std::move(waiters), aborted ? asio::error::operation_aborted : boost::system::error_code{});
  }

  static void complete(std::vector<Waiter> waiters, boost::system::error_code error) {
    for (Waiter& waiter : waiters) {
      // Run through an untracked copy; the tracked one travels with the handler and is released
      // just before it runs, so nothing touches the handler's context after it ran, even when
      // it runs inline on this thread.
      const asio::any_completion_executor executor =
          asio::prefer(waiter.work, asio::execution::outstanding_work.untracked);
      executor.execute([handler = std::move(waiter.handler), work = std::move(waiter.work), error]() mutable {
        handler.get_cancellation_slot().clear();
        ShutdownHandler run;
        run.swap(handler);
        work = asio::any_completion_executor();
        std::move(run)(error);
      });
    }
  }

  void close_endpoints() {
    if (closed_) {
      return;
    }
    closed_ = true;
    const grpc::Status status(grpc::StatusCode::UNAVAILABLE, "server is shutting down");
    // Moved out first: closing runs task code (cancellation), which may call back into the server.
    auto endpoints = std::move(endpoints_);
    endpoints_.clear();
    for (const auto& endpoint : endpoints) {
      TaskRecord* const record = endpoint->xcom_record();
      endpoint->close(status);
      xcoms_->detach(*record);
    }
    // Waiting pulls and watches end; retention stops with the server (a pending timer would keep
    // the io_context's run() from returning).
    xcoms_->close(status);
    if (retention_timer_) {
      retention_timer_->cancel();
    }
    // Streams end once the replies just made are written. Copied, with references: each leaves
    // the set as it ends, and ending one runs task code that may end another.
    std::vector<boost::intrusive_ptr<ExchangeStream>> streams;
    streams.reserve(streams_.size());
    for (ExchangeStream* stream : streams_) {
      streams.emplace_back(stream);
    }
    for (const auto& stream : streams) {
      stream->end_for_shutdown();
    }
  }

  void route_to_endpoint(TaskInstanceKeyView key, PendingReplyPtr reply, boost::json::object&& payload) {
    if (closed_) {
      reply->fail(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
      return;
    }
    auto it = endpoints_.find(key);
    if (it == endpoints_.end()) {
      reply->fail(grpc::Status(grpc::StatusCode::NOT_FOUND, "no endpoint " + caller_key(key) + " on this server"));
      return;
    }
    (*it)->deliver(std::move(reply), std::move(payload));
  }

  // Debug: a Send refused on gRPC's thread, before its request was decoded. The reason only.
  static void log_refusal(std::string_view reason) noexcept {
    if (!log_enabled(LogLevel::debug)) {
      return;
    }
    try {
      std::string line = "Send refused: ";
      line.append(reason);
      log(LogLevel::debug, line);
    } catch (...) {  // no memory for the line: nothing to log
    }
  }

  // Debug, as every refusal on gRPC's thread, and at most a few lines a second: a request that did
  // not decode or broke a limit. Its status message names the field and quotes at most a short
  // escaped prefix of it (never the payload); a client sending such requests in a loop cannot
  // fill the log.
  void log_bad_request(std::string_view method, const grpc::Status& status) const noexcept {
    if (!log_enabled(LogLevel::debug)) {
      return;
    }
    std::uint64_t suppressed = 0;
    if (!bad_request_log_.allow(suppressed)) {
      return;
    }
    try {
      std::string line(method);
      line.append(" refused: ").append(status_code_name(status.error_code()));
      line.append(": ").append(status.error_message());
      if (suppressed != 0) {
        line.append(" (and ").append(std::to_string(suppressed)).append(" more since the last such line)");
      }
      log(LogLevel::debug, line);
    } catch (...) {  // no memory for the line: nothing to log
    }
  }

  grpc::ServerUnaryReactor* finish_unary(grpc::CallbackServerContext* context, Method method,
                                         const grpc::Status& status, std::chrono::steady_clock::time_point started) {
    metrics_.record(method, status.error_code(), started);
    grpc::ServerUnaryReactor* const reactor = context->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }

  static grpc::ServerUnaryReactor* refuse_unary(grpc::CallbackServerContext* context,
                                                const grpc::Status& status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                                                                          "server is shutting down")) {
    grpc::ServerUnaryReactor* const reactor = context->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }

  // The one task instance a Pull (without all_map_indexes) or a Watch names.
  static TaskInstanceKeyView pulled_key(const remote_xcomm::v1::PullRequest& request) noexcept {
    return {request.dag_id(), request.task_id(), request.run_id(), request.has_map_index() ? request.map_index() : -1};
  }
  static bool watches_one_task_instance(const remote_xcomm::v1::WatchRequest& request) noexcept {
    return !request.task_id().empty() && !request.all_map_indexes();
  }
  static TaskInstanceKeyView watched_key(const remote_xcomm::v1::WatchRequest& request) noexcept {
    return {request.dag_id(), request.task_id(), request.run_id(), request.has_map_index() ? request.map_index() : -1};
  }

  // A Watch refused before it started.
  class RefusedWatch final : public grpc::ServerWriteReactor<remote_xcomm::v1::WatchResponse> {
   public:
    explicit RefusedWatch(const grpc::Status& status) { Finish(status); }
    void OnDone() override { delete this; }
  };

  // On the loop: the timer wakes when the oldest detached task instance's retention passes.
  void arm_retention_timer() {
    const auto next = xcoms_->next_expiry();
    if (!next || closed_) {
      return;
    }
    if (!retention_timer_) {
      retention_timer_.emplace(executor_);
    } else if (retention_armed_ && retention_timer_->expiry() <= *next) {
      return;
    }
    retention_armed_ = true;
    retention_timer_->expires_at(*next);
    retention_timer_->async_wait([weak = weak_from_this()](boost::system::error_code error) {
      const auto self = weak.lock();
      if (error || !self) {
        return;
      }
      self->retention_armed_ = false;
      self->xcoms_->expire(std::chrono::steady_clock::now());
      self->arm_retention_timer();
    });
  }

  // Runs `function` on the loop and waits for its result; inline when this thread may run it.
  template <typename Function>
  auto on_loop(Function function) -> decltype(function()) {
    if (executor_.running_in_this_thread()) {
      return function();
    }
    std::promise<decltype(function())> done;
    auto result = done.get_future();
    run_and_wait(executor_, [&] {
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
  AccessControl access_;  // tokens, any thread
  std::shared_ptr<const EndpointState::TaskErrorHook> on_task_error_;
  std::string in_flight_refusal_;  // built once: refusals come in bursts, under overload
  RequestLimits limits_;
  mutable RateLimit bad_request_log_;
  int port_ = 0;

  // Lifecycle, under mutex_ (stopping_ and unfinished_calls_ are also read without it).
  std::mutex mutex_;
  std::condition_variable changed_;
  Phase phase_ = Phase::created;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  bool grace_skipped_ = false;
  std::vector<Waiter> waiters_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> unfinished_calls_{0};
  // Set by start(); used by the draining thread only once phase_ left serving.
  std::unique_ptr<grpc::Server> server_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::shared_ptr<ServerImpl> leak_;  // only if a shutdown could not be started
  // Counters, any thread (relaxed atomics). Outlives every call's finish, as the service does.
  ServerMetrics metrics_;

  // Loop state.
  // A set of the endpoints, looked up by key view: each key is stored once, in its endpoint, and a
  // node holds only the pointer (a map node would repeat the key's views, 56 bytes an endpoint).
  // Open addressing with a byte of hash per slot: a lookup compares about one key, where a node
  // set walked its chain rehashing each neighbour's key (6% of a 10,000-endpoint fan-out's CPU).
  boost::unordered_flat_set<std::shared_ptr<EndpointState>, EndpointKeyHash, EndpointKeyEqual> endpoints_;
  std::unordered_set<ExchangeStream*> streams_;  // open Exchange streams, ended by a shutdown
  std::shared_ptr<XComTable> xcoms_;             // shared with endpoints and XCom calls
  std::optional<asio::steady_timer> retention_timer_;
  bool retention_armed_ = false;
  bool closed_ = false;
};

void initiate_shutdown(const std::shared_ptr<ServerImpl>& impl, std::chrono::steady_clock::time_point deadline,
                       ShutdownHandler handler) {
  impl->shutdown_async(deadline, std::move(handler));
}

}  // namespace detail

Server::Server(Loop& loop, ServerOptions options)
    : impl_(std::make_shared<detail::ServerImpl>(&loop, nullptr, std::move(options))) {}

Server::Server(boost::asio::io_context& context, ServerOptions options)
    : impl_(std::make_shared<detail::ServerImpl>(nullptr, std::make_unique<Loop>(context), std::move(options))) {}

Server::~Server() { impl_->shutdown_on_destruction(); }

void Server::start() { impl_->start(); }
std::uint16_t Server::port() const noexcept { return impl_->port(); }
std::string Server::target() const { return impl_->target(); }
bool Server::attach(TaskInstanceKey key, Task task) { return impl_->attach(std::move(key), std::move(task), {}); }
bool Server::attach(TaskInstanceKey key, Task task, AttachOptions options) {
  return impl_->attach(std::move(key), std::move(task), options);
}
bool Server::detach(const TaskInstanceKey& key) { return impl_->detach(key); }
std::size_t Server::endpoint_count() const { return impl_->endpoint_count(); }
std::size_t Server::requests_in_flight() const noexcept { return impl_->requests_in_flight(); }
ServerStats Server::stats() const { return impl_->stats(); }
void Server::shutdown() { impl_->shutdown(); }
Server::executor_type Server::get_executor() const noexcept { return impl_->executor(); }

}  // namespace rx

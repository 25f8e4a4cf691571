// The scheduler side: send JSON payloads to endpoints by address and await their replies.
#pragma once

#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/security.hpp>
#include <remote_xcomm/stats.hpp>
#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/watch.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/status.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace rx {

namespace detail {
class ClientImpl;
struct TargetChannel;
using SendHandler = boost::asio::any_completion_handler<void(grpc::Status, boost::json::object)>;
using PullHandler = boost::asio::any_completion_handler<void(grpc::Status, std::vector<XCom>)>;
using GetStateHandler = boost::asio::any_completion_handler<void(grpc::Status, TaskStateInfo)>;
using StatsHandler = boost::asio::any_completion_handler<void(grpc::Status, ServerStats)>;
using ListHandler = boost::asio::any_completion_handler<void(grpc::Status, EndpointPage)>;
}  // namespace detail

/// Options of one send.
struct SendOptions {
  /// The call's deadline, measured from when it starts; past it the call fails with
  /// DEADLINE_EXCEEDED and the server drops the request. `std::nullopt` (or rx::no_deadline)
  /// sends without a deadline: the call then waits for the task's reply for as long as it takes,
  /// until it is cancelled (see Client::send) or the connection fails.
  std::optional<std::chrono::milliseconds> timeout{std::chrono::seconds(30)};

  /// gRPC's wait-for-ready: when the server cannot be reached (not listening yet, restarting),
  /// the call waits for the channel to connect, within its deadline, instead of failing with
  /// UNAVAILABLE at once. Off by default, as in gRPC. Use it for a server that is still starting;
  /// give such sends a deadline, as a server that never comes makes them wait until it passes.
  bool wait_for_ready = false;
};

/// Options of one get_state (Client::get_state, Connection::get_state).
struct GetStateOptions {
  /// The call's deadline, measured from when it starts; past it the call fails with
  /// DEADLINE_EXCEEDED. `std::nullopt` (rx::no_deadline): none.
  std::optional<std::chrono::milliseconds> timeout{std::chrono::seconds(30)};
  /// gRPC's wait-for-ready, as SendOptions::wait_for_ready.
  bool wait_for_ready = false;
};

/// Options of one stats call (Client::stats, Connection::stats).
struct StatsOptions {
  /// The call's deadline, measured from when it starts; `std::nullopt`: none.
  std::optional<std::chrono::milliseconds> timeout{std::chrono::seconds(30)};
  /// gRPC's wait-for-ready, as SendOptions::wait_for_ready.
  bool wait_for_ready = false;
};

/// SendOptions::timeout of a send without a deadline: `SendOptions{rx::no_deadline}`.
inline constexpr std::nullopt_t no_deadline = std::nullopt;

/// How a Client carries its sends to a server (ClientOptions::transport).
enum class Transport {
  /// One unary `Send` call per send.
  unary,
  /// One `Exchange` stream per target, carrying every send to that target at once, in batches.
  exchange,
};

/// Which calls of a Client gRPC tries again when they fail with UNAVAILABLE, and how
/// (ClientOptions::retry). The Client hands it to gRPC as each channel's default service config
/// (gRPC's retry policy, gRFC A6), so gRPC does the retrying, below the Client: an operation still
/// completes once, with its last attempt's outcome, within its one deadline (the deadline covers
/// every attempt). The default, one attempt, retries nothing (docs/cpp-guide.md, "Retries").
///
/// What is retried: `Pull`, `GetState`, `List`, `Stats` and `Watch` (before its first event:
/// afterwards resume with WatchQuery::after_sequence), which change nothing on the server, so a
/// second attempt is always safe. `Send` only with `retry_sends`; `Exchange` never. Only
/// UNAVAILABLE is retried (the server unreachable, the connection lost, the server shutting down),
/// and only while gRPC has received nothing of the response; calls that never left the client
/// (no connection yet) gRPC retries without a policy.
struct RetryPolicy {
  /// Attempts per call, the first included: 1 retries nothing; gRPC caps it at 5. Less than 1 is
  /// refused (the Client's constructor throws std::invalid_argument).
  int max_attempts = 1;
  /// The n-th retry waits a random time up to min(initial_backoff × backoff_multiplier^(n-1),
  /// max_backoff). At least 1 ms.
  std::chrono::milliseconds initial_backoff{100};
  /// The longest wait before a retry (see initial_backoff). At least 1 ms.
  std::chrono::milliseconds max_backoff{2000};
  /// How much each wait grows over the one before. At least 1.
  double backoff_multiplier = 2.0;
  /// Each attempt of the calls this policy covers waits for the channel to connect (gRPC's wait-for-ready)
  /// instead of failing at once while the server cannot be reached: a retry after a lost
  /// connection then waits, within the call's deadline, for the server to be back rather than
  /// spending its attempts on refused connections. A call's own `wait_for_ready = true`
  /// (SendOptions, GetStateOptions, StatsOptions) always waits, whatever this says.
  bool wait_for_ready = false;
  /// Retry `Send` too (unary transport only). A Send that failed with UNAVAILABLE may have reached
  /// its task, which then runs twice: set it only for tasks whose work is idempotent.
  bool retry_sends = false;
};

/// Options of a Client.
struct ClientOptions {
  /// How sends travel. Either way, Client::send has the same completion, statuses, deadlines and
  /// cancellation; a server's answer to a request (NOT_FOUND, INVALID_ARGUMENT, the task's
  /// INTERNAL, ...) is the same status with the same message.
  ///
  /// - `Transport::unary` (the default): one `Send` RPC per send.
  /// - `Transport::exchange`: the sends to one target share one `Exchange` stream, opened by the
  ///   first send to the target (a target has one stream for sends with
  ///   SendOptions::wait_for_ready and one for those without, each opened with that setting), and
  ///   written in batches; each carries its deadline in its frame and is also timed out by the
  ///   client, which then cancels it on the stream. A stream that breaks fails every send in
  ///   flight on it with UNAVAILABLE, saying why ("the Exchange stream ended before the reply
  ///   arrived: ..."; UNAUTHENTICATED or PERMISSION_DENIED instead when the server refused the
  ///   stream's token), and the next send opens a new stream. Differences from unary: a send
  ///   larger than the send limit fails with RESOURCE_EXHAUSTED before it is written; a batch of
  ///   replies larger than the receive limit breaks the stream (UNAVAILABLE for every send on it)
  ///   rather than failing one send with RESOURCE_EXHAUSTED, so keep the receive limit at least
  ///   the server's message limit. Sends complete through the Client's loop: besides the
  ///   handler's own executor, the Client's io_context must stay alive (and be run) until every
  ///   send has completed, even one whose handler runs elsewhere. A Client's streams end once it
  ///   is destroyed and their sends have completed.
  ///
  /// Which to use (docs/benchmarks.md, two processes): once its stream is open, Exchange is
  /// faster at every depth measured: p50 110 against 216 µs at 1 in flight, 178,000 sends/s at
  /// 4,096 in flight against unary's 24,000 at 64, and a 10,000-endpoint fan-out 10× unary's. Unary
  /// stays the default for what it keeps simple: a one-off send (no stream to open), any server
  /// that implements only `Send`, and completions bound to another executor that need not wait
  /// for the Client's loop. Choose Exchange for a scheduler that talks to the same workers
  /// again and again.
  Transport transport = Transport::unary;

  /// Largest message accepted or sent, in bytes. A channel argument setting
  /// GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH or GRPC_ARG_MAX_SEND_MESSAGE_LENGTH overrides it.
  int max_message_bytes = 4 * 1024 * 1024;

  /// Deepest nesting of arrays and objects accepted in a reply. A deeper reply fails the send
  /// with INTERNAL ("server sent a reply nested deeper than N") instead of being parsed, so a
  /// hostile or broken server cannot exhaust the caller's stack. Same default as the server's.
  std::size_t max_json_depth = 64;

  /// Extra gRPC channel arguments applied to every channel the Client opens (one per target),
  /// e.g. keepalive (`SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ...)`), reconnect backoff, a load
  /// balancing policy or `SetMaxReceiveMessageSize`. Read when a target's channel is created.
  /// A service config set here (`SetServiceConfigJSON`) replaces the one made from `retry`.
  grpc::ChannelArguments channel_arguments;

  /// TLS, or mutual TLS with ClientTls::certificate_chain and private_key, for every target
  /// (docs/security.md). None: plain text. A server that expects TLS refuses a plain-text client
  /// (UNAVAILABLE), as does a TLS client a server whose certificate its roots do not trust. The
  /// Client's constructor throws std::invalid_argument when only one of ClientTls::certificate_chain
  /// and ClientTls::private_key is set.
  std::optional<ClientTls> tls;

  /// Sent with every call as the metadata `authorization: Bearer <token>`: the server's scheduler
  /// token, or one endpoint's token (AttachOptions::token), which reaches that task instance only.
  /// One Client speaks with one token; use a Client per identity. Sent without TLS to a target
  /// that is not loopback or a Unix socket, it logs a warning (the token crosses the network in
  /// clear text). Empty: no metadata.
  std::string token;

  /// Which calls gRPC retries after UNAVAILABLE (none by default): see RetryPolicy.
  RetryPolicy retry;
};

/// A Client's handle to one target (Client::connect): sends through it skip the Client's lookup
/// of the target string and go straight to that target's gRPC channel (and, with
/// Transport::exchange, its Exchange stream). Cheap to copy; copies share the target.
///
/// send(), pull(), get_state() and watch() behave exactly as the Client's to the same target: same
/// completion, statuses, deadlines, cancellation and default executor (the Client's loop).
///
/// Lifetimes: a Connection may outlive its Client. The target's channel lives as long as a
/// Connection or a send uses it, and sends made through a Connection after its Client was
/// destroyed still work (with Transport::exchange, each such send opens a stream that ends with
/// it), under the Client's rule that the io_context stays alive until their completions have run.
///
/// Thread safety: every member may be called from any thread, on one Connection or on copies.
class Connection {
 public:
  /// The executor of the Client's Loop: where completions run when a handler has none of its own.
  using executor_type = LoopExecutor;

  /// As Client::send(target, key, payload, options, token), to this Connection's target.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto send(const TaskInstanceKey& key, const boost::json::object& payload, SendOptions options,
            CompletionToken&& token = {}) const {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, boost::json::object)>(
        [this](auto handler, const TaskInstanceKey& at, std::string json, const SendOptions& with) {
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_send(at, std::move(json), with, detail::loop_executor_of(executor),
                     detail::SendHandler(std::move(handler)));
        },
        token, key, encode_payload(payload), options);
  }

  /// send() with default SendOptions.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto send(const TaskInstanceKey& key, const boost::json::object& payload, CompletionToken&& token = {}) const {
    return send(key, payload, SendOptions{}, std::forward<CompletionToken>(token));
  }

  /// As Client::pull(target, query, token), to this Connection's target.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto pull(const XComQuery& query, CompletionToken&& token = {}) const {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, std::vector<XCom>)>(
        [this](auto handler, const XComQuery& what) {
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_pull(what, detail::loop_executor_of(executor), detail::PullHandler(std::move(handler)));
        },
        token, query);
  }

  /// As Client::get_state(target, key, options, token), to this Connection's target.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto get_state(const TaskInstanceKey& key, GetStateOptions options, CompletionToken&& token = {}) const {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, TaskStateInfo)>(
        [this](auto handler, const TaskInstanceKey& of, const GetStateOptions& with) {
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_get_state(of, with, detail::loop_executor_of(executor), detail::GetStateHandler(std::move(handler)));
        },
        token, key, options);
  }

  /// get_state() with default GetStateOptions.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto get_state(const TaskInstanceKey& key, CompletionToken&& token = {}) const {
    return get_state(key, GetStateOptions{}, std::forward<CompletionToken>(token));
  }

  /// As Client::stats(target, options, token), to this Connection's target.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto stats(StatsOptions options, CompletionToken&& token = {}) const {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, ServerStats)>(
        [this](auto handler, const StatsOptions& with) {
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_stats(with, detail::loop_executor_of(executor), detail::StatsHandler(std::move(handler)));
        },
        token, options);
  }

  /// As Client::list(target, query, token), to this Connection's target.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto list(const ListQuery& query, CompletionToken&& token = {}) const {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, EndpointPage)>(
        [this](auto handler, const ListQuery& what) {
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_list(what, detail::loop_executor_of(executor), detail::ListHandler(std::move(handler)));
        },
        token, query);
  }

  /// As Client::watch(target, query), on this Connection's target.
  [[nodiscard]] Watch watch(const WatchQuery& query) const;

  /// The gRPC target this Connection sends to, as given to Client::connect.
  [[nodiscard]] const std::string& target() const noexcept;

  /// The executor completions run on when a handler has none of its own. Any thread.
  [[nodiscard]] executor_type get_executor() const noexcept { return executor_; }

 private:
  friend class Client;
  Connection(std::shared_ptr<detail::TargetChannel> channel, LoopExecutor executor) noexcept;
  [[nodiscard]] static std::string encode_payload(const boost::json::object& payload);
  void start_send(const TaskInstanceKey& key, std::string payload_json, const SendOptions& options,
                  const LoopExecutor* loop, detail::SendHandler handler) const;
  void start_pull(const XComQuery& query, const LoopExecutor* loop, detail::PullHandler handler) const;
  void start_get_state(const TaskInstanceKey& key, const GetStateOptions& options, const LoopExecutor* loop,
                       detail::GetStateHandler handler) const;
  void start_stats(const StatsOptions& options, const LoopExecutor* loop, detail::StatsHandler handler) const;
  void start_list(const ListQuery& query, const LoopExecutor* loop, detail::ListHandler handler) const;

  std::shared_ptr<detail::TargetChannel> channel_;
  LoopExecutor executor_;
};

/// Sends payloads to endpoints on any number of servers, reusing one gRPC channel per target, and
/// reads their XComs (pull(), watch()) and task-instance states (get_state()) over the same channels.
///
/// Replies arrive on gRPC's threads and complete each operation on its handler's associated
/// executor (the Client's Loop when the handler has none): with a Loop's executor, the thread
/// that receives a reply runs the waiting coroutine itself when the loop is idle.
///
/// Thread safety: send(), pull(), get_state(), watch() and connect() may be called from any thread.
///
/// A send made inside a completion that one of gRPC's threads runs (a borrowed loop) starts its
/// RPC when that completion returns, so that the loop's run stays short: never block a
/// completion on the outcome of a send it made (as with any Asio handler, never block one at
/// all); `rx::requests` takes care of this itself.
///
/// Lifetimes: the Client and its io_context may be destroyed as soon as a completion handler
/// has run (even while it still runs). Destroying the Client with calls in flight is allowed:
/// each still completes exactly once, with its real status (or CANCELLED when cancelled), on
/// its executor; the executor's execution context (the io_context) must then stay alive until
/// those completions have run (with Transport::exchange, the Client's io_context too). The same
/// holds for pulls and get_states; a Watch has rules of its own (rx::Watch), and may outlive the
/// Client.
class Client {
 public:
  /// The executor of the Client's Loop: where completions run when a handler has none of its own.
  using executor_type = LoopExecutor;
  /// The type-erased completion handler of a send.
  using SendHandler = detail::SendHandler;

  /// A client whose completions default to `loop`, which must outlive it. Throws
  /// std::invalid_argument for a ClientOptions::retry that gRPC would refuse (see RetryPolicy).
  explicit Client(Loop& loop, ClientOptions options = {});
  /// A client with a Loop of its own over `context`, which must outlive it.
  explicit Client(boost::asio::io_context& context, ClientOptions options = {});
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  /// Delivers `payload` to the endpoint `key` of the server at `target` (any gRPC target:
  /// "host:port", "unix:/path") and waits for the task's reply. `payload` is serialised before
  /// send() returns, whatever the token: the caller may change or destroy it right after.
  ///
  /// Completion signature: `void(grpc::Status, boost::json::object reply)`; the reply is the
  /// object the task pushed when the status is OK, empty otherwise. With `co_await` it yields a
  /// `std::tuple<grpc::Status, boost::json::object>`; see docs/protocol.md for the statuses.
  /// Besides the server's, a send fails with UNAVAILABLE when the server cannot be reached
  /// (unless `options.wait_for_ready`) or cut the call short without an answer (a server shutting
  /// down; CANCELLED is only ever the caller's own cancellation), DEADLINE_EXCEEDED past `options.timeout`,
  /// RESOURCE_EXHAUSTED for a reply over the receive limit and INTERNAL for a reply that is not a
  /// JSON object or nests deeper than ClientOptions::max_json_depth.
  ///
  /// Cancellation (any type): cancels the RPC (`ClientContext::TryCancel`); the operation then
  /// completes with CANCELLED, unless the reply was already on its way. The server drops the
  /// request, or if the task holds it, the task's push reports errc::request_cancelled. With
  /// Transport::exchange the send completes with CANCELLED at once, unless its reply has arrived,
  /// and a cancel frame carries the cancellation to the server, with the same effect there.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto send(std::string_view target, const TaskInstanceKey& key, const boost::json::object& payload,
            SendOptions options, CompletionToken&& token = {}) {
    // The payload is serialised here, once, whatever the token: a lazy token (deferred,
    // use_awaitable) then stores the JSON text instead of a copy of the object, and the caller's
    // object may change or go as soon as send() returns.
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, boost::json::object)>(
        [this](auto handler, std::string_view to, const TaskInstanceKey& at, std::string json,
               const SendOptions& with) {
          // Found here, on the handler's own type, so that the common case (a Loop's executor,
          // bare or inside any_io_executor) needs no type-erased executor.
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_send(to, at, std::move(json), with, detail::loop_executor_of(executor),
                     SendHandler(std::move(handler)));
        },
        token, std::string(target), key, encode_payload(payload), options);
  }

  /// send() with default SendOptions.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto send(std::string_view target, const TaskInstanceKey& key, const boost::json::object& payload,
            CompletionToken&& token = {}) {
    return send(target, key, payload, SendOptions{}, std::forward<CompletionToken>(token));
  }

  /// Pulls the XComs `query` names from the server at `target` (any gRPC target, as for send()):
  /// the XCom `query.key` of one task instance, or with `query.all_map_indexes` of every map index
  /// of the task that has it, in map-index order; with `query.wait`, the server waits until they
  /// exist (`query.min_count` of them for all map indexes). Always one unary `Pull` call, whatever
  /// ClientOptions::transport. `query` is copied before pull() returns.
  ///
  /// Completion signature: `void(grpc::Status, std::vector<rx::XCom>)`; the XComs when the
  /// status is OK, none otherwise. With `co_await` it yields a
  /// `std::tuple<grpc::Status, std::vector<rx::XCom>>`. `query.timeout` is the call's deadline
  /// (none when `std::nullopt`), and so bounds a wait: past it the pull fails with
  /// DEADLINE_EXCEEDED. Besides the server's statuses (INVALID_ARGUMENT for an incomplete query,
  /// NOT_FOUND for a missing XCom when not waiting, UNAVAILABLE when it shuts down), a pull fails
  /// as a send does with UNAVAILABLE (unreachable, or cut short by the server) and
  /// RESOURCE_EXHAUSTED (a response over the receive limit), and with INTERNAL for a response the
  /// query rules out: other than exactly one XCom for a pull of one task instance, or fewer than
  /// `query.min_count` (at least one) for a waiting pull of all map indexes.
  ///
  /// Cancellation (any type): cancels the RPC (`ClientContext::TryCancel`); the operation then
  /// completes with CANCELLED, unless the response was already on its way. A waiting server stops
  /// waiting.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto pull(std::string_view target, const XComQuery& query, CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, std::vector<XCom>)>(
        [this](auto handler, std::string_view to, const XComQuery& what) {
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_pull(to, what, detail::loop_executor_of(executor), detail::PullHandler(std::move(handler)));
        },
        token, std::string(target), query);
  }

  /// The state of the task instance `key` on the server at `target`: one unary `GetState` call,
  /// whatever ClientOptions::transport.
  ///
  /// Completion signature: `void(grpc::Status, rx::TaskStateInfo)`; the state when the status is
  /// OK, a default TaskStateInfo otherwise. With `co_await` it yields a
  /// `std::tuple<grpc::Status, rx::TaskStateInfo>`. Besides the server's NOT_FOUND (it knows
  /// nothing of the task instance), it fails as a send does (UNAVAILABLE, DEADLINE_EXCEEDED past
  /// `options.timeout`, RESOURCE_EXHAUSTED), and with INTERNAL when the server sends a state this
  /// client does not know (an unset state, or a newer server's), naming its wire value.
  ///
  /// Cancellation (any type): cancels the RPC (`ClientContext::TryCancel`); the operation then
  /// completes with CANCELLED, unless the response was already on its way.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto get_state(std::string_view target, const TaskInstanceKey& key, GetStateOptions options,
                 CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, TaskStateInfo)>(
        [this](auto handler, std::string_view to, const TaskInstanceKey& of, const GetStateOptions& with) {
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_get_state(to, of, with, detail::loop_executor_of(executor),
                          detail::GetStateHandler(std::move(handler)));
        },
        token, std::string(target), key, options);
  }

  /// get_state() with default GetStateOptions (a 30 s deadline).
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto get_state(std::string_view target, const TaskInstanceKey& key, CompletionToken&& token = {}) {
    return get_state(target, key, GetStateOptions{}, std::forward<CompletionToken>(token));
  }

  /// The counters of the server at `target` (its `Stats` RPC): one unary call, whatever
  /// ClientOptions::transport. Render them with rx::to_text or rx::to_prometheus.
  ///
  /// Completion signature: `void(grpc::Status, rx::ServerStats)`; the counters when the status is
  /// OK, an empty ServerStats otherwise. Fails as get_state does (UNAVAILABLE, DEADLINE_EXCEEDED
  /// past `options.timeout`, RESOURCE_EXHAUSTED), and with UNIMPLEMENTED from a server older than
  /// the `Stats` RPC.
  ///
  /// Cancellation (any type): cancels the RPC (`ClientContext::TryCancel`); the operation then
  /// completes with CANCELLED, unless the response was already on its way.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto stats(std::string_view target, StatsOptions options, CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, ServerStats)>(
        [this](auto handler, std::string_view to, const StatsOptions& with) {
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_stats(to, with, detail::loop_executor_of(executor), detail::StatsHandler(std::move(handler)));
        },
        token, std::string(target), options);
  }

  /// stats() with default StatsOptions (a 30 s deadline).
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto stats(std::string_view target, CompletionToken&& token = {}) {
    return stats(target, StatsOptions{}, std::forward<CompletionToken>(token));
  }

  /// One page of the endpoints hosted by the server at `target` (its `List` RPC), filtered by
  /// `query`, in key order; pass the page's `next_page_token` as `query.page_token` for the next
  /// one. One unary call, whatever ClientOptions::transport; `query` is copied before list()
  /// returns, and `query.timeout` is the call's deadline.
  ///
  /// Completion signature: `void(grpc::Status, rx::EndpointPage)`; the page when the status is OK,
  /// an empty one otherwise. Besides the server's INVALID_ARGUMENT (a page token it did not make),
  /// fails as get_state does, with UNIMPLEMENTED from a server older than the `List` RPC, and with
  /// INTERNAL when an endpoint's state is one this client does not know.
  ///
  /// Cancellation (any type): cancels the RPC (`ClientContext::TryCancel`); the operation then
  /// completes with CANCELLED, unless the response was already on its way.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto list(std::string_view target, const ListQuery& query, CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, EndpointPage)>(
        [this](auto handler, std::string_view to, const ListQuery& what) {
          const auto executor = boost::asio::get_associated_executor(handler, executor_);
          start_list(to, what, detail::loop_executor_of(executor), detail::ListHandler(std::move(handler)));
        },
        token, std::string(target), query);
  }

  /// Opens a Watch stream on the server at `target` for what `query` selects, and returns its
  /// handle; take the events with Watch::next(). The stream starts at once and has no deadline:
  /// it lives until the server ends it, the connection breaks, or the Watch is cancelled or
  /// destroyed (see rx::Watch for its ends, flow control and lifetimes). Always a stream of its
  /// own, whatever ClientOptions::transport. Any thread.
  [[nodiscard]] Watch watch(std::string_view target, const WatchQuery& query);

  /// A handle to `target` (any gRPC target, as for send()) whose sends skip the lookup of the
  /// target string; sends through it share this Client's channel (and streams) to `target`.
  /// Creates the channel if this is the target's first use; connects nothing by itself (the
  /// first send does, as gRPC channels connect lazily). Any thread.
  [[nodiscard]] Connection connect(std::string_view target);

  /// The Client's loop executor (see executor_type). Any thread.
  [[nodiscard]] executor_type get_executor() const noexcept;

 private:
  // The JSON text send() puts on the wire for `payload`.
  [[nodiscard]] static std::string encode_payload(const boost::json::object& payload);
  // `loop` is the handler's associated executor when it is a Loop's, else null.
  void start_send(std::string_view target, const TaskInstanceKey& key, std::string payload_json,
                  const SendOptions& options, const LoopExecutor* loop, SendHandler handler);
  void start_pull(std::string_view target, const XComQuery& query, const LoopExecutor* loop,
                  detail::PullHandler handler);
  void start_get_state(std::string_view target, const TaskInstanceKey& key, const GetStateOptions& options,
                       const LoopExecutor* loop, detail::GetStateHandler handler);
  void start_stats(std::string_view target, const StatsOptions& options, const LoopExecutor* loop,
                   detail::StatsHandler handler);
  void start_list(std::string_view target, const ListQuery& query, const LoopExecutor* loop,
                  detail::ListHandler handler);

  std::unique_ptr<detail::ClientImpl> impl_;
  LoopExecutor executor_;
};

}  // namespace rx

// A gRPC server hosting many task-instance endpoints on one port and one loop.
#pragma once

#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/security.hpp>
#include <remote_xcomm/stats.hpp>
#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace rx {

namespace detail {
class ServerImpl;
using ShutdownHandler = boost::asio::any_completion_handler<void(boost::system::error_code)>;
void initiate_shutdown(const std::shared_ptr<ServerImpl>& impl, std::chrono::steady_clock::time_point deadline,
                       ShutdownHandler handler);
}  // namespace detail

/// How a Server listens and what it accepts.
struct ServerOptions {
  /// Address to listen on. Loopback by default; "0.0.0.0" or "::" to accept other hosts, an
  /// explicit choice: listening on an address other than loopback without `tls` logs a warning
  /// (rx::set_log_sink), since requests, replies, XComs and tokens would cross the network in
  /// clear text.
  std::string host = "127.0.0.1";
  /// Port to listen on; 0 picks a free port, which Server::port() reports after start().
  std::uint16_t port = 0;
  /// A gRPC listening address that replaces `host` and `port` when not empty: "unix:/run/rx.sock"
  /// (a Unix domain socket: a stale socket file at the path is replaced, and the file is removed
  /// at shutdown), "unix-abstract:rx" (Linux's abstract namespace: no file), or "host:port".
  /// Clients on the same host reach a Unix socket with the same string as their target; it
  /// skips TCP's loopback stack (docs/benchmarks.md measures the difference).
  std::string address;
  /// Largest request gRPC accepts, in bytes; a larger one fails with RESOURCE_EXHAUSTED.
  int max_message_bytes = 4 * 1024 * 1024;
  /// Deepest nesting of a payload's arrays and objects, counting the top object; deeper fails with
  /// INVALID_ARGUMENT. Like every limit below, checked while the request is decoded or parsed, so
  /// nothing past the limit is stored; each refusal's message names the limit
  /// (docs/protocol.md, "Limits", has the table).
  std::size_t max_json_depth = 64;
  /// Most values a payload may hold in all: the top object, every member's value and every array
  /// element, at every level. A value costs the server 16 to 48 bytes however short its text
  /// (`[0,0,…]` is two bytes an element), so this bounds a payload's memory at a few times
  /// max_message_bytes. More fails with INVALID_ARGUMENT.
  std::size_t max_json_values = 1'000'000;
  /// Longest string or member name in a payload, in bytes once its escapes are decoded; longer
  /// fails with INVALID_ARGUMENT. Independent of max_message_bytes: raise both for large values.
  std::size_t max_json_string_bytes = std::size_t{16} << 20;
  /// Longest key field a request may carry, in bytes: dag_id, task_id, run_id (of a key, a Pull,
  /// a Watch or a List filter) and an XCom key; a List page_token may be 8 times as long. Longer
  /// fails with INVALID_ARGUMENT naming the field (an Exchange frame: that frame's reply). Airflow
  /// limits its ids to 250 characters and XCom keys to 512, at most 4 bytes each in UTF-8.
  std::size_t max_key_field_bytes = 1024;
  /// Most frames one ExchangeRequest batch may carry. A batch with more is not taken: the stream
  /// reads no more and, once the requests read before it are answered, ends with
  /// RESOURCE_EXHAUSTED.
  std::size_t max_exchange_batch_frames = 16384;
  /// Most requests that may wait in one endpoint's queue (backpressure, docs/endpoints.md). The
  /// request its task holds does not count, nor does one handed straight to a task waiting in
  /// get() or next(), or one that starts an idle task. A request arriving at a full queue fails at
  /// once with RESOURCE_EXHAUSTED ("endpoint KEY has N requests waiting, the server's limit
  /// (ServerOptions::max_queued_requests)") without reaching the task; the endpoint goes on
  /// serving its queue. The default is far more than an endpoint can serve within a caller's
  /// deadline (it serves one request at a time: 10,000 requests of 3 ms each take the client's
  /// default 30 s), so it refuses only a runaway sender, and keeps one flooded endpoint to a tenth
  /// of max_requests_in_flight. 0 accepts a request only when the task is waiting for it or idle;
  /// 2^32 - 1 or more means no limit.
  std::size_t max_queued_requests = 10'000;
  /// Most requests the whole server holds at once: received and not yet answered (on their way to
  /// the loop, queued, or held by tasks), over all endpoints. A request arriving over the limit
  /// fails at once with RESOURCE_EXHAUSTED ("server has N requests in flight, its limit
  /// (ServerOptions::max_requests_in_flight)"), on gRPC's thread, before its payload is parsed and
  /// without reaching the loop. This is what bounds the server's memory under overload: a request
  /// in flight costs its payload plus gRPC's state for the call, about 17 KiB with a small payload
  /// (measured with gRPC 1.51; docs/protocol.md, "Limits"), so the default lets a saturated server
  /// hold about 1.7 GB: a ceiling against runaway growth that leaves room for one request to each
  /// of 100,000 endpoints, not a memory budget. Lower it to fit the host, and further when
  /// payloads are large. The count is read with one relaxed atomic operation per request.
  std::size_t max_requests_in_flight = 100'000;
  /// Requests one Exchange stream may have read and not yet answered. At the limit the stream
  /// stops reading until replies go out, so that HTTP/2 flow control holds its client back
  /// rather than the server's memory growing.
  std::size_t max_stream_requests_in_flight = 16384;
  /// Once every request of a shutting-down server has its status, how long gRPC may take to
  /// deliver the last replies before it cancels what is still on the wire.
  std::chrono::milliseconds shutdown_grace{5000};
  /// Called on the loop with an exception that ended a task's invocation and that no caller
  /// learned of: the task threw after its last push, or before get() with no request queued.
  /// Not reported: an exception while a request is held (that request fails with INTERNAL
  /// instead); a `system_error` whose code the caller already has as its status
  /// (errc::request_cancelled, reply_not_json, reply_too_large, endpoint_closed) or that says the
  /// task was cancelled (operation_aborted); anything after detach or shutdown closed the endpoint.
  /// Without a hook, the exception is rethrown from the `run()` of the loop's io_context, as
  /// Asio does with a handler's exception: catch it there (and run again) to keep serving. An
  /// exception thrown by the hook itself is rethrown there too.
  std::function<void(const TaskInstanceKey&, std::exception_ptr)> on_task_error;

  // ---- Security (docs/security.md) ----

  /// TLS, or mutual TLS with ServerTls::client_ca. None: plain text (fine on loopback and Unix
  /// sockets; elsewhere start() logs a warning).
  std::optional<ServerTls> tls;
  /// Not empty: every call must carry the metadata `authorization: Bearer <token>` with this
  /// token, which reaches every RPC and task instance, or an endpoint's own token
  /// (AttachOptions::token), which reaches that task instance's Send, Exchange frames, Pull,
  /// GetState and Watch only. No token: UNAUTHENTICATED; a token that does not reach what the call
  /// asks for: PERMISSION_DENIED. Checked on gRPC's thread before the request's payload is parsed;
  /// compared in constant time (as SHA-256 digests); never logged, never shown to task code. The
  /// health and reflection services stay open. Empty (the default): no checks.
  std::string scheduler_token;

  // ---- Introspection (docs/protocol.md, "Health, reflection, List and Stats") ----

  /// Serve gRPC's standard health checking service (`grpc.health.v1.Health`): the whole server
  /// ("") and "remote_xcomm.v1.RemoteXComm" answer SERVING while the server serves, NOT_SERVING
  /// from the moment its shutdown begins (so that load balancers move away during the grace
  /// period). gRPC's own implementation (callback API); off: the service is not registered.
  bool health_check_service = true;
  /// Serve gRPC's server reflection (`grpc.reflection.v1alpha.ServerReflection`, from
  /// libgrpc++_reflection), so that generic tools (grpcurl, grpc_cli, Postman) list and call the
  /// services without the proto file. gRPC implements it with its synchronous API, which gives
  /// the server a small pool of threads of its own for reflection calls; turn it off where that
  /// matters. (Linking libgrpc++_reflection, as this library does, registers reflection for
  /// every gRPC server the process builds; `false` removes it from this one.)
  bool reflection = true;

  // ---- XComs (docs/xcoms.md) ----

  /// How long a detached task instance's XComs and state stay pullable after its endpoint was
  /// detached (or the server shut down, or, with a store, after a restart loaded them). 0 forgets
  /// them at detach.
  std::chrono::milliseconds xcom_retention{std::chrono::hours(1)};
  /// Most bytes of XComs the server retains (keys, values and a fixed cost per XCom). At the bound
  /// the XComs of detached task instances are evicted, oldest detach first; if that is not enough,
  /// a push is refused (xcom_push: errc::xcom_limit_reached; a reply still reaches its caller but
  /// is not recorded as return_value). A Pull of an evicted XCom gets NOT_FOUND.
  std::size_t max_retained_xcom_bytes = std::size_t{256} << 20;
  /// The event history Watch replays from (from_start, after_sequence): at most this many events
  /// and bytes, the oldest dropped first. 0 events: no history (watches start from now).
  std::size_t xcom_history_events = 65'536;
  /// The byte bound of the same history (keys, values and a fixed cost per event).
  std::size_t xcom_history_bytes = std::size_t{64} << 20;
  /// Events a Watch subscriber may have waiting to be written. A subscriber that falls further
  /// behind is ended with RESOURCE_EXHAUSTED (it may resume after the last sequence it got), so
  /// that it neither grows the server's memory nor slows the others.
  std::size_t watch_buffer_events = 4096;
  /// Where XComs are also written, to outlive this server: rx::make_memory_store() (a later
  /// Server in this process), rx::open_sqlite_store() (a restarted process). Loaded by start().
  /// None: XComs live in this server's memory only. With a store, a push (and a reply's
  /// return_value) is acknowledged only once the store has committed it.
  std::shared_ptr<XComStore> xcom_store;
};

/// Options of one Server::attach.
struct AttachOptions {
  /// The task instance's attempt, as Airflow's `try_number`. Attaching starts a new attempt, which
  /// clears the XComs kept from earlier ones (Airflow clears them on retry), unless `try_number`
  /// equals the attempt the server keeps for the key: then it resumes that attempt and keeps them
  /// (a restarted worker serving the same try). None: the kept attempt + 1, or 1.
  std::optional<std::uint32_t> try_number;
  /// The endpoint's own bearer token (docs/security.md): a caller presenting it reaches this task
  /// instance's requests (Send, Exchange frames), XComs (Pull of this task instance), GetState and
  /// Watch, and nothing else; valid while the endpoint is attached. Needs
  /// ServerOptions::scheduler_token (attach throws std::invalid_argument without it). Empty: the
  /// endpoint is reached with the scheduler token only.
  std::string token;
};

/// Hosts endpoints, each addressed by a TaskInstanceKey, behind the `remote_xcomm.v1.RemoteXComm`
/// gRPC service.
///
/// Requests arrive on gRPC's callback threads, which hand each one to the Loop (running it
/// themselves when the loop is idle, see rx::LoopExecutor). Endpoint state and task code run on
/// the Loop only. Each endpoint runs its task — a coroutine taking an rx::Endpoint — whenever a
/// request waits and the task is idle (docs/endpoints.md).
///
/// Shutdown (docs/endpoints.md, "Shutdown"): the server stops accepting (new requests get
/// UNAVAILABLE "server is shutting down"), lets held and queued requests finish until a
/// deadline, then closes every endpoint (what is left fails with UNAVAILABLE, tasks are
/// cancelled) and lets gRPC drain. gRPC's drain waits for calls that only the loop finishes, so
/// it runs on a thread of its own, never on the loop; a started server holds work on its
/// io_context until gRPC has drained, so `io_context::run()` returns only after that. Keep the
/// io_context running (and alive) until a started server's shutdown has completed.
///
/// Thread safety: every member may be called from any thread, the loop included, and
/// concurrently; shutdown is idempotent.
class Server {
 public:
  /// The executor of the Loop the endpoints and their tasks run on.
  using executor_type = LoopExecutor;
  /// A task: called with the endpoint each time an invocation starts (docs/endpoints.md); the
  /// coroutine it returns runs on the loop.
  using Task = detail::EndpointState::Task;

  /// A server whose endpoints run on `loop`, which must outlive it.
  explicit Server(Loop& loop, ServerOptions options = {});
  /// A server with a Loop of its own over `context`, which must outlive it.
  explicit Server(boost::asio::io_context& context, ServerOptions options = {});
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  /// Never throws, on any thread. A server still serving is shut down at once (deadline now):
  /// queued and held requests fail with UNAVAILABLE and tasks are cancelled. On a thread that is
  /// not running the loop, this blocks like shutdown(). On a thread running the loop (the last
  /// `shared_ptr<Server>` dropped by a task), it cannot wait: it starts the shutdown, which
  /// finishes in the background on a thread of its own once the loop has run its part, and
  /// returns; nothing touches the destroyed Server afterwards. A server destroyed while its
  /// io_context is not being run still shuts down: the endpoints close inline when the loop is
  /// idle, and gRPC's drain, needing nothing else from the loop, completes; the work guard it
  /// held is released then.
  ~Server();

  /// Binds and starts serving (after loading the XCom store's XComs, if any). Throws
  /// std::runtime_error if the address cannot be bound or the store cannot be read, and
  /// std::logic_error if called twice or after shutdown began.
  void start();

  /// The bound port (after start()); 0 when listening on a Unix domain socket.
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// A client target for this server (after start()): "host:port" (IPv6 hosts in brackets) with
  /// the bound port, or ServerOptions::address itself for a Unix domain socket.
  [[nodiscard]] std::string target() const;

  /// Hosts `task` at `key`. Returns false, changing nothing, if `key` is already attached or the
  /// server is shutting down. Requests may arrive as soon as this returns. Throws
  /// std::invalid_argument for an AttachOptions::token on a server without a scheduler token.
  [[nodiscard]] bool attach(TaskInstanceKey key, Task task);
  /// As above, with the attempt it starts or resumes (AttachOptions::try_number).
  [[nodiscard]] bool attach(TaskInstanceKey key, Task task, AttachOptions options);
  /// Stops hosting `key`: its queued and held requests fail with UNAVAILABLE and its running
  /// task is cancelled; its state becomes detached and its XComs stay pullable for
  /// ServerOptions::xcom_retention. Returns false if nothing was attached there.
  bool detach(const TaskInstanceKey& key);
  /// Number of attached endpoints.
  [[nodiscard]] std::size_t endpoint_count() const;
  /// Requests received and not yet answered, over Send and every Exchange stream: what
  /// ServerOptions::max_requests_in_flight bounds. Any thread; a snapshot (one relaxed load), for
  /// monitoring and tests.
  [[nodiscard]] std::size_t requests_in_flight() const noexcept;
  /// A snapshot of the server's counters: what the `Stats` RPC answers (calls by method and status,
  /// latency histograms, requests in flight and queued, endpoints, open streams). Any thread; it
  /// runs on the loop (inline when the loop is idle, as endpoint_count() does) and is linear in the
  /// number of endpoints (it sums their queues). Render it with rx::to_text or rx::to_prometheus.
  [[nodiscard]] ServerStats stats() const;

  /// Shuts down at once: stops accepting, fails every queued or held request with UNAVAILABLE,
  /// cancels running tasks, and blocks until gRPC has finished every call. Idempotent; safe to
  /// call from several threads (each returns once the shutdown has completed). It needs no
  /// thread to run the io_context: loop work runs on the caller's thread when the loop is idle.
  ///
  /// On a thread running the loop it cannot block (only the loop finishes calls): it starts
  /// the same shutdown and returns at once, without throwing; the calls get their statuses once
  /// the current loop work returns. Use the asynchronous form there to learn when it is done.
  void shutdown();

  /// Shuts down gracefully: stops accepting (new requests get UNAVAILABLE), lets held and queued
  /// requests finish until `deadline`, then closes every endpoint (what is left fails with
  /// UNAVAILABLE "server is shutting down", waiting get()s end with errc::endpoint_closed, tasks
  /// are cancelled), and completes once gRPC has finished every call. It finishes early when
  /// every request has its status before the deadline. Callable from any thread, the loop
  /// included; if a shutdown is already under way, this one joins it (an earlier deadline
  /// wins); once shut down, it completes at once. A server never started completes at once.
  ///
  /// Completion signature: `void(boost::system::error_code)`: success, or
  /// `asio::error::operation_aborted` when a shutdown operation on this server was cancelled
  /// (the server is shut down all the same). The handler runs on its associated executor,
  /// by default this server's executor. With the default token (`asio::deferred`), nothing
  /// happens until the returned operation is awaited or invoked.
  ///
  /// Per-Operation Cancellation: terminal and partial. Cancelling skips the rest of the grace
  /// period: the remaining requests are cancelled at once (UNAVAILABLE) and the operation
  /// completes, with `operation_aborted`, once gRPC has drained. It never leaves the server
  /// half shut down.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto shutdown(std::chrono::steady_clock::time_point deadline, CompletionToken&& token = CompletionToken()) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [impl = impl_](detail::ShutdownHandler handler, std::chrono::steady_clock::time_point at) {
          detail::initiate_shutdown(impl, at, std::move(handler));
        },
        token, deadline);
  }

  /// As above, with the deadline `grace` after the operation is initiated.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto shutdown(std::chrono::steady_clock::duration grace, CompletionToken&& token = CompletionToken()) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [impl = impl_](detail::ShutdownHandler handler, std::chrono::steady_clock::duration after) {
          detail::initiate_shutdown(impl, std::chrono::steady_clock::now() + after, std::move(handler));
        },
        token, grace);
  }

  /// The loop's executor: where tasks run and, by default, where shutdown() completes. Any thread.
  [[nodiscard]] executor_type get_executor() const noexcept;

 private:
  // Shared with a shutdown under way, which outlives the Server when it was destroyed from the
  // loop: the gRPC service object must outlive the grpc::Server that calls it.
  std::shared_ptr<detail::ServerImpl> impl_;
};

}  // namespace rx

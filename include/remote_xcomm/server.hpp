// A gRPC server hosting many task-instance endpoints on one port and one loop.
#pragma once

#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/task_instance_key.hpp>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace rx {

namespace detail {
class ServerImpl;
}

/// How a Server listens and what it accepts.
struct ServerOptions {
  /// Address to listen on. Loopback by default; "0.0.0.0" or "::" to accept other hosts.
  std::string host = "127.0.0.1";
  /// Port to listen on; 0 picks a free port, which Server::port() reports after start().
  std::uint16_t port = 0;
  /// Largest request gRPC accepts, in bytes; a larger one fails with RESOURCE_EXHAUSTED.
  int max_message_bytes = 4 * 1024 * 1024;
  /// Deepest nesting of a payload's arrays and objects; deeper fails with INVALID_ARGUMENT.
  std::size_t max_json_depth = 64;
  /// How long shutdown() lets calls already answered drain before cancelling the rest.
  std::chrono::milliseconds shutdown_grace{5000};
};

/// Hosts endpoints, each addressed by a TaskInstanceKey, behind the `remote_xcomm.v1.RemoteXComm`
/// gRPC service.
///
/// Requests arrive on gRPC's callback threads, which hand each one to the Loop (running it
/// themselves when the loop is idle, see rx::LoopExecutor). Endpoint state and task code run on
/// the Loop only. Each endpoint runs its task — a coroutine taking an rx::Endpoint — whenever a
/// request waits and the task is idle (docs/endpoints.md).
///
/// Thread safety: every member may be called from any thread, except that shutdown() (and so the
/// destructor of a started server) must not be called from a thread running the loop.
class Server {
 public:
  using executor_type = LoopExecutor;
  using Task = detail::EndpointState::Task;

  /// A server whose endpoints run on `loop`, which must outlive it.
  explicit Server(Loop& loop, ServerOptions options = {});
  /// A server with a Loop of its own over `context`, which must outlive it.
  explicit Server(boost::asio::io_context& context, ServerOptions options = {});
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  /// Shuts down if still serving.
  ~Server();

  /// Binds and starts serving. Throws std::runtime_error if the address cannot be bound.
  void start();

  /// The bound port (after start()).
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// "host:port" (IPv6 hosts in brackets), usable as a client target (after start()).
  [[nodiscard]] std::string target() const;

  /// Hosts `task` at `key`. Returns false, changing nothing, if `key` is already attached.
  /// Requests may arrive as soon as this returns.
  [[nodiscard]] bool attach(TaskInstanceKey key, Task task);
  /// Stops hosting `key`: its queued and held requests fail with UNAVAILABLE and its running
  /// task is cancelled. Returns false if nothing was attached there.
  bool detach(const TaskInstanceKey& key);
  /// Number of attached endpoints.
  [[nodiscard]] std::size_t endpoint_count() const;

  /// Stops serving: every queued or held request fails with UNAVAILABLE, running tasks are
  /// cancelled, and gRPC drains. Blocks until gRPC has finished every call; idempotent.
  void shutdown();

  [[nodiscard]] executor_type get_executor() const noexcept;

 private:
  std::unique_ptr<detail::ServerImpl> impl_;
};

}  // namespace rx

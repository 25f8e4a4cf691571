// Remote XComm's side of the round trip: a Server whose endpoints echo, and a Client, each on a
// Loop of its own, as a scheduler process and a worker process would have. The two halves can
// live in one process (RxcommEcho) or in two (bench_server hosts an RxcommEchoServer).
#pragma once

#include "common/closed_loop.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/server.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>

namespace rx::bench {

/// The echo task: gets a request, pushes its payload back as the reply, and waits in get()
/// again, for as long as the endpoint lives.
boost::asio::awaitable<void> echo_task(rx::Endpoint endpoint);

/// An io_context run by a thread of its own (the application's loop thread), counting the
/// handlers that thread runs. gRPC's threads run loop work themselves when they find the loop
/// idle; each handler counted here is work that had to wake the loop thread instead (a drain
/// posted to the io_context because the loop was busy or the work was posted).
class LoopThread {
 public:
  LoopThread() = default;
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;
  /// Joins the thread if join() has not.
  ~LoopThread();

  /// Starts the thread; it runs until the io_context runs out of work.
  void start();

  /// Waits for the thread to run out of work. The owner joins before destroying what the loop's
  /// work may still touch (a Server, a Client).
  void join();

  [[nodiscard]] boost::asio::io_context& context() noexcept { return context_; }
  [[nodiscard]] rx::Loop& loop() noexcept { return loop_; }
  [[nodiscard]] std::int64_t handlers() const noexcept { return handlers_.load(std::memory_order_relaxed); }

  /// True on this loop thread (while it runs a handler), false on every other thread.
  [[nodiscard]] static bool on_a_loop_thread() noexcept;

 private:
  boost::asio::io_context context_;
  rx::Loop loop_{context_};
  std::atomic<std::int64_t> handlers_{0};
  std::thread thread_;
};

/// A started rx::Server on a LoopThread, on 127.0.0.1 port 0 unless the options say otherwise
/// (ServerOptions::address). Build it outside the timed region.
class RxcommEchoServer {
 public:
  explicit RxcommEchoServer(rx::ServerOptions options = {});
  RxcommEchoServer(const RxcommEchoServer&) = delete;
  RxcommEchoServer& operator=(const RxcommEchoServer&) = delete;
  /// Shuts the server down and joins its loop thread.
  ~RxcommEchoServer();

  /// Attaches echo_task at `key`. Throws std::logic_error if `key` is taken.
  void attach_echo(const TaskInstanceKey& key);

  [[nodiscard]] rx::Server& server() noexcept { return server_; }
  [[nodiscard]] const std::string& target() const noexcept { return target_; }
  [[nodiscard]] std::int64_t loop_thread_handlers() const noexcept { return thread_.handlers(); }

 private:
  LoopThread thread_;
  rx::Server server_;
  std::string target_;
};

/// Two rx::Clients on one LoopThread, one per transport (unary Send, the Exchange stream), kept
/// running until destroyed.
class RxcommEchoClient {
 public:
  RxcommEchoClient();
  RxcommEchoClient(const RxcommEchoClient&) = delete;
  RxcommEchoClient& operator=(const RxcommEchoClient&) = delete;
  /// Lets the loop thread finish and joins it.
  ~RxcommEchoClient();

  /// The Client on unary Send.
  [[nodiscard]] rx::Client& client() noexcept { return client_; }
  /// The Client on the Exchange stream.
  [[nodiscard]] rx::Client& exchange_client() noexcept { return exchange_client_; }
  [[nodiscard]] std::int64_t loop_thread_handlers() const noexcept { return thread_.handlers(); }

 private:
  LoopThread thread_;
  rx::Client client_{thread_.loop(), options_for(rx::Transport::unary)};
  rx::Client exchange_client_{thread_.loop(), options_for(rx::Transport::exchange)};

  static rx::ClientOptions options_for(rx::Transport transport) {
    rx::ClientOptions options;
    options.transport = transport;
    return options;
  }
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
};

/// Both halves in one process: the one-process round trip.
class RxcommEcho {
 public:
  /// Attaches echo_task at `key`. Throws std::logic_error if `key` is taken.
  void attach_echo(const TaskInstanceKey& key) { server_.attach_echo(key); }

  [[nodiscard]] rx::Server& server() noexcept { return server_.server(); }
  [[nodiscard]] rx::Client& client() noexcept { return client_.client(); }
  [[nodiscard]] rx::Client& exchange_client() noexcept { return client_.exchange_client(); }
  [[nodiscard]] const std::string& target() const noexcept { return server_.target(); }

  /// Handlers the two loop threads have run so far (see LoopThread).
  [[nodiscard]] std::int64_t loop_thread_handlers() const noexcept {
    return server_.loop_thread_handlers() + client_.loop_thread_handlers();
  }

 private:
  RxcommEchoServer server_;
  RxcommEchoClient client_;
};

/// Issues one rx::Client::send of `payload` to `key` at `target` for a closed loop (see
/// run_closed_loop). The completion runs on the client's Loop (on the gRPC thread that received
/// the reply when that loop is idle) and issues the next send to the same key.
void issue_rxcomm_unary(rx::Client& client, const std::string& target, const TaskInstanceKey& key,
                        const boost::json::object& payload, ClosedLoop& loop);

}  // namespace rx::bench

// Remote XComm's side of the round trip: a Server whose endpoints echo, and a Client, each on a
// Loop of its own, as a scheduler process and a worker process would have.
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

/// A started rx::Server on 127.0.0.1, port 0, and an rx::Client. Each side's io_context runs on
/// a thread of its own (the application's loop thread); gRPC's threads run loop work when they
/// find the loop idle, as in production. Build it outside the timed region.
class RxcommEcho {
 public:
  RxcommEcho();
  RxcommEcho(const RxcommEcho&) = delete;
  RxcommEcho& operator=(const RxcommEcho&) = delete;
  /// Shuts the server down and joins both loop threads.
  ~RxcommEcho();

  /// Attaches echo_task at `key`. Throws std::logic_error if `key` is taken.
  void attach_echo(const TaskInstanceKey& key);

  [[nodiscard]] rx::Server& server() noexcept { return server_; }
  [[nodiscard]] rx::Client& client() noexcept { return client_; }
  [[nodiscard]] const std::string& target() const noexcept { return target_; }

  /// Handlers the two loop threads have run so far. gRPC's threads run loop work themselves
  /// when the loop is idle; each handler here is work that had to wake a loop thread instead
  /// (a drain posted to the io_context because the loop was busy or the work was posted).
  [[nodiscard]] std::int64_t loop_thread_handlers() const noexcept {
    return loop_thread_handlers_.load(std::memory_order_relaxed);
  }

 private:
  boost::asio::io_context server_context_;
  boost::asio::io_context client_context_;
  rx::Loop server_loop_{server_context_};
  rx::Loop client_loop_{client_context_};
  rx::Server server_{server_loop_};
  rx::Client client_{client_loop_};
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> client_work_;
  std::string target_;
  std::atomic<std::int64_t> loop_thread_handlers_{0};
  std::thread server_thread_;
  std::thread client_thread_;
};

/// Issues one rx::Client::send of `payload` to `key` for a closed loop (see run_closed_loop).
/// The completion runs on the client's Loop (on the gRPC thread that received the reply when
/// that loop is idle) and issues the next send to the same key.
void issue_rxcomm_unary(RxcommEcho& echo, const TaskInstanceKey& key, const boost::json::object& payload,
                        ClosedLoop& loop);

}  // namespace rx::bench

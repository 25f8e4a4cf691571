#include "common/rxcomm_echo.hpp"

#include "common/raw_echo.hpp"

#include <remote_xcomm/error.hpp>

#include <boost/system/system_error.hpp>

#include <functional>
#include <stdexcept>
#include <utility>

namespace rx::bench {

namespace asio = boost::asio;

namespace {
thread_local bool running_a_loop_thread = false;
}  // namespace

asio::awaitable<void> echo_task(rx::Endpoint endpoint) {
  // As the docs write tasks: the default token, which the endpoint completes without allocating.
  // Errors come as exceptions, off the measured path.
  for (;;) {
    boost::json::object payload;
    try {
      payload = co_await endpoint.get();
    } catch (const boost::system::system_error&) {
      co_return;  // the endpoint was closed
    }
    try {
      co_await endpoint.push(std::move(payload));
    } catch (const boost::system::system_error& error) {
      if (error.code() != rx::errc::request_cancelled) {
        co_return;
      }
    }
  }
}

LoopThread::~LoopThread() { join(); }

void LoopThread::join() {
  if (thread_.joinable()) {
    thread_.join();
  }
}

void LoopThread::start() {
  // io_context::run(), one handler at a time so that they can be counted.
  thread_ = std::thread([this] {
    running_a_loop_thread = true;
    while (context_.run_one() != 0) {
      handlers_.fetch_add(1, std::memory_order_relaxed);
    }
    running_a_loop_thread = false;
  });
}

bool LoopThread::on_a_loop_thread() noexcept { return running_a_loop_thread; }

RxcommEchoServer::RxcommEchoServer(rx::ServerOptions options) : server_(thread_.loop(), std::move(options)) {
  server_.start();  // holds the io_context's work until shutdown
  target_ = server_.target();
  thread_.start();
}

RxcommEchoServer::~RxcommEchoServer() {
  server_.shutdown();  // releases the server's hold on its io_context once gRPC is done
  thread_.join();
}

void RxcommEchoServer::attach_echo(const TaskInstanceKey& key) {
  if (!server_.attach(key, &echo_task)) {
    throw std::logic_error("endpoint " + to_string(key) + " is already attached");
  }
}

RxcommEchoClient::RxcommEchoClient() {
  work_.emplace(thread_.context().get_executor());
  thread_.start();
}

RxcommEchoClient::~RxcommEchoClient() {
  work_.reset();
  thread_.join();
}

void issue_rxcomm_unary(rx::Client& client, const std::string& target, const TaskInstanceKey& key,
                        const boost::json::object& payload, ClosedLoop& loop) {
  const Clock::time_point started = Clock::now();
  client.send(
      target, key, payload, rx::SendOptions{CALL_DEADLINE},
      [&client, &target, &key, &payload, &loop, started](const grpc::Status& status, const boost::json::object& reply) {
        const Clock::time_point finished = Clock::now();
        std::string error;
        if (!status.ok()) {
          error = "rx::Client::send failed: " + status.error_message();
        } else if (reply.size() != payload.size()) {
          error = "the endpoint echoed a reply of the wrong shape";
        }
        if (loop.claim()) {
          issue_rxcomm_unary(client, target, key, payload, loop);
        }
        loop.complete(started, finished, error);
      });
}

}  // namespace rx::bench

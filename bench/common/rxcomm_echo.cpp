#include "common/rxcomm_echo.hpp"

#include "common/raw_echo.hpp"

#include <remote_xcomm/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <functional>
#include <stdexcept>
#include <utility>

namespace rx::bench {

namespace asio = boost::asio;

asio::awaitable<void> echo_task(rx::Endpoint endpoint) {
  for (;;) {
    auto [get_error, payload] = co_await endpoint.get(asio::as_tuple(asio::use_awaitable));
    if (get_error) {
      co_return;  // the endpoint was closed
    }
    auto [push_error] = co_await endpoint.push(std::move(payload), asio::as_tuple(asio::use_awaitable));
    if (push_error && push_error != rx::errc::request_cancelled) {
      co_return;
    }
  }
}

RxcommEcho::RxcommEcho() {
  server_.start();
  target_ = server_.target();
  client_work_.emplace(client_context_.get_executor());
  // io_context::run(), one handler at a time so that they can be counted.
  auto run = [this](boost::asio::io_context& context) {
    while (context.run_one() != 0) {
      loop_thread_handlers_.fetch_add(1, std::memory_order_relaxed);
    }
  };
  server_thread_ = std::thread(run, std::ref(server_context_));
  client_thread_ = std::thread(run, std::ref(client_context_));
}

RxcommEcho::~RxcommEcho() {
  server_.shutdown();  // releases the server's hold on its io_context once gRPC is done
  client_work_.reset();
  server_thread_.join();
  client_thread_.join();
}

void RxcommEcho::attach_echo(const TaskInstanceKey& key) {
  if (!server_.attach(key, &echo_task)) {
    throw std::logic_error("endpoint " + to_string(key) + " is already attached");
  }
}

void issue_rxcomm_unary(RxcommEcho& echo, const TaskInstanceKey& key, const boost::json::object& payload,
                        ClosedLoop& loop) {
  const Clock::time_point started = Clock::now();
  echo.client().send(
      echo.target(), key, payload, rx::SendOptions{CALL_DEADLINE},
      [&echo, &key, &payload, &loop, started](const grpc::Status& status, const boost::json::object& reply) {
        const Clock::time_point finished = Clock::now();
        std::string error;
        if (!status.ok()) {
          error = "rx::Client::send failed: " + status.error_message();
        } else if (reply.size() != payload.size()) {
          error = "the endpoint echoed a reply of the wrong shape";
        }
        if (loop.claim()) {
          issue_rxcomm_unary(echo, key, payload, loop);
        }
        loop.complete(started, finished, error);
      });
}

}  // namespace rx::bench

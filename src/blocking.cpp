// The blocking one-liners, built on Client and Server.
#include <remote_xcomm/blocking.hpp>

#include "observability/log.hpp"

#include "address.hpp"
#include "client_internal.hpp"

#include <remote_xcomm/client.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/serialize.hpp>

#include <csignal>
#include <future>
#include <iostream>
#include <thread>
#include <utility>

namespace rx {

std::string RpcError::describe(const grpc::Status& status) {
  return "rpc failed with status " + std::to_string(static_cast<int>(status.error_code())) + ": " +
         status.error_message();
}

TaskInstanceKey key_from_annotations(const boost::json::object& payloads) {
  auto text = [&](const char* name) -> std::string {
    const auto* value = payloads.if_contains(name);
    if (value == nullptr || !value->is_string()) {
      throw std::invalid_argument(std::string("payload annotation \"") + name + "\" must be a string");
    }
    return std::string(value->get_string());
  };
  TaskInstanceKey key{text("dag_id"), text("task_id"), text("run_id"), -1};
  if (const auto* index = payloads.if_contains("map_index"); index != nullptr && !index->is_null()) {
    // Checked, never narrowed: a wrapped index (4294967295 -> -1) would address another task instance.
    if (index->is_int64() && std::in_range<int>(index->get_int64())) {
      key.map_index = static_cast<int>(index->get_int64());
    } else if (index->is_int64() || index->is_uint64()) {
      throw std::invalid_argument("payload annotation \"map_index\" is out of range: " +
                                  boost::json::serialize(*index) + " (it must fit in a 32-bit int)");
    } else {
      throw std::invalid_argument("payload annotation \"map_index\" must be an integer, got " +
                                  boost::json::serialize(*index));
    }
  }
  return key;
}

boost::json::object requests(std::string_view url, std::uint16_t port, const boost::json::object& data,
                             std::chrono::milliseconds timeout) {
  return requests(url, port, data, ClientOptions{}, timeout);
}

boost::json::object requests(std::string_view url, std::uint16_t port, const boost::json::object& data,
                             const ClientOptions& options, std::chrono::milliseconds timeout) {
  const TaskInstanceKey key = key_from_annotations(data);
  // A loop of its own, run here until the call completes (the call holds work until then): the
  // completion runs on gRPC's thread when it may borrow it, else on this one.
  boost::asio::io_context context;
  Client client(context, options);
  grpc::Status status;
  boost::json::object object;
  client.send(detail::host_port(url, port), key, data, SendOptions{timeout},
              [&status, &object](grpc::Status result, boost::json::object reply) {
                status = std::move(result);
                object = std::move(reply);
              });
  // Called from a completion that a gRPC thread runs, the send would start only after it.
  detail::start_sends_deferred_on_this_thread();
  context.run();
  if (!status.ok()) {
    throw RpcError(std::move(status));
  }
  return object;
}

void serve_until_signalled(const ServerOptions& options, const TaskInstanceKey& key, Server::Task task) {
  boost::asio::io_context context;
  Server server(context, options);
  if (!server.attach(key, std::move(task))) {
    throw std::logic_error("endpoint " + to_string(key) + " attached twice");
  }
  server.start();

  std::promise<int> signalled;
  boost::asio::signal_set signals(context, SIGINT, SIGTERM);
  signals.async_wait([&signalled](const boost::system::error_code& error, int signal_number) {
    signalled.set_value(error ? 0 : signal_number);
  });
  std::cout << "remote_xcomm: serving " << to_string(key) << " on " << server.target() << std::endl;

  std::thread loop_thread([&context] {
    for (;;) {
      try {
        context.run();
        return;
      } catch (const std::exception& error) {
        // A handler of the application's threw; report it and keep serving, as a server should.
        std::string line = "connect_ti_function: a loop handler threw: ";
        line.append(error.what());
        detail::log(LogLevel::error, line);
      }
    }
  });
  const int signal_number = signalled.get_future().get();
  std::cout << "remote_xcomm: signal " << signal_number << " received, shutting down" << std::endl;
  // Shutdown blocks until gRPC drains, so it runs here while the loop thread keeps the loop going.
  server.shutdown();
  context.stop();
  loop_thread.join();
}

}  // namespace rx

// The end-to-end fixture: a Server on 127.0.0.1 port 0 and a Client, one Loop run by a worker thread.
#pragma once

#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/task_instance_key.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <grpcpp/support/status.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

namespace rx_test {

/// The outcome of one Client::send.
struct SendResult {
  grpc::Status status;
  boost::json::object reply;
};

/// "CODE: message", for failure messages.
std::string describe(const grpc::Status& status);

/// A unary Send to `target` with the generated stub (any payload text, as a client in another
/// language sends it), on a channel of its own, with the default deadline; `reply_json`, when
/// given, receives the reply.
grpc::Status raw_send(const std::string& target, const rx::TaskInstanceKey& key, const std::string& payload_json,
                      std::string* reply_json = nullptr);

/// The key {"dag", task_id, "run", map_index}.
rx::TaskInstanceKey make_key(const std::string& task_id = "task", int map_index = -1);

/// Serves one request per invocation: replies with the payload it got.
boost::asio::awaitable<void> echo_once(rx::Endpoint endpoint);
/// Serves requests for as long as the endpoint lives, replying to each with its payload.
boost::asio::awaitable<void> echo_forever(rx::Endpoint endpoint);

/// Starts a Server on 127.0.0.1 port 0 and runs its Loop on a worker thread; the test thread
/// sends with `client_`. TearDown shuts the server down from the test thread (never from the
/// loop), lets the loop finish its work, joins the worker and only then are members destroyed
/// (client, server, loop, io_context, in that order). An exception escaping loop work fails the test.
class ServerFixture : public ::testing::Test {
 protected:
  explicit ServerFixture(rx::ServerOptions options = {});

  void SetUp() override;
  void TearDown() override;

  /// Sends `payload` to `key` on `server_` and waits for the outcome. Every call has a deadline.
  SendResult send(const rx::TaskInstanceKey& key, boost::json::object payload,
                  std::chrono::milliseconds deadline = DEFAULT_DEADLINE);
  /// Starts a send to `key` on `server_` without waiting.
  std::future<std::tuple<grpc::Status, boost::json::object>> send_async(
      const rx::TaskInstanceKey& key, boost::json::object payload,
      std::chrono::milliseconds deadline = DEFAULT_DEADLINE);

  /// Exceptions that escaped loop work run by the worker thread.
  std::vector<std::string> loop_errors();

  boost::asio::io_context context_;
  rx::Loop loop_{context_};
  rx::Server server_;
  rx::Client client_{loop_};

 private:
  void run_loop();

  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread loop_thread_;
  std::mutex errors_mutex_;
  std::vector<std::string> loop_errors_;
};

}  // namespace rx_test

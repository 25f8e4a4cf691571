#include "utils/server_fixture.hpp"

#include "codec.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/use_future.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <exception>
#include <utility>

namespace rx_test {

namespace asio = boost::asio;

std::string describe(const grpc::Status& status) {
  return std::to_string(static_cast<int>(status.error_code())) + ": " + status.error_message();
}

grpc::Status raw_send(const std::string& target, const rx::TaskInstanceKey& key, const std::string& payload_json,
                      std::string* reply_json) {
  auto stub = remote_xcomm::v1::RemoteXComm::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + DEFAULT_DEADLINE);
  remote_xcomm::v1::SendRequest request;
  rx::detail::to_proto(key, *request.mutable_key());
  request.set_payload_json(payload_json);
  remote_xcomm::v1::SendResponse response;
  grpc::Status status = stub->Send(&context, request, &response);
  if (reply_json != nullptr) {
    *reply_json = response.reply_json();
  }
  return status;
}

rx::TaskInstanceKey make_key(const std::string& task_id, int map_index) { return {"dag", task_id, "run", map_index}; }

asio::awaitable<void> echo_once(rx::Endpoint endpoint) {
  boost::json::object payload = co_await endpoint.get();
  co_await endpoint.push(std::move(payload));
}

asio::awaitable<void> echo_forever(rx::Endpoint endpoint) {
  for (;;) {
    boost::json::object payload = co_await endpoint.get();
    co_await endpoint.push(std::move(payload));
  }
}

ServerFixture::ServerFixture(rx::ServerOptions options) : server_(loop_, std::move(options)) {}

void ServerFixture::SetUp() {
  work_.emplace(context_.get_executor());
  loop_thread_ = std::thread([this] { run_loop(); });
  server_.start();
  ASSERT_FALSE(server_.target().empty());
}

void ServerFixture::TearDown() {
  // From the test thread: shutdown() blocks until gRPC has finished every call, which needs the loop.
  server_.shutdown();
  work_.reset();
  if (loop_thread_.joinable()) {
    loop_thread_.join();  // returns once every completion and task has run to its end
  }
  for (const std::string& error : loop_errors()) {
    ADD_FAILURE() << "loop work threw: " << error;
  }
}

SendResult ServerFixture::send(const rx::TaskInstanceKey& key, boost::json::object payload,
                               std::chrono::milliseconds deadline) {
  auto [status, reply] = wait_for(send_async(key, std::move(payload), deadline), "a reply");
  return {std::move(status), std::move(reply)};
}

std::future<std::tuple<grpc::Status, boost::json::object>> ServerFixture::send_async(
    const rx::TaskInstanceKey& key, boost::json::object payload, std::chrono::milliseconds deadline) {
  return client_.send(server_.target(), key, std::move(payload), rx::SendOptions{deadline}, asio::use_future);
}

std::vector<std::string> ServerFixture::loop_errors() {
  const std::lock_guard lock(errors_mutex_);
  return loop_errors_;
}

void ServerFixture::run_loop() {
  for (;;) {
    try {
      context_.run();
      return;
    } catch (const std::exception& error) {
      const std::lock_guard lock(errors_mutex_);
      loop_errors_.emplace_back(error.what());
    } catch (...) {
      const std::lock_guard lock(errors_mutex_);
      loop_errors_.emplace_back("an exception not derived from std::exception");
    }
  }
}

}  // namespace rx_test

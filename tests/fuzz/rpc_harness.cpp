#include "rpc_harness.hpp"

#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/v1/remote_xcomm.pb.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

namespace rx_fuzz {

namespace {

namespace asio = boost::asio;

/// Replies to every request with its payload, after recording the payload as XCom "last".
asio::awaitable<void> record_and_echo(rx::Endpoint endpoint) {
  for (;;) {
    boost::json::object payload = co_await endpoint.get();
    // A refused push (the retention bound) still lets the reply go out, as for any task.
    co_await endpoint.xcom_push("last", payload, asio::as_tuple(asio::use_awaitable));
    co_await endpoint.push(std::move(payload));
  }
}

std::vector<rx::TaskInstanceKey> endpoint_keys() {
  return {{"dag", "task", "run", -1},
          {"dag", "mapped", "run", 0},
          {"dag", "mapped", "run", 1},
          {"dag", "mapped", "run", 2}};
}

rx::ServerOptions server_options() {
  rx::ServerOptions options;
  // The abstract namespace: no file to clean up, and a name of its own per process.
  options.address = "unix-abstract:rx-fuzz-" + std::to_string(::getpid());
  return options;
}

/// The server and a generic stub to it, for the whole process.
struct Harness {
  asio::io_context context;
  rx::Loop loop{context};
  rx::Server server{loop, server_options()};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{context.get_executor()};
  std::thread runner;
  std::unique_ptr<grpc::GenericStub> stub;

  Harness() {
    for (const rx::TaskInstanceKey& key : endpoint_keys()) {
      if (!server.attach(key, record_and_echo)) {
        std::abort();  // the keys differ: this cannot happen
      }
    }
    // An exception escaping the loop ends the process: libFuzzer reports it as a crash.
    runner = std::thread([this] { context.run(); });
    server.start();
    stub =
        std::make_unique<grpc::GenericStub>(grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
  }

  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  ~Harness() {
    stub.reset();
    server.shutdown();
    work.reset();
    runner.join();
  }
};

Harness* harness = nullptr;

void stop_server() {
  delete harness;
  harness = nullptr;
}

/// Waits for the one operation in flight on `queue`; past `patience` the call is cancelled, and
/// then waited for without limit (gRPC completes every operation of a cancelled call).
bool next(grpc::CompletionQueue& queue, grpc::ClientContext& context, std::chrono::system_clock::time_point patience,
          bool& cancelled) {
  void* tag = nullptr;
  bool ok = false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (cancelled) {
      return queue.Next(&tag, &ok) && ok;
    }
    if (queue.AsyncNext(&tag, &ok, patience) != grpc::CompletionQueue::TIMEOUT) {
      return ok;
    }
    context.TryCancel();
    cancelled = true;
  }
  return false;
}

}  // namespace

std::vector<Record> split_records(std::span<const std::uint8_t> input, std::size_t max_records) {
  std::vector<Record> records;
  while (input.size() >= 3 && records.size() < max_records) {
    const std::size_t length = std::min<std::size_t>(input[1] | (std::size_t{input[2]} << 8), input.size() - 3);
    records.push_back({input[0], std::string_view(reinterpret_cast<const char*>(input.data()) + 3, length)});
    input = input.subspan(3 + length);
  }
  return records;
}

void start_server() {
  if (harness == nullptr) {
    harness = new Harness();
    std::atexit(stop_server);
  }
}

void call(std::string_view method, const std::vector<std::string_view>& messages, int patience_ms) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));  // a backstop only
  const auto patience = std::chrono::system_clock::now() + std::chrono::milliseconds(patience_ms);
  grpc::CompletionQueue queue;
  bool cancelled = false;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> stream =
      harness->stub->PrepareCall(&context, std::string("/remote_xcomm.v1.RemoteXComm/").append(method), &queue);
  // One operation at a time, so the tag needs no checking.
  stream->StartCall(nullptr);
  if (next(queue, context, patience, cancelled)) {
    bool writing = true;
    for (std::string_view message : messages) {
      grpc::Slice slice(message.data(), message.size());
      grpc::ByteBuffer buffer(&slice, 1);
      stream->Write(buffer, nullptr);
      if (!next(queue, context, patience, cancelled)) {
        writing = false;
        break;
      }
    }
    if (writing) {
      stream->WritesDone(nullptr);
      next(queue, context, patience, cancelled);
    }
    grpc::ByteBuffer response;
    for (int reads = 0; reads < 1000; ++reads) {
      stream->Read(&response, nullptr);
      if (!next(queue, context, patience, cancelled)) {
        break;
      }
    }
  }
  grpc::Status status;
  stream->Finish(&status, nullptr);
  next(queue, context, patience, cancelled);
  queue.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (queue.Next(&tag, &ok)) {
  }
}

void seed_server_state() {
  int n = 0;
  for (const rx::TaskInstanceKey& key : endpoint_keys()) {
    remote_xcomm::v1::SendRequest request;
    request.mutable_key()->set_dag_id(key.dag_id);
    request.mutable_key()->set_task_id(key.task_id);
    request.mutable_key()->set_run_id(key.run_id);
    request.mutable_key()->set_map_index(key.map_index);
    request.set_payload_json(std::string(R"({"seed":)").append(std::to_string(n++)).append("}"));
    const std::string bytes = request.SerializeAsString();
    call("Send", {bytes}, 5000);
  }
}

}  // namespace rx_fuzz

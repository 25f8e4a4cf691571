// Limits and bad input on every RPC (docs/protocol.md, "Limits" and "Bad input"): a real server on
// a loopback port, driven by the library's client and by the generated stub or raw bytes (what a
// client in another language can send). After every row the server still serves every endpoint
// and method, and requests queued before the row are answered once their task moves on.
#include "codec.hpp"
#include "utils/gate.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <grpcpp/create_channel.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/sync_stream.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace pb = remote_xcomm::v1;
using rx_test::describe;
using rx_test::make_key;

constexpr std::size_t KEY_LIMIT = 64;
constexpr std::size_t VALUES_LIMIT = 100;
constexpr std::size_t STRING_LIMIT = 256;
constexpr std::size_t DEPTH_LIMIT = 8;
constexpr std::size_t FRAMES_LIMIT = 8;
// A status message must stay readable to any client (grpcio drops a reply whose metadata passes
// 8 KiB): far below that, whatever the caller sent.
constexpr std::size_t MESSAGE_BOUND = 400;

rx::ServerOptions limited() {
  rx::ServerOptions options;
  options.max_key_field_bytes = KEY_LIMIT;
  options.max_json_values = VALUES_LIMIT;
  options.max_json_string_bytes = STRING_LIMIT;
  options.max_json_depth = DEPTH_LIMIT;
  options.max_exchange_batch_frames = FRAMES_LIMIT;
  return options;
}

asio::awaitable<void> gated_echo(std::shared_ptr<rx_test::Gate> gate, rx::Endpoint endpoint) {
  for (;;) {
    boost::json::object payload = co_await endpoint.get();
    co_await gate->wait();
    co_await endpoint.push(std::move(payload));
  }
}

std::string bytes_of(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& slice : slices) {
      out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
  }
  return out;
}

grpc::ByteBuffer buffer_of(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

class LimitsTest : public rx_test::ServerFixture {
 protected:
  LimitsTest() : ServerFixture(limited()) {}

  void SetUp() override {
    ServerFixture::SetUp();
    gate_ = std::make_shared<rx_test::Gate>(server_.get_executor());
    ASSERT_TRUE(server_.attach(make_key("echo"), rx_test::echo_forever));
    auto gate = gate_;
    ASSERT_TRUE(server_.attach(make_key("held"),
                               [gate](rx::Endpoint endpoint) { return gated_echo(gate, std::move(endpoint)); }));
    channel_ = grpc::CreateChannel(server_.target(), grpc::InsecureChannelCredentials());
    stub_ = pb::RemoteXComm::NewStub(channel_);
    // One request held by the task, one queued behind it: neither may be lost by any row.
    held_.push_back(send_async(make_key("held"), {{"n", 1}}));
    held_.push_back(send_async(make_key("held"), {{"n", 2}}));
    for (int i = 0; i < 2000 && server_.stats().queued_requests != 1; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_EQ(server_.stats().queued_requests, 1U);
  }

  void TearDown() override {
    if (!released_) {
      expect_held_requests_answered();
    }
    ServerFixture::TearDown();
  }

  // The requests queued before the row are still waiting, then answered once the task moves on.
  void expect_held_requests_answered() {
    released_ = true;
    for (auto& request : held_) {
      EXPECT_EQ(request.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
          << "a request queued before the row ended early";
    }
    gate_->open();
    int n = 1;
    for (auto& request : held_) {
      auto [status, reply] = rx_test::wait_for(request, "a held request");
      EXPECT_TRUE(status.ok()) << describe(status);
      EXPECT_EQ(reply, (boost::json::object{{"n", n++}}));
    }
  }

  grpc::Status raw_unary(const std::string& method, const std::string& bytes, std::string* reply = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
    const grpc::ByteBuffer request = buffer_of(bytes);
    grpc::ByteBuffer response;
    const grpc::internal::RpcMethod rpc(method.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
    grpc::Status status = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
        channel_.get(), rpc, &context, request, &response);
    if (reply != nullptr) {
      *reply = bytes_of(response);
    }
    return status;
  }

  // Every endpoint and every method still answers as it should.
  void expect_still_serving() {
    const rx_test::SendResult echoed = send(make_key("echo"), {{"still", "serving"}});
    EXPECT_TRUE(echoed.status.ok()) << describe(echoed.status);
    EXPECT_EQ(echoed.reply, (boost::json::object{{"still", "serving"}}));
    {
      grpc::ClientContext context;
      pb::PullRequest request;
      request.set_dag_id("dag");
      request.set_run_id("run");
      request.set_task_id("echo");
      request.set_map_index(-1);
      pb::PullResponse response;
      const grpc::Status status = stub_->Pull(&context, request, &response);
      EXPECT_TRUE(status.ok()) << describe(status);
      EXPECT_EQ(response.xcoms_size(), 1);
    }
    {
      grpc::ClientContext context;
      pb::GetStateRequest request;
      rx::detail::to_proto(make_key("echo"), *request.mutable_task_instance());
      pb::TaskStateInfo response;
      const grpc::Status status = stub_->GetState(&context, request, &response);
      EXPECT_TRUE(status.ok()) << describe(status);
    }
    {
      grpc::ClientContext context;
      pb::ListResponse response;
      const grpc::Status status = stub_->List(&context, pb::ListRequest(), &response);
      EXPECT_TRUE(status.ok()) << describe(status);
      EXPECT_EQ(response.total_matching(), 2U);
    }
    {
      grpc::ClientContext context;
      pb::StatsResponse response;
      const grpc::Status status = stub_->Stats(&context, pb::StatsRequest(), &response);
      EXPECT_TRUE(status.ok()) << describe(status);
      EXPECT_EQ(response.queued_requests(), 1U);  // the held endpoint's queued request is still there
    }
    {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
      pb::WatchRequest request;
      request.set_dag_id("dag");
      request.set_run_id("run");
      request.set_from_start(true);
      auto reader = stub_->Watch(&context, request);
      pb::WatchResponse response;
      EXPECT_TRUE(reader->Read(&response));
      EXPECT_GT(response.events_size(), 0);
      context.TryCancel();
      (void)reader->Finish();
    }
    const std::vector<pb::ExchangeReply> replies = exchange({frame(7, make_key("echo"), R"({"x":1})")});
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].id(), 7U);
    EXPECT_EQ(replies[0].code(), 0) << replies[0].message();
  }

  static pb::ExchangeFrame frame(std::uint64_t id, const rx::TaskInstanceKey& key, const std::string& payload) {
    pb::ExchangeFrame frame;
    frame.set_id(id);
    rx::detail::to_proto(key, *frame.mutable_key());
    frame.set_payload_json(payload);
    return frame;
  }

  // One batch on a stream of its own; the replies, until the stream ends. `end` gets its status.
  std::vector<pb::ExchangeReply> exchange(const std::vector<pb::ExchangeFrame>& frames, grpc::Status* end = nullptr) {
    pb::ExchangeRequest batch;
    for (const pb::ExchangeFrame& f : frames) {
      *batch.add_frames() = f;
    }
    std::string bytes;
    batch.SerializeToString(&bytes);
    return exchange_raw(bytes, end);
  }

  std::vector<pb::ExchangeReply> exchange_raw(const std::string& batch, grpc::Status* end = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
    const grpc::internal::RpcMethod rpc("/remote_xcomm.v1.RemoteXComm/Exchange",
                                        grpc::internal::RpcMethod::BIDI_STREAMING);
    std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
        grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel_.get(), rpc,
                                                                                              &context));
    EXPECT_TRUE(stream->Write(buffer_of(batch)));
    stream->WritesDone();
    std::vector<pb::ExchangeReply> replies;
    grpc::ByteBuffer received;
    while (stream->Read(&received)) {
      pb::ExchangeResponse response;
      EXPECT_TRUE(response.ParseFromString(bytes_of(received)));
      for (const pb::ExchangeReply& reply : response.replies()) {
        replies.push_back(reply);
      }
    }
    const grpc::Status status = stream->Finish();
    if (end != nullptr) {
      *end = status;
    } else {
      EXPECT_TRUE(status.ok()) << describe(status);
    }
    return replies;
  }

  static void expect_refusal(const grpc::Status& status, grpc::StatusCode code, const std::string& names) {
    EXPECT_EQ(status.error_code(), code) << describe(status);
    EXPECT_NE(status.error_message().find(names), std::string::npos) << describe(status);
    EXPECT_LT(status.error_message().size(), MESSAGE_BOUND) << describe(status);
  }

  std::shared_ptr<rx_test::Gate> gate_;
  std::vector<std::future<std::tuple<grpc::Status, boost::json::object>>> held_;
  bool released_ = false;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::RemoteXComm::Stub> stub_;
};

std::string send_request(const rx::TaskInstanceKey& key, const std::string& payload) {
  pb::SendRequest request;
  rx::detail::to_proto(key, *request.mutable_key());
  request.set_payload_json(payload);
  return request.SerializeAsString();
}

constexpr const char* SEND = "/remote_xcomm.v1.RemoteXComm/Send";

TEST_F(LimitsTest, AKeyFieldOverTheLimitIsRefusedNamingTheFieldWithAShortQuote) {
  const std::string long_field(8000, 'd');
  for (const char* field : {"dag_id", "task_id", "run_id"}) {
    rx::TaskInstanceKey key = make_key("echo");
    (std::string(field) == "dag_id"    ? key.dag_id
     : std::string(field) == "task_id" ? key.task_id
                                       : key.run_id) = long_field;
    const grpc::Status status = raw_unary(SEND, send_request(key, "{}"));
    expect_refusal(status, grpc::StatusCode::INVALID_ARGUMENT, std::string("key.") + field + " is 8000 bytes");
    EXPECT_NE(status.error_message().find("ServerOptions::max_key_field_bytes"), std::string::npos);
  }
  // At the limit it is a key like any other: NOT_FOUND, quoting a short prefix of each field.
  rx::TaskInstanceKey at_limit = make_key(std::string(KEY_LIMIT, 't'));
  const grpc::Status not_found = raw_unary(SEND, send_request(at_limit, "{}"));
  EXPECT_EQ(not_found.error_code(), grpc::StatusCode::NOT_FOUND) << describe(not_found);
  EXPECT_LT(not_found.error_message().size(), MESSAGE_BOUND);
  expect_still_serving();
}

TEST_F(LimitsTest, InvalidUtf8InAStringFieldIsInvalidArgumentNamingTheField) {
  rx::TaskInstanceKey key = make_key("echo");
  key.run_id = "run\xff\x01";
  const grpc::Status status = raw_unary(SEND, send_request(key, "{}"));
  expect_refusal(status, grpc::StatusCode::INVALID_ARGUMENT, "key.run_id is not valid UTF-8");
  // The quote escapes what is not printable UTF-8.
  EXPECT_NE(status.error_message().find(R"("run\xff\x01")"), std::string::npos) << status.error_message();
  const grpc::Status payload = raw_unary(SEND, send_request(make_key("echo"), "{\"a\":\"\xc3\x28\"}"));
  expect_refusal(payload, grpc::StatusCode::INVALID_ARGUMENT, "payload is not valid UTF-8");
  expect_still_serving();
}

TEST_F(LimitsTest, BytesThatAreNotAMessageAreInvalidArgumentOnEveryUnaryMethod) {
  const std::string truncated =
      "\x0a\x05"
      "ab";  // field 1, 5 bytes announced, 2 present
  for (const char* method : {"Send", "Pull", "GetState", "List", "Stats"}) {
    const grpc::Status status = raw_unary(std::string("/remote_xcomm.v1.RemoteXComm/") + method, truncated);
    expect_refusal(status, grpc::StatusCode::INVALID_ARGUMENT, "malformed protobuf");
  }
  expect_still_serving();
}

TEST_F(LimitsTest, PullGetStateWatchAndListCheckTheirKeyFields) {
  const std::string long_field(KEY_LIMIT + 1, 'x');
  {
    pb::PullRequest request;
    request.set_dag_id("dag");
    request.set_run_id("run");
    request.set_task_id("echo");
    request.set_key(long_field);
    expect_refusal(raw_unary("/remote_xcomm.v1.RemoteXComm/Pull", request.SerializeAsString()),
                   grpc::StatusCode::INVALID_ARGUMENT, "key is 65 bytes");
    request.set_key("k");
    request.set_task_id("\xfe");
    expect_refusal(raw_unary("/remote_xcomm.v1.RemoteXComm/Pull", request.SerializeAsString()),
                   grpc::StatusCode::INVALID_ARGUMENT, "task_id is not valid UTF-8");
  }
  {
    pb::GetStateRequest request;
    rx::TaskInstanceKey key = make_key("echo");
    key.dag_id = long_field;
    rx::detail::to_proto(key, *request.mutable_task_instance());
    expect_refusal(raw_unary("/remote_xcomm.v1.RemoteXComm/GetState", request.SerializeAsString()),
                   grpc::StatusCode::INVALID_ARGUMENT, "task_instance.dag_id is 65 bytes");
  }
  {
    pb::WatchRequest request;
    request.set_dag_id("dag");
    request.set_run_id(long_field);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
    auto reader = stub_->Watch(&context, request);
    pb::WatchResponse response;
    EXPECT_FALSE(reader->Read(&response));
    expect_refusal(reader->Finish(), grpc::StatusCode::INVALID_ARGUMENT, "run_id is 65 bytes");
  }
  {
    pb::ListRequest request;
    request.set_task_id(long_field);
    expect_refusal(raw_unary("/remote_xcomm.v1.RemoteXComm/List", request.SerializeAsString()),
                   grpc::StatusCode::INVALID_ARGUMENT, "task_id is 65 bytes");
    request.set_task_id("");
    request.set_page_token(std::string(KEY_LIMIT * 8 + 1, '['));
    expect_refusal(raw_unary("/remote_xcomm.v1.RemoteXComm/List", request.SerializeAsString()),
                   grpc::StatusCode::INVALID_ARGUMENT, "page_token is 513 bytes");
  }
  expect_still_serving();
}

TEST_F(LimitsTest, PayloadLimitsAreEnforcedWhileParsing) {
  struct Row {
    std::string payload;
    std::string names;
  };
  std::string many = "{\"a\":[";
  for (std::size_t i = 0; i < VALUES_LIMIT; ++i) {
    many.append(i == 0 ? "0" : ",0");
  }
  many.append("]}");  // the object, the array and VALUES_LIMIT elements: two over
  std::string deep;
  for (std::size_t i = 0; i <= DEPTH_LIMIT; ++i) {
    deep.append("{\"a\":");
  }
  deep.append("1").append(DEPTH_LIMIT + 1, '}');
  const std::vector<Row> rows = {
      {many, "payload holds more than 100 values (ServerOptions::max_json_values)"},
      {"{\"s\":\"" + std::string(STRING_LIMIT + 1, 's') + "\"}",
       "payload has a string longer than 256 bytes (ServerOptions::max_json_string_bytes)"},
      {"{\"" + std::string(STRING_LIMIT + 1, 'k') + "\":1}", "payload has a string longer than 256 bytes"},
      {deep, "payload nests arrays and objects deeper than 8 levels"},
      {R"({"a":1e2147483648})", "payload has a number too large for a double"},
      {R"({"a":1e400})", "payload has a number too large for a double"},
      {R"({"a":[1e-2147483648,2e-99999999999,3e-99999999999,4e-99999999999,5e-99999999999,6e-99999999999,)"
       R"(7e-99999999999,8e-99999999999,9e-99999999999]})",
       "payload has more than 8 numbers with an exponent below -2147483647"},
      {"{} x", "payload is not valid JSON: "},
  };
  for (const Row& row : rows) {
    expect_refusal(raw_unary(SEND, send_request(make_key("echo"), row.payload)), grpc::StatusCode::INVALID_ARGUMENT,
                   row.names);
    // The same rule on Exchange, for that frame only.
    const std::vector<pb::ExchangeReply> replies =
        exchange({frame(1, make_key("echo"), row.payload), frame(2, make_key("echo"), "{}")});
    ASSERT_EQ(replies.size(), 2U);
    for (const pb::ExchangeReply& reply : replies) {
      if (reply.id() == 1) {
        EXPECT_EQ(reply.code(), grpc::StatusCode::INVALID_ARGUMENT);
        EXPECT_NE(reply.message().find(row.names), std::string::npos) << reply.message();
      } else {
        EXPECT_EQ(reply.code(), 0) << reply.message();
      }
    }
  }
  expect_still_serving();
}

TEST_F(LimitsTest, TinyAndAtLimitNumbersAndValuesAreAccepted) {
  std::string at_limit = "{\"a\":[";
  for (std::size_t i = 0; i + 2 < VALUES_LIMIT; ++i) {
    at_limit.append(i == 0 ? "0" : ",0");
  }
  at_limit.append("]}");
  std::string reply;
  ASSERT_TRUE(rx_test::raw_send(server_.target(), make_key("echo"), at_limit, &reply).ok());
  ASSERT_TRUE(rx_test::raw_send(server_.target(), make_key("echo"),
                                R"({"tiny":1e-2147483648,"tinier":-2.5E-99999999999,"zero":0e99999999999})", &reply)
                  .ok());
  const boost::json::object read = boost::json::parse(reply).as_object();
  EXPECT_EQ(read.at("tiny").to_number<double>(), 0.0);
  EXPECT_EQ(read.at("tinier").to_number<double>(), 0.0);
  EXPECT_EQ(read.at("zero").to_number<double>(), 0.0);
  expect_still_serving();
}

TEST_F(LimitsTest, AnExchangeFrameWithABadKeyGetsItsOwnReplyAndTheOthersAreServed) {
  rx::TaskInstanceKey long_key = make_key("echo");
  long_key.dag_id = std::string(9000, 'x');
  rx::TaskInstanceKey bad_utf8 = make_key("echo");
  bad_utf8.task_id = "\xc0\xaf";
  const std::vector<pb::ExchangeReply> replies =
      exchange({frame(1, long_key, "{}"), frame(2, make_key("echo"), "{}"), frame(3, bad_utf8, "{}")});
  ASSERT_EQ(replies.size(), 3U);
  for (const pb::ExchangeReply& reply : replies) {
    if (reply.id() == 2) {
      EXPECT_EQ(reply.code(), 0) << reply.message();
      continue;
    }
    EXPECT_EQ(reply.code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(reply.message().find(reply.id() == 1 ? "key.dag_id is 9000 bytes" : "key.task_id is not valid UTF-8"),
              std::string::npos)
        << reply.message();
    EXPECT_LT(reply.message().size(), MESSAGE_BOUND);
  }
  expect_still_serving();
}

TEST_F(LimitsTest, ABatchOverTheFrameLimitEndsTheStreamAfterTheRequestsBeforeIt) {
  // A first batch at the limit is served; the next, one over, is not taken and ends the stream.
  pb::ExchangeRequest first;
  for (std::uint64_t id = 0; id < FRAMES_LIMIT; ++id) {
    *first.add_frames() = frame(id, make_key("echo"), "{}");
  }
  pb::ExchangeRequest second;
  for (std::uint64_t id = 100; id < 100 + FRAMES_LIMIT + 1; ++id) {
    *second.add_frames() = frame(id, make_key("echo"), "{}");
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + rx_test::DEFAULT_DEADLINE);
  auto stream = stub_->Exchange(&context);
  ASSERT_TRUE(stream->Write(first));
  std::size_t answered = 0;
  pb::ExchangeResponse response;
  while (answered < FRAMES_LIMIT && stream->Read(&response)) {
    for (const pb::ExchangeReply& reply : response.replies()) {
      EXPECT_EQ(reply.code(), 0) << reply.message();
      ++answered;
    }
  }
  EXPECT_EQ(answered, FRAMES_LIMIT);
  stream->Write(second);
  while (stream->Read(&response)) {
    ADD_FAILURE() << "a reply to a frame of the refused batch";
  }
  expect_refusal(stream->Finish(), grpc::StatusCode::RESOURCE_EXHAUSTED,
                 "the batch holds more than 8 frames, the server's limit (ServerOptions::max_exchange_batch_frames)");
  // A malformed batch ends its stream too.
  grpc::Status end;
  EXPECT_TRUE(exchange_raw("\x0a\x7f", &end).empty());
  expect_refusal(end, grpc::StatusCode::INVALID_ARGUMENT, "malformed protobuf");
  expect_still_serving();
}

}  // namespace

// Introspection and observability: gRPC's health and reflection services, List, Stats and the
// log sink, each seen as a client that knows only the public protocols sees it.
#include "utils/gate.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/log.hpp>
#include <remote_xcomm/stats.hpp>

#include <boost/asio/use_future.hpp>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

namespace asio = boost::asio;
using rx_test::DEFAULT_DEADLINE;
using rx_test::describe;
using rx_test::make_key;
using rx_test::wait_for;

// ---- the protobuf wire format by hand: these clients know only the public protocols --------------

void append_varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

// One length-delimited field (a string, bytes or a message).
std::string field(int number, const std::string& value) {
  std::string out;
  append_varint(out, (static_cast<std::uint64_t>(number) << 3) | 2);
  append_varint(out, value.size());
  out.append(value);
  return out;
}

// The length-delimited fields `number` of `message`, in order.
std::vector<std::string> fields(const std::string& message, int number) {
  google::protobuf::UnknownFieldSet set;
  std::vector<std::string> out;
  if (!set.ParseFromString(message)) {
    ADD_FAILURE() << "not a protobuf message";
    return out;
  }
  for (int i = 0; i < set.field_count(); ++i) {
    const google::protobuf::UnknownField& f = set.field(i);
    if (f.number() == number && f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      out.push_back(f.length_delimited());
    }
  }
  return out;
}

// The varint field `number` of `message`, or 0 (proto3's default, which is not written).
std::uint64_t varint_field(const std::string& message, int number) {
  google::protobuf::UnknownFieldSet set;
  EXPECT_TRUE(set.ParseFromString(message));
  std::uint64_t value = 0;
  for (int i = 0; i < set.field_count(); ++i) {
    if (set.field(i).number() == number && set.field(i).type() == google::protobuf::UnknownField::TYPE_VARINT) {
      value = set.field(i).varint();
    }
  }
  return value;
}

grpc::ByteBuffer buffer_of(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string bytes_of(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

// ---- grpc.health.v1.Health/Check ----------------------------------------------------------------

constexpr std::uint64_t SERVING = 1;
constexpr std::uint64_t NOT_SERVING = 2;

struct HealthAnswer {
  grpc::Status status;
  std::uint64_t serving_status = 0;  // HealthCheckResponse.status
};

HealthAnswer check_health(const std::string& target, const std::string& service) {
  grpc::GenericStub stub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + DEFAULT_DEADLINE);
  const grpc::ByteBuffer request = buffer_of(service.empty() ? std::string() : field(1, service));
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  HealthAnswer answer;
  answer.status = wait_for(done.get_future(), "a health check");
  if (answer.status.ok()) {
    answer.serving_status = varint_field(bytes_of(response), 1);
  }
  return answer;
}

// ---- grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo -------------------------------

// A reflection stream driven step by step on a completion queue of its own: each request gets one
// response, as the protocol says.
class ReflectionClient {
 public:
  explicit ReflectionClient(const std::string& target)
      : stub_(grpc::CreateChannel(target, grpc::InsecureChannelCredentials())) {
    context_.set_deadline(std::chrono::system_clock::now() + DEFAULT_DEADLINE);
    call_ = stub_.PrepareCall(&context_, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq_);
    call_->StartCall(this);
    started_ = next();
  }
  ReflectionClient(const ReflectionClient&) = delete;
  ReflectionClient& operator=(const ReflectionClient&) = delete;

  ~ReflectionClient() {
    if (call_) {
      context_.TryCancel();
      grpc::Status ignored;
      call_->Finish(&ignored, this);
      next();
      call_.reset();
    }
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  // The response to `request` (a serialised ServerReflectionRequest), or empty if the stream failed.
  std::string ask(const std::string& request) {
    if (!started_) {
      return {};
    }
    call_->Write(buffer_of(request), this);
    if (!next()) {
      return {};
    }
    grpc::ByteBuffer response;
    call_->Read(&response, this);
    if (!next()) {
      return {};
    }
    return bytes_of(response);
  }

  grpc::Status finish() {
    call_->WritesDone(this);
    next();
    grpc::Status status;
    call_->Finish(&status, this);
    next();
    call_.reset();
    return status;
  }

 private:
  bool next() {
    void* tag = nullptr;
    bool ok = false;
    const auto result = cq_.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + rx_test::HANG_GUARD);
    return result == grpc::CompletionQueue::GOT_EVENT && ok;
  }

  grpc::GenericStub stub_;
  grpc::ClientContext context_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  bool started_ = false;
};

// ServerReflectionRequest fields and ServerReflectionResponse fields (grpc/reflection/v1alpha).
constexpr int REQUEST_FILE_CONTAINING_SYMBOL = 4;
constexpr int REQUEST_LIST_SERVICES = 7;
constexpr int RESPONSE_FILE_DESCRIPTOR = 4;
constexpr int RESPONSE_LIST_SERVICES = 6;
constexpr int RESPONSE_ERROR = 7;

class IntrospectionTest : public rx_test::ServerFixture {};

TEST_F(IntrospectionTest, ReflectionListsOurServiceAndDescribesItsMethods) {
  ReflectionClient reflection(server_.target());

  const std::string listed = reflection.ask(field(REQUEST_LIST_SERVICES, "*"));
  ASSERT_FALSE(listed.empty()) << "the reflection stream failed";
  ASSERT_TRUE(fields(listed, RESPONSE_ERROR).empty());
  const std::vector<std::string> list = fields(listed, RESPONSE_LIST_SERVICES);
  ASSERT_EQ(list.size(), 1U);
  std::set<std::string> services;
  for (const std::string& service : fields(list[0], 1)) {
    const std::vector<std::string> names = fields(service, 1);
    ASSERT_EQ(names.size(), 1U);
    services.insert(names[0]);
  }
  EXPECT_TRUE(services.contains("remote_xcomm.v1.RemoteXComm"));
  EXPECT_TRUE(services.contains("grpc.health.v1.Health"));
  EXPECT_TRUE(services.contains("grpc.reflection.v1alpha.ServerReflection"));

  const std::string described = reflection.ask(field(REQUEST_FILE_CONTAINING_SYMBOL, "remote_xcomm.v1.RemoteXComm"));
  ASSERT_TRUE(fields(described, RESPONSE_ERROR).empty());
  const std::vector<std::string> file_response = fields(described, RESPONSE_FILE_DESCRIPTOR);
  ASSERT_EQ(file_response.size(), 1U);
  bool found = false;
  for (const std::string& bytes : fields(file_response[0], 1)) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    if (file.package() != "remote_xcomm.v1") {
      continue;
    }
    found = true;
    ASSERT_EQ(file.service_size(), 1);
    const google::protobuf::ServiceDescriptorProto& service = file.service(0);
    EXPECT_EQ(service.name(), "RemoteXComm");
    std::set<std::string> methods;
    for (const auto& method : service.method()) {
      methods.insert(method.name());
      if (method.name() == "List") {
        EXPECT_EQ(method.input_type(), ".remote_xcomm.v1.ListRequest");
        EXPECT_EQ(method.output_type(), ".remote_xcomm.v1.ListResponse");
      }
    }
    EXPECT_EQ(methods, (std::set<std::string>{"Send", "Exchange", "Pull", "GetState", "Watch", "List", "Stats"}));
  }
  EXPECT_TRUE(found) << "no file of package remote_xcomm.v1 in the reflection's answer";

  // An unknown symbol is an error response, and the stream lives on.
  const std::string unknown = reflection.ask(field(REQUEST_FILE_CONTAINING_SYMBOL, "no.such.Service"));
  EXPECT_EQ(fields(unknown, RESPONSE_ERROR).size(), 1U);
  EXPECT_TRUE(reflection.finish().ok());
}

TEST_F(IntrospectionTest, HealthIsServingWhileServingAndNotServingOnceShutdownBegins) {
  for (const std::string service : {"", "remote_xcomm.v1.RemoteXComm"}) {
    const HealthAnswer answer = check_health(server_.target(), service);
    ASSERT_TRUE(answer.status.ok()) << describe(answer.status);
    EXPECT_EQ(answer.serving_status, SERVING) << "service \"" << service << "\"";
  }
  // A request the task holds keeps the server in its grace period.
  auto gate = std::make_shared<rx_test::Gate>(loop_.get_executor());
  std::promise<void> holding;
  ASSERT_TRUE(server_.attach(make_key("held"), [gate, &holding](rx::Endpoint endpoint) -> asio::awaitable<void> {
    boost::json::object payload = co_await endpoint.get();
    holding.set_value();
    if (co_await gate->wait()) {
      co_await endpoint.push(std::move(payload));
    }
  }));
  auto held = send_async(make_key("held"), {});
  wait_for(holding.get_future(), "the task to hold its request");

  std::future<void> shut_down = server_.shutdown(std::chrono::seconds(60), asio::use_future);
  for (const std::string service : {"", "remote_xcomm.v1.RemoteXComm"}) {
    const HealthAnswer answer = check_health(server_.target(), service);
    ASSERT_TRUE(answer.status.ok()) << describe(answer.status);
    EXPECT_EQ(answer.serving_status, NOT_SERVING) << "service \"" << service << "\"";
  }
  gate->open();
  auto [status, reply] = wait_for(held, "the held request's reply");
  EXPECT_TRUE(status.ok()) << describe(status);
  wait_for(shut_down, "the shutdown");
}

rx::ServerOptions without_introspection() {
  rx::ServerOptions options;
  options.health_check_service = false;
  options.reflection = false;
  return options;
}

class WithoutIntrospectionTest : public rx_test::ServerFixture {
 protected:
  WithoutIntrospectionTest() : ServerFixture(without_introspection()) {}
};

TEST_F(WithoutIntrospectionTest, HealthAndReflectionAreUnimplementedWhenSwitchedOff) {
  const HealthAnswer answer = check_health(server_.target(), "");
  EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << describe(answer.status);
  ReflectionClient reflection(server_.target());
  EXPECT_TRUE(reflection.ask(field(REQUEST_LIST_SERVICES, "*")).empty());
  EXPECT_EQ(reflection.finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // Our own service is unaffected.
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  EXPECT_TRUE(send(make_key(), {{"a", 1}}).status.ok());
}

// ---- List ------------------------------------------------------------------------------------------

std::tuple<grpc::Status, rx::EndpointPage> list(rx::Client& client, const std::string& target,
                                                const rx::ListQuery& query) {
  return wait_for(client.list(target, query, asio::use_future), "a List call");
}

using Order = std::tuple<std::string, std::string, std::string, int>;
Order order_of(const rx::TaskInstanceKey& key) { return {key.dag_id, key.run_id, key.task_id, key.map_index}; }

TEST_F(IntrospectionTest, ListPagesThroughEveryEndpointInKeyOrderAndFilters) {
  // 5 DAGs x 5 runs x 10 tasks x 10 map indexes, attached in an order unlike the key order.
  std::set<Order> attached;
  for (int i = 0; i < 2500; ++i) {
    const int n = (i * 7919) % 2500;
    rx::TaskInstanceKey key{"d" + std::to_string(n / 500), "t" + std::to_string(n % 10),
                            "r" + std::to_string((n / 100) % 5), (n / 10) % 10};
    ASSERT_TRUE(server_.attach(key, rx_test::echo_forever));
    attached.insert(order_of(key));
  }
  ASSERT_EQ(attached.size(), 2500U);

  rx::ListQuery query;
  query.page_size = 1000;
  std::vector<Order> seen;
  std::vector<std::size_t> page_sizes;
  for (int page = 0; page < 10; ++page) {  // bounded: 3 pages expected
    auto [status, result] = list(client_, server_.target(), query);
    ASSERT_TRUE(status.ok()) << describe(status);
    EXPECT_EQ(result.total_matching, 2500U);
    page_sizes.push_back(result.endpoints.size());
    for (const rx::EndpointInfo& info : result.endpoints) {
      seen.push_back(order_of(info.state.task_instance));
      EXPECT_EQ(info.state.state, rx::TaskState::idle);
      EXPECT_EQ(info.state.attempt, 1U);
      EXPECT_EQ(info.queued_requests, 0U);
      EXPECT_FALSE(info.holding_request);
    }
    if (result.next_page_token.empty()) {
      break;
    }
    query.page_token = result.next_page_token;
  }
  EXPECT_EQ(page_sizes, (std::vector<std::size_t>{1000, 1000, 500}));
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(std::set<Order>(seen.begin(), seen.end()), attached);  // all of them, none twice (sorted + same size)
  EXPECT_EQ(seen.size(), attached.size());

  rx::ListQuery by_dag;
  by_dag.dag_id = "d3";
  auto [dag_status, dag_page] = list(client_, server_.target(), by_dag);
  ASSERT_TRUE(dag_status.ok()) << describe(dag_status);
  EXPECT_EQ(dag_page.total_matching, 500U);
  EXPECT_EQ(dag_page.endpoints.size(), 500U);
  EXPECT_TRUE(dag_page.next_page_token.empty());
  for (const rx::EndpointInfo& info : dag_page.endpoints) {
    EXPECT_EQ(info.state.task_instance.dag_id, "d3");
  }

  rx::ListQuery exact;
  exact.dag_id = "d1";
  exact.run_id = "r4";
  exact.task_id = "t7";
  auto [exact_status, exact_page] = list(client_, server_.target(), exact);
  ASSERT_TRUE(exact_status.ok()) << describe(exact_status);
  ASSERT_EQ(exact_page.endpoints.size(), 10U);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(exact_page.endpoints[static_cast<std::size_t>(i)].state.task_instance,
              (rx::TaskInstanceKey{"d1", "t7", "r4", i}));
  }

  rx::ListQuery none;
  none.dag_id = "d";  // an exact match, not a prefix
  auto [none_status, none_page] = list(client_, server_.target(), none);
  ASSERT_TRUE(none_status.ok()) << describe(none_status);
  EXPECT_EQ(none_page.total_matching, 0U);
  EXPECT_TRUE(none_page.endpoints.empty());

  for (const std::string token : {"garbage", "[\"d\",\"r\",\"t\"]", "[1,2,3,4]", "[\"d\",\"r\",\"t\",1e99]"}) {
    rx::ListQuery bad;
    bad.page_token = token;
    auto [bad_status, bad_page] = list(client_, server_.target(), bad);
    EXPECT_EQ(bad_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << token << ": " << describe(bad_status);
  }
}

TEST_F(IntrospectionTest, ListBoundsItsPages) {
  for (int i = 0; i < 10'050; ++i) {
    ASSERT_TRUE(server_.attach(make_key("t", i), rx_test::echo_forever));
  }
  auto [status, page] = list(client_, server_.target(), rx::ListQuery{});
  ASSERT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(page.endpoints.size(), 1000U);  // the default page
  EXPECT_EQ(page.total_matching, 10'050U);
  EXPECT_FALSE(page.next_page_token.empty());

  rx::ListQuery huge;
  huge.page_size = 1'000'000;
  auto [huge_status, huge_page] = list(client_, server_.target(), huge);
  ASSERT_TRUE(huge_status.ok()) << describe(huge_status);
  EXPECT_EQ(huge_page.endpoints.size(), 10'000U);  // the cap
  ASSERT_FALSE(huge_page.next_page_token.empty());
  huge.page_token = huge_page.next_page_token;
  auto [rest_status, rest] = list(client_, server_.target(), huge);
  ASSERT_TRUE(rest_status.ok()) << describe(rest_status);
  EXPECT_EQ(rest.endpoints.size(), 50U);
  EXPECT_TRUE(rest.next_page_token.empty());
}

TEST_F(IntrospectionTest, ListAndStatsShowAHeldRequestAndTheQueueBehindIt) {
  auto gate = std::make_shared<rx_test::Gate>(loop_.get_executor());
  std::promise<void> holding;
  ASSERT_TRUE(server_.attach(make_key("held"), [gate, &holding](rx::Endpoint endpoint) -> asio::awaitable<void> {
    for (bool first = true;; first = false) {
      boost::json::object payload = co_await endpoint.get();
      if (first) {
        holding.set_value();
        if (!co_await gate->wait()) {
          co_return;
        }
      }
      co_await endpoint.push(std::move(payload));
    }
  }));
  ASSERT_TRUE(server_.attach(make_key("idle"), rx_test::echo_forever));
  auto first = send_async(make_key("held"), {{"n", 1}});
  wait_for(holding.get_future(), "the task to hold its request");
  auto second = send_async(make_key("held"), {{"n", 2}});
  // The second request is queued once the server has routed it: wait on the server's own count.
  rx::ServerStats stats;
  for (int i = 0; i < 3000 && (stats = server_.stats()).queued_requests != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(stats.queued_requests, 1U);
  EXPECT_EQ(stats.requests_in_flight, 2U);
  EXPECT_EQ(stats.endpoints, 2U);

  auto [status, page] = list(client_, server_.target(), rx::ListQuery{});
  ASSERT_TRUE(status.ok()) << describe(status);
  ASSERT_EQ(page.endpoints.size(), 2U);
  const rx::EndpointInfo& held = page.endpoints[0];  // "held" < "idle"
  EXPECT_EQ(held.state.task_instance, make_key("held"));
  EXPECT_EQ(held.state.state, rx::TaskState::running);
  EXPECT_TRUE(held.holding_request);
  EXPECT_EQ(held.queued_requests, 1U);
  EXPECT_NE(held.state.since, std::chrono::system_clock::time_point{});
  const rx::EndpointInfo& idle = page.endpoints[1];
  EXPECT_EQ(idle.state.task_instance, make_key("idle"));
  EXPECT_EQ(idle.state.state, rx::TaskState::idle);
  EXPECT_FALSE(idle.holding_request);

  gate->open();
  EXPECT_TRUE(std::get<0>(wait_for(first, "the first reply")).ok());
  EXPECT_TRUE(std::get<0>(wait_for(second, "the second reply")).ok());
}

// ---- Stats -----------------------------------------------------------------------------------------

std::uint64_t code_count(const rx::ServerStats& stats, std::string_view method, grpc::StatusCode code) {
  const rx::MethodStats* entry = stats.find(method);
  EXPECT_NE(entry, nullptr) << method;
  return entry == nullptr ? 0 : entry->by_code[static_cast<std::size_t>(code)];
}

std::uint64_t latency_count(const rx::MethodStats& method) {
  std::uint64_t total = 0;
  for (const rx::LatencyBucket& bucket : method.latency) {
    total += bucket.count;
  }
  return total;
}

TEST_F(IntrospectionTest, StatsCountRequestsByMethodAndStatusOnTheServerAndOverTheWire) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  constexpr int OK_SENDS = 7;
  constexpr int MISSING = 3;
  constexpr int MALFORMED = 2;
  for (int i = 0; i < OK_SENDS; ++i) {
    ASSERT_TRUE(send(make_key(), {{"i", i}}).status.ok());
  }
  for (int i = 0; i < MISSING; ++i) {
    EXPECT_EQ(send(make_key("missing"), {}).status.error_code(), grpc::StatusCode::NOT_FOUND);
  }
  for (int i = 0; i < MALFORMED; ++i) {
    EXPECT_EQ(rx_test::raw_send(server_.target(), make_key(), "[not json").error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  // Over Exchange: every frame counts under "Exchange".
  boost::asio::io_context exchange_context;
  rx::ClientOptions exchange_options;
  exchange_options.transport = rx::Transport::exchange;
  rx::Client exchange_client(loop_, exchange_options);
  for (int i = 0; i < 4; ++i) {
    auto [status, reply] =
        wait_for(exchange_client.send(server_.target(), make_key(), {{"i", i}}, asio::use_future), "a send");
    EXPECT_TRUE(status.ok()) << describe(status);
  }
  auto [missing_status, missing_reply] =
      wait_for(exchange_client.send(server_.target(), make_key("missing"), {}, asio::use_future), "a send");
  EXPECT_EQ(missing_status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(
      std::get<0>(wait_for(client_.get_state(server_.target(), make_key("missing"), asio::use_future), "a get_state"))
          .error_code(),
      grpc::StatusCode::NOT_FOUND);

  const rx::ServerStats local = server_.stats();
  auto [status, remote] = wait_for(client_.stats(server_.target(), asio::use_future), "a Stats call");
  ASSERT_TRUE(status.ok()) << describe(status);
  for (const rx::ServerStats* stats : std::array<const rx::ServerStats*, 2>{&local, &remote}) {
    EXPECT_EQ(code_count(*stats, "Send", grpc::StatusCode::OK), static_cast<std::uint64_t>(OK_SENDS));
    EXPECT_EQ(code_count(*stats, "Send", grpc::StatusCode::NOT_FOUND), static_cast<std::uint64_t>(MISSING));
    EXPECT_EQ(code_count(*stats, "Send", grpc::StatusCode::INVALID_ARGUMENT), static_cast<std::uint64_t>(MALFORMED));
    const rx::MethodStats* send_stats = stats->find("Send");
    ASSERT_NE(send_stats, nullptr);
    EXPECT_EQ(send_stats->requests(), static_cast<std::uint64_t>(OK_SENDS + MISSING + MALFORMED));
    EXPECT_EQ(send_stats->errors(), static_cast<std::uint64_t>(MISSING + MALFORMED));
    EXPECT_EQ(latency_count(*send_stats), send_stats->requests());
    EXPECT_GT(send_stats->percentile_us(0.5), 0.0);
    EXPECT_LE(send_stats->percentile_us(0.5), send_stats->percentile_us(0.99));
    EXPECT_EQ(code_count(*stats, "Exchange", grpc::StatusCode::OK), 4U);
    EXPECT_EQ(code_count(*stats, "Exchange", grpc::StatusCode::NOT_FOUND), 1U);
    EXPECT_EQ(code_count(*stats, "GetState", grpc::StatusCode::NOT_FOUND), 1U);
    EXPECT_EQ(stats->endpoints, 1U);
    EXPECT_EQ(stats->requests_in_flight, 0U);
    EXPECT_EQ(stats->queued_requests, 0U);
    EXPECT_EQ(stats->exchange_streams, 1U);
    EXPECT_EQ(stats->watch_streams, 0U);
    ASSERT_EQ(stats->methods.size(), 7U);
  }
  EXPECT_GE(remote.uptime, local.uptime);
  EXPECT_EQ(remote.find("Send")->latency.size(), local.find("Send")->latency.size());

  // The Stats call itself shows in the next one.
  auto [again_status, again] = wait_for(client_.stats(server_.target(), asio::use_future), "a Stats call");
  ASSERT_TRUE(again_status.ok());
  EXPECT_EQ(code_count(again, "Stats", grpc::StatusCode::OK), 1U);
}

TEST_F(IntrospectionTest, StatsRenderAsPrometheusTextAndForPeople) {
  ASSERT_TRUE(server_.attach(make_key(), rx_test::echo_forever));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(send(make_key(), {{"i", i}}).status.ok());
  }
  EXPECT_EQ(send(make_key("missing"), {}).status.error_code(), grpc::StatusCode::NOT_FOUND);
  const rx::ServerStats stats = server_.stats();
  const std::string text = rx::to_prometheus(stats);

  // Every line is a comment (# HELP / # TYPE) or a sample: name, optional labels, a value.
  const std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*\})? (\+Inf|-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)$)");
  const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$)");
  std::istringstream lines(text);
  std::string line;
  std::set<std::string> typed;
  std::vector<std::pair<std::string, double>> send_buckets;
  double send_count = -1;
  int samples = 0;
  while (std::getline(lines, line)) {
    std::smatch match;
    if (std::regex_match(line, match, comment)) {
      if (match[1] == "TYPE") {
        EXPECT_TRUE(typed.insert(line.substr(7, line.find(' ', 7) - 7)).second) << "a family typed twice: " << line;
      }
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, match, sample)) << "not a Prometheus line: \"" << line << "\"";
    ++samples;
    const std::string name = match[1];
    const std::string family = name.substr(0, name.rfind("_bucket") == name.size() - 7 ? name.size() - 7 : name.size());
    EXPECT_TRUE(typed.contains(family) || typed.contains(name.substr(0, name.rfind('_'))))
        << "a sample before its # TYPE: " << line;
    if (line.starts_with("remote_xcomm_request_duration_seconds_bucket{method=\"Send\"")) {
      send_buckets.emplace_back(line, std::stod(match[4]));
    }
    if (line.starts_with("remote_xcomm_request_duration_seconds_count{method=\"Send\"}")) {
      send_count = std::stod(match[4]);
    }
  }
  EXPECT_GT(samples, 20);
  EXPECT_NE(text.find("remote_xcomm_requests_total{method=\"Send\",code=\"OK\"} 5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("remote_xcomm_requests_total{method=\"Send\",code=\"NOT_FOUND\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("remote_xcomm_endpoints 1\n"), std::string::npos);
  // A histogram's buckets are cumulative, and +Inf is the count.
  ASSERT_FALSE(send_buckets.empty());
  for (std::size_t i = 1; i < send_buckets.size(); ++i) {
    EXPECT_LE(send_buckets[i - 1].second, send_buckets[i].second) << send_buckets[i].first;
  }
  EXPECT_NE(send_buckets.back().first.find("le=\"+Inf\""), std::string::npos);
  EXPECT_EQ(send_buckets.back().second, 6.0);
  EXPECT_EQ(send_count, 6.0);

  const std::string human = rx::to_text(stats);
  EXPECT_NE(human.find("endpoints"), std::string::npos);
  EXPECT_NE(human.find("NOT_FOUND 1"), std::string::npos) << human;
  EXPECT_TRUE(std::regex_search(human, std::regex(R"(\nSend +6 +1 +[0-9.]+ (us|ms|s) )"))) << human;
}

TEST(StatsRendering, PercentilesComeFromTheBuckets) {
  rx::MethodStats method;
  method.latency = {{10, 50}, {20, 40}, {40, 9}, {80, 1}};
  EXPECT_EQ(method.percentile_us(0.5), 10);
  EXPECT_EQ(method.percentile_us(0.9), 20);
  EXPECT_EQ(method.percentile_us(0.99), 40);
  EXPECT_EQ(method.percentile_us(1.0), 80);
  EXPECT_EQ(rx::MethodStats{}.percentile_us(0.5), 0);
  EXPECT_EQ(rx::status_code_name(4), "DEADLINE_EXCEEDED");
  EXPECT_EQ(rx::status_code_name(99), "CODE_99");
}

// ---- the log sink ------------------------------------------------------------------------------------

class CapturedLog {
 public:
  explicit CapturedLog(rx::LogLevel level) {
    rx::set_log_sink(
        [this](rx::LogLevel line_level, std::string_view line) {
          const std::lock_guard lock(mutex_);
          lines_.emplace_back(line_level, std::string(line));
        },
        level);
  }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;
  ~CapturedLog() { rx::set_log_sink({}); }

  std::vector<std::pair<rx::LogLevel, std::string>> lines() {
    const std::lock_guard lock(mutex_);
    return lines_;
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<rx::LogLevel, std::string>> lines_;
};

TEST(LogSink, TheSinkGetsTheServersLifecycleAndNeverAPayload) {
  const std::string secret = "s3cr3t-payload-7f1c";
  std::vector<std::pair<rx::LogLevel, std::string>> lines;
  {
    CapturedLog log(rx::LogLevel::debug);
    boost::asio::io_context context;
    rx::Loop loop(context);
    std::string target;
    {
      rx::Server server(loop);
      ASSERT_TRUE(server.attach(make_key(), rx_test::echo_forever));
      server.start();
      target = server.target();
      std::thread runner([&context] { context.run(); });
      {
        rx::Client client(loop);
        auto [status, reply] =
            wait_for(client.send(target, make_key(), {{"secret", secret}}, asio::use_future), "a send");
        EXPECT_TRUE(status.ok()) << describe(status);
        EXPECT_EQ(reply.at("secret").as_string(), secret);
        EXPECT_FALSE(rx_test::raw_send(target, make_key(), "{\"" + secret + "\": [").ok());
      }
      server.shutdown();
      runner.join();
    }
    lines = log.lines();
  }
  ASSERT_FALSE(lines.empty());
  bool listening = false;
  bool refused = false;
  bool attached = false;
  for (const auto& [level, line] : lines) {
    EXPECT_EQ(line.find(secret), std::string::npos) << line;
    EXPECT_FALSE(line.ends_with("\n"));
    listening = listening || (level == rx::LogLevel::info && line.find("listening on") != std::string::npos);
    refused = refused || (level == rx::LogLevel::debug && line.find("refused: INVALID_ARGUMENT") != std::string::npos);
    attached = attached || (level == rx::LogLevel::debug && line.find("attached") != std::string::npos);
  }
  EXPECT_TRUE(listening);
  EXPECT_TRUE(refused);
  EXPECT_TRUE(attached);
}

TEST(LogSink, QuietByDefaultAndLevelsFilter) {
  {
    ::testing::internal::CaptureStderr();
    boost::asio::io_context context;
    rx::Server server(context);
    server.start();
    server.shutdown();
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  }
  std::vector<std::pair<rx::LogLevel, std::string>> lines;
  {
    CapturedLog log(rx::LogLevel::error);  // the lifecycle is info: nothing at error
    boost::asio::io_context context;
    rx::Server server(context);
    server.start();
    server.shutdown();
    lines = log.lines();
  }
  EXPECT_TRUE(lines.empty());
  EXPECT_EQ(rx::to_string(rx::LogLevel::warning), "warning");
}

}  // namespace

// Security (docs/security.md): TLS and mutual TLS with a throw-away CA made by openssl at test
// time, and bearer tokens: the scheduler token reaches everything, an endpoint's token its own
// task instance only; missing -> UNAUTHENTICATED, wrong -> PERMISSION_DENIED, before parsing.
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/log.hpp>
#include <remote_xcomm/security.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include "codec.hpp"

#include <boost/asio/use_future.hpp>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace pb = remote_xcomm::v1;
using rx_test::DEFAULT_DEADLINE;
using rx_test::describe;
using rx_test::make_key;
using rx_test::wait_for;

// ---- a throw-away CA -----------------------------------------------------------------------------

// The certificates of tests/helpers/make_test_ca.sh, made once per test process in a temporary
// directory removed at exit.
struct TestCa {
  std::filesystem::path dir;
  std::string pem(const std::string& name) const { return rx::read_pem_file((dir / name).string()); }
  std::string path(const std::string& name) const { return (dir / name).string(); }
  ~TestCa() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
};

const TestCa& test_ca() {
  static const TestCa ca = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "rx-test-ca-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("cannot make a temporary directory");
    }
    const std::string command = std::string(MAKE_TEST_CA).append(" ").append(pattern);
    if (std::system(command.c_str()) != 0) {
      throw std::runtime_error("make_test_ca.sh failed (is openssl installed?)");
    }
    return TestCa{pattern};
  }();
  return ca;
}

rx::ServerTls server_tls(bool mutual) {
  rx::ServerTls tls;
  tls.certificate_chain = test_ca().pem("server.pem");
  tls.private_key = test_ca().pem("server.key");
  if (mutual) {
    tls.client_ca = test_ca().pem("ca.pem");
  }
  return tls;
}

rx::ClientTls client_tls(const std::string& roots, const std::string& identity = {}) {
  rx::ClientTls tls;
  tls.root_certificates = test_ca().pem(roots);
  if (!identity.empty()) {
    tls.certificate_chain = test_ca().pem(identity + ".pem");
    tls.private_key = test_ca().pem(identity + ".key");
  }
  return tls;
}

// A Server with `options` on 127.0.0.1 port 0 and echo endpoints "a", "b" and "open".
class SecureServer : public rx_test::ServerFixture {
 protected:
  explicit SecureServer(rx::ServerOptions options) : ServerFixture(std::move(options)) {}

  // Sends {"n": 1} to `task` with a Client of `options`; the status.
  grpc::Status send_with(rx::ClientOptions options, const std::string& task = "a") {
    rx::Client client(loop_, std::move(options));
    auto [status, reply] = wait_for(client.send(server_.target(), make_key(task), boost::json::object{{"n", 1}},
                                                rx::SendOptions{DEFAULT_DEADLINE}, asio::use_future),
                                    "a reply");
    if (status.ok()) {
      EXPECT_EQ(reply, (boost::json::object{{"n", 1}}));
    }
    return status;
  }
};

// ---- TLS -------------------------------------------------------------------------------------

rx::ServerOptions tls_options(bool mutual) {
  rx::ServerOptions options;
  options.tls = server_tls(mutual);
  return options;
}

class TlsTest : public SecureServer {
 protected:
  TlsTest() : SecureServer(tls_options(false)) {}
  void SetUp() override {
    SecureServer::SetUp();
    ASSERT_TRUE(server_.attach(make_key("a"), rx_test::echo_forever));
  }
};

TEST_F(TlsTest, ClientTrustingTheServersCaIsServed) {
  rx::ClientOptions options;
  options.tls = client_tls("ca.pem");
  EXPECT_TRUE(send_with(options).ok());
}

TEST_F(TlsTest, ExchangeTransportIsServedOverTls) {
  rx::ClientOptions options;
  options.tls = client_tls("ca.pem");
  options.transport = rx::Transport::exchange;
  EXPECT_TRUE(send_with(options).ok());
}

TEST_F(TlsTest, ClientTrustingAnotherCaGetsUnavailable) {
  rx::ClientOptions options;
  options.tls = client_tls("other_ca.pem");
  EXPECT_EQ(send_with(options).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, PlainTextClientGetsUnavailable) {
  EXPECT_EQ(send_with({}).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, CertificatesReadFromFilesWork) {
  rx::ClientOptions options;
  options.tls.emplace();
  options.tls->root_certificates = rx::read_pem_file(test_ca().path("ca.pem"));
  EXPECT_TRUE(send_with(options).ok());
}

class MutualTlsTest : public SecureServer {
 protected:
  MutualTlsTest() : SecureServer(tls_options(true)) {}
  void SetUp() override {
    SecureServer::SetUp();
    ASSERT_TRUE(server_.attach(make_key("a"), rx_test::echo_forever));
  }
};

TEST_F(MutualTlsTest, ClientWithACertificateFromTheCaIsServed) {
  rx::ClientOptions options;
  options.tls = client_tls("ca.pem", "client");
  EXPECT_TRUE(send_with(options).ok());
}

TEST_F(MutualTlsTest, ClientWithoutACertificateIsRefused) {
  rx::ClientOptions options;
  options.tls = client_tls("ca.pem");
  EXPECT_EQ(send_with(options).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(MutualTlsTest, ClientWithACertificateFromAnotherCaIsRefused) {
  rx::ClientOptions options;
  options.tls = client_tls("ca.pem", "other_client");
  EXPECT_EQ(send_with(options).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(TlsOptions, MissingOrInvalidPemIsReportedClearly) {
  EXPECT_THROW((void)rx::read_pem_file("/nonexistent/rx/cert.pem"), std::runtime_error);
  const std::string not_pem = test_ca().path("not.pem");
  {
    std::FILE* file = std::fopen(not_pem.c_str(), "w");
    ASSERT_NE(file, nullptr);
    std::fputs("not a certificate\n", file);
    std::fclose(file);
  }
  EXPECT_THROW((void)rx::read_pem_file(not_pem), std::runtime_error);

  asio::io_context context;
  rx::ServerOptions options;
  options.tls.emplace();  // no certificate, no key
  rx::Server server(context, options);
  EXPECT_THROW(server.start(), std::invalid_argument);

  rx::ClientOptions client_options;
  client_options.tls.emplace();
  client_options.tls->certificate_chain = test_ca().pem("client.pem");  // without its key
  EXPECT_THROW(rx::Client(context, client_options), std::invalid_argument);
}

// ---- bearer tokens -----------------------------------------------------------------------------

constexpr const char* SCHEDULER_TOKEN = "scheduler-secret-0123456789";
constexpr const char* TOKEN_A = "token-of-a-abcdef";
constexpr const char* TOKEN_B = "token-of-b-ghijkl";

// Every log line, at debug, to check that no token is ever written.
struct LogCapture {
  std::mutex mutex;
  std::vector<std::string> lines;
  LogCapture() {
    rx::set_log_sink(
        [this](rx::LogLevel /*level*/, std::string_view line) {
          const std::lock_guard lock(mutex);
          lines.emplace_back(line);
        },
        rx::LogLevel::debug);
  }
  ~LogCapture() { rx::set_log_sink({}); }
  std::vector<std::string> taken() {
    const std::lock_guard lock(mutex);
    return lines;
  }
};

rx::ServerOptions token_options() {
  rx::ServerOptions options;
  options.scheduler_token = SCHEDULER_TOKEN;
  return options;
}

// Records the metadata of each request, then echoes.
struct SeenMetadata {
  std::mutex mutex;
  std::vector<std::string> keys;
};

asio::awaitable<void> record_metadata(std::shared_ptr<SeenMetadata> seen, rx::Endpoint endpoint) {
  for (;;) {
    rx::Request request = co_await endpoint.next();
    {
      const std::lock_guard lock(seen->mutex);
      for (const auto& [key, value] : request.metadata()) {
        seen->keys.push_back(key);
      }
    }
    boost::json::object payload = request.payload();
    co_await request.reply(std::move(payload));
  }
}

asio::awaitable<void> push_secret_then_echo(rx::Endpoint endpoint) {
  co_await endpoint.xcom_push("secret", boost::json::value(endpoint.key().task_id));
  for (;;) {
    boost::json::object payload = co_await endpoint.get();
    co_await endpoint.push(std::move(payload));
  }
}

class TokenTest : public SecureServer {
 protected:
  TokenTest() : SecureServer(token_options()) {}
  void SetUp() override {
    SecureServer::SetUp();
    rx::AttachOptions a;
    a.token = TOKEN_A;
    rx::AttachOptions b;
    b.token = TOKEN_B;
    ASSERT_TRUE(server_.attach(make_key("a"), push_secret_then_echo, a));
    ASSERT_TRUE(server_.attach(make_key("b"), push_secret_then_echo, b));
    ASSERT_TRUE(server_.attach(make_key("open"), push_secret_then_echo));  // no token of its own
    // Each task pushes its XCom once it has run: run each once, with the scheduler token.
    for (const char* task : {"a", "b", "open"}) {
      ASSERT_TRUE(send_with(with_token(SCHEDULER_TOKEN), task).ok()) << task;
    }
  }

  static rx::ClientOptions with_token(const std::string& token) {
    rx::ClientOptions options;
    options.token = token;
    return options;
  }

  // A stock gRPC stub (as any language's client), with `authorization` as given (none if empty).
  std::unique_ptr<pb::RemoteXComm::Stub> stub() {
    return pb::RemoteXComm::NewStub(grpc::CreateChannel(server_.target(), grpc::InsecureChannelCredentials()));
  }
  static void prepare(grpc::ClientContext& context, const std::string& authorization) {
    context.set_deadline(std::chrono::system_clock::now() + DEFAULT_DEADLINE);
    if (!authorization.empty()) {
      context.AddMetadata("authorization", authorization);
    }
  }
  grpc::Status raw_send(const std::string& authorization, const std::string& task, const std::string& payload) {
    grpc::ClientContext context;
    prepare(context, authorization);
    pb::SendRequest request;
    rx::detail::to_proto(make_key(task), *request.mutable_key());
    request.set_payload_json(payload);
    pb::SendResponse response;
    return stub()->Send(&context, request, &response);
  }
  grpc::Status raw_pull(const std::string& authorization, const std::string& task, bool all_map_indexes = false) {
    grpc::ClientContext context;
    prepare(context, authorization);
    pb::PullRequest request;
    request.set_dag_id("dag");
    request.set_run_id("run");
    request.set_task_id(task);
    request.set_key("secret");
    request.set_all_map_indexes(all_map_indexes);
    pb::PullResponse response;
    grpc::Status status = stub()->Pull(&context, request, &response);
    if (status.ok()) {
      EXPECT_EQ(response.xcoms_size(), 1);
      EXPECT_EQ(response.xcoms(0).value_json(), "\"" + task + "\"");
    }
    return status;
  }
  grpc::Status raw_get_state(const std::string& authorization, const std::string& task) {
    grpc::ClientContext context;
    prepare(context, authorization);
    pb::GetStateRequest request;
    rx::detail::to_proto(make_key(task), *request.mutable_task_instance());
    pb::TaskStateInfo response;
    return stub()->GetState(&context, request, &response);
  }
  // The first message of a Watch replaying from the start, or its status.
  grpc::Status raw_watch(const std::string& authorization, const std::string& task) {
    grpc::ClientContext context;
    prepare(context, authorization);
    pb::WatchRequest request;
    request.set_dag_id("dag");
    request.set_run_id("run");
    request.set_task_id(task);  // empty: the whole run
    request.set_from_start(true);
    auto reader = stub()->Watch(&context, request);
    pb::WatchResponse response;
    if (reader->Read(&response)) {
      EXPECT_GT(response.events_size(), 0);
      context.TryCancel();
      reader->Finish();
      return grpc::Status::OK;
    }
    return reader->Finish();
  }
  grpc::Status raw_list(const std::string& authorization) {
    grpc::ClientContext context;
    prepare(context, authorization);
    pb::ListResponse response;
    return stub()->List(&context, pb::ListRequest(), &response);
  }
  grpc::Status raw_stats(const std::string& authorization) {
    grpc::ClientContext context;
    prepare(context, authorization);
    pb::StatsResponse response;
    return stub()->Stats(&context, pb::StatsRequest(), &response);
  }

  static std::string bearer(const char* token) { return std::string("Bearer ").append(token); }
};

TEST_F(TokenTest, SendWithoutATokenIsUnauthenticated) {
  EXPECT_EQ(raw_send("", "a", "{}").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(raw_send("Basic dXNlcjpwYXNz", "a", "{}").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(send_with({}, "a").error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(TokenTest, SchedulerTokenReachesEveryEndpoint) {
  for (const char* task : {"a", "b", "open"}) {
    EXPECT_TRUE(raw_send(bearer(SCHEDULER_TOKEN), task, "{}").ok()) << task;
    EXPECT_TRUE(raw_send(std::string("bearer ").append(SCHEDULER_TOKEN), task, "{}").ok()) << task;
  }
}

TEST_F(TokenTest, EndpointTokenReachesItsOwnEndpointOnly) {
  EXPECT_TRUE(send_with(with_token(TOKEN_A), "a").ok());
  const grpc::Status to_b = send_with(with_token(TOKEN_A), "b");
  EXPECT_EQ(to_b.error_code(), grpc::StatusCode::PERMISSION_DENIED) << describe(to_b);
  EXPECT_EQ(send_with(with_token(TOKEN_A), "open").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // Same answer for an endpoint that does not exist: a token learns nothing of others.
  EXPECT_EQ(send_with(with_token(TOKEN_A), "missing").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(send_with(with_token("wrong"), "a").error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(TokenTest, TokenIsCheckedBeforeThePayloadIsParsed) {
  EXPECT_EQ(raw_send(bearer(TOKEN_B), "a", "{not json").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(raw_send("", "a", "{not json").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(raw_send(bearer(TOKEN_A), "a", "{not json").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Bad input against the token checks: a call without a token is refused before anything it sent
// is decoded; a token is checked against the key once the key decodes, before the payload.
TEST_F(TokenTest, MissingTokenIsRefusedBeforeTheRequestIsDecodedAndATokenOnceTheKeyIs) {
  const std::string long_task(5000, 't');  // over the default key field limit (1024 bytes)
  const std::string not_utf8("\xff\xfe", 2);
  for (const std::string& task : {long_task, not_utf8}) {
    EXPECT_EQ(raw_send("", task, "{}").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(raw_get_state("", task).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(raw_watch("", task).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    // With a token, the key must decode before the token can be checked against it.
    const grpc::Status wrong_token = raw_send(bearer(TOKEN_A), task, "{}");
    EXPECT_EQ(wrong_token.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(wrong_token);
    EXPECT_NE(wrong_token.error_message().find("task_id"), std::string::npos) << describe(wrong_token);
    EXPECT_EQ(raw_get_state(bearer(TOKEN_A), task).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  // List and Stats need the scheduler token whatever they ask.
  EXPECT_EQ(raw_list(bearer(TOKEN_A)).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The server still serves its endpoints.
  EXPECT_TRUE(raw_send(bearer(TOKEN_A), "a", "{}").ok());
}

TEST_F(TokenTest, ExchangeChecksEachFrameAgainstItsTaskInstance) {
  rx::ClientOptions options = with_token(TOKEN_A);
  options.transport = rx::Transport::exchange;
  rx::Client client(loop_, options);
  auto send = [&](const std::string& task) {
    return std::get<0>(wait_for(client.send(server_.target(), make_key(task), boost::json::object{{"n", 1}},
                                            rx::SendOptions{DEFAULT_DEADLINE}, asio::use_future),
                                "a reply"));
  };
  EXPECT_TRUE(send("a").ok());
  EXPECT_EQ(send("b").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(send("a").ok());  // the same stream goes on
}

TEST_F(TokenTest, ExchangeWithoutATokenIsUnauthenticated) {
  rx::ClientOptions options;
  options.transport = rx::Transport::exchange;
  EXPECT_EQ(send_with(options, "a").error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(TokenTest, PullReachesOnlyTheTokensTaskInstance) {
  EXPECT_TRUE(raw_pull(bearer(TOKEN_A), "a").ok());
  EXPECT_EQ(raw_pull(bearer(TOKEN_A), "b").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(raw_pull(bearer(TOKEN_A), "a", true).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(raw_pull("", "a").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(raw_pull(bearer(SCHEDULER_TOKEN), "b").ok());
}

TEST_F(TokenTest, ClientPullWithAnEndpointToken) {
  rx::Client client(loop_, with_token(TOKEN_B));
  rx::XComQuery query;
  query.dag_id = "dag";
  query.run_id = "run";
  query.task_id = "b";
  query.key = "secret";
  auto [status, xcoms] = wait_for(client.pull(server_.target(), query, asio::use_future), "a pull");
  ASSERT_TRUE(status.ok()) << describe(status);
  ASSERT_EQ(xcoms.size(), 1U);
  query.task_id = "a";
  EXPECT_EQ(std::get<0>(wait_for(client.pull(server_.target(), query, asio::use_future), "a pull")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(TokenTest, GetStateReachesOnlyTheTokensTaskInstance) {
  EXPECT_TRUE(raw_get_state(bearer(TOKEN_A), "a").ok());
  EXPECT_EQ(raw_get_state(bearer(TOKEN_A), "b").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(raw_get_state("", "b").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(raw_get_state(bearer(SCHEDULER_TOKEN), "b").ok());
}

TEST_F(TokenTest, WatchReachesOnlyTheTokensTaskInstance) {
  EXPECT_TRUE(raw_watch(bearer(TOKEN_A), "a").ok());
  EXPECT_EQ(raw_watch(bearer(TOKEN_A), "b").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(raw_watch(bearer(TOKEN_A), "").error_code(), grpc::StatusCode::PERMISSION_DENIED);  // the whole run
  EXPECT_EQ(raw_watch("", "a").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(raw_watch(bearer(SCHEDULER_TOKEN), "").ok());
}

TEST_F(TokenTest, ListAndStatsNeedTheSchedulerToken) {
  EXPECT_EQ(raw_list("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(raw_list(bearer(TOKEN_A)).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(raw_list(bearer(SCHEDULER_TOKEN)).ok());
  EXPECT_EQ(raw_stats("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(raw_stats(bearer(TOKEN_A)).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(raw_stats(bearer(SCHEDULER_TOKEN)).ok());
}

TEST_F(TokenTest, HealthCheckNeedsNoToken) {
  grpc::GenericStub stub(grpc::CreateChannel(server_.target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + DEFAULT_DEADLINE);
  grpc::Slice empty("");
  const grpc::ByteBuffer request(&empty, 1);  // HealthCheckRequest{service: ""}
  grpc::ByteBuffer response;
  grpc::Status status;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status outcome) { done.set_value(std::move(outcome)); });
  status = wait_for(done.get_future(), "a health check");
  EXPECT_TRUE(status.ok()) << describe(status);
}

TEST_F(TokenTest, DetachedEndpointsTokenReachesNothing) {
  ASSERT_TRUE(server_.detach(make_key("a")));
  EXPECT_EQ(raw_pull(bearer(TOKEN_A), "a").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(raw_pull(bearer(SCHEDULER_TOKEN), "a").ok());  // retained, for the scheduler
  // Attached again with a new token: the old one stays refused.
  rx::AttachOptions again;
  again.token = "a-second-token";
  ASSERT_TRUE(server_.attach(make_key("a"), push_secret_then_echo, again));
  EXPECT_EQ(raw_send(bearer(TOKEN_A), "a", "{}").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(raw_send("Bearer a-second-token", "a", "{}").ok());
}

TEST_F(TokenTest, TaskCodeNeverSeesTheToken) {
  auto seen = std::make_shared<SeenMetadata>();
  rx::AttachOptions attach;
  attach.token = "token-of-m";
  ASSERT_TRUE(server_.attach(
      make_key("m"), [seen](rx::Endpoint endpoint) { return record_metadata(seen, std::move(endpoint)); }, attach));
  grpc::ClientContext context;
  prepare(context, "Bearer token-of-m");
  context.AddMetadata("x-trace", "1");
  pb::SendRequest request;
  rx::detail::to_proto(make_key("m"), *request.mutable_key());
  request.set_payload_json("{}");
  pb::SendResponse response;
  ASSERT_TRUE(stub()->Send(&context, request, &response).ok());
  rx::ClientOptions options = with_token("token-of-m");
  options.transport = rx::Transport::exchange;
  ASSERT_TRUE(send_with(options, "m").ok());
  const std::lock_guard lock(seen->mutex);
  EXPECT_NE(std::find(seen->keys.begin(), seen->keys.end(), "x-trace"), seen->keys.end());
  EXPECT_EQ(std::find(seen->keys.begin(), seen->keys.end(), "authorization"), seen->keys.end());
}

TEST_F(TokenTest, TokensNeverAppearInTheLog) {
  LogCapture capture;
  rx::AttachOptions attach;
  attach.token = "token-of-logged";
  ASSERT_TRUE(server_.attach(make_key("logged"), rx_test::echo_forever, attach));
  EXPECT_TRUE(send_with(with_token("token-of-logged"), "logged").ok());
  EXPECT_EQ(send_with(with_token(TOKEN_A), "logged").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(raw_send("Bearer not-a-token-at-all", "logged", "{}").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(raw_send("", "logged", "{}").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(raw_send(bearer(SCHEDULER_TOKEN), "logged", "{bad").error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(server_.detach(make_key("logged")));
  const std::vector<std::string> lines = capture.taken();
  EXPECT_FALSE(lines.empty());  // refusals and attach/detach are logged at debug
  for (const std::string& line : lines) {
    for (const char* token : {SCHEDULER_TOKEN, TOKEN_A, "token-of-logged", "not-a-token-at-all"}) {
      EXPECT_EQ(line.find(token), std::string::npos) << line;
    }
  }
}

TEST(TokenOptions, EndpointTokenWithoutASchedulerTokenIsRefused) {
  asio::io_context context;
  rx::Server server(context);
  rx::AttachOptions attach;
  attach.token = "t";
  EXPECT_THROW((void)server.attach(make_key("a"), rx_test::echo_forever, attach), std::invalid_argument);
  EXPECT_EQ(server.endpoint_count(), 0U);
}

// ---- listening address ---------------------------------------------------------------------------

TEST(BindWarning, LoopbackAndUnixSocketsDoNotWarn) {
  LogCapture capture;
  for (const std::string address : {"127.0.0.1:0", "[::1]:0", "localhost:0"}) {
    asio::io_context context;
    rx::ServerOptions options;
    options.address = address;
    rx::Server server(context, options);
    try {
      server.start();
    } catch (const std::runtime_error&) {
      continue;  // no IPv6 loopback here: nothing to check
    }
    server.shutdown();
  }
  for (const std::string& line : capture.taken()) {
    EXPECT_EQ(line.find("without TLS"), std::string::npos) << line;
  }
}

}  // namespace

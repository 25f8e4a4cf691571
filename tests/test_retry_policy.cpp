// ClientOptions::retry: which calls gRPC tries again after UNAVAILABLE, how often, and which it
// never retries. A proxy in front of a real server fails the first attempts of each method with
// UNAVAILABLE, then forwards; it counts the attempts it saw, so each test knows exactly how many
// the client made. (A server killed and restarted under a retrying client: tests/test_faults.cpp.)
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/use_future.hpp>
#include <boost/json/parse.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

namespace {

namespace asio = boost::asio;
namespace pb = remote_xcomm::v1;
using namespace std::chrono_literals;
using rx_test::make_key;

// Forwards every method but Exchange to `backend`, after failing the first `failures` attempts of
// each with UNAVAILABLE (as a server that went away does). Synchronous gRPC service: a test helper.
class FlakyProxy final : public pb::RemoteXComm::Service {
 public:
  FlakyProxy(const std::string& backend, int failures)
      : backend_(pb::RemoteXComm::NewStub(grpc::CreateChannel(backend, grpc::InsecureChannelCredentials()))),
        failures_(failures) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    if (!server_) {
      throw std::runtime_error("the proxy could not start");
    }
  }
  FlakyProxy(const FlakyProxy&) = delete;
  FlakyProxy& operator=(const FlakyProxy&) = delete;
  ~FlakyProxy() override { server_->Shutdown(std::chrono::system_clock::now() + 5s); }

  [[nodiscard]] std::string target() const { return std::string("127.0.0.1:").append(std::to_string(port_)); }
  // Attempts of `method` that reached the proxy.
  [[nodiscard]] int attempts(const std::string& method) {
    const std::lock_guard lock(mutex_);
    return attempts_[method];
  }

  grpc::Status Send(grpc::ServerContext* context, const pb::SendRequest* request, pb::SendResponse* response) override {
    return forward("Send", context, [&](grpc::ClientContext* to) { return backend_->Send(to, *request, response); });
  }
  grpc::Status Pull(grpc::ServerContext* context, const pb::PullRequest* request, pb::PullResponse* response) override {
    return forward("Pull", context, [&](grpc::ClientContext* to) { return backend_->Pull(to, *request, response); });
  }
  grpc::Status GetState(grpc::ServerContext* context, const pb::GetStateRequest* request,
                        pb::TaskStateInfo* response) override {
    return forward("GetState", context,
                   [&](grpc::ClientContext* to) { return backend_->GetState(to, *request, response); });
  }
  grpc::Status List(grpc::ServerContext* context, const pb::ListRequest* request, pb::ListResponse* response) override {
    return forward("List", context, [&](grpc::ClientContext* to) { return backend_->List(to, *request, response); });
  }
  grpc::Status Stats(grpc::ServerContext* context, const pb::StatsRequest* request,
                     pb::StatsResponse* response) override {
    return forward("Stats", context, [&](grpc::ClientContext* to) { return backend_->Stats(to, *request, response); });
  }
  grpc::Status Watch(grpc::ServerContext* context, const pb::WatchRequest* request,
                     grpc::ServerWriter<pb::WatchResponse>* writer) override {
    // Forwards the first batch only, then ends the stream: a blocking read of the backend's
    // stream would keep this handler (and the proxy's shutdown) waiting for the backend's end.
    return forward("Watch", context, [&](grpc::ClientContext* to) {
      auto reader = backend_->Watch(to, *request);
      pb::WatchResponse batch;
      if (reader->Read(&batch)) {
        writer->Write(batch);
      }
      to->TryCancel();
      reader->Finish();
      return grpc::Status::OK;
    });
  }

 private:
  template <typename Call>
  grpc::Status forward(const std::string& method, grpc::ServerContext* context, Call&& call) {
    {
      const std::lock_guard lock(mutex_);
      if (++attempts_[method] <= failures_) {
        return {grpc::StatusCode::UNAVAILABLE, "the proxy fails this attempt"};
      }
    }
    grpc::ClientContext to;
    to.set_deadline(context->deadline());
    return call(&to);
  }

  std::unique_ptr<pb::RemoteXComm::Stub> backend_;
  int failures_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mutex_;
  std::map<std::string, int> attempts_;
};

// Short backoffs: the retries of a test follow each other within milliseconds.
rx::ClientOptions retrying(int max_attempts, bool retry_sends = false) {
  rx::ClientOptions options;
  options.retry.max_attempts = max_attempts;
  options.retry.initial_backoff = 1ms;
  options.retry.max_backoff = 5ms;
  options.retry.retry_sends = retry_sends;
  return options;
}

class RetryPolicy : public rx_test::ServerFixture {
 protected:
  void SetUp() override {
    ServerFixture::SetUp();
    ASSERT_TRUE(server_.attach(make_key("t"), rx_test::echo_forever));
    // Something to pull: the task's reply is its return_value.
    ASSERT_TRUE(send(make_key("t"), {{"v", 1}}).status.ok());
  }

  static rx::XComQuery return_value_of_t() {
    rx::XComQuery query;
    query.dag_id = "dag";
    query.run_id = "run";
    query.task_id = "t";
    query.timeout = rx_test::DEFAULT_DEADLINE;
    return query;
  }
};

TEST_F(RetryPolicy, WithoutOneAnUnavailableCallFailsAtTheFirstAttempt) {
  FlakyProxy proxy(server_.target(), 1);
  rx::Client client(loop_);
  auto [status, xcoms] = rx_test::wait_for(client.pull(proxy.target(), return_value_of_t(), asio::use_future));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << rx_test::describe(status);
  EXPECT_EQ(proxy.attempts("Pull"), 1);
}

TEST_F(RetryPolicy, ReadsAreRetriedUntilAnAttemptPasses) {
  FlakyProxy proxy(server_.target(), 2);
  rx::Client client(loop_, retrying(3));

  auto [pulled, xcoms] = rx_test::wait_for(client.pull(proxy.target(), return_value_of_t(), asio::use_future));
  ASSERT_TRUE(pulled.ok()) << rx_test::describe(pulled);
  ASSERT_EQ(xcoms.size(), 1U);
  EXPECT_EQ(boost::json::parse(xcoms[0].value_json), (boost::json::object{{"v", 1}}));

  auto [got, state] = rx_test::wait_for(client.get_state(proxy.target(), make_key("t"), asio::use_future));
  ASSERT_TRUE(got.ok()) << rx_test::describe(got);
  EXPECT_EQ(state.state, rx::TaskState::success);

  auto [listed, page] = rx_test::wait_for(client.list(proxy.target(), rx::ListQuery{}, asio::use_future));
  ASSERT_TRUE(listed.ok()) << rx_test::describe(listed);
  EXPECT_EQ(page.total_matching, 1U);

  auto [counted, stats] = rx_test::wait_for(client.stats(proxy.target(), asio::use_future));
  ASSERT_TRUE(counted.ok()) << rx_test::describe(counted);
  EXPECT_EQ(stats.endpoints, 1U);

  for (const char* method : {"Pull", "GetState", "List", "Stats"}) {
    EXPECT_EQ(proxy.attempts(method), 3) << method;
  }
}

TEST_F(RetryPolicy, AWatchIsRetriedBeforeItsFirstEvent) {
  FlakyProxy proxy(server_.target(), 2);
  rx::Client client(loop_, retrying(3));
  rx::WatchQuery query;
  query.dag_id = "dag";
  query.run_id = "run";
  query.from_start = true;  // the events of the send in SetUp
  rx::Watch watch = client.watch(proxy.target(), query);
  auto [status, event] = rx_test::wait_for(watch.next(asio::use_future));
  ASSERT_TRUE(status.ok()) << rx_test::describe(status);
  EXPECT_GT(event.sequence, 0U);
  EXPECT_EQ(proxy.attempts("Watch"), 3);
  watch.cancel();
}

TEST_F(RetryPolicy, AttemptsStopAtTheLimitWithTheLastStatus) {
  FlakyProxy proxy(server_.target(), 100);
  rx::Client client(loop_, retrying(3));
  auto [status, xcoms] = rx_test::wait_for(client.pull(proxy.target(), return_value_of_t(), asio::use_future));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << rx_test::describe(status);
  EXPECT_EQ(status.error_message(), "the proxy fails this attempt");
  EXPECT_EQ(proxy.attempts("Pull"), 3);
}

TEST_F(RetryPolicy, GrpcCapsAttemptsAtFive) {
  FlakyProxy proxy(server_.target(), 100);
  rx::Client client(loop_, retrying(50));
  auto [status, xcoms] = rx_test::wait_for(client.pull(proxy.target(), return_value_of_t(), asio::use_future));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << rx_test::describe(status);
  EXPECT_EQ(proxy.attempts("Pull"), 5);
}

TEST_F(RetryPolicy, SendsAreNotRetriedUnlessTheCallerSaysSo) {
  FlakyProxy proxy(server_.target(), 2);
  {
    rx::Client client(loop_, retrying(3));
    auto [status, reply] = rx_test::wait_for(client.send(proxy.target(), make_key("t"), {{"v", 2}}, asio::use_future));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << rx_test::describe(status);
    EXPECT_EQ(proxy.attempts("Send"), 1);
  }
  {
    rx::Client client(loop_, retrying(3, /*retry_sends=*/true));
    auto [status, reply] = rx_test::wait_for(client.send(proxy.target(), make_key("t"), {{"v", 3}}, asio::use_future));
    ASSERT_TRUE(status.ok()) << rx_test::describe(status);
    EXPECT_EQ(reply, (boost::json::object{{"v", 3}}));
    EXPECT_EQ(proxy.attempts("Send"), 3);  // the first client's one, then this one's failure and retry
  }
}

TEST_F(RetryPolicy, AServiceConfigInTheChannelArgumentsReplacesThePolicy) {
  FlakyProxy proxy(server_.target(), 1);
  rx::ClientOptions options = retrying(3);
  options.channel_arguments.SetServiceConfigJSON(R"({"methodConfig": []})");
  rx::Client client(loop_, options);
  auto [status, xcoms] = rx_test::wait_for(client.pull(proxy.target(), return_value_of_t(), asio::use_future));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << rx_test::describe(status);
  EXPECT_EQ(proxy.attempts("Pull"), 1);
}

TEST(RetryPolicyOptions, APolicyGrpcWouldRefuseIsRefusedByTheClient) {
  asio::io_context context;
  rx::Loop loop(context);
  auto make = [&loop](auto change) {
    rx::ClientOptions options;
    change(options.retry);
    rx::Client client(loop, options);
  };
  EXPECT_THROW(make([](rx::RetryPolicy& policy) { policy.max_attempts = 0; }), std::invalid_argument);
  EXPECT_THROW(make([](rx::RetryPolicy& policy) { policy.initial_backoff = 0ms; }), std::invalid_argument);
  EXPECT_THROW(make([](rx::RetryPolicy& policy) { policy.max_backoff = -1ms; }), std::invalid_argument);
  EXPECT_THROW(make([](rx::RetryPolicy& policy) { policy.backoff_multiplier = 0.5; }), std::invalid_argument);
  EXPECT_NO_THROW(make([](rx::RetryPolicy& policy) { policy.max_attempts = 1; }));
}

}  // namespace

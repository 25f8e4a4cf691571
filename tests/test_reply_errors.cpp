// Replies that cannot travel: the caller gets a clear status and the task's push() says why.
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include "codec.hpp"

#include <remote_xcomm/error.hpp>
#include <remote_xcomm/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

#include <future>
#include <limits>
#include <memory>
#include <string>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using rx_test::describe;
using rx_test::make_key;

// Pushes what the request's "reply" member asks for and reports push()'s outcome.
struct PushOutcomes {
  std::promise<boost::system::error_code> first;
};

asio::awaitable<void> push_as_asked(rx::Endpoint endpoint, std::shared_ptr<PushOutcomes> outcomes) {
  json::object payload = co_await endpoint.get();
  json::object reply;
  const std::string kind(payload.at("reply").as_string());
  if (kind == "nan") {
    reply["value"] = std::numeric_limits<double>::quiet_NaN();
  } else if (kind == "big") {
    reply["blob"] = std::string(8192, 'x');
  } else {
    reply["ok"] = true;
  }
  auto [error] = co_await endpoint.push(std::move(reply), asio::as_tuple(asio::deferred));
  if (kind != "fine") {
    outcomes->first.set_value(error);
  }
}

json::object asking(const char* kind) {
  json::object payload;
  payload["reply"] = kind;
  return payload;
}

class ReplyErrorTest : public rx_test::ServerFixture {
 protected:
  static rx::ServerOptions options() {
    rx::ServerOptions options;
    options.max_message_bytes = 4096;
    return options;
  }
  ReplyErrorTest() : ServerFixture(options()) {}

  std::shared_ptr<PushOutcomes> attach_pusher() {
    auto outcomes = std::make_shared<PushOutcomes>();
    EXPECT_TRUE(server_.attach(
        make_key(), [outcomes](rx::Endpoint endpoint) { return push_as_asked(std::move(endpoint), outcomes); }));
    return outcomes;
  }
};

TEST_F(ReplyErrorTest, AReplyHoldingNanFailsWithInternalAndPushReportsReplyNotJson) {
  auto outcomes = attach_pusher();
  const rx_test::SendResult failed = send(make_key(), asking("nan"));
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::INTERNAL) << describe(failed.status);
  EXPECT_NE(failed.status.error_message().find("NaN"), std::string::npos) << describe(failed.status);
  EXPECT_EQ(rx_test::wait_for(outcomes->first.get_future()), rx::errc::reply_not_json);

  const rx_test::SendResult served = send(make_key(), asking("fine"));
  EXPECT_TRUE(served.status.ok()) << describe(served.status);
}

TEST_F(ReplyErrorTest, AReplyOverTheMessageLimitFailsWithResourceExhaustedAndPushReportsReplyTooLarge) {
  auto outcomes = attach_pusher();
  const rx_test::SendResult failed = send(make_key(), asking("big"));
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(failed.status);
  EXPECT_NE(failed.status.error_message().find("4096"), std::string::npos) << describe(failed.status);
  EXPECT_EQ(rx_test::wait_for(outcomes->first.get_future()), rx::errc::reply_too_large);

  const rx_test::SendResult served = send(make_key(), asking("fine"));
  EXPECT_TRUE(served.status.ok()) << describe(served.status);
}

TEST_F(ReplyErrorTest, APayloadHoldingInfinityReturnsInvalidArgumentAndTheServerKeepsServing) {
  attach_pusher();
  // Boost.JSON reads 1e400 as infinity and writes it as `Infinity`, which the server refuses.
  const rx_test::SendResult refused = send(make_key(), json::parse(R"({"reply": "fine", "n": 1e400})").as_object());
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(refused.status);
  const rx_test::SendResult served = send(make_key(), asking("fine"));
  EXPECT_TRUE(served.status.ok()) << describe(served.status);
}

TEST(PayloadCodec, RefusesANumberBeyondDoubleRangeAndSaysWhy) {
  json::object parsed;
  std::string error;
  EXPECT_FALSE(rx::detail::parse_json_object(R"({"n": [1, {"m": 1e400}]})", 64, parsed, error));
  EXPECT_NE(error.find("too large"), std::string::npos) << error;
  EXPECT_TRUE(rx::detail::parse_json_object(R"({"n": [1, {"m": 1e300}]})", 64, parsed, error)) << error;
}

TEST(PayloadCodec, SaysATooDeepPayloadIsTooDeepRatherThanInvalid) {
  json::object parsed;
  std::string error;
  EXPECT_FALSE(rx::detail::parse_json_object(R"({"a": {"b": {"c": 1}}})", 2, parsed, error));
  EXPECT_NE(error.find("deeper than 2"), std::string::npos) << error;
}

}  // namespace

// The blocking one-liners: rx::requests, rx::key_from_annotations and rx::RpcError.
#include "utils/gate.hpp"
#include "utils/server_fixture.hpp"

#include <remote_xcomm/blocking.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using rx_test::make_key;

// A payload in the prototype's shape: annotations naming the endpoint, plus the input XComs.
json::object annotated(const std::string& task_id) {
  json::object data;
  data["dag_id"] = "dag";
  data["task_id"] = task_id;
  data["run_id"] = "run";
  data["map_index"] = -1;
  data["xcoms"] = json::object{{"greeting", "hello from the scheduler"}};
  return data;
}

// Replies {"output_key": "hello_world", "xcoms": <the xcoms it got>}.
asio::awaitable<void> run_raw_task(rx::Endpoint endpoint) {
  json::object payloads = co_await endpoint.get();
  json::object outputs;
  outputs["output_key"] = "hello_world";
  outputs["xcoms"] = payloads.at("xcoms");
  co_await endpoint.push(std::move(outputs));
}

class RequestsTest : public rx_test::ServerFixture {};

TEST_F(RequestsTest, RequestsReturnsTheTasksReplyToTheEndpointItsAnnotationsName) {
  ASSERT_TRUE(server_.attach(make_key("hello_task"), run_raw_task));
  const json::object reply =
      rx::requests("127.0.0.1", server_.port(), annotated("hello_task"), rx_test::DEFAULT_DEADLINE);
  EXPECT_EQ(reply.at("output_key"), "hello_world");
  EXPECT_EQ(reply.at("xcoms"), annotated("hello_task").at("xcoms"));
}

TEST_F(RequestsTest, RequestsThrowsRpcErrorWithNotFoundForAnUnknownEndpoint) {
  ASSERT_TRUE(server_.attach(make_key("hello_task"), run_raw_task));
  try {
    (void)rx::requests("127.0.0.1", server_.port(), annotated("other_task"), rx_test::DEFAULT_DEADLINE);
    ADD_FAILURE() << "requests() returned for an unknown endpoint";
  } catch (const rx::RpcError& error) {
    EXPECT_EQ(error.code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(error.status().error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_NE(std::string(error.what()).find("dag/other_task/run[-1]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("status 5"), std::string::npos) << error.what();
  }
}

TEST_F(RequestsTest, RequestsCalledInsideAClientCompletionRunByAGrpcThreadReturns) {
  // A completion that a gRPC thread runs on a borrowed loop defers the sends it makes until it
  // returns; a blocking requests() inside it must not wait for a send that has not started.
  ASSERT_TRUE(server_.attach(make_key("hello_task"), run_raw_task));
  asio::io_context context;
  rx::Client client(context);
  std::promise<std::string> nested;
  client.send(server_.target(), make_key("hello_task"), annotated("hello_task"),
              rx::SendOptions{rx_test::DEFAULT_DEADLINE}, [&](grpc::Status status, json::object /*reply*/) {
                EXPECT_TRUE(status.ok()) << rx_test::describe(status);
                try {
                  const json::object reply =
                      rx::requests("127.0.0.1", server_.port(), annotated("hello_task"), rx_test::DEFAULT_DEADLINE);
                  nested.set_value(std::string(reply.at("output_key").as_string()));
                } catch (const std::exception& error) {
                  nested.set_value(error.what());
                }
              });
  std::future<std::string> outcome = nested.get_future();
  const auto give_up = std::chrono::steady_clock::now() + rx_test::HANG_GUARD;
  while (outcome.wait_for(0s) != std::future_status::ready && std::chrono::steady_clock::now() < give_up) {
    context.run_one_for(10ms);  // in case the completion is handed to this loop's own thread
  }
  EXPECT_EQ(rx_test::wait_for(outcome, "the nested requests() to return"), "hello_world");
}

TEST_F(RequestsTest, RequestsThrowsRpcErrorWithDeadlineExceededWhenTheTaskTakesTooLong) {
  auto gate = std::make_shared<rx_test::Gate>(server_.get_executor());
  ASSERT_TRUE(server_.attach(make_key("slow_task"), [gate](rx::Endpoint endpoint) -> asio::awaitable<void> {
    json::object payloads = co_await endpoint.get();
    co_await gate->wait();
    co_await endpoint.push(std::move(payloads));
  }));
  try {
    (void)rx::requests("127.0.0.1", server_.port(), annotated("slow_task"), 100ms);
    ADD_FAILURE() << "requests() returned although the task never answered in time";
  } catch (const rx::RpcError& error) {
    EXPECT_EQ(error.code(), grpc::StatusCode::DEADLINE_EXCEEDED) << error.what();
  }
  gate->open();
}

TEST_F(RequestsTest, RequestsRefusesDataWithoutAnnotationsBeforeSendingAnything) {
  json::object data = annotated("hello_task");
  data.erase("run_id");
  EXPECT_THROW((void)rx::requests("127.0.0.1", server_.port(), data, rx_test::DEFAULT_DEADLINE), std::invalid_argument);
}

TEST(KeyFromAnnotations, ReadsAllFourAnnotations) {
  json::object data = annotated("t");
  data["map_index"] = 3;
  EXPECT_EQ(rx::key_from_annotations(data), (rx::TaskInstanceKey{"dag", "t", "run", 3}));
}

TEST(KeyFromAnnotations, AMissingOrNullMapIndexMeansUnmapped) {
  json::object data = annotated("t");
  data.erase("map_index");
  EXPECT_EQ(rx::key_from_annotations(data).map_index, -1);
  data["map_index"] = nullptr;
  EXPECT_EQ(rx::key_from_annotations(data).map_index, -1);
}

TEST(KeyFromAnnotations, RejectsMissingOrNonStringIds) {
  for (const char* field : {"dag_id", "task_id", "run_id"}) {
    json::object missing = annotated("t");
    missing.erase(field);
    EXPECT_THROW((void)rx::key_from_annotations(missing), std::invalid_argument) << field;
    json::object wrong_type = annotated("t");
    wrong_type[field] = 7;
    try {
      (void)rx::key_from_annotations(wrong_type);
      ADD_FAILURE() << field << " of the wrong type was accepted";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(field), std::string::npos) << error.what();
    }
  }
}

TEST(KeyFromAnnotations, RejectsANonIntegerMapIndex) {
  json::object data = annotated("t");
  data["map_index"] = "3";
  EXPECT_THROW((void)rx::key_from_annotations(data), std::invalid_argument);
  data["map_index"] = 1.5;
  EXPECT_THROW((void)rx::key_from_annotations(data), std::invalid_argument);
}

TEST(KeyFromAnnotations, AcceptsEveryMapIndexThatFitsAnInt) {
  json::object data = annotated("t");
  data["map_index"] = std::numeric_limits<int>::max();
  EXPECT_EQ(rx::key_from_annotations(data).map_index, std::numeric_limits<int>::max());
  data["map_index"] = std::numeric_limits<int>::min();
  EXPECT_EQ(rx::key_from_annotations(data).map_index, std::numeric_limits<int>::min());
}

// The error must name the field and the value, so the caller can find the bad payload.
void expect_map_index_refused(const json::value& index, const std::string& value_text) {
  json::object data = annotated("t");
  data["map_index"] = index;
  try {
    const rx::TaskInstanceKey key = rx::key_from_annotations(data);
    ADD_FAILURE() << "map_index " << value_text << " was accepted as " << key.map_index;
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("map_index"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find(value_text), std::string::npos) << error.what();
  }
}

TEST(KeyFromAnnotations, RefusesAMapIndexOutsideIntsRangeInsteadOfWrappingIt) {
  // These wrapped to -1 (another task instance's key) and 0 before.
  expect_map_index_refused(std::int64_t{4294967295}, "4294967295");
  expect_map_index_refused(std::int64_t{4294967296}, "4294967296");
  expect_map_index_refused(std::int64_t{2147483648}, "2147483648");
  expect_map_index_refused(std::int64_t{-2147483649}, "-2147483649");
  expect_map_index_refused(std::uint64_t{18446744073709551615U}, "18446744073709551615");
}

TEST(KeyFromAnnotations, RefusesANonIntegerMapIndexNamingItsValue) {
  expect_map_index_refused(1.5, "1.5");
  expect_map_index_refused(json::string("3"), "\"3\"");
  expect_map_index_refused(true, "true");
}

TEST_F(RequestsTest, RequestsRefusesAnOutOfRangeMapIndexBeforeSendingAnything) {
  ASSERT_TRUE(server_.attach(make_key("hello_task", -1), run_raw_task));
  json::object data = annotated("hello_task");
  data["map_index"] = std::int64_t{4294967295};  // would have wrapped to -1, this very endpoint
  EXPECT_THROW((void)rx::requests("127.0.0.1", server_.port(), data, rx_test::DEFAULT_DEADLINE), std::invalid_argument);
}

struct WideTaskInstance {
  std::string dag_id = "dag";
  std::string task_id = "t";
  std::string run_id = "run";
  std::int64_t map_index = -1;
};

TEST(KeyOf, RefusesAMapIndexOutsideIntsRange) {
  WideTaskInstance ti;
  ti.map_index = 7;
  EXPECT_EQ(rx::key_of(ti), (rx::TaskInstanceKey{"dag", "t", "run", 7}));
  ti.map_index = 4294967295;
  EXPECT_THROW((void)rx::key_of(ti), std::invalid_argument);
}

TEST(RpcError, CarriesTheStatusAndDescribesIt) {
  const rx::RpcError error(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
  EXPECT_EQ(error.code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(error.status().error_message(), "server is shutting down");
  EXPECT_STREQ(error.what(), "rpc failed with status 14: server is shutting down");
}

}  // namespace

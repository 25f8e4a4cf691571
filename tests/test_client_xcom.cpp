// rx::Client's XCom calls (pull, get_state, watch) against a fake server whose Pull, GetState and
// Watch are scripted by each test: answers, errors, waits, batches, ends and stalls.
#include "tsan_annotations.hpp"
#include "utils/callback_queue_hold.hpp"
#include "utils/context_runner.hpp"
#include "utils/run_coroutine.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include "codec.hpp"
#include "xcom/wire.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>
#include <remote_xcomm/watch.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>
#include <grpc/grpc.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace v1 = remote_xcomm::v1;
using rx_test::describe;
using rx_test::make_key;
using NextResult = std::tuple<grpc::Status, rx::WatchEvent>;
using PullResult = std::tuple<grpc::Status, std::vector<rx::XCom>>;

constexpr std::int64_t SOME_TIME_US = 1'780'000'000'000'000;

v1::XCom xcom_proto(int map_index, std::uint64_t sequence, const std::string& value_json) {
  v1::XCom xcom;
  rx::detail::to_proto(make_key("producer", map_index), *xcom.mutable_task_instance());
  xcom.set_key("return_value");
  xcom.set_value_json(value_json);
  xcom.set_attempt(1);
  xcom.set_sequence(sequence);
  xcom.set_timestamp_us(SOME_TIME_US + static_cast<std::int64_t>(sequence));
  return xcom;
}

v1::WatchEvent xcom_event(std::uint64_t sequence, const std::string& value_json = "1") {
  v1::WatchEvent event;
  event.set_sequence(sequence);
  *event.mutable_xcom() = xcom_proto(-1, sequence, value_json);
  return event;
}

v1::WatchEvent state_event(std::uint64_t sequence, v1::TaskState state) {
  v1::WatchEvent event;
  event.set_sequence(sequence);
  rx::detail::to_proto(make_key("producer"), *event.mutable_state()->mutable_task_instance());
  event.mutable_state()->set_state(state);
  event.mutable_state()->set_sequence(sequence);
  return event;
}

v1::WatchResponse batch(std::vector<v1::WatchEvent> events) {
  v1::WatchResponse response;
  for (v1::WatchEvent& event : events) {
    *response.add_events() = std::move(event);
  }
  return response;
}

// Counts how often something happened and lets a test wait until it has happened `n` times.
class Counter {
 public:
  void add() {
    const std::lock_guard lock(mutex_);
    ++count_;
    changed_.notify_all();
  }
  [[nodiscard]] int get() const {
    const std::lock_guard lock(mutex_);
    return count_;
  }
  void wait_for_at_least(int n, const std::string& what) const {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, rx_test::HANG_GUARD, [&] { return count_ >= n; })) {
      throw std::runtime_error("timed out waiting for " + what + " (something hangs)");
    }
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  int count_ = 0;
};

// What the fake's Watch writes: `batches` in order (after release() when `wait_for_release`), then
// ends with `end` unless `stay_open` (then only the client's cancellation or shutdown ends it).
struct WatchScript {
  std::vector<v1::WatchResponse> batches;
  grpc::Status end = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "subscriber too slow; resume after 6");
  bool stay_open = false;
  bool wait_for_release = false;
};

class FakeXComService;

// One Watch call of the fake: writes its script, one write at a time, counting them.
class ScriptedWatch final : public grpc::ServerWriteReactor<v1::WatchResponse> {
 public:
  ScriptedWatch(FakeXComService& service, WatchScript script);
  void release();
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  void write_next();  // under mutex_

  FakeXComService& service_;
  WatchScript script_;
  std::mutex mutex_;
  std::size_t written_ = 0;
  bool released_ = false;
  bool writing_ = false;
  bool finished_ = false;
};

// One Pull the fake holds until the caller gives up or the test releases it.
class HeldPull final : public grpc::ServerUnaryReactor {
 public:
  // Constructed on the thread that ran Pull, reacted to on others: the release and the acquires at
  // the top of each reaction show ThreadSanitizer the order gRPC keeps (as src/tsan_annotations.hpp
  // does for the library's own reactors).
  HeldPull(FakeXComService& service, v1::PullResponse* response) : service_(service), response_(response) {
    rx::detail::handed_to_grpc(this);
  }
  void answer(const v1::XCom& xcom) {
    const std::lock_guard lock(mutex_);
    if (!finished_) {
      finished_ = true;
      *response_->add_xcoms() = xcom;
      Finish(grpc::Status::OK);
    }
  }
  void OnCancel() override;
  void OnDone() override;

 private:
  FakeXComService& service_;
  v1::PullResponse* response_;
  std::mutex mutex_;
  bool finished_ = false;
};

// Pull, GetState and Watch as each test scripts them; counts what it saw.
class FakeXComService final : public v1::RemoteXComm::CallbackService {
 public:
  enum class PullMode { answer, not_found, hold };

  // The server that called these has shut down by now, through gRPC's own synchronisation, which
  // ThreadSanitizer cannot see: the lock shows it the order.
  ~FakeXComService() override { const std::lock_guard lock(mutex_); }

  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* context, const v1::PullRequest* request,
                                 v1::PullResponse* response) override {
    PullMode mode{};
    {
      const std::lock_guard lock(mutex_);
      last_pull_ = *request;
      last_deadline_ = context->deadline();
      mode = pull_mode_;
      for (const v1::XCom& xcom : pull_answer_) {
        *response->add_xcoms() = xcom;
      }
    }
    if (mode == PullMode::hold) {
      auto* held = new HeldPull(*this, response);
      {
        const std::lock_guard lock(mutex_);
        held_.push_back(held);
      }
      pulls_held.add();
      return held;
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(mode == PullMode::answer ? grpc::Status::OK
                                             : grpc::Status(grpc::StatusCode::NOT_FOUND, "no such XCom"));
    return reactor;
  }

  grpc::ServerUnaryReactor* GetState(grpc::CallbackServerContext* context, const v1::GetStateRequest* request,
                                     v1::TaskStateInfo* response) override {
    {
      const std::lock_guard lock(mutex_);
      last_get_state_ = *request;
      last_deadline_ = context->deadline();
      *response = state_answer_;
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerWriteReactor<v1::WatchResponse>* Watch(grpc::CallbackServerContext* /*context*/,
                                                     const v1::WatchRequest* request) override {
    WatchScript script;
    {
      const std::lock_guard lock(mutex_);
      last_watch_ = *request;
      script = watch_script_;
    }
    auto* watch = new ScriptedWatch(*this, std::move(script));
    {
      const std::lock_guard lock(mutex_);
      current_watch_ = watch;
    }
    watches_started.add();
    return watch;
  }

  void answer_pulls_with(std::vector<v1::XCom> xcoms, PullMode mode = PullMode::answer) {
    const std::lock_guard lock(mutex_);
    pull_answer_ = std::move(xcoms);
    pull_mode_ = mode;
  }
  void hold_pulls() { answer_pulls_with({}, PullMode::hold); }
  void not_found() { answer_pulls_with({}, PullMode::not_found); }
  // Answers every held pull with one XCom.
  void release_pulls(const v1::XCom& xcom) {
    const std::lock_guard lock(mutex_);
    for (HeldPull* held : held_) {
      held->answer(xcom);
    }
  }
  void answer_get_state_with(v1::TaskStateInfo state) {
    const std::lock_guard lock(mutex_);
    state_answer_ = std::move(state);
  }
  void script_watch(WatchScript script) {
    const std::lock_guard lock(mutex_);
    watch_script_ = std::move(script);
  }
  // Lets the current watch (scripted with wait_for_release) write its batches.
  void release_watch() {
    const std::lock_guard lock(mutex_);
    if (current_watch_ != nullptr) {
      current_watch_->release();
    }
  }

  v1::PullRequest last_pull() {
    const std::lock_guard lock(mutex_);
    return last_pull_;
  }
  v1::GetStateRequest last_get_state() {
    const std::lock_guard lock(mutex_);
    return last_get_state_;
  }
  v1::WatchRequest last_watch() {
    const std::lock_guard lock(mutex_);
    return last_watch_;
  }
  std::chrono::system_clock::time_point last_deadline() {
    const std::lock_guard lock(mutex_);
    return last_deadline_;
  }

  // The taken-events count each write saw complete (set by the slow-reader test), by write.
  std::vector<int> taken_at_write_done() {
    const std::lock_guard lock(mutex_);
    return taken_at_write_done_;
  }

  Counter pulls_held;
  Counter pulls_cancelled;  // a held pull's OnCancel: the caller gave up (cancel or deadline)
  Counter pulls_done;
  Counter watches_started;
  Counter watch_writes_started;
  Counter watch_writes_done;
  Counter watches_cancelled;  // OnCancel of a watch: the client cancelled it
  Counter watches_done;
  std::atomic<int>* taken = nullptr;  // events the test has taken, read when a write completes

 private:
  friend class ScriptedWatch;
  friend class HeldPull;

  void watch_done(ScriptedWatch* watch) {
    {
      const std::lock_guard lock(mutex_);
      if (current_watch_ == watch) {
        current_watch_ = nullptr;
      }
    }
    watches_done.add();
  }
  void pull_done(HeldPull* pull) {
    {
      const std::lock_guard lock(mutex_);
      std::erase(held_, pull);
    }
    pulls_done.add();
  }
  void write_done() {
    {
      const std::lock_guard lock(mutex_);
      taken_at_write_done_.push_back(taken != nullptr ? taken->load() : 0);
    }
    watch_writes_done.add();
  }

  std::mutex mutex_;
  PullMode pull_mode_ = PullMode::answer;
  std::vector<v1::XCom> pull_answer_;
  std::vector<HeldPull*> held_;
  v1::TaskStateInfo state_answer_;
  WatchScript watch_script_;
  ScriptedWatch* current_watch_ = nullptr;
  v1::PullRequest last_pull_;
  v1::GetStateRequest last_get_state_;
  v1::WatchRequest last_watch_;
  std::chrono::system_clock::time_point last_deadline_;
  std::vector<int> taken_at_write_done_;
};

ScriptedWatch::ScriptedWatch(FakeXComService& service, WatchScript script)
    : service_(service), script_(std::move(script)) {
  const std::lock_guard lock(mutex_);
  released_ = !script_.wait_for_release;
  rx::detail::handed_to_grpc(this);
  write_next();
}

void ScriptedWatch::release() {
  const std::lock_guard lock(mutex_);
  released_ = true;
  write_next();
}

void ScriptedWatch::write_next() {
  if (finished_ || writing_ || !released_) {
    return;
  }
  if (written_ < script_.batches.size()) {
    writing_ = true;
    service_.watch_writes_started.add();
    rx::detail::handed_to_grpc(this);
    StartWrite(&script_.batches[written_]);
  } else if (!script_.stay_open) {
    finished_ = true;
    rx::detail::handed_to_grpc(this);
    Finish(script_.end);
  }
}

void ScriptedWatch::OnWriteDone(bool ok) {
  rx::detail::back_from_grpc(this);
  const std::lock_guard lock(mutex_);
  writing_ = false;
  if (!ok) {
    return;  // cancelled: OnCancel finishes
  }
  ++written_;
  service_.write_done();
  write_next();
}

void ScriptedWatch::OnCancel() {
  rx::detail::back_from_grpc(this);
  service_.watches_cancelled.add();
  const std::lock_guard lock(mutex_);
  if (!finished_) {
    finished_ = true;
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
  }
}

void ScriptedWatch::OnDone() {
  rx::detail::back_from_grpc(this);
  service_.watch_done(this);
  delete this;
}

void HeldPull::OnCancel() {
  rx::detail::back_from_grpc(this);
  service_.pulls_cancelled.add();
  const std::lock_guard lock(mutex_);
  if (!finished_) {
    finished_ = true;
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
  }
}

void HeldPull::OnDone() {
  rx::detail::back_from_grpc(this);
  service_.pull_done(this);
  delete this;
}

// A raw gRPC server serving `service` on 127.0.0.1, port 0.
class RawServer {
 public:
  explicit RawServer(grpc::Service& service) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    target_ = "127.0.0.1:" + std::to_string(port);
  }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;
  ~RawServer() {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now());  // cancels whatever is still open
    }
  }
  [[nodiscard]] const std::string& target() const noexcept { return target_; }

 private:
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
};

rx::XComQuery query_of(const std::string& task_id, int map_index = -1) {
  rx::XComQuery query;
  query.dag_id = "dag";
  query.run_id = "run";
  query.task_id = task_id;
  query.map_index = map_index;
  query.timeout = rx_test::DEFAULT_DEADLINE;
  return query;
}

rx::WatchQuery watch_query() {
  rx::WatchQuery query;
  query.dag_id = "dag";
  query.run_id = "run";
  return query;
}

class ClientXComTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runner_.emplace(context_);
    client_.emplace(loop_, client_options());
  }

  void TearDown() override {
    server_.reset();  // ends every call still open
    client_.reset();
    runner_.reset();  // lets queued completions run, then joins
  }

  virtual rx::ClientOptions client_options() { return {}; }

  NextResult next(rx::Watch& watch) { return rx_test::wait_for(watch.next(asio::use_future), "next()"); }

  PullResult pull(const rx::XComQuery& query) {
    return rx_test::wait_for(client_->pull(server_->target(), query, asio::use_future), "the pull");
  }

  const std::string& target() const { return server_->target(); }

  rx_test::CallbackQueueHold callback_queue_hold_;  // for streams that outlive their Client
  FakeXComService service_;
  std::optional<RawServer> server_{std::in_place, service_};
  asio::io_context context_;
  rx::Loop loop_{context_};
  std::optional<rx::Client> client_;
  std::optional<rx_test::ContextRunner> runner_;
};

// ---- pull ------------------------------------------------------------------------------------

TEST_F(ClientXComTest, APullOfAllMapIndexesYieldsEveryXComInTheServersOrder) {
  service_.answer_pulls_with({xcom_proto(0, 7, "10"), xcom_proto(1, 9, "[1,2]"), xcom_proto(2, 8, R"({"a":1})")});
  rx::XComQuery query = query_of("producer");
  query.all_map_indexes = true;
  query.key = "scores";
  auto [status, xcoms] = pull(query);
  ASSERT_TRUE(status.ok()) << describe(status);
  ASSERT_EQ(xcoms.size(), 3U);
  const std::vector<std::string> values{"10", "[1,2]", R"({"a":1})"};
  const std::vector<std::uint64_t> sequences{7, 9, 8};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(xcoms[i].task_instance, make_key("producer", static_cast<int>(i)));
    EXPECT_EQ(xcoms[i].key, "return_value");
    EXPECT_EQ(xcoms[i].value_json, values[i]);
    EXPECT_EQ(xcoms[i].attempt, 1U);
    EXPECT_EQ(xcoms[i].sequence, sequences[i]);
    EXPECT_EQ(xcoms[i].timestamp, rx::detail::from_unix_micros(SOME_TIME_US + static_cast<std::int64_t>(sequences[i])));
  }
  const v1::PullRequest sent = service_.last_pull();
  EXPECT_EQ(sent.dag_id(), "dag");
  EXPECT_EQ(sent.run_id(), "run");
  EXPECT_EQ(sent.task_id(), "producer");
  EXPECT_EQ(sent.key(), "scores");
  EXPECT_TRUE(sent.all_map_indexes());
  EXPECT_FALSE(sent.wait());
}

TEST_F(ClientXComTest, APullOfOneTaskInstanceYieldsItsXCom) {
  service_.answer_pulls_with({xcom_proto(3, 1, R"("text")")});
  auto [status, xcoms] = pull(query_of("producer", 3));
  ASSERT_TRUE(status.ok()) << describe(status);
  ASSERT_EQ(xcoms.size(), 1U);
  EXPECT_EQ(xcoms[0].value_json, R"("text")");
  EXPECT_EQ(service_.last_pull().map_index(), 3);
}

TEST_F(ClientXComTest, APullOfOneTaskInstanceAnsweredWithTwoXComsFailsWithInternal) {
  service_.answer_pulls_with({xcom_proto(0, 1, "1"), xcom_proto(1, 2, "2")});
  auto [status, xcoms] = pull(query_of("producer", 0));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL) << describe(status);
  EXPECT_NE(status.error_message().find("with 2 XComs"), std::string::npos) << describe(status);
  EXPECT_TRUE(xcoms.empty());
}

TEST_F(ClientXComTest, AWaitingPullOfAllMapIndexesAnsweredWithFewerThanMinCountFailsWithInternal) {
  service_.answer_pulls_with({xcom_proto(0, 1, "1")});
  rx::XComQuery query = query_of("producer");
  query.all_map_indexes = true;
  query.wait = true;
  query.min_count = 2;
  auto [status, xcoms] = pull(query);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL) << describe(status);
  EXPECT_TRUE(xcoms.empty());
  EXPECT_EQ(service_.last_pull().min_count(), 2U);
}

TEST_F(ClientXComTest, APullOfAMissingXComFailsWithNotFound) {
  service_.not_found();
  auto [status, xcoms] = pull(query_of("producer"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << describe(status);
  EXPECT_EQ(status.error_message(), "no such XCom");
  EXPECT_TRUE(xcoms.empty());
}

TEST_F(ClientXComTest, AWaitingPullFailsWithDeadlineExceededPastItsTimeoutAndTheServerStopsWaiting) {
  service_.hold_pulls();
  rx::XComQuery query = query_of("producer");
  query.wait = true;
  query.timeout = std::chrono::milliseconds(200);
  auto [status, xcoms] = pull(query);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << describe(status);
  EXPECT_TRUE(xcoms.empty());
  EXPECT_TRUE(service_.last_pull().wait());
  service_.pulls_cancelled.wait_for_at_least(1, "the server to see the deadline pass");
}

TEST_F(ClientXComTest, APullWithoutTimeoutReachesTheServerWithoutDeadline) {
  service_.answer_pulls_with({xcom_proto(-1, 1, "1")});
  rx::XComQuery query = query_of("producer");
  query.timeout = rx::no_deadline;
  auto [status, xcoms] = pull(query);
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_GT(service_.last_deadline(), std::chrono::system_clock::now() + std::chrono::hours(24 * 365));
}

TEST_F(ClientXComTest, CancellingAPullThroughItsCancellationSlotFailsItWithCancelledAndTheServerSeesIt) {
  service_.hold_pulls();
  rx::XComQuery query = query_of("producer");
  query.wait = true;
  asio::cancellation_signal signal;
  std::promise<PullResult> done;
  client_->pull(target(), query,
                asio::bind_cancellation_slot(signal.slot(), [&done](grpc::Status status, std::vector<rx::XCom> xcoms) {
                  done.set_value({std::move(status), std::move(xcoms)});
                }));
  service_.pulls_held.wait_for_at_least(1, "the server to hold the pull");
  asio::dispatch(client_->get_executor(), [&signal] { signal.emit(asio::cancellation_type::terminal); });
  auto [status, xcoms] = rx_test::wait_for(done.get_future(), "the cancelled pull");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << describe(status);
  EXPECT_TRUE(xcoms.empty());
  service_.pulls_cancelled.wait_for_at_least(1, "the server to see the cancellation");
}

TEST_F(ClientXComTest, APullThroughAConnectionIsThePullOfItsTarget) {
  service_.answer_pulls_with({xcom_proto(-1, 4, "4")});
  const rx::Connection connection = client_->connect(target());
  auto [status, xcoms] = rx_test::wait_for(connection.pull(query_of("producer"), asio::use_future));
  ASSERT_TRUE(status.ok()) << describe(status);
  ASSERT_EQ(xcoms.size(), 1U);
  EXPECT_EQ(xcoms[0].sequence, 4U);
}

// ---- get_state -------------------------------------------------------------------------------

v1::TaskStateInfo state_proto(int state) {
  v1::TaskStateInfo info;
  rx::detail::to_proto(make_key("producer", 2), *info.mutable_task_instance());
  info.set_state(static_cast<v1::TaskState>(state));
  info.set_since_us(SOME_TIME_US);
  info.set_attempt(3);
  info.set_message("task threw: boom");
  info.set_sequence(41);
  return info;
}

TEST_F(ClientXComTest, GetStateYieldsTheServersStateOfTheTaskInstance) {
  service_.answer_get_state_with(state_proto(v1::TASK_STATE_FAILED));
  auto [status, state] =
      rx_test::wait_for(client_->get_state(target(), make_key("producer", 2), asio::use_future), "get_state");
  ASSERT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(state.task_instance, make_key("producer", 2));
  EXPECT_EQ(state.state, rx::TaskState::failed);
  EXPECT_EQ(state.since, rx::detail::from_unix_micros(SOME_TIME_US));
  EXPECT_EQ(state.attempt, 3U);
  EXPECT_EQ(state.message, "task threw: boom");
  EXPECT_EQ(state.sequence, 41U);
  EXPECT_EQ(rx::detail::from_proto(service_.last_get_state().task_instance()), make_key("producer", 2));
}

TEST_F(ClientXComTest, GetStateOfAStateThisClientDoesNotKnowFailsWithInternalNamingIt) {
  service_.answer_get_state_with(state_proto(42));
  auto [status, state] = rx_test::wait_for(client_->get_state(target(), make_key(), asio::use_future), "get_state");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL) << describe(status);
  EXPECT_NE(status.error_message().find("task state 42"), std::string::npos) << describe(status);
  EXPECT_EQ(state.sequence, 0U);  // a default TaskStateInfo
  EXPECT_TRUE(state.message.empty());

  service_.answer_get_state_with(state_proto(v1::TASK_STATE_UNSPECIFIED));
  auto [unset, ignored] = rx_test::wait_for(client_->get_state(target(), make_key(), asio::use_future), "get_state");
  EXPECT_EQ(unset.error_code(), grpc::StatusCode::INTERNAL) << describe(unset);
}

TEST_F(ClientXComTest, GetStateHasAThirtySecondDeadlineByDefaultAndNoneWhenAsked) {
  EXPECT_EQ(rx::GetStateOptions{}.timeout, std::chrono::seconds(30));
  service_.answer_get_state_with(state_proto(v1::TASK_STATE_RUNNING));
  const rx::Connection connection = client_->connect(target());
  auto [status, state] = rx_test::wait_for(
      connection.get_state(make_key(), rx::GetStateOptions{rx::no_deadline}, asio::use_future), "get_state");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(state.state, rx::TaskState::running);
  EXPECT_GT(service_.last_deadline(), std::chrono::system_clock::now() + std::chrono::hours(24 * 365));
  auto [bounded, ignored] = rx_test::wait_for(client_->get_state(target(), make_key(), asio::use_future));
  EXPECT_TRUE(bounded.ok()) << describe(bounded);
  EXPECT_LT(service_.last_deadline(), std::chrono::system_clock::now() + std::chrono::hours(1));
}

// ---- watch -----------------------------------------------------------------------------------

TEST_F(ClientXComTest, AWatchHandsOutTheEventsOfEveryBatchOneAtATimeInOrderThenItsEndStatus) {
  v1::WatchEvent unknown_kind;  // a newer server's kind of event: skipped
  unknown_kind.set_sequence(5);
  v1::WatchEvent cleared = state_event(6, v1::TASK_STATE_IDLE);
  const v1::TaskStateInfo new_attempt = cleared.state();  // copied: setting `cleared` frees `state`
  *cleared.mutable_cleared() = new_attempt;
  service_.script_watch({{batch({xcom_event(1, "11"), state_event(2, v1::TASK_STATE_RUNNING)}),
                          batch({xcom_event(3, "33")}), batch({xcom_event(4, "44"), unknown_kind, cleared})}});
  rx::WatchQuery query = watch_query();
  query.task_id = "producer";
  query.from_start = true;
  rx::Watch watch = client_->watch(target(), query);
  EXPECT_EQ(watch.last_sequence(), 0U);

  const std::vector<std::uint64_t> sequences{1, 2, 3, 4, 6};
  const std::vector<rx::WatchEvent::Kind> kinds{rx::WatchEvent::Kind::xcom, rx::WatchEvent::Kind::state,
                                                rx::WatchEvent::Kind::xcom, rx::WatchEvent::Kind::xcom,
                                                rx::WatchEvent::Kind::cleared};
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    auto [status, event] = next(watch);
    ASSERT_TRUE(status.ok()) << i << ": " << describe(status);
    EXPECT_EQ(event.sequence, sequences[i]);
    EXPECT_EQ(event.kind, kinds[i]) << i;
    EXPECT_EQ(watch.last_sequence(), sequences[i]);
  }
  for (int again = 0; again < 2; ++again) {  // the end, every time
    auto [status, event] = next(watch);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(status);
    EXPECT_EQ(status.error_message(), "subscriber too slow; resume after 6");
    EXPECT_EQ(event.sequence, 0U);
  }
  watch.cancel();  // the stream has ended: it keeps its end status
  EXPECT_EQ(std::get<0>(next(watch)).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(watch.last_sequence(), 6U);
  const v1::WatchRequest sent = service_.last_watch();
  EXPECT_EQ(sent.task_id(), "producer");
  EXPECT_TRUE(sent.from_start());
}

TEST_F(ClientXComTest, AWatchResumingAfterASequenceReportsItAsItsLastUntilAnEventComes) {
  service_.script_watch({{batch({xcom_event(8)})}, grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "gone")});
  rx::WatchQuery query = watch_query();
  query.after_sequence = 7;
  rx::Watch watch = client_->watch(target(), query);
  EXPECT_EQ(watch.last_sequence(), 7U);
  EXPECT_TRUE(std::get<0>(next(watch)).ok());
  EXPECT_EQ(watch.last_sequence(), 8U);
  EXPECT_EQ(std::get<0>(next(watch)).error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(service_.last_watch().after_sequence(), 7U);
}

TEST_F(ClientXComTest, AWatchTheServerEndsWithOkEndsWithUnavailable) {
  service_.script_watch({{batch({xcom_event(1)})}, grpc::Status::OK});
  rx::Watch watch = client_->watch(target(), watch_query());
  EXPECT_TRUE(std::get<0>(next(watch)).ok());
  const grpc::Status end = std::get<0>(next(watch));
  EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(end);
  EXPECT_NE(end.error_message().find("ended the watch with OK"), std::string::npos) << describe(end);
}

TEST_F(ClientXComTest, AWatchEndsWithUnavailableWhenTheServerShutsDown) {
  service_.script_watch({{}, {}, /*stay_open=*/true});
  rx::Watch watch = client_->watch(target(), watch_query());
  auto pending = watch.next(asio::use_future);
  service_.watches_started.wait_for_at_least(1, "the watch to reach the server");
  server_.reset();
  const grpc::Status end = std::get<0>(rx_test::wait_for(pending, "next()"));
  EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(end);
}

// The client reads the next batch only once it has handed out every event it read: a reader that
// stops stops the server's writes (HTTP/2 flow control), however much the server has to write.
class SlowReaderTest : public ClientXComTest {
 protected:
  rx::ClientOptions client_options() override {
    rx::ClientOptions options;
    // gRPC's BDP probing would grow the stream window to several batches; without it the window
    // (64 KiB) is far below one batch (1 MiB), so the bound below is exact up to one batch.
    options.channel_arguments.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    return options;
  }
};

TEST_F(SlowReaderTest, AReaderThatStopsStopsTheServersWritesAfterOneBatchAhead) {
  constexpr int BATCHES = 12;
  const std::string value = "\"" + std::string(1 << 20, 'x') + "\"";
  WatchScript script;
  for (int i = 0; i < BATCHES; ++i) {
    script.batches.push_back(batch({xcom_event(static_cast<std::uint64_t>(i + 1), value)}));
  }
  script.end = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "done");
  service_.script_watch(std::move(script));
  std::atomic<int> taken{0};
  service_.taken = &taken;
  service_.answer_get_state_with(state_proto(v1::TASK_STATE_RUNNING));

  rx::Watch watch = client_->watch(target(), watch_query());
  for (int b = 0; b < BATCHES; ++b) {
    auto [status, event] = next(watch);
    ASSERT_TRUE(status.ok()) << b << ": " << describe(status);
    ASSERT_EQ(event.sequence, static_cast<std::uint64_t>(b + 1));
    ASSERT_EQ(event.xcom.value_json.size(), value.size());
    taken.fetch_add(1);
    // Having handed out batch b, the client reads batch b + 1 and no further: the fake gets to
    // start writing batch b + 2 and that write stays pending until the reader takes another event.
    const int started = std::min(b + 3, BATCHES);
    service_.watch_writes_started.wait_for_at_least(started, "the server to start write " + std::to_string(started));
    // A round trip on the same connection before looking: a client reading ahead would have let
    // the server's writes run on by now.
    EXPECT_TRUE(std::get<0>(rx_test::wait_for(client_->get_state(target(), make_key(), asio::use_future))).ok());
    EXPECT_LE(service_.watch_writes_done.get(), b + 3) << "after " << b + 1 << " events taken";
    if (b + 2 < BATCHES) {
      EXPECT_GE(service_.watch_writes_started.get() - service_.watch_writes_done.get(), 1)
          << "the server's write of batch " << b + 2 << " should be pending";
    }
  }
  EXPECT_EQ(std::get<0>(next(watch)).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Each write completed only once the reader had taken all but the last two batches before it.
  const std::vector<int> seen = service_.taken_at_write_done();
  ASSERT_EQ(seen.size(), static_cast<std::size_t>(BATCHES));
  for (int j = 0; j < BATCHES; ++j) {
    EXPECT_GE(seen[static_cast<std::size_t>(j)], j - 3) << "write " << j;
  }
  service_.watches_done.wait_for_at_least(1, "the server's watch to end");
  service_.taken = nullptr;
}

TEST_F(ClientXComTest, CancelWithANextPendingCompletesItWithCancelledAndEndsTheStreamOnTheServer) {
  service_.script_watch({{}, {}, /*stay_open=*/true});
  rx::Watch watch = client_->watch(target(), watch_query());
  auto pending = watch.next(asio::use_future);
  service_.watches_started.wait_for_at_least(1, "the watch to reach the server");
  watch.cancel();
  const grpc::Status status = std::get<0>(rx_test::wait_for(pending, "the pending next()"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << describe(status);
  service_.watches_cancelled.wait_for_at_least(1, "the server to see the cancellation");
  EXPECT_EQ(std::get<0>(next(watch)).error_code(), grpc::StatusCode::CANCELLED);
  watch.cancel();  // idempotent
}

TEST_F(ClientXComTest, ATerminalCancellationOfNextEndsTheWatch) {
  service_.script_watch({{}, {}, /*stay_open=*/true});
  rx::Watch watch = client_->watch(target(), watch_query());
  asio::cancellation_signal signal;
  std::promise<grpc::Status> done;
  watch.next(asio::bind_cancellation_slot(
      signal.slot(), [&done](grpc::Status status, rx::WatchEvent /*event*/) { done.set_value(std::move(status)); }));
  service_.watches_started.wait_for_at_least(1, "the watch to reach the server");
  asio::dispatch(client_->get_executor(), [&signal] { signal.emit(asio::cancellation_type::terminal); });
  EXPECT_EQ(rx_test::wait_for(done.get_future()).error_code(), grpc::StatusCode::CANCELLED);
  service_.watches_cancelled.wait_for_at_least(1, "the server to see the cancellation");
  EXPECT_EQ(std::get<0>(next(watch)).error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ClientXComTest, ATotalCancellationOfNextEndsOnlyThatWaitAndTheEventGoesToTheNextNext) {
  WatchScript script{{batch({xcom_event(1)})}, {}, /*stay_open=*/true, /*wait_for_release=*/true};
  service_.script_watch(std::move(script));
  rx::Watch watch = client_->watch(target(), watch_query());
  asio::cancellation_signal signal;
  std::promise<grpc::Status> done;
  watch.next(asio::bind_cancellation_slot(
      signal.slot(), [&done](grpc::Status status, rx::WatchEvent /*event*/) { done.set_value(std::move(status)); }));
  service_.watches_started.wait_for_at_least(1, "the watch to reach the server");
  asio::dispatch(client_->get_executor(), [&signal] { signal.emit(asio::cancellation_type::total); });
  EXPECT_EQ(rx_test::wait_for(done.get_future()).error_code(), grpc::StatusCode::CANCELLED);
  service_.release_watch();
  auto [status, event] = next(watch);
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(event.sequence, 1U);
  EXPECT_EQ(service_.watches_cancelled.get(), 0);
}

TEST_F(ClientXComTest, ASecondNextWhileOneWaitsFailsWithFailedPreconditionAndTheFirstGoesOnWaiting) {
  WatchScript script{{batch({xcom_event(1)})}, {}, /*stay_open=*/true, /*wait_for_release=*/true};
  service_.script_watch(std::move(script));
  rx::Watch watch = client_->watch(target(), watch_query());
  auto first = watch.next(asio::use_future);
  auto [second, ignored] = next(watch);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << describe(second);
  service_.watches_started.wait_for_at_least(1, "the watch to reach the server");
  service_.release_watch();
  auto [status, event] = rx_test::wait_for(first, "the first next()");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(event.sequence, 1U);
}

TEST_F(ClientXComTest, NextOnAMovedFromWatchFailsWithFailedPreconditionAndTheMovedToOneWorks) {
  service_.script_watch({{batch({xcom_event(1)})}});
  rx::Watch watch = client_->watch(target(), watch_query());
  rx::Watch moved = std::move(watch);
  EXPECT_EQ(std::get<0>(next(watch)).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(std::get<0>(next(moved)).ok());
}

TEST_F(ClientXComTest, DestroyingAWatchWithANextPendingCompletesItOnceWithCancelled) {
  service_.script_watch({{}, {}, /*stay_open=*/true});
  auto count = std::make_shared<std::atomic<int>>(0);
  std::promise<grpc::Status> done;
  {
    rx::Watch watch = client_->watch(target(), watch_query());
    watch.next([count, &done](grpc::Status status, rx::WatchEvent /*event*/) {
      if (count->fetch_add(1) == 0) {
        done.set_value(std::move(status));
      }
    });
    service_.watches_started.wait_for_at_least(1, "the watch to reach the server");
  }
  EXPECT_EQ(rx_test::wait_for(done.get_future()).error_code(), grpc::StatusCode::CANCELLED);
  service_.watches_done.wait_for_at_least(1, "the server's watch to end");
  // Flush the loop: a second completion would have been queued before this.
  std::promise<void> flushed;
  asio::post(client_->get_executor(), [&flushed] { flushed.set_value(); });
  rx_test::wait_for(flushed.get_future());
  EXPECT_EQ(count->load(), 1);
}

TEST_F(ClientXComTest, AWatchIsReadWithCoAwaitInACoroutineOnTheLoop) {
  service_.script_watch({{batch({xcom_event(1), xcom_event(2)}), batch({xcom_event(3)})}});
  rx::Watch watch = client_->watch(target(), watch_query());
  auto [sequences, end, on_loop] = rx_test::spawn_and_wait(
      loop_.get_executor(), [&]() -> asio::awaitable<std::tuple<std::vector<std::uint64_t>, grpc::Status, bool>> {
        std::vector<std::uint64_t> seen;
        bool always_on_loop = true;
        for (;;) {
          auto [status, event] = co_await watch.next();
          always_on_loop = always_on_loop && loop_.get_executor().running_in_this_thread();
          if (!status.ok()) {
            co_return std::tuple{std::move(seen), std::move(status), always_on_loop};
          }
          seen.push_back(event.sequence);
        }
      });
  EXPECT_EQ(sequences, (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(end.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(end);
  EXPECT_TRUE(on_loop);
}

TEST_F(ClientXComTest, AWatchThroughAConnectionWatchesItsTarget) {
  service_.script_watch({{batch({xcom_event(5)})}});
  const rx::Connection connection = client_->connect(target());
  rx::Watch watch = connection.watch(watch_query());
  auto [status, event] = next(watch);
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(event.sequence, 5U);
}

// ---- lifetimes -------------------------------------------------------------------------------

// Destroy orders with no next() waiting: the stream holds nothing of the io_context, so the
// Watch, the Client and the io_context go in any order while a read is in flight.
TEST_F(ClientXComTest, AWatchWithAReadInFlightAndItsClientAndIoContextGoInAnyOrder) {
  service_.script_watch({{}, {}, /*stay_open=*/true});
  constexpr int ROUNDS = 20;
  for (int round = 0; round < ROUNDS; ++round) {
    auto context = std::make_unique<asio::io_context>();
    auto client = std::make_unique<rx::Client>(*context);
    auto watch = std::make_unique<rx::Watch>(client->watch(target(), watch_query()));
    service_.watches_started.wait_for_at_least(round + 1, "the watch to reach the server");
    switch (round % 3) {
      case 0:  // Watch, Client, io_context
        watch.reset();
        client.reset();
        context.reset();
        break;
      case 1:  // Client, io_context, then the Watch
        client.reset();
        context.reset();
        watch.reset();
        break;
      default:  // io_context... after the Client, with the Watch last but cancelled first
        watch->cancel();
        client.reset();
        context.reset();
        watch.reset();
        break;
    }
    service_.watches_done.wait_for_at_least(round + 1, "the server's watch to end");
  }
}

// A next() pending while the Client goes: it still completes, on the loop, once the event comes.
TEST_F(ClientXComTest, ANextPendingWhenItsClientIsDestroyedStillCompletesWithTheEvent) {
  WatchScript script{{batch({xcom_event(1)})}, {}, /*stay_open=*/true, /*wait_for_release=*/true};
  service_.script_watch(std::move(script));
  std::optional<rx::Client> own(std::in_place, loop_);
  rx::Watch watch = own->watch(target(), watch_query());
  auto pending = watch.next(asio::use_future);
  service_.watches_started.wait_for_at_least(1, "the watch to reach the server");
  own.reset();
  service_.release_watch();
  auto [status, event] = rx_test::wait_for(pending, "the pending next()");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(event.sequence, 1U);
}

// A pull in flight while its Client goes: it completes with the server's answer.
TEST_F(ClientXComTest, APullInFlightWhenItsClientIsDestroyedStillCompletes) {
  service_.hold_pulls();
  std::optional<rx::Client> own(std::in_place, loop_);
  rx::XComQuery query = query_of("producer");
  query.wait = true;
  auto pending = own->pull(target(), query, asio::use_future);
  service_.pulls_held.wait_for_at_least(1, "the server to hold the pull");
  own.reset();
  service_.release_pulls(xcom_proto(-1, 3, "3"));
  auto [status, xcoms] = rx_test::wait_for(pending, "the pull");
  EXPECT_TRUE(status.ok()) << describe(status);
  ASSERT_EQ(xcoms.size(), 1U);
  EXPECT_EQ(xcoms[0].sequence, 3U);
}

// The handler signals, then keeps running while the test destroys the Watch, the Client and the
// io_context: whatever the gRPC thread does after user code must not touch them (ASan checks).
// `start` starts the operation on `client` with a handler built by the helper.
template <typename Start>
void destroy_everything_while_the_completion_runs(Start start, int rounds) {
  const std::thread::id test_thread = std::this_thread::get_id();
  for (int round = 0; round < rounds; ++round) {
    auto context = std::make_unique<asio::io_context>();
    auto client = std::make_unique<rx::Client>(*context);
    std::optional<rx::Watch> watch;
    std::promise<grpc::Status> signalled;
    std::promise<void> destroyed;
    std::shared_future<void> destroyed_future = destroyed.get_future().share();
    auto handler_returned = std::make_shared<std::promise<void>>();
    std::future<void> returned = handler_returned->get_future();
    auto on_completion = [&signalled, destroyed_future, handler_returned, test_thread](grpc::Status status) {
      signalled.set_value(std::move(status));
      if (std::this_thread::get_id() != test_thread) {
        EXPECT_EQ(destroyed_future.wait_for(rx_test::HANG_GUARD), std::future_status::ready);
      }
      handler_returned->set_value();
    };
    start(*client, watch, std::move(on_completion));
    std::future<grpc::Status> signal = signalled.get_future();
    const auto give_up = std::chrono::steady_clock::now() + rx_test::HANG_GUARD;
    while (signal.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < give_up) {
      context->run_one_for(std::chrono::milliseconds(10));  // returns early once a handler ran
    }
    const grpc::Status status = rx_test::wait_for(signal, "the completion to signal");
    EXPECT_TRUE(status.ok()) << round << ": " << describe(status);
    watch.reset();
    client.reset();
    context.reset();
    destroyed.set_value();
    rx_test::wait_for(returned, "the handler to return");
  }
}

TEST_F(ClientXComTest, AWatchItsClientAndIoContextMayBeDestroyedWhileTheCompletionOfNextStillRuns) {
  service_.script_watch({{batch({xcom_event(1)})}, {}, /*stay_open=*/true});
  destroy_everything_while_the_completion_runs(
      [this](rx::Client& client, std::optional<rx::Watch>& watch, auto on_completion) {
        watch.emplace(client.watch(target(), watch_query()));
        watch->next([on_completion = std::move(on_completion)](grpc::Status status, rx::WatchEvent event) mutable {
          EXPECT_EQ(event.sequence, status.ok() ? 1U : 0U);
          on_completion(std::move(status));
        });
      },
      100);
}

TEST_F(ClientXComTest, AClientAndItsIoContextMayBeDestroyedWhileThePullsCompletionStillRuns) {
  service_.answer_pulls_with({xcom_proto(-1, 1, "1")});
  destroy_everything_while_the_completion_runs(
      [this](rx::Client& client, std::optional<rx::Watch>& /*watch*/, auto on_completion) {
        client.pull(
            target(), query_of("producer"),
            [on_completion = std::move(on_completion)](grpc::Status status, std::vector<rx::XCom> /*xcoms*/) mutable {
              on_completion(std::move(status));
            });
      },
      100);
}

}  // namespace

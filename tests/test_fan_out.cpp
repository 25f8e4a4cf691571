// Fan-out (rx::FanOut, rx::fan_out) and Connection, over both transports, in the layout a
// scheduler has: several servers, each on its own io_context thread, and one client loop on
// another. 10,000 endpoints on 4 servers with one failing halfway; the windows (overall and per
// target) never exceeded; results as they complete; one cancellation reaching every send; a
// FanOut destroyed with everything pending.
#include "utils/callback_queue_hold.hpp"
#include "utils/context_runner.hpp"
#include "utils/payloads.hpp"
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/fan_out.hpp>
#include <remote_xcomm/request.hpp>
#include <remote_xcomm/server.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using rx_test::describe;
using rx_test::make_key;
using rx_test::with_id;
using Results = std::vector<rx::FanOutResult>;

// The outcome of one asynchronous operation completing with (error_code, T), caught by a
// callback (Asio 1.81's as_tuple does not compose with use_future).
template <typename T>
class Outcome {
 public:
  using Tuple = std::tuple<boost::system::error_code, T>;
  auto handler() {
    return [promise = promise_](boost::system::error_code error, T value) {
      promise->set_value(Tuple(error, std::move(value)));
    };
  }
  Tuple wait(const std::string& what) { return rx_test::wait_for(future_, what); }

 private:
  std::shared_ptr<std::promise<Tuple>> promise_ = std::make_shared<std::promise<Tuple>>();
  std::future<Tuple> future_ = promise_->get_future();
};

using AllOutcome = Outcome<Results>;
using NextOutcome = Outcome<rx::FanOutResult>;

// A server with a loop thread of its own, as a worker host has.
struct Worker {
  explicit Worker(rx::ServerOptions options = {}) : server(context, std::move(options)) {}
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() {
    server.shutdown();
    runner.reset();
  }
  void start() {
    server.start();
    runner.emplace(context);
  }
  asio::io_context context;
  rx::Server server;
  std::optional<rx_test::ContextRunner> runner;
};

// The scheduler: a Client whose loop a thread of its own runs.
struct Scheduler {
  explicit Scheduler(rx::Transport transport) : client(context, options(transport)), runner(context) {}
  static rx::ClientOptions options(rx::Transport transport) {
    rx::ClientOptions options;
    options.transport = transport;
    return options;
  }
  asio::io_context context;
  rx::Client client;
  rx_test::ContextRunner runner;
};

// Holds every request the tasks of its servers take until the test releases them, counting how
// many each server holds at once (a bound on what the client has in flight to it) and how many
// held requests saw their caller give up.
class Holding : public std::enable_shared_from_this<Holding> {
 public:
  explicit Holding(std::size_t servers) : held_per_server_(servers, 0), most_per_server_(servers, 0) {}

  rx::Server::Task task(std::size_t server) {
    return [self = shared_from_this(), server](rx::Endpoint endpoint) -> asio::awaitable<void> {
      for (;;) {
        rx::Request request = co_await endpoint.next();
        // Each request waits in a coroutine of its own, so that the task takes the next at once.
        asio::co_spawn(endpoint.get_executor(), self->hold(server, std::move(request)), asio::detached);
      }
    };
  }

  // Waits until `ready(held per server)` holds; false if HANG_GUARD passed first.
  template <typename Predicate>
  bool wait_until(Predicate ready) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, rx_test::HANG_GUARD, [&] { return ready(held_per_server_); });
  }

  // Waits until `count` held requests saw their caller give up; false if HANG_GUARD passed first.
  bool wait_until_cancelled(std::size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, rx_test::HANG_GUARD, [&] { return cancelled_ >= count; });
  }

  // Lets every held request go: each is answered with its payload, on its loop.
  void release_all() {
    std::vector<std::shared_ptr<Entry>> released;
    {
      const std::lock_guard lock(mutex_);
      released = std::move(held_);
      held_.clear();
      std::fill(held_per_server_.begin(), held_per_server_.end(), 0);
    }
    for (std::shared_ptr<Entry>& entry : released) {
      const auto executor = entry->timer.get_executor();
      asio::post(executor, [entry = std::move(entry)] {
        entry->released = true;
        entry->timer.cancel();
      });
    }
  }

  std::size_t cancelled() {
    const std::lock_guard lock(mutex_);
    return cancelled_;
  }
  std::size_t most_at_once() {
    const std::lock_guard lock(mutex_);
    return most_;
  }
  std::vector<std::size_t> most_per_server() {
    const std::lock_guard lock(mutex_);
    return most_per_server_;
  }

 private:
  struct Entry {
    explicit Entry(const asio::any_io_executor& executor) : timer(executor, asio::steady_timer::time_point::max()) {}
    asio::steady_timer timer;
    bool released = false;  // on the loop
  };

  asio::awaitable<void> hold(std::size_t server, rx::Request request) {
    auto entry = std::make_shared<Entry>(co_await asio::this_coro::executor);
    {
      const std::lock_guard lock(mutex_);
      held_.push_back(entry);
      most_ = std::max(most_, held_.size());
      most_per_server_[server] = std::max(most_per_server_[server], ++held_per_server_[server]);
    }
    changed_.notify_all();
    // Ends when released, or when the caller gives up (the request's cancellation).
    co_await entry->timer.async_wait(
        asio::bind_cancellation_slot(request.cancellation_slot(), asio::as_tuple(asio::use_awaitable)));
    if (entry->released) {
      json::object outputs = request.payload();
      co_await request.reply(std::move(outputs), asio::as_tuple(asio::use_awaitable));
      co_return;
    }
    {
      const std::lock_guard lock(mutex_);
      if (const auto it = std::find(held_.begin(), held_.end(), entry); it != held_.end()) {
        held_.erase(it);
        --held_per_server_[server];
      }
      ++cancelled_;
    }
    changed_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::shared_ptr<Entry>> held_;
  std::vector<std::size_t> held_per_server_;
  std::vector<std::size_t> most_per_server_;
  std::size_t most_ = 0;
  std::size_t cancelled_ = 0;
};

// `count` started Workers, each hosting the endpoint "held", whose task holds its requests for
// `holding` (server s reports as s).
struct HeldWorkers {
  HeldWorkers(const std::shared_ptr<Holding>& holding, std::size_t count) {
    for (std::size_t s = 0; s < count; ++s) {
      Worker& worker = *workers.emplace_back(std::make_unique<Worker>());
      if (!worker.server.attach(make_key("held"), holding->task(s))) {
        throw std::logic_error("endpoint \"held\" attached twice");
      }
      worker.start();
      targets.push_back(worker.server.target());
    }
  }
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::string> targets;
};

std::size_t total(const std::vector<std::size_t>& counts) {
  std::size_t sum = 0;
  for (const std::size_t count : counts) {
    sum += count;
  }
  return sum;
}

// One request per (server, i), to one endpoint per server: {"id": i}.
std::vector<rx::FanOutRequest> requests_to(const std::vector<std::string>& targets, std::size_t per_server) {
  std::vector<rx::FanOutRequest> requests;
  for (std::size_t i = 0; i < per_server; ++i) {
    for (const std::string& target : targets) {
      requests.push_back({target, make_key("held"), with_id(static_cast<int>(requests.size()))});
    }
  }
  return requests;
}

// Every result is the echo of its own request, in index order.
void expect_echoes(const Results& results, std::size_t count) {
  ASSERT_EQ(results.size(), count);
  for (std::size_t i = 0; i < results.size(); ++i) {
    ASSERT_EQ(results[i].index, i);
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << describe(results[i].status);
    ASSERT_EQ(results[i].reply.at("id").as_int64(), static_cast<std::int64_t>(i));
  }
}

// One hold on gRPC's callback queue for the whole run (see CallbackQueueHold): a test's last
// channel is often freed on one of gRPC's threads (by a send's completion, or a stream's end).
class HoldCallbackQueue : public ::testing::Environment {
 public:
  void SetUp() override { hold_.emplace(); }
  void TearDown() override { hold_.reset(); }

 private:
  std::optional<rx_test::CallbackQueueHold> hold_;
};
[[maybe_unused]] const ::testing::Environment* const HOLD = ::testing::AddGlobalTestEnvironment(new HoldCallbackQueue);

class FanOutTest : public ::testing::TestWithParam<rx::Transport> {};

INSTANTIATE_TEST_SUITE_P(Transports, FanOutTest, ::testing::Values(rx::Transport::unary, rx::Transport::exchange),
                         [](const auto& test) { return test.param == rx::Transport::unary ? "unary" : "exchange"; });

TEST_P(FanOutTest, TenThousandEndpointsOnFourServersWithOneFailingHalfwayGiveOneResultEach) {
  constexpr std::size_t SERVERS = 4;
  constexpr std::size_t PER_SERVER = 2500;
  constexpr std::size_t FAILING = 3;
  std::vector<std::unique_ptr<Worker>> workers;
  // The failing server answers its first half, then holds what it gets until it is shut down.
  struct Failing {
    std::size_t taken = 0;    // on its loop
    std::size_t replied = 0;  // on its loop
    std::promise<void> halfway;
  };
  auto failing = std::make_shared<Failing>();
  std::future<void> halfway = failing->halfway.get_future();
  for (std::size_t s = 0; s < SERVERS; ++s) {
    workers.push_back(std::make_unique<Worker>());
    for (std::size_t e = 0; e < PER_SERVER; ++e) {
      const rx::TaskInstanceKey key = make_key("task" + std::to_string(e));
      if (s != FAILING) {
        ASSERT_TRUE(workers[s]->server.attach(key, rx_test::echo_once));
        continue;
      }
      ASSERT_TRUE(workers[s]->server.attach(key, [failing](rx::Endpoint endpoint) -> asio::awaitable<void> {
        rx::Request request = co_await endpoint.next();
        if (failing->taken == PER_SERVER / 2) {
          // Held until the shutdown cancels this task, which fails the request.
          asio::steady_timer never(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
          co_await never.async_wait(asio::as_tuple(asio::use_awaitable));
          co_return;
        }
        ++failing->taken;
        json::object outputs = request.payload();
        co_await request.reply(std::move(outputs), asio::as_tuple(asio::use_awaitable));
        if (++failing->replied == PER_SERVER / 2) {
          failing->halfway.set_value();
        }
      }));
    }
    workers[s]->start();
  }
  std::vector<rx::FanOutRequest> requests;
  for (std::size_t s = 0; s < SERVERS; ++s) {
    for (std::size_t e = 0; e < PER_SERVER; ++e) {
      requests.push_back({workers[s]->server.target(), make_key("task" + std::to_string(e)),
                          with_id(static_cast<int>(requests.size()))});
    }
  }
  // Shut down from a thread of its own once the failing server has answered half its requests.
  std::thread failure([&] {
    if (halfway.wait_for(rx_test::HANG_GUARD) == std::future_status::ready) {
      workers[FAILING]->server.shutdown();
    }
  });

  Scheduler scheduler(GetParam());
  AllOutcome gathered;
  rx::fan_out(scheduler.client, std::move(requests), {}, gathered.handler());
  auto [error, results] = gathered.wait("the fan-out's results");
  failure.join();
  EXPECT_FALSE(error) << error.message();
  ASSERT_EQ(results.size(), SERVERS * PER_SERVER);
  std::size_t failing_ok = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const rx::FanOutResult& result = results[i];
    ASSERT_EQ(result.index, i);
    if (i / PER_SERVER != FAILING) {
      ASSERT_TRUE(result.status.ok()) << i << ": " << describe(result.status);
      ASSERT_EQ(result.reply.at("id").as_int64(), static_cast<std::int64_t>(i));
    } else if (result.status.ok()) {
      ++failing_ok;
      ASSERT_EQ(result.reply.at("id").as_int64(), static_cast<std::int64_t>(i));
    } else {
      ASSERT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE) << i << ": " << describe(result.status);
    }
  }
  EXPECT_EQ(failing_ok, PER_SERVER / 2);
}

TEST_P(FanOutTest, NeverHasMoreInFlightThanItsWindow) {
  constexpr std::size_t SERVERS = 3;
  constexpr std::size_t PER_SERVER = 30;
  constexpr std::size_t WINDOW = 8;
  auto holding = std::make_shared<Holding>(SERVERS);
  const HeldWorkers held(holding, SERVERS);
  const std::vector<std::string>& targets = held.targets;
  Scheduler scheduler(GetParam());
  rx::FanOutOptions options;
  options.max_in_flight = WINDOW;
  options.max_in_flight_per_target = 100;
  AllOutcome gathered;
  rx::fan_out(scheduler.client, requests_to(targets, PER_SERVER), options, gathered.handler());
  // Each round: the window fills (no more arrive than it allows), then everything held is answered.
  for (std::size_t remaining = SERVERS * PER_SERVER; remaining > 0;) {
    const std::size_t expected = std::min(WINDOW, remaining);
    ASSERT_TRUE(holding->wait_until([&](const auto& held) { return total(held) >= expected; }))
        << "the window never filled to " << expected;
    holding->release_all();
    remaining -= expected;
  }
  auto [error, results] = gathered.wait("the fan-out's results");
  EXPECT_FALSE(error) << error.message();
  expect_echoes(results, SERVERS * PER_SERVER);
  EXPECT_EQ(holding->most_at_once(), WINDOW);
}

TEST_P(FanOutTest, NeverHasMoreInFlightToOneTargetThanItsWindow) {
  constexpr std::size_t SERVERS = 2;
  constexpr std::size_t PER_SERVER = 30;
  constexpr std::size_t PER_TARGET = 3;
  auto holding = std::make_shared<Holding>(SERVERS);
  const HeldWorkers held(holding, SERVERS);
  const std::vector<std::string>& targets = held.targets;
  Scheduler scheduler(GetParam());
  rx::FanOutOptions options;
  options.max_in_flight = 1000;
  options.max_in_flight_per_target = PER_TARGET;
  AllOutcome gathered;
  rx::fan_out(scheduler.client, requests_to(targets, PER_SERVER), options, gathered.handler());
  for (std::size_t remaining = PER_SERVER; remaining > 0;) {
    const std::size_t expected = std::min(PER_TARGET, remaining);
    ASSERT_TRUE(holding->wait_until([&](const auto& held) {
      return std::all_of(held.begin(), held.end(), [&](std::size_t count) { return count >= expected; });
    })) << "each target's window never filled to "
        << expected;
    holding->release_all();
    remaining -= expected;
  }
  auto [error, results] = gathered.wait("the fan-out's results");
  EXPECT_FALSE(error) << error.message();
  expect_echoes(results, SERVERS * PER_SERVER);
  EXPECT_EQ(holding->most_per_server(), std::vector<std::size_t>(SERVERS, PER_TARGET));
}

TEST_P(FanOutTest, ResultsCanBeTakenAsTheyCompleteInACoroutine) {
  Worker worker;
  for (int e = 0; e < 50; ++e) {
    ASSERT_TRUE(worker.server.attach(make_key("task" + std::to_string(e)), rx_test::echo_forever));
  }
  worker.start();
  Scheduler scheduler(GetParam());
  std::vector<rx::FanOutRequest> requests;
  for (int i = 0; i < 500; ++i) {
    requests.push_back({worker.server.target(), make_key("task" + std::to_string(i % 50)), with_id(i)});
  }
  rx::FanOut fan_out(scheduler.client, std::move(requests));
  EXPECT_EQ(fan_out.size(), 500U);
  auto taken = asio::co_spawn(
      scheduler.client.get_executor(),
      [&]() -> asio::awaitable<std::vector<std::size_t>> {
        std::vector<std::size_t> indices;
        for (;;) {
          auto [error, result] = co_await fan_out.next(asio::as_tuple(asio::use_awaitable));
          if (error == rx::errc::no_more_results) {
            co_return indices;
          }
          EXPECT_FALSE(error) << error.message();
          EXPECT_TRUE(result.status.ok()) << describe(result.status);
          EXPECT_EQ(result.reply.at("id").as_int64(), static_cast<std::int64_t>(result.index));
          indices.push_back(result.index);
        }
      },
      asio::use_future);
  std::vector<std::size_t> indices = rx_test::wait_for(taken, "every result");
  std::sort(indices.begin(), indices.end());
  ASSERT_EQ(indices.size(), 500U);
  for (std::size_t i = 0; i < indices.size(); ++i) {
    EXPECT_EQ(indices[i], i);
  }
  // Taken results are not given again.
  EXPECT_TRUE(rx_test::wait_for(fan_out.all(asio::use_future), "all() after next()").empty());
}

TEST_P(FanOutTest, ResultsCanBeTakenWithCallbacksAndTheRestWithAFuture) {
  Worker worker;
  ASSERT_TRUE(worker.server.attach(make_key("task"), rx_test::echo_forever));
  worker.start();
  Scheduler scheduler(GetParam());
  std::vector<rx::FanOutRequest> requests;
  for (int i = 0; i < 20; ++i) {
    requests.push_back({worker.server.target(), make_key("task"), with_id(i)});
  }
  rx::FanOut fan_out(scheduler.client, std::move(requests));
  std::promise<rx::FanOutResult> first;
  fan_out.next([&first](boost::system::error_code error, rx::FanOutResult result) {
    EXPECT_FALSE(error);
    first.set_value(std::move(result));
  });
  const rx::FanOutResult one = rx_test::wait_for(first.get_future(), "the first result");
  EXPECT_TRUE(one.status.ok()) << describe(one.status);
  // use_future: a future of the results, which would throw the error if there were one.
  const Results rest = rx_test::wait_for(fan_out.all(asio::use_future), "the other results");
  ASSERT_EQ(rest.size(), 19U);
  std::set<std::size_t> seen{one.index};
  for (const rx::FanOutResult& result : rest) {
    EXPECT_TRUE(result.status.ok()) << describe(result.status);
    seen.insert(result.index);
  }
  EXPECT_EQ(seen.size(), 20U);
  EXPECT_TRUE(std::is_sorted(rest.begin(), rest.end(), [](const auto& a, const auto& b) { return a.index < b.index; }));
  NextOutcome after_end;
  fan_out.next(after_end.handler());
  auto [last_error, none] = after_end.wait("next() after the end");
  EXPECT_EQ(last_error, rx::errc::no_more_results);
}

TEST_P(FanOutTest, OneCancellationCancelsEverySendInFlightAndUnsent) {
  constexpr std::size_t SERVERS = 2;
  constexpr std::size_t PER_SERVER = 20;
  constexpr std::size_t WINDOW = 10;
  auto holding = std::make_shared<Holding>(SERVERS);
  const HeldWorkers held(holding, SERVERS);
  const std::vector<std::string>& targets = held.targets;
  Scheduler scheduler(GetParam());
  rx::FanOutOptions options;
  options.max_in_flight = WINDOW;
  asio::cancellation_signal cancel;
  AllOutcome gathered;
  rx::fan_out(scheduler.client, requests_to(targets, PER_SERVER), options,
              asio::bind_cancellation_slot(cancel.slot(), gathered.handler()));
  ASSERT_TRUE(holding->wait_until([&](const auto& held) { return total(held) == WINDOW; }));
  // The slot belongs to the client's loop, where the operation's handler runs: emit there.
  asio::post(scheduler.client.get_executor(), [&cancel] { cancel.emit(asio::cancellation_type::terminal); });
  auto [error, results] = gathered.wait("the cancelled fan-out's results");
  EXPECT_EQ(error, asio::error::operation_aborted);
  ASSERT_EQ(results.size(), SERVERS * PER_SERVER);
  std::size_t unsent = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].index, i);
    EXPECT_EQ(results[i].status.error_code(), grpc::StatusCode::CANCELLED) << describe(results[i].status);
    if (results[i].status.error_message().find("before this send started") != std::string::npos) {
      ++unsent;
    }
  }
  EXPECT_EQ(unsent, SERVERS * PER_SERVER - WINDOW);
  // The cancellation reached every task holding a request.
  EXPECT_TRUE(holding->wait_until_cancelled(WINDOW))
      << holding->cancelled() << " of " << WINDOW << " held requests saw the cancellation";
}

TEST_P(FanOutTest, AnAwaitableOperatorRaceCancelsTheFanOutThroughNext) {
  using namespace asio::experimental::awaitable_operators;  // NOLINT(google-build-using-namespace)
  auto holding = std::make_shared<Holding>(1);
  Worker worker;
  ASSERT_TRUE(worker.server.attach(make_key("held"), holding->task(0)));
  worker.start();
  Scheduler scheduler(GetParam());
  rx::FanOut fan_out(scheduler.client, requests_to({worker.server.target()}, 5));
  ASSERT_TRUE(holding->wait_until([](const auto& held) { return held[0] == 5; }));
  // The other branch wins at once; the losing next() is cancelled, and with it every send.
  auto raced = asio::co_spawn(
      scheduler.client.get_executor(),
      [&]() -> asio::awaitable<std::size_t> {
        asio::steady_timer now(co_await asio::this_coro::executor, std::chrono::steady_clock::duration::zero());
        auto winner = co_await (fan_out.next(asio::use_awaitable) || now.async_wait(asio::use_awaitable));
        co_return winner.index();
      },
      asio::use_future);
  EXPECT_EQ(rx_test::wait_for(raced, "the race"), 1U);
  const Results results = rx_test::wait_for(fan_out.all(asio::use_future), "the cancelled results");
  ASSERT_EQ(results.size(), 5U);
  for (const rx::FanOutResult& result : results) {
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED) << describe(result.status);
  }
}

TEST_P(FanOutTest, ACancelledNextTakesNoResultAndTheRestCanStillBeTaken) {
  auto holding = std::make_shared<Holding>(1);
  Worker worker;
  ASSERT_TRUE(worker.server.attach(make_key("held"), holding->task(0)));
  worker.start();
  Scheduler scheduler(GetParam());
  rx::FanOut fan_out(scheduler.client, requests_to({worker.server.target()}, 3));
  ASSERT_TRUE(holding->wait_until([](const auto& held) { return held[0] == 3; }));
  asio::cancellation_signal cancel;
  NextOutcome waiting;
  fan_out.next(asio::bind_cancellation_slot(cancel.slot(), waiting.handler()));
  asio::post(scheduler.client.get_executor(), [&cancel] { cancel.emit(asio::cancellation_type::partial); });
  auto [error, nothing] = waiting.wait("the cancelled next()");
  EXPECT_EQ(error, asio::error::operation_aborted);
  std::size_t taken = 0;
  for (;;) {
    NextOutcome next;
    fan_out.next(next.handler());
    auto [next_error, result] = next.wait("a result");
    if (next_error == rx::errc::no_more_results) {
      break;
    }
    EXPECT_FALSE(next_error) << next_error.message();
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED) << describe(result.status);
    ++taken;
  }
  EXPECT_EQ(taken, 3U);
}

TEST_P(FanOutTest, ASecondWaitFailsWhileOneWaits) {
  auto holding = std::make_shared<Holding>(1);
  Worker worker;
  ASSERT_TRUE(worker.server.attach(make_key("held"), holding->task(0)));
  worker.start();
  Scheduler scheduler(GetParam());
  rx::FanOut fan_out(scheduler.client, requests_to({worker.server.target()}, 2));
  ASSERT_TRUE(holding->wait_until([](const auto& held) { return held[0] == 2; }));
  AllOutcome first;
  fan_out.all(first.handler());
  NextOutcome second;
  fan_out.next(second.handler());
  auto [error, none] = second.wait("the second wait");
  EXPECT_EQ(error, rx::errc::already_waiting);
  holding->release_all();
  auto [all_error, results] = first.wait("the first wait");
  EXPECT_FALSE(all_error);
  expect_echoes(results, 2);
}

TEST_P(FanOutTest, DestroyingItWithEverythingPendingEndsTheWaitAndCancelsEverySend) {
  auto holding = std::make_shared<Holding>(1);
  Worker worker;
  ASSERT_TRUE(worker.server.attach(make_key("held"), holding->task(0)));
  worker.start();
  Scheduler scheduler(GetParam());
  NextOutcome waiting;
  {
    rx::FanOutOptions options;
    options.max_in_flight = 4;
    rx::FanOut fan_out(scheduler.client, requests_to({worker.server.target()}, 10), options);
    ASSERT_TRUE(holding->wait_until([](const auto& held) { return held[0] == 4; }));
    fan_out.next(waiting.handler());
  }
  auto [error, nothing] = waiting.wait("the wait of a destroyed fan-out");
  EXPECT_EQ(error, asio::error::operation_aborted);
  EXPECT_TRUE(holding->wait_until_cancelled(4)) << holding->cancelled() << " of 4 held requests saw the cancellation";
}

TEST_P(FanOutTest, AServerThatIsNotThereFailsOnlyItsOwnResults) {
  Worker worker;
  ASSERT_TRUE(worker.server.attach(make_key("task"), rx_test::echo_forever));
  worker.start();
  std::string gone_target;
  {
    Worker gone;
    gone.start();
    gone_target = gone.server.target();
  }
  Scheduler scheduler(GetParam());
  std::vector<rx::FanOutRequest> requests;
  for (int i = 0; i < 40; ++i) {
    requests.push_back({i % 2 == 0 ? worker.server.target() : gone_target, make_key("task"), with_id(i)});
  }
  const Results results =
      rx_test::wait_for(rx::fan_out(scheduler.client, std::move(requests), {}, asio::use_future), "the results");
  ASSERT_EQ(results.size(), 40U);
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (i % 2 == 0) {
      EXPECT_TRUE(results[i].status.ok()) << describe(results[i].status);
    } else {
      EXPECT_EQ(results[i].status.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(results[i].status);
    }
  }
}

TEST_P(FanOutTest, AnEmptyFanOutCompletesAtOnce) {
  Scheduler scheduler(GetParam());
  EXPECT_TRUE(rx_test::wait_for(rx::fan_out(scheduler.client, {}, {}, asio::use_future), "no results").empty());
  rx::FanOut fan_out(scheduler.client, {});
  NextOutcome next;
  fan_out.next(next.handler());
  auto [next_error, nothing] = next.wait("next() of nothing");
  EXPECT_EQ(next_error, rx::errc::no_more_results);
}

class ConnectionTest : public ::testing::TestWithParam<rx::Transport> {};

INSTANTIATE_TEST_SUITE_P(Transports, ConnectionTest, ::testing::Values(rx::Transport::unary, rx::Transport::exchange),
                         [](const auto& test) { return test.param == rx::Transport::unary ? "unary" : "exchange"; });

TEST_P(ConnectionTest, SendsThroughAConnectionReachItsTarget) {
  Worker worker;
  ASSERT_TRUE(worker.server.attach(make_key("task"), rx_test::echo_forever));
  worker.start();
  Scheduler scheduler(GetParam());
  const rx::Connection connection = scheduler.client.connect(worker.server.target());
  EXPECT_EQ(connection.target(), worker.server.target());
  std::vector<std::future<std::tuple<grpc::Status, json::object>>> sends;
  for (int i = 0; i < 100; ++i) {
    sends.push_back(connection.send(make_key("task"), with_id(i), asio::use_future));
  }
  for (int i = 0; i < 100; ++i) {
    auto [status, reply] = rx_test::wait_for(sends[static_cast<std::size_t>(i)], "a reply");
    ASSERT_TRUE(status.ok()) << describe(status);
    EXPECT_EQ(reply.at("id").as_int64(), i);
  }
  auto [status, reply] = rx_test::wait_for(
      connection.send(make_key("nobody"), with_id(0), rx::SendOptions{}, asio::use_future), "a NOT_FOUND");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << describe(status);
}

TEST_P(ConnectionTest, AConnectionStillSendsAfterItsClientIsDestroyed) {
  Worker worker;
  ASSERT_TRUE(worker.server.attach(make_key("task"), rx_test::echo_forever));
  worker.start();
  asio::io_context context;
  std::optional<rx::Connection> connection;
  {
    rx_test::ContextRunner runner(context);
    {
      rx::Client client(context, Scheduler::options(GetParam()));
      connection.emplace(client.connect(worker.server.target()));
    }
    auto [status, reply] =
        rx_test::wait_for(connection->send(make_key("task"), with_id(7), asio::use_future), "a reply");
    ASSERT_TRUE(status.ok()) << describe(status);
    EXPECT_EQ(reply.at("id").as_int64(), 7);
  }
  connection.reset();
}

}  // namespace

// 10,000 sends with random cancellations and deadlines to tasks that are slow at random, on each
// transport: every send completes exactly once, with a status its fate allows; nothing hangs;
// the server ends up holding nothing, and its counters agree with what the tasks and the client
// saw. Under AddressSanitizer, LeakSanitizer checks at exit that nothing leaked.
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/request.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

constexpr int REQUESTS = 10'000;
constexpr int IN_FLIGHT = 256;
constexpr int ENDPOINTS = 32;

// What the tasks did, counted on the loop, read by the test once every send has completed.
struct TaskTally {
  std::atomic<std::uint64_t> taken{0};          // requests the tasks took (next())
  std::atomic<std::uint64_t> replied{0};        // replies handed to gRPC (reply() succeeded)
  std::atomic<std::uint64_t> reply_refused{0};  // reply() said the caller had left (request_cancelled)
  std::atomic<std::uint64_t> abandoned{0};      // the caller left while the task worked: no reply tried
  std::atomic<std::uint64_t> other_errors{0};
};

// Works `delay_us` microseconds on a loop timer (-1: until the caller gives up), stopping early
// when the caller gives up, then replies {"i": i}.
asio::awaitable<void> slow_at_random(rx::Endpoint endpoint, std::shared_ptr<TaskTally> tally) {
  const auto executor = co_await asio::this_coro::executor;
  for (;;) {
    rx::Request request = co_await endpoint.next();
    tally->taken.fetch_add(1);
    const std::int64_t delay_us = request.payload().at("delay_us").as_int64();
    asio::cancellation_slot slot = request.cancellation_slot();  // before cancelled(): see rx::Request
    if (!request.cancelled()) {
      asio::steady_timer work(
          executor, delay_us < 0 ? asio::steady_timer::time_point::max()
                                 : asio::steady_timer::clock_type::now() + std::chrono::microseconds(delay_us));
      co_await work.async_wait(asio::bind_cancellation_slot(slot, asio::as_tuple(asio::use_awaitable)));
    }
    if (request.cancelled()) {
      tally->abandoned.fetch_add(1);
      continue;
    }
    json::object reply{{"i", request.payload().at("i")}};
    auto [error] = co_await request.reply(std::move(reply), asio::as_tuple(asio::use_awaitable));
    if (!error) {
      tally->replied.fetch_add(1);
    } else if (error == rx::errc::request_cancelled) {
      tally->reply_refused.fetch_add(1);
    } else {
      tally->other_errors.fetch_add(1);
    }
  }
}

// How a send's fate is chosen, and the statuses each fate allows.
enum class Fate {
  fast,            // no work, the default deadline, never cancelled: OK
  short_deadline,  // random work, a deadline of 1 to 4 ms: OK or DEADLINE_EXCEEDED
  cancelled,       // random work or none at all, cancelled after 0 to 3 ms: OK or CANCELLED
  hang_deadline,   // the task waits for the caller to leave; a deadline of 1 to 5 ms: DEADLINE_EXCEEDED
  hang_cancelled,  // as above, cancelled after 0 to 3 ms: CANCELLED
};

bool allowed(Fate fate, grpc::StatusCode code) {
  switch (fate) {
    case Fate::fast:
      return code == grpc::StatusCode::OK;
    case Fate::short_deadline:
      return code == grpc::StatusCode::OK || code == grpc::StatusCode::DEADLINE_EXCEEDED;
    case Fate::cancelled:
      return code == grpc::StatusCode::OK || code == grpc::StatusCode::CANCELLED;
    case Fate::hang_deadline:
      return code == grpc::StatusCode::DEADLINE_EXCEEDED;
    case Fate::hang_cancelled:
      return code == grpc::StatusCode::CANCELLED;
  }
  return false;
}

// The client side, driven on the loop by completions and timers: IN_FLIGHT sends at a time until
// REQUESTS have been made. Everything here runs on the loop (completions and timers use its
// executor), so it needs no locks; the test reads it after `done`.
class Storm {
 public:
  Storm(rx::Client& client, rx::LoopExecutor loop, std::string target)
      : client_(client),
        loop_(std::move(loop)),
        target_(std::move(target)),
        completions_(REQUESTS, 0),
        fates_(REQUESTS) {}

  std::future<void> start() {
    asio::post(loop_, [this] {
      while (started_ < IN_FLIGHT) {
        launch();
      }
    });
    return done_.get_future();
  }

  std::array<std::uint64_t, 17> by_code{};
  std::vector<std::string> surprises;  // the first few sends whose status their fate rules out
  std::uint64_t surprise_count = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t wrong_replies = 0;

  [[nodiscard]] std::uint64_t never_completed() const {
    std::uint64_t missing = 0;
    for (const std::uint8_t count : completions_) {
      missing += count == 0 ? 1 : 0;
    }
    return missing;
  }

 private:
  void launch() {
    const int i = started_++;
    const std::uint32_t roll = random_(100);
    const Fate fate = roll < 30   ? Fate::fast
                      : roll < 50 ? Fate::short_deadline
                      : roll < 75 ? Fate::cancelled
                      : roll < 88 ? Fate::hang_deadline
                                  : Fate::hang_cancelled;
    fates_[static_cast<std::size_t>(i)] = fate;
    std::int64_t delay_us = 0;
    rx::SendOptions options;
    options.timeout = rx_test::DEFAULT_DEADLINE;
    std::optional<std::chrono::microseconds> cancel_after;
    switch (fate) {
      case Fate::fast:
        break;
      case Fate::short_deadline:
        delay_us = random_(3000);
        options.timeout = std::chrono::milliseconds(1 + random_(4));
        break;
      case Fate::cancelled:
        delay_us = random_(4) == 0 ? 0 : random_(3000);
        cancel_after = std::chrono::microseconds(random_(3000));
        break;
      case Fate::hang_deadline:
        delay_us = -1;
        options.timeout = std::chrono::milliseconds(1 + random_(5));
        break;
      case Fate::hang_cancelled:
        delay_us = -1;
        cancel_after = std::chrono::microseconds(random_(3000));
        break;
    }
    const rx::TaskInstanceKey key{"dag", std::string("s").append(std::to_string(i % ENDPOINTS)), "run", -1};
    json::object payload{{"i", i}, {"delay_us", delay_us}};
    auto cancel = std::make_shared<asio::cancellation_signal>();
    client_.send(
        target_, key, payload, options,
        asio::bind_cancellation_slot(cancel->slot(), [this, i, cancel](grpc::Status status, json::object reply) {
          completed(i, status, reply);
        }));
    if (cancel_after) {
      if (cancel_after->count() < 300) {
        cancel->emit(asio::cancellation_type::terminal);  // at once, before the call can have an answer
      } else {
        auto timer = std::make_shared<asio::steady_timer>(loop_, *cancel_after);
        timer->async_wait(
            [timer, cancel](boost::system::error_code) { cancel->emit(asio::cancellation_type::terminal); });
      }
    }
  }

  void completed(int i, const grpc::Status& status, const json::object& reply) {
    std::uint8_t& count = completions_[static_cast<std::size_t>(i)];
    if (++count > 1) {
      ++duplicates;
      return;
    }
    const auto code = status.error_code();
    ++by_code[static_cast<std::size_t>(code)];
    const Fate fate = fates_[static_cast<std::size_t>(i)];
    if (!allowed(fate, code)) {
      if (surprises.size() < 10) {
        std::ostringstream text;
        text << "send " << i << " (fate " << static_cast<int>(fate) << "): " << rx_test::describe(status);
        surprises.push_back(text.str());
      }
      ++surprise_count;
    } else if (status.ok() && (reply.size() != 1 || !reply.contains("i") || !reply.at("i").is_int64() ||
                               reply.at("i").as_int64() != i)) {
      ++wrong_replies;
    }
    if (++finished_ == REQUESTS) {
      done_.set_value();
    } else if (started_ < REQUESTS) {
      launch();
    }
  }

  std::uint32_t random_(std::uint32_t bound) {
    return std::uniform_int_distribution<std::uint32_t>(0, bound - 1)(rng_);
  }

  rx::Client& client_;
  rx::LoopExecutor loop_;
  std::string target_;
  std::mt19937 rng_{20261203};
  int started_ = 0;
  int finished_ = 0;
  std::vector<std::uint8_t> completions_;
  std::vector<Fate> fates_;
  std::promise<void> done_;
};

class CancellationStorm : public rx_test::ServerFixture, public ::testing::WithParamInterface<rx::Transport> {};

TEST_P(CancellationStorm, EverySendCompletesOnceAndTheServerAgrees) {
  auto tally = std::make_shared<TaskTally>();
  for (int e = 0; e < ENDPOINTS; ++e) {
    ASSERT_TRUE(server_.attach({"dag", std::string("s").append(std::to_string(e)), "run", -1},
                               [tally](rx::Endpoint endpoint) { return slow_at_random(endpoint, tally); }));
  }
  rx::ClientOptions options;
  options.transport = GetParam();
  rx::Client client(loop_, options);
  Storm storm(client, loop_.get_executor(), server_.target());
  rx_test::wait_for(storm.start(), "every send's completion");

  EXPECT_EQ(storm.never_completed(), 0U);
  EXPECT_EQ(storm.duplicates, 0U);
  EXPECT_EQ(storm.wrong_replies, 0U);
  EXPECT_EQ(storm.surprise_count, 0U) << ::testing::PrintToString(storm.surprises);
  const auto ok = storm.by_code[0];
  const auto cancelled = storm.by_code[static_cast<std::size_t>(grpc::StatusCode::CANCELLED)];
  const auto deadline = storm.by_code[static_cast<std::size_t>(grpc::StatusCode::DEADLINE_EXCEEDED)];
  EXPECT_EQ(ok + cancelled + deadline, static_cast<std::uint64_t>(REQUESTS));
  std::cout << "client: OK " << ok << ", CANCELLED " << cancelled << ", DEADLINE_EXCEEDED " << deadline << "\n";

  // The server learns of the last cancellations after the client: wait (bounded) until it holds
  // nothing, then compare.
  rx::ServerStats stats;
  const auto give_up = std::chrono::steady_clock::now() + rx_test::HANG_GUARD;
  for (;;) {
    stats = server_.stats();
    const bool tasks_done =
        tally->taken == tally->replied + tally->reply_refused + tally->abandoned + tally->other_errors;
    if ((stats.requests_in_flight == 0 && stats.queued_requests == 0 && tasks_done) ||
        std::chrono::steady_clock::now() > give_up) {
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(stats.requests_in_flight, 0U);
  EXPECT_EQ(stats.queued_requests, 0U);
  const rx::MethodStats* counted = stats.find(GetParam() == rx::Transport::unary ? "Send" : "Exchange");
  ASSERT_NE(counted, nullptr);
  const auto server_ok = counted->by_code[0];
  const auto server_cancelled = counted->by_code[static_cast<std::size_t>(grpc::StatusCode::CANCELLED)];
  const auto server_deadline = counted->by_code[static_cast<std::size_t>(grpc::StatusCode::DEADLINE_EXCEEDED)];
  std::string codes;
  for (std::size_t code = 0; code < counted->by_code.size(); ++code) {
    if (counted->by_code[code] != 0) {
      codes.append(rx::status_code_name(static_cast<int>(code)))
          .append(" ")
          .append(std::to_string(counted->by_code[code]))
          .append(", ");
    }
  }
  std::cout << "server codes: " << codes << "\n";
  std::cout << "server: " << counted->requests() << " ended: OK " << server_ok << ", CANCELLED " << server_cancelled
            << ", DEADLINE_EXCEEDED " << server_deadline << "; tasks took " << tally->taken << ", replied "
            << tally->replied << ", reply refused " << tally->reply_refused << ", abandoned " << tally->abandoned
            << "\n";
  // Only these three ends, and no more requests than were sent (a send cancelled or timed out
  // before it left the client never reaches the server). On an Exchange stream a cancel is a frame
  // too, and one that finds its request already answered is counted as a NOT_FOUND frame
  // (docs/protocol.md, "Errors of one frame"): only a cancelled or timed-out send makes one.
  const auto late_cancels = GetParam() == rx::Transport::exchange
                                ? counted->by_code[static_cast<std::size_t>(grpc::StatusCode::NOT_FOUND)]
                                : 0;
  EXPECT_EQ(server_ok + server_cancelled + server_deadline + late_cancels, counted->requests()) << codes;
  EXPECT_LE(counted->requests() - late_cancels, static_cast<std::uint64_t>(REQUESTS));
  EXPECT_LE(late_cancels, cancelled + deadline);
  // A reply the task handed over is the server's OK, exactly; every client OK is one of them (a
  // reply may be on its way when its caller cancels: the server's OK, the client's CANCELLED).
  EXPECT_EQ(server_ok, tally->replied.load());
  EXPECT_GE(server_ok, ok);
  EXPECT_LE(server_ok - ok, cancelled + deadline);
  // Every request a task took ended one way.
  EXPECT_EQ(tally->taken.load(), tally->replied + tally->reply_refused + tally->abandoned + tally->other_errors);
  EXPECT_EQ(tally->other_errors.load(), 0U);
  EXPECT_LE(tally->taken.load(), counted->requests());
}

std::string transport_name(const ::testing::TestParamInfo<rx::Transport>& transport) {
  return transport.param == rx::Transport::unary ? "Unary" : "Exchange";
}

INSTANTIATE_TEST_SUITE_P(Transports, CancellationStorm,
                         ::testing::Values(rx::Transport::unary, rx::Transport::exchange), transport_name);

}  // namespace

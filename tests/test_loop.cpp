// rx::Loop and rx::LoopExecutor: one thread at a time, arrival order, inline dispatch when idle.
#include "utils/counted.hpp"
#include "utils/run_coroutine.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/loop.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using rx_test::Counted;

class LoopTest : public ::testing::Test {
 protected:
  // Runs the io_context on a worker thread, as an application's loop thread would.
  void start_loop_thread() {
    work_.emplace(context_.get_executor());
    loop_thread_ = std::thread([this] { context_.run(); });
  }

  void TearDown() override {
    work_.reset();
    if (loop_thread_.joinable()) {
      loop_thread_.join();
    }
  }

  asio::io_context context_;
  rx::Loop loop_{context_};
  rx::LoopExecutor executor_ = loop_.get_executor();

 private:
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread loop_thread_;
};

TEST_F(LoopTest, HandOffFromAForeignThreadRunsInlineWhenTheLoopIsIdle) {
  std::thread::id ran_on;
  bool running_inside = false;
  std::thread::id foreign;
  std::thread thread([&] {
    foreign = std::this_thread::get_id();
    rx::detail::hand_off(executor_, [&] {
      ran_on = std::this_thread::get_id();
      running_inside = executor_.running_in_this_thread();
    });
  });
  thread.join();
  EXPECT_EQ(ran_on, foreign);  // ran before hand_off returned, on the delivering thread
  EXPECT_TRUE(running_inside);
}

TEST_F(LoopTest, UserDispatchFromAForeignThreadQueuesAndTheLoopsOwnThreadRunsIt) {
  bool ran = false;
  std::thread thread([&] { asio::dispatch(executor_, [&] { ran = true; }); });
  thread.join();
  EXPECT_FALSE(ran);  // never borrows a thread the loop does not own
  context_.poll();
  EXPECT_TRUE(ran);
}

TEST_F(LoopTest, DispatchFromTheIoContextsOwnThreadRunsInlineWhenTheLoopIsIdle) {
  std::vector<int> order;
  asio::post(context_, [&] {
    asio::dispatch(executor_, [&] { order.push_back(1); });
    order.push_back(2);
  });
  context_.poll();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST_F(LoopTest, PostNeverRunsInlineAndTheIoContextRunsIt) {
  bool ran = false;
  asio::post(executor_, [&] { ran = true; });
  EXPECT_FALSE(ran);
  context_.poll();
  EXPECT_TRUE(ran);
}

TEST_F(LoopTest, RunningInThisThreadIsTrueOnlyInsideLoopWork) {
  EXPECT_FALSE(executor_.running_in_this_thread());
  bool inside = false;
  bool other_thread_sees_inside = true;
  asio::dispatch(executor_, [&] {
    inside = executor_.running_in_this_thread();
    std::thread other([&] { other_thread_sees_inside = executor_.running_in_this_thread(); });
    other.join();
  });
  context_.poll();
  EXPECT_TRUE(inside);
  EXPECT_FALSE(other_thread_sees_inside);
  EXPECT_FALSE(executor_.running_in_this_thread());
}

TEST_F(LoopTest, RunningInThisThreadTellsLoopsApart) {
  rx::Loop other_loop(context_);
  bool other_inside = true;
  asio::dispatch(executor_, [&] { other_inside = other_loop.get_executor().running_in_this_thread(); });
  context_.poll();
  EXPECT_FALSE(other_inside);
}

TEST_F(LoopTest, WorkOfANestedLoopStillSeesEveryLoopItRunsInside) {
  rx::Loop inner(context_);
  bool outer_seen_from_inner = false;
  bool inner_seen = false;
  asio::dispatch(executor_, [&] {
    // The io_context's own thread takes the idle inner loop inline: the loops nest on this thread.
    asio::dispatch(inner.get_executor(), [&] {
      inner_seen = inner.get_executor().running_in_this_thread();
      outer_seen_from_inner = executor_.running_in_this_thread();
    });
  });
  context_.poll();
  EXPECT_TRUE(inner_seen);
  EXPECT_TRUE(outer_seen_from_inner);  // a blocking call on the outer loop would run inline, not deadlock
  EXPECT_FALSE(executor_.running_in_this_thread());
}

TEST_F(LoopTest, DispatchFromInsideLoopWorkRunsInline) {
  std::vector<int> order;
  asio::dispatch(executor_, [&] {
    order.push_back(1);
    asio::dispatch(executor_, [&] { order.push_back(2); });
    order.push_back(3);
  });
  context_.poll();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST_F(LoopTest, PostFromInsideLoopWorkRunsAfterTheCurrentJob) {
  std::vector<int> order;
  asio::dispatch(executor_, [&] {
    order.push_back(1);
    asio::post(executor_, [&] { order.push_back(3); });
    order.push_back(2);
  });
  context_.poll();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST_F(LoopTest, PostsAndHandOffsFromInsideLoopWorkRunInTheOrderTheyWereMade) {
  // The token holder queues its own posts without a locked instruction: they must still keep
  // arrival order among themselves and with jobs queued by other means in between.
  std::vector<int> order;
  asio::dispatch(executor_, [&] {
    asio::post(executor_, [&] {
      order.push_back(1);
      asio::post(executor_, [&] { order.push_back(4); });
    });
    rx::detail::hand_off(executor_, [&] { order.push_back(2); });
    asio::post(executor_, [&] { order.push_back(3); });
  });
  context_.poll();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4}));
}

TEST_F(LoopTest, APostFromInsideLoopWorkNeverOvertakesAJobAnotherThreadQueuedBeforeIt) {
  std::vector<int> order;
  asio::dispatch(executor_, [&] {
    // Queued by another thread while this one holds the loop, and finished before the post below.
    std::thread([&] { asio::post(executor_, [&] { order.push_back(1); }); }).join();
    asio::post(executor_, [&] { order.push_back(2); });
    rx::detail::hand_off(executor_, [&] { order.push_back(3); });
  });
  context_.poll();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

// Keeps the calling thread busy for longer than a borrowed thread's budget, without yielding.
void outlast_the_borrowed_budget() {
  const auto until = std::chrono::steady_clock::now() + rx::detail::BORROWED_LOOP_BUDGET * 2;
  while (std::chrono::steady_clock::now() < until) {
  }
}

TEST_F(LoopTest, ABorrowedThreadHandsTheBacklogToTheLoopsOwnThreadOnceItsBudgetIsSpent) {
  constexpr int JOBS = 50;
  std::vector<std::thread::id> ran_on;  // loop-confined
  std::thread::id borrowed;
  std::thread poller([&] {
    borrowed = std::this_thread::get_id();
    rx::detail::hand_off(executor_, [&] {
      for (int i = 0; i < JOBS; ++i) {  // a burst queued behind the first job, as under load
        asio::post(executor_, [&] { ran_on.push_back(std::this_thread::get_id()); });
      }
      ran_on.push_back(std::this_thread::get_id());
      outlast_the_borrowed_budget();
    });
    // While the backlog waits for the loop's own thread, further hand-offs queue behind it.
    rx::detail::hand_off(executor_, [&] { ran_on.push_back(std::this_thread::get_id()); });
  });
  poller.join();
  ASSERT_EQ(ran_on.size(), 1U);  // the borrowed thread ran only the job that spent its budget
  EXPECT_EQ(ran_on[0], borrowed);
  context_.poll();
  ASSERT_EQ(ran_on.size(), static_cast<std::size_t>(JOBS + 2));
  for (std::size_t i = 1; i < ran_on.size(); ++i) {
    EXPECT_EQ(ran_on[i], std::this_thread::get_id()) << "job " << i;
  }
  // The backlog is gone: an idle loop is borrowed again.
  std::thread::id later;
  std::thread again([&] { rx::detail::hand_off(executor_, [&] { later = std::this_thread::get_id(); }); });
  const std::thread::id again_id = again.get_id();
  again.join();
  EXPECT_EQ(later, again_id);
}

TEST_F(LoopTest, AtMostOneForeignThreadRunsLoopWorkAtATimeAcrossLoops) {
  rx::Loop second(context_);
  std::promise<void> first_inside;
  std::promise<void> release_first;
  std::thread first([&] {
    rx::detail::hand_off(executor_, [&] {
      first_inside.set_value();
      release_first.get_future().wait();
    });
  });
  rx_test::wait_for(first_inside.get_future(), "the first borrowed thread");
  bool second_ran = false;
  std::thread other([&] { rx::detail::hand_off(second.get_executor(), [&] { second_ran = true; }); });
  other.join();
  EXPECT_FALSE(second_ran);  // not borrowed: a poller stays free for work that needs no loop
  release_first.set_value();
  first.join();
  context_.poll();  // the second loop's own thread runs it
  EXPECT_TRUE(second_ran);
}

TEST_F(LoopTest, ContinuationIsReportedOnceRequired) {
  namespace execution = asio::execution;
  EXPECT_EQ(asio::query(executor_, execution::relationship), execution::relationship.fork);
  const auto continuation = asio::require(executor_, execution::relationship.continuation);
  EXPECT_EQ(asio::query(continuation, execution::relationship), execution::relationship.continuation);
  const auto fork = asio::require(continuation, execution::relationship.fork);
  EXPECT_EQ(asio::query(fork, execution::relationship), execution::relationship.fork);
}

TEST_F(LoopTest, JobsPostedFromOneThreadRunInArrivalOrder) {
  start_loop_thread();
  constexpr int JOBS = 2000;
  std::vector<int> order;  // loop-confined
  std::promise<void> done;
  for (int i = 0; i < JOBS; ++i) {
    asio::post(executor_, [&, i] {
      order.push_back(i);
      if (i == JOBS - 1) {
        done.set_value();
      }
    });
  }
  rx_test::wait_for(done.get_future(), "the last job");
  ASSERT_EQ(order.size(), static_cast<std::size_t>(JOBS));
  for (int i = 0; i < JOBS; ++i) {
    ASSERT_EQ(order[static_cast<std::size_t>(i)], i);
  }
}

TEST_F(LoopTest, JobsHandedOffAndPostedFromOneThreadRunInArrivalOrder) {
  start_loop_thread();
  constexpr int JOBS = 2000;
  std::vector<int> order;  // loop-confined
  std::promise<void> done;
  for (int i = 0; i < JOBS; ++i) {
    auto job = [&, i] {
      order.push_back(i);
      if (i == JOBS - 1) {
        done.set_value();
      }
    };
    // A hand-off runs inline when the worker is idle and queues behind earlier jobs when it is not.
    if (i % 3 == 0) {
      asio::post(executor_, job);
    } else {
      rx::detail::hand_off(executor_, job);
    }
  }
  rx_test::wait_for(done.get_future(), "the last job");
  ASSERT_EQ(order.size(), static_cast<std::size_t>(JOBS));
  for (int i = 0; i < JOBS; ++i) {
    ASSERT_EQ(order[static_cast<std::size_t>(i)], i);
  }
}

TEST_F(LoopTest, WorkFromManyThreadsAllRunsAndNeverOnTwoThreadsAtOnce) {
  start_loop_thread();
  constexpr int THREADS = 4;
  constexpr int JOBS_PER_THREAD = 2000;
  constexpr int TOTAL = THREADS * JOBS_PER_THREAD;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> alive{0};
  int plain_counter = 0;  // not atomic: only the loop token protects it (ThreadSanitizer checks that)
  std::vector<std::vector<int>> seen_per_producer(THREADS);  // loop-confined
  std::promise<void> done;

  std::vector<std::thread> producers;
  for (int t = 0; t < THREADS; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < JOBS_PER_THREAD; ++i) {
        auto job = [&, t, i, counted = Counted(alive)] {
          if (inside.fetch_add(1) != 0) {
            overlaps.fetch_add(1);
          }
          seen_per_producer[static_cast<std::size_t>(t)].push_back(i);
          const bool last = ++plain_counter == TOTAL;
          inside.fetch_sub(1);
          if (last) {
            done.set_value();
          }
        };
        if (i % 3 == 0) {
          asio::dispatch(executor_, std::move(job));
        } else if (i % 3 == 1) {
          rx::detail::hand_off(executor_, std::move(job));
        } else {
          asio::post(executor_, std::move(job));
        }
      }
    });
  }
  for (std::thread& producer : producers) {
    producer.join();
  }
  rx_test::wait_for(done.get_future(), "every job");
  EXPECT_EQ(overlaps.load(), 0);
  std::promise<int> counted;
  asio::dispatch(executor_, [&] { counted.set_value(plain_counter); });
  EXPECT_EQ(rx_test::wait_for(counted.get_future()), TOTAL);
  for (int t = 0; t < THREADS; ++t) {  // each producer's jobs ran in the order it submitted them
    const auto& seen = seen_per_producer[static_cast<std::size_t>(t)];
    ASSERT_EQ(seen.size(), static_cast<std::size_t>(JOBS_PER_THREAD));
    for (int i = 0; i < JOBS_PER_THREAD; ++i) {
      ASSERT_EQ(seen[static_cast<std::size_t>(i)], i) << "producer " << t;
    }
  }
  EXPECT_EQ(alive.load(), 0);  // every job and its captures were freed after running
}

TEST_F(LoopTest, AJobThatThrowsSurfacesWhereTheIoContextRunsAndLaterWorkStillRuns) {
  bool queued_behind_ran = false;
  auto failing_job = [&] {
    asio::post(executor_, [&] { queued_behind_ran = true; });
    throw std::runtime_error("job failed");
  };
  // The delivering thread (think: a gRPC poller) is not unwound.
  EXPECT_NO_THROW(rx::detail::hand_off(executor_, failing_job));
  EXPECT_THROW(context_.poll(), std::runtime_error);
  context_.restart();
  context_.poll();
  EXPECT_TRUE(queued_behind_ran);

  bool later_ran = false;
  rx::detail::hand_off(executor_, [&] { later_ran = true; });
  EXPECT_TRUE(later_ran);  // the token was released
}

TEST(Loop, WorkOutlivingItsLoopStillRunsOnTheIoContext) {
  asio::io_context context;
  std::optional<rx::LoopExecutor> executor;
  {
    rx::Loop loop(context);
    executor.emplace(loop.get_executor());
  }
  // As with any Asio I/O object: destroying the Loop leaves its executors valid.
  bool ran = false;
  asio::post(*executor, [&] { ran = executor->running_in_this_thread(); });
  context.poll();
  EXPECT_TRUE(ran);
}

TEST(Loop, DestroyingTheIoContextFreesQueuedLoopWorkWithoutRunningIt) {
  std::atomic<int> alive{0};
  bool ran = false;
  {
    asio::io_context context;
    rx::Loop loop(context);
    asio::post(loop.get_executor(), [&ran, counted = Counted(alive)] { ran = true; });
    EXPECT_EQ(alive.load(), 1);
  }
  EXPECT_EQ(alive.load(), 0);
  EXPECT_FALSE(ran);
}

TEST_F(LoopTest, ExecutorAnswersAsiosPropertyQueries) {
  namespace execution = asio::execution;
  EXPECT_EQ(&asio::query(executor_, execution::context), &context_);
  EXPECT_EQ(asio::query(executor_, execution::blocking), execution::blocking.possibly);
  EXPECT_EQ(asio::query(executor_, execution::outstanding_work), execution::outstanding_work.untracked);

  const auto never = asio::require(executor_, execution::blocking.never);
  EXPECT_EQ(asio::query(never, execution::blocking), execution::blocking.never);
  const auto tracked = asio::prefer(executor_, execution::outstanding_work.tracked);
  EXPECT_EQ(asio::query(tracked, execution::outstanding_work), execution::outstanding_work.tracked);

  EXPECT_EQ(executor_, loop_.get_executor());
  EXPECT_NE(executor_, never);
  rx::Loop other(context_);
  EXPECT_NE(executor_, other.get_executor());
}

TEST_F(LoopTest, TrackedExecutorKeepsTheIoContextRunningUntilReleased) {
  std::optional<rx::LoopExecutor> tracked(asio::prefer(executor_, asio::execution::outstanding_work.tracked));
  std::promise<void> returned;
  std::thread runner([&] {
    context_.run();
    returned.set_value();
  });
  std::promise<bool> saw_loop;
  asio::post(*tracked, [&] { saw_loop.set_value(executor_.running_in_this_thread()); });
  EXPECT_TRUE(rx_test::wait_for(saw_loop.get_future()));
  tracked.reset();
  rx_test::wait_for(returned.get_future(), "io_context::run to return");
  runner.join();
}

TEST_F(LoopTest, TimersOnTheLoopExecutorCompleteOnTheLoop) {
  asio::steady_timer timer(executor_, std::chrono::steady_clock::time_point{});  // already expired
  std::optional<bool> on_loop;
  timer.async_wait([&](boost::system::error_code error) {
    EXPECT_FALSE(error);
    on_loop = executor_.running_in_this_thread();
  });
  context_.run();
  ASSERT_TRUE(on_loop.has_value());
  EXPECT_TRUE(*on_loop);
}

TEST_F(LoopTest, CoSpawnedCoroutinesRunOnTheLoop) {
  const bool on_loop =
      rx_test::run_on_this_thread(context_, executor_, [executor = executor_]() -> asio::awaitable<bool> {
        co_await asio::post(executor, asio::use_awaitable);
        co_return executor.running_in_this_thread();
      });
  EXPECT_TRUE(on_loop);
}

}  // namespace

// Following XCom pushes and state changes as they happen: one Watch stream of a Client.
#pragma once

#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <grpcpp/support/status.h>

#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

namespace rx {

class Client;
class Connection;

namespace detail {
class WatchStream;
using WatchNextHandler = boost::asio::any_completion_handler<void(grpc::Status, WatchEvent)>;

// The LoopExecutor behind a handler's associated executor, if it is one (also inside
// any_io_executor or any_completion_executor); null otherwise.
template <typename Executor>
[[nodiscard]] const LoopExecutor* loop_executor_of(const Executor& executor) noexcept {
  if constexpr (std::is_same_v<Executor, LoopExecutor>) {
    return &executor;
  } else if constexpr (requires { executor.template target<LoopExecutor>(); }) {
    return executor.template target<LoopExecutor>();
  } else {
    return nullptr;
  }
}

// `stream` may be null (a moved-from Watch). `fallback` is the Watch's executor (its Client's
// loop); `loop` the handler's associated executor when it is a Loop's, else null.
void watch_next(const std::shared_ptr<WatchStream>& stream, const LoopExecutor& fallback, const LoopExecutor* loop,
                WatchNextHandler handler);
}  // namespace detail

/// One Watch stream (Client::watch): the XCom pushes and state changes of a DAG run, a task or a
/// task instance, taken one event at a time with next(). Move-only; destroying it ends the stream.
///
/// Flow control: the events of a batch the server wrote are kept and handed out one by one; the
/// stream reads the next batch only once every event read has been handed out. A reader that
/// stops calling next() therefore stops reading, gRPC's flow control then stops the server's
/// writes, and the server ends a subscriber that falls too far behind with RESOURCE_EXHAUSTED
/// (its message names the sequence number to resume after): resume with a new watch whose
/// WatchQuery::after_sequence is last_sequence().
///
/// The end: once the stream has ended, next() hands out no more events and completes with the
/// status it ended with, every time: the server's (RESOURCE_EXHAUSTED, OUT_OF_RANGE when the
/// resume point is no longer retained, UNAVAILABLE when it shuts down, ...), UNAVAILABLE when the
/// connection broke or the server cut the stream short, or CANCELLED after cancel() or a
/// cancelled next(). An end is never OK: a server
/// that ends a watch with OK (the contract has no such end) is reported as UNAVAILABLE, saying so,
/// so that a loop `while (status.ok())` ends and the caller can resume after last_sequence().
///
/// Lifetimes: a Watch may outlive its Client, as a Connection may. Its gRPC stream lives until
/// gRPC has finished with it, even after the Watch is gone. A next() completes exactly once, on
/// its handler's associated executor (default: the Client's loop), whose io_context must stay
/// alive until it has; a handler with another executor than a Loop's reaches it through the
/// Client's loop when next() can complete at once (a buffered event, the end, an error), so the
/// Client's io_context must then be alive and run too. With no next() waiting, a Watch holds
/// nothing of any io_context: the Client, its io_context and the Watch may then be destroyed in
/// any order.
///
/// Thread safety: next(), cancel() and last_sequence() may be called from any thread; moving or
/// destroying a Watch must not race with calls on it. At most one next() waits at a time.
class Watch {
 public:
  /// The executor type of the Client's loop.
  using executor_type = LoopExecutor;

  /// Takes over `other`'s stream; next() on the moved-from `other` completes with
  /// FAILED_PRECONDITION.
  Watch(Watch&& other) noexcept = default;
  /// Ends the stream this Watch had (as cancel() does), then takes `other`'s.
  Watch& operator=(Watch&& other) noexcept;
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;
  /// Ends the stream (as cancel() does): a waiting next() completes with CANCELLED.
  ~Watch();

  /// The next event, in the server's sequence order.
  ///
  /// Completion signature `void(grpc::Status, rx::WatchEvent)`: OK with the event; once the
  /// stream has ended, its end status (see the class comment) with a default-constructed event;
  /// FAILED_PRECONDITION (and a default event) when another next() is still waiting, which goes
  /// on waiting, or on a moved-from Watch. With `co_await` it yields a
  /// `std::tuple<grpc::Status, rx::WatchEvent>`. Never completes inside this call.
  ///
  /// Per-Operation Cancellation: terminal and partial end the watch, as cancel() does (the stream
  /// is cancelled with `ClientContext::TryCancel`; this next() and every later one complete with
  /// CANCELLED). Total ends only this wait, with CANCELLED, and has no other effect: an event that
  /// arrives is kept for the next next().
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto next(CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(grpc::Status, WatchEvent)>(
        [](auto handler, const std::shared_ptr<detail::WatchStream>& stream, const LoopExecutor& fallback) {
          const auto executor = boost::asio::get_associated_executor(handler, fallback);
          detail::watch_next(stream, fallback, detail::loop_executor_of(executor),
                             detail::WatchNextHandler(std::move(handler)));
        },
        token, stream_, executor_);
  }

  /// Ends the stream: cancels it (`ClientContext::TryCancel`); a waiting next() completes with
  /// CANCELLED, as does every later one, and buffered events are dropped. No effect on a stream
  /// that has ended already (next() keeps reporting how it ended). Idempotent; any thread.
  void cancel();

  /// The sequence number of the last event next() handed out: resume after it with
  /// `WatchQuery::after_sequence`. Before the first event, the query's own `after_sequence`.
  [[nodiscard]] std::uint64_t last_sequence() const noexcept;

  /// The default executor of next(): the Client's loop.
  [[nodiscard]] executor_type get_executor() const noexcept { return executor_; }

 private:
  friend class Client;
  friend class Connection;
  Watch(std::shared_ptr<detail::WatchStream> stream, LoopExecutor executor) noexcept;

  std::shared_ptr<detail::WatchStream> stream_;
  LoopExecutor executor_;
};

}  // namespace rx

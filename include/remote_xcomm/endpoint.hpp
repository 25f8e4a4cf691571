// The handle a task coroutine uses to receive requests and push replies.
#pragma once

#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/request.hpp>
#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace rx {

namespace detail {
/// Runs `initiate(EndpointState&, args...)` now if this thread is running the endpoint's loop,
/// else queues it there with a reference that keeps the state alive. The inline path moves and
/// copies nothing: it is the path of every co_await in task code.
template <typename Function, typename... Args>
void on_endpoint_loop(const std::shared_ptr<EndpointState>& state, Function&& initiate, Args&&... args) {
  if (state->executor().running_in_this_thread()) {
    std::forward<Function>(initiate)(*state, std::forward<Args>(args)...);
  } else {
    boost::asio::post(state->executor(), [state, initiate = std::decay_t<Function>(std::forward<Function>(initiate)),
                                          ... args = std::decay_t<Args>(std::forward<Args>(args))]() mutable {
      std::move(initiate)(*state, std::move(args)...);
    });
  }
}
}  // namespace detail

/// A task instance's endpoint, as its task code sees it: `get()` the next request's payloads,
/// `push()` the reply. Both are Asio asynchronous operations, so they serve `co_await`
/// (the default token is `asio::deferred`), callbacks, `use_future` and any other token.
///
/// ```
/// asio::awaitable<void> run_raw_task(rx::Endpoint rx) {
///   boost::json::object payloads = co_await rx.get();
///   boost::json::object outputs{{"output_key", "hello_world"}};  // own statement: GCC 12, see README
///   co_await rx.push(std::move(outputs));
/// }
/// ```
///
/// Thread safety: a cheap handle; copies share one endpoint. `get` and `push` may be called from
/// any thread: they start on the endpoint's loop (at once when the caller is on it, as task code
/// spawned by a Server always is; queued there otherwise) and complete on the handler's associated
/// executor. The exact semantics are in docs/endpoints.md.
class Endpoint {
 public:
  /// The executor type of the endpoint's loop.
  using executor_type = LoopExecutor;

  /// Internal: a Server makes endpoints and hands one to each run of a task.
  explicit Endpoint(std::shared_ptr<detail::EndpointState> state) noexcept : state_(std::move(state)) {}

  /// The key this endpoint is addressed by.
  [[nodiscard]] const TaskInstanceKey& key() const noexcept { return state_->key(); }
  /// The executor of the loop the endpoint lives on, where task code spawned by its Server runs;
  /// the default completion executor of its operations.
  [[nodiscard]] executor_type get_executor() const noexcept { return state_->executor(); }

  /// Waits for the next request and makes it the held request.
  ///
  /// Completion signature: `void(boost::system::error_code, boost::json::object payloads)`.
  /// Completes at once (posted) if a request is queued. If a request is still held (got but not
  /// pushed), that request fails with INTERNAL first. Errors: `errc::get_already_pending` if
  /// another get is waiting, `errc::endpoint_closed` after the endpoint was detached.
  ///
  /// Cancellation (any type): the wait ends with `asio::error::operation_aborted`; no request is
  /// taken, so a request arriving later stays queued for the next get.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto get(CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, boost::json::object)>(
        [](auto handler, const std::shared_ptr<detail::EndpointState>& state) {
          // Endpoint state lives on the loop: initiate there (free when already on it).
          detail::on_endpoint_loop(
              state,
              [](detail::EndpointState& endpoint, auto&& completion) {
                if constexpr (std::is_same_v<std::decay_t<decltype(completion)>, detail::AwaitableGetHandler>) {
                  endpoint.start_get(std::move(completion));  // co_await: no allocation
                } else {
                  endpoint.start_get(detail::EndpointState::GetHandler(std::move(completion)));
                }
              },
              std::move(handler));
        },
        token, state_);
  }

  /// Waits for the next request and hands it over as an rx::Request: its payload, deadline,
  /// caller and cancellation, and the reply it is owed. The request layer under `get`/`push`:
  /// nothing is held by the endpoint, the Request answers for itself (and fails its request with
  /// INTERNAL if destroyed unanswered). The same queue feeds both; a request held through `get`
  /// fails with INTERNAL when `next` is called, as with a second `get`.
  ///
  /// Completion signature: `void(boost::system::error_code, rx::Request)`. Completes at once
  /// (posted) if a request is queued. Errors: `errc::get_already_pending` if a get or next is
  /// waiting, `errc::endpoint_closed` after the endpoint was detached.
  ///
  /// Cancellation (any type): the wait ends with `asio::error::operation_aborted`; no request is
  /// taken.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto next(CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, Request)>(
        [](auto handler, const std::shared_ptr<detail::EndpointState>& state) {
          detail::on_endpoint_loop(
              state,
              [](detail::EndpointState& endpoint, auto&& completion) {
                endpoint.start_next(detail::EndpointState::NextHandler(std::move(completion)));
              },
              std::move(handler));
        },
        token, state_);
  }

  /// Replies to the held request with `outputs` (the task's XComs) and releases it.
  ///
  /// Completion signature: `void(boost::system::error_code)`, always posted. Errors:
  /// `errc::no_request_held` when nothing is held, `errc::request_cancelled` when the caller gave
  /// up on the held request (the reply is dropped and the request released),
  /// `errc::endpoint_closed` after detach. Not cancellable: the reply is handed to gRPC at once.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto push(boost::json::object outputs, CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [](auto handler, const std::shared_ptr<detail::EndpointState>& state, boost::json::object reply) {
          detail::on_endpoint_loop(
              state,
              [](detail::EndpointState& endpoint, auto&& completion, boost::json::object&& reply_outputs) {
                if constexpr (std::is_same_v<std::decay_t<decltype(completion)>, detail::AwaitablePushHandler>) {
                  endpoint.start_push(std::move(reply_outputs), std::move(completion));  // co_await: no allocation
                } else {
                  endpoint.start_push(std::move(reply_outputs),
                                      detail::EndpointState::PushHandler(std::move(completion)));
                }
              },
              std::move(handler), std::move(reply));
        },
        token, state_, std::move(outputs));
  }

  /// Records the XCom `key` = `value` for this task instance (Airflow's `xcom_push`), replacing
  /// the value it had in this attempt. Waiting pulls of it wake, Watch subscribers see it, and it
  /// stays pullable until the endpoint is detached plus the server's retention (docs/xcoms.md).
  /// A reply given with push() is recorded under rx::return_value_key the same way.
  ///
  /// Completion signature: `void(boost::system::error_code)`, always posted: once recorded, or
  /// with a durable store (ServerOptions::xcom_store) once committed. Errors:
  /// `errc::invalid_xcom` (empty key, NaN or infinity in `value`), `errc::xcom_limit_reached`
  /// (ServerOptions::max_retained_xcom_bytes reached with nothing left to evict; not recorded),
  /// `errc::xcom_store_failed` (recorded in memory, not in the store), `errc::endpoint_closed`
  /// (detached, or an endpoint made without a server). Not cancellable: the value is recorded
  /// when the operation starts.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto xcom_push(std::string key, boost::json::value value, CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [](auto handler, const std::shared_ptr<detail::EndpointState>& state, std::string xcom_key,
           boost::json::value xcom_value) {
          detail::on_endpoint_loop(
              state,
              [](detail::EndpointState& endpoint, auto&& completion, std::string pushed_key,
                 boost::json::value&& pushed_value) {
                endpoint.start_xcom_push(std::move(pushed_key), std::move(pushed_value),
                                         detail::EndpointState::PushHandler(std::move(completion)));
              },
              std::move(handler), std::move(xcom_key), std::move(xcom_value));
        },
        token, state_, std::move(key), std::move(value));
  }

  /// Pulls XComs of task instances on this endpoint's server (Airflow's `xcom_pull`): one key of
  /// one task instance, or of every map index of a mapped task in map-index order. An empty
  /// `query.dag_id` or `query.run_id` means this endpoint's own. With `query.wait`, waits until
  /// the key exists (at least `query.min_count` map indexes with `all_map_indexes`), at most
  /// `query.timeout`.
  ///
  /// Completion signature: `void(boost::system::error_code, std::vector<rx::XCom>)`, always
  /// posted. Errors: `errc::xcom_not_found` (not waiting and nothing found),
  /// `errc::xcom_wait_timed_out`, `errc::invalid_xcom` (empty task_id or key, map index below -1),
  /// `errc::endpoint_closed` (detached, or the server shut down while waiting).
  ///
  /// Cancellation (any type): a waiting pull stops waiting and completes with
  /// `asio::error::operation_aborted`.
  template <typename CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto xcom_pull(XComQuery query, CompletionToken&& token = {}) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, std::vector<XCom>)>(
        [](auto handler, const std::shared_ptr<detail::EndpointState>& state, XComQuery pull) {
          detail::on_endpoint_loop(
              state,
              [](detail::EndpointState& endpoint, auto&& completion, XComQuery pulled) {
                endpoint.start_xcom_pull(std::move(pulled), detail::EndpointState::PullHandler(std::move(completion)));
              },
              std::move(handler), std::move(pull));
        },
        token, state_, std::move(query));
  }

 private:
  std::shared_ptr<detail::EndpointState> state_;
};

}  // namespace rx

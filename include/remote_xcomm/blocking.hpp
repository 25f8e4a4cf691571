// The prototype's two one-liners, blocking: rx::requests and rx::connect_ti_function.
#pragma once

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/task_instance_key.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <grpcpp/support/status.h>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace rx {

/// A failed RPC, for the blocking calls that report errors by exception.
class RpcError : public std::runtime_error {
 public:
  /// The error for a call that failed with `status`; what() gives its numeric code and message.
  explicit RpcError(grpc::Status status) : std::runtime_error(describe(status)), status_(std::move(status)) {}
  /// The failed call's status, as gRPC reported it.
  [[nodiscard]] const grpc::Status& status() const noexcept { return status_; }
  /// The failed call's status code, as status().error_code().
  [[nodiscard]] grpc::StatusCode code() const noexcept { return status_.error_code(); }

 private:
  static std::string describe(const grpc::Status& status);
  grpc::Status status_;
};

/// The endpoint key named by a prototype-style payload's annotations: its `dag_id`, `task_id`,
/// `run_id` (strings) and `map_index` (integer, -1 when absent or null). Throws
/// std::invalid_argument, naming the field, when `dag_id`, `task_id` or `run_id` is missing or not
/// a string, or when `map_index` is not an integer or does not fit in an `int`.
[[nodiscard]] TaskInstanceKey key_from_annotations(const boost::json::object& payloads);

/// Sends `data` to the task instance its annotations name on the server at `url`:`port` and
/// returns the task's reply, blocking the calling thread (the prototype's `rx.requests`).
/// Throws RpcError with the call's status when it fails, std::invalid_argument for bad `data`.
/// Must not be called from a thread running a Loop whose tasks the reply depends on.
[[nodiscard]] boost::json::object requests(std::string_view url, std::uint16_t port, const boost::json::object& data,
                                           std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// As above, through a Client with `options`: ClientOptions::max_message_bytes lets `data` and the
/// reply exceed gRPC's default of 4 MiB, up to what the server accepts (ServerOptions::max_message_bytes).
[[nodiscard]] boost::json::object requests(std::string_view url, std::uint16_t port, const boost::json::object& data,
                                           const ClientOptions& options,
                                           std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// Serves `task` at `key` on `options.host`:`options.port` on a loop of its own until SIGINT or
/// SIGTERM, then shuts down cleanly. Prints one line, "remote_xcomm: serving KEY on HOST:PORT",
/// to stdout once it listens. Throws std::runtime_error if it cannot listen.
void serve_until_signalled(const ServerOptions& options, const TaskInstanceKey& key, Server::Task task);

/// A task instance that names its own key, as Airflow's TaskInstance does.
template <typename TaskInstance>
concept HasTaskInstanceKey = requires(const TaskInstance& ti) {
  { ti.dag_id } -> std::convertible_to<std::string>;
  { ti.task_id } -> std::convertible_to<std::string>;
  { ti.run_id } -> std::convertible_to<std::string>;
  { ti.map_index } -> std::convertible_to<int>;
};

/// The key of `ti`. Throws std::invalid_argument if an integral `map_index` does not fit in an
/// `int` (it would otherwise wrap and name another task instance).
template <HasTaskInstanceKey TaskInstance>
[[nodiscard]] TaskInstanceKey key_of(const TaskInstance& ti) {
  using Index = std::remove_cvref_t<decltype(ti.map_index)>;
  if constexpr (std::is_integral_v<Index> && sizeof(Index) >= sizeof(int)) {
    using Wide = std::conditional_t<std::is_signed_v<Index>, long long, unsigned long long>;
    if (!std::in_range<int>(static_cast<Wide>(ti.map_index))) {
      throw std::invalid_argument("task instance map_index is out of range: " +
                                  std::to_string(static_cast<Wide>(ti.map_index)) + " (it must fit in a 32-bit int)");
    }
  }
  return {ti.dag_id, ti.task_id, ti.run_id, static_cast<int>(ti.map_index)};
}

/// Serves one task instance with `options` (host, port, ServerOptions::max_message_bytes for payloads
/// above 4 MiB, ...) until SIGINT or SIGTERM, as the overload below does on loopback.
template <HasTaskInstanceKey TaskInstance>
void connect_ti_function(const ServerOptions& options, TaskInstance& ti,
                         boost::asio::awaitable<void> (TaskInstance::*method)(Endpoint)) {
  serve_until_signalled(options, key_of(ti),
                        [&ti, method](Endpoint endpoint) { return (ti.*method)(std::move(endpoint)); });
}

/// Serves one task instance on `port` of loopback until SIGINT or SIGTERM (the prototype's
/// `rx.connect_ti_function`): each request to the instance's key runs `(ti.*method)(endpoint)`,
/// a coroutine that gets the payloads and pushes the reply. Port 0 picks a free port (printed).
template <HasTaskInstanceKey TaskInstance>
void connect_ti_function(std::uint16_t port, TaskInstance& ti,
                         boost::asio::awaitable<void> (TaskInstance::*method)(Endpoint)) {
  ServerOptions options;
  options.port = port;
  connect_ti_function(options, ti, method);
}

}  // namespace rx

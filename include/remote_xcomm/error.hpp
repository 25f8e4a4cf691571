// Error codes of Remote XComm's local asynchronous operations.
#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace rx {

/// Why a local operation (an endpoint's `get` or `push`, a fan-out's wait) failed. An RPC's own
/// outcome is a `grpc::Status`.
enum class errc {
  /// `push` was called with no request held: nothing was got, or it was already pushed.
  no_request_held = 1,
  /// `get` was called while another `get` on the same endpoint was still waiting.
  get_already_pending,
  /// The endpoint was detached (or its server shut down); it delivers nothing more.
  endpoint_closed,
  /// The caller of the held request gave up (cancelled or its deadline passed); the reply was dropped.
  request_cancelled,
  /// The reply holds NaN or infinity, which JSON cannot carry; the caller got INTERNAL.
  reply_not_json,
  /// The encoded reply is larger than the server sends; the caller got RESOURCE_EXHAUSTED.
  reply_too_large,
  /// FanOut::next(): every result of the fan-out has already been taken.
  no_more_results,
  /// FanOut::next() or all() was called while another next() or all() on it was still waiting.
  already_waiting,
  /// xcom_pull(): no such XCom (and the query did not ask to wait).
  xcom_not_found,
  /// xcom_pull(): the wait's timeout passed before the XCom was pushed.
  xcom_wait_timed_out,
  /// xcom_push(): the server's retained XComs reached ServerOptions::max_retained_xcom_bytes and
  /// nothing more could be evicted; the XCom was not recorded.
  xcom_limit_reached,
  /// xcom_push() or xcom_pull(): an empty key, dag_id, run_id or task_id, a map index below -1,
  /// or a value holding NaN or infinity.
  invalid_xcom,
  /// xcom_push(): the server's XCom store failed to write it (ServerOptions::xcom_store); the
  /// value is recorded in memory but may not survive a restart.
  xcom_store_failed,
};

/// The error category of rx::errc, named "remote_xcomm".
[[nodiscard]] const boost::system::error_category& error_category() noexcept;

/// `e` as an error code of error_category(); found by argument-dependent look-up, so an rx::errc
/// converts to (and compares with) a `boost::system::error_code`.
[[nodiscard]] inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace rx

// Lets an rx::errc convert to a boost::system::error_code: a standard customisation point, hidden
// from the API reference.
/// \cond
template <>
struct boost::system::is_error_code_enum<rx::errc> : std::true_type {};
/// \endcond

#include <remote_xcomm/error.hpp>

#include <string>

namespace rx {
namespace {

// boost::system::error_category's destructor is protected and non-virtual by design.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class ErrorCategory final : public boost::system::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "remote_xcomm"; }

  [[nodiscard]] std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::no_request_held:
        return "push() needs a request got with get() and not yet pushed";
      case errc::get_already_pending:
        return "another get() is already waiting on this endpoint";
      case errc::endpoint_closed:
        return "the endpoint was detached or its server shut down";
      case errc::request_cancelled:
        return "the caller gave up on the request (cancelled or deadline passed); the reply was dropped";
      case errc::reply_not_json:
        return "the reply holds NaN or infinity, which JSON cannot carry; the caller got INTERNAL";
      case errc::reply_too_large:
        return "the encoded reply is larger than the server's message limit; the caller got RESOURCE_EXHAUSTED";
      case errc::no_more_results:
        return "every result of the fan-out has already been taken";
      case errc::already_waiting:
        return "another next() or all() is already waiting on this fan-out";
      case errc::xcom_not_found:
        return "no such XCom";
      case errc::xcom_wait_timed_out:
        return "the XCom was not pushed before the wait's timeout";
      case errc::xcom_limit_reached:
        return "the server's retained XComs are at their limit (ServerOptions::max_retained_xcom_bytes)";
      case errc::invalid_xcom:
        return "invalid XCom: an empty key, dag_id, run_id or task_id, a map index below -1, or NaN or infinity";
      case errc::xcom_store_failed:
        return "the XCom store failed to write the XCom; it is kept in memory only";
    }
    return "unknown remote_xcomm error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& error_category() noexcept {
  static const ErrorCategory category;
  return category;
}

}  // namespace rx

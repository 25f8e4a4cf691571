// ClientOptions::retry as gRPC's service config. gRPC does the retrying (backoff with jitter,
// commitment once a response arrives, a buffer for what it may have to send again); this file
// only says which methods and how, in the JSON gRPC reads (grpc/doc/service_config.md).
#include "client/retry_policy.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

namespace rx::detail {

namespace {

namespace json = boost::json;

// The service's name in the proto (package remote_xcomm.v1).
constexpr const char* SERVICE = "remote_xcomm.v1.RemoteXComm";

// gRPC caps maxAttempts at 5 (it ignores the rest); said here so that the config says what runs.
constexpr int GRPC_MAX_ATTEMPTS = 5;

// A google.protobuf.Duration in its JSON form: seconds with a fraction, "0.250s".
std::string duration_text(std::chrono::milliseconds duration) {
  const auto count = duration.count();
  std::string fraction = std::to_string(count % 1000);
  fraction.insert(0, 3 - fraction.size(), '0');
  return std::to_string(count / 1000).append(".").append(fraction).append("s");
}

}  // namespace

void check_retry_policy(const RetryPolicy& policy) {
  if (policy.max_attempts < 1) {
    throw std::invalid_argument(std::string("RetryPolicy::max_attempts must be at least 1 (1: no retries), got ")
                                    .append(std::to_string(policy.max_attempts)));
  }
  if (policy.initial_backoff < std::chrono::milliseconds(1) || policy.max_backoff < std::chrono::milliseconds(1)) {
    throw std::invalid_argument("RetryPolicy::initial_backoff and max_backoff must be at least 1 ms");
  }
  if (!(policy.backoff_multiplier >= 1.0)) {  // NaN too
    throw std::invalid_argument("RetryPolicy::backoff_multiplier must be at least 1");
  }
}

std::optional<std::string> retry_service_config(const RetryPolicy& policy) {
  if (policy.max_attempts <= 1 && !policy.wait_for_ready) {
    return std::nullopt;
  }
  json::array names;
  auto add = [&names](const char* method) { names.push_back(json::object{{"service", SERVICE}, {"method", method}}); };
  // Calls that change nothing on the server: a second attempt is always safe.
  for (const char* method : {"Pull", "GetState", "List", "Stats", "Watch"}) {
    add(method);
  }
  if (policy.retry_sends) {
    add("Send");
  }
  json::object method_config;
  method_config["name"] = std::move(names);
  if (policy.wait_for_ready) {
    method_config["waitForReady"] = true;
  }
  if (policy.max_attempts > 1) {
    json::object retry;
    retry["maxAttempts"] = std::min(policy.max_attempts, GRPC_MAX_ATTEMPTS);
    retry["initialBackoff"] = duration_text(policy.initial_backoff);
    retry["maxBackoff"] = duration_text(std::max(policy.max_backoff, policy.initial_backoff));
    retry["backoffMultiplier"] = policy.backoff_multiplier;
    retry["retryableStatusCodes"] = json::array{"UNAVAILABLE"};
    method_config["retryPolicy"] = std::move(retry);
  }
  json::array method_configs;
  method_configs.push_back(std::move(method_config));
  json::object config;
  config["methodConfig"] = std::move(method_configs);
  return json::serialize(config);
}

}  // namespace rx::detail

// ClientOptions::retry as gRPC's service config (gRFC A6 retry policy). Internal.
#pragma once

#include <remote_xcomm/client.hpp>

#include <optional>
#include <string>

namespace rx::detail {

/// Throws std::invalid_argument, naming the field, when `policy` holds a value gRPC would refuse.
void check_retry_policy(const RetryPolicy& policy);

/// The service config JSON that makes gRPC retry and wait as `policy` says, or none when it
/// changes nothing (one attempt, no wait-for-ready).
[[nodiscard]] std::optional<std::string> retry_service_config(const RetryPolicy& policy);

}  // namespace rx::detail

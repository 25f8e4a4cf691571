// gRPC target strings. Internal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rx::detail {

/// "host:port", with a bare IPv6 host put in brackets ("::1" -> "[::1]:port").
[[nodiscard]] inline std::string host_port(std::string_view host, std::uint16_t port) {
  const bool bare_ipv6 = host.find(':') != std::string_view::npos && host.front() != '[';
  std::string target = bare_ipv6 ? "[" + std::string(host) + "]" : std::string(host);
  return target.append(":").append(std::to_string(port));
}

}  // namespace rx::detail

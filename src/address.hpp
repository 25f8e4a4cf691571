// gRPC target strings. Internal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rx::detail {

/// "host:port", with a bare IPv6 host put in brackets ("::1" -> "[::1]:port").
[[nodiscard]] inline std::string host_port(std::string_view host, std::uint16_t port) {
  const bool bare_ipv6 = host.find(':') != std::string_view::npos && host.front() != '[';
  const std::string port_text = std::to_string(port);
  // Appended piece by piece into one reserved string: no temporaries, and none of the
  // `"[" + std::string(...)` concatenations that GCC 12 flags with a false -Wrestrict.
  std::string target;
  target.reserve(host.size() + port_text.size() + 3);
  if (bare_ipv6) {
    target.push_back('[');
  }
  target.append(host);
  if (bare_ipv6) {
    target.push_back(']');
  }
  target.push_back(':');
  target.append(port_text);
  return target;
}

}  // namespace rx::detail

// gRPC credentials from rx::ServerTls / rx::ClientTls, and what counts as a loopback address.
// Internal.
#pragma once

#include <remote_xcomm/security.hpp>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <optional>
#include <string_view>

namespace rx::detail {

/// Insecure without `tls`; TLS, or mutual TLS when `tls->client_ca` is set. Throws
/// std::invalid_argument when the certificate or key is missing.
[[nodiscard]] std::shared_ptr<grpc::ServerCredentials> server_credentials(const std::optional<ServerTls>& tls);

/// Insecure without `tls`; TLS with its roots, and its certificate for mutual TLS. Throws
/// std::invalid_argument when only one of certificate and key is set.
[[nodiscard]] std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const std::optional<ClientTls>& tls);

/// True for a listening address or a client target that stays on this host: 127.0.0.0/8, ::1,
/// "localhost", a Unix domain socket ("unix:", "unix-abstract:"). Hosts may carry a port and
/// IPv6 brackets ("[::1]:50051", "localhost:1", "ipv4:127.0.0.1:1", "dns:///localhost:1").
[[nodiscard]] bool is_local_address(std::string_view address) noexcept;

}  // namespace rx::detail

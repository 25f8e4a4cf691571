// Transport security (TLS, mutual TLS) and the certificates it takes (docs/security.md).
#pragma once

#include <string>

namespace rx {

/// A server's TLS identity, and for mutual TLS the authority its clients' certificates must be
/// signed by. PEM text, from memory or read with rx::read_pem_file.
struct ServerTls {
  /// The server's certificate chain (PEM), leaf first.
  std::string certificate_chain;
  /// The private key of the leaf certificate (PEM).
  std::string private_key;
  /// Mutual TLS when not empty: the CA certificates (PEM) a client's certificate must chain to. A
  /// client without a certificate, or with one this CA did not sign, fails the handshake (the
  /// client sees UNAVAILABLE). Empty: clients are not asked for a certificate.
  std::string client_ca;
};

/// How a client checks the server's certificate, and for mutual TLS the client's own identity.
/// The server's certificate must name the host of the target (a DNS name or an IP address in its
/// subjectAltName); to check it against another name, set gRPC's
/// GRPC_SSL_TARGET_NAME_OVERRIDE_ARG in ClientOptions::channel_arguments.
struct ClientTls {
  /// The CA certificates (PEM) the server's certificate must chain to. Empty: gRPC's default
  /// roots (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, else the system's).
  std::string root_certificates;
  /// For mutual TLS: the client's certificate chain (PEM) and its private key (PEM). Both or
  /// neither.
  std::string certificate_chain;
  /// \copydoc certificate_chain
  std::string private_key;
};

/// The text of a PEM file (a certificate, a chain or a key). Throws std::runtime_error naming the
/// file when it cannot be read or holds no PEM block ("-----BEGIN").
[[nodiscard]] std::string read_pem_file(const std::string& path);

}  // namespace rx

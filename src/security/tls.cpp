// TLS and mutual TLS through gRPC's SSL credentials (OpenSSL underneath on Debian).
#include "security/tls.hpp"

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace rx {

std::string read_pem_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw std::runtime_error(std::string("cannot read the PEM file ").append(path));
  }
  std::ostringstream text;
  text << file.rdbuf();
  std::string pem = std::move(text).str();
  if (pem.find("-----BEGIN") == std::string::npos) {
    throw std::runtime_error(std::string(path).append(" holds no PEM block (-----BEGIN ...)"));
  }
  return pem;
}

namespace detail {

std::shared_ptr<grpc::ServerCredentials> server_credentials(const std::optional<ServerTls>& tls) {
  if (!tls) {
    return grpc::InsecureServerCredentials();
  }
  if (tls->certificate_chain.empty() || tls->private_key.empty()) {
    throw std::invalid_argument("ServerOptions::tls needs certificate_chain and private_key (PEM)");
  }
  grpc::SslServerCredentialsOptions options(tls->client_ca.empty()
                                                ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = tls->client_ca;
  options.pem_key_cert_pairs.push_back({tls->private_key, tls->certificate_chain});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const std::optional<ClientTls>& tls) {
  if (!tls) {
    return grpc::InsecureChannelCredentials();
  }
  if (tls->certificate_chain.empty() != tls->private_key.empty()) {
    throw std::invalid_argument("ClientOptions::tls: certificate_chain and private_key go together (mutual TLS)");
  }
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls->root_certificates;
  options.pem_cert_chain = tls->certificate_chain;
  options.pem_private_key = tls->private_key;
  return grpc::SslCredentials(options);
}

bool is_local_address(std::string_view address) noexcept {
  if (address.starts_with("unix:") || address.starts_with("unix-abstract:")) {
    return true;
  }
  // gRPC target schemes: "dns:///host:port", "dns:host:port", "ipv4:host:port", "ipv6:[host]:port".
  for (std::string_view scheme : {"dns:///", "dns:", "ipv4:", "ipv6:"}) {
    if (address.starts_with(scheme)) {
      address.remove_prefix(scheme.size());
      break;
    }
  }
  std::string_view host = address;
  if (host.starts_with('[')) {
    host = host.substr(1, host.find(']') == std::string_view::npos ? std::string_view::npos : host.find(']') - 1);
  } else if (const auto colon = host.find(':'); colon != std::string_view::npos && host.rfind(':') == colon) {
    host = host.substr(0, colon);  // one colon: host:port (more than one: a bare IPv6 address)
  }
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

}  // namespace detail
}  // namespace rx

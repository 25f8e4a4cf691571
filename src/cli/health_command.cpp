// rxcomm health: gRPC's standard health check (grpc.health.v1.Health/Check), as
// grpc_health_probe and load balancers call it.
//
// Debian ships no C++ stubs for health.proto, and the two messages are one field each, so they are
// encoded here by hand on a generic stub:
//   HealthCheckRequest  { string service = 1; }           -> tag 0x0A, length, bytes
//   HealthCheckResponse { ServingStatus status = 1; }     <- tag 0x08, varint
//   ServingStatus: UNKNOWN 0, SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3
#include "commands.hpp"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <cstdint>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rxcomm {

namespace {

constexpr const char* HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check";

void put_varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

std::optional<std::uint64_t> get_varint(const std::string& in, std::size_t& at) {
  std::uint64_t value = 0;
  for (int shift = 0; shift < 64 && at < in.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(in[at++]);
    value |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) {
      return value;
    }
  }
  return std::nullopt;
}

std::string encode_request(const std::string& service) {
  std::string out;
  if (!service.empty()) {  // proto3: an empty string is not written
    out.push_back(0x0A);
    put_varint(out, service.size());
    out.append(service);
  }
  return out;
}

// The ServingStatus in `response`, skipping fields a newer server may add; nullopt if malformed.
std::optional<std::uint64_t> decode_status(const std::string& response) {
  std::uint64_t status = 0;  // absent: UNKNOWN
  std::size_t at = 0;
  while (at < response.size()) {
    const auto tag = get_varint(response, at);
    if (!tag) {
      return std::nullopt;
    }
    const auto wire_type = *tag & 7U;
    if (wire_type == 0) {
      const auto value = get_varint(response, at);
      if (!value) {
        return std::nullopt;
      }
      if ((*tag >> 3) == 1) {
        status = *value;
      }
    } else if (wire_type == 2) {
      const auto length = get_varint(response, at);
      if (!length || *length > response.size() - at) {
        return std::nullopt;
      }
      at += *length;
    } else if (wire_type == 1 || wire_type == 5) {
      const std::size_t width = wire_type == 1 ? 8 : 4;
      if (width > response.size() - at) {
        return std::nullopt;
      }
      at += width;
    } else {
      return std::nullopt;
    }
  }
  return status;
}

const char* status_name(std::uint64_t status) {
  switch (status) {
    case 0:
      return "UNKNOWN";
    case 1:
      return "SERVING";
    case 2:
      return "NOT_SERVING";
    case 3:
      return "SERVICE_UNKNOWN";
    default:
      return nullptr;
  }
}

struct HealthOptions {
  TargetOptions target;
  std::string service;
};

int run_health(const HealthOptions& options) {
  // The health service needs no token; TLS as the other commands.
  const rx::ClientOptions client_options = options.target.client_options();
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (client_options.tls) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = client_options.tls->root_certificates;
    tls.pem_cert_chain = client_options.tls->certificate_chain;
    tls.pem_private_key = client_options.tls->private_key;
    credentials = grpc::SslCredentials(tls);
  }
  auto channel = grpc::CreateChannel(options.target.target, credentials);
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  if (const auto timeout = options.target.timeout()) {
    context.set_deadline(std::chrono::system_clock::now() + *timeout);
  }
  context.set_wait_for_ready(options.target.wait_for_ready);

  const std::string request_bytes = encode_request(options.service);
  grpc::Slice slice(request_bytes);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, HEALTH_CHECK_METHOD, grpc::StubOptions(), &request, &response,
                 [&done](const grpc::Status& status) { done.set_value(status); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) {
    return report_status(status);
  }

  std::vector<grpc::Slice> slices;
  std::string response_bytes;
  if (response.Valid() && response.Dump(&slices).ok()) {
    for (const grpc::Slice& part : slices) {
      response_bytes.append(reinterpret_cast<const char*>(part.begin()), part.size());
    }
  }
  const auto serving = decode_status(response_bytes);
  const char* name = serving ? status_name(*serving) : nullptr;
  if (name == nullptr) {
    return report_status(
        grpc::Status(grpc::StatusCode::INTERNAL, "the server sent a health response rxcomm cannot read"));
  }
  boost::json::object printed;
  printed["status"] = name;
  std::cout << boost::json::serialize(printed) << std::endl;
  return *serving == 1 ? EXIT_OK : EXIT_FAILURE_LOCAL;
}

}  // namespace

Command add_health_command(CLI::App& app) {
  auto options = std::make_shared<HealthOptions>();
  CLI::App* health = app.add_subcommand("health", "check a server's health (grpc.health.v1.Health/Check)");
  health->footer(
      "Prints {\"status\":\"SERVING\"} (or NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN) and exits 0 only for SERVING "
      "(1 otherwise); a server without the health service exits 76 (Unimplemented).\n"
      "Example:\n"
      "  rxcomm health -t 127.0.0.1:8081 --service remote_xcomm.v1.RemoteXComm");
  options->target.add_to(*health);
  health->add_option("-s,--service", options->service, "the service to check (default: the whole server)");
  return {health, [options] { return run_health(*options); }};
}

}  // namespace rxcomm

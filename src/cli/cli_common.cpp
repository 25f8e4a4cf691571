#include "cli_common.hpp"

#include "codec.hpp"

#include <boost/json/parse.hpp>

#include <array>
#include <charconv>
#include <cmath>
#include <ctime>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <sstream>

namespace rxcomm {

namespace {

struct CodeNames {
  grpc::StatusCode code;
  std::string_view grpcurl;  // Go's codes.Code.String(), which grpcurl prints
  std::string_view proto;    // the proto's, as gRPC's documentation spells them
};

constexpr std::array<CodeNames, 17> CODE_NAMES{{
    {grpc::StatusCode::OK, "OK", "OK"},
    {grpc::StatusCode::CANCELLED, "Canceled", "CANCELLED"},
    {grpc::StatusCode::UNKNOWN, "Unknown", "UNKNOWN"},
    {grpc::StatusCode::INVALID_ARGUMENT, "InvalidArgument", "INVALID_ARGUMENT"},
    {grpc::StatusCode::DEADLINE_EXCEEDED, "DeadlineExceeded", "DEADLINE_EXCEEDED"},
    {grpc::StatusCode::NOT_FOUND, "NotFound", "NOT_FOUND"},
    {grpc::StatusCode::ALREADY_EXISTS, "AlreadyExists", "ALREADY_EXISTS"},
    {grpc::StatusCode::PERMISSION_DENIED, "PermissionDenied", "PERMISSION_DENIED"},
    {grpc::StatusCode::RESOURCE_EXHAUSTED, "ResourceExhausted", "RESOURCE_EXHAUSTED"},
    {grpc::StatusCode::FAILED_PRECONDITION, "FailedPrecondition", "FAILED_PRECONDITION"},
    {grpc::StatusCode::ABORTED, "Aborted", "ABORTED"},
    {grpc::StatusCode::OUT_OF_RANGE, "OutOfRange", "OUT_OF_RANGE"},
    {grpc::StatusCode::UNIMPLEMENTED, "Unimplemented", "UNIMPLEMENTED"},
    {grpc::StatusCode::INTERNAL, "Internal", "INTERNAL"},
    {grpc::StatusCode::UNAVAILABLE, "Unavailable", "UNAVAILABLE"},
    {grpc::StatusCode::DATA_LOSS, "DataLoss", "DATA_LOSS"},
    {grpc::StatusCode::UNAUTHENTICATED, "Unauthenticated", "UNAUTHENTICATED"},
}};

}  // namespace

std::string_view code_name(grpc::StatusCode code) noexcept {
  for (const auto& names : CODE_NAMES) {
    if (names.code == code) {
      return names.grpcurl;
    }
  }
  return "Unknown";
}

std::optional<grpc::StatusCode> parse_code(std::string_view name) noexcept {
  for (const auto& names : CODE_NAMES) {
    if (name == names.grpcurl || name == names.proto) {
      return names.code;
    }
  }
  int number = -1;
  const auto [end, error] = std::from_chars(name.data(), name.data() + name.size(), number);
  if (error == std::errc() && end == name.data() + name.size() && number >= 0 &&
      number < static_cast<int>(CODE_NAMES.size())) {
    return static_cast<grpc::StatusCode>(number);
  }
  return std::nullopt;
}

constexpr std::size_t SERVER_TEXT_BYTES = 2048;

int report_status(const grpc::Status& status) {
  // The server's text, escaped and bounded: a hostile or broken server cannot flood the terminal
  // or send it control sequences.
  std::cerr << "ERROR:\n  Code: " << code_name(status.error_code())
            << "\n  Message: " << rx::detail::caller_text(status.error_message(), SERVER_TEXT_BYTES) << std::endl;
  return EXIT_STATUS_OFFSET + static_cast<int>(status.error_code());
}

void KeyOptions::add_to(CLI::App& app, bool task_required) {
  app.add_option("--dag", dag_id, "the endpoint's dag_id")->capture_default_str();
  auto* task = app.add_option("--task", task_id, "the endpoint's task_id (serve's: echo-0, sleep-0, fail-0, ...)");
  if (task_required) {
    task->required();
  }
  app.add_option("--run", run_id, "the endpoint's run_id")->capture_default_str();
  app.add_option("--map-index", map_index, "the endpoint's map_index (-1: not mapped)")
      ->capture_default_str()
      ->check(CLI::Range(-1, std::numeric_limits<int>::max()));
}

void TargetOptions::add_to(CLI::App& app, bool call_options, bool with_wait_for_ready) {
  app.add_option("-t,--target", target,
                 "the server, as a gRPC target: 127.0.0.1:8081, dns:///host:8081, unix:/path/to.sock "
                 "(default: $RXCOMM_TARGET)")
      ->envname("RXCOMM_TARGET")
      ->required();
  app.add_flag("--tls", tls, "connect with TLS, trusting the system's CAs (or --tls-ca)");
  app.add_option("--tls-ca", tls_ca, "PEM file of the CAs the server's certificate must chain to (implies --tls)");
  app.add_option("--tls-cert", tls_cert, "PEM file of this client's certificate, for mutual TLS (implies --tls)");
  app.add_option("--tls-key", tls_key, "PEM file of the key of --tls-cert");
  app.add_option("--token", token,
                 "bearer token sent as 'authorization: Bearer TOKEN' (default: $RXCOMM_TOKEN; docs/security.md)")
      ->envname("RXCOMM_TOKEN");
  if (!call_options) {
    return;
  }
  app.add_option("--timeout", timeout_seconds, "the call's deadline in seconds; 0: none")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  if (!with_wait_for_ready) {
    return;
  }
  app.add_flag("--wait-for-ready", wait_for_ready,
               "wait (within the deadline) for a server that is not up yet instead of failing with Unavailable");
}

rx::ClientOptions TargetOptions::client_options() const {
  rx::ClientOptions options;
  options.token = token;
  if (tls || !tls_ca.empty() || !tls_cert.empty() || !tls_key.empty()) {
    if (tls_cert.empty() != tls_key.empty()) {
      throw LocalError("--tls-cert and --tls-key go together");
    }
    try {
      options.tls.emplace();
      if (!tls_ca.empty()) {
        options.tls->root_certificates = rx::read_pem_file(tls_ca);
      }
      if (!tls_cert.empty()) {
        options.tls->certificate_chain = rx::read_pem_file(tls_cert);
        options.tls->private_key = rx::read_pem_file(tls_key);
      }
    } catch (const std::runtime_error& error) {
      throw LocalError(error.what());
    }
  }
  return options;
}

std::optional<std::chrono::milliseconds> TargetOptions::timeout() const {
  if (timeout_seconds <= 0) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(timeout_seconds * 1000.0)));
}

std::string iso_time(std::chrono::system_clock::time_point time) {
  const auto since_epoch = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch());
  const auto seconds = static_cast<std::time_t>(since_epoch.count() / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  std::array<char, 32> text{};
  const std::size_t length = std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%S", &utc);
  std::string result(text.data(), length);
  const auto millis = static_cast<int>(since_epoch.count() % 1000);
  result.push_back('.');
  result.push_back(static_cast<char>('0' + millis / 100));
  result.push_back(static_cast<char>('0' + millis / 10 % 10));
  result.push_back(static_cast<char>('0' + millis % 10));
  result.push_back('Z');
  return result;
}

std::string read_json_source(const std::string& source) {
  if (source == "-") {
    return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
  }
  if (source.starts_with('@')) {
    const std::string path = source.substr(1);
    std::ifstream file(path, std::ios::binary);
    if (!file) {
      throw LocalError("cannot read " + path);
    }
    std::ostringstream text;
    text << file.rdbuf();
    return std::move(text).str();
  }
  return source;
}

boost::json::value parse_value(std::string_view text, std::string_view what) {
  boost::system::error_code error;
  boost::json::value value = boost::json::parse(text, error);
  if (error) {
    std::string message(what);
    message.append(" is not valid JSON: ").append(error.message());
    throw LocalError(message);
  }
  return value;
}

boost::json::object parse_object(std::string_view text, std::string_view what) {
  boost::json::value value = parse_value(text, what);
  if (!value.is_object()) {
    std::string message(what);
    message.append(" must be a JSON object ({...})");
    throw LocalError(message);
  }
  return std::move(value.as_object());
}

boost::json::value value_of(const std::string& json_text) {
  boost::system::error_code error;
  boost::json::value value = boost::json::parse(json_text, error);
  if (error) {
    return {json_text};
  }
  return value;
}

LoopThread::LoopThread() : loop_(context_), work_(context_.get_executor()) {
  thread_ = std::thread([this] {
    for (;;) {
      try {
        context_.run();
        return;
      } catch (const std::exception& error) {
        // A handler threw (a task's exception without an on_task_error hook): report, keep going.
        std::cerr << "rxcomm: " << error.what() << std::endl;
      }
    }
  });
}

LoopThread::~LoopThread() {
  work_.reset();
  context_.stop();
  thread_.join();
}

}  // namespace rxcomm

// Bearer tokens: identifying a call's caller and deciding what it may reach (docs/security.md).
#include "security/access.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <mutex>
#include <stdexcept>
#include <string>

namespace rx::detail {

namespace {

constexpr std::string_view NO_TOKEN =
    "this server requires a token: send the metadata 'authorization: Bearer <token>' (docs/security.md)";
constexpr std::string_view MALFORMED_TOKEN = "the 'authorization' metadata is not 'Bearer <token>' (docs/security.md)";
constexpr std::string_view WRONG_TOKEN = "the token grants no access to this task instance";

[[nodiscard]] bool same(const TokenDigest& a, const TokenDigest& b) noexcept {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// RFC 6750: the scheme is case-insensitive, one space before the token.
[[nodiscard]] bool strip_bearer(std::string_view& value) noexcept {
  constexpr std::string_view SCHEME = "bearer ";
  if (value.size() <= SCHEME.size()) {
    return false;
  }
  for (std::size_t i = 0; i < SCHEME.size(); ++i) {
    const char c = value[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != SCHEME[i]) {
      return false;
    }
  }
  value.remove_prefix(SCHEME.size());
  return true;
}

}  // namespace

TokenDigest digest_of(std::string_view token) {
  TokenDigest digest{};
  unsigned int size = 0;
  if (EVP_Digest(token.data(), token.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 ||
      size != digest.size()) {
    throw std::runtime_error("OpenSSL could not compute a SHA-256 digest");
  }
  return digest;
}

AccessControl::AccessControl(std::string_view scheduler_token) : enabled_(!scheduler_token.empty()) {
  if (enabled_) {
    scheduler_ = digest_of(scheduler_token);
  }
}

Caller AccessControl::identify(const grpc::ServerContextBase& context) const {
  Caller caller;
  const auto& metadata = context.client_metadata();
  const auto [first, last] = metadata.equal_range("authorization");
  if (first == last) {
    return caller;
  }
  std::string_view value(first->second.data(), first->second.size());
  if (std::next(first) != last || !strip_bearer(value)) {
    caller.kind = Caller::Kind::malformed;  // two tokens are refused rather than one chosen
    return caller;
  }
  caller.digest = digest_of(value);
  caller.kind = same(caller.digest, scheduler_) ? Caller::Kind::scheduler : Caller::Kind::bearer;
  return caller;
}

std::optional<grpc::Status> AccessControl::check_authenticated(const Caller& caller) {
  switch (caller.kind) {
    case Caller::Kind::anonymous:
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(NO_TOKEN));
    case Caller::Kind::malformed:
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(MALFORMED_TOKEN));
    case Caller::Kind::scheduler:
    case Caller::Kind::bearer:
      break;
  }
  return std::nullopt;
}

std::optional<grpc::Status> AccessControl::check_task(const Caller& caller, TaskInstanceKeyView key) const {
  if (!enabled_ || caller.kind == Caller::Kind::scheduler) {
    return std::nullopt;
  }
  if (auto refused = check_authenticated(caller)) {
    return refused;
  }
  bool granted = false;
  {
    const std::shared_lock lock(mutex_);
    if (auto it = endpoints_.find(key); it != endpoints_.end()) {
      granted = same(it->second, caller.digest);
    }
  }
  if (granted) {
    return std::nullopt;
  }
  // The same answer whether or not the task instance exists: a token reveals nothing of others.
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::string(WRONG_TOKEN));
}

std::optional<grpc::Status> AccessControl::check_scheduler(const Caller& caller, std::string_view what) const {
  if (!enabled_ || caller.kind == Caller::Kind::scheduler) {
    return std::nullopt;
  }
  if (auto refused = check_authenticated(caller)) {
    return refused;
  }
  std::string message(what);
  message.append(" needs the scheduler token");
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::move(message));
}

void AccessControl::add_endpoint(const TaskInstanceKey& key, std::string_view token) {
  if (token.empty()) {
    return;
  }
  const TokenDigest digest = digest_of(token);
  const std::unique_lock lock(mutex_);
  endpoints_.insert_or_assign(key, digest);
}

void AccessControl::remove_endpoint(TaskInstanceKeyView key) {
  const std::unique_lock lock(mutex_);
  if (auto it = endpoints_.find(key); it != endpoints_.end()) {
    endpoints_.erase(it);
  }
}

}  // namespace rx::detail

// Who may reach what: bearer tokens in a call's metadata, checked on gRPC's thread at the start of
// every handler, before anything of the request is parsed (docs/security.md). Internal.
#pragma once

#include <remote_xcomm/task_instance_key.hpp>

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <array>
#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string_view>
#include <unordered_map>

namespace rx::detail {

/// A token is kept and compared only as its SHA-256 digest: the server holds no token text, and
/// digests of equal length compare in constant time whatever the tokens' lengths.
using TokenDigest = std::array<unsigned char, 32>;

[[nodiscard]] TokenDigest digest_of(std::string_view token);

/// Who a call says it is, from its `authorization` metadata.
struct Caller {
  enum class Kind : std::uint8_t {
    anonymous,  // no `authorization` metadata
    malformed,  // present, but not "Bearer <token>"
    scheduler,  // the server's scheduler token
    bearer,     // another token: an endpoint's, or a wrong one
  };
  Kind kind = Kind::anonymous;
  TokenDigest digest{};  // of the token, for `bearer`
};

/// The server's tokens: the scheduler token (every RPC, every task instance) and one token per
/// attached endpoint that was given one (that task instance only). Enabled only when the server
/// has a scheduler token; disabled, every check is one predictable branch.
class AccessControl {
 public:
  /// Empty `scheduler_token`: no checks at all.
  explicit AccessControl(std::string_view scheduler_token);

  [[nodiscard]] bool enabled() const noexcept { return enabled_; }

  /// Any thread. nullopt when the call may reach `key`'s requests, XComs, state and watch; else
  /// UNAUTHENTICATED (no token, or not a bearer token) or PERMISSION_DENIED (a token that is
  /// neither the scheduler's nor `key`'s endpoint's).
  [[nodiscard]] std::optional<grpc::Status> authorize_task(const grpc::ServerContextBase& context,
                                                           TaskInstanceKeyView key) const {
    if (!enabled_) {
      return std::nullopt;
    }
    return check_task(identify(context), key);
  }

  /// Any thread. As above, for what only the scheduler token reaches (`what` names it in the
  /// PERMISSION_DENIED message: "List", "Stats", "a Pull of every map index", ...).
  [[nodiscard]] std::optional<grpc::Status> authorize_scheduler(const grpc::ServerContextBase& context,
                                                                std::string_view what) const {
    if (!enabled_) {
      return std::nullopt;
    }
    return check_scheduler(identify(context), what);
  }

  /// The caller of a stream, identified once, then checked per frame with check_task.
  [[nodiscard]] Caller identify(const grpc::ServerContextBase& context) const;
  [[nodiscard]] std::optional<grpc::Status> check_task(const Caller& caller, TaskInstanceKeyView key) const;
  [[nodiscard]] std::optional<grpc::Status> check_scheduler(const Caller& caller, std::string_view what) const;
  /// UNAUTHENTICATED for an anonymous or malformed caller, else nullopt.
  [[nodiscard]] static std::optional<grpc::Status> check_authenticated(const Caller& caller);

  /// Any thread (the server calls them on its loop, at attach and detach). An empty token adds
  /// nothing: that endpoint is then reached with the scheduler token only.
  void add_endpoint(const TaskInstanceKey& key, std::string_view token);
  void remove_endpoint(TaskInstanceKeyView key);

 private:
  bool enabled_;
  TokenDigest scheduler_{};
  mutable std::shared_mutex mutex_;
  std::unordered_map<TaskInstanceKey, TokenDigest, TaskInstanceKeyHash, TaskInstanceKeyEqual> endpoints_;
};

/// True when `name` is gRPC's metadata key for tokens, "authorization": such an entry is never
/// handed to task code (rx::Request::metadata) nor logged.
[[nodiscard]] inline bool is_authorization_metadata(std::string_view name) noexcept { return name == "authorization"; }

}  // namespace rx::detail

// One target of a Client: its gRPC channel, and its Exchange streams. Internal.
#pragma once

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>

namespace rx::detail {

class ClientExchangeStream;

/// What a Client's sends take from its options (each stream's message limit; each reply's depth).
struct ExchangeLimits {
  std::size_t max_message_bytes = 4 * 1024 * 1024;  // each ExchangeRequest written
  std::size_t max_json_depth = 64;                  // each reply parsed
};

/// The open Exchange streams of one target, on the Client's loop only: one without and one with
/// wait_for_ready (index 1), so that each send gets exactly the connection behaviour it asks for.
/// A registered stream holds a reference to itself until it unregisters, when it starts ending;
/// the next send then opens a new one. Shared with the streams, which may outlive the Client.
struct ExchangeSlots {
  std::array<ClientExchangeStream*, 2> open{};
  bool client_gone = false;  // a stream opened now (for a send made just before) ends after its sends
};

/// One target's channel, with everything a send to it needs from its Client. Shared, so that a
/// Connection, a call whose start was deferred (see ClientImpl::complete) or an Exchange send on
/// its way to the loop can still send or start after its Client was destroyed.
struct TargetChannel : std::enable_shared_from_this<TargetChannel> {
  TargetChannel(std::string to, Transport how, LoopExecutor client_loop, ExchangeLimits limits)
      : target(std::move(to)), transport(how), loop(std::move(client_loop)), exchange_limits(limits) {}
  std::string target;
  Transport transport;
  std::unique_ptr<remote_xcomm::v1::RemoteXComm::Stub> stub;
  // "Bearer <ClientOptions::token>", sent with every call; empty without a token.
  std::string authorization;
  // For the Exchange transport: the Client's loop, where its streams live, and their limits.
  LoopExecutor loop;
  ExchangeLimits exchange_limits;
  std::shared_ptr<ExchangeSlots> exchange = std::make_shared<ExchangeSlots>();
};

}  // namespace rx::detail

// Conversions between the XCom model (remote_xcomm/xcom.hpp) and its wire messages. Internal.
#pragma once

#include <remote_xcomm/v1/remote_xcomm.pb.h>
#include <remote_xcomm/xcom.hpp>

#include <chrono>
#include <cstdint>

namespace rx::detail {

[[nodiscard]] std::int64_t to_unix_micros(std::chrono::system_clock::time_point time) noexcept;
[[nodiscard]] std::chrono::system_clock::time_point from_unix_micros(std::int64_t micros) noexcept;

void to_proto(const XCom& xcom, remote_xcomm::v1::XCom& out);
void to_proto(const TaskStateInfo& state, remote_xcomm::v1::TaskStateInfo& out);
void to_proto(const XComQuery& query, remote_xcomm::v1::PullRequest& out);
void to_proto(const WatchQuery& query, remote_xcomm::v1::WatchRequest& out);

[[nodiscard]] TaskInstanceKey from_proto(const remote_xcomm::v1::TaskInstanceKey& key);
[[nodiscard]] XCom from_proto(const remote_xcomm::v1::XCom& xcom);
/// An unknown or unset wire state reads as TaskState::idle with `known` false.
[[nodiscard]] TaskStateInfo from_proto(const remote_xcomm::v1::TaskStateInfo& state, bool* known = nullptr);
[[nodiscard]] XComQuery from_proto(const remote_xcomm::v1::PullRequest& request);
[[nodiscard]] WatchQuery from_proto(const remote_xcomm::v1::WatchRequest& request);
/// False for an event with no change set (a newer server's kind): skip it.
[[nodiscard]] bool from_proto(const remote_xcomm::v1::WatchEvent& event, WatchEvent& out);

}  // namespace rx::detail

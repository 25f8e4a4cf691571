#include <remote_xcomm/xcom.hpp>

namespace rx {

std::string_view to_string(TaskState state) noexcept {
  switch (state) {
    case TaskState::idle:
      return "idle";
    case TaskState::running:
      return "running";
    case TaskState::success:
      return "success";
    case TaskState::failed:
      return "failed";
    case TaskState::detached:
      return "detached";
  }
  return "unknown";
}

}  // namespace rx

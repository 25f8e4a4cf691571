#include "common/process_stats.hpp"

#include <malloc.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace rx::bench {
namespace {

// The first number after `field` in a /proc status file, or 0.
std::int64_t status_field(const std::filesystem::path& path, std::string_view field) {
  std::ifstream status(path);
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) {
      std::istringstream fields(line.substr(field.size()));
      std::int64_t value = 0;
      fields >> value;
      return value;
    }
  }
  return 0;
}

}  // namespace

std::int64_t resident_bytes() { return status_field("/proc/self/status", "VmRSS:") * 1024; }

void trim_heap() { ::malloc_trim(0); }

std::int64_t voluntary_context_switches() {
  std::int64_t total = 0;
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", error)) {
    total += status_field(task.path() / "status", "voluntary_ctxt_switches:");
  }
  return total;
}

}  // namespace rx::bench

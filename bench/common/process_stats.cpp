#include "common/rss.hpp"

#include <malloc.h>

#include <fstream>
#include <sstream>
#include <string>

namespace rx::bench {

std::int64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      std::int64_t kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

void trim_heap() { ::malloc_trim(0); }

}  // namespace rx::bench

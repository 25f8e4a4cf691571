#include "off_loop_worker.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/container/small_vector.hpp>
#include <boost/json/serializer.hpp>

#include <algorithm>
#include <cmath>

namespace rx::detail {

namespace {

// Bytes counted for a value besides its strings: a lower bound of its text (`0`, `true`, `[]`).
constexpr std::size_t SCALAR_BYTES = 1;
// A slice of text encoded between two looks at the stop flag: about 1-10 ms of encoding.
constexpr std::size_t SLICE_BYTES = std::size_t{1} << 20;

using Pending = boost::container::small_vector<const boost::json::value*, 32>;

// The walk behind classify(): adds the bytes of `root` to `bytes`, stopping at `threshold`.
ValueSize walk(const boost::json::value& root, std::size_t& bytes, std::size_t threshold) noexcept {
  try {
    Pending pending{&root};
    while (!pending.empty()) {
      const boost::json::value* value = pending.back();
      pending.pop_back();
      switch (value->kind()) {
        case boost::json::kind::double_:
          if (!std::isfinite(value->get_double())) {
            return ValueSize::not_finite;
          }
          bytes += SCALAR_BYTES;
          break;
        case boost::json::kind::string:
          bytes += value->get_string().size() + 2;
          break;
        case boost::json::kind::array:
          bytes += 2 + value->get_array().size();
          for (const boost::json::value& element : value->get_array()) {
            pending.push_back(&element);
          }
          break;
        case boost::json::kind::object:
          bytes += 2;
          for (const auto& member : value->get_object()) {
            bytes += member.key().size() + 4;
            pending.push_back(&member.value());
          }
          break;
        default:
          bytes += SCALAR_BYTES;
          break;
      }
      if (bytes >= threshold) {
        return ValueSize::large;
      }
    }
  } catch (...) {  // no memory for the walk's stack: a value that wide is not small
    return ValueSize::large;
  }
  return ValueSize::small;
}

}  // namespace

ValueSize classify(const boost::json::value& value, std::size_t threshold) noexcept {
  std::size_t bytes = 0;
  return walk(value, bytes, threshold);
}

ValueSize classify(const boost::json::object& object, std::size_t threshold) noexcept {
  // The members of a reply are mostly strings and numbers: those are counted here, without the
  // walk's stack (this runs for every reply).
  std::size_t bytes = 2;
  for (const auto& member : object) {
    bytes += member.key().size() + 4;
    const boost::json::value& value = member.value();
    switch (value.kind()) {
      case boost::json::kind::string:
        bytes += value.get_string().size();
        break;
      case boost::json::kind::double_:
        if (!std::isfinite(value.get_double())) {
          return ValueSize::not_finite;
        }
        break;
      case boost::json::kind::array:
      case boost::json::kind::object:
        if (const ValueSize size = walk(value, bytes, threshold); size != ValueSize::small) {
          return size;
        }
        break;
      default:
        break;
    }
    if (bytes >= threshold) {
      return ValueSize::large;
    }
  }
  return ValueSize::small;
}

std::optional<std::string> serialize_json_unless(const boost::json::value& value, const std::atomic<bool>& stop) {
  boost::json::serializer serializer;
  serializer.reset(&value);
  std::string text;
  std::size_t used = 0;
  while (!serializer.done()) {
    if (stop.load(std::memory_order_relaxed)) {
      return std::nullopt;
    }
    if (text.size() - used < SLICE_BYTES) {
      text.resize(std::max(text.size() * 2, used + SLICE_BYTES));
    }
    used += serializer.read(text.data() + used, SLICE_BYTES).size();
  }
  text.resize(used);
  return text;
}

OffLoopWorker::OffLoopWorker(boost::asio::execution_context& context)
    : boost::asio::execution_context::service(context) {
  pool_.emplace(1);
}

OffLoopWorker::~OffLoopWorker() = default;

OffLoopWorker& OffLoopWorker::of(const LoopExecutor& loop) {
  return boost::asio::use_service<OffLoopWorker>(loop.query(boost::asio::execution::context));
}

void OffLoopWorker::shutdown() {
  stopping_.store(true, std::memory_order_relaxed);
  if (pool_) {
    pool_->stop();
    pool_->join();
    pool_.reset();  // destroys the jobs never started, now, while the other services exist
  }
}

}  // namespace rx::detail

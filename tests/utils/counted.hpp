// A type that counts its live instances, to check lifetimes of objects that cross threads.
#pragma once

#include <atomic>

namespace rx_test {

/// Each instance (including copies and moved-from objects) adds one to `counter` while it lives.
class Counted {
 public:
  explicit Counted(std::atomic<int>& counter) noexcept : counter_(&counter) { counter_->fetch_add(1); }
  Counted(const Counted& other) noexcept : counter_(other.counter_) { counter_->fetch_add(1); }
  Counted(Counted&& other) noexcept : counter_(other.counter_) { counter_->fetch_add(1); }
  Counted& operator=(const Counted&) = delete;
  Counted& operator=(Counted&&) = delete;
  ~Counted() { counter_->fetch_sub(1); }

 private:
  std::atomic<int>* counter_;
};

}  // namespace rx_test

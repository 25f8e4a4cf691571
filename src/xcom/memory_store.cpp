// rx::make_memory_store(): XComs kept in this process's memory, so that they outlive a Server.
#include <remote_xcomm/xcom.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rx {
namespace {

class MemoryStore final : public XComStore {
 public:
  std::vector<XCom> load() override {
    std::vector<XCom> xcoms;
    {
      const std::lock_guard lock(mutex_);
      for (const auto& [task_instance, keys] : xcoms_) {
        for (const auto& [key, xcom] : keys) {
          xcoms.push_back(xcom);
        }
      }
    }
    std::sort(xcoms.begin(), xcoms.end(), [](const XCom& a, const XCom& b) { return a.sequence < b.sequence; });
    return xcoms;
  }

  void write(std::vector<Change> changes, WriteDone done) override {
    {
      const std::lock_guard lock(mutex_);
      for (Change& change : changes) {
        apply(change);
      }
    }
    // Outside the lock: `done` may write again, or load.
    done({});
  }

 private:
  void apply(Change& change) {
    switch (change.kind) {
      case Change::Kind::put: {
        auto& keys = xcoms_[change.xcom.task_instance];
        std::string key = change.xcom.key;
        keys.insert_or_assign(std::move(key), std::move(change.xcom));
        return;
      }
      case Change::Kind::erase_task_instance:
        if (const auto found = xcoms_.find(change.xcom.task_instance.view()); found != xcoms_.end()) {
          xcoms_.erase(found);
        }
        return;
    }
  }

  std::mutex mutex_;
  // Task instance → key → XCom: a put replaces one key, an erase drops a task instance at once.
  std::unordered_map<TaskInstanceKey, std::map<std::string, XCom, std::less<>>, TaskInstanceKeyHash,
                     TaskInstanceKeyEqual>
      xcoms_;
};

}  // namespace

std::shared_ptr<XComStore> make_memory_store() { return std::make_shared<MemoryStore>(); }

}  // namespace rx

// rx::TaskInstanceKey: equality, hashing, heterogeneous look-up and text form.
#include <remote_xcomm/task_instance_key.hpp>

#include <gtest/gtest.h>

#include <unordered_map>
#include <unordered_set>

namespace {

using rx::TaskInstanceKey;
using rx::TaskInstanceKeyView;

TEST(TaskInstanceKey, IsUnmappedByDefault) { EXPECT_EQ(TaskInstanceKey{}.map_index, -1); }

TEST(TaskInstanceKey, KeysWithEqualFieldsAreEqualAndHashAlike) {
  const TaskInstanceKey a{"dag", "task", "run", 3};
  const TaskInstanceKey b{"dag", "task", "run", 3};
  EXPECT_EQ(a, b);
  EXPECT_EQ(rx::TaskInstanceKeyHash{}(a), rx::TaskInstanceKeyHash{}(b));
  EXPECT_EQ(std::hash<TaskInstanceKey>{}(a), std::hash<TaskInstanceKey>{}(b));
}

TEST(TaskInstanceKey, KeysDifferingInAnyFieldAreNotEqual) {
  const TaskInstanceKey base{"dag", "task", "run", 3};
  for (const TaskInstanceKey& other :
       {TaskInstanceKey{"dag2", "task", "run", 3}, TaskInstanceKey{"dag", "task2", "run", 3},
        TaskInstanceKey{"dag", "task", "run2", 3}, TaskInstanceKey{"dag", "task", "run", 4}}) {
    EXPECT_NE(base, other) << rx::to_string(other);
    EXPECT_FALSE(rx::TaskInstanceKeyEqual{}(base, other.view())) << rx::to_string(other);
  }
}

TEST(TaskInstanceKey, AKeyAndItsViewHashAndCompareAlike) {
  const TaskInstanceKey key{"dag", "task", "run", -1};
  const TaskInstanceKeyView view = key.view();
  EXPECT_EQ(rx::TaskInstanceKeyHash{}(key), rx::TaskInstanceKeyHash{}(view));
  EXPECT_TRUE(rx::TaskInstanceKeyEqual{}(key, view));
  EXPECT_TRUE(rx::TaskInstanceKeyEqual{}(view, key));
  EXPECT_TRUE(rx::TaskInstanceKeyEqual{}(view, view));
  EXPECT_TRUE(rx::TaskInstanceKeyEqual{}(key, key));
}

TEST(TaskInstanceKey, FromViewCopiesTheStrings) {
  std::string dag = "dag";
  const TaskInstanceKey copy = TaskInstanceKey::from(TaskInstanceKeyView{dag, "task", "run", 2});
  dag = "changed";
  EXPECT_EQ(copy, (TaskInstanceKey{"dag", "task", "run", 2}));
}

TEST(TaskInstanceKey, MapsAreSearchableByViewWithoutCopying) {
  std::unordered_map<TaskInstanceKey, int, rx::TaskInstanceKeyHash, rx::TaskInstanceKeyEqual> map;
  for (int i = 0; i < 50; ++i) {
    map.emplace(TaskInstanceKey{"dag", "task", "run", i}, i);
  }
  const std::string run = "run";
  for (int i = 0; i < 50; ++i) {
    auto it = map.find(TaskInstanceKeyView{"dag", "task", run, i});
    ASSERT_NE(it, map.end()) << i;
    EXPECT_EQ(it->second, i);
  }
  EXPECT_EQ(map.find(TaskInstanceKeyView{"dag", "task", run, 50}), map.end());
}

TEST(TaskInstanceKey, StdHashLetsKeysFillAnUnorderedSet) {
  std::unordered_set<TaskInstanceKey> set{{"d", "t", "r", -1}, {"d", "t", "r", -1}, {"d", "t", "r", 0}};
  EXPECT_EQ(set.size(), 2U);
}

TEST(TaskInstanceKey, ToStringShowsEveryField) {
  EXPECT_EQ(rx::to_string(TaskInstanceKey{"example_dag", "hello_task", "manual__2026-11-29", -1}),
            "example_dag/hello_task/manual__2026-11-29[-1]");
  EXPECT_EQ(rx::to_string(TaskInstanceKeyView{"d", "t", "r", 12}), "d/t/r[12]");
}

}  // namespace

// The open-addressing string -> id map used for token and merge lookups.
#include "inference/tokenizer/string_id_map.h"

#include <string>

#include <gtest/gtest.h>

namespace airlock::inference {
namespace {

TEST(StringIdMapTest, InsertFindAndDuplicates) {
  StringIdMap map;
  EXPECT_EQ(map.Find("a"), StringIdMap::kNotFound);
  EXPECT_TRUE(map.Insert("a", 1));
  EXPECT_TRUE(map.Insert(std::string_view("\0b", 2), 2));
  EXPECT_TRUE(map.Insert("", 3));
  EXPECT_FALSE(map.Insert("a", 9));
  EXPECT_EQ(map.Find("a"), 1);
  EXPECT_EQ(map.Find(std::string_view("\0b", 2)), 2);
  EXPECT_EQ(map.Find(""), 3);
  EXPECT_EQ(map.Find("b"), StringIdMap::kNotFound);
  EXPECT_EQ(map.size(), 3u);
}

TEST(StringIdMapTest, GrowsPastManyKeys) {
  StringIdMap map;
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(map.Insert("key" + std::to_string(i), i));
  for (int i = 0; i < 100000; ++i) ASSERT_EQ(map.Find("key" + std::to_string(i)), i);
  EXPECT_EQ(map.Find("key100000"), StringIdMap::kNotFound);
}

}  // namespace
}  // namespace airlock::inference

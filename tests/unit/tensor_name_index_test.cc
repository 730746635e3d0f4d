// model/tensor_name_index.h: the lookup every input of every request makes.
#include "model/tensor_name_index.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace processor {
namespace {

TEST(TensorNameIndex, FindsByAliasOrTensorName) {
  TensorNameIndex index({"user_id", "item_id"}, {"user_id:0", "inputs/item:0"});
  EXPECT_EQ(index.Find("user_id"), 0);
  EXPECT_EQ(index.Find("user_id:0"), 0);
  EXPECT_EQ(index.Find("item_id"), 1);
  EXPECT_EQ(index.Find("inputs/item:0"), 1);
  EXPECT_EQ(index.Find("user"), -1);
  EXPECT_EQ(index.Find(""), -1);
  EXPECT_EQ(TensorNameIndex().Find("user_id"), -1);
}

TEST(TensorNameIndex, AnAliasWinsOverAnEqualTensorNameAndTheFirstOfEqualNames) {
  TensorNameIndex index({"x:0", "y"}, {"a:0", "x:0"});
  EXPECT_EQ(index.Find("x:0"), 0);
  TensorNameIndex repeated({"same", "same"}, {"s:0", "t:0"});
  EXPECT_EQ(repeated.Find("same"), 0);
}

TEST(TensorNameIndex, HundredsOfNamesOfEveryLength) {
  std::vector<std::string> aliases, names;
  for (int i = 0; i < 500; ++i) {
    aliases.push_back("feature_" + std::string(i % 37, 'x') + std::to_string(i));
    names.push_back(aliases.back() + ":0");
  }
  std::vector<std::string_view> alias_views(aliases.begin(), aliases.end()), name_views(names.begin(), names.end());
  TensorNameIndex index(alias_views, name_views);
  for (int i = 0; i < 500; ++i) {
    ASSERT_EQ(index.Find(aliases[i]), i);
    ASSERT_EQ(index.Find(names[i]), i);
  }
  EXPECT_EQ(index.Find("feature_"), -1);
}

}  // namespace
}  // namespace processor

// Tensor type table: ids, block layouts and names agree with ggml.
#include "inference/base/tensor_type.h"

#include <gtest/gtest.h>

namespace airlock::inference {
namespace {

TEST(TensorTypeTest, BlockLayouts) {
  EXPECT_EQ(RowBytes(TensorType::kF32, 64), 256u);
  EXPECT_EQ(RowBytes(TensorType::kQ8_0, 64), 68u);
  EXPECT_EQ(RowBytes(TensorType::kQ4_K, 512), 288u);
  EXPECT_EQ(RowBytes(TensorType::kQ6_K, 256), 210u);
  EXPECT_FALSE(RowBytes(TensorType::kQ4_0, 33).has_value());
}

TEST(TensorTypeTest, UnknownIdsAreRejected) {
  EXPECT_FALSE(GetTensorTypeTraits(4).has_value());   // retired Q4_2
  EXPECT_FALSE(GetTensorTypeTraits(31).has_value());  // retired Q4_0_4_4
  EXPECT_FALSE(GetTensorTypeTraits(1000).has_value());
  EXPECT_TRUE(GetTensorTypeTraits(30).has_value());
}

TEST(TensorTypeTest, ParseNames) {
  EXPECT_EQ(ParseTensorType("Q4_K"), TensorType::kQ4_K);
  EXPECT_EQ(ParseTensorType("f16"), TensorType::kF16);
  EXPECT_FALSE(ParseTensorType("q4_k_m").has_value());
  EXPECT_STREQ(TensorTypeName(TensorType::kBF16), "bf16");
}

}  // namespace
}  // namespace airlock::inference

// SamplingParams validation: every field at its bounds, just past them, and at NaN/inf, with the
// exact error text a client will see.
#include "inference/sampling/sampling_params.h"

#include <cstdint>
#include <limits>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace airlock::inference {
namespace {

using ::testing::HasSubstr;

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::string ErrorFor(const SamplingParams& params) {
  const absl::Status status = ValidateSamplingParams(params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  return std::string(status.message());
}

TEST(SamplingParamsTest, DefaultsAreValidAndMatchLlamaCpp) {
  const SamplingParams params;
  EXPECT_TRUE(ValidateSamplingParams(params).ok());
  EXPECT_EQ(params.temperature, 0.8f);
  EXPECT_EQ(params.top_k, 40);
  EXPECT_EQ(params.top_p, 0.95f);
  EXPECT_EQ(params.min_p, 0.05f);
  EXPECT_EQ(params.repeat_penalty, 1.0f);
  EXPECT_EQ(params.repeat_last_n, 64);
  EXPECT_EQ(params.frequency_penalty, 0.0f);
  EXPECT_EQ(params.presence_penalty, 0.0f);
  EXPECT_EQ(params.seed, 0u);
}

TEST(SamplingParamsTest, Temperature) {
  for (float ok : {0.0f, 1e-30f, 0.8f, 2.0f, 100.0f}) {
    SamplingParams params;
    params.temperature = ok;
    EXPECT_TRUE(ValidateSamplingParams(params).ok()) << ok;
  }
  SamplingParams params;
  params.temperature = -0.5f;
  EXPECT_EQ(ErrorFor(params), "temperature must be in [0, 100], got -0.5");
  for (float bad : {-1e-30f, 100.5f, kNan, kInf, -kInf}) {
    params.temperature = bad;
    EXPECT_THAT(ErrorFor(params), HasSubstr("temperature must be in [0, 100], got ")) << bad;
  }
}

TEST(SamplingParamsTest, TopKAcceptsEverything) {
  for (int32_t k : {std::numeric_limits<int32_t>::min(), -1, 0, 1, 40, 151936,
                    std::numeric_limits<int32_t>::max()}) {
    SamplingParams params;
    params.top_k = k;
    EXPECT_TRUE(ValidateSamplingParams(params).ok()) << k;
  }
}

TEST(SamplingParamsTest, TopP) {
  for (float ok : {1e-6f, 0.5f, 0.95f, 1.0f}) {
    SamplingParams params;
    params.top_p = ok;
    EXPECT_TRUE(ValidateSamplingParams(params).ok()) << ok;
  }
  SamplingParams params;
  params.top_p = 1.5f;
  EXPECT_EQ(ErrorFor(params), "top_p must be in (0, 1], got 1.5");
  params.top_p = 0.0f;
  EXPECT_EQ(ErrorFor(params), "top_p must be in (0, 1], got 0");
  for (float bad : {-0.1f, 1.0000001f, kNan, kInf, -kInf}) {
    params.top_p = bad;
    EXPECT_THAT(ErrorFor(params), HasSubstr("top_p must be in (0, 1]")) << bad;
  }
}

TEST(SamplingParamsTest, MinP) {
  for (float ok : {0.0f, 0.05f, 1.0f}) {
    SamplingParams params;
    params.min_p = ok;
    EXPECT_TRUE(ValidateSamplingParams(params).ok()) << ok;
  }
  SamplingParams params;
  params.min_p = -0.25f;
  EXPECT_EQ(ErrorFor(params), "min_p must be in [0, 1], got -0.25");
  for (float bad : {1.5f, kNan, kInf}) {
    params.min_p = bad;
    EXPECT_THAT(ErrorFor(params), HasSubstr("min_p must be in [0, 1]")) << bad;
  }
}

TEST(SamplingParamsTest, RepeatPenalty) {
  for (float ok : {0.5f, 1.0f, 1.1f, 100.0f}) {
    SamplingParams params;
    params.repeat_penalty = ok;
    EXPECT_TRUE(ValidateSamplingParams(params).ok()) << ok;
  }
  SamplingParams params;
  params.repeat_penalty = 0.0f;
  EXPECT_EQ(ErrorFor(params), "repeat_penalty must be in (0, 100], got 0");
  for (float bad : {-1.0f, 101.0f, kNan, kInf}) {
    params.repeat_penalty = bad;
    EXPECT_THAT(ErrorFor(params), HasSubstr("repeat_penalty must be in (0, 100]")) << bad;
  }
}

TEST(SamplingParamsTest, RepeatLastN) {
  for (int32_t ok : {-1, 0, 1, 64, std::numeric_limits<int32_t>::max()}) {
    SamplingParams params;
    params.repeat_last_n = ok;
    EXPECT_TRUE(ValidateSamplingParams(params).ok()) << ok;
  }
  SamplingParams params;
  params.repeat_last_n = -2;
  EXPECT_EQ(ErrorFor(params), "repeat_last_n must be >= -1 (-1 = whole context, 0 = off), got -2");
  params.repeat_last_n = std::numeric_limits<int32_t>::min();
  EXPECT_THAT(ErrorFor(params), HasSubstr("repeat_last_n must be >= -1"));
}

TEST(SamplingParamsTest, FrequencyAndPresencePenalties) {
  for (float ok : {-2.0f, -0.5f, 0.0f, 1.0f, 2.0f}) {
    SamplingParams params;
    params.frequency_penalty = ok;
    params.presence_penalty = ok;
    EXPECT_TRUE(ValidateSamplingParams(params).ok()) << ok;
  }
  SamplingParams params;
  params.frequency_penalty = 2.5f;
  EXPECT_EQ(ErrorFor(params), "frequency_penalty must be in [-2, 2], got 2.5");
  params.frequency_penalty = 0.0f;
  params.presence_penalty = -3.0f;
  EXPECT_EQ(ErrorFor(params), "presence_penalty must be in [-2, 2], got -3");
  for (float bad : {kNan, kInf, -kInf}) {
    SamplingParams p1;
    p1.frequency_penalty = bad;
    EXPECT_THAT(ErrorFor(p1), HasSubstr("frequency_penalty must be in [-2, 2]")) << bad;
    SamplingParams p2;
    p2.presence_penalty = bad;
    EXPECT_THAT(ErrorFor(p2), HasSubstr("presence_penalty must be in [-2, 2]")) << bad;
  }
}

TEST(SamplingParamsTest, EverySeedIsValid) {
  for (uint64_t seed : {uint64_t{0}, uint64_t{42}, std::numeric_limits<uint64_t>::max()}) {
    SamplingParams params;
    params.seed = seed;
    EXPECT_TRUE(ValidateSamplingParams(params).ok()) << seed;
  }
}

TEST(SamplingParamsTest, FirstBadFieldIsReported) {
  SamplingParams params;
  params.top_p = 2.0f;
  params.min_p = 2.0f;
  EXPECT_THAT(ErrorFor(params), HasSubstr("top_p"));
}

}  // namespace
}  // namespace airlock::inference

// Per-request sampling settings (llama.cpp's names and defaults) and their validation.
//
// Thread-safety: a plain value type; ValidateSamplingParams() is pure and callable from any thread.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace airlock::inference {

// What a request asks of the sampler. Arrives from clients, so it is untrusted until
// ValidateSamplingParams() accepts it. The accepted ranges are listed beside each field.
struct SamplingParams {
  // Divides the logits before the final draw; 0 selects greedy decoding (argmax, ties -> lowest
  // id). Range: [0, 100]. Default: 0.8.
  float temperature = 0.8f;
  // Keeps the k most likely tokens. Any value; <= 0 (or >= the vocabulary size) disables it.
  // Default: 40.
  int32_t top_k = 40;
  // Keeps the smallest most-likely prefix whose probability mass reaches p. Range: (0, 1];
  // 1 disables it. Default: 0.95.
  float top_p = 0.95f;
  // Drops tokens whose probability is below min_p times that of the most likely token.
  // Range: [0, 1]; 0 disables it. Default: 0.05.
  float min_p = 0.05f;
  // llama.cpp's repetition penalty on tokens seen in the window: a positive logit is divided by
  // it, a non-positive one multiplied. Range: (0, 100]; 1 disables it. Default: 1.0.
  float repeat_penalty = 1.0f;
  // How many of the most recent accepted tokens (prompt included) the three penalties look at.
  // Range: >= -1; 0 disables all penalties, -1 means the whole context. Default: 64.
  int32_t repeat_last_n = 64;
  // Subtracted once per occurrence of a token in the window. Range: [-2, 2]. Default: 0.
  float frequency_penalty = 0.0f;
  // Subtracted once from every token present in the window. Range: [-2, 2]. Default: 0.
  float presence_penalty = 0.0f;
  // Seeds the sampler's own PRNG: the same seed and the same sequence of logits give the same
  // tokens on every platform. Every value, 0 included, is an ordinary seed. Default: 0.
  uint64_t seed = 0;
};

// Inclusive bounds shared by the validator, the docs above and the tests.
inline constexpr float kMaxTemperature = 100.0f;
inline constexpr float kMaxRepeatPenalty = 100.0f;
inline constexpr float kMaxAbsFrequencyPenalty = 2.0f;
inline constexpr float kMaxAbsPresencePenalty = 2.0f;

// Checks every field against its range (NaN and infinities are refused everywhere). The error is
// INVALID_ARGUMENT and names the field, the accepted range and the value, e.g.
// "top_p must be in (0, 1], got 1.5".
absl::Status ValidateSamplingParams(const SamplingParams& params);

}  // namespace airlock::inference

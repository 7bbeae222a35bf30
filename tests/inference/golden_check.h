// The teacher-forced check against llama.cpp's recorded outputs (../shared/golden), shared by the
// golden tests of every backend: for each case, the prompt's logits and those of every recorded
// step (fed llama.cpp's own output tokens) within `tolerance` of llama.cpp's, for its top logits
// (and all logits where the file has them). Prints the worst difference and argmax agreement.
#pragma once

#include <algorithm>
#include <cmath>
#include <cctype>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "inference/backend/backend.h"
#include "tests/support/test_data.h"

namespace airlock::testing {

struct GoldenCase {
  std::string kv;     // "kv-f32" or "kv-f16"
  std::string model;  // file stem
  float tolerance;    // max |our logit - llama.cpp logit| (../shared/golden/README.md, measured)
  std::string dir = "";  // or "arch/" (the other architectures: ../shared/golden/arch/README.md)
  // Quantised mixture-of-experts files: a near-tie between two experts' router probabilities may
  // route a token differently from llama.cpp (as in any correct engine), so they are judged by the
  // README's per-step statistics (StepCriteria), not by the largest difference.
  bool routed = false;
  std::string ModelPath() const { return "models/" + dir + model + ".gguf"; }
  std::string GoldenPath() const { return "golden/" + dir + kv + "/" + model + ".jsonl"; }
};

inline void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.dir << c.kv << "/" << c.model; }

inline std::string GoldenCaseName(const GoldenCase& c) {
  std::string s = c.kv + "_" + c.model;
  std::replace_if(s.begin(), s.end(), [](char ch) { return !std::isalnum(static_cast<unsigned char>(ch)); }, '_');
  return s;
}

// Every golden file with the tolerance measured for its weight and KV types.
inline std::vector<GoldenCase> GoldenCases() {
  return {GoldenCase{"kv-f32", "stories260K-f32", 1e-4f},
          GoldenCase{"kv-f16", "stories260K-f32", 0.03f},
          GoldenCase{"kv-f32", "stories260K-f16", 0.025f},
          GoldenCase{"kv-f16", "stories260K-f16", 0.06f},
          GoldenCase{"kv-f32", "stories260K-q8_0", 0.35f},
          GoldenCase{"kv-f16", "stories260K-q8_0", 0.4f},
          GoldenCase{"kv-f32", "stories260K-q4_0", 0.35f},
          GoldenCase{"kv-f16", "stories260K-q4_0", 0.4f},
          GoldenCase{"kv-f32", "llama-2-tiny-random", 1e-4f},
          GoldenCase{"kv-f16", "llama-2-tiny-random", 0.06f},
          GoldenCase{"kv-f32", "synth-llama-2L-256d-f16", 0.025f},
          GoldenCase{"kv-f16", "synth-llama-2L-256d-f16", 0.06f},
          GoldenCase{"kv-f32", "synth-llama-2L-256d-q8_0", 1.1f},
          GoldenCase{"kv-f16", "synth-llama-2L-256d-q8_0", 1.1f},
          GoldenCase{"kv-f32", "synth-llama-2L-256d-q4_0", 1.1f},
          GoldenCase{"kv-f16", "synth-llama-2L-256d-q4_0", 1.1f},
          GoldenCase{"kv-f32", "synth-llama-2L-256d-q4_k_m", 1.1f},
          GoldenCase{"kv-f16", "synth-llama-2L-256d-q4_k_m", 1.1f},
          GoldenCase{"kv-f32", "synth-llama-2L-256d-q6_k", 1.1f},
          GoldenCase{"kv-f16", "synth-llama-2L-256d-q6_k", 1.1f},
          // qwen3 (Q/K norms): a float64 NumPy reference (../shared/golden/arch/README.md), F32 only.
          GoldenCase{"kv-f32", "synth-qwen3-2L-256d-f32", 1e-4f, "arch/"},
          // phi3 (fused QKV and gate/up, LongRoPE factors and attn_factor): llama.cpp c392e509.
          GoldenCase{"kv-f32", "synth-phi3-2L-256d-f32", 1e-4f, "arch/"},
          GoldenCase{"kv-f16", "synth-phi3-2L-256d-f32", 0.03f, "arch/"},
          GoldenCase{"kv-f32", "synth-phi3-2L-256d-q8_0", 1.1f, "arch/"},
          GoldenCase{"kv-f16", "synth-phi3-2L-256d-q8_0", 1.1f, "arch/"},
          GoldenCase{"kv-f32", "synth-phi3-2L-256d-q4_k_m", 1.1f, "arch/"},
          GoldenCase{"kv-f16", "synth-phi3-2L-256d-q4_k_m", 1.1f, "arch/"},
          // gemma2 (post-norms, GeGLU on llama.cpp's F16 table, soft-caps, sliding window on even
          // layers, scaled embeddings): llama.cpp c392e509. CPU only so far.
          GoldenCase{"kv-f32", "synth-gemma2-26L-64d-f32", 5e-4f, "arch/"},
          GoldenCase{"kv-f16", "synth-gemma2-26L-64d-f32", 0.03f, "arch/"},
          GoldenCase{"kv-f32", "synth-gemma2-26L-64d-q8_0", 1.1f, "arch/"},
          GoldenCase{"kv-f16", "synth-gemma2-26L-64d-q8_0", 1.1f, "arch/"},
          GoldenCase{"kv-f32", "synth-gemma2-26L-64d-q4_k_m", 1.1f, "arch/"},
          GoldenCase{"kv-f16", "synth-gemma2-26L-64d-q4_k_m", 1.1f, "arch/"},
          // Mixtures of experts (router top-2; qwen2moe with a gated shared expert and raw weights,
          // Mixtral renormalised): llama.cpp c392e509. CPU only so far.
          GoldenCase{"kv-f32", "synth-qwen2moe-2L-256d-e4k2-f32", 2e-4f, "arch/"},
          GoldenCase{"kv-f16", "synth-qwen2moe-2L-256d-e4k2-f32", 0.03f, "arch/"},
          GoldenCase{"kv-f32", "synth-qwen2moe-2L-256d-e4k2-q8_0", 0, "arch/", /*routed=*/true},
          GoldenCase{"kv-f16", "synth-qwen2moe-2L-256d-e4k2-q8_0", 0, "arch/", /*routed=*/true},
          GoldenCase{"kv-f32", "synth-qwen2moe-2L-256d-e4k2-q4_k_m", 0, "arch/", /*routed=*/true},
          GoldenCase{"kv-f16", "synth-qwen2moe-2L-256d-e4k2-q4_k_m", 0, "arch/", /*routed=*/true},
          GoldenCase{"kv-f32", "synth-mixtral-2L-256d-e4k2-f32", 2e-4f, "arch/"},
          GoldenCase{"kv-f16", "synth-mixtral-2L-256d-e4k2-f32", 0.03f, "arch/"},
          GoldenCase{"kv-f32", "synth-mixtral-2L-256d-e4k2-q8_0", 0, "arch/", /*routed=*/true},
          GoldenCase{"kv-f16", "synth-mixtral-2L-256d-e4k2-q8_0", 0, "arch/", /*routed=*/true},
          GoldenCase{"kv-f32", "synth-mixtral-2L-256d-e4k2-q4_k_m", 0, "arch/", /*routed=*/true},
          GoldenCase{"kv-f16", "synth-mixtral-2L-256d-e4k2-q4_k_m", 0, "arch/", /*routed=*/true}};
}

// ../shared/golden/arch/README.md, "Suggested checks" 4, for the quantised MoE files: the median of
// the per-step largest differences, the share of steps whose largest difference is within 0.5, the
// share of steps whose argmax is llama.cpp's token.
struct StepCriteria {
  double max_median = 0.3;
  double min_within_half = 0.93;
  double min_argmax = 0.95;
};

inline void CheckTeacherForcedGolden(inference::ModelExecutor& executor, const std::string& golden, float tolerance,
                                     const std::string& label, const StepCriteria* criteria = nullptr) {
  const int32_t n_vocab = executor.model().config().n_vocab;
  std::vector<float> logits(static_cast<size_t>(n_vocab));
  auto argmax = [&] { return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()); };
  double worst = 0.0;
  int steps = 0, argmax_agree = 0;
  std::vector<double> step_worst;  // with criteria: each step's largest difference
  double step_max = 0.0;
  for (const nlohmann::json& rec : ReadJsonLines(golden)) {
    const std::string id = rec["case_id"];
    SCOPED_TRACE(id);
    std::vector<int32_t> prompt = rec["prompt_tokens"].get<std::vector<int32_t>>();
    std::vector<int32_t> output = rec["output_tokens"].get<std::vector<int32_t>>();
    auto seq = executor.NewSequence();
    ASSERT_TRUE(seq.ok());
    ASSERT_TRUE(executor.Forward(**seq, prompt, logits.data(), false).ok());

    auto check = [&](const nlohmann::json& pairs, size_t step) {
      for (const auto& pair : pairs) {
        const int32_t tok = pair[0].get<int32_t>();
        const float want = pair[1].get<float>();
        const double diff = std::fabs(static_cast<double>(logits[tok]) - want);
        worst = std::max(worst, diff);
        step_max = std::max(step_max, diff);
        if (criteria != nullptr) continue;
        EXPECT_LE(diff, tolerance) << "step " << step << " token " << tok << ": ours " << logits[tok]
                                   << ", llama.cpp " << want;
      }
    };
    check(rec["top_logits"], 0);
    if (rec.contains("logits")) {
      const std::vector<float> full = rec["logits"].get<std::vector<float>>();
      ASSERT_EQ(full.size(), logits.size());
      for (size_t i = 0; i < full.size(); ++i) {
        const double diff = std::fabs(static_cast<double>(logits[i]) - full[i]);
        worst = std::max(worst, diff);
        if (criteria == nullptr) {
          ASSERT_LE(diff, tolerance) << "full logits, token " << i;
        }
      }
    }
    const auto& step_top = rec["step_top"];
    for (size_t i = 0; i < output.size(); ++i) {
      step_max = 0.0;
      check(step_top[i], i);
      step_worst.push_back(step_max);
      ++steps;
      argmax_agree += argmax() == output[i];
      if (i + 1 == output.size()) break;
      ASSERT_TRUE(executor.Forward(**seq, std::span<const int32_t>(&output[i], 1), logits.data(), false).ok());
    }
  }
  if (criteria != nullptr && !step_worst.empty()) {
    std::vector<double> sorted = step_worst;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    const double within =
        static_cast<double>(std::count_if(sorted.begin(), sorted.end(), [](double d) { return d <= 0.5; })) /
        static_cast<double>(sorted.size());
    EXPECT_LE(median, criteria->max_median) << label;
    EXPECT_GE(within, criteria->min_within_half) << label;
    EXPECT_GE(static_cast<double>(argmax_agree) / steps, criteria->min_argmax) << label;
    std::printf("[ golden ] %s: median step |diff| %.3g, %.1f%% of steps within 0.5\n", label.c_str(), median,
                100 * within);
  }
  ::testing::Test::RecordProperty("max_abs_logit_diff", std::to_string(worst));
  ::testing::Test::RecordProperty("argmax_agreement", std::to_string(argmax_agree) + "/" + std::to_string(steps));
  std::printf("[ golden ] %s: max |diff| %.3g (tolerance %.3g), argmax agrees %d/%d\n", label.c_str(), worst,
              tolerance, argmax_agree, steps);
}

}  // namespace airlock::testing

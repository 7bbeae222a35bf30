// Synthetic GGUF models of any Llama/Qwen2/Qwen3/Phi-3 shape with deterministic random weights: realistic
// sizes for benchmarks (a Llama-3-8B-shaped Q4_K_M file) and small shapes for tests.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace airlock::inference {

struct SyntheticModelSpec {
  // "llama", "qwen2" (adds Q/K/V biases), "qwen3" (per-head Q/K norms), "phi3" (fused QKV and
  // gate/up tensors, LongRoPE factors of 1 and a window as wide as the context) or "gemma2"
  // (post-attention and post-FFN norms, a 4096-token window on even layers, soft-caps 50 and 30).
  std::string arch = "llama";
  int32_t n_layer = 2;
  int32_t n_embd = 256;
  int32_t n_head = 4;
  int32_t n_head_kv = 2;
  int32_t n_ff = 512;
  int32_t n_vocab = 512;            // ignored when vocab_from is set (taken from that file)
  int32_t n_ctx = 2048;
  float rope_freq_base = 10000.0f;
  float rms_eps = 1e-5f;
  // Weight format: a tensor type name ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0",
  // "q5_1", "q4_K", "q5_K", "q6_K") or a llama.cpp mix ("q4_K_M", "q5_K_M").
  std::string weight_type = "q8_0";
  bool tied_embeddings = false;
  uint64_t seed = 1;
  float weight_std = 0.02f;         // normal(0, std) for every 2-D weight; norms are 1
  // Copy the tokenizer from this GGUF (e.g. a vocab-only file); else a byte-level SPM vocabulary.
  std::string vocab_from;
  // Threads drawing and quantising a large tensor's rows (the bytes are the same for any number).
  // 0 = the machine's hardware threads.
  int32_t threads = 0;
};

// Validates the spec (errors name the field) and writes the model to `path`.
absl::Status WriteSyntheticModel(const SyntheticModelSpec& spec, const std::string& path);

}  // namespace airlock::inference

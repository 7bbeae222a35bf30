// Hyper-parameters of a model of a supported architecture (architecture.h), read from GGUF
// metadata and validated.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/architecture.h"

namespace airlock::inference {

struct ModelConfig {
  const ArchitectureRecipe* recipe = nullptr;  // how a layer is computed (architecture.h)
  std::string arch_name;         // as in general.architecture
  std::string name;              // general.name, if any
  int32_t n_layer = 0;
  int32_t n_embd = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;          // attention.key_length, default n_embd / n_head
  int32_t n_ff = 0;
  // Mixture of experts (recipe->experts): experts in all and per token, each expert's FFN width,
  // the shared expert's (moe_shared_expert).
  int32_t n_expert = 0;
  int32_t n_expert_used = 0;
  int32_t n_ff_expert = 0;
  int32_t n_ff_shared = 0;
  int32_t n_vocab = 0;
  int32_t n_ctx_train = 0;       // context_length
  int32_t n_rot = 0;             // rope.dimension_count, default head_dim
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / rope.scaling.factor for linear scaling
  float rms_eps = 1e-5f;
  bool has_qkv_bias = false;     // the recipe has kQkvBias (qwen2)
  bool rope_neox = false;        // RopeStyle::kNeox: (i, i + n_rot/2) pairs (qwen2); else adjacent
  bool tied_embeddings = false;  // output.weight absent: logits use token_embd
  bool has_rope_freqs = false;   // rope_freqs.weight present (Llama 3.1 rope scaling)
  // LongRoPE (phi3): rope_factors_long/short.weight present. The long factors apply when the
  // context the model runs with exceeds rope.scaling.original_context_length, the short ones
  // otherwise (as llama.cpp); cos and sin are both scaled by rope.scaling.attn_factor.
  bool has_longrope = false;
  int32_t rope_original_ctx = 0;   // rope.scaling.original_context_length; 0 when absent
  float rope_attn_factor = 1.0f;   // rope.scaling.attn_factor
  // attention.sliding_window; 0 when absent (no window). gemma2 applies it to its even layers
  // (SlidingLayer); phi3 declares one that is not applied (the engine refuses a longer context).
  int32_t sliding_window = 0;
  bool sliding_window_applied = false;
  // Soft-caps (gemma2): attention scores and final logits become cap * tanh(x / cap); 0: none.
  float attn_softcap = 0.0f;       // attn_logit_softcapping
  float final_softcap = 0.0f;      // final_logit_softcapping
  // The factor on Q.K before the softmax: 1 / sqrt(head_dim), except Gemma-2-27B's
  // 1 / sqrt(n_embd / n_head) (llama.cpp c392e509 decides by the layer count, 46). 0 (a config
  // not read from a file): 1 / sqrt(head_dim).
  float kq_scale = 0.0f;
  // The factor on token embeddings: sqrt(n_embd) for Gemma, else 1.
  float embd_scale = 1.0f;
  bool SlidingLayer(int32_t il) const { return sliding_window_applied && il % 2 == 0; }

  int32_t n_embd_kv() const { return n_head_kv * head_dim; }
  int32_t n_embd_q() const { return n_head * head_dim; }
};

// Reads and validates the hyper-parameters; refuses unsupported architectures and inconsistent or
// absurd values with a message naming the key.
absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& file);

}  // namespace airlock::inference

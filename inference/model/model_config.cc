// ModelConfig from GGUF keys "<arch>.*", with llama.cpp's defaults for optional keys.
#include "inference/model/model_config.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {
namespace {

// Upper bounds that no real model reaches; they keep hostile files from driving huge allocations.
constexpr uint32_t kMaxLayers = 1024;
constexpr uint32_t kMaxDim = 1 << 17;
constexpr uint32_t kMaxHeads = 1024;
constexpr uint32_t kMaxContext = 1 << 24;

absl::StatusOr<int32_t> ReadBounded(const GgufFile& f, const std::string& key, uint32_t lo,
                                    uint32_t hi) {
  AIRLOCK_ASSIGN_OR_RETURN(uint32_t v, f.GetU32(key));
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: '", key, "' = ", v, " is outside the supported range [", lo, ", ", hi, "]"));
  }
  return static_cast<int32_t>(v);
}

}  // namespace

absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& f) {
  ModelConfig c;
  AIRLOCK_ASSIGN_OR_RETURN(c.arch_name, f.GetString("general.architecture"));
  const std::string p = c.arch_name + ".";
  // A mixture of experts is its own row (a llama file with experts is Mixtral).
  AIRLOCK_ASSIGN_OR_RETURN(uint32_t n_expert, f.GetU32Or(p + "expert_count", 0));
  c.recipe = FindArchitecture(c.arch_name, n_expert > 0);
  if (c.recipe == nullptr && FindArchitecture(c.arch_name, n_expert == 0) != nullptr) {
    return absl::UnimplementedError(
        n_expert > 0 ? absl::StrCat("model: ", c.arch_name, " with experts (expert_count ", n_expert, ") is not supported")
                     : absl::StrCat("model: ", c.arch_name, " needs ", p, "expert_count"));
  }
  if (c.recipe == nullptr) {
    return absl::UnimplementedError(absl::StrCat("model: architecture '", c.arch_name.substr(0, 64),
                                                 "' is not supported (supported: ", SupportedArchitectures(), ")"));
  }
  if (c.recipe->experts) {
    AIRLOCK_ASSIGN_OR_RETURN(c.n_expert, ReadBounded(f, p + "expert_count", 1, 256));
    AIRLOCK_ASSIGN_OR_RETURN(c.n_expert_used, ReadBounded(f, p + "expert_used_count", 1, 64));
    if (c.n_expert_used > c.n_expert) {
      return absl::InvalidArgumentError(absl::StrCat("model: expert_used_count ", c.n_expert_used,
                                                     " is more than expert_count ", c.n_expert));
    }
  }
  c.has_qkv_bias = std::find(c.recipe->layer.begin(), c.recipe->layer.end(), LayerOp::kQkvBias) != c.recipe->layer.end();
  c.rope_neox = c.recipe->rope == RopeStyle::kNeox;
  AIRLOCK_ASSIGN_OR_RETURN(c.name, f.GetStringOr("general.name", ""));
  AIRLOCK_ASSIGN_OR_RETURN(c.n_layer, ReadBounded(f, p + "block_count", 1, kMaxLayers));
  AIRLOCK_ASSIGN_OR_RETURN(c.n_embd, ReadBounded(f, p + "embedding_length", 1, kMaxDim));
  AIRLOCK_ASSIGN_OR_RETURN(c.n_head, ReadBounded(f, p + "attention.head_count", 1, kMaxHeads));
  if (f.Has(p + "attention.head_count_kv")) {
    AIRLOCK_ASSIGN_OR_RETURN(c.n_head_kv, ReadBounded(f, p + "attention.head_count_kv", 1, kMaxHeads));
  } else {
    c.n_head_kv = c.n_head;
  }
  if (c.n_head % c.n_head_kv != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model: head_count ", c.n_head,
                                                   " is not a multiple of head_count_kv ", c.n_head_kv));
  }
  AIRLOCK_ASSIGN_OR_RETURN(c.n_ff, ReadBounded(f, p + "feed_forward_length", 1, kMaxDim * 4));
  if (c.recipe->experts) {
    // Each expert's width: expert_feed_forward_length where the file has it (qwen2moe), else
    // feed_forward_length (Mixtral); the shared expert's: expert_shared_feed_forward_length.
    c.n_ff_expert = c.n_ff;
    if (f.Has(p + "expert_feed_forward_length")) {
      AIRLOCK_ASSIGN_OR_RETURN(c.n_ff_expert, ReadBounded(f, p + "expert_feed_forward_length", 1, kMaxDim * 4));
    }
    if (c.recipe->moe_shared_expert) {
      AIRLOCK_ASSIGN_OR_RETURN(c.n_ff_shared, ReadBounded(f, p + "expert_shared_feed_forward_length", 1, kMaxDim * 4));
    }
  }
  AIRLOCK_ASSIGN_OR_RETURN(c.n_ctx_train, ReadBounded(f, p + "context_length", 1, kMaxContext));
  if (f.Has(p + "attention.key_length")) {
    AIRLOCK_ASSIGN_OR_RETURN(c.head_dim, ReadBounded(f, p + "attention.key_length", 1, 1024));
    if (f.Has(p + "attention.value_length")) {
      AIRLOCK_ASSIGN_OR_RETURN(int32_t v, ReadBounded(f, p + "attention.value_length", 1, 1024));
      if (v != c.head_dim) {
        return absl::UnimplementedError("model: attention.value_length != key_length is not supported");
      }
    }
  } else {
    if (c.n_embd % c.n_head != 0) {
      return absl::InvalidArgumentError(absl::StrCat("model: embedding_length ", c.n_embd,
                                                     " is not a multiple of head_count ", c.n_head));
    }
    c.head_dim = c.n_embd / c.n_head;
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model: head dimension ", c.head_dim, " must be even"));
  }
  AIRLOCK_ASSIGN_OR_RETURN(uint32_t n_rot, f.GetU32Or(p + "rope.dimension_count", c.head_dim));
  if (n_rot == 0 || n_rot > static_cast<uint32_t>(c.head_dim) || n_rot % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model: rope.dimension_count ", n_rot,
                                                   " must be even and at most the head dimension ", c.head_dim));
  }
  c.n_rot = static_cast<int32_t>(n_rot);
  AIRLOCK_ASSIGN_OR_RETURN(c.rope_freq_base, f.GetF32Or(p + "rope.freq_base", 10000.0f));
  AIRLOCK_ASSIGN_OR_RETURN(c.rms_eps, f.GetF32Or(p + "attention.layer_norm_rms_epsilon", 1e-5f));
  if (!(c.rope_freq_base > 0.0f) || !std::isfinite(c.rope_freq_base)) {
    return absl::InvalidArgumentError("model: rope.freq_base must be a positive number");
  }
  if (!(c.rms_eps > 0.0f) || !std::isfinite(c.rms_eps)) {
    return absl::InvalidArgumentError("model: attention.layer_norm_rms_epsilon must be positive");
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::string scaling, f.GetStringOr(p + "rope.scaling.type", "none"));
  if (scaling == "linear") {
    AIRLOCK_ASSIGN_OR_RETURN(float factor, f.GetF32(p + "rope.scaling.factor"));
    if (!(factor >= 1.0f) || !std::isfinite(factor)) {
      return absl::InvalidArgumentError("model: rope.scaling.factor must be >= 1");
    }
    c.rope_freq_scale = 1.0f / factor;
  } else if (scaling == "longrope" && f.FindTensor("rope_factors_long.weight") == nullptr) {
    return absl::InvalidArgumentError("model: rope scaling 'longrope' without rope_factors_long.weight");
  } else if (scaling != "none" && scaling != "llama3" && scaling != "longrope") {
    // llama3 scaling arrives as the rope_freqs.weight tensor, LongRoPE as the rope_factors tensors;
    // yarn is not implemented.
    return absl::UnimplementedError(absl::StrCat("model: rope scaling '", scaling, "' is not supported"));
  }
  // The vocabulary size comes from the embedding tensor (vocab_size keys are optional and sometimes
  // stale); it is checked against the tokenizer at load.
  const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr) return absl::InvalidArgumentError("model: tensor 'token_embd.weight' is missing");
  if (embd->shape.size() != 2 || embd->shape[0] != c.n_embd) {
    return absl::InvalidArgumentError("model: 'token_embd.weight' must be [embedding_length, vocab]");
  }
  if (embd->shape[1] < 1 || embd->shape[1] > (1 << 22)) {
    return absl::InvalidArgumentError("model: vocabulary size out of range");
  }
  c.n_vocab = static_cast<int32_t>(embd->shape[1]);
  c.tied_embeddings = f.FindTensor("output.weight") == nullptr;
  c.has_rope_freqs = f.FindTensor("rope_freqs.weight") != nullptr;
  const bool long_factors = f.FindTensor("rope_factors_long.weight") != nullptr;
  const bool short_factors = f.FindTensor("rope_factors_short.weight") != nullptr;
  if (long_factors != short_factors) {
    return absl::InvalidArgumentError("model: LongRoPE needs both rope_factors_long.weight and rope_factors_short.weight");
  }
  c.has_longrope = long_factors;
  if (c.has_longrope && c.has_rope_freqs) {
    return absl::InvalidArgumentError("model: rope_freqs.weight and LongRoPE factors in one file");
  }
  AIRLOCK_ASSIGN_OR_RETURN(uint32_t original, f.GetU32Or(p + "rope.scaling.original_context_length", 0));
  if (original > (1u << 24)) return absl::InvalidArgumentError("model: rope.scaling.original_context_length out of range");
  c.rope_original_ctx = static_cast<int32_t>(original);
  AIRLOCK_ASSIGN_OR_RETURN(c.rope_attn_factor, f.GetF32Or(p + "rope.scaling.attn_factor", 1.0f));
  if (!(c.rope_attn_factor > 0.0f) || !(c.rope_attn_factor <= 16.0f)) {
    return absl::InvalidArgumentError("model: rope.scaling.attn_factor must be in (0, 16]");
  }
  c.kq_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  if (c.recipe->scale_embeddings) c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
  if (c.recipe->soft_caps) {
    AIRLOCK_ASSIGN_OR_RETURN(c.attn_softcap, f.GetF32Or(p + "attn_logit_softcapping", 0.0f));
    AIRLOCK_ASSIGN_OR_RETURN(c.final_softcap, f.GetF32Or(p + "final_logit_softcapping", 0.0f));
    for (const auto& [key, cap] : {std::pair<const char*, float>{"attn_logit_softcapping", c.attn_softcap},
                                   {"final_logit_softcapping", c.final_softcap}}) {
      if (!(cap >= 0.0f) || !(cap <= 1e4f)) {
        return absl::InvalidArgumentError(absl::StrCat("model: ", key, " must be in [0, 10000]"));
      }
    }
    // Gemma-2-27B scales queries by 1 / sqrt(n_embd / n_head), the smaller ones by 1 / sqrt(head_dim).
    if (c.n_layer == 46) c.kq_scale = 1.0f / std::sqrt(static_cast<float>(c.n_embd / c.n_head));
  }
  if (c.recipe->sliding_window_even_layers) {
    AIRLOCK_ASSIGN_OR_RETURN(uint32_t window, f.GetU32Or(p + "attention.sliding_window", 0));
    if (window > (1u << 24)) return absl::InvalidArgumentError("model: attention.sliding_window out of range");
    c.sliding_window = static_cast<int32_t>(window);
    c.sliding_window_applied = window > 0;
  }
  // llama.cpp applies a phi3 file's window (on every layer); it ignores the key elsewhere, and so
  // do we.
  if (c.arch_name == "phi3") {
    AIRLOCK_ASSIGN_OR_RETURN(uint32_t window, f.GetU32Or(p + "attention.sliding_window", 0));
    if (window > (1u << 24)) return absl::InvalidArgumentError("model: attention.sliding_window out of range");
    c.sliding_window = static_cast<int32_t>(window);
  }
  return c;
}

}  // namespace airlock::inference

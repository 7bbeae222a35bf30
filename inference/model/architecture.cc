// The architecture table.
#include "inference/model/architecture.h"

#include <array>

#include "absl/strings/str_cat.h"

namespace airlock::inference {
namespace {

// Llama 1-3, Mistral, TinyLlama, SmolLM: pre-norm, SwiGLU, adjacent-pair RoPE.
constexpr LayerOp kLlamaLayer[] = {
    LayerOp::kAttnNorm,  LayerOp::kQkvProject,    LayerOp::kRope,    LayerOp::kAttention, LayerOp::kAttnOutputAdd,
    LayerOp::kFfnNorm,   LayerOp::kGateUpProject, LayerOp::kSwiGlu,  LayerOp::kFfnDownAdd,
};

// Qwen2 / Qwen2.5: Llama's layer with biases on Q, K and V, and NeoX-style RoPE.
constexpr LayerOp kQwen2Layer[] = {
    LayerOp::kAttnNorm, LayerOp::kQkvProject,    LayerOp::kQkvBias, LayerOp::kRope,       LayerOp::kAttention,
    LayerOp::kAttnOutputAdd, LayerOp::kFfnNorm, LayerOp::kGateUpProject, LayerOp::kSwiGlu, LayerOp::kFfnDownAdd,
};

// Qwen3: Qwen2's layer without the Q/K/V biases, each head of Q and K RMS-normed before RoPE.
constexpr LayerOp kQwen3Layer[] = {
    LayerOp::kAttnNorm, LayerOp::kQkvProject,    LayerOp::kQkNorm, LayerOp::kRope,       LayerOp::kAttention,
    LayerOp::kAttnOutputAdd, LayerOp::kFfnNorm, LayerOp::kGateUpProject, LayerOp::kSwiGlu, LayerOp::kFfnDownAdd,
};

// Gemma 2: a norm after the attention output and after the FFN as well as before them, GeGLU,
// NeoX-style RoPE; embeddings scaled, a sliding window on even layers and soft-caps (the recipe's
// flags).
constexpr LayerOp kGemma2Layer[] = {
    LayerOp::kAttnNorm, LayerOp::kQkvProject, LayerOp::kRope, LayerOp::kAttention, LayerOp::kAttnOutputPostNormAdd,
    LayerOp::kFfnNorm,  LayerOp::kGateUpProject, LayerOp::kGeGlu, LayerOp::kFfnDownPostNormAdd,
};

// Phi-3: Llama's layer with fused QKV and gate/up tensors and NeoX-style RoPE (with LongRoPE
// frequency factors, model_config.h).
constexpr std::array<ArchitectureRecipe, 5> kArchitectures = {{
    {"llama", kLlamaLayer, RopeStyle::kAdjacent},
    {"qwen2", kQwen2Layer, RopeStyle::kNeox},
    {"qwen3", kQwen3Layer, RopeStyle::kNeox},
    {"phi3", kLlamaLayer, RopeStyle::kNeox, /*fused_qkv=*/true, /*fused_gate_up=*/true},
    {"gemma2", kGemma2Layer, RopeStyle::kNeox, /*fused_qkv=*/false, /*fused_gate_up=*/false,
     /*scale_embeddings=*/true, /*sliding_window_even_layers=*/true, /*soft_caps=*/true},
}};

}  // namespace

const char* LayerOpName(LayerOp op) {
  switch (op) {
    case LayerOp::kAttnNorm: return "attn_norm";
    case LayerOp::kQkvProject: return "qkv_project";
    case LayerOp::kQkvBias: return "qkv_bias";
    case LayerOp::kQkNorm: return "qk_norm";
    case LayerOp::kRope: return "rope";
    case LayerOp::kAttention: return "attention";
    case LayerOp::kAttnOutputAdd: return "attn_output_add";
    case LayerOp::kAttnOutputPostNormAdd: return "attn_output_post_norm_add";
    case LayerOp::kFfnNorm: return "ffn_norm";
    case LayerOp::kGateUpProject: return "gate_up_project";
    case LayerOp::kSwiGlu: return "swiglu";
    case LayerOp::kGeGlu: return "geglu";
    case LayerOp::kFfnDownAdd: return "ffn_down_add";
    case LayerOp::kFfnDownPostNormAdd: return "ffn_down_post_norm_add";
  }
  return "unknown";
}

const ArchitectureRecipe* FindArchitecture(std::string_view name) {
  for (const ArchitectureRecipe& a : kArchitectures) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

std::string SupportedArchitectures() {
  std::string out;
  for (const ArchitectureRecipe& a : kArchitectures) absl::StrAppend(&out, out.empty() ? "" : ", ", std::string(a.name));
  return out;
}

}  // namespace airlock::inference

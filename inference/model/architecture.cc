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

// Mixtral (a llama file with experts): Llama's attention, a routed mixture of SwiGLU experts.
constexpr LayerOp kLlamaMoeLayer[] = {
    LayerOp::kAttnNorm,      LayerOp::kQkvProject, LayerOp::kRope,  LayerOp::kAttention,
    LayerOp::kAttnOutputAdd, LayerOp::kFfnNorm,    LayerOp::kMoeFfn,
};

// Qwen2-MoE: Qwen2's attention, routed experts plus a gated shared expert.
constexpr LayerOp kQwen2MoeLayer[] = {
    LayerOp::kAttnNorm, LayerOp::kQkvProject,    LayerOp::kQkvBias, LayerOp::kRope,
    LayerOp::kAttention, LayerOp::kAttnOutputAdd, LayerOp::kFfnNorm, LayerOp::kMoeFfn,
};

// Phi-3: Llama's layer with fused QKV and gate/up tensors and NeoX-style RoPE (with LongRoPE
// frequency factors, model_config.h).
constexpr std::array<ArchitectureRecipe, 7> kArchitectures = {{
    {"llama", kLlamaLayer, RopeStyle::kAdjacent},
    {"qwen2", kQwen2Layer, RopeStyle::kNeox},
    {"qwen3", kQwen3Layer, RopeStyle::kNeox},
    {"phi3", kLlamaLayer, RopeStyle::kNeox, /*fused_qkv=*/true, /*fused_gate_up=*/true},
    {"gemma2", kGemma2Layer, RopeStyle::kNeox, /*fused_qkv=*/false, /*fused_gate_up=*/false,
     /*scale_embeddings=*/true, /*sliding_window_even_layers=*/true, /*soft_caps=*/true},
    {"qwen2moe", kQwen2MoeLayer, RopeStyle::kNeox, false, false, false, false, false, /*experts=*/true,
     /*moe_shared_expert=*/true, /*moe_norm_weights=*/false},
    {"llama", kLlamaMoeLayer, RopeStyle::kAdjacent, false, false, false, false, false, /*experts=*/true,
     /*moe_shared_expert=*/false, /*moe_norm_weights=*/true},
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
    case LayerOp::kMoeFfn: return "moe_ffn";
  }
  return "unknown";
}

const ArchitectureRecipe* FindArchitecture(std::string_view name, bool experts) {
  for (const ArchitectureRecipe& a : kArchitectures) {
    if (a.name == name && a.experts == experts) return &a;
  }
  return nullptr;
}

std::string SupportedArchitectures() {
  std::string out;
  for (size_t i = 0; i < kArchitectures.size(); ++i) {
    const ArchitectureRecipe& a = kArchitectures[i];
    bool seen = false;  // llama has two rows (with and without experts)
    for (size_t j = 0; j < i; ++j) seen = seen || kArchitectures[j].name == a.name;
    if (!seen) absl::StrAppend(&out, out.empty() ? "" : ", ", std::string(a.name));
  }
  return out;
}

}  // namespace airlock::inference

// Architectures as data: each supported general.architecture is one row of a table that says how a
// layer is computed, as a list of ops (norms, projections, biases, RoPE, attention, activation,
// residual adds) that every backend implements, plus the few settings those ops take (RoPE pair
// style). Model loading reads the weights the ops name; the CPU backend runs the ops in order.
// A new architecture is a new row (and, where it needs one, a new op), never a new code path.
//
// Thread-safety: the table is immutable.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace airlock::inference {

// One step of a transformer layer. The hidden state is x (n_embd per token); xn is its normed
// copy; q, k, v, attn, gate, up are per-token work rows.
enum class LayerOp : uint8_t {
  kAttnNorm,         // xn = RMSNorm(x) * attn_norm                           (attn_norm)
  kQkvProject,       // q, k, v = xn Wq, xn Wk, xn Wv                           (attn_q, attn_k, attn_v)
  kQkvBias,          // q, k, v += bq, bk, bv                                   (attn_{q,k,v}.bias)
  kQkNorm,           // each head of q and of k: RMSNorm(head) * weight         (attn_q_norm, attn_k_norm)
  kRope,             // rotate q and k by position (the architecture's RopeStyle)
  kAttention,        // store k, v at the token's position; attn = softmax(q K^T / sqrt(d)) V,
                     // causal, over the token's own sequence
  kAttnOutputAdd,    // x += attn Wo                                            (attn_output)
  kAttnOutputPostNormAdd,  // x += RMSNorm(attn Wo) * post_attention_norm (attn_output,
                           //                                             post_attention_norm)
  kFfnNorm,          // xn = RMSNorm(x) * ffn_norm                              (ffn_norm)
  kGateUpProject,    // gate, up = xn Wgate, xn Wup                             (ffn_gate, ffn_up)
  kSwiGlu,           // gate = silu(gate) * up
  kGeGlu,            // gate = gelu(gate) * up (tanh approximation, on F16 values as llama.cpp's
                     // CPU backend computes it: cpu::GeGlu)
  kFfnDownAdd,       // x += gate Wdown                                         (ffn_down)
  kFfnDownPostNormAdd,  // x += RMSNorm(gate Wdown) * post_ffw_norm           (ffn_down, post_ffw_norm)
  kMoeFfn,           // x += sum over the top-k experts e_j of softmax(xn Wr) (in order of probability)
                     // of w_j * down_e(silu(gate_e xn) * up_e xn), w_j the probability (renormalised
                     // over the k with moe_norm_weights), plus with moe_shared_expert
                     // sigmoid(xn . ws) * down_s(silu(gate_s xn) * up_s xn); the sum is made
                     // first, then added to x          (ffn_gate_inp, ffn_{gate,up,down}_exps,
                     //                                  ffn_gate_inp_shexp, ffn_{gate,up,down}_shexp)
};
const char* LayerOpName(LayerOp op);

enum class RopeStyle : uint8_t {
  kAdjacent,  // pairs (2i, 2i+1), as llama
  kNeox,      // pairs (i, i + n_rot/2), as qwen2 and GPT-NeoX
};

struct ArchitectureRecipe {
  std::string_view name;          // general.architecture
  std::span<const LayerOp> layer;  // every layer, in order
  RopeStyle rope = RopeStyle::kAdjacent;
  // Fused projections in the file: kQkvProject reads one attn_qkv matrix whose output rows are Q,
  // then K, then V; kGateUpProject reads one ffn_up matrix whose rows are gate, then up. The ops
  // see the same three (two) matrices as for separate tensors: row ranges of the fused one.
  bool fused_qkv = false;
  bool fused_gate_up = false;
  // Gemma: token embeddings are multiplied by sqrt(n_embd) before the first layer.
  bool scale_embeddings = false;
  // Gemma 2: the even layers (0, 2, ...) attend only to the last attention.sliding_window
  // positions, the odd ones to all; attention scores and final logits are soft-capped
  // (cap * tanh(s / cap), caps from attn_logit_softcapping / final_logit_softcapping).
  bool sliding_window_even_layers = false;
  bool soft_caps = false;
  // Mixture of experts (kMoeFfn): the row for files whose <arch>.expert_count is set (a llama file
  // with experts is Mixtral); a shared expert beside the routed ones (qwen2moe); the chosen
  // experts' weights divided by their sum (Mixtral) or used as they are (qwen2moe).
  bool experts = false;
  bool moe_shared_expert = false;
  bool moe_norm_weights = false;
};

// The row for `name` (with `experts`: the mixture-of-experts row, for files with an expert count),
// or nullptr when the architecture is not supported (that way).
const ArchitectureRecipe* FindArchitecture(std::string_view name, bool experts = false);
// "llama, qwen2": for error messages.
std::string SupportedArchitectures();

}  // namespace airlock::inference

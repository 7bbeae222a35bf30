// The compute shaders of the Vulkan backend as dispatches: each op checks its shapes against the
// buffers it is given and returns a Dispatch for Device::Run, so a step records many ops into one
// submission. The SPIR-V is compiled from shaders/*.comp by glslc at build time and embedded.
//
// Thread-safety: as the Device the ops were created on.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/backend/vulkan/vulkan_device.h"
#include "inference/base/tensor_type.h"

namespace airlock::inference::vulkan {

class Ops {
 public:
  // Creates every pipeline on `device` (which must outlive the Ops).
  static absl::StatusOr<std::unique_ptr<Ops>> Create(Device& device);

  // y[r] = RMSNorm(x[r]) * w for `rows` rows of n floats (as cpu::RmsNorm).
  absl::StatusOr<Dispatch> RmsNorm(const Buffer& x, const Buffer& w, const Buffer& y, uint32_t rows, uint32_t n,
                                   float eps) const;

  // Whether MatMulQuantized takes weights of this type: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K
  // and Q6_K.
  static bool Quantized(TensorType type);
  // Elements per block of such a type's rows and of its activation rows (32, or 256 for K-quants).
  static uint32_t QuantBlock(TensorType type);

  // y[t * rows + r] = VecDot(weight row r, activation row t) for quantised weights (rows x cols,
  // Quantized(type)) and m activation rows in ActivationType(type) (QuantizeActivations), cols a
  // multiple of the type's block. With `accumulate`, y += instead (the residual connection).
  absl::StatusOr<Dispatch> MatMulQuantized(TensorType type, const Buffer& w, const Buffer& a, const Buffer& y,
                                           uint32_t rows, uint32_t cols, uint32_t m, bool accumulate = false) const;

  // m rows of cols floats to the activation blocks of `weight_type` (Q8_0 for Q4_0 and Q8_0
  // weights, Q8_K for K-quants), as kernels::QuantizeActivationRow does (up to the last bit of a scale's
  // division on some devices); cols a multiple of the block.
  absl::StatusOr<Dispatch> QuantizeActivations(TensorType weight_type, const Buffer& x, const Buffer& q, uint32_t m,
                                               uint32_t cols) const;

  // As MatMulF32 for F16 weights (decoded to F32; the activations stay F32).
  absl::StatusOr<Dispatch> MatMulF16(const Buffer& w, const Buffer& x, const Buffer& y, uint32_t rows, uint32_t cols,
                                     uint32_t m, bool accumulate) const;
  // As MatMulF16 for BF16 weights (the activations rounded to BF16).
  absl::StatusOr<Dispatch> MatMulBF16(const Buffer& w, const Buffer& x, const Buffer& y, uint32_t rows, uint32_t cols,
                                      uint32_t m, bool accumulate) const;

  // y[t * rows + r] = dot(weight row r, x row t) for F32 weights (rows x cols) and m rows of x;
  // with `accumulate`, y += instead (the residual connection).
  absl::StatusOr<Dispatch> MatMulF32(const Buffer& w, const Buffer& x, const Buffer& y, uint32_t rows, uint32_t cols,
                                     uint32_t m, bool accumulate) const;

  // RoPE in place on `rows` rows (row_stride floats apart) of `heads` heads of head_dim floats,
  // the first n_rot of each rotated by the per-row cos/sin table (n_rot floats per row, as
  // cpu::RopeCache fills it); neox: pairs (i, i + n_rot / 2), else adjacent pairs.
  absl::StatusOr<Dispatch> Rope(const Buffer& x, const Buffer& cos_sin, uint32_t rows, uint32_t heads,
                                uint32_t head_dim, uint32_t n_rot, uint32_t row_stride, bool neox) const;

  // The geometry of a paged KV cache: [block][layer][slot][kv_dim], F32 or F16 elements.
  struct KvLayout {
    uint32_t n_blocks = 0, n_layer = 0, block_tokens = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
    bool f16 = false;
    uint32_t kv_dim() const { return n_head_kv * head_dim; }
    uint64_t elements() const { return uint64_t{n_blocks} * n_layer * block_tokens * kv_dim(); }
    uint64_t bytes() const { return elements() * (f16 ? 2 : 4); }
  };
  // Row metadata for KvStore and Attention: four uints per row (position, the block holding it,
  // its slot there, offset of the row's block table in `blocks`).
  static constexpr uint32_t kMetaWords = 4;

  // K and V rows (kv_dim floats each) into the caches at each row's block and slot, layer `layer`.
  absl::StatusOr<Dispatch> KvStore(const Buffer& k, const Buffer& v, const Buffer& meta, const Buffer& k_cache,
                                   const Buffer& v_cache, const KvLayout& kv, uint32_t layer, uint32_t rows) const;

  // Causal attention of every (row, head) over its sequence's positions 0..pos in layer `layer`:
  // q and out are rows of n_head * head_dim floats. Rows of more than kMaxAttentionPositions
  // positions are left alone: AttentionLong computes those.
  absl::StatusOr<Dispatch> Attention(const Buffer& q, const Buffer& k_cache, const Buffer& v_cache, const Buffer& meta,
                                     const Buffer& blocks, const Buffer& out, const KvLayout& kv, uint32_t layer,
                                     uint32_t rows, float scale) const;
  static constexpr uint32_t kMaxAttentionPositions = 4096;
  // The same for the rows Attention leaves (more than kMaxAttentionPositions positions, up to
  // n_ctx), split into chunks of kMaxAttentionPositions: three dispatches to record after
  // Attention's (chunk statistics, chunk outputs, their sum), with `scratch` of at least
  // AttentionScratchBytes.
  absl::StatusOr<std::vector<Dispatch>> AttentionLong(const Buffer& q, const Buffer& k_cache, const Buffer& v_cache,
                                                      const Buffer& meta, const Buffer& blocks, const Buffer& out,
                                                      const Buffer& scratch, const KvLayout& kv, uint32_t layer,
                                                      uint32_t rows, float scale, uint32_t n_ctx) const;
  static uint64_t AttentionScratchBytes(const KvLayout& kv, uint32_t rows, uint32_t n_ctx);

  // x row r += b for `rows` rows of n floats (Q/K/V biases).
  absl::StatusOr<Dispatch> AddBias(const Buffer& x, const Buffer& b, uint32_t rows, uint32_t n) const;

  // gate = silu(gate) * up over `count` floats.
  absl::StatusOr<Dispatch> SwiGlu(const Buffer& gate, const Buffer& up, uint32_t count) const;

  // out row i = x row index[i] (rows of n floats), for `rows` indices.
  absl::StatusOr<Dispatch> GatherRows(const Buffer& x, const Buffer& index, const Buffer& out, uint32_t rows,
                                      uint32_t n) const;

 private:
  Ops() = default;
  // The common part of every matrix product: y rows x m from w (rows of w_row_bytes) and m
  // activation rows of a_row_bytes.
  absl::StatusOr<Dispatch> MatMul(const Pipeline& pipeline, const char* what, uint32_t param, uint64_t w_row_bytes,
                                  uint64_t a_row_bytes, const Buffer& w, const Buffer& a, const Buffer& y,
                                  uint32_t rows, uint32_t m, bool accumulate) const;
  std::unique_ptr<Pipeline> rms_norm_, matmul_q4_0_, matmul_q4_1_, matmul_q5_0_, matmul_q5_1_, matmul_q8_0_,
      matmul_q4_k_, matmul_q5_k_, matmul_q6_k_, matmul_f32_, matmul_f16_, matmul_bf16_,
      quantize_q8_0_, quantize_q8_1_,
      quantize_q8_k_, add_bias_, rope_, kv_store_, kv_store_f16_, attention_, attention_f16_,
      attention_long_, attention_long_f16_, swiglu_, gather_rows_;
  uint32_t max_groups_ = 65535;  // maxComputeWorkGroupCount per dimension (at least 65535)
};

}  // namespace airlock::inference::vulkan

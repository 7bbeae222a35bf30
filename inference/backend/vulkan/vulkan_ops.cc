// Vulkan ops: embedded SPIR-V, pipelines and shape-checked dispatches (vulkan_ops.h).
#include "inference/backend/vulkan/vulkan_ops.h"

#include <cstring>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"
#include "inference/kernels/quants.h"

namespace airlock::inference::vulkan {
namespace {

// glslc -mfmt=num: the module as comma-separated 32-bit words.
constexpr uint32_t kRmsNormSpirv[] = {
#include "rms_norm.spv.inc"
};
constexpr uint32_t kMatMulQ8_0Spirv[] = {
#include "matmul_q8_0.spv.inc"
};
constexpr uint32_t kMatMulF32Spirv[] = {
#include "matmul_f32.spv.inc"
};
constexpr uint32_t kRopeSpirv[] = {
#include "rope.spv.inc"
};
constexpr uint32_t kKvStoreSpirv[] = {
#include "kv_store.spv.inc"
};
constexpr uint32_t kAttentionSpirv[] = {
#include "attention.spv.inc"
};
constexpr uint32_t kKvStoreF16Spirv[] = {
#include "kv_store_f16.spv.inc"
};
constexpr uint32_t kAttentionLongSpirv[] = {
#include "attention_long.spv.inc"
};
constexpr uint32_t kAttentionLongF16Spirv[] = {
#include "attention_long_f16.spv.inc"
};
constexpr uint32_t kAttentionF16Spirv[] = {
#include "attention_f16.spv.inc"
};
constexpr uint32_t kMatMulF16Spirv[] = {
#include "matmul_f16.spv.inc"
};
constexpr uint32_t kMatMulBF16Spirv[] = {
#include "matmul_bf16.spv.inc"
};
constexpr uint32_t kQuantizeQ8_0Spirv[] = {
#include "quantize_q8_0.spv.inc"
};
constexpr uint32_t kMatMulQ4_0Spirv[] = {
#include "matmul_q4_0.spv.inc"
};
constexpr uint32_t kQuantizeQ8_1Spirv[] = {
#include "quantize_q8_1.spv.inc"
};
constexpr uint32_t kMatMulQ4_1Spirv[] = {
#include "matmul_q4_1.spv.inc"
};
constexpr uint32_t kMatMulQ5_0Spirv[] = {
#include "matmul_q5_0.spv.inc"
};
constexpr uint32_t kMatMulQ5_1Spirv[] = {
#include "matmul_q5_1.spv.inc"
};
constexpr uint32_t kQuantizeQ8KSpirv[] = {
#include "quantize_q8_k.spv.inc"
};
constexpr uint32_t kMatMulQ4KSpirv[] = {
#include "matmul_q4_k.spv.inc"
};
constexpr uint32_t kMatMulQ5KSpirv[] = {
#include "matmul_q5_k.spv.inc"
};
constexpr uint32_t kMatMulQ6KSpirv[] = {
#include "matmul_q6_k.spv.inc"
};
constexpr uint32_t kAddBiasSpirv[] = {
#include "add_bias.spv.inc"
};
constexpr uint32_t kSwiGluSpirv[] = {
#include "swiglu.spv.inc"
};
constexpr uint32_t kGatherRowsSpirv[] = {
#include "gather_rows.spv.inc"
};

// Weight rows one workgroup of a matrix product computes (64 invocations, 8 per row).
constexpr uint32_t kRowsPerProductGroup = 8;

uint32_t Groups(uint64_t items, uint32_t per_group) { return static_cast<uint32_t>((items + per_group - 1) / per_group); }

template <typename T>
std::vector<uint8_t> PushBytes(const T& push) {
  std::vector<uint8_t> bytes(sizeof(T));
  std::memcpy(bytes.data(), &push, sizeof(T));
  return bytes;
}

absl::Status CheckBytes(const Buffer& b, uint64_t bytes, const char* what) {
  if (bytes > b.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " needs ", bytes, " bytes; its buffer has ", b.size()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ops>> Ops::Create(Device& device) {
  std::unique_ptr<Ops> ops(new Ops());
  AIRLOCK_ASSIGN_OR_RETURN(ops->rms_norm_, device.CreatePipeline(kRmsNormSpirv, 3, 12));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_q8_0_, device.CreatePipeline(kMatMulQ8_0Spirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_f16_, device.CreatePipeline(kMatMulF16Spirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_bf16_, device.CreatePipeline(kMatMulBF16Spirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->quantize_q8_0_, device.CreatePipeline(kQuantizeQ8_0Spirv, 2, 4));
  AIRLOCK_ASSIGN_OR_RETURN(ops->quantize_q8_k_, device.CreatePipeline(kQuantizeQ8KSpirv, 2, 4));
  AIRLOCK_ASSIGN_OR_RETURN(ops->quantize_q8_1_, device.CreatePipeline(kQuantizeQ8_1Spirv, 2, 4));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_q4_1_, device.CreatePipeline(kMatMulQ4_1Spirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_q5_0_, device.CreatePipeline(kMatMulQ5_0Spirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_q5_1_, device.CreatePipeline(kMatMulQ5_1Spirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_q4_0_, device.CreatePipeline(kMatMulQ4_0Spirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_q4_k_, device.CreatePipeline(kMatMulQ4KSpirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_q5_k_, device.CreatePipeline(kMatMulQ5KSpirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_q6_k_, device.CreatePipeline(kMatMulQ6KSpirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->kv_store_f16_, device.CreatePipeline(kKvStoreF16Spirv, 5, 20));
  AIRLOCK_ASSIGN_OR_RETURN(ops->attention_f16_, device.CreatePipeline(kAttentionF16Spirv, 6, 32));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_f32_, device.CreatePipeline(kMatMulF32Spirv, 3, 16));
  AIRLOCK_ASSIGN_OR_RETURN(ops->rope_, device.CreatePipeline(kRopeSpirv, 2, 24));
  AIRLOCK_ASSIGN_OR_RETURN(ops->kv_store_, device.CreatePipeline(kKvStoreSpirv, 5, 20));
  AIRLOCK_ASSIGN_OR_RETURN(ops->attention_, device.CreatePipeline(kAttentionSpirv, 6, 32));
  AIRLOCK_ASSIGN_OR_RETURN(ops->attention_long_, device.CreatePipeline(kAttentionLongSpirv, 7, 40));
  AIRLOCK_ASSIGN_OR_RETURN(ops->attention_long_f16_, device.CreatePipeline(kAttentionLongF16Spirv, 7, 40));
  AIRLOCK_ASSIGN_OR_RETURN(ops->swiglu_, device.CreatePipeline(kSwiGluSpirv, 2, 4));
  AIRLOCK_ASSIGN_OR_RETURN(ops->add_bias_, device.CreatePipeline(kAddBiasSpirv, 2, 8));
  AIRLOCK_ASSIGN_OR_RETURN(ops->gather_rows_, device.CreatePipeline(kGatherRowsSpirv, 3, 8));
  return ops;
}

absl::StatusOr<Dispatch> Ops::RmsNorm(const Buffer& x, const Buffer& w, const Buffer& y, uint32_t rows, uint32_t n,
                                      float eps) const {
  if (rows == 0 || n == 0) return absl::InvalidArgumentError("RmsNorm of an empty matrix");
  const uint64_t bytes = uint64_t{rows} * n * sizeof(float);
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(x, bytes, "RmsNorm input"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(w, uint64_t{n} * sizeof(float), "RmsNorm weight"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(y, bytes, "RmsNorm output"));
  struct {
    uint32_t n, rows;
    float eps;
  } push{n, rows, eps};
  Dispatch d;
  d.pipeline = rms_norm_.get();
  d.buffers = {&x, &w, &y};
  d.push = PushBytes(push);
  // Rows beyond one dimension's limit go to the second (the shader folds y into the row index).
  d.groups_x = rows < max_groups_ ? rows : max_groups_;
  d.groups_y = (rows + d.groups_x - 1) / d.groups_x;
  return d;
}

bool Ops::Quantized(TensorType type) {
  switch (type) {
    case TensorType::kQ4_0:
    case TensorType::kQ4_1:
    case TensorType::kQ5_0:
    case TensorType::kQ5_1:
    case TensorType::kQ8_0:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      return true;
    default:
      return false;
  }
}

uint32_t Ops::QuantBlock(TensorType type) { return static_cast<uint32_t>(Traits(type).block_size); }

absl::StatusOr<Dispatch> Ops::MatMulQuantized(TensorType type, const Buffer& w, const Buffer& a, const Buffer& y,
                                              uint32_t rows, uint32_t cols, uint32_t m, bool accumulate) const {
  if (!Quantized(type)) {
    return absl::InvalidArgumentError(absl::StrCat("no quantised product for ", TensorTypeName(type), " weights"));
  }
  const uint32_t block = QuantBlock(type);
  if (cols == 0 || cols % block != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(TensorTypeName(type), " rows need a multiple of ", block, " columns, not ", cols));
  }
  const Pipeline& pipeline = type == TensorType::kQ4_0   ? *matmul_q4_0_
                             : type == TensorType::kQ4_1 ? *matmul_q4_1_
                             : type == TensorType::kQ5_0 ? *matmul_q5_0_
                             : type == TensorType::kQ5_1 ? *matmul_q5_1_
                             : type == TensorType::kQ8_0 ? *matmul_q8_0_
                             : type == TensorType::kQ4_K ? *matmul_q4_k_
                             : type == TensorType::kQ5_K ? *matmul_q5_k_
                                                         : *matmul_q6_k_;
  return MatMul(pipeline, TensorTypeName(type), cols / block, *RowBytes(type, cols),
                *RowBytes(kernels::ActivationType(type), cols), w, a, y, rows, m, accumulate);
}

absl::StatusOr<Dispatch> Ops::MatMul(const Pipeline& pipeline, const char* what, uint32_t param,
                                     uint64_t w_row_bytes, uint64_t a_row_bytes, const Buffer& w, const Buffer& a,
                                     const Buffer& y, uint32_t rows, uint32_t m, bool accumulate) const {
  if (rows == 0 || m == 0) return absl::InvalidArgumentError(absl::StrCat(what, " product of an empty matrix"));
  if (rows > max_groups_ || m > max_groups_) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " product takes at most ", max_groups_, " rows and activation rows"));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(w, uint64_t{rows} * w_row_bytes, "the product's weights"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(a, uint64_t{m} * a_row_bytes, "the product's input"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(y, uint64_t{m} * rows * sizeof(float), "the product's output"));
  struct {
    uint32_t param, rows, m, accumulate;
  } push{param, rows, m, accumulate ? 1u : 0u};
  Dispatch d;
  d.pipeline = &pipeline;
  d.buffers = {&w, &a, &y};
  d.push = PushBytes(push);
  d.groups_x = Groups(rows, kRowsPerProductGroup);
  d.groups_y = m;
  return d;
}

absl::StatusOr<Dispatch> Ops::MatMulF32(const Buffer& w, const Buffer& x, const Buffer& y, uint32_t rows,
                                        uint32_t cols, uint32_t m, bool accumulate) const {
  if (cols == 0) return absl::InvalidArgumentError("F32 product of an empty matrix");
  return MatMul(*matmul_f32_, "F32", cols, uint64_t{cols} * 4, uint64_t{cols} * 4, w, x, y, rows, m, accumulate);
}

absl::StatusOr<Dispatch> Ops::MatMulF16(const Buffer& w, const Buffer& x, const Buffer& y, uint32_t rows,
                                        uint32_t cols, uint32_t m, bool accumulate) const {
  if (cols == 0) return absl::InvalidArgumentError("F16 product of an empty matrix");
  return MatMul(*matmul_f16_, "F16", cols, uint64_t{cols} * 2, uint64_t{cols} * 4, w, x, y, rows, m, accumulate);
}

absl::StatusOr<Dispatch> Ops::MatMulBF16(const Buffer& w, const Buffer& x, const Buffer& y, uint32_t rows,
                                         uint32_t cols, uint32_t m, bool accumulate) const {
  if (cols == 0) return absl::InvalidArgumentError("BF16 product of an empty matrix");
  return MatMul(*matmul_bf16_, "BF16", cols, uint64_t{cols} * 2, uint64_t{cols} * 4, w, x, y, rows, m, accumulate);
}

absl::StatusOr<Dispatch> Ops::QuantizeActivations(TensorType weight_type, const Buffer& x, const Buffer& q,
                                                  uint32_t m, uint32_t cols) const {
  if (!Quantized(weight_type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("no activation quantisation for ", TensorTypeName(weight_type), " weights"));
  }
  const uint32_t block = QuantBlock(weight_type);
  if (m == 0 || cols == 0 || cols % block != 0) {
    return absl::InvalidArgumentError(absl::StrCat("quantising activations for ", TensorTypeName(weight_type),
                                                   " needs rows of a multiple of ", block, " columns, not ", cols));
  }
  const TensorType act = kernels::ActivationType(weight_type);
  const uint64_t blocks = uint64_t{m} * (cols / block);
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(x, uint64_t{m} * cols * 4, "the quantisation's input"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(q, uint64_t{m} * *RowBytes(act, cols), "the quantisation's output"));
  struct {
    uint32_t blocks;
  } push{static_cast<uint32_t>(blocks)};
  Dispatch d;
  d.pipeline = act == TensorType::kQ8_0   ? quantize_q8_0_.get()
               : act == TensorType::kQ8_1 ? quantize_q8_1_.get()
                                          : quantize_q8_k_.get();
  d.buffers = {&x, &q};
  d.push = PushBytes(push);
  const uint32_t groups = Groups(blocks, 64);
  d.groups_x = groups < max_groups_ ? groups : max_groups_;
  d.groups_y = (groups + d.groups_x - 1) / d.groups_x;
  return d;
}

absl::StatusOr<Dispatch> Ops::Rope(const Buffer& x, const Buffer& cos_sin, uint32_t rows, uint32_t heads,
                                   uint32_t head_dim, uint32_t n_rot, uint32_t row_stride, bool neox) const {
  if (rows == 0 || heads == 0 || n_rot < 2 || n_rot % 2 != 0 || n_rot > head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("Rope: bad shape (rows ", rows, ", heads ", heads, ", head_dim ",
                                                   head_dim, ", n_rot ", n_rot, ")"));
  }
  if (uint64_t{heads} * head_dim > row_stride) return absl::InvalidArgumentError("Rope: heads overlap the next row");
  if (rows > max_groups_ || heads > max_groups_) return absl::InvalidArgumentError("Rope: too many rows or heads");
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(x, (uint64_t{rows - 1} * row_stride + uint64_t{heads} * head_dim) * 4, "Rope rows"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(cos_sin, uint64_t{rows} * n_rot * 4, "Rope cos/sin table"));
  struct {
    uint32_t rows, heads, head_dim, n_rot, row_stride, neox;
  } push{rows, heads, head_dim, n_rot, row_stride, neox ? 1u : 0u};
  Dispatch d;
  d.pipeline = rope_.get();
  d.buffers = {&x, &cos_sin};
  d.push = PushBytes(push);
  d.groups_x = Groups(n_rot / 2, 64);
  d.groups_y = heads;
  d.groups_z = rows;
  return d;
}

absl::StatusOr<Dispatch> Ops::KvStore(const Buffer& k, const Buffer& v, const Buffer& meta, const Buffer& k_cache,
                                      const Buffer& v_cache, const KvLayout& kv, uint32_t layer, uint32_t rows) const {
  if (rows == 0 || rows > max_groups_ || kv.kv_dim() == 0 || layer >= kv.n_layer) {
    return absl::InvalidArgumentError("KvStore: bad shape");
  }
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(k, uint64_t{rows} * kv.kv_dim() * 4, "KvStore K rows"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(v, uint64_t{rows} * kv.kv_dim() * 4, "KvStore V rows"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(meta, uint64_t{rows} * kMetaWords * 4, "KvStore row metadata"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(k_cache, kv.bytes(), "K cache"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(v_cache, kv.bytes(), "V cache"));
  struct {
    uint32_t rows, kv_dim, layer, n_layer, block_tokens;
  } push{rows, kv.kv_dim(), layer, kv.n_layer, kv.block_tokens};
  Dispatch d;
  d.pipeline = kv.f16 ? kv_store_f16_.get() : kv_store_.get();
  d.buffers = {&k, &v, &meta, &k_cache, &v_cache};
  d.push = PushBytes(push);
  d.groups_x = Groups(kv.kv_dim(), 64);
  d.groups_y = rows;
  return d;
}

absl::StatusOr<Dispatch> Ops::Attention(const Buffer& q, const Buffer& k_cache, const Buffer& v_cache,
                                        const Buffer& meta, const Buffer& blocks, const Buffer& out, const KvLayout& kv,
                                        uint32_t layer, uint32_t rows, float scale) const {
  if (rows == 0 || rows > max_groups_ || kv.n_head == 0 || kv.n_head_kv == 0 || kv.n_head % kv.n_head_kv != 0 ||
      kv.head_dim == 0 || layer >= kv.n_layer || kv.n_head > max_groups_) {
    return absl::InvalidArgumentError("Attention: bad shape");
  }
  const uint64_t q_bytes = uint64_t{rows} * kv.n_head * kv.head_dim * 4;
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(q, q_bytes, "Attention queries"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(out, q_bytes, "Attention output"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(meta, uint64_t{rows} * kMetaWords * 4, "Attention row metadata"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(k_cache, kv.bytes(), "K cache"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(v_cache, kv.bytes(), "V cache"));
  struct {
    uint32_t rows, n_head, n_head_kv, head_dim, layer, n_layer, block_tokens;
    float scale;
  } push{rows, kv.n_head, kv.n_head_kv, kv.head_dim, layer, kv.n_layer, kv.block_tokens, scale};
  Dispatch d;
  d.pipeline = kv.f16 ? attention_f16_.get() : attention_.get();
  d.buffers = {&q, &k_cache, &v_cache, &meta, &blocks, &out};
  d.push = PushBytes(push);
  d.groups_x = kv.n_head;
  d.groups_y = rows;
  return d;
}

uint64_t Ops::AttentionScratchBytes(const KvLayout& kv, uint32_t rows, uint32_t n_ctx) {
  const uint64_t chunks = (uint64_t{n_ctx} + kMaxAttentionPositions - 1) / kMaxAttentionPositions;
  return uint64_t{rows} * kv.n_head * chunks * (2 + kv.head_dim) * 4;
}

absl::StatusOr<std::vector<Dispatch>> Ops::AttentionLong(const Buffer& q, const Buffer& k_cache,
                                                         const Buffer& v_cache, const Buffer& meta,
                                                         const Buffer& blocks, const Buffer& out,
                                                         const Buffer& scratch, const KvLayout& kv, uint32_t layer,
                                                         uint32_t rows, float scale, uint32_t n_ctx) const {
  // The shapes and buffers the short attention checks, then the scratch.
  AIRLOCK_ASSIGN_OR_RETURN(Dispatch first, Attention(q, k_cache, v_cache, meta, blocks, out, kv, layer, rows, scale));
  const uint32_t chunks = (n_ctx + kMaxAttentionPositions - 1) / kMaxAttentionPositions;
  if (chunks == 0 || chunks > max_groups_) return absl::InvalidArgumentError("AttentionLong: bad context");
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(scratch, AttentionScratchBytes(kv, rows, n_ctx), "AttentionLong scratch"));
  std::vector<Dispatch> out_dispatches;
  for (uint32_t phase = 0; phase < 3; ++phase) {
    struct {
      uint32_t rows, n_head, n_head_kv, head_dim, layer, n_layer, block_tokens;
      float scale;
      uint32_t chunks, phase;
    } push{rows, kv.n_head, kv.n_head_kv, kv.head_dim, layer, kv.n_layer, kv.block_tokens, scale, chunks, phase};
    Dispatch d;
    d.pipeline = kv.f16 ? attention_long_f16_.get() : attention_long_.get();
    d.buffers = {&q, &k_cache, &v_cache, &meta, &blocks, &out, &scratch};
    d.push = PushBytes(push);
    d.groups_x = first.groups_x;
    d.groups_y = first.groups_y;
    d.groups_z = phase == 2 ? 1 : chunks;
    out_dispatches.push_back(std::move(d));
  }
  return out_dispatches;
}

absl::StatusOr<Dispatch> Ops::AddBias(const Buffer& x, const Buffer& b, uint32_t rows, uint32_t n) const {
  if (rows == 0 || n == 0) return absl::InvalidArgumentError("AddBias of an empty matrix");
  if (rows > max_groups_) return absl::InvalidArgumentError(absl::StrCat("AddBias takes at most ", max_groups_, " rows"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(x, uint64_t{rows} * n * sizeof(float), "AddBias rows"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(b, uint64_t{n} * sizeof(float), "AddBias bias"));
  struct {
    uint32_t n, rows;
  } push{n, rows};
  Dispatch d;
  d.pipeline = add_bias_.get();
  d.buffers = {&x, &b};
  d.push = PushBytes(push);
  d.groups_x = Groups(n, 64);
  d.groups_y = rows;
  return d;
}

absl::StatusOr<Dispatch> Ops::SwiGlu(const Buffer& gate, const Buffer& up, uint32_t count) const {
  if (count == 0) return absl::InvalidArgumentError("SwiGlu of nothing");
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(gate, uint64_t{count} * 4, "SwiGlu gate"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(up, uint64_t{count} * 4, "SwiGlu up"));
  struct {
    uint32_t count;
  } push{count};
  Dispatch d;
  d.pipeline = swiglu_.get();
  d.buffers = {&gate, &up};
  d.push = PushBytes(push);
  const uint32_t groups = Groups(count, 256);
  d.groups_x = groups < max_groups_ ? groups : max_groups_;
  d.groups_y = (groups + d.groups_x - 1) / d.groups_x;
  return d;
}

absl::StatusOr<Dispatch> Ops::GatherRows(const Buffer& x, const Buffer& index, const Buffer& out, uint32_t rows,
                                         uint32_t n) const {
  if (rows == 0 || n == 0 || rows > max_groups_) return absl::InvalidArgumentError("GatherRows: bad shape");
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(index, uint64_t{rows} * 4, "GatherRows index"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(out, uint64_t{rows} * n * 4, "GatherRows output"));
  struct {
    uint32_t rows, n;
  } push{rows, n};
  Dispatch d;
  d.pipeline = gather_rows_.get();
  d.buffers = {&x, &index, &out};
  d.push = PushBytes(push);
  d.groups_x = Groups(n, 64);
  d.groups_y = rows;
  return d;
}

}  // namespace airlock::inference::vulkan

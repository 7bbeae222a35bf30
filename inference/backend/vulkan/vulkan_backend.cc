// The Vulkan executor: weights and the paged KV cache in device memory, one submission per step
// (vulkan_backend.h).
#include "inference/backend/vulkan/vulkan_backend.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "inference/backend/cpu/ops.h"
#include "inference/backend/vulkan/vulkan_device.h"
#include "inference/backend/vulkan/vulkan_ops.h"
#include "inference/base/status.h"
#include "inference/kernels/quants.h"
#include "inference/model/architecture.h"

namespace airlock::inference {
namespace {

using vulkan::Buffer;
using vulkan::Device;
using vulkan::DeviceInfo;
using vulkan::Dispatch;
using vulkan::Memory;
using vulkan::Ops;

std::string MiB(uint64_t bytes) { return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20)); }

// A weight matrix in device memory, in the file's format.
struct DeviceMatrix {
  std::unique_ptr<Buffer> data;
  TensorType type = TensorType::kF32;
  uint32_t rows = 0, cols = 0;
};

struct DeviceLayer {
  std::unique_ptr<Buffer> attn_norm, ffn_norm;
  std::unique_ptr<Buffer> bq, bk, bv;  // with kQkvBias in the recipe
  std::unique_ptr<Buffer> q_norm, k_norm;  // with kQkNorm
  DeviceMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
};

// Appends an op's dispatch to a step, or passes on why the op refused its shapes.
absl::Status Append(std::vector<Dispatch>& steps, absl::StatusOr<Dispatch> dispatch) {
  if (!dispatch.ok()) return dispatch.status();
  steps.push_back(*std::move(dispatch));
  return absl::OkStatus();
}

// A layer's matrices.
std::array<const WeightMatrix*, 7> LayerMatrices(const LayerWeights& L) {
  return {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down};
}

// Every matrix the executor multiplies (and uploads).
std::vector<const WeightMatrix*> Matrices(const Model& model) {
  std::vector<const WeightMatrix*> matrices = {&model.output()};
  for (const LayerWeights& L : model.layers()) {
    for (const WeightMatrix* w : LayerMatrices(L)) matrices.push_back(w);
  }
  return matrices;
}

bool Supported(TensorType t) {
  return t == TensorType::kF32 || t == TensorType::kF16 || t == TensorType::kBF16 || Ops::Quantized(t);
}

// The weights and per-step buffers of one device: the whole model, or a run of consecutive layers
// (placement `layers`), the last of which also holds the output norm and matrix.
struct Stage {
  std::unique_ptr<Device> device;
  std::unique_ptr<Ops> ops;
  int32_t first = 0, end = 0;  // its layers: [first, end)
  bool last = false;           // holds the output (norm, matrix, logits)
  Ops::KvLayout kv;            // its layers' part of the KV cache
  std::vector<DeviceLayer> layers;
  DeviceMatrix output;
  std::unique_ptr<Buffer> output_norm, k_cache, v_cache;
  std::unique_ptr<Buffer> x, xn, gathered, q, attn, k, v, gate, up, rope, meta, out_index, logits, tables, act_q8_0,
      act_q8_1, act_q8_k;
  std::unique_ptr<Buffer> attn_scratch;  // with a context beyond 4,096 positions (Ops::AttentionLong)
  std::string Describe() const {
    return absl::StrCat(device->label(), " layers ", first, "-", end - 1, last ? " and the output" : "");
  }
};

// The bytes of a layer's matrices.
uint64_t LayerBytes(const LayerWeights& L) {
  uint64_t bytes = 0;
  for (const WeightMatrix* w : LayerMatrices(L)) bytes += w->bytes();
  return bytes;
}

class VulkanExecutor : public ModelExecutor {
 public:
  // One stage per selector (placement `layers` when several). `label` receives the devices'
  // labels and, with several, the layers each holds. `lose_after_steps` > 0 injects a loss of the
  // first device at that step (tests of the failure path).
  static absl::StatusOr<std::unique_ptr<ModelExecutor>> Create(const Model& model, const ExecutorOptions& options,
                                                               const std::vector<std::string>& selectors,
                                                               int64_t lose_after_steps, std::string* label) {
    std::unique_ptr<VulkanExecutor> e(new VulkanExecutor(model, options));
    AIRLOCK_RETURN_IF_ERROR(e->Init(selectors));
    e->lose_after_steps_ = lose_after_steps;
    if (e->stages_.size() == 1) {
      *label = e->stages_[0].device->label();
    } else {
      std::vector<std::string> parts;
      for (const Stage& st : e->stages_) parts.push_back(st.Describe());
      *label = absl::StrJoin(parts, " + ");
    }
    if (lose_after_steps > 0) absl::StrAppend(label, " [test fault: lost at step ", lose_after_steps, "]");
    return std::unique_ptr<ModelExecutor>(std::move(e));
  }

  std::vector<DeviceUsage> device_usage() const override {
    std::vector<DeviceUsage> out;
    for (const Stage& st : stages_) {
      out.push_back(DeviceUsage{st.device->label(), st.device->device_local_bytes_used(),
                                st.device->info().device_local_bytes, st.device->busy_seconds()});
    }
    return out;
  }

  absl::Status Health() const override {
    for (const Stage& st : stages_) {
      if (st.device->lost()) {
        return absl::UnavailableError(
            absl::StrCat(st.device->label(), " was lost; the model stays unavailable until airlockd restarts"));
      }
    }
    return absl::OkStatus();
  }

  const ExecutorOptions& options() const override { return options_; }
  const Model& model() const override { return model_; }
  KvPool& kv_pool() override { return kv_pool_; }

  absl::Status ForwardBatch(std::span<const BatchEntry> batch) override {
    AIRLOCK_ASSIGN_OR_RETURN(const int64_t total, CheckBatch(batch, kv_pool_, c_.n_vocab, options_.n_batch));
    if (!copy_error_.ok()) return copy_error_;
    if (lose_after_steps_ > 0 && ++steps_ == lose_after_steps_) stages_[0].device->SimulateLossForTesting();
    for (const Stage& st : stages_) {
      if (st.device->lost()) return absl::UnavailableError(absl::StrCat(st.device->label(), " was lost"));
    }
    const int32_t n_embd = c_.n_embd;
    const int32_t bt = options_.kv_block_tokens;
    const WeightMatrix& embd = model_.token_embd();
    const float* freq_factors = model_.rope_factors(options_.n_ctx);

    // The step's rows on the host: embeddings, RoPE tables, where each row's K/V go, block tables.
    std::vector<float> x(static_cast<size_t>(total) * n_embd);
    std::vector<float> rope(static_cast<size_t>(total) * c_.n_rot);
    std::vector<uint32_t> meta(static_cast<size_t>(total) * Ops::kMetaWords);
    std::vector<uint32_t> tables;
    std::vector<uint32_t> out_rows;
    int64_t t = 0;
    for (const BatchEntry& entry : batch) {
      const uint32_t table = static_cast<uint32_t>(tables.size());
      for (int32_t b : entry.seq->blocks()) tables.push_back(static_cast<uint32_t>(b));
      const int64_t len = static_cast<int64_t>(entry.tokens.size());
      for (int64_t i = 0; i < len; ++i, ++t) {
        const int32_t pos = entry.seq->n_past() + static_cast<int32_t>(i);
        kernels::DequantizeRow(embd.type, embd.row(entry.tokens[static_cast<size_t>(i)]), &x[t * n_embd], n_embd);
        cpu::RopeCache(pos, c_.n_rot, c_.rope_freq_base, c_.rope_freq_scale, freq_factors, &rope[t * c_.n_rot],
                       c_.rope_attn_factor);
        uint32_t* m = &meta[static_cast<size_t>(t) * Ops::kMetaWords];
        m[0] = static_cast<uint32_t>(pos);
        m[1] = static_cast<uint32_t>(entry.seq->blocks()[static_cast<size_t>(pos / bt)]);
        m[2] = static_cast<uint32_t>(pos % bt);
        m[3] = table;
        if (entry.logits != nullptr && (entry.all_logits || i == len - 1)) out_rows.push_back(static_cast<uint32_t>(t));
      }
    }
    if (tables.size() * sizeof(uint32_t) > stages_[0].tables->size()) {
      return absl::InternalError("forward: block tables larger than their buffer");  // bounded by n_batch * blocks
    }

    const uint32_t n = static_cast<uint32_t>(total);
    const uint32_t n_out = static_cast<uint32_t>(out_rows.size());
    // Stage after stage; the hidden state goes from one device to the next through the host.
    for (Stage& st : stages_) {
      AIRLOCK_RETURN_IF_ERROR(st.device->Upload(*st.x, x.data(), x.size() * sizeof(float)));
      AIRLOCK_RETURN_IF_ERROR(st.device->Upload(*st.rope, rope.data(), rope.size() * sizeof(float)));
      AIRLOCK_RETURN_IF_ERROR(st.device->Upload(*st.meta, meta.data(), meta.size() * sizeof(uint32_t)));
      if (!tables.empty()) {
        AIRLOCK_RETURN_IF_ERROR(st.device->Upload(*st.tables, tables.data(), tables.size() * sizeof(uint32_t)));
      }
      if (st.last && n_out > 0) {
        AIRLOCK_RETURN_IF_ERROR(st.device->Upload(*st.out_index, out_rows.data(), out_rows.size() * sizeof(uint32_t)));
      }
      std::vector<Dispatch> steps;
      AIRLOCK_RETURN_IF_ERROR(RecordLayers(st, n, steps));
      if (st.last && n_out > 0) {
        const uint32_t e = static_cast<uint32_t>(n_embd);
        AIRLOCK_RETURN_IF_ERROR(Append(steps, st.ops->GatherRows(*st.x, *st.out_index, *st.gathered, n_out, e)));
        AIRLOCK_RETURN_IF_ERROR(Append(steps, st.ops->RmsNorm(*st.gathered, *st.output_norm, *st.xn, n_out, e, c_.rms_eps)));
        AIRLOCK_RETURN_IF_ERROR(Products(st, {&st.output}, *st.xn, {st.logits.get()}, n_out, false, steps));
      }
      AIRLOCK_RETURN_IF_ERROR(st.device->Run(steps));
      if (!st.last) AIRLOCK_RETURN_IF_ERROR(st.device->Download(*st.x, x.data(), x.size() * sizeof(float)));
    }
    if (n_out > 0) {
      std::vector<float> logits(static_cast<size_t>(n_out) * static_cast<size_t>(c_.n_vocab));
      AIRLOCK_RETURN_IF_ERROR(stages_.back().device->Download(*stages_.back().logits, logits.data(),
                                                              logits.size() * sizeof(float)));
      CopyLogitsOut(batch, logits.data(), c_.n_vocab);
    }
    for (const BatchEntry& entry : batch) entry.seq->Commit(entry.tokens);
    return absl::OkStatus();
  }

 private:
  VulkanExecutor(const Model& model, const ExecutorOptions& options)
      : model_(model), c_(model.config()), options_(options),
        kv_pool_(options.kv_pool_tokens / options.kv_block_tokens, options.kv_block_tokens, options.prefix_cache,
                 [this](int32_t src, int32_t dst) { CopyBlock(src, dst); }) {}

  // The dispatches of a stage's layers for a step of n rows (its x, rope, meta and tables filled).
  absl::Status RecordLayers(Stage& st, uint32_t n, std::vector<Dispatch>& steps) {
    auto add = [&steps](absl::StatusOr<Dispatch> d) { return Append(steps, std::move(d)); };
    const Ops& ops = *st.ops;
    const uint32_t q_dim = static_cast<uint32_t>(c_.n_embd_q());
    const uint32_t kv_dim = static_cast<uint32_t>(c_.n_embd_kv());
    const uint32_t e = static_cast<uint32_t>(c_.n_embd);
    const uint32_t ff = static_cast<uint32_t>(c_.n_ff);
    const float kq_scale = 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
    // il: the layer's index in this stage's part of the KV cache.
    for (uint32_t il = 0; il < static_cast<uint32_t>(st.layers.size()); ++il) {
      const DeviceLayer& L = st.layers[il];
      for (const LayerOp op : c_.recipe->layer) {
        switch (op) {
          case LayerOp::kAttnNorm:
            AIRLOCK_RETURN_IF_ERROR(add(ops.RmsNorm(*st.x, *L.attn_norm, *st.xn, n, e, c_.rms_eps)));
            break;
          case LayerOp::kQkvProject:
            AIRLOCK_RETURN_IF_ERROR(
                Products(st, {&L.wq, &L.wk, &L.wv}, *st.xn, {st.q.get(), st.k.get(), st.v.get()}, n, false, steps));
            break;
          case LayerOp::kQkvBias:
            AIRLOCK_RETURN_IF_ERROR(add(ops.AddBias(*st.q, *L.bq, n, q_dim)));
            AIRLOCK_RETURN_IF_ERROR(add(ops.AddBias(*st.k, *L.bk, n, kv_dim)));
            AIRLOCK_RETURN_IF_ERROR(add(ops.AddBias(*st.v, *L.bv, n, kv_dim)));
            break;
          case LayerOp::kQkNorm:
            // Each head's row of head_dim values, in place (each value is read before it is written).
            AIRLOCK_RETURN_IF_ERROR(add(ops.RmsNorm(*st.q, *L.q_norm, *st.q, n * static_cast<uint32_t>(c_.n_head),
                                                    st.kv.head_dim, c_.rms_eps)));
            AIRLOCK_RETURN_IF_ERROR(add(ops.RmsNorm(*st.k, *L.k_norm, *st.k, n * static_cast<uint32_t>(c_.n_head_kv),
                                                    st.kv.head_dim, c_.rms_eps)));
            break;
          case LayerOp::kRope:
            AIRLOCK_RETURN_IF_ERROR(add(ops.Rope(*st.q, *st.rope, n, static_cast<uint32_t>(c_.n_head), st.kv.head_dim,
                                                 static_cast<uint32_t>(c_.n_rot), q_dim, c_.rope_neox)));
            AIRLOCK_RETURN_IF_ERROR(add(ops.Rope(*st.k, *st.rope, n, static_cast<uint32_t>(c_.n_head_kv), st.kv.head_dim,
                                                 static_cast<uint32_t>(c_.n_rot), kv_dim, c_.rope_neox)));
            break;
          case LayerOp::kAttention:
            AIRLOCK_RETURN_IF_ERROR(add(ops.KvStore(*st.k, *st.v, *st.meta, *st.k_cache, *st.v_cache, st.kv, il, n)));
            AIRLOCK_RETURN_IF_ERROR(add(ops.Attention(*st.q, *st.k_cache, *st.v_cache, *st.meta, *st.tables, *st.attn,
                                                      st.kv, il, n, kq_scale)));
            if (st.attn_scratch) {
              // Rows past 4,096 positions (the dispatches skip the others).
              AIRLOCK_ASSIGN_OR_RETURN(std::vector<Dispatch> long_rows,
                                       ops.AttentionLong(*st.q, *st.k_cache, *st.v_cache, *st.meta, *st.tables,
                                                         *st.attn, *st.attn_scratch, st.kv, il, n, kq_scale,
                                                         static_cast<uint32_t>(options_.n_ctx)));
              for (Dispatch& d : long_rows) steps.push_back(std::move(d));
            }
            break;
          case LayerOp::kAttnOutputAdd:
            AIRLOCK_RETURN_IF_ERROR(Products(st, {&L.wo}, *st.attn, {st.x.get()}, n, true, steps));
            break;
          case LayerOp::kFfnNorm:
            AIRLOCK_RETURN_IF_ERROR(add(ops.RmsNorm(*st.x, *L.ffn_norm, *st.xn, n, e, c_.rms_eps)));
            break;
          case LayerOp::kGateUpProject:
            AIRLOCK_RETURN_IF_ERROR(
                Products(st, {&L.w_gate, &L.w_up}, *st.xn, {st.gate.get(), st.up.get()}, n, false, steps));
            break;
          case LayerOp::kSwiGlu:
            AIRLOCK_RETURN_IF_ERROR(add(ops.SwiGlu(*st.gate, *st.up, n * ff)));
            break;
          case LayerOp::kFfnDownAdd:
            AIRLOCK_RETURN_IF_ERROR(Products(st, {&L.w_down}, *st.gate, {st.x.get()}, n, true, steps));
            break;
          case LayerOp::kAttnOutputPostNormAdd:
          case LayerOp::kGeGlu:
          case LayerOp::kFfnDownPostNormAdd:
          case LayerOp::kMoeFfn:
            return absl::InternalError("forward: an op the Vulkan executor refused at creation");
        }
      }
    }
    return absl::OkStatus();
  }

  // y_i (=, or += with accumulate) W_i x for weights sharing one input of n rows: the input is
  // quantised once per activation format the quantised weights among them need (Q8_0, Q8_K).
  absl::Status Products(Stage& st, std::initializer_list<const DeviceMatrix*> ws, const Buffer& x,
                        std::initializer_list<const Buffer*> ys, uint32_t n, bool accumulate,
                        std::vector<Dispatch>& steps) {
    auto add = [&steps](absl::StatusOr<Dispatch> d) { return Append(steps, std::move(d)); };
    const uint32_t cols = (*ws.begin())->cols;
    // The activation formats the input has been quantised to so far (Q8_0, Q8_1, Q8_K).
    std::vector<TensorType> quantized;
    auto y = ys.begin();
    for (const DeviceMatrix* w : ws) {
      switch (w->type) {
        case TensorType::kF32:
          AIRLOCK_RETURN_IF_ERROR(add(st.ops->MatMulF32(*w->data, x, **y, w->rows, w->cols, n, accumulate)));
          break;
        case TensorType::kF16:
          AIRLOCK_RETURN_IF_ERROR(add(st.ops->MatMulF16(*w->data, x, **y, w->rows, w->cols, n, accumulate)));
          break;
        case TensorType::kBF16:
          AIRLOCK_RETURN_IF_ERROR(add(st.ops->MatMulBF16(*w->data, x, **y, w->rows, w->cols, n, accumulate)));
          break;
        case TensorType::kQ4_0:
        case TensorType::kQ4_1:
        case TensorType::kQ5_0:
        case TensorType::kQ5_1:
        case TensorType::kQ8_0:
        case TensorType::kQ4_K:
        case TensorType::kQ5_K:
        case TensorType::kQ6_K: {
          const TensorType act_type = kernels::ActivationType(w->type);
          const Buffer& act = act_type == TensorType::kQ8_0   ? *st.act_q8_0
                              : act_type == TensorType::kQ8_1 ? *st.act_q8_1
                                                              : *st.act_q8_k;
          if (std::find(quantized.begin(), quantized.end(), act_type) == quantized.end()) {
            AIRLOCK_RETURN_IF_ERROR(add(st.ops->QuantizeActivations(w->type, x, act, n, cols)));
            quantized.push_back(act_type);
          }
          AIRLOCK_RETURN_IF_ERROR(
              add(st.ops->MatMulQuantized(w->type, *w->data, act, **y, w->rows, w->cols, n, accumulate)));
          break;
        }
        default:
          return absl::InternalError("forward: a weight type the Vulkan executor refused at creation");
      }
      ++y;
    }
    return absl::OkStatus();
  }

  // Refuses what this backend does not run yet, opens the devices, splits the layers over them,
  // plans each device's memory, then uploads.
  absl::Status Init(const std::vector<std::string>& selectors) {
    if (c_.n_head % c_.n_head_kv != 0) return absl::InvalidArgumentError("n_head is not a multiple of n_head_kv");
    for (const LayerOp op : c_.recipe->layer) {
      if (op == LayerOp::kAttnOutputPostNormAdd || op == LayerOp::kGeGlu || op == LayerOp::kFfnDownPostNormAdd ||
          op == LayerOp::kMoeFfn) {
        return absl::UnimplementedError(absl::StrCat("the Vulkan backend does not run ", c_.arch_name,
                                                     c_.recipe->experts ? " mixture-of-experts" : "",
                                                     " models yet (its ", LayerOpName(op),
                                                     " op); run it on the CPU (models[].device: cpu)"));
      }
    }
    if (c_.embd_scale != 1.0f || c_.attn_softcap != 0.0f || c_.final_softcap != 0.0f || c_.sliding_window_applied) {
      return absl::UnimplementedError(absl::StrCat("the Vulkan backend does not run ", c_.arch_name,
                                                   " models yet (embedding scale, soft-caps or sliding window)"));
    }
    for (const WeightMatrix* w : Matrices(model_)) {
      if (!Supported(w->type)) {
        return absl::UnimplementedError(absl::StrCat(
            "the Vulkan backend multiplies F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights "
            "so far; ", w->name, " is ",
            TensorTypeName(w->type)));
      }
      const int64_t block = Ops::Quantized(w->type) ? Ops::QuantBlock(w->type) : 1;
      if (w->cols % block != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(w->name, ": ", TensorTypeName(w->type), " rows of ", w->cols, " columns"));
      }
    }
    if (selectors.empty()) return absl::InvalidArgumentError("no device to place the model on");
    if (static_cast<size_t>(c_.n_layer) < selectors.size()) {
      return absl::InvalidArgumentError(absl::StrCat("the model has ", c_.n_layer, " layers: too few to place over ",
                                                     selectors.size(), " devices"));
    }
    std::vector<uint64_t> memory, layer_bytes;
    for (const std::string& selector : selectors) {
      Stage st;
      AIRLOCK_ASSIGN_OR_RETURN(st.device, Device::Open(selector));
      AIRLOCK_ASSIGN_OR_RETURN(st.ops, Ops::Create(*st.device));
      memory.push_back(st.device->info().device_local_bytes);
      stages_.push_back(std::move(st));
    }
    for (const LayerWeights& L : model_.layers()) layer_bytes.push_back(LayerBytes(L));
    const std::vector<int32_t> starts = SplitLayers(layer_bytes, memory);
    for (size_t i = 0; i < stages_.size(); ++i) {
      stages_[i].first = starts[i];
      stages_[i].end = starts[i + 1];
      stages_[i].last = i + 1 == stages_.size();
    }
    // Every device's plan first, so that a model that does not fit is refused before any upload.
    for (Stage& st : stages_) AIRLOCK_RETURN_IF_ERROR(Plan(st));
    for (Stage& st : stages_) AIRLOCK_RETURN_IF_ERROR(Upload(st));
    return absl::OkStatus();
  }

  // A stage's part of the KV cache: its layers only, every block of the pool.
  Ops::KvLayout Layout(const Stage& st) const {
    Ops::KvLayout kv;
    kv.n_blocks = static_cast<uint32_t>(kv_pool_.n_blocks());
    kv.n_layer = static_cast<uint32_t>(st.end - st.first);
    kv.block_tokens = static_cast<uint32_t>(options_.kv_block_tokens);
    kv.n_head = static_cast<uint32_t>(c_.n_head);
    kv.n_head_kv = static_cast<uint32_t>(c_.n_head_kv);
    kv.head_dim = static_cast<uint32_t>(c_.head_dim);
    kv.f16 = options_.kv_type == KvCacheType::kF16;
    return kv;
  }

  // Sequences may hold more positions than the one-pass attention shader takes.
  bool LongContext() const { return options_.n_ctx > static_cast<int32_t>(Ops::kMaxAttentionPositions); }

  uint64_t Widest() const {
    return std::max<uint64_t>({static_cast<uint64_t>(c_.n_embd), static_cast<uint64_t>(c_.n_embd_q()),
                               static_cast<uint64_t>(c_.n_ff)});
  }

  // Memory plan of a stage: every buffer within the device's per-buffer limit, all of them within
  // its memory; RESOURCE_EXHAUSTED with the numbers otherwise.
  absl::Status Plan(Stage& st) {
    st.kv = Layout(st);
    const uint64_t nb = static_cast<uint64_t>(options_.n_batch);
    struct Planned {
      std::string what;
      uint64_t bytes;
    };
    std::vector<Planned> plan;
    for (int32_t l = st.first; l < st.end; ++l) {
      const LayerWeights& L = model_.layers()[static_cast<size_t>(l)];
      for (const WeightMatrix* w : LayerMatrices(L)) plan.push_back({w->name, w->bytes()});
    }
    if (st.last) {
      plan.push_back({model_.output().name, model_.output().bytes()});
      plan.push_back({"logits", nb * static_cast<uint64_t>(c_.n_vocab) * 4});
    }
    plan.push_back({"K cache", st.kv.bytes()});
    plan.push_back({"V cache", st.kv.bytes()});
    plan.push_back({"activations", 8 * nb * Widest() * 4});
    if (LongContext()) {
      plan.push_back({"attention scratch", Ops::AttentionScratchBytes(st.kv, static_cast<uint32_t>(nb),
                                                                      static_cast<uint32_t>(options_.n_ctx))});
    }
    uint64_t total = 0;
    const DeviceInfo& info = st.device->info();
    for (const Planned& p : plan) {
      if (p.bytes > info.max_buffer_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(p.what, " needs ", MiB(p.bytes), " in one buffer; ",
                                                         st.device->label(), " allows ", MiB(info.max_buffer_bytes)));
      }
      total += p.bytes;
    }
    if (info.device_local_bytes > 0 && total > info.device_local_bytes) {
      const std::string what = stages_.size() == 1 ? std::string("the model")
                                                   : absl::StrCat("layers ", st.first, "-", st.end - 1,
                                                                  st.last ? " and the output" : "");
      return absl::ResourceExhaustedError(absl::StrCat(what, " need", stages_.size() == 1 ? "s " : " ", MiB(total),
                                                       " on the device; ", st.device->label(), " has ",
                                                       MiB(info.device_local_bytes)));
    }
    return absl::OkStatus();
  }

  // Weights, KV cache and per-step buffers of a stage, on its device.
  absl::Status Upload(Stage& st) {
    Device& device = *st.device;
    const uint64_t nb = static_cast<uint64_t>(options_.n_batch);
    auto upload_matrix = [&](const WeightMatrix& w) -> absl::StatusOr<DeviceMatrix> {
      const size_t bytes = w.bytes();
      DeviceMatrix d;
      AIRLOCK_ASSIGN_OR_RETURN(d.data, device.CreateBuffer(bytes, Memory::kDeviceLocal));
      AIRLOCK_RETURN_IF_ERROR(device.Upload(*d.data, w.data, bytes));
      d.type = w.type;
      d.rows = static_cast<uint32_t>(w.rows);
      d.cols = static_cast<uint32_t>(w.cols);
      return d;
    };
    auto upload_vector = [&](const std::vector<float>& v) -> absl::StatusOr<std::unique_ptr<Buffer>> {
      AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> b, device.CreateBuffer(v.size() * sizeof(float), Memory::kDeviceLocal));
      AIRLOCK_RETURN_IF_ERROR(device.Upload(*b, v.data(), v.size() * sizeof(float)));
      return b;
    };
    const bool has_bias = std::find(c_.recipe->layer.begin(), c_.recipe->layer.end(), LayerOp::kQkvBias) !=
                          c_.recipe->layer.end();
    for (int32_t l = st.first; l < st.end; ++l) {
      const LayerWeights& L = model_.layers()[static_cast<size_t>(l)];
      DeviceLayer d;
      AIRLOCK_ASSIGN_OR_RETURN(d.attn_norm, upload_vector(L.attn_norm));
      AIRLOCK_ASSIGN_OR_RETURN(d.ffn_norm, upload_vector(L.ffn_norm));
      if (!L.q_norm.empty()) {
        AIRLOCK_ASSIGN_OR_RETURN(d.q_norm, upload_vector(L.q_norm));
        AIRLOCK_ASSIGN_OR_RETURN(d.k_norm, upload_vector(L.k_norm));
      }
      if (has_bias) {
        AIRLOCK_ASSIGN_OR_RETURN(d.bq, upload_vector(L.bq));
        AIRLOCK_ASSIGN_OR_RETURN(d.bk, upload_vector(L.bk));
        AIRLOCK_ASSIGN_OR_RETURN(d.bv, upload_vector(L.bv));
      }
      AIRLOCK_ASSIGN_OR_RETURN(d.wq, upload_matrix(L.wq));
      AIRLOCK_ASSIGN_OR_RETURN(d.wk, upload_matrix(L.wk));
      AIRLOCK_ASSIGN_OR_RETURN(d.wv, upload_matrix(L.wv));
      AIRLOCK_ASSIGN_OR_RETURN(d.wo, upload_matrix(L.wo));
      AIRLOCK_ASSIGN_OR_RETURN(d.w_gate, upload_matrix(L.w_gate));
      AIRLOCK_ASSIGN_OR_RETURN(d.w_up, upload_matrix(L.w_up));
      AIRLOCK_ASSIGN_OR_RETURN(d.w_down, upload_matrix(L.w_down));
      st.layers.push_back(std::move(d));
    }
    auto rows_of = [&](uint64_t width, Memory memory) { return device.CreateBuffer(nb * width * 4, memory); };
    if (st.last) {
      AIRLOCK_ASSIGN_OR_RETURN(st.output, upload_matrix(model_.output()));
      AIRLOCK_ASSIGN_OR_RETURN(st.output_norm, upload_vector(model_.output_norm()));
      AIRLOCK_ASSIGN_OR_RETURN(st.gathered, rows_of(c_.n_embd, Memory::kDeviceLocal));
      AIRLOCK_ASSIGN_OR_RETURN(st.out_index, rows_of(1, Memory::kHostVisible));
      AIRLOCK_ASSIGN_OR_RETURN(st.logits, rows_of(c_.n_vocab, Memory::kHostVisible));
    }

    // The KV cache (a block's slots are read only after this sequence's own step wrote them).
    AIRLOCK_ASSIGN_OR_RETURN(st.k_cache, device.CreateBuffer(st.kv.bytes(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.v_cache, device.CreateBuffer(st.kv.bytes(), Memory::kDeviceLocal));

    // Per-step buffers for n_batch rows.
    AIRLOCK_ASSIGN_OR_RETURN(st.x, rows_of(c_.n_embd, Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.xn, rows_of(c_.n_embd, Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.q, rows_of(c_.n_embd_q(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.attn, rows_of(c_.n_embd_q(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.k, rows_of(c_.n_embd_kv(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.v, rows_of(c_.n_embd_kv(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.gate, rows_of(c_.n_ff, Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.up, rows_of(c_.n_ff, Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.rope, rows_of(c_.n_rot, Memory::kHostVisible));
    AIRLOCK_ASSIGN_OR_RETURN(st.meta, rows_of(Ops::kMetaWords, Memory::kHostVisible));
    // Quantised activations (Q8_0, Q8_1 and Q8_K blocks) of the widest input, one row per batch entry.
    const auto quantised_rows = [&](TensorType type) {
      const TensorTypeTraits& t = Traits(type);
      return nb * (Widest() / static_cast<uint64_t>(t.block_size) + 1) * t.block_bytes;
    };
    AIRLOCK_ASSIGN_OR_RETURN(st.act_q8_0, device.CreateBuffer(quantised_rows(TensorType::kQ8_0), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.act_q8_1, device.CreateBuffer(quantised_rows(TensorType::kQ8_1), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(st.act_q8_k, device.CreateBuffer(quantised_rows(TensorType::kQ8_K), Memory::kDeviceLocal));
    // Every entry has at least one token, so a step has at most n_batch block tables.
    const uint64_t blocks_per_seq = (static_cast<uint64_t>(options_.n_ctx) + st.kv.block_tokens - 1) / st.kv.block_tokens;
    AIRLOCK_ASSIGN_OR_RETURN(st.tables, device.CreateBuffer(nb * blocks_per_seq * 4, Memory::kHostVisible));
    if (LongContext()) {
      AIRLOCK_ASSIGN_OR_RETURN(st.attn_scratch,
                               device.CreateBuffer(Ops::AttentionScratchBytes(st.kv, static_cast<uint32_t>(nb),
                                                                              static_cast<uint32_t>(options_.n_ctx)),
                                                   Memory::kDeviceLocal));
    }
    return absl::OkStatus();
  }

  // Copy-on-write of a shared block (KvPool): every layer's K and V of block src into dst, on
  // every device.
  void CopyBlock(int32_t src, int32_t dst) {
    for (Stage& st : stages_) {
      const size_t block_bytes = static_cast<size_t>(st.kv.bytes() / st.kv.n_blocks);
      for (Buffer* cache : {st.k_cache.get(), st.v_cache.get()}) {
        absl::Status s = st.device->Copy(*cache, static_cast<size_t>(src) * block_bytes, *cache,
                                         static_cast<size_t>(dst) * block_bytes, block_bytes);
        if (!s.ok() && copy_error_.ok()) copy_error_ = s;  // reported by the next ForwardBatch
      }
    }
  }

  const Model& model_;
  const ModelConfig& c_;
  ExecutorOptions options_;
  KvPool kv_pool_;
  std::vector<Stage> stages_;
  absl::Status copy_error_;
  int64_t lose_after_steps_ = 0;
  int64_t steps_ = 0;
};

class VulkanBackend : public Backend {
 public:
  explicit VulkanBackend(std::vector<std::string> selectors) : selectors_(std::move(selectors)) {}
  // The devices' labels once an executor has opened them ("vulkan:0 (name)"), else the selectors.
  std::string name() const override { return label_.empty() ? absl::StrJoin(selectors_, " + ") : label_; }

  absl::StatusOr<uint64_t> DefaultKvPoolBytes(const Model& model) const override {
    AIRLOCK_ASSIGN_OR_RETURN(const std::vector<vulkan::DeviceInfo> devices, vulkan::ListDevices());
    std::vector<const vulkan::DeviceInfo*> infos;
    std::vector<uint64_t> memory, layer_bytes;
    for (const std::string& selector : selectors_) {
      AIRLOCK_ASSIGN_OR_RETURN(const int index, vulkan::ResolveDevice(selector, devices));
      infos.push_back(&devices[static_cast<size_t>(index)]);
      memory.push_back(infos.back()->device_local_bytes);
    }
    for (const LayerWeights& L : model.layers()) layer_bytes.push_back(LayerBytes(L));
    if (layer_bytes.size() < infos.size()) return uint64_t{0};  // CreateExecutor says why
    const std::vector<int32_t> starts = SplitLayers(layer_bytes, memory);
    // Each device holds its layers' share of every position; the pool is as large as the device
    // with the least room for its share allows.
    const double n_layer = static_cast<double>(layer_bytes.size());
    double pool = 0;
    for (size_t i = 0; i < infos.size(); ++i) {
      uint64_t weights = 0;
      for (int32_t l = starts[i]; l < starts[i + 1]; ++l) weights += layer_bytes[static_cast<size_t>(l)];
      if (i + 1 == infos.size()) weights += model.output().bytes();
      // Nothing left beside the weights: CreateExecutor's memory plan says so with the numbers.
      const uint64_t beside = infos[i]->device_local_bytes > weights ? infos[i]->device_local_bytes - weights : 0;
      // K and V are one buffer each.
      const double share = static_cast<double>(starts[i + 1] - starts[i]) / n_layer;
      const double here = static_cast<double>(std::min(beside / 2, 2 * infos[i]->max_buffer_bytes)) / share;
      pool = i == 0 ? here : std::min(pool, here);
    }
    return static_cast<uint64_t>(pool);
  }

  absl::StatusOr<std::unique_ptr<ModelExecutor>> CreateExecutor(const Model& model,
                                                                const ExecutorOptions& options) override {
    AIRLOCK_ASSIGN_OR_RETURN(const ExecutorOptions o, NormalizeExecutorOptions(model.config(), options));
    if (o.kv_pool_tokens > (int64_t{1} << 24)) {
      return absl::InvalidArgumentError(absl::StrCat("a KV pool of ", o.kv_pool_tokens, " tokens is too large"));
    }
    return VulkanExecutor::Create(model, o, selectors_, o.test_device_lost_at_step, &label_);
  }

 private:
  std::vector<std::string> selectors_;
  std::string label_;
};

}  // namespace

std::unique_ptr<Backend> CreateVulkanBackend(std::string_view selector) {
  return std::make_unique<VulkanBackend>(std::vector<std::string>{std::string(selector)});
}

std::unique_ptr<Backend> CreateVulkanLayersBackend(std::vector<std::string> selectors) {
  return std::make_unique<VulkanBackend>(std::move(selectors));
}

std::vector<int32_t> SplitLayers(std::span<const uint64_t> layer_bytes, std::span<const uint64_t> device_memory) {
  const size_t n_dev = device_memory.size();
  const size_t n_layer = layer_bytes.size();
  std::vector<int32_t> starts = {0};
  if (n_dev == 0) return starts;
  // Shares by memory; equal shares when any device's memory is unknown.
  const bool known = std::all_of(device_memory.begin(), device_memory.end(), [](uint64_t m) { return m > 0; });
  double all_memory = 0, all_bytes = 0;
  for (size_t d = 0; d < n_dev; ++d) all_memory += known ? static_cast<double>(device_memory[d]) : 1.0;
  for (uint64_t b : layer_bytes) all_bytes += static_cast<double>(b);
  double memory_so_far = 0, bytes_so_far = 0;
  size_t next = 0;
  for (size_t d = 0; d + 1 < n_dev; ++d) {
    memory_so_far += known ? static_cast<double>(device_memory[d]) : 1.0;
    const double target = all_bytes * memory_so_far / all_memory;
    // At least one layer here, and one left for each later device.
    const size_t lo = next + 1;
    const size_t hi = n_layer >= n_dev - d - 1 ? n_layer - (n_dev - d - 1) : lo;
    size_t end = std::min(lo, n_layer);
    bytes_so_far += end > next ? static_cast<double>(layer_bytes[next]) : 0;
    // Take the next layer while that leaves the running total nearer its target.
    while (end < hi && bytes_so_far + static_cast<double>(layer_bytes[end]) / 2 <= target) {
      bytes_so_far += static_cast<double>(layer_bytes[end]);
      ++end;
    }
    starts.push_back(static_cast<int32_t>(end));
    next = end;
  }
  starts.push_back(static_cast<int32_t>(n_layer));
  return starts;
}

}  // namespace airlock::inference

// The Vulkan executor: weights and the paged KV cache in device memory, one submission per step
// (vulkan_backend.h).
#include "inference/backend/vulkan/vulkan_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
  DeviceMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
};

// Appends an op's dispatch to a step, or passes on why the op refused its shapes.
absl::Status Append(std::vector<Dispatch>& steps, absl::StatusOr<Dispatch> dispatch) {
  if (!dispatch.ok()) return dispatch.status();
  steps.push_back(*std::move(dispatch));
  return absl::OkStatus();
}

// Every matrix the executor multiplies (and uploads).
std::vector<const WeightMatrix*> Matrices(const Model& model) {
  std::vector<const WeightMatrix*> matrices = {&model.output()};
  for (const LayerWeights& L : model.layers()) {
    for (const WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) matrices.push_back(w);
  }
  return matrices;
}

bool Supported(TensorType t) { return t == TensorType::kF32 || t == TensorType::kF16 || Ops::Quantized(t); }

class VulkanExecutor : public ModelExecutor {
 public:
  // `label` receives the device's label ("vulkan:0 (name)").
  // `lose_after_steps` > 0 injects a device loss at that step (tests of the failure path).
  static absl::StatusOr<std::unique_ptr<ModelExecutor>> Create(const Model& model, const ExecutorOptions& options,
                                                               std::string_view selector, int64_t lose_after_steps,
                                                               std::string* label) {
    std::unique_ptr<VulkanExecutor> e(new VulkanExecutor(model, options));
    AIRLOCK_RETURN_IF_ERROR(e->Init(selector));
    e->lose_after_steps_ = lose_after_steps;
    *label = e->device_->label();
    if (lose_after_steps > 0) absl::StrAppend(label, " [test fault: lost at step ", lose_after_steps, "]");
    return std::unique_ptr<ModelExecutor>(std::move(e));
  }

  std::optional<DeviceUsage> device_usage() const override {
    return DeviceUsage{device_->label(), device_->device_local_bytes_used(), device_->info().device_local_bytes,
                       device_->busy_seconds()};
  }

  absl::Status Health() const override {
    if (!device_->lost()) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat(device_->label(), " was lost; the model stays unavailable until airlockd restarts"));
  }

  const ExecutorOptions& options() const override { return options_; }
  const Model& model() const override { return model_; }
  KvPool& kv_pool() override { return kv_pool_; }

  absl::Status ForwardBatch(std::span<const BatchEntry> batch) override {
    AIRLOCK_ASSIGN_OR_RETURN(const int64_t total, CheckBatch(batch, kv_pool_, c_.n_vocab, options_.n_batch));
    if (!copy_error_.ok()) return copy_error_;
    if (lose_after_steps_ > 0 && ++steps_ == lose_after_steps_) device_->SimulateLossForTesting();
    if (device_->lost()) return absl::UnavailableError(absl::StrCat(device_->label(), " was lost"));
    const int32_t n_embd = c_.n_embd;
    const int32_t bt = options_.kv_block_tokens;
    const WeightMatrix& embd = model_.token_embd();
    const float* freq_factors = model_.rope_freqs().empty() ? nullptr : model_.rope_freqs().data();

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
        cpu::RopeCache(pos, c_.n_rot, c_.rope_freq_base, c_.rope_freq_scale, freq_factors, &rope[t * c_.n_rot]);
        uint32_t* m = &meta[static_cast<size_t>(t) * Ops::kMetaWords];
        m[0] = static_cast<uint32_t>(pos);
        m[1] = static_cast<uint32_t>(entry.seq->blocks()[static_cast<size_t>(pos / bt)]);
        m[2] = static_cast<uint32_t>(pos % bt);
        m[3] = table;
        if (entry.logits != nullptr && (entry.all_logits || i == len - 1)) out_rows.push_back(static_cast<uint32_t>(t));
      }
    }
    if (tables.size() * sizeof(uint32_t) > tables_->size()) {
      return absl::InternalError("forward: block tables larger than their buffer");  // bounded by n_batch * blocks
    }
    AIRLOCK_RETURN_IF_ERROR(device_->Upload(*x_, x.data(), x.size() * sizeof(float)));
    AIRLOCK_RETURN_IF_ERROR(device_->Upload(*rope_, rope.data(), rope.size() * sizeof(float)));
    AIRLOCK_RETURN_IF_ERROR(device_->Upload(*meta_, meta.data(), meta.size() * sizeof(uint32_t)));
    if (!tables.empty()) AIRLOCK_RETURN_IF_ERROR(device_->Upload(*tables_, tables.data(), tables.size() * sizeof(uint32_t)));
    if (!out_rows.empty()) {
      AIRLOCK_RETURN_IF_ERROR(device_->Upload(*out_index_, out_rows.data(), out_rows.size() * sizeof(uint32_t)));
    }

    const uint32_t n = static_cast<uint32_t>(total);
    const uint32_t q_dim = static_cast<uint32_t>(c_.n_embd_q());
    const uint32_t kv_dim = static_cast<uint32_t>(c_.n_embd_kv());
    const uint32_t e = static_cast<uint32_t>(n_embd);
    const uint32_t ff = static_cast<uint32_t>(c_.n_ff);
    const float kq_scale = 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
    std::vector<Dispatch> steps;
    auto add = [&steps](absl::StatusOr<Dispatch> d) { return Append(steps, std::move(d)); };
    for (uint32_t il = 0; il < static_cast<uint32_t>(c_.n_layer); ++il) {
      const DeviceLayer& L = layers_[il];
      for (const LayerOp op : c_.recipe->layer) {
        switch (op) {
          case LayerOp::kAttnNorm:
            AIRLOCK_RETURN_IF_ERROR(add(ops_->RmsNorm(*x_, *L.attn_norm, *xn_, n, e, c_.rms_eps)));
            break;
          case LayerOp::kQkvProject:
            AIRLOCK_RETURN_IF_ERROR(Products({&L.wq, &L.wk, &L.wv}, *xn_, {q_.get(), k_.get(), v_.get()}, n, false, steps));
            break;
          case LayerOp::kQkvBias:
            AIRLOCK_RETURN_IF_ERROR(add(ops_->AddBias(*q_, *L.bq, n, q_dim)));
            AIRLOCK_RETURN_IF_ERROR(add(ops_->AddBias(*k_, *L.bk, n, kv_dim)));
            AIRLOCK_RETURN_IF_ERROR(add(ops_->AddBias(*v_, *L.bv, n, kv_dim)));
            break;
          case LayerOp::kRope:
            AIRLOCK_RETURN_IF_ERROR(add(ops_->Rope(*q_, *rope_, n, static_cast<uint32_t>(c_.n_head), kv_.head_dim,
                                                   static_cast<uint32_t>(c_.n_rot), q_dim, c_.rope_neox)));
            AIRLOCK_RETURN_IF_ERROR(add(ops_->Rope(*k_, *rope_, n, static_cast<uint32_t>(c_.n_head_kv), kv_.head_dim,
                                                   static_cast<uint32_t>(c_.n_rot), kv_dim, c_.rope_neox)));
            break;
          case LayerOp::kAttention:
            AIRLOCK_RETURN_IF_ERROR(add(ops_->KvStore(*k_, *v_, *meta_, *k_cache_, *v_cache_, kv_, il, n)));
            AIRLOCK_RETURN_IF_ERROR(
                add(ops_->Attention(*q_, *k_cache_, *v_cache_, *meta_, *tables_, *attn_, kv_, il, n, kq_scale)));
            break;
          case LayerOp::kAttnOutputAdd:
            AIRLOCK_RETURN_IF_ERROR(Products({&L.wo}, *attn_, {x_.get()}, n, true, steps));
            break;
          case LayerOp::kFfnNorm:
            AIRLOCK_RETURN_IF_ERROR(add(ops_->RmsNorm(*x_, *L.ffn_norm, *xn_, n, e, c_.rms_eps)));
            break;
          case LayerOp::kGateUpProject:
            AIRLOCK_RETURN_IF_ERROR(Products({&L.w_gate, &L.w_up}, *xn_, {gate_.get(), up_.get()}, n, false, steps));
            break;
          case LayerOp::kSwiGlu:
            AIRLOCK_RETURN_IF_ERROR(add(ops_->SwiGlu(*gate_, *up_, n * ff)));
            break;
          case LayerOp::kFfnDownAdd:
            AIRLOCK_RETURN_IF_ERROR(Products({&L.w_down}, *gate_, {x_.get()}, n, true, steps));
            break;
        }
      }
    }
    const uint32_t n_out = static_cast<uint32_t>(out_rows.size());
    const size_t n_vocab = static_cast<size_t>(c_.n_vocab);
    if (n_out > 0) {
      AIRLOCK_RETURN_IF_ERROR(add(ops_->GatherRows(*x_, *out_index_, *gathered_, n_out, e)));
      AIRLOCK_RETURN_IF_ERROR(add(ops_->RmsNorm(*gathered_, *output_norm_, *xn_, n_out, e, c_.rms_eps)));
      AIRLOCK_RETURN_IF_ERROR(Products({&output_}, *xn_, {logits_.get()}, n_out, false, steps));
    }
    AIRLOCK_RETURN_IF_ERROR(device_->Run(steps));
    if (n_out > 0) {
      std::vector<float> logits(static_cast<size_t>(n_out) * n_vocab);
      AIRLOCK_RETURN_IF_ERROR(device_->Download(*logits_, logits.data(), logits.size() * sizeof(float)));
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

  // y_i (=, or += with accumulate) W_i x for weights sharing one input of n rows: the input is
  // quantised once per activation format the quantised weights among them need (Q8_0, Q8_K).
  absl::Status Products(std::initializer_list<const DeviceMatrix*> ws, const Buffer& x,
                        std::initializer_list<const Buffer*> ys, uint32_t n, bool accumulate,
                        std::vector<Dispatch>& steps) {
    auto add = [&steps](absl::StatusOr<Dispatch> d) { return Append(steps, std::move(d)); };
    const uint32_t cols = (*ws.begin())->cols;
    bool quantized_q8_0 = false, quantized_q8_k = false;
    auto y = ys.begin();
    for (const DeviceMatrix* w : ws) {
      switch (w->type) {
        case TensorType::kF32:
          AIRLOCK_RETURN_IF_ERROR(add(ops_->MatMulF32(*w->data, x, **y, w->rows, w->cols, n, accumulate)));
          break;
        case TensorType::kF16:
          AIRLOCK_RETURN_IF_ERROR(add(ops_->MatMulF16(*w->data, x, **y, w->rows, w->cols, n, accumulate)));
          break;
        case TensorType::kQ4_0:
        case TensorType::kQ8_0:
        case TensorType::kQ4_K:
        case TensorType::kQ6_K: {
          const bool q8_0 = kernels::ActivationType(w->type) == TensorType::kQ8_0;
          bool& done = q8_0 ? quantized_q8_0 : quantized_q8_k;
          const Buffer& act = q8_0 ? *act_q8_0_ : *act_q8_k_;
          if (!done) {
            AIRLOCK_RETURN_IF_ERROR(add(ops_->QuantizeActivations(w->type, x, act, n, cols)));
            done = true;
          }
          AIRLOCK_RETURN_IF_ERROR(
              add(ops_->MatMulQuantized(w->type, *w->data, act, **y, w->rows, w->cols, n, accumulate)));
          break;
        }
        default:
          return absl::InternalError("forward: a weight type the Vulkan executor refused at creation");
      }
      ++y;
    }
    return absl::OkStatus();
  }

  // Refuses what this backend does not run yet, plans the device memory, then uploads.
  absl::Status Init(std::string_view selector) {
    if (options_.n_ctx > static_cast<int32_t>(Ops::kMaxAttentionPositions)) {
      return absl::UnimplementedError(absl::StrCat("the Vulkan backend attends over at most ", Ops::kMaxAttentionPositions,
                                                   " positions so far; context ", options_.n_ctx, " asked"));
    }
    if (c_.n_head % c_.n_head_kv != 0) return absl::InvalidArgumentError("n_head is not a multiple of n_head_kv");
    const std::vector<const WeightMatrix*> matrices = Matrices(model_);
    for (const WeightMatrix* w : matrices) {
      if (!Supported(w->type)) {
        return absl::UnimplementedError(absl::StrCat(
            "the Vulkan backend multiplies F32, F16, Q4_0, Q8_0, Q4_K and Q6_K weights so far; ", w->name, " is ",
            TensorTypeName(w->type)));
      }
      const int64_t block = Ops::Quantized(w->type) ? Ops::QuantBlock(w->type) : 1;
      if (w->cols % block != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(w->name, ": ", TensorTypeName(w->type), " rows of ", w->cols, " columns"));
      }
    }

    AIRLOCK_ASSIGN_OR_RETURN(device_, Device::Open(selector));
    AIRLOCK_ASSIGN_OR_RETURN(ops_, Ops::Create(*device_));
    kv_.n_blocks = static_cast<uint32_t>(kv_pool_.n_blocks());
    kv_.n_layer = static_cast<uint32_t>(c_.n_layer);
    kv_.block_tokens = static_cast<uint32_t>(options_.kv_block_tokens);
    kv_.n_head = static_cast<uint32_t>(c_.n_head);
    kv_.n_head_kv = static_cast<uint32_t>(c_.n_head_kv);
    kv_.head_dim = static_cast<uint32_t>(c_.head_dim);
    kv_.f16 = options_.kv_type == KvCacheType::kF16;

    // Memory plan: every buffer within the device's per-buffer limit, all of them within its memory.
    const uint64_t nb = static_cast<uint64_t>(options_.n_batch);
    const uint64_t widest = std::max<uint64_t>({static_cast<uint64_t>(c_.n_embd), static_cast<uint64_t>(c_.n_embd_q()),
                                                static_cast<uint64_t>(c_.n_ff)});
    struct Planned {
      std::string what;
      uint64_t bytes;
    };
    std::vector<Planned> plan;
    for (const WeightMatrix* w : matrices) plan.push_back({w->name, static_cast<uint64_t>(w->rows) * w->row_bytes});
    plan.push_back({"K cache", kv_.bytes()});
    plan.push_back({"V cache", kv_.bytes()});
    plan.push_back({"logits", nb * static_cast<uint64_t>(c_.n_vocab) * 4});
    plan.push_back({"activations", 8 * nb * widest * 4});
    uint64_t total = 0;
    for (const Planned& p : plan) {
      if (p.bytes > device_->info().max_buffer_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(p.what, " needs ", MiB(p.bytes), " in one buffer; ",
                                                         device_->label(), " allows ", MiB(device_->info().max_buffer_bytes)));
      }
      total += p.bytes;
    }
    if (device_->info().device_local_bytes > 0 && total > device_->info().device_local_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("the model needs ", MiB(total), " on the device; ", device_->label(),
                                                       " has ", MiB(device_->info().device_local_bytes)));
    }

    // Weights, in the file's layout.
    auto upload_matrix = [&](const WeightMatrix& w) -> absl::StatusOr<DeviceMatrix> {
      const size_t bytes = static_cast<size_t>(w.rows) * w.row_bytes;
      DeviceMatrix d;
      AIRLOCK_ASSIGN_OR_RETURN(d.data, device_->CreateBuffer(bytes, Memory::kDeviceLocal));
      AIRLOCK_RETURN_IF_ERROR(device_->Upload(*d.data, w.data, bytes));
      d.type = w.type;
      d.rows = static_cast<uint32_t>(w.rows);
      d.cols = static_cast<uint32_t>(w.cols);
      return d;
    };
    auto upload_vector = [&](const std::vector<float>& v) -> absl::StatusOr<std::unique_ptr<Buffer>> {
      AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> b, device_->CreateBuffer(v.size() * sizeof(float), Memory::kDeviceLocal));
      AIRLOCK_RETURN_IF_ERROR(device_->Upload(*b, v.data(), v.size() * sizeof(float)));
      return b;
    };
    const bool has_bias = std::find(c_.recipe->layer.begin(), c_.recipe->layer.end(), LayerOp::kQkvBias) !=
                          c_.recipe->layer.end();
    for (const LayerWeights& L : model_.layers()) {
      DeviceLayer d;
      AIRLOCK_ASSIGN_OR_RETURN(d.attn_norm, upload_vector(L.attn_norm));
      AIRLOCK_ASSIGN_OR_RETURN(d.ffn_norm, upload_vector(L.ffn_norm));
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
      layers_.push_back(std::move(d));
    }
    AIRLOCK_ASSIGN_OR_RETURN(output_, upload_matrix(model_.output()));
    AIRLOCK_ASSIGN_OR_RETURN(output_norm_, upload_vector(model_.output_norm()));

    // The KV cache (a block's slots are read only after this sequence's own step wrote them).
    AIRLOCK_ASSIGN_OR_RETURN(k_cache_, device_->CreateBuffer(kv_.bytes(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(v_cache_, device_->CreateBuffer(kv_.bytes(), Memory::kDeviceLocal));

    // Per-step buffers for n_batch rows.
    auto rows_of = [&](uint64_t width, Memory memory) { return device_->CreateBuffer(nb * width * 4, memory); };
    AIRLOCK_ASSIGN_OR_RETURN(x_, rows_of(c_.n_embd, Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(xn_, rows_of(c_.n_embd, Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(gathered_, rows_of(c_.n_embd, Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(q_, rows_of(c_.n_embd_q(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(attn_, rows_of(c_.n_embd_q(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(k_, rows_of(c_.n_embd_kv(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(v_, rows_of(c_.n_embd_kv(), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(gate_, rows_of(c_.n_ff, Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(up_, rows_of(c_.n_ff, Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(rope_, rows_of(c_.n_rot, Memory::kHostVisible));
    AIRLOCK_ASSIGN_OR_RETURN(meta_, rows_of(Ops::kMetaWords, Memory::kHostVisible));
    AIRLOCK_ASSIGN_OR_RETURN(out_index_, rows_of(1, Memory::kHostVisible));
    AIRLOCK_ASSIGN_OR_RETURN(logits_, rows_of(c_.n_vocab, Memory::kHostVisible));
    // Quantised activations (Q8_0 and Q8_K blocks) of the widest input, one row per batch entry.
    const auto quantised_rows = [&](TensorType type) {
      const TensorTypeTraits& t = Traits(type);
      return nb * (widest / static_cast<uint64_t>(t.block_size) + 1) * t.block_bytes;
    };
    AIRLOCK_ASSIGN_OR_RETURN(act_q8_0_, device_->CreateBuffer(quantised_rows(TensorType::kQ8_0), Memory::kDeviceLocal));
    AIRLOCK_ASSIGN_OR_RETURN(act_q8_k_, device_->CreateBuffer(quantised_rows(TensorType::kQ8_K), Memory::kDeviceLocal));
    // Every entry has at least one token, so a step has at most n_batch block tables.
    const uint64_t blocks_per_seq = (static_cast<uint64_t>(options_.n_ctx) + kv_.block_tokens - 1) / kv_.block_tokens;
    AIRLOCK_ASSIGN_OR_RETURN(tables_, device_->CreateBuffer(nb * blocks_per_seq * 4, Memory::kHostVisible));
    return absl::OkStatus();
  }

  // Copy-on-write of a shared block (KvPool): every layer's K and V of block src into dst.
  void CopyBlock(int32_t src, int32_t dst) {
    const size_t block_bytes = static_cast<size_t>(kv_.bytes() / kv_.n_blocks);
    for (Buffer* cache : {k_cache_.get(), v_cache_.get()}) {
      absl::Status s = device_->Copy(*cache, static_cast<size_t>(src) * block_bytes, *cache,
                                     static_cast<size_t>(dst) * block_bytes, block_bytes);
      if (!s.ok() && copy_error_.ok()) copy_error_ = s;  // reported by the next ForwardBatch
    }
  }

  const Model& model_;
  const ModelConfig& c_;
  ExecutorOptions options_;
  KvPool kv_pool_;
  std::unique_ptr<Device> device_;
  std::unique_ptr<Ops> ops_;
  Ops::KvLayout kv_;
  std::vector<DeviceLayer> layers_;
  DeviceMatrix output_;
  std::unique_ptr<Buffer> output_norm_, k_cache_, v_cache_;
  std::unique_ptr<Buffer> x_, xn_, gathered_, q_, attn_, k_, v_, gate_, up_, rope_, meta_, out_index_, logits_, tables_,
      act_q8_0_, act_q8_k_;
  absl::Status copy_error_;
  int64_t lose_after_steps_ = 0;
  int64_t steps_ = 0;
};

class VulkanBackend : public Backend {
 public:
  explicit VulkanBackend(std::string_view selector) : selector_(selector) {}
  // The device's label once an executor has opened it ("vulkan:0 (name)"), else the selector.
  std::string name() const override { return label_.empty() ? selector_ : label_; }

  absl::StatusOr<uint64_t> DefaultKvPoolBytes(const Model& model) const override {
    AIRLOCK_ASSIGN_OR_RETURN(const std::vector<vulkan::DeviceInfo> devices, vulkan::ListDevices());
    AIRLOCK_ASSIGN_OR_RETURN(const int index, vulkan::ResolveDevice(selector_, devices));
    const vulkan::DeviceInfo& info = devices[static_cast<size_t>(index)];
    uint64_t weights = 0;
    for (const WeightMatrix* w : Matrices(model)) weights += static_cast<uint64_t>(w->rows) * w->row_bytes;
    // Nothing left beside the weights: CreateExecutor's memory plan says so with the numbers.
    const uint64_t beside = info.device_local_bytes > weights ? info.device_local_bytes - weights : 0;
    // K and V are one buffer each.
    return std::min(beside / 2, 2 * info.max_buffer_bytes);
  }

  absl::StatusOr<std::unique_ptr<ModelExecutor>> CreateExecutor(const Model& model,
                                                                const ExecutorOptions& options) override {
    AIRLOCK_ASSIGN_OR_RETURN(const ExecutorOptions o, NormalizeExecutorOptions(model.config(), options));
    if (o.kv_pool_tokens > (int64_t{1} << 24)) {
      return absl::InvalidArgumentError(absl::StrCat("a KV pool of ", o.kv_pool_tokens, " tokens is too large"));
    }
    // Fault injection for the end-to-end tests of a lost device: the variable's value is the step
    // at which the device counts as lost. Named in the device label, so the start-up log shows it.
    int64_t lose_after_steps = 0;
    if (const char* v = std::getenv("AIRLOCK_TEST_VULKAN_LOST_AT_STEP"); v != nullptr) {
      if (!absl::SimpleAtoi(v, &lose_after_steps) || lose_after_steps <= 0) {
        return absl::InvalidArgumentError("AIRLOCK_TEST_VULKAN_LOST_AT_STEP must be a positive step number");
      }
    }
    return VulkanExecutor::Create(model, o, selector_, lose_after_steps, &label_);
  }

 private:
  std::string selector_;
  std::string label_;
};

}  // namespace

std::unique_ptr<Backend> CreateVulkanBackend(std::string_view selector) {
  return std::make_unique<VulkanBackend>(selector);
}

}  // namespace airlock::inference

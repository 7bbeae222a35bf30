// The CPU backend: the forward pass of an architecture's recipe (inference/model/architecture.h)
// over a paged KV cache, for a batch of sequences at once, multi-threaded with a fork/join pool, matrix products through the runtime-dispatched
// kernels in inference/kernels.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/backend/backend.h"
#include "inference/backend/cpu/ops.h"
#include "inference/backend/cpu/thread_pool.h"
#include "inference/base/fp16.h"
#include "inference/base/free_deleter.h"
#include "inference/base/status.h"
#include "inference/kernels/quants.h"
#include "inference/model/architecture.h"

namespace airlock::inference {
namespace {

class CpuExecutor : public ModelExecutor {
 public:
  CpuExecutor(const Model& model, const ExecutorOptions& options)
      : model_(model), c_(model.config()), options_(options), pool_(options.n_threads),
        kv_pool_(options.kv_pool_tokens / options.kv_block_tokens, options.kv_block_tokens, options.prefix_cache,
                 [this](int32_t src, int32_t dst) { CopyBlock(src, dst); }) {
    const size_t nb = static_cast<size_t>(options_.n_batch);
    // K and V of every block, [block][layer][slot][kv_dim]. calloc: the pages are committed by the
    // first write, so memory follows the blocks in use, not the pool's size.
    layer_stride_ = static_cast<size_t>(options_.kv_block_tokens) * c_.n_embd_kv();
    block_stride_ = layer_stride_ * c_.n_layer;
    const size_t elem = options_.kv_type == KvCacheType::kF16 ? sizeof(uint16_t) : sizeof(float);
    const size_t n = block_stride_ * static_cast<size_t>(kv_pool_.n_blocks());
    k_cache_.reset(std::calloc(n, elem));
    v_cache_.reset(std::calloc(n, elem));
    gathered_.resize(nb * c_.n_embd);
    row_pos_.resize(nb);
    row_entry_.resize(nb);
    row_token_.resize(nb);
    x_.resize(nb * c_.n_embd);
    xn_.resize(nb * c_.n_embd);
    q_.resize(nb * c_.n_embd_q());
    k_.resize(nb * c_.n_embd_kv());
    v_.resize(nb * c_.n_embd_kv());
    attn_.resize(nb * c_.n_embd_q());
    const int64_t ff = std::max({c_.n_ff, c_.n_ff_expert, c_.n_ff_shared});
    gate_.resize(nb * ff);
    up_.resize(nb * ff);
    if (c_.n_expert > 0) {
      moe_probs_.resize(nb * c_.n_expert);
      moe_selected_.resize(nb * c_.n_expert_used);
      moe_weights_.resize(nb * c_.n_expert_used);
      moe_slots_.resize(nb);
      moe_x_.resize(nb * c_.n_embd);
      moe_y_.resize(nb * c_.n_embd);
      moe_out_.resize(nb * c_.n_expert_used * c_.n_embd);
      moe_shared_gate_.resize(nb);
    }
    rope_.resize(nb * c_.n_rot);
    residual_.resize(nb * c_.n_embd);
    // Activation rows are at most 4 bytes per element (F32) for the widest input (n_ff).
    const int64_t widest = std::max<int64_t>({c_.n_embd, c_.n_embd_q(), ff});
    act_.resize(nb * static_cast<size_t>(widest) * 4 + 64);
    // Per thread, for the query heads of one KV head: scores over the context, outputs, F16 queries.
    const size_t group = static_cast<size_t>(c_.n_head / c_.n_head_kv);
    const size_t per_thread = group * (static_cast<size_t>(options_.n_ctx) + 8 + 2 * c_.head_dim + 8) + 16;
    scratch_.resize(per_thread * pool_.size());
    scratch_stride_ = per_thread;
  }

  bool allocated() const { return k_cache_ != nullptr && v_cache_ != nullptr; }
  const ExecutorOptions& options() const override { return options_; }
  const Model& model() const override { return model_; }
  KvPool& kv_pool() override { return kv_pool_; }

  absl::Status ForwardBatch(std::span<const BatchEntry> batch) override {
    AIRLOCK_ASSIGN_OR_RETURN(const int64_t total, CheckBatch(batch, kv_pool_, c_.n_vocab, options_.n_batch));
    int64_t r = 0;
    for (size_t e = 0; e < batch.size(); ++e) {
      for (size_t i = 0; i < batch[e].tokens.size(); ++i, ++r) {
        row_entry_[r] = static_cast<int32_t>(e);
        row_pos_[r] = batch[e].seq->n_past() + static_cast<int32_t>(i);
        row_token_[r] = batch[e].tokens[i];
      }
    }
    ForwardRows(batch, total);
    for (const BatchEntry& entry : batch) entry.seq->Commit(entry.tokens);
    return absl::OkStatus();
  }

 private:
  // Quantizes n rows of `x` (stride `x_stride` floats) into the activation format of `type`.
  // Returns the activation row size in bytes.
  size_t PrepareActivations(TensorType weight_type, const float* x, int64_t x_stride, int64_t n,
                            int64_t cols) {
    const TensorType act = kernels::ActivationType(weight_type);
    const size_t row_bytes = *RowBytes(act, cols);
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        kernels::QuantizeActivationRow(act, x + t * x_stride, act_.data() + t * row_bytes, cols);
      }
    });
    return row_bytes;
  }

  // Rows are split between threads in multiples of this many (keeps each thread's output rows in
  // whole cache lines and gives the kernels full tiles).
  static constexpr int64_t kRowGrain = 16;
  // Pieces of a matrix product per thread, taken dynamically: enough to even out threads that run
  // at different speeds, few enough that the per-piece work of the kernels (interleaving the
  // activations) stays small against the rows it serves.
  static constexpr int64_t kPiecesPerThread = 4;

  // The rows of a dynamically split product of `rows` output rows.
  int64_t RowPiece(int64_t rows) const {
    const int64_t pieces = kPiecesPerThread * pool_.size();
    const int64_t per = (rows + pieces - 1) / pieces;
    return std::max(kRowGrain, (per + kRowGrain - 1) / kRowGrain * kRowGrain);
  }

  void MatMul(const WeightMatrix& w, const float* x, int64_t n, float* y) {
    const WeightMatrix* ws[1] = {&w};
    float* ys[1] = {y};
    MatMulGroup(ws, ys, 1, x, n);
  }

  // y[t] = RMSNorm(x[t]) * weight for n rows of n_embd floats.
  void NormRows(const float* x, const std::vector<float>& weight, float* y, int64_t n) {
    const int64_t d = c_.n_embd;
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) cpu::RmsNorm(x + t * d, weight.data(), y + t * d, d, c_.rms_eps);
    });
  }

  // K/V of (block, layer, slot).
  template <typename T>
  T* KvAt(void* cache, int32_t block, int32_t layer, int32_t slot) const {
    return static_cast<T*>(cache) + static_cast<size_t>(block) * block_stride_ + layer * layer_stride_ +
           static_cast<size_t>(slot) * c_.n_embd_kv();
  }

  void CopyBlock(int32_t src, int32_t dst) {
    const size_t elem = options_.kv_type == KvCacheType::kF16 ? sizeof(uint16_t) : sizeof(float);
    for (void* cache : {k_cache_.get(), v_cache_.get()}) {
      auto* base = static_cast<uint8_t*>(cache);
      std::memcpy(base + dst * block_stride_ * elem, base + src * block_stride_ * elem, block_stride_ * elem);
    }
  }

  // The forward pass of `n` rows (row_token_, row_pos_, row_entry_ filled): every matrix product
  // over all rows at once, attention per row over its own sequence's blocks.
  void ForwardRows(std::span<const BatchEntry> batch, int64_t n) {
    const int32_t n_embd = c_.n_embd;
    const int32_t q_dim = c_.n_embd_q();
    const int32_t kv_dim = c_.n_embd_kv();
    const int32_t hd = c_.head_dim;
    const WeightMatrix& embd = model_.token_embd();

    // Token embeddings.
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        kernels::DequantizeRow(embd.type, embd.row(row_token_[t]), &x_[t * n_embd], n_embd);
        if (c_.embd_scale != 1.0f) {
          for (int32_t i = 0; i < n_embd; ++i) x_[t * n_embd + i] *= c_.embd_scale;
        }
      }
    });
    // RoPE angles per row (shared by every layer and head).
    const float* freq_factors = model_.rope_factors(options_.n_ctx);
    for (int64_t t = 0; t < n; ++t) {
      cpu::RopeCache(row_pos_[t], c_.n_rot, c_.rope_freq_base, c_.rope_freq_scale, freq_factors, &rope_[t * c_.n_rot],
                     c_.rope_attn_factor);
    }

    for (int32_t il = 0; il < c_.n_layer; ++il) {
      const LayerWeights& L = model_.layers()[il];
      // The architecture's layer, op by op (inference/model/architecture.h).
      for (const LayerOp op : c_.recipe->layer) {
        switch (op) {
          case LayerOp::kAttnNorm:
            NormRows(x_.data(), L.attn_norm, xn_.data(), n);
            break;
          case LayerOp::kQkvProject:
            MatMulQkv(L, n);
            break;
          case LayerOp::kQkvBias:
            pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
              for (int64_t t = t0; t < t1; ++t) {
                AddBias(&q_[t * q_dim], L.bq);
                AddBias(&k_[t * kv_dim], L.bk);
                AddBias(&v_[t * kv_dim], L.bv);
              }
            });
            break;
          case LayerOp::kQkNorm:
            // In place, head by head: RmsNorm reads each value before it writes it.
            pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
              for (int64_t t = t0; t < t1; ++t) {
                float* q = &q_[t * q_dim];
                float* k = &k_[t * kv_dim];
                for (int32_t h = 0; h < c_.n_head; ++h) cpu::RmsNorm(q + h * hd, L.q_norm.data(), q + h * hd, hd, c_.rms_eps);
                for (int32_t h = 0; h < c_.n_head_kv; ++h) {
                  cpu::RmsNorm(k + h * hd, L.k_norm.data(), k + h * hd, hd, c_.rms_eps);
                }
              }
            });
            break;
          case LayerOp::kRope:
            pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
              for (int64_t t = t0; t < t1; ++t) {
                const float* cs = &rope_[t * c_.n_rot];
                float* q = &q_[t * q_dim];
                float* k = &k_[t * kv_dim];
                for (int32_t h = 0; h < c_.n_head; ++h) cpu::ApplyRope(q + h * hd, c_.n_rot, cs, c_.rope_neox);
                for (int32_t h = 0; h < c_.n_head_kv; ++h) cpu::ApplyRope(k + h * hd, c_.n_rot, cs, c_.rope_neox);
              }
            });
            break;
          case LayerOp::kAttention:
            Attention(batch, n, il);
            break;
          case LayerOp::kAttnOutputAdd:
            MatMulAdd(L.wo, attn_.data(), n, x_.data());
            break;
          case LayerOp::kAttnOutputPostNormAdd:
            MatMulPostNormAdd(L.wo, attn_.data(), L.attn_post_norm, n);
            break;
          case LayerOp::kFfnNorm:
            NormRows(x_.data(), L.ffn_norm, xn_.data(), n);
            break;
          case LayerOp::kGateUpProject:
            MatMulGateUp(L, n);
            break;
          case LayerOp::kSwiGlu:
            GluRows(cpu::SwiGlu, n, c_.n_ff);
            break;
          case LayerOp::kGeGlu:
            GluRows(cpu::GeGlu, n, c_.n_ff);
            break;
          case LayerOp::kFfnDownAdd:
            MatMulAdd(L.w_down, gate_.data(), n, x_.data());
            break;
          case LayerOp::kFfnDownPostNormAdd:
            MatMulPostNormAdd(L.w_down, gate_.data(), L.ffn_post_norm, n);
            break;
          case LayerOp::kMoeFfn:
            MoeFfn(L, n);
            break;
        }
      }
    }

    // Logits for the rows that want them: gathered, normed, one product, copied out.
    int64_t n_out = 0;
    int64_t row = 0;
    for (const BatchEntry& entry : batch) {
      const int64_t len = static_cast<int64_t>(entry.tokens.size());
      if (entry.logits != nullptr) {
        const int64_t first = entry.all_logits ? 0 : len - 1;
        for (int64_t t = first; t < len; ++t, ++n_out) {
          std::memcpy(&gathered_[n_out * n_embd], &x_[(row + t) * n_embd], n_embd * sizeof(float));
        }
      }
      row += len;
    }
    if (n_out == 0) return;
    const size_t n_vocab = static_cast<size_t>(c_.n_vocab);
    if (logits_.size() < static_cast<size_t>(n_out) * n_vocab) logits_.resize(static_cast<size_t>(n_out) * n_vocab);
    NormRows(gathered_.data(), model_.output_norm(), xn_.data(), n_out);
    MatMul(model_.output(), xn_.data(), n_out, logits_.data());
    if (c_.final_softcap > 0.0f) {
      // Gemma 2, as llama.cpp: times 1/cap, tanh, times cap.
      const float cap = c_.final_softcap;
      const float inv_cap = 1.0f / cap;
      const int64_t total = n_out * c_.n_vocab;
      pool_.ParallelFor(total, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) logits_[i] = std::tanh(logits_[i] * inv_cap) * cap;
      });
    }
    CopyLogitsOut(batch, logits_.data(), c_.n_vocab);
  }

  static void AddBias(float* x, const std::vector<float>& bias) {
    for (size_t i = 0; i < bias.size(); ++i) x[i] += bias[i];
  }

  // kAttention: every row's K and V go into its sequence's blocks first, then each (row, head)
  // attends over its own sequence's positions up to its own, in position order.
  void Attention(std::span<const BatchEntry> batch, int64_t n, int32_t il) {
    const int32_t q_dim = c_.n_embd_q();
    const int32_t kv_dim = c_.n_embd_kv();
    const int32_t hd = c_.head_dim;
    const int32_t bt = options_.kv_block_tokens;
    const float kq_scale = c_.kq_scale > 0.0f ? c_.kq_scale : 1.0f / std::sqrt(static_cast<float>(hd));
    const float softcap = c_.attn_softcap;
    // Gemma 2's even layers: only the last sliding_window positions (own included) are visible.
    const int32_t window = c_.SlidingLayer(il) ? c_.sliding_window : 0;
    const int32_t group = c_.n_head / c_.n_head_kv;
    const bool f16_kv = options_.kv_type == KvCacheType::kF16;
    void* const kc = k_cache_.get();
    void* const vc = v_cache_.get();
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const float* k = &k_[t * kv_dim];
        const float* v = &v_[t * kv_dim];
        const int32_t pos = row_pos_[t];
        const int32_t block = batch[row_entry_[t]].seq->blocks()[pos / bt];
        if (f16_kv) {
          cpu::F32ToF16Row(k, KvAt<uint16_t>(kc, block, il, pos % bt), kv_dim);
          cpu::F32ToF16Row(v, KvAt<uint16_t>(vc, block, il, pos % bt), kv_dim);
        } else {
          std::memcpy(KvAt<float>(kc, block, il, pos % bt), k, kv_dim * sizeof(float));
          std::memcpy(KvAt<float>(vc, block, il, pos % bt), v, kv_dim * sizeof(float));
        }
      }
    });
    // One work item per (row, KV head): the `group` query heads sharing that KV head read each
    // cached row once (DotF16Rows/AxpyF16Rows give exactly the per-position results).
    const int64_t n_items = n * c_.n_head_kv;
    std::atomic<int64_t> next_item{0};
    pool_.Run([&](int thread) {
      float* base = &scratch_[thread * scratch_stride_];
      float* scores[kMaxGroup];
      float* outs[kMaxGroup];
      uint16_t* q16[kMaxGroup];
      const float* qs[kMaxGroup];
      const float* ws[kMaxGroup];
      const size_t score_stride = static_cast<size_t>(options_.n_ctx) + 8;
      for (int32_t g = 0; g < group; ++g) {
        scores[g] = base + g * score_stride;
        outs[g] = base + group * score_stride + g * hd;
        q16[g] = reinterpret_cast<uint16_t*>(base + group * score_stride + group * hd) + g * (hd + 8);
        ws[g] = scores[g];
      }
      // Items taken one at a time by whichever thread is free: a prompt's later rows attend over
      // more positions and threads run at different speeds, so a fixed split would leave one
      // thread with most of the work.
      for (int64_t item; (item = next_item.fetch_add(1, std::memory_order_relaxed)) < n_items;) {
        const int64_t t = item / c_.n_head_kv;
        const int32_t kvh = static_cast<int32_t>(item % c_.n_head_kv);
        const int32_t n_kv = row_pos_[t] + 1;  // causal: positions <= own
        // Outside a sliding window: positions before `first` are masked. Whole blocks before it
        // are skipped (masked scores add exactly nothing to the softmax or to P.V), the rest of
        // its block is set to -inf, so the sums are those of a full masked pass.
        const int32_t first = window > 0 ? std::max(0, n_kv - window) : 0;
        const int32_t p_begin = first / bt * bt;
        const std::vector<int32_t>& blocks = batch[row_entry_[t]].seq->blocks();
        for (int32_t g = 0; g < group; ++g) qs[g] = &q_[t * q_dim + (kvh * group + g) * hd];
        // Positions in order, block by block: the same sums whatever the block layout.
        if (f16_kv) {
          // As ggml: Q is rounded to F16 for Q.K, probabilities to F16 for P.V.
          for (int32_t g = 0; g < group; ++g) cpu::F32ToF16Row(qs[g], q16[g], hd);
          for (int32_t p0 = p_begin; p0 < n_kv; p0 += bt) {
            const uint16_t* kb = KvAt<uint16_t>(kc, blocks[p0 / bt], il, 0) + kvh * hd;
            float* at[kMaxGroup];
            for (int32_t g = 0; g < group; ++g) at[g] = scores[g] + p0;
            cpu::DotF16Rows(kb, kv_dim, std::min(bt, n_kv - p0), q16, group, hd, at);
          }
        } else {
          for (int32_t p0 = p_begin; p0 < n_kv; p0 += bt) {
            const float* kb = KvAt<float>(kc, blocks[p0 / bt], il, 0) + kvh * hd;
            float* at[kMaxGroup];
            for (int32_t g = 0; g < group; ++g) at[g] = scores[g] + p0;
            cpu::DotF32Rows(kb, kv_dim, std::min(bt, n_kv - p0), qs, group, hd, at);
          }
        }
        for (int32_t g = 0; g < group; ++g) {
          float* s = scores[g];
          float scale = kq_scale;
          if (softcap > 0.0f) {
            // Gemma 2, as llama.cpp: the scaled score times 1/cap, tanh, times cap.
            const float inv_cap = 1.0f / softcap;
            for (int32_t p = p_begin; p < n_kv; ++p) s[p] = std::tanh(s[p] * kq_scale * inv_cap) * softcap;
            scale = 1.0f;
          }
          for (int32_t p = p_begin; p < first; ++p) s[p] = -INFINITY;
          cpu::ScaledSoftmax(s + p_begin, n_kv - p_begin, scale);
          if (f16_kv) {
            for (int32_t p = p_begin; p < n_kv; ++p) s[p] = F16Round(s[p]);
          }
          std::fill(outs[g], outs[g] + hd, 0.0f);
        }
        for (int32_t p0 = p_begin; p0 < n_kv; p0 += bt) {
          const float* w[kMaxGroup];
          for (int32_t g = 0; g < group; ++g) w[g] = ws[g] + p0;
          const int32_t m = std::min(bt, n_kv - p0);
          if (f16_kv) {
            cpu::AxpyF16Rows(KvAt<uint16_t>(vc, blocks[p0 / bt], il, 0) + kvh * hd, kv_dim, m, w, group, hd, outs);
          } else {
            cpu::AxpyF32Rows(KvAt<float>(vc, blocks[p0 / bt], il, 0) + kvh * hd, kv_dim, m, w, group, hd, outs);
          }
        }
        for (int32_t g = 0; g < group; ++g) {
          std::memcpy(&attn_[t * q_dim + (kvh * group + g) * hd], outs[g], hd * sizeof(float));
        }
      }
    });
  }

  // Query heads per KV head the attention scratch holds (ModelConfig caps n_head / n_head_kv).
  static constexpr int32_t kMaxGroup = 1024;
  static float F16Round(float x) { return F16ToF32(F32ToF16(x)); }

  // Q, K and V share one quantized input and one parallel region.
  void MatMulQkv(const LayerWeights& L, int64_t n) {
    const WeightMatrix* ws[3] = {&L.wq, &L.wk, &L.wv};
    float* ys[3] = {q_.data(), k_.data(), v_.data()};
    MatMulGroup(ws, ys, 3, xn_.data(), n);
  }

  // Gate and up share the input.
  void MatMulGateUp(const LayerWeights& L, int64_t n) {
    const WeightMatrix* ws[2] = {&L.w_gate, &L.w_up};
    float* ys[2] = {gate_.data(), up_.data()};
    MatMulGroup(ws, ys, 2, xn_.data(), n);
  }

  // Several weights applied to the same input. Activations are quantized once per distinct
  // activation type (they normally all share one).
  void MatMulGroup(const WeightMatrix* const* ws, float* const* ys, int count, const float* x, int64_t n) {
    const int64_t cols = ws[0]->cols;
    bool same_type = true;
    for (int i = 1; i < count; ++i) {
      same_type &= kernels::ActivationType(ws[i]->type) == kernels::ActivationType(ws[0]->type);
    }
    if (!same_type) {
      for (int i = 0; i < count; ++i) MatMulGroup(&ws[i], &ys[i], 1, x, n);
      return;
    }
    const size_t act_bytes = PrepareActivations(ws[0]->type, x, cols, n, cols);
    int64_t total_rows = 0;
    for (int i = 0; i < count; ++i) total_rows += ws[i]->rows;
    pool_.ParallelForDynamic(total_rows, RowPiece(total_rows), [&](int64_t r0, int64_t r1) {
      int64_t base = 0;
      for (int i = 0; i < count; ++i) {
        const WeightMatrix& w = *ws[i];
        const int64_t b = std::max(r0, base), e = std::min(r1, base + w.rows);
        if (b < e) {
          kernels::MatMulRows(w.type, w.cols, w.data, w.row_bytes, b - base, e - base, act_.data(), act_bytes, n,
                              ys[i], w.rows);
        }
        base += w.rows;
      }
    });
  }

  // gate_[t] = glu(gate_[t], up_[t]) for n rows of `width`.
  void GluRows(void (*glu)(const float*, const float*, float*, int64_t), int64_t n, int64_t width) {
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) glu(&gate_[t * width], &up_[t * width], &gate_[t * width], width);
    });
  }

  // y = down(silu(x gate) * x up) for n rows of x, through gate_ and up_ (an expert's FFN).
  void SwiGluFfn(const WeightMatrix& gate, const WeightMatrix& up, const WeightMatrix& down, const float* x, int64_t n,
                 float* y) {
    const WeightMatrix* gate_up[2] = {&gate, &up};
    float* outs[2] = {gate_.data(), up_.data()};
    MatMulGroup(gate_up, outs, 2, x, n);
    GluRows(cpu::SwiGlu, n, gate.rows);
    MatMul(down, gate_.data(), n, y);
  }

  // A mixture of experts on the n rows of xn_, added to x_ (architecture.h, kMoeFfn), as llama.cpp
  // computes it: router softmax, the top k experts (highest first, ties to the lower index), their
  // probabilities as weights (divided by their sum, taken in double, with moe_norm_weights); each
  // expert runs once over the rows routed to it; a row's weighted expert outputs are summed in
  // rank order, then the gated shared expert's is added, then the sum is added to x. A row's
  // result does not depend on which other rows share its experts (every product row is computed
  // alone), so batching changes nothing.
  void MoeFfn(const LayerWeights& L, int64_t n) {
    const int64_t d = c_.n_embd, ne = c_.n_expert, k = c_.n_expert_used;
    MatMul(L.router, xn_.data(), n, moe_probs_.data());
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        float* p = &moe_probs_[t * ne];
        cpu::ScaledSoftmax(p, ne, 1.0f);
        int32_t* sel = &moe_selected_[t * k];
        float* w = &moe_weights_[t * k];
        for (int64_t j = 0; j < k; ++j) {
          int32_t best = -1;
          for (int32_t e = 0; e < ne; ++e) {
            if (std::find(sel, sel + j, e) != sel + j) continue;
            if (best < 0 || p[e] > p[best]) best = e;
          }
          sel[j] = best;
          w[j] = p[best];
        }
        if (c_.recipe->moe_norm_weights) {
          double sum = 0.0;
          for (int64_t j = 0; j < k; ++j) sum += static_cast<double>(w[j]);
          const float total = static_cast<float>(sum);
          for (int64_t j = 0; j < k; ++j) w[j] = w[j] / total;
        }
      }
    });
    for (int32_t e = 0; e < ne; ++e) {
      int64_t m = 0;
      for (int64_t s = 0; s < n * k; ++s) {
        if (moe_selected_[s] != e) continue;
        moe_slots_[m] = static_cast<int32_t>(s);
        std::memcpy(&moe_x_[m * d], &xn_[(s / k) * d], d * sizeof(float));
        ++m;
      }
      if (m == 0) continue;
      SwiGluFfn(L.gate_exps[e], L.up_exps[e], L.down_exps[e], moe_x_.data(), m, moe_y_.data());
      pool_.ParallelFor(m, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int32_t s = moe_slots_[i];
          const float w = moe_weights_[s];
          float* out = &moe_out_[static_cast<size_t>(s) * d];
          for (int64_t c = 0; c < d; ++c) out[c] = moe_y_[i * d + c] * w;
        }
      });
    }
    const bool shared = c_.recipe->moe_shared_expert;
    if (shared) {
      SwiGluFfn(L.gate_shared, L.up_shared, L.down_shared, xn_.data(), n, moe_y_.data());
      // Its gate, sigmoid(xn . w): the vector as a one-row F32 matrix.
      WeightMatrix g;
      g.name = "ffn_gate_inp_shexp";
      g.type = TensorType::kF32;
      g.data = reinterpret_cast<const uint8_t*>(L.shared_gate.data());
      g.cols = d;
      g.rows = 1;
      g.row_bytes = static_cast<size_t>(d) * sizeof(float);
      MatMul(g, xn_.data(), n, moe_shared_gate_.data());
    }
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const float* first = &moe_out_[static_cast<size_t>(t * k) * d];
        float* x = &x_[t * d];
        const float gate = shared ? 1.0f / (1.0f + std::exp(-moe_shared_gate_[t])) : 0.0f;
        for (int64_t c = 0; c < d; ++c) {
          float sum = first[c];
          for (int64_t j = 1; j < k; ++j) sum += moe_out_[static_cast<size_t>(t * k + j) * d + c];
          if (shared) sum += moe_y_[t * d + c] * gate;
          x[c] += sum;
        }
      }
    });
  }

  // x_ += RMSNorm(in W) * norm for n rows (Gemma 2's post-norms), through xn_ (free by then: the
  // layer's normed input has been consumed by its projections).
  void MatMulPostNormAdd(const WeightMatrix& w, const float* in, const std::vector<float>& norm, int64_t n) {
    MatMul(w, in, n, xn_.data());
    const int64_t d = c_.n_embd;
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        float* row = &xn_[t * d];
        cpu::RmsNorm(row, norm.data(), row, d, c_.rms_eps);
        float* x = &x_[t * d];
        for (int64_t i = 0; i < d; ++i) x[i] += row[i];
      }
    });
  }

  // y += W x (residual connection): each thread computes its rows for every token, then adds them.
  void MatMulAdd(const WeightMatrix& w, const float* x, int64_t n, float* y) {
    const size_t act_bytes = PrepareActivations(w.type, x, w.cols, n, w.cols);
    pool_.ParallelForDynamic(w.rows, RowPiece(w.rows), [&](int64_t r0, int64_t r1) {
      kernels::MatMulRows(w.type, w.cols, w.data, w.row_bytes, r0, r1, act_.data(), act_bytes, n, residual_.data(),
                          w.rows);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = r0; r < r1; ++r) y[t * w.rows + r] += residual_[t * w.rows + r];
      }
    });
  }

  const Model& model_;
  const ModelConfig& c_;
  ExecutorOptions options_;
  ThreadPool pool_;
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, rope_, residual_;
  // kMoeFfn: router probabilities, each row's chosen experts and weights (k per row), the (row,
  // rank) slots routed to the current expert, its gathered input and output rows, each slot's
  // weighted output, the shared expert's gate per row.
  std::vector<float> moe_probs_, moe_weights_, moe_x_, moe_y_, moe_out_, moe_shared_gate_;
  std::vector<int32_t> moe_selected_, moe_slots_;
  std::vector<uint8_t> act_;
  std::vector<float> scratch_;
  size_t scratch_stride_ = 0;
  // The rows of the current step: token, position, and index of their batch entry.
  std::vector<int32_t> row_token_, row_pos_, row_entry_;
  std::vector<float> gathered_;  // rows whose logits are wanted, before the output norm
  std::vector<float> logits_;    // their logits, before they are copied out
  KvPool kv_pool_;
  size_t layer_stride_ = 0, block_stride_ = 0;  // in elements
  std::unique_ptr<void, FreeDeleter<std::free>> k_cache_, v_cache_;
};

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }

  absl::StatusOr<std::unique_ptr<ModelExecutor>> CreateExecutor(const Model& model,
                                                                const ExecutorOptions& options) override {
    AIRLOCK_ASSIGN_OR_RETURN(const ExecutorOptions o, NormalizeExecutorOptions(model.config(), options));
    const ModelConfig& c = model.config();
    const double bytes = static_cast<double>(o.kv_pool_tokens) * KvBytesPerToken(c, o.kv_type);
    const double physical = PhysicalMemoryBytes();
    if (o.kv_pool_tokens > (int64_t{1} << 31) || (physical > 0 && bytes > physical)) {
      return absl::InvalidArgumentError(absl::StrCat("a KV pool of ", o.kv_pool_tokens, " tokens needs ",
                                                     static_cast<int64_t>(bytes / (1 << 20)),
                                                     " MiB, more than this machine's memory"));
    }
    auto executor = std::make_unique<CpuExecutor>(model, o);
    if (!executor->allocated()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate a KV pool of ", o.kv_pool_tokens, " tokens"));
    }
    return std::unique_ptr<ModelExecutor>(std::move(executor));
  }
};

}  // namespace

const char* KvCacheTypeName(KvCacheType type) { return type == KvCacheType::kF16 ? "f16" : "f32"; }

std::unique_ptr<Backend> CreateCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace airlock::inference

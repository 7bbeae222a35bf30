// The CPU backend: the Llama/Qwen2 forward pass over a KV cache, multi-threaded with a fork/join
// pool, matrix products through the runtime-dispatched kernels in inference/kernels.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/backend/backend.h"
#include "inference/backend/cpu/ops.h"
#include "inference/backend/cpu/thread_pool.h"
#include "inference/base/fp16.h"
#include "inference/base/status.h"
#include "inference/kernels/quants.h"

namespace airlock::inference {
namespace {

// KV cache of one sequence: K and V for every layer and position, [layer][pos][n_embd_kv].
class CpuSequence : public Sequence {
 public:
  CpuSequence(int32_t n_layer, int32_t n_ctx, int32_t kv_dim, KvCacheType type)
      : n_ctx_(n_ctx), kv_dim_(kv_dim), type_(type) {
    const size_t n = static_cast<size_t>(n_layer) * n_ctx * kv_dim;
    if (type == KvCacheType::kF16) {
      k16_.resize(n);
      v16_.resize(n);
    } else {
      k32_.resize(n);
      v32_.resize(n);
    }
  }

  int32_t n_ctx() const override { return n_ctx_; }
  int32_t n_past() const override { return n_past_; }
  void Truncate(int32_t n) override { n_past_ = std::clamp(n, 0, n_past_); }

  KvCacheType type() const { return type_; }
  size_t Index(int32_t layer, int32_t pos) const {
    return (static_cast<size_t>(layer) * n_ctx_ + pos) * kv_dim_;
  }
  uint16_t* K16(int32_t layer, int32_t pos) { return &k16_[Index(layer, pos)]; }
  uint16_t* V16(int32_t layer, int32_t pos) { return &v16_[Index(layer, pos)]; }
  float* K32(int32_t layer, int32_t pos) { return &k32_[Index(layer, pos)]; }
  float* V32(int32_t layer, int32_t pos) { return &v32_[Index(layer, pos)]; }
  void Advance(int32_t n) { n_past_ += n; }

 private:
  int32_t n_ctx_, kv_dim_;
  KvCacheType type_;
  int32_t n_past_ = 0;
  std::vector<uint16_t> k16_, v16_;
  std::vector<float> k32_, v32_;
};

class CpuExecutor : public ModelExecutor {
 public:
  CpuExecutor(const Model& model, const ExecutorOptions& options)
      : model_(model), c_(model.config()), options_(options), pool_(options.n_threads) {
    const size_t nb = static_cast<size_t>(options_.n_batch);
    x_.resize(nb * c_.n_embd);
    xn_.resize(nb * c_.n_embd);
    q_.resize(nb * c_.n_embd_q());
    k_.resize(nb * c_.n_embd_kv());
    v_.resize(nb * c_.n_embd_kv());
    attn_.resize(nb * c_.n_embd_q());
    gate_.resize(nb * c_.n_ff);
    up_.resize(nb * c_.n_ff);
    rope_.resize(nb * c_.n_rot);
    residual_.resize(nb * c_.n_embd);
    // Activation rows are at most 4 bytes per element (F32) for the widest input (n_ff).
    const int64_t widest = std::max<int64_t>({c_.n_embd, c_.n_embd_q(), c_.n_ff});
    act_.resize(nb * static_cast<size_t>(widest) * 4 + 64);
    const size_t per_thread = static_cast<size_t>(options_.n_ctx) + 2 * c_.head_dim + 16;
    scratch_.resize(per_thread * pool_.size());
    scratch_stride_ = per_thread;
  }

  const ExecutorOptions& options() const override { return options_; }

  absl::StatusOr<std::unique_ptr<Sequence>> NewSequence() override {
    return std::make_unique<CpuSequence>(c_.n_layer, options_.n_ctx, c_.n_embd_kv(), options_.kv_type);
  }

  absl::Status Forward(Sequence& seq_base, std::span<const int32_t> tokens, float* logits,
                       bool all_logits) override {
    auto& seq = static_cast<CpuSequence&>(seq_base);
    if (tokens.empty()) return absl::InvalidArgumentError("forward: no tokens");
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || tokens[i] >= c_.n_vocab) {
        return absl::InvalidArgumentError(absl::StrCat("forward: token id ", tokens[i], " at index ", i,
                                                       " is outside the vocabulary [0, ", c_.n_vocab, ")"));
      }
    }
    if (static_cast<int64_t>(seq.n_past()) + static_cast<int64_t>(tokens.size()) > seq.n_ctx()) {
      return absl::OutOfRangeError(absl::StrCat("forward: ", tokens.size(), " tokens after ", seq.n_past(),
                                                " do not fit in the context of ", seq.n_ctx()));
    }
    const int64_t total = static_cast<int64_t>(tokens.size());
    for (int64_t start = 0; start < total; start += options_.n_batch) {
      const int64_t n = std::min<int64_t>(options_.n_batch, total - start);
      const bool last_chunk = start + n == total;
      float* out = nullptr;
      int64_t first_logit = n;  // rows of this chunk whose logits are wanted: [first_logit, n)
      if (all_logits) {
        out = logits + start * c_.n_vocab;
        first_logit = 0;
      } else if (last_chunk) {
        out = logits;
        first_logit = n - 1;
      }
      ForwardChunk(seq, tokens.data() + start, n, out, first_logit);
      seq.Advance(static_cast<int32_t>(n));
    }
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

  void ForwardChunk(CpuSequence& seq, const int32_t* tokens, int64_t n, float* logits, int64_t first_logit) {
    const int32_t n_embd = c_.n_embd;
    const int32_t q_dim = c_.n_embd_q();
    const int32_t kv_dim = c_.n_embd_kv();
    const int32_t hd = c_.head_dim;
    const int32_t n_past = seq.n_past();
    const WeightMatrix& embd = model_.token_embd();

    // Token embeddings.
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        kernels::DequantizeRow(embd.type, embd.row(tokens[t]), &x_[t * n_embd], n_embd);
      }
    });
    // RoPE angles per token (shared by every layer and head).
    const float* freq_factors = model_.rope_freqs().empty() ? nullptr : model_.rope_freqs().data();
    for (int64_t t = 0; t < n; ++t) {
      cpu::RopeCache(n_past + static_cast<int32_t>(t), c_.n_rot, c_.rope_freq_base, c_.rope_freq_scale,
                     freq_factors, &rope_[t * c_.n_rot]);
    }

    const float kq_scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int32_t group = c_.n_head / c_.n_head_kv;
    const bool f16_kv = seq.type() == KvCacheType::kF16;

    for (int32_t il = 0; il < c_.n_layer; ++il) {
      const LayerWeights& L = model_.layers()[il];
      // Attention block.
      NormRows(x_.data(), L.attn_norm, xn_.data(), n);
      MatMulQkv(L, n);

      // Bias, RoPE and KV store, then attention, per (token, head).
      pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          float* q = &q_[t * q_dim];
          float* k = &k_[t * kv_dim];
          float* v = &v_[t * kv_dim];
          if (!L.bq.empty()) {
            for (int32_t i = 0; i < q_dim; ++i) q[i] += L.bq[i];
            for (int32_t i = 0; i < kv_dim; ++i) k[i] += L.bk[i];
            for (int32_t i = 0; i < kv_dim; ++i) v[i] += L.bv[i];
          }
          const float* cs = &rope_[t * c_.n_rot];
          for (int32_t h = 0; h < c_.n_head; ++h) cpu::ApplyRope(q + h * hd, c_.n_rot, cs, c_.rope_neox);
          for (int32_t h = 0; h < c_.n_head_kv; ++h) cpu::ApplyRope(k + h * hd, c_.n_rot, cs, c_.rope_neox);
          const int32_t pos = n_past + static_cast<int32_t>(t);
          if (f16_kv) {
            cpu::F32ToF16Row(k, seq.K16(il, pos), kv_dim);
            cpu::F32ToF16Row(v, seq.V16(il, pos), kv_dim);
          } else {
            std::memcpy(seq.K32(il, pos), k, kv_dim * sizeof(float));
            std::memcpy(seq.V32(il, pos), v, kv_dim * sizeof(float));
          }
        }
      });
      const int64_t n_items = n * c_.n_head;
      pool_.Run([&](int thread) {
        const auto [i0, i1] = pool_.Chunk(n_items, 1, thread);
        float* scores = &scratch_[thread * scratch_stride_];
        float* qf = scores + options_.n_ctx + 8;
        uint16_t* q16 = reinterpret_cast<uint16_t*>(qf + hd);
        for (int64_t item = i0; item < i1; ++item) {
          const int64_t t = item / c_.n_head;
          const int32_t h = static_cast<int32_t>(item % c_.n_head);
          const int32_t kvh = h / group;
          const int32_t n_kv = n_past + static_cast<int32_t>(t) + 1;  // causal: positions <= own
          const float* q = &q_[t * q_dim + h * hd];
          float* out = &attn_[t * q_dim + h * hd];
          if (f16_kv) {
            // As ggml: Q is rounded to F16 for Q.K, probabilities to F16 for P.V.
            cpu::F32ToF16Row(q, q16, hd);
            for (int32_t p = 0; p < n_kv; ++p) scores[p] = cpu::DotF16(seq.K16(il, p) + kvh * hd, q16, hd);
          } else {
            for (int32_t p = 0; p < n_kv; ++p) scores[p] = cpu::DotF32(seq.K32(il, p) + kvh * hd, q, hd);
          }
          cpu::ScaledSoftmax(scores, n_kv, kq_scale);
          std::fill(qf, qf + hd, 0.0f);
          if (f16_kv) {
            for (int32_t p = 0; p < n_kv; ++p) {
              const float w = F16Round(scores[p]);
              cpu::AxpyF16(w, seq.V16(il, p) + kvh * hd, qf, hd);
            }
          } else {
            for (int32_t p = 0; p < n_kv; ++p) cpu::AxpyF32(scores[p], seq.V32(il, p) + kvh * hd, qf, hd);
          }
          std::memcpy(out, qf, hd * sizeof(float));
        }
      });
      MatMulAdd(L.wo, attn_.data(), n, x_.data());

      // Feed-forward block.
      NormRows(x_.data(), L.ffn_norm, xn_.data(), n);
      MatMulGateUp(L, n);
      MatMulAdd(L.w_down, gate_.data(), n, x_.data());
    }

    if (logits == nullptr) return;
    const int64_t n_out = n - first_logit;
    NormRows(&x_[first_logit * n_embd], model_.output_norm(), xn_.data(), n_out);
    MatMul(model_.output(), xn_.data(), n_out, logits);
  }

  static float F16Round(float x) { return F16ToF32(F32ToF16(x)); }

  // Q, K and V share one quantized input and one parallel region.
  void MatMulQkv(const LayerWeights& L, int64_t n) {
    const WeightMatrix* ws[3] = {&L.wq, &L.wk, &L.wv};
    float* ys[3] = {q_.data(), k_.data(), v_.data()};
    MatMulGroup(ws, ys, 3, xn_.data(), n);
  }

  // Gate and up share the input; SwiGLU is applied to each thread's rows right after.
  void MatMulGateUp(const LayerWeights& L, int64_t n) {
    const WeightMatrix* ws[2] = {&L.w_gate, &L.w_up};
    float* ys[2] = {gate_.data(), up_.data()};
    MatMulGroup(ws, ys, 2, xn_.data(), n);
    const int64_t n_ff = c_.n_ff;
    pool_.ParallelFor(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) cpu::SwiGlu(&gate_[t * n_ff], &up_[t * n_ff], &gate_[t * n_ff], n_ff);
    });
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
    pool_.ParallelFor(total_rows, kRowGrain, [&](int64_t r0, int64_t r1) {
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

  // y += W x (residual connection): each thread computes its rows for every token, then adds them.
  void MatMulAdd(const WeightMatrix& w, const float* x, int64_t n, float* y) {
    const size_t act_bytes = PrepareActivations(w.type, x, w.cols, n, w.cols);
    pool_.ParallelFor(w.rows, kRowGrain, [&](int64_t r0, int64_t r1) {
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
  std::vector<uint8_t> act_;
  std::vector<float> scratch_;
  size_t scratch_stride_ = 0;
};

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }

  absl::StatusOr<std::unique_ptr<ModelExecutor>> CreateExecutor(const Model& model,
                                                                const ExecutorOptions& options) override {
    ExecutorOptions o = options;
    const ModelConfig& c = model.config();
    if (o.n_ctx <= 0) o.n_ctx = std::min(c.n_ctx_train, 4096);
    if (o.n_threads < 1 || o.n_threads > 256) {
      return absl::InvalidArgumentError(absl::StrCat("threads must be in [1, 256], got ", o.n_threads));
    }
    if (o.n_batch < 1 || o.n_batch > 4096) {
      return absl::InvalidArgumentError(absl::StrCat("batch size must be in [1, 4096], got ", o.n_batch));
    }
    if (o.n_ctx > (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrCat("context size ", o.n_ctx, " is too large"));
    }
    return std::unique_ptr<ModelExecutor>(new CpuExecutor(model, o));
  }
};

}  // namespace

const char* KvCacheTypeName(KvCacheType type) { return type == KvCacheType::kF16 ? "f16" : "f32"; }

std::unique_ptr<Backend> CreateCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace airlock::inference

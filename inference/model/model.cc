// Model loading: finds each tensor the architecture's recipe names and checks its shape and type.
#include "inference/model/model.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "inference/base/fp16.h"
#include "inference/base/status.h"

namespace airlock::inference {
namespace {

absl::StatusOr<const GgufTensorInfo*> Require(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo* t = f.FindTensor(name);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("model: tensor '", name, "' is missing"));
  return t;
}

// A tensor of exactly `shape` as a matrix of shape[0] columns: [cols, rows] is one matrix; a 3-D
// [cols, rows, depth] (one [cols, rows] matrix per expert along the last axis) is one matrix of
// rows * depth rows, and Rows() views each expert's.
absl::StatusOr<WeightMatrix> MatrixOfShape(const GgufFile& f, const std::string& name,
                                           std::initializer_list<int64_t> shape) {
  AIRLOCK_ASSIGN_OR_RETURN(const GgufTensorInfo* t, Require(f, name));
  if (!std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat("model: tensor '", name, "' has shape [",
                                                   absl::StrJoin(t->shape, ", "), "], expected [",
                                                   absl::StrJoin(shape, ", "), "]"));
  }
  const TensorTypeTraits& traits = Traits(t->type);
  if (!traits.computable) {
    return absl::UnimplementedError(absl::StrCat("model: tensor '", name, "' has type ", traits.name,
                                                 ", which this engine does not support"));
  }
  const int64_t cols = *shape.begin();
  WeightMatrix m;
  m.name = name;
  m.type = t->type;
  m.data = t->data;
  m.cols = cols;
  m.rows = 1;
  for (auto d = shape.begin() + 1; d != shape.end(); ++d) m.rows *= *d;
  m.row_bytes = *RowBytes(t->type, cols);
  return m;
}

absl::StatusOr<WeightMatrix> Matrix(const GgufFile& f, const std::string& name, int64_t cols, int64_t rows) {
  return MatrixOfShape(f, name, {cols, rows});
}

// 1-D float parameters (norms, biases) are small: copy them into float vectors whatever their type.
absl::StatusOr<std::vector<float>> Vector(const GgufFile& f, const std::string& name, int64_t n) {
  AIRLOCK_ASSIGN_OR_RETURN(const GgufTensorInfo* t, Require(f, name));
  if (t->n_elements != n || t->shape[0] != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: tensor '", name, "' has ", t->n_elements, " elements, expected ", n));
  }
  std::vector<float> out(static_cast<size_t>(n));
  switch (t->type) {
    case TensorType::kF32:
      std::memcpy(out.data(), t->data, out.size() * sizeof(float));
      break;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t->data + 2 * i, 2);
        out[i] = F16ToF32(h);
      }
      break;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t->data + 2 * i, 2);
        out[i] = Bf16ToF32(h);
      }
      break;
    default:
      return absl::UnimplementedError(absl::StrCat("model: tensor '", name, "' has type ",
                                                   TensorTypeName(t->type), "; expected f32, f16 or bf16"));
  }
  return out;
}

// Output rows [first, first + count) of a matrix: a view into the same data (a fused tensor's part;
// each row is independent in every weight type, so any row range is itself a matrix).
WeightMatrix Rows(const WeightMatrix& m, int64_t first, int64_t count) {
  WeightMatrix part = m;
  part.name = absl::StrCat(m.name, "[rows ", first, "..", first + count, ")");
  part.data = m.row(first);
  part.rows = count;
  return part;
}

size_t FloatBytes(const std::vector<float>& v) { return v.size() * sizeof(float); }

// Model::decode_weight_bytes(): what one single-token step reads of the weights.
size_t DecodeWeightBytes(const Model& m) {
  size_t bytes = FloatBytes(m.output_norm()) + m.output().bytes();
  const bool tied = &m.output() == &m.token_embd();
  if (!tied) bytes += m.token_embd().row_bytes;
  for (const LayerWeights& l : m.layers()) {
    for (const WeightMatrix* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down, &l.router,
                                  &l.gate_shared, &l.up_shared, &l.down_shared}) {
      bytes += w->bytes();
    }
    for (const std::vector<float>* v : {&l.attn_norm, &l.ffn_norm, &l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm,
                                        &l.attn_post_norm, &l.ffn_post_norm, &l.shared_gate}) {
      bytes += FloatBytes(*v);
    }
    // A token reads only the experts it is routed to: expert_used_count of them (every expert
    // has the same size).
    if (!l.gate_exps.empty()) {
      const size_t one = l.gate_exps[0].bytes() + l.up_exps[0].bytes() + l.down_exps[0].bytes();
      bytes += one * static_cast<size_t>(m.config().n_expert_used);
    }
  }
  return bytes;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path) {
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  auto model = FromGguf(std::move(file));
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat(path, ": ", model.status().message()));
  }
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromGguf(std::unique_ptr<GgufFile> file) {
  std::unique_ptr<Model> m(new Model());
  const GgufFile& f = *file;
  AIRLOCK_ASSIGN_OR_RETURN(m->config_, ReadModelConfig(f));
  const ModelConfig& c = m->config_;
  AIRLOCK_ASSIGN_OR_RETURN(m->token_embd_, Matrix(f, "token_embd.weight", c.n_embd, c.n_vocab));
  m->tied_ = c.tied_embeddings;
  if (!m->tied_) {
    AIRLOCK_ASSIGN_OR_RETURN(m->output_, Matrix(f, "output.weight", c.n_embd, c.n_vocab));
  }
  AIRLOCK_ASSIGN_OR_RETURN(m->output_norm_, Vector(f, "output_norm.weight", c.n_embd));
  if (c.has_rope_freqs) {
    AIRLOCK_ASSIGN_OR_RETURN(m->rope_freqs_, Vector(f, "rope_freqs.weight", c.n_rot / 2));
  }
  if (c.has_longrope) {
    AIRLOCK_ASSIGN_OR_RETURN(m->rope_factors_long_, Vector(f, "rope_factors_long.weight", c.n_rot / 2));
    AIRLOCK_ASSIGN_OR_RETURN(m->rope_factors_short_, Vector(f, "rope_factors_short.weight", c.n_rot / 2));
  }
  m->layers_.resize(static_cast<size_t>(c.n_layer));
  for (int32_t i = 0; i < c.n_layer; ++i) {
    LayerWeights& l = m->layers_[static_cast<size_t>(i)];
    const std::string b = absl::StrCat("blk.", i, ".");
    // The weights this architecture's ops name (architecture.h), and no others.
    for (const LayerOp op : c.recipe->layer) {
      switch (op) {
        case LayerOp::kAttnNorm: {
          AIRLOCK_ASSIGN_OR_RETURN(l.attn_norm, Vector(f, b + "attn_norm.weight", c.n_embd));
          break;
        }
        case LayerOp::kQkvProject: {
          if (c.recipe->fused_qkv) {
            AIRLOCK_ASSIGN_OR_RETURN(WeightMatrix qkv,
                                     Matrix(f, b + "attn_qkv.weight", c.n_embd, c.n_embd_q() + 2 * c.n_embd_kv()));
            l.wq = Rows(qkv, 0, c.n_embd_q());
            l.wk = Rows(qkv, c.n_embd_q(), c.n_embd_kv());
            l.wv = Rows(qkv, c.n_embd_q() + c.n_embd_kv(), c.n_embd_kv());
            break;
          }
          AIRLOCK_ASSIGN_OR_RETURN(l.wq, Matrix(f, b + "attn_q.weight", c.n_embd, c.n_embd_q()));
          AIRLOCK_ASSIGN_OR_RETURN(l.wk, Matrix(f, b + "attn_k.weight", c.n_embd, c.n_embd_kv()));
          AIRLOCK_ASSIGN_OR_RETURN(l.wv, Matrix(f, b + "attn_v.weight", c.n_embd, c.n_embd_kv()));
          break;
        }
        case LayerOp::kQkvBias: {
          AIRLOCK_ASSIGN_OR_RETURN(l.bq, Vector(f, b + "attn_q.bias", c.n_embd_q()));
          AIRLOCK_ASSIGN_OR_RETURN(l.bk, Vector(f, b + "attn_k.bias", c.n_embd_kv()));
          AIRLOCK_ASSIGN_OR_RETURN(l.bv, Vector(f, b + "attn_v.bias", c.n_embd_kv()));
          break;
        }
        case LayerOp::kQkNorm: {
          AIRLOCK_ASSIGN_OR_RETURN(l.q_norm, Vector(f, b + "attn_q_norm.weight", c.head_dim));
          AIRLOCK_ASSIGN_OR_RETURN(l.k_norm, Vector(f, b + "attn_k_norm.weight", c.head_dim));
          break;
        }
        case LayerOp::kAttnOutputAdd: {
          AIRLOCK_ASSIGN_OR_RETURN(l.wo, Matrix(f, b + "attn_output.weight", c.n_embd_q(), c.n_embd));
          break;
        }
        case LayerOp::kAttnOutputPostNormAdd: {
          AIRLOCK_ASSIGN_OR_RETURN(l.wo, Matrix(f, b + "attn_output.weight", c.n_embd_q(), c.n_embd));
          AIRLOCK_ASSIGN_OR_RETURN(l.attn_post_norm, Vector(f, b + "post_attention_norm.weight", c.n_embd));
          break;
        }
        case LayerOp::kFfnNorm: {
          AIRLOCK_ASSIGN_OR_RETURN(l.ffn_norm, Vector(f, b + "ffn_norm.weight", c.n_embd));
          break;
        }
        case LayerOp::kGateUpProject: {
          if (c.recipe->fused_gate_up) {
            AIRLOCK_ASSIGN_OR_RETURN(WeightMatrix gate_up, Matrix(f, b + "ffn_up.weight", c.n_embd, 2 * c.n_ff));
            l.w_gate = Rows(gate_up, 0, c.n_ff);
            l.w_up = Rows(gate_up, c.n_ff, c.n_ff);
            break;
          }
          AIRLOCK_ASSIGN_OR_RETURN(l.w_gate, Matrix(f, b + "ffn_gate.weight", c.n_embd, c.n_ff));
          AIRLOCK_ASSIGN_OR_RETURN(l.w_up, Matrix(f, b + "ffn_up.weight", c.n_embd, c.n_ff));
          break;
        }
        case LayerOp::kFfnDownAdd: {
          AIRLOCK_ASSIGN_OR_RETURN(l.w_down, Matrix(f, b + "ffn_down.weight", c.n_ff, c.n_embd));
          break;
        }
        case LayerOp::kFfnDownPostNormAdd: {
          AIRLOCK_ASSIGN_OR_RETURN(l.w_down, Matrix(f, b + "ffn_down.weight", c.n_ff, c.n_embd));
          AIRLOCK_ASSIGN_OR_RETURN(l.ffn_post_norm, Vector(f, b + "post_ffw_norm.weight", c.n_embd));
          break;
        }
        case LayerOp::kMoeFfn: {
          const int64_t ne = c.n_expert, ff = c.n_ff_expert;
          AIRLOCK_ASSIGN_OR_RETURN(l.router, Matrix(f, b + "ffn_gate_inp.weight", c.n_embd, ne));
          AIRLOCK_ASSIGN_OR_RETURN(WeightMatrix gate, MatrixOfShape(f, b + "ffn_gate_exps.weight", {c.n_embd, ff, ne}));
          AIRLOCK_ASSIGN_OR_RETURN(WeightMatrix up, MatrixOfShape(f, b + "ffn_up_exps.weight", {c.n_embd, ff, ne}));
          AIRLOCK_ASSIGN_OR_RETURN(WeightMatrix down, MatrixOfShape(f, b + "ffn_down_exps.weight", {ff, c.n_embd, ne}));
          for (int64_t e = 0; e < ne; ++e) {
            l.gate_exps.push_back(Rows(gate, e * ff, ff));
            l.up_exps.push_back(Rows(up, e * ff, ff));
            l.down_exps.push_back(Rows(down, e * c.n_embd, c.n_embd));
          }
          if (c.recipe->moe_shared_expert) {
            const int64_t sff = c.n_ff_shared;
            AIRLOCK_ASSIGN_OR_RETURN(l.shared_gate, Vector(f, b + "ffn_gate_inp_shexp.weight", c.n_embd));
            AIRLOCK_ASSIGN_OR_RETURN(l.gate_shared, Matrix(f, b + "ffn_gate_shexp.weight", c.n_embd, sff));
            AIRLOCK_ASSIGN_OR_RETURN(l.up_shared, Matrix(f, b + "ffn_up_shexp.weight", c.n_embd, sff));
            AIRLOCK_ASSIGN_OR_RETURN(l.down_shared, Matrix(f, b + "ffn_down_shexp.weight", sff, c.n_embd));
          }
          break;
        }
        case LayerOp::kRope:
        case LayerOp::kAttention:
        case LayerOp::kSwiGlu:
        case LayerOp::kGeGlu:
          break;  // no weights
      }
    }
  }
  for (const GgufTensorInfo& t : f.tensors()) m->weight_bytes_ += t.bytes;
  m->decode_weight_bytes_ = DecodeWeightBytes(*m);
  m->file_ = std::move(file);
  return m;
}

const float* Model::rope_factors(int32_t n_ctx) const {
  if (config_.has_longrope) {
    return n_ctx > config_.rope_original_ctx ? rope_factors_long_.data() : rope_factors_short_.data();
  }
  return rope_freqs_.empty() ? nullptr : rope_freqs_.data();
}

}  // namespace airlock::inference

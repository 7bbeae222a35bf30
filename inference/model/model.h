// A loaded model: the mapped GGUF file, its hyper-parameters, and validated views of every weight.
// Backend-independent: backends read weights from here (CPU in place, GPUs by upload).
//
// Thread-safety: immutable after Load(); shared by all threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/base/tensor_type.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/model_config.h"

namespace airlock::inference {

// A 2-D weight of `rows` rows, each `cols` elements of `type`, rows `row_bytes` apart in the mapping.
struct WeightMatrix {
  std::string name;
  TensorType type = TensorType::kF32;
  const uint8_t* data = nullptr;
  int64_t cols = 0;
  int64_t rows = 0;
  size_t row_bytes = 0;

  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
  size_t bytes() const { return static_cast<size_t>(rows) * row_bytes; }
};

// The weights of one layer; each is loaded when the architecture's recipe has the op that uses it
// (architecture.h), else left empty.
struct LayerWeights {
  std::vector<float> attn_norm;  // [n_embd]                     kAttnNorm
  WeightMatrix wq, wk, wv, wo;   //                              kQkvProject, kAttnOutputAdd
  std::vector<float> bq, bk, bv; // [n_embd_q], [n_embd_kv] x 2  kQkvBias
  std::vector<float> q_norm, k_norm;  // [head_dim] each          kQkNorm
  std::vector<float> ffn_norm;   // [n_embd]                     kFfnNorm
  WeightMatrix w_gate, w_up, w_down;  //                         kGateUpProject, kFfnDown*Add
  std::vector<float> attn_post_norm, ffn_post_norm;  // [n_embd]  kAttnOutputPostNormAdd, kFfnDownPostNormAdd
  // kMoeFfn: the router [n_embd -> n_expert]; per expert, row views of the 3-D expert tensors
  // (n_ff_expert x n_embd gate and up, n_embd x n_ff_expert down); the shared expert and its gate.
  WeightMatrix router;
  std::vector<WeightMatrix> gate_exps, up_exps, down_exps;
  std::vector<float> shared_gate;  // [n_embd]
  WeightMatrix gate_shared, up_shared, down_shared;
};

class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path);
  // Builds from an already opened file (tests, the fuzzer).
  static absl::StatusOr<std::unique_ptr<Model>> FromGguf(std::unique_ptr<GgufFile> file);

  const ModelConfig& config() const { return config_; }
  const GgufFile& file() const { return *file_; }
  const WeightMatrix& token_embd() const { return token_embd_; }
  const WeightMatrix& output() const { return tied_ ? token_embd_ : output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  const std::vector<float>& rope_freqs() const { return rope_freqs_; }  // empty unless present
  // The RoPE frequency factors for a model run with a context of `n_ctx` tokens: rope_freqs.weight
  // (Llama 3.1), or with LongRoPE (phi3) the long factors when n_ctx exceeds
  // rope.scaling.original_context_length, else the short ones; null when the file has none.
  const float* rope_factors(int32_t n_ctx) const;
  const std::vector<LayerWeights>& layers() const { return layers_; }
  // Total bytes of weight data (for reports and memory planning).
  size_t weight_bytes() const { return weight_bytes_; }
  // Bytes of weights one single-token step reads: every layer's matrices, norms and biases, the
  // output norm and matrix, and one row of the token embedding (all of it where the output is tied
  // to it, as the logits read every row). Decode is bound by this over the memory's read
  // bandwidth; airlock-bench reports the fraction reached.
  size_t decode_weight_bytes() const { return decode_weight_bytes_; }

 private:
  Model() = default;

  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  WeightMatrix token_embd_;
  WeightMatrix output_;
  bool tied_ = false;
  std::vector<float> output_norm_;
  std::vector<float> rope_freqs_;
  std::vector<float> rope_factors_long_, rope_factors_short_;  // LongRoPE
  std::vector<LayerWeights> layers_;
  size_t weight_bytes_ = 0;
  size_t decode_weight_bytes_ = 0;
};

}  // namespace airlock::inference

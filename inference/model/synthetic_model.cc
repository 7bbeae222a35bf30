// Synthetic model writer: a seeded normal generator per tensor, quantized with our own kernels.
#include "inference/model/synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "inference/base/status.h"
#include "inference/base/tensor_type.h"
#include "inference/gguf/gguf_file.h"
#include "inference/gguf/gguf_writer.h"
#include "inference/kernels/quants.h"

namespace airlock::inference {
namespace {

// splitmix64: tiny, fast and identical on every platform, so a seed always gives the same file.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Where the stream is after `n` more calls of Next() (splitmix64 advances by a constant), with
  // no spare normal pending: lets rows be drawn on several threads as one thread draws them.
  void Skip(uint64_t n) {
    state_ += n * 0x9e3779b97f4a7c15ull;
    has_spare_ = false;
  }
  // Standard normal by Box-Muller on two uniforms in (0, 1].
  float Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = (static_cast<double>(Next() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(Next() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(2.0 * M_PI * u2));
  }

 private:
  uint64_t state_;
  bool has_spare_ = false;
  float spare_ = 0.0f;
};

uint64_t TensorSeed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;  // FNV-1a over the name, mixed with the seed
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// llama.cpp's Q4_K_M / Q5_K_M recipe: the output and half of attn_v / ffn_down get Q6_K.
bool UseMoreBits(int32_t layer, int32_t n_layer) {
  return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

struct WeightPlan {
  TensorType base;
  bool mix = false;  // *_K_M recipe
};

absl::StatusOr<WeightPlan> PlanFor(const std::string& name) {
  if (name == "q4_K_M" || name == "Q4_K_M" || name == "q4_k_m") return WeightPlan{TensorType::kQ4_K, true};
  if (name == "q5_K_M" || name == "Q5_K_M" || name == "q5_k_m") return WeightPlan{TensorType::kQ5_K, true};
  const std::optional<TensorType> t = ParseTensorType(name);
  if (!t || !Traits(*t).computable) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight type '", name, "' is not supported (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, "
                               "q6_K, q4_K_M, q5_K_M)"));
  }
  return WeightPlan{*t, false};
}

// K-quants need rows that are whole 256-blocks; fall back as llama-quantize does.
TensorType FitType(TensorType want, int64_t cols) {
  if (RowBytes(want, cols)) return want;
  if (RowBytes(TensorType::kQ8_0, cols)) return TensorType::kQ8_0;
  return TensorType::kF16;
}

absl::Status CheckRange(const char* field, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be in [", lo, ", ", hi, "], got ", v));
  }
  return absl::OkStatus();
}

void AddByteVocabulary(GgufWriter& w, int32_t n_vocab) {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  tokens = {"<unk>", "<s>", "</s>"};
  scores = {0.0f, 0.0f, 0.0f};
  types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(absl::StrFormat("<0x%02X>", b));
    scores.push_back(0.0f);
    types.push_back(6);
  }
  // Filler pieces so that the vocabulary has the requested size (valid, distinct, never merged).
  for (int32_t i = static_cast<int32_t>(tokens.size()); i < n_vocab; ++i) {
    tokens.push_back(absl::StrCat("\xe2\x96\x81synth", i));
    scores.push_back(-static_cast<float>(i));
    types.push_back(1);
  }
  w.SetString("tokenizer.ggml.model", "llama");
  w.SetStringArray("tokenizer.ggml.tokens", tokens);
  w.SetF32Array("tokenizer.ggml.scores", scores);
  w.SetI32Array("tokenizer.ggml.token_type", types);
  w.SetU32("tokenizer.ggml.bos_token_id", 1);
  w.SetU32("tokenizer.ggml.eos_token_id", 2);
  w.SetU32("tokenizer.ggml.unknown_token_id", 0);
}

// Copies every tokenizer.* key from another GGUF; returns its vocabulary size.
absl::StatusOr<int32_t> CopyVocabulary(GgufWriter& w, const std::string& path) {
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> src, GgufFile::Open(path));
  AIRLOCK_ASSIGN_OR_RETURN(std::vector<std::string_view> tokens, src->GetStringArray("tokenizer.ggml.tokens"));
  for (const auto& [key, value] : src->metadata()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    switch (value.type) {
      case GgufValueType::kString: w.SetString(key, std::string(value.string)); break;
      case GgufValueType::kBool: w.SetBool(key, value.boolean); break;
      case GgufValueType::kFloat32: w.SetF32(key, static_cast<float>(value.real)); break;
      case GgufValueType::kUint32: w.SetU32(key, static_cast<uint32_t>(value.unsigned_integer)); break;
      case GgufValueType::kInt32: w.SetI32(key, static_cast<int32_t>(value.integer)); break;
      case GgufValueType::kArray:
        if (value.element_type == GgufValueType::kString) {
          w.SetStringArray(key, std::vector<std::string>(value.strings.begin(), value.strings.end()));
        } else if (value.element_type == GgufValueType::kFloat32) {
          AIRLOCK_ASSIGN_OR_RETURN(std::vector<float> floats, src->GetF32Array(key));
          w.SetF32Array(key, floats);
        } else {
          AIRLOCK_ASSIGN_OR_RETURN(std::vector<int32_t> ints, src->GetI32Array(key));
          w.SetI32Array(key, ints);
        }
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("vocabulary key '", key, "' has an unsupported type"));
    }
  }
  return static_cast<int32_t>(tokens.size());
}

}  // namespace

absl::Status WriteSyntheticModel(const SyntheticModelSpec& spec, const std::string& path) {
  if (spec.arch != "llama" && spec.arch != "qwen2" && spec.arch != "qwen3" && spec.arch != "phi3" &&
      spec.arch != "gemma2") {
    return absl::InvalidArgumentError(
        absl::StrCat("arch must be llama, qwen2, qwen3, phi3 or gemma2, got '", spec.arch.substr(0, 32), "'"));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckRange("layers", spec.n_layer, 1, 512));
  AIRLOCK_RETURN_IF_ERROR(CheckRange("embd", spec.n_embd, 2, 65536));
  AIRLOCK_RETURN_IF_ERROR(CheckRange("heads", spec.n_head, 1, 1024));
  AIRLOCK_RETURN_IF_ERROR(CheckRange("kv-heads", spec.n_head_kv, 1, spec.n_head));
  AIRLOCK_RETURN_IF_ERROR(CheckRange("ff", spec.n_ff, 1, 262144));
  AIRLOCK_RETURN_IF_ERROR(CheckRange("ctx", spec.n_ctx, 1, 1 << 20));
  if (spec.n_embd % spec.n_head != 0 || (spec.n_embd / spec.n_head) % 2 != 0) {
    return absl::InvalidArgumentError("embd must be a multiple of heads with an even head dimension");
  }
  if (spec.n_head % spec.n_head_kv != 0) {
    return absl::InvalidArgumentError("heads must be a multiple of kv-heads");
  }
  AIRLOCK_ASSIGN_OR_RETURN(WeightPlan plan, PlanFor(spec.weight_type));

  GgufWriter w;
  const std::string a = spec.arch + ".";
  w.SetString("general.architecture", spec.arch);
  w.SetString("general.name", absl::StrCat("synthetic-", spec.arch, "-", spec.n_layer, "L-", spec.n_embd, "d-",
                                           spec.weight_type));
  w.SetU32(a + "block_count", spec.n_layer);
  w.SetU32(a + "context_length", spec.n_ctx);
  w.SetU32(a + "embedding_length", spec.n_embd);
  w.SetU32(a + "feed_forward_length", spec.n_ff);
  w.SetU32(a + "attention.head_count", spec.n_head);
  w.SetU32(a + "attention.head_count_kv", spec.n_head_kv);
  w.SetU32(a + "rope.dimension_count", spec.n_embd / spec.n_head);
  w.SetF32(a + "rope.freq_base", spec.rope_freq_base);
  w.SetF32(a + "attention.layer_norm_rms_epsilon", spec.rms_eps);
  if (spec.arch == "phi3") {
    // LongRoPE as llama.cpp's converter writes it for a model trained at its full context: the
    // short factors (all 1) apply at any context up to n_ctx; a window as wide as the context.
    w.SetU32(a + "rope.scaling.original_context_length", spec.n_ctx);
    w.SetF32(a + "rope.scaling.attn_factor", 1.0f);
    w.SetU32(a + "attention.sliding_window", spec.n_ctx);
  }
  if (spec.arch == "gemma2") {
    // Gemma 2's published settings: a 4096-token window on even layers, caps 50 and 30.
    w.SetU32(a + "attention.sliding_window", 4096);
    w.SetF32(a + "attn_logit_softcapping", 50.0f);
    w.SetF32(a + "final_logit_softcapping", 30.0f);
  }
  int32_t n_vocab = spec.n_vocab;
  if (!spec.vocab_from.empty()) {
    AIRLOCK_ASSIGN_OR_RETURN(n_vocab, CopyVocabulary(w, spec.vocab_from));
  } else {
    AIRLOCK_RETURN_IF_ERROR(CheckRange("vocab", spec.n_vocab, 259, 1 << 20));
    AddByteVocabulary(w, n_vocab);
  }
  w.SetU32(a + "vocab_size", n_vocab);

  const uint64_t seed = spec.seed;
  const float stddev = spec.weight_std;
  const int64_t n_threads =
      spec.threads > 0 ? std::min(spec.threads, 256) : std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), 64);
  auto matrix = [&](const std::string& name, int64_t cols, int64_t rows, TensorType type) -> absl::Status {
    const TensorType t = FitType(type, cols);
    return w.AddTensor(name, t, {cols, rows}, [name, cols, rows, t, seed, stddev, n_threads](uint8_t* out, size_t bytes) {
      const size_t row_bytes = bytes / static_cast<size_t>(rows);
      // Rows [begin, end): the normals one stream would draw for them (a row of an even number of
      // columns starts with no spare normal and takes `cols` calls of Next()).
      auto draw = [&](int64_t begin, int64_t end) {
        Rng rng(TensorSeed(seed, name));
        rng.Skip(static_cast<uint64_t>(begin) * static_cast<uint64_t>(cols));
        std::vector<float> row(static_cast<size_t>(cols));
        for (int64_t r = begin; r < end; ++r) {
          for (float& v : row) v = rng.Normal() * stddev;
          kernels::QuantizeRow(t, row.data(), out + r * row_bytes, cols);
        }
      };
      // The same bytes on any number of threads: large tensors (a 1B model's Q4_K_M file took
      // 4 min 40 s on one thread) are split by rows.
      const int64_t threads = n_threads;
      if (cols % 2 != 0 || threads == 1 || rows * cols < (int64_t{1} << 20)) {
        draw(0, rows);
        return;
      }
      std::vector<std::thread> pool;
      for (int64_t i = 0; i < threads; ++i) {
        const int64_t begin = rows * i / threads, end = rows * (i + 1) / threads;
        if (begin < end) pool.emplace_back(draw, begin, end);
      }
      for (std::thread& th : pool) th.join();
    });
  };
  auto vector = [&](const std::string& name, int64_t n, float value) -> absl::Status {
    std::vector<uint8_t> data(static_cast<size_t>(n) * 4);
    for (int64_t i = 0; i < n; ++i) std::memcpy(&data[i * 4], &value, 4);
    return w.AddTensor(name, TensorType::kF32, {n}, std::move(data));
  };
  auto random_vector = [&](const std::string& name, int64_t n) -> absl::Status {
    Rng rng(TensorSeed(seed, name));
    std::vector<uint8_t> data(static_cast<size_t>(n) * 4);
    for (int64_t i = 0; i < n; ++i) {
      const float v = rng.Normal() * stddev;
      std::memcpy(&data[i * 4], &v, 4);
    }
    return w.AddTensor(name, TensorType::kF32, {n}, std::move(data));
  };

  const int64_t head_dim = spec.n_embd / spec.n_head;
  const int64_t q_dim = spec.n_embd, kv_dim = head_dim * spec.n_head_kv;
  const TensorType base = plan.base;
  const TensorType more = plan.mix ? TensorType::kQ6_K : base;
  AIRLOCK_RETURN_IF_ERROR(matrix("token_embd.weight", spec.n_embd, n_vocab, spec.tied_embeddings ? more : base));
  const bool phi3 = spec.arch == "phi3";
  if (phi3) {
    AIRLOCK_RETURN_IF_ERROR(vector("rope_factors_long.weight", head_dim / 2, 1.0f));
    AIRLOCK_RETURN_IF_ERROR(vector("rope_factors_short.weight", head_dim / 2, 1.0f));
  }
  for (int32_t i = 0; i < spec.n_layer; ++i) {
    const std::string b = absl::StrCat("blk.", i, ".");
    const bool more_bits = plan.mix && UseMoreBits(i, spec.n_layer);
    AIRLOCK_RETURN_IF_ERROR(vector(b + "attn_norm.weight", spec.n_embd, 1.0f));
    if (phi3) {  // fused: Q, K, V rows in one matrix
      AIRLOCK_RETURN_IF_ERROR(matrix(b + "attn_qkv.weight", spec.n_embd, q_dim + 2 * kv_dim, more_bits ? more : base));
    } else {
      AIRLOCK_RETURN_IF_ERROR(matrix(b + "attn_q.weight", spec.n_embd, q_dim, base));
      AIRLOCK_RETURN_IF_ERROR(matrix(b + "attn_k.weight", spec.n_embd, kv_dim, base));
      AIRLOCK_RETURN_IF_ERROR(matrix(b + "attn_v.weight", spec.n_embd, kv_dim, more_bits ? more : base));
    }
    if (spec.arch == "qwen3") {
      AIRLOCK_RETURN_IF_ERROR(vector(b + "attn_q_norm.weight", head_dim, 1.0f));
      AIRLOCK_RETURN_IF_ERROR(vector(b + "attn_k_norm.weight", head_dim, 1.0f));
    }
    if (spec.arch == "qwen2") {
      AIRLOCK_RETURN_IF_ERROR(random_vector(b + "attn_q.bias", q_dim));
      AIRLOCK_RETURN_IF_ERROR(random_vector(b + "attn_k.bias", kv_dim));
      AIRLOCK_RETURN_IF_ERROR(random_vector(b + "attn_v.bias", kv_dim));
    }
    AIRLOCK_RETURN_IF_ERROR(matrix(b + "attn_output.weight", q_dim, spec.n_embd, base));
    if (spec.arch == "gemma2") AIRLOCK_RETURN_IF_ERROR(vector(b + "post_attention_norm.weight", spec.n_embd, 1.0f));
    AIRLOCK_RETURN_IF_ERROR(vector(b + "ffn_norm.weight", spec.n_embd, 1.0f));
    if (phi3) {  // fused: gate rows, then up rows
      AIRLOCK_RETURN_IF_ERROR(matrix(b + "ffn_up.weight", spec.n_embd, 2 * spec.n_ff, base));
    } else {
      AIRLOCK_RETURN_IF_ERROR(matrix(b + "ffn_gate.weight", spec.n_embd, spec.n_ff, base));
      AIRLOCK_RETURN_IF_ERROR(matrix(b + "ffn_up.weight", spec.n_embd, spec.n_ff, base));
    }
    AIRLOCK_RETURN_IF_ERROR(matrix(b + "ffn_down.weight", spec.n_ff, spec.n_embd, more_bits ? more : base));
    if (spec.arch == "gemma2") AIRLOCK_RETURN_IF_ERROR(vector(b + "post_ffw_norm.weight", spec.n_embd, 1.0f));
  }
  AIRLOCK_RETURN_IF_ERROR(vector("output_norm.weight", spec.n_embd, 1.0f));
  if (!spec.tied_embeddings) {
    AIRLOCK_RETURN_IF_ERROR(matrix("output.weight", spec.n_embd, n_vocab, more));
  }
  return w.WriteFile(path);
}

}  // namespace airlock::inference

// Model loading: hyper-parameters from real files, and refusals that name what is wrong.
#include "inference/model/model.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "inference/gguf/gguf_writer.h"
#include "inference/model/architecture.h"
#include "inference/model/synthetic_model.h"
#include "tests/support/test_data.h"

namespace airlock::inference {
namespace {

using ::testing::HasSubstr;

TEST(ModelTest, Stories260KConfig) {
  const std::string path = testing::SharedPath("models/stories260K-f32.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.recipe, FindArchitecture("llama"));
  EXPECT_EQ(c.n_layer, 5);
  EXPECT_EQ(c.n_embd, 64);
  EXPECT_EQ(c.n_head, 8);
  EXPECT_EQ(c.n_head_kv, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.n_ff, 172);
  EXPECT_EQ(c.n_vocab, 512);
  EXPECT_EQ(c.n_ctx_train, 512);
  EXPECT_FLOAT_EQ(c.rope_freq_base, 10000.0f);
  EXPECT_FALSE(c.tied_embeddings);
}

TEST(ModelTest, SynthTiedAndRopeBase) {
  const std::string path = testing::SharedPath("models/synth-llama-2L-256d-q4_k_m.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FLOAT_EQ(c.rope_freq_base, 500000.0f);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ((*model)->output().name, "token_embd.weight");
  EXPECT_EQ((*model)->layers()[1].w_down.type, TensorType::kQ6_K);
}

// decode_weight_bytes() against the file's own tensor list: every tensor of a single-token step
// (blocks, output norm, output or the tied embedding in full) plus one embedding row otherwise.
size_t DecodeBytesFromTensorList(const GgufFile& f) {
  size_t bytes = 0, embd_bytes = 0, embd_rows = 1;
  bool has_output = false;
  for (const GgufTensorInfo& t : f.tensors()) {
    if (t.name == "token_embd.weight") {
      embd_bytes = t.bytes;
      embd_rows = static_cast<size_t>(t.ne(1));
    } else {
      has_output = has_output || t.name == "output.weight";
      if (t.name != "rope_freqs.weight") bytes += t.bytes;
    }
  }
  return bytes + (has_output ? embd_bytes / embd_rows : embd_bytes);
}

TEST(ModelTest, DecodeWeightBytesCountsWhatOneStepReads) {
  for (const char* name : {"models/stories260K-f32.gguf", "models/synth-llama-2L-256d-q4_k_m.gguf"}) {
    const std::string path = testing::SharedPath(name);
    AIRLOCK_REQUIRE_SHARED_FILE(path);
    auto model = Model::Load(path);
    ASSERT_TRUE(model.ok()) << model.status();
    const size_t expected = DecodeBytesFromTensorList((*model)->file());
    EXPECT_EQ((*model)->decode_weight_bytes(), expected) << name;
    EXPECT_LE((*model)->decode_weight_bytes(), (*model)->weight_bytes()) << name;
  }
}

// The file image must outlive the model built from it (weights point into it).
struct Loaded {
  std::unique_ptr<std::string> image;
  absl::StatusOr<std::unique_ptr<Model>> model = absl::UnknownError("not loaded");
  const absl::Status& status() const { return model.status(); }
  bool ok() const { return model.ok(); }
  Model* operator->() const { return model->get(); }
};

// Writes a tiny valid model (width `e`, all F32), minus `drop_tensor` and with attn_q of the given
// type and row count, and loads it.
Loaded LoadModified(const std::string& arch, const std::string& drop_tensor, TensorType q_type = TensorType::kF32,
                    int64_t q_rows = -1, int64_t e = 8) {
  if (q_rows < 0) q_rows = e;
  GgufWriter w;
  w.SetString("general.architecture", arch);
  const std::string a = arch + ".";
  w.SetU32(a + "block_count", 1);
  w.SetU32(a + "embedding_length", static_cast<uint32_t>(e));
  w.SetU32(a + "attention.head_count", 2);
  w.SetU32(a + "feed_forward_length", 16);
  w.SetU32(a + "context_length", 64);
  auto add = [&](const std::string& name, TensorType type, std::vector<int64_t> shape) {
    if (name == drop_tensor) return;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const size_t bytes = *RowBytes(type, shape[0]) * static_cast<size_t>(n / shape[0]);
    EXPECT_TRUE(w.AddTensor(name, type, shape, std::vector<uint8_t>(bytes, 0)).ok()) << name;
  };
  const TensorType f32 = TensorType::kF32;
  add("token_embd.weight", f32, {e, 32});
  add("output_norm.weight", f32, {e});
  add("blk.0.attn_norm.weight", f32, {e});
  add("blk.0.attn_q.weight", q_type, {e, q_rows});
  add("blk.0.attn_k.weight", f32, {e, e});
  add("blk.0.attn_v.weight", f32, {e, e});
  add("blk.0.attn_output.weight", f32, {e, e});
  add("blk.0.ffn_norm.weight", f32, {e});
  add("blk.0.ffn_gate.weight", f32, {e, 16});
  add("blk.0.ffn_up.weight", f32, {e, 16});
  add("blk.0.ffn_down.weight", f32, {16, e});
  Loaded out;
  out.image = std::make_unique<std::string>(w.Serialize());
  auto file = GgufFile::Parse(reinterpret_cast<const uint8_t*>(out.image->data()), out.image->size());
  out.model = file.ok() ? Model::FromGguf(std::move(*file)) : absl::StatusOr<std::unique_ptr<Model>>(file.status());
  return out;
}

TEST(ModelTest, TinyValidModelLoads) {
  auto model = LoadModified("llama", "");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(model->config().tied_embeddings);
  EXPECT_EQ(model->config().n_vocab, 32);
}

TEST(ModelTest, UnsupportedArchitectureIsNamed) {
  auto model = LoadModified("mamba", "");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("'mamba'"));
}

TEST(ModelTest, MissingTensorIsNamed) {
  auto model = LoadModified("llama", "blk.0.ffn_up.weight");
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("blk.0.ffn_up.weight"));
}

TEST(ModelTest, WrongShapeIsNamed) {
  auto model = LoadModified("llama", "", TensorType::kF32, 6);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("blk.0.attn_q.weight"));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("expected [8, 8]"));
}

TEST(ModelTest, UnsupportedTensorTypeIsNamed) {
  // Q2_K is a valid GGUF type that our kernels do not implement: refused at load, naming both.
  auto model = LoadModified("llama", "", TensorType::kQ2_K, 256, 256);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("blk.0.attn_q.weight"));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("q2_K"));
}

TEST(ModelTest, UnsupportedTypeMessageNamesType) {
  SyntheticModelSpec spec;
  spec.n_embd = 256;
  spec.n_head = 4;
  spec.n_head_kv = 2;
  spec.weight_type = "q2_K";
  const absl::Status s = WriteSyntheticModel(spec, testing::MakeTempDir() + "/x.gguf");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("'q2_K'"));
}

// Large tensors are drawn and quantised on several threads; the file is the same bytes as one
// thread writes (each row's normals come from the point of the tensor's stream one thread reaches).
TEST(ModelTest, SyntheticFilesAreTheSameBytesOnAnyNumberOfThreads) {
  SyntheticModelSpec spec;
  spec.n_layer = 1;
  spec.n_embd = 512;
  spec.n_head = 8;
  spec.n_head_kv = 4;
  spec.n_ff = 2048;  // 1 Mi elements per FF matrix: split by rows
  spec.weight_type = "q4_K_M";
  const std::string dir = testing::MakeTempDir();
  auto bytes_with = [&](int32_t threads) {
    spec.threads = threads;
    const std::string path = absl::StrCat(dir, "/t", threads, ".gguf");
    const absl::Status s = WriteSyntheticModel(spec, path);
    EXPECT_TRUE(s.ok()) << s;
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const std::string one = bytes_with(1);
  ASSERT_GT(one.size(), size_t{1} << 20);
  EXPECT_TRUE(one == bytes_with(3)) << "three threads wrote other bytes";
  EXPECT_TRUE(one == bytes_with(8)) << "eight threads wrote other bytes";
}

// `airlockctl model synth --arch qwen3|phi3|gemma2`: files the loader reads as those
// architectures, with the tensors their ops name (per-head norms; fused QKV and gate/up, LongRoPE
// factors; post-norms, window and soft-caps).
TEST(ModelTest, SynthesisesQwen3Phi3AndGemma2Files) {
  const std::string dir = testing::MakeTempDir();
  for (const char* arch : {"qwen3", "phi3", "gemma2"}) {
    SCOPED_TRACE(arch);
    SyntheticModelSpec spec;
    spec.arch = arch;
    spec.n_embd = 256;
    spec.n_head = 4;
    spec.n_head_kv = 2;
    spec.n_ff = 512;
    spec.n_ctx = 1024;
    spec.weight_type = "q4_K_M";
    const std::string path = absl::StrCat(dir, "/", arch, ".gguf");
    ASSERT_TRUE(WriteSyntheticModel(spec, path).ok());
    absl::StatusOr<std::unique_ptr<Model>> m = Model::Load(path);
    ASSERT_TRUE(m.ok()) << m.status();
    const ModelConfig& c = (*m)->config();
    EXPECT_EQ(c.arch_name, arch);
    const LayerWeights& l = (*m)->layers()[1];
    EXPECT_EQ(l.wq.rows, 256);
    EXPECT_EQ(l.wv.rows, 128);
    EXPECT_EQ(l.w_up.rows, 512);
    if (std::string(arch) == "qwen3") {
      EXPECT_EQ(l.q_norm.size(), 64u);
      EXPECT_EQ(l.k_norm.size(), 64u);
    } else if (std::string(arch) == "gemma2") {
      EXPECT_EQ(l.attn_post_norm.size(), 256u);
      EXPECT_EQ(l.ffn_post_norm.size(), 256u);
      EXPECT_TRUE(c.sliding_window_applied);
      EXPECT_EQ(c.sliding_window, 4096);
      EXPECT_FLOAT_EQ(c.attn_softcap, 50.0f);
      EXPECT_FLOAT_EQ(c.final_softcap, 30.0f);
      EXPECT_FLOAT_EQ(c.embd_scale, 16.0f);
    } else {
      EXPECT_TRUE(c.has_longrope);
      EXPECT_EQ(c.sliding_window, 1024);
      EXPECT_EQ(c.rope_original_ctx, 1024);
      EXPECT_EQ(l.wk.data, l.wq.data + 256 * l.wq.row_bytes);  // one fused matrix
      ASSERT_NE((*m)->rope_factors(1024), nullptr);
      EXPECT_EQ((*m)->rope_factors(1024)[31], 1.0f);
    }
  }
  SyntheticModelSpec bad;
  bad.arch = "mixtral";
  EXPECT_THAT(std::string(WriteSyntheticModel(bad, dir + "/bad.gguf").message()),
              HasSubstr("arch must be llama, qwen2, qwen3, phi3 or gemma2, got 'mixtral'"));
}

TEST(ModelTest, MissingFileNamesPath) {
  auto model = Model::Load("/nonexistent/dir/model.gguf");
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("/nonexistent/dir/model.gguf"));
}

}  // namespace
TEST(ArchitectureTest, TheTableDescribesEachArchitecture) {
  const ArchitectureRecipe* llama = FindArchitecture("llama");
  const ArchitectureRecipe* qwen2 = FindArchitecture("qwen2");
  ASSERT_NE(llama, nullptr);
  ASSERT_NE(qwen2, nullptr);
  const auto has = [](const ArchitectureRecipe* a, LayerOp op) {
    return std::find(a->layer.begin(), a->layer.end(), op) != a->layer.end();
  };
  EXPECT_FALSE(has(llama, LayerOp::kQkvBias));
  EXPECT_TRUE(has(qwen2, LayerOp::kQkvBias));
  EXPECT_EQ(llama->rope, RopeStyle::kAdjacent);
  EXPECT_EQ(qwen2->rope, RopeStyle::kNeox);
  // Biases come after the projection and before RoPE, attention before its output projection.
  const auto at = [](const ArchitectureRecipe* a, LayerOp op) { return std::find(a->layer.begin(), a->layer.end(), op); };
  EXPECT_LT(at(qwen2, LayerOp::kQkvProject), at(qwen2, LayerOp::kQkvBias));
  EXPECT_LT(at(qwen2, LayerOp::kQkvBias), at(qwen2, LayerOp::kRope));
  EXPECT_LT(at(llama, LayerOp::kAttention), at(llama, LayerOp::kAttnOutputAdd));
  // Qwen3: no biases; each head of Q and K normed after the projection and before RoPE.
  const ArchitectureRecipe* qwen3 = FindArchitecture("qwen3");
  ASSERT_NE(qwen3, nullptr);
  EXPECT_FALSE(has(qwen3, LayerOp::kQkvBias));
  EXPECT_FALSE(has(llama, LayerOp::kQkNorm) || has(qwen2, LayerOp::kQkNorm));
  EXPECT_EQ(qwen3->rope, RopeStyle::kNeox);
  EXPECT_LT(at(qwen3, LayerOp::kQkvProject), at(qwen3, LayerOp::kQkNorm));
  EXPECT_LT(at(qwen3, LayerOp::kQkNorm), at(qwen3, LayerOp::kRope));
  // Phi-3: Llama's ops on fused tensors, NeoX RoPE.
  const ArchitectureRecipe* phi3 = FindArchitecture("phi3");
  ASSERT_NE(phi3, nullptr);
  EXPECT_TRUE(phi3->fused_qkv && phi3->fused_gate_up);
  EXPECT_FALSE(llama->fused_qkv || llama->fused_gate_up || qwen3->fused_qkv);
  EXPECT_TRUE(std::equal(phi3->layer.begin(), phi3->layer.end(), llama->layer.begin(), llama->layer.end()));
  EXPECT_EQ(phi3->rope, RopeStyle::kNeox);
  // Gemma 2: post-norms instead of plain residual adds, GeGLU, and the model-level flags.
  const ArchitectureRecipe* gemma2 = FindArchitecture("gemma2");
  ASSERT_NE(gemma2, nullptr);
  EXPECT_TRUE(has(gemma2, LayerOp::kAttnOutputPostNormAdd) && has(gemma2, LayerOp::kFfnDownPostNormAdd));
  EXPECT_TRUE(has(gemma2, LayerOp::kGeGlu));
  EXPECT_FALSE(has(gemma2, LayerOp::kAttnOutputAdd) || has(gemma2, LayerOp::kFfnDownAdd) ||
               has(gemma2, LayerOp::kSwiGlu));
  EXPECT_TRUE(gemma2->scale_embeddings && gemma2->sliding_window_even_layers && gemma2->soft_caps);
  EXPECT_FALSE(llama->scale_embeddings || llama->sliding_window_even_layers || llama->soft_caps);
  EXPECT_EQ(gemma2->rope, RopeStyle::kNeox);
  EXPECT_EQ(FindArchitecture("gpt2"), nullptr);
  // Mixtures of experts: their own rows, chosen by the file's expert count (a llama file with
  // experts is Mixtral).
  const ArchitectureRecipe* mixtral = FindArchitecture("llama", /*experts=*/true);
  const ArchitectureRecipe* qwen2moe = FindArchitecture("qwen2moe", /*experts=*/true);
  ASSERT_NE(mixtral, nullptr);
  ASSERT_NE(qwen2moe, nullptr);
  EXPECT_EQ(FindArchitecture("qwen2moe"), nullptr);
  EXPECT_NE(mixtral, llama);
  EXPECT_TRUE(has(mixtral, LayerOp::kMoeFfn) && has(qwen2moe, LayerOp::kMoeFfn));
  EXPECT_FALSE(has(mixtral, LayerOp::kGateUpProject) || has(mixtral, LayerOp::kFfnDownAdd));
  EXPECT_TRUE(mixtral->moe_norm_weights && !mixtral->moe_shared_expert);
  EXPECT_TRUE(qwen2moe->moe_shared_expert && !qwen2moe->moe_norm_weights);
  EXPECT_TRUE(has(qwen2moe, LayerOp::kQkvBias));
  EXPECT_EQ(mixtral->rope, RopeStyle::kAdjacent);
  EXPECT_EQ(qwen2moe->rope, RopeStyle::kNeox);
  EXPECT_EQ(SupportedArchitectures(), "llama, qwen2, qwen3, phi3, gemma2, qwen2moe");
}

// The expert settings and tensors as the loader reads them, and what one decode step reads: the
// chosen experts only (../shared/models/arch/README.md).
TEST(ModelTest, MixtureOfExpertsSettingsAndDecodeBytes) {
  for (const char* file : {"synth-qwen2moe-2L-256d-e4k2-q8_0", "synth-mixtral-2L-256d-e4k2-q8_0"}) {
    SCOPED_TRACE(file);
    const std::string path = testing::SharedPath(absl::StrCat("models/arch/", file, ".gguf"));
    AIRLOCK_REQUIRE_SHARED_FILE(path);
    auto model = Model::Load(path);
    ASSERT_TRUE(model.ok()) << model.status();
    const ModelConfig& c = (*model)->config();
    const bool qwen = c.arch_name == "qwen2moe";
    EXPECT_TRUE(c.recipe->experts);
    EXPECT_EQ(c.n_expert, 4);
    EXPECT_EQ(c.n_expert_used, 2);
    EXPECT_EQ(c.n_ff_expert, 64);
    EXPECT_EQ(c.n_ff_shared, qwen ? 128 : 0);
    const LayerWeights& l = (*model)->layers()[1];
    ASSERT_EQ(l.gate_exps.size(), 4u);
    EXPECT_EQ(l.gate_exps[2].rows, 64);
    EXPECT_EQ(l.down_exps[2].rows, 256);
    EXPECT_EQ(l.gate_exps[1].data, l.gate_exps[0].data + 64 * l.gate_exps[0].row_bytes);  // views of one tensor
    EXPECT_EQ(l.router.rows, 4);
    EXPECT_EQ(l.shared_gate.size(), qwen ? 256u : 0u);
    // A step reads 2 of the 4 experts of each layer.
    size_t all = 0, one = 0;
    for (const LayerWeights& layer : (*model)->layers()) {
      for (size_t e = 0; e < layer.gate_exps.size(); ++e) {
        const size_t bytes = layer.gate_exps[e].bytes() + layer.up_exps[e].bytes() + layer.down_exps[e].bytes();
        all += bytes;
        if (e == 0) one += bytes;
      }
    }
    EXPECT_EQ(all, 4 * one);
    // Everything in the file but the two unchosen experts per layer (and, untied, all but one row
    // of the embedding).
    const WeightMatrix& embd = (*model)->token_embd();
    const size_t unread = 2 * one + (c.tied_embeddings ? 0 : embd.bytes() - embd.row_bytes);
    EXPECT_EQ((*model)->decode_weight_bytes() + unread, (*model)->weight_bytes());
  }
}

// gemma2's settings as the loader reads them from the synthetic file (../shared/models/arch/README.md).
TEST(ModelTest, Gemma2SettingsComeFromItsMetadata) {
  const std::string path = testing::SharedPath("models/arch/synth-gemma2-26L-64d-q8_0.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.n_layer, 26);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.n_embd_q(), 256);  // more query outputs than n_embd, as Gemma-2-9B/27B
  EXPECT_FLOAT_EQ(c.embd_scale, 8.0f);
  EXPECT_FLOAT_EQ(c.attn_softcap, 8.0f);
  EXPECT_FLOAT_EQ(c.final_softcap, 12.0f);
  EXPECT_FLOAT_EQ(c.kq_scale, 0.125f);  // 1 / sqrt(head_dim): the 26-layer size
  EXPECT_EQ(c.sliding_window, 32);
  EXPECT_TRUE(c.sliding_window_applied);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ((*model)->layers()[3].attn_post_norm.size(), 64u);
  EXPECT_EQ((*model)->layers()[3].ffn_post_norm.size(), 64u);
}

// phi3's fused tensors become row ranges of one matrix (no copy), and its LongRoPE factors follow
// the context the model runs with: long beyond rope.scaling.original_context_length (128 in the
// synthetic file), short up to it.
TEST(ModelTest, Phi3FusedTensorsAreRowViewsAndLongRopeFollowsTheContext) {
  const std::string path = testing::SharedPath("models/arch/synth-phi3-2L-256d-q4_k_m.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  absl::StatusOr<std::unique_ptr<Model>> m = Model::Load(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = (*m)->config();
  EXPECT_TRUE(c.has_longrope);
  EXPECT_EQ(c.rope_original_ctx, 128);
  EXPECT_NEAR(c.rope_attn_factor, 1.1338934f, 1e-6f);
  EXPECT_EQ(c.sliding_window, 2047);
  const LayerWeights& l = (*m)->layers()[0];
  EXPECT_EQ(l.wq.rows, 256);
  EXPECT_EQ(l.wk.rows, 128);
  EXPECT_EQ(l.wv.rows, 128);
  EXPECT_EQ(l.wk.data, l.wq.data + 256 * l.wq.row_bytes);
  EXPECT_EQ(l.wv.data, l.wk.data + 128 * l.wk.row_bytes);
  EXPECT_EQ(l.w_gate.rows, 256);
  EXPECT_EQ(l.w_up.data, l.w_gate.data + 256 * l.w_gate.row_bytes);
  const float* long_factors = (*m)->rope_factors(129);
  const float* short_factors = (*m)->rope_factors(128);
  ASSERT_NE(long_factors, nullptr);
  ASSERT_NE(short_factors, nullptr);
  EXPECT_NE(long_factors, short_factors);
  EXPECT_EQ((*m)->rope_factors(512), long_factors);
  EXPECT_GT(long_factors[31], short_factors[31]);  // long = 1 ... 40, short = 1 ... 1.25
  // A file without LongRoPE has no factors.
  absl::StatusOr<std::unique_ptr<Model>> stories = Model::Load(testing::SharedPath("models/stories260K-f32.gguf"));
  ASSERT_TRUE(stories.ok()) << stories.status();
  EXPECT_EQ((*stories)->rope_factors(512), nullptr);
}

}  // namespace airlock::inference

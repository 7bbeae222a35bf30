// Model loading: hyper-parameters from real files, and refusals that name what is wrong.
#include "inference/model/model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "inference/gguf/gguf_writer.h"
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
  EXPECT_EQ(c.arch, Architecture::kLlama);
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

// Writes a tiny valid model, lets `mutate` change the writer, and loads it.
absl::StatusOr<std::unique_ptr<Model>> LoadModified(const std::string& arch, const std::string& drop_tensor,
                                                    TensorType q_type = TensorType::kF32,
                                                    int64_t q_rows = 8) {
  GgufWriter w;
  w.SetString("general.architecture", arch);
  const std::string a = arch + ".";
  w.SetU32(a + "block_count", 1);
  w.SetU32(a + "embedding_length", 8);
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
  add("token_embd.weight", TensorType::kF32, {8, 32});
  add("output_norm.weight", TensorType::kF32, {8});
  add("blk.0.attn_norm.weight", TensorType::kF32, {8});
  add("blk.0.attn_q.weight", q_type, {q_type == TensorType::kF32 ? 8 : 256, q_rows});
  add("blk.0.attn_k.weight", TensorType::kF32, {8, 8});
  add("blk.0.attn_v.weight", TensorType::kF32, {8, 8});
  add("blk.0.attn_output.weight", TensorType::kF32, {8, 8});
  add("blk.0.ffn_norm.weight", TensorType::kF32, {8});
  add("blk.0.ffn_gate.weight", TensorType::kF32, {8, 16});
  add("blk.0.ffn_up.weight", TensorType::kF32, {8, 16});
  add("blk.0.ffn_down.weight", TensorType::kF32, {16, 8});
  const std::string image = w.Serialize();
  auto* copy = new std::string(image);  // kept alive for the model's lifetime in this test
  auto file = GgufFile::Parse(reinterpret_cast<const uint8_t*>(copy->data()), copy->size());
  if (!file.ok()) return file.status();
  return Model::FromGguf(std::move(*file));
}

TEST(ModelTest, TinyValidModelLoads) {
  auto model = LoadModified("llama", "");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE((*model)->config().tied_embeddings);
  EXPECT_EQ((*model)->config().n_vocab, 32);
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
  // A Q2_K attn_q: a valid GGUF type our kernels do not implement. (Shape check comes first, so
  // give it a matching 256-wide model: here it fails on shape or type; either way it is named.)
  auto model = LoadModified("llama", "", TensorType::kQ2_K, 8);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("blk.0.attn_q.weight"));
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

TEST(ModelTest, MissingFileNamesPath) {
  auto model = Model::Load("/nonexistent/dir/model.gguf");
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("/nonexistent/dir/model.gguf"));
}

}  // namespace
}  // namespace airlock::inference

// CPU forward pass invariants: batching, threads and KV reuse give the same logits; bad input is
// refused without touching the sequence; synthetic models of every weight type and both
// architectures run.
#include <cmath>
#include <cstdio>
#include <tuple>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "inference/backend/backend.h"
#include "inference/model/model.h"
#include "inference/model/synthetic_model.h"
#include "tests/support/test_data.h"

namespace airlock::inference {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<ModelExecutor> MakeExecutor(const Model& model, int threads, KvCacheType kv, int batch = 512) {
  ExecutorOptions o;
  o.n_threads = threads;
  o.n_ctx = 256;
  o.n_batch = batch;
  o.kv_type = kv;
  auto ex = CreateCpuBackend()->CreateExecutor(model, o);
  EXPECT_TRUE(ex.ok()) << ex.status();
  return ex.ok() ? std::move(*ex) : nullptr;
}

std::vector<float> AllLogits(ModelExecutor& ex, const std::vector<int32_t>& tokens, int32_t n_vocab) {
  std::vector<float> out(tokens.size() * n_vocab);
  auto seq = ex.NewSequence();
  EXPECT_TRUE(ex.Forward(**seq, tokens, out.data(), true).ok());
  return out;
}

float MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

class ForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = testing::SharedPath("models/stories260K-f32.gguf");
    AIRLOCK_REQUIRE_SHARED_FILE(path);
    auto m = Model::Load(path);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  std::unique_ptr<Model> model_;
  const std::vector<int32_t> tokens_ = {1, 403, 407, 261, 378, 11, 280, 300, 45, 9, 417, 260, 301};
};

TEST_F(ForwardTest, BatchedPrefillEqualsTokenByToken) {
  auto ex = MakeExecutor(*model_, 1, KvCacheType::kF32);
  const int32_t nv = model_->config().n_vocab;
  const std::vector<float> batched = AllLogits(*ex, tokens_, nv);
  auto seq = ex->NewSequence();
  std::vector<float> one(nv);
  for (size_t i = 0; i < tokens_.size(); ++i) {
    ASSERT_TRUE(ex->Forward(**seq, std::span<const int32_t>(&tokens_[i], 1), one.data(), false).ok());
    for (int32_t v = 0; v < nv; ++v) ASSERT_NEAR(one[v], batched[i * nv + v], 1e-4) << "pos " << i;
  }
  EXPECT_EQ((*seq)->n_past(), static_cast<int32_t>(tokens_.size()));
}

TEST_F(ForwardTest, SmallBatchesAndThreadCountsAgree) {
  const int32_t nv = model_->config().n_vocab;
  auto ref = MakeExecutor(*model_, 1, KvCacheType::kF32);
  const std::vector<float> want = AllLogits(*ref, tokens_, nv);
  for (int threads : {2, 3}) {
    for (int batch : {1, 4, 512}) {
      auto ex = MakeExecutor(*model_, threads, KvCacheType::kF32, batch);
      EXPECT_LE(MaxDiff(AllLogits(*ex, tokens_, nv), want), 1e-4) << threads << " threads, batch " << batch;
    }
  }
}

TEST_F(ForwardTest, TruncateAndReplayReproducesLogits) {
  const int32_t nv = model_->config().n_vocab;
  auto ex = MakeExecutor(*model_, 2, KvCacheType::kF16);
  auto seq = ex->NewSequence();
  std::vector<float> a(nv), b(nv);
  ASSERT_TRUE(ex->Forward(**seq, tokens_, a.data(), false).ok());
  (*seq)->Truncate(5);
  ASSERT_EQ((*seq)->n_past(), 5);
  ASSERT_TRUE(ex->Forward(**seq, std::span<const int32_t>(tokens_).subspan(5), b.data(), false).ok());
  EXPECT_EQ(a, b);
}

TEST_F(ForwardTest, RefusesBadTokensAndOverflowWithoutChangingSequence) {
  auto ex = MakeExecutor(*model_, 1, KvCacheType::kF16);
  auto seq = ex->NewSequence();
  std::vector<float> logits(model_->config().n_vocab);
  const std::vector<int32_t> bad = {1, 512};
  absl::Status s = ex->Forward(**seq, bad, logits.data(), false);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("token id 512 at index 1"));
  const std::vector<int32_t> negative = {-3};
  EXPECT_EQ(ex->Forward(**seq, negative, logits.data(), false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*seq)->n_past(), 0);
  std::vector<int32_t> too_long(257, 1);
  s = ex->Forward(**seq, too_long, logits.data(), false);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*seq)->n_past(), 0);
  EXPECT_EQ(ex->Forward(**seq, {}, logits.data(), false).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ExecutorOptionsTest, RejectsBadOptions) {
  const std::string path = testing::SharedPath("models/stories260K-f32.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok());
  ExecutorOptions o;
  o.n_threads = 0;
  EXPECT_FALSE(CreateCpuBackend()->CreateExecutor(**model, o).ok());
  o.n_threads = 1;
  o.n_batch = 0;
  EXPECT_FALSE(CreateCpuBackend()->CreateExecutor(**model, o).ok());
}

// Every weight type, both architectures: the synthetic writer's output loads, runs, and its logits
// stay close to the F32 model of the same seed (quantisation error only).
class SyntheticForwardTest : public ::testing::TestWithParam<std::tuple<std::string, double>> {};

std::vector<float> SynthLogits(const std::string& type, const std::string& arch, bool tied) {
  SyntheticModelSpec spec;
  spec.arch = arch;
  spec.n_layer = 2;
  spec.n_embd = 256;
  spec.n_head = 4;
  spec.n_head_kv = 2;
  spec.n_ff = 512;
  spec.n_vocab = 300;
  spec.weight_type = type;
  spec.tied_embeddings = tied;
  spec.weight_std = 0.05f;
  spec.seed = 7;
  const std::string path = testing::MakeTempDir() + "/m.gguf";
  absl::Status s = WriteSyntheticModel(spec, path);
  EXPECT_TRUE(s.ok()) << s;
  auto model = Model::Load(path);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  auto ex = MakeExecutor(**model, 2, KvCacheType::kF32);
  return AllLogits(*ex, {1, 5, 9, 260, 33, 2, 100}, (*model)->config().n_vocab);
}

// ||a - b|| / ||b||
double RelativeRms(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

TEST_P(SyntheticForwardTest, CloseToF32Reference) {
  const std::string type = std::get<0>(GetParam());
  const double bound = std::get<1>(GetParam());
  for (const char* arch : {"llama", "qwen2"}) {
    for (bool tied : {false, true}) {
      const std::vector<float> ref = SynthLogits("f32", arch, tied);
      const std::vector<float> got = SynthLogits(type, arch, tied);
      ASSERT_EQ(ref.size(), got.size());
      for (float v : got) ASSERT_TRUE(std::isfinite(v));
      const double err = RelativeRms(got, ref);
      std::printf("[ synth ] %s %s%s: relative RMS logit error vs f32 %.4f (bound %.2f)\n", type.c_str(), arch,
                  tied ? " tied" : "", err, bound);
      EXPECT_LE(err, bound) << arch << (tied ? " tied" : "");
    }
  }
}

// Bounds: about 1.5x the error measured for each type (random-weight models amplify weight
// quantisation error; a wrong kernel gives errors near 1.4, the distance between unrelated models).
INSTANTIATE_TEST_SUITE_P(Types, SyntheticForwardTest,
                         ::testing::Values(std::make_tuple("f16", 0.002), std::make_tuple("bf16", 0.012),
                                           std::make_tuple("q8_0", 0.04), std::make_tuple("q4_0", 0.45),
                                           std::make_tuple("q4_1", 0.4), std::make_tuple("q5_0", 0.25),
                                           std::make_tuple("q5_1", 0.22), std::make_tuple("q4_K", 0.38),
                                           std::make_tuple("q5_K", 0.2), std::make_tuple("q6_K", 0.1),
                                           std::make_tuple("q4_K_M", 0.35)));

TEST(SyntheticModelTest, SameSeedSameBytes) {
  SyntheticModelSpec spec;
  spec.weight_type = "q4_K_M";
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(WriteSyntheticModel(spec, dir + "/a.gguf").ok());
  ASSERT_TRUE(WriteSyntheticModel(spec, dir + "/b.gguf").ok());
  EXPECT_EQ(testing::ReadFileOrDie(dir + "/a.gguf"), testing::ReadFileOrDie(dir + "/b.gguf"));
  spec.seed = 2;
  ASSERT_TRUE(WriteSyntheticModel(spec, dir + "/c.gguf").ok());
  EXPECT_NE(testing::ReadFileOrDie(dir + "/a.gguf"), testing::ReadFileOrDie(dir + "/c.gguf"));
}

TEST(SyntheticModelTest, BadSpecsAreNamed) {
  const std::string path = testing::MakeTempDir() + "/x.gguf";
  SyntheticModelSpec spec;
  spec.n_head_kv = 3;
  EXPECT_THAT(std::string(WriteSyntheticModel(spec, path).message()), HasSubstr("kv-heads"));
  spec = {};
  spec.arch = "gpt2";
  EXPECT_THAT(std::string(WriteSyntheticModel(spec, path).message()), HasSubstr("arch"));
  spec = {};
  spec.n_vocab = 10;
  EXPECT_THAT(std::string(WriteSyntheticModel(spec, path).message()), HasSubstr("vocab"));
  spec = {};
  EXPECT_FALSE(WriteSyntheticModel(spec, "/nonexistent-dir/x.gguf").ok());
}

}  // namespace
}  // namespace airlock::inference

// Continuous batching: a sequence's logits and tokens do not depend on what else is in its batch
// (executor and engine) nor on the instruction set the kernels use, prefix sharing hits and changes nothing, the pool holds only what tokens
// need, cancellation gives blocks back, preemption recomputes exactly, and a request that cannot
// fit in the pool is refused up front.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "inference/backend/backend.h"
#include "inference/backend/cpu/ops.h"
#include "inference/base/fp16.h"
#include "inference/engine.h"
#include "inference/kernels/quants.h"
#include "inference/model/model.h"
#include "tests/support/test_data.h"

namespace airlock::inference {
namespace {

using ::testing::HasSubstr;

// Waits for `done` to hold, checking every few milliseconds, for at most `seconds`.
template <typename F>
bool PollUntil(F done, double seconds = 60) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// ---- Executor: one batched step equals each sequence alone, bit for bit ----------------------

class ForwardBatchTest : public ::testing::TestWithParam<std::tuple<std::string, KvCacheType>> {};

TEST_P(ForwardBatchTest, EachSequenceGetsTheLogitsItGetsAlone) {
  const auto& [name, kv] = GetParam();
  const std::string path = testing::SharedPath("models/" + name + ".gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  ExecutorOptions o;
  o.n_threads = 2;
  o.n_ctx = 128;
  o.n_batch = 64;
  o.kv_type = kv;
  o.kv_block_tokens = 4;  // prompts straddle blocks
  o.prefix_cache = false;
  auto ex = CreateCpuBackend()->CreateExecutor(**model, o);
  ASSERT_TRUE(ex.ok()) << ex.status();
  const int32_t n_vocab = (*model)->config().n_vocab;
  const std::vector<int32_t> a = {1, 403, 407, 261, 378, 11, 280};      // decoding after 6
  const std::vector<int32_t> b = {1, 45, 9, 417, 260, 301, 12, 13, 14, 15, 300, 301, 302};  // prefill
  const std::vector<int32_t> c = {1};                                   // a lone BOS

  // Alone: a's prefix, then its last token; b and c whole.
  std::vector<float> a_alone(n_vocab), b_alone(n_vocab), c_alone(n_vocab);
  {
    auto s = (*ex)->NewSequence();
    ASSERT_TRUE((*ex)->Forward(**s, std::span(a).first(6), a_alone.data(), false).ok());
    ASSERT_TRUE((*ex)->Forward(**s, std::span(a).subspan(6), a_alone.data(), false).ok());
    auto t = (*ex)->NewSequence();
    ASSERT_TRUE((*ex)->Forward(**t, b, b_alone.data(), false).ok());
    auto u = (*ex)->NewSequence();
    ASSERT_TRUE((*ex)->Forward(**u, c, c_alone.data(), false).ok());
  }
  // Together: a's last token, b and c in one step.
  auto sa = (*ex)->NewSequence();
  std::vector<float> scratch(n_vocab);
  ASSERT_TRUE((*ex)->Forward(**sa, std::span(a).first(6), scratch.data(), false).ok());
  auto sb = (*ex)->NewSequence();
  auto sc = (*ex)->NewSequence();
  ASSERT_TRUE((*sa)->Reserve(1) && (*sb)->Reserve(static_cast<int32_t>(b.size())) && (*sc)->Reserve(1));
  std::vector<float> a_batch(n_vocab), b_batch(n_vocab), c_batch(n_vocab);
  const BatchEntry batch[3] = {{sa->get(), std::span(a).subspan(6), a_batch.data(), false},
                               {sb->get(), b, b_batch.data(), false},
                               {sc->get(), c, c_batch.data(), false}};
  ASSERT_TRUE((*ex)->ForwardBatch(batch).ok());
  EXPECT_EQ(std::memcmp(a_alone.data(), a_batch.data(), n_vocab * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(b_alone.data(), b_batch.data(), n_vocab * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(c_alone.data(), c_batch.data(), n_vocab * sizeof(float)), 0);
  EXPECT_EQ((*sa)->n_past(), 7);
  EXPECT_EQ((*sb)->n_past(), static_cast<int32_t>(b.size()));
}

INSTANTIATE_TEST_SUITE_P(Models, ForwardBatchTest,
                         ::testing::Combine(::testing::Values("stories260K-f32", "synth-llama-2L-256d-q4_k_m",
                                                              "synth-llama-2L-256d-q8_0",
                                                              "arch/synth-qwen3-2L-256d-f32",
                                                              "arch/synth-phi3-2L-256d-q4_k_m",
                                                              "arch/synth-gemma2-26L-64d-q4_k_m",
                                                              "arch/synth-qwen2moe-2L-256d-e4k2-q4_k_m",
                                                              "arch/synth-mixtral-2L-256d-e4k2-q8_0"),
                                            ::testing::Values(KvCacheType::kF32, KvCacheType::kF16)),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + KvCacheTypeName(std::get<1>(info.param));
                           std::replace_if(n.begin(), n.end(), [](char c) { return c == '-' || c == '/'; }, '_');
                           return n;
                         });

// gemma2's even layers see the last 32 positions only; whole KV blocks before the window are
// skipped and the rest masked. The logits of a 90-token prompt and of decoding after it (three
// windows) must not depend on where the block boundaries fall.
TEST(SlidingWindowTest, LogitsDoNotDependOnTheKvBlockSize) {
  const std::string path = testing::SharedPath("models/arch/synth-gemma2-26L-64d-f32.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->config().sliding_window, 32);
  ASSERT_TRUE((*model)->config().SlidingLayer(0) && !(*model)->config().SlidingLayer(1));
  const int32_t n_vocab = (*model)->config().n_vocab;
  std::vector<int32_t> prompt = {1};
  for (int32_t i = 0; i < 89; ++i) prompt.push_back(3 + (i * 37) % 500);
  std::vector<std::vector<float>> runs;
  for (const int32_t block : {1, 4, 16, 64}) {
    ExecutorOptions o;
    o.n_threads = 2;
    o.n_ctx = 128;
    o.n_batch = 128;
    o.kv_type = KvCacheType::kF32;
    o.kv_block_tokens = block;
    o.prefix_cache = false;
    auto ex = CreateCpuBackend()->CreateExecutor(**model, o);
    ASSERT_TRUE(ex.ok()) << ex.status();
    auto seq = (*ex)->NewSequence();
    ASSERT_TRUE(seq.ok());
    std::vector<float> logits(static_cast<size_t>(n_vocab) * 2);
    ASSERT_TRUE((*ex)->Forward(**seq, prompt, logits.data(), false).ok());
    const int32_t next = 7;
    ASSERT_TRUE((*ex)->Forward(**seq, std::span<const int32_t>(&next, 1), logits.data() + n_vocab, false).ok());
    runs.push_back(std::move(logits));
  }
  for (size_t i = 1; i < runs.size(); ++i) {
    EXPECT_EQ(std::memcmp(runs[0].data(), runs[i].data(), runs[0].size() * sizeof(float)), 0) << "run " << i;
  }
}

// ---- Executor: the same logits on every instruction set ---------------------------------------

// A prompt's logits (prefill through the matrix-matrix kernels, then two decode steps through the
// matrix-vector ones) under the kernels' and attention ops' scalar, AVX2 and AVX-512 paths: a
// request's output must not depend on the CPU that serves it.
class ForwardIsaTest : public ::testing::TestWithParam<std::tuple<std::string, KvCacheType>> {
 protected:
  void TearDown() override {
    kernels::SetIsaForTesting(kernels::BestSupportedIsa());
    cpu::ForceScalarOpsForTesting(false);
  }
};

TEST_P(ForwardIsaTest, EveryInstructionSetGivesTheSameLogits) {
  const auto& [name, kv] = GetParam();
  const std::string path = testing::SharedPath("models/" + name + ".gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  ExecutorOptions o;
  o.n_threads = 2;
  o.n_ctx = 64;
  o.n_batch = 64;
  o.kv_type = kv;
  o.prefix_cache = false;
  const int32_t n_vocab = (*model)->config().n_vocab;
  const std::vector<int32_t> prompt = {1, 45, 9, 417, 260, 301, 12, 13, 14, 15, 300, 301, 302};
  const auto logits_under = [&](kernels::Isa isa) {
    kernels::SetIsaForTesting(isa);
    cpu::ForceScalarOpsForTesting(isa == kernels::Isa::kScalar);
    std::vector<float> out(3 * static_cast<size_t>(n_vocab));
    auto ex = CreateCpuBackend()->CreateExecutor(**model, o);
    EXPECT_TRUE(ex.ok()) << ex.status();
    if (!ex.ok()) return out;
    auto s = (*ex)->NewSequence();
    EXPECT_TRUE((*ex)->Forward(**s, prompt, out.data(), false).ok());
    const int32_t next[2] = {402, 7};
    for (int k = 0; k < 2; ++k) {
      EXPECT_TRUE((*ex)->Forward(**s, std::span(next + k, 1), out.data() + (k + 1) * n_vocab, false).ok());
    }
    return out;
  };
  const std::vector<float> reference = logits_under(kernels::Isa::kScalar);
  int checked = 0;
  for (kernels::Isa isa : {kernels::Isa::kAvx2, kernels::Isa::kAvx512}) {
    if (!kernels::IsaSupported(isa)) continue;
    const std::vector<float> got = logits_under(isa);
    ++checked;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(FloatBits(got[i]), FloatBits(reference[i]))
          << kernels::IsaName(isa) << " against scalar: step " << i / n_vocab << ", logit " << i % n_vocab;
    }
  }
  if (checked == 0) GTEST_SKIP() << "this CPU has only the scalar path";
}

INSTANTIATE_TEST_SUITE_P(Models, ForwardIsaTest,
                         ::testing::Values(std::make_tuple("stories260K-f32", KvCacheType::kF32),
                                           std::make_tuple("stories260K-f16", KvCacheType::kF16),
                                           std::make_tuple("synth-llama-2L-256d-q4_0", KvCacheType::kF16),
                                           std::make_tuple("synth-llama-2L-256d-q4_k_m", KvCacheType::kF32),
                                           std::make_tuple("synth-llama-2L-256d-q6_k", KvCacheType::kF16),
                                           std::make_tuple("synth-llama-2L-256d-q8_0", KvCacheType::kF16),
                                           std::make_tuple("arch/synth-qwen3-2L-256d-f32", KvCacheType::kF16),
                                           std::make_tuple("arch/synth-phi3-2L-256d-q4_k_m", KvCacheType::kF16),
                                           std::make_tuple("arch/synth-gemma2-26L-64d-f32", KvCacheType::kF16),
                                           std::make_tuple("arch/synth-qwen2moe-2L-256d-e4k2-q4_k_m", KvCacheType::kF16),
                                           std::make_tuple("arch/synth-mixtral-2L-256d-e4k2-f32", KvCacheType::kF32)),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + KvCacheTypeName(std::get<1>(info.param));
                           std::replace_if(n.begin(), n.end(), [](char c) { return c == '-' || c == '/'; }, '_');
                           return n;
                         });

TEST(ForwardBatchRefusalTest, BadBatchesChangeNothing) {
  const std::string path = testing::SharedPath("models/stories260K-f32.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok());
  ExecutorOptions o;
  o.n_ctx = 32;
  o.n_batch = 8;
  auto ex = CreateCpuBackend()->CreateExecutor(**model, o);
  ASSERT_TRUE(ex.ok());
  auto s = (*ex)->NewSequence();
  const std::vector<int32_t> nine(9, 1), two = {1, 2};
  ASSERT_TRUE((*s)->Reserve(9));
  const BatchEntry too_many[1] = {{s->get(), nine, nullptr, false}};
  EXPECT_THAT(std::string((*ex)->ForwardBatch(too_many).message()), HasSubstr("at most 8"));
  const BatchEntry twice[2] = {{s->get(), two, nullptr, false}, {s->get(), two, nullptr, false}};
  EXPECT_THAT(std::string((*ex)->ForwardBatch(twice).message()), HasSubstr("same sequence"));
  auto unreserved = (*ex)->NewSequence();
  const BatchEntry no_blocks[1] = {{unreserved->get(), two, nullptr, false}};
  EXPECT_EQ((*ex)->ForwardBatch(no_blocks).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*s)->n_past(), 0);
  EXPECT_EQ((*unreserved)->n_past(), 0);
}

// ---- Engine: the same request gives the same tokens alone or among many -----------------------

struct Case {
  std::string prompt;
  int32_t max_tokens;
  float temperature;
  uint64_t seed;
};

std::vector<Case> MixedCases() {
  std::vector<Case> cases;
  const std::string long_prompt =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
      "friends. One day, she saw a big red ball under a tree. She wanted to play with it, but it was too high. ";
  const char* starts[] = {"Once upon a time", "Lily", "The cat sat", "One day, Tom went to the park and",
                          "", "Sue had a big dog"};
  for (int i = 0; i < 14; ++i) {
    Case c;
    c.prompt = i % 5 == 4 ? long_prompt + starts[i % 6] : std::string(starts[i % 6]);
    if (i % 7 == 3) c.prompt = long_prompt + long_prompt;  // a long prompt: several chunks
    c.max_tokens = 8 + (i * 13) % 41;
    c.temperature = i % 2 == 0 ? 0.0f : 0.9f;  // greedy and seeded sampling
    c.seed = 1000 + static_cast<uint64_t>(i);
    cases.push_back(c);
  }
  return cases;
}

GenerateRequest ToRequest(const Case& c) {
  GenerateRequest r;
  r.prompt = c.prompt;
  r.max_tokens = c.max_tokens;
  r.sampling.temperature = c.temperature;
  r.sampling.seed = c.seed;
  return r;
}

std::unique_ptr<Engine> LoadEngine(const std::string& name, EngineOptions o) {
  const std::string path = testing::SharedPath("models/" + name + ".gguf");
  if (!std::filesystem::exists(path)) return nullptr;
  auto e = Engine::Load(path, o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

// Starts every case at once and waits for all of them.
std::vector<absl::StatusOr<GenerateResult>> RunConcurrently(Engine& engine, const std::vector<Case>& cases,
                                                            std::vector<std::string>* streamed = nullptr) {
  std::mutex mutex;
  std::condition_variable cv;
  size_t done = 0;
  std::vector<absl::StatusOr<GenerateResult>> results(cases.size(), absl::UnknownError("not run"));
  std::vector<std::string> texts(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const absl::Status started = engine.Start(
        ToRequest(cases[i]),
        [&texts, i](const GeneratedPiece& p) {
          texts[i] += p.text;
          return true;
        },
        [&, i](absl::StatusOr<GenerateResult> r) {
          std::lock_guard<std::mutex> lock(mutex);
          results[i] = std::move(r);
          ++done;
          cv.notify_all();
        });
    EXPECT_TRUE(started.ok()) << started;
    if (!started.ok()) {
      std::lock_guard<std::mutex> lock(mutex);
      ++done;
    }
  }
  std::unique_lock<std::mutex> lock(mutex);
  EXPECT_TRUE(cv.wait_for(lock, std::chrono::minutes(5), [&] { return done == cases.size(); }));
  if (streamed != nullptr) *streamed = texts;
  return results;
}

class EngineBatchingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineBatchingTest, ConcurrentRequestsGiveExactlyTheirSoloTokens) {
  EngineOptions o;
  o.n_threads = 2;
  o.max_sequences = 16;
  o.n_batch = 32;  // long prompts are read in chunks beside the decoding streams
  o.kv_block_tokens = 8;
  auto engine = LoadEngine(GetParam(), o);
  if (engine == nullptr) GTEST_SKIP() << "model missing";
  const std::vector<Case> cases = MixedCases();
  std::vector<GenerateResult> solo;
  for (const Case& c : cases) {
    auto r = engine->Generate(ToRequest(c), nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    solo.push_back(*std::move(r));
  }
  std::vector<std::string> streamed;
  const EngineStats before = engine->stats();
  auto together = RunConcurrently(*engine, cases, &streamed);
  const EngineStats after = engine->stats();
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("case ", i, ": \"", cases[i].prompt.substr(0, 30), "\""));
    ASSERT_TRUE(together[i].ok()) << together[i].status();
    EXPECT_EQ(together[i]->output_tokens, solo[i].output_tokens);
    EXPECT_EQ(together[i]->text, solo[i].text);
    EXPECT_EQ(streamed[i], solo[i].text);
    EXPECT_EQ(together[i]->stop_reason, solo[i].stop_reason);
  }
  // They really ran together: fewer steps than tokens generated.
  uint64_t generated = 0;
  for (const GenerateResult& r : solo) generated += r.output_tokens.size();
  EXPECT_LT(after.steps - before.steps, generated);
  EXPECT_EQ(after.kv_blocks_used, 0);
  EXPECT_EQ(after.running, 0);
}

TEST_P(EngineBatchingTest, PreemptedSequencesRecomputeToTheSameTokens) {
  EngineOptions o;
  o.n_threads = 2;
  o.max_sequences = 14;
  o.n_batch = 32;
  o.kv_block_tokens = 4;
  o.kv_pool_tokens = 320;  // the 14 cases need ~700 positions together: some must yield
  o.prefix_cache = false;  // preempted blocks are recomputed, not found again
  auto engine = LoadEngine(GetParam(), o);
  if (engine == nullptr) GTEST_SKIP() << "model missing";
  const std::vector<Case> cases = MixedCases();
  std::vector<GenerateResult> solo;
  for (const Case& c : cases) {
    auto r = engine->Generate(ToRequest(c), nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    solo.push_back(*std::move(r));
  }
  const EngineStats before = engine->stats();
  auto together = RunConcurrently(*engine, cases);
  uint64_t prompt_tokens = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("case ", i));
    ASSERT_TRUE(together[i].ok()) << together[i].status();
    EXPECT_EQ(together[i]->output_tokens, solo[i].output_tokens);
    prompt_tokens += together[i]->prompt_tokens.size();
  }
  const EngineStats after = engine->stats();
  EXPECT_GT(after.preemptions, before.preemptions);
  EXPECT_EQ(after.kv_blocks_used, 0);
  // A request is one prefix-cache query however often it was preempted and readmitted (also when
  // preempted before its prompt was done).
  EXPECT_EQ(after.prefix_query_tokens - before.prefix_query_tokens, prompt_tokens);
}

INSTANTIATE_TEST_SUITE_P(Models, EngineBatchingTest,
                         ::testing::Values("stories260K-f32", "stories260K-q8_0", "synth-llama-2L-256d-q4_k_m",
                                           "arch/synth-qwen3-2L-256d-f32", "arch/synth-phi3-2L-256d-q4_k_m",
                                           "arch/synth-gemma2-26L-64d-q4_k_m", "arch/synth-qwen2moe-2L-256d-e4k2-q4_k_m",
                                           "arch/synth-mixtral-2L-256d-e4k2-q8_0"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace_if(n.begin(), n.end(), [](char c) { return c == '-' || c == '/'; }, '_');
                           return n;
                         });

// ---- Prefix sharing ----------------------------------------------------------------------------

std::vector<int32_t> LongPrompt(const Engine& engine, int32_t n) {
  // Real text tokens (no BOS in the middle), cycled to length.
  std::vector<int32_t> text = engine.tokenizer().Encode(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", true, false);
  std::vector<int32_t> out;
  while (static_cast<int32_t>(out.size()) < n) out.push_back(text[out.size() % text.size()]);
  return out;
}

TEST(PrefixCacheTest, ASharedPrefixIsFoundAndChangesNoToken) {
  EngineOptions o;
  o.n_threads = 2;
  o.n_ctx = 2048;
  o.n_batch = 256;
  auto cached = LoadEngine("stories260K-f32", o);
  if (cached == nullptr) GTEST_SKIP() << "model missing";
  o.prefix_cache = false;
  auto uncached = LoadEngine("stories260K-f32", o);
  ASSERT_NE(uncached, nullptr);

  std::vector<int32_t> document = LongPrompt(*cached, 1000);
  GenerateRequest first;
  first.prompt_tokens = document;
  first.prompt_tokens.push_back(document[3]);  // "question 1"
  first.max_tokens = 12;
  first.sampling.temperature = 0;
  first.cache_scope = "alice";
  GenerateRequest second = first;
  second.prompt_tokens.back() = document[7];  // "question 2" over the same document

  ASSERT_TRUE(cached->Generate(first, nullptr).ok());
  const EngineStats before = cached->stats();
  auto hit = cached->Generate(second, nullptr);
  ASSERT_TRUE(hit.ok()) << hit.status();
  const EngineStats after = cached->stats();
  EXPECT_EQ(after.prefix_query_tokens - before.prefix_query_tokens, 1001u);
  // Every whole block of the document (1000 = 62 blocks of 16 + 8) came from the cache.
  EXPECT_EQ(after.prefix_hit_tokens - before.prefix_hit_tokens, 992u);
  auto reference = uncached->Generate(second, nullptr);
  ASSERT_TRUE(reference.ok());
  EXPECT_EQ(hit->output_tokens, reference->output_tokens);
  EXPECT_EQ(uncached->stats().prefix_hit_tokens, 0u);

  // Another scope finds nothing, even for the very same request.
  GenerateRequest bob = second;
  bob.cache_scope = "bob";
  const EngineStats b0 = cached->stats();
  auto miss = cached->Generate(bob, nullptr);
  ASSERT_TRUE(miss.ok());
  EXPECT_EQ(cached->stats().prefix_hit_tokens, b0.prefix_hit_tokens);
  EXPECT_EQ(miss->output_tokens, reference->output_tokens);

  // A chat's next turn (the previous prompt and answer, then more) reuses the answer's blocks too.
  GenerateRequest turn = second;
  turn.prompt_tokens.insert(turn.prompt_tokens.end(), hit->output_tokens.begin(), hit->output_tokens.end());
  turn.prompt_tokens.insert(turn.prompt_tokens.end(), document.begin(), document.begin() + 40);
  const EngineStats t0 = cached->stats();
  auto next = cached->Generate(turn, nullptr);
  ASSERT_TRUE(next.ok());
  EXPECT_GE(cached->stats().prefix_hit_tokens - t0.prefix_hit_tokens, 1008u);  // past the first answer
  auto next_reference = uncached->Generate(turn, nullptr);
  ASSERT_TRUE(next_reference.ok());
  EXPECT_EQ(next->output_tokens, next_reference->output_tokens);
}

// Prefix sharing on every architecture: a second request over the same 120-token document (past
// gemma2's 32-token window) reuses its cached blocks and gives the tokens an engine without a
// prefix cache gives.
TEST_P(EngineBatchingTest, ASharedPrefixIsReusedAndChangesNoToken) {
  EngineOptions o;
  o.n_threads = 2;
  o.n_batch = 64;
  o.kv_block_tokens = 8;
  auto cached = LoadEngine(GetParam(), o);
  if (cached == nullptr) GTEST_SKIP() << "model missing";
  o.prefix_cache = false;
  auto uncached = LoadEngine(GetParam(), o);
  ASSERT_NE(uncached, nullptr);
  const std::vector<int32_t> document = LongPrompt(*cached, 120);
  GenerateRequest first;
  first.prompt_tokens = document;
  first.prompt_tokens.push_back(document[3]);
  first.max_tokens = 10;
  first.sampling.temperature = 0;
  GenerateRequest second = first;
  second.prompt_tokens.back() = document[7];
  ASSERT_TRUE(cached->Generate(first, nullptr).ok());
  const EngineStats before = cached->stats();
  auto hit = cached->Generate(second, nullptr);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_EQ(cached->stats().prefix_hit_tokens - before.prefix_hit_tokens, 120u);  // 15 whole blocks
  auto reference = uncached->Generate(second, nullptr);
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_EQ(hit->output_tokens, reference->output_tokens);
}

// ---- Chunked prefill -----------------------------------------------------------------------------

TEST(ChunkedPrefillTest, DecodingStreamsAdvanceAtEveryStepOfALongPrefill) {
  EngineOptions o;
  o.n_threads = 2;
  o.n_ctx = 4096;
  o.max_sequences = 8;
  o.n_batch = 32;  // 7 decode tokens + 25 prompt tokens per step
  auto engine = LoadEngine("stories260K-f32", o);
  if (engine == nullptr) GTEST_SKIP() << "model missing";
  std::atomic<bool> stop{false};
  std::atomic<int> finished{0};
  std::vector<std::atomic<int>> tokens(7);
  for (int i = 0; i < 7; ++i) {
    GenerateRequest r;
    r.prompt = absl::StrCat("Once upon a time ", i);
    r.max_tokens = 3000;
    r.sampling.seed = static_cast<uint64_t>(i);
    r.cancelled = [&stop] { return stop.load(); };
    ASSERT_TRUE(engine
                    ->Start(
                        r, [&tokens, i](const GeneratedPiece& p) { return p.token >= 0 ? ++tokens[i] : 0, true; },
                        [&](absl::StatusOr<GenerateResult>) { ++finished; })
                    .ok());
  }
  const auto all_decoding = [&] {
    for (auto& t : tokens) {
      if (t.load() < 2) return false;
    }
    return true;
  };
  ASSERT_TRUE(PollUntil(all_decoding));
  GenerateRequest big;
  big.prompt_tokens = LongPrompt(*engine, 2000);
  big.max_tokens = 1;
  std::vector<int> at_start(7), at_first(7);
  const uint64_t steps_before = engine->stats().steps;
  for (int i = 0; i < 7; ++i) at_start[i] = tokens[i].load();
  auto result = engine->Generate(big, [&](const GeneratedPiece&) {
    for (int i = 0; i < 7; ++i) at_first[i] = tokens[i].load();
    return true;
  });
  ASSERT_TRUE(result.ok()) << result.status();
  // The prompt needs at least 2000 / 25 = 80 steps; every one of them also advanced each stream.
  EXPECT_GE(engine->stats().steps - steps_before, 80u);
  for (int i = 0; i < 7; ++i) EXPECT_GE(at_first[i] - at_start[i], 79) << "stream " << i;
  stop = true;
  ASSERT_TRUE(PollUntil([&] { return finished.load() == 7; }));
}

// ---- Memory, cancellation and admission --------------------------------------------------------

TEST(KvMemoryTest, SixteenSequencesHoldOnlyTheBlocksTheirTokensNeedAndCancelFreesThem) {
  EngineOptions o;
  o.n_threads = 2;
  o.n_ctx = 4096;
  o.max_sequences = 16;
  o.kv_block_tokens = 16;
  auto engine = LoadEngine("stories260K-f32", o);
  if (engine == nullptr) GTEST_SKIP() << "model missing";
  const EngineStats empty = engine->stats();
  // By default the pool holds every sequence at full context; memory follows the blocks in use.
  EXPECT_EQ(empty.kv_blocks_total * empty.kv_block_tokens, 16 * 4096);
  std::atomic<bool> stop{false};
  std::atomic<int> pieces{0}, finished{0};
  std::atomic<int> cancelled{0};
  for (int i = 0; i < 16; ++i) {
    GenerateRequest r;
    r.prompt = absl::StrCat("Once upon a time ", i);
    r.max_tokens = 4000;
    r.sampling.seed = static_cast<uint64_t>(i);
    r.cancelled = [&stop] { return stop.load(); };
    ASSERT_TRUE(engine
                    ->Start(
                        r, [&pieces](const GeneratedPiece&) { return ++pieces, true; },
                        [&](absl::StatusOr<GenerateResult> result) {
                          if (result.ok() && result->stop_reason == StopReason::kCancelled) ++cancelled;
                          ++finished;
                        })
                    .ok());
  }
  ASSERT_TRUE(PollUntil([&] { return engine->stats().running == 16 && pieces.load() >= 16 * 3; }));
  const EngineStats busy = engine->stats();
  // Each sequence holds its prompt and what it generated so far: a few blocks, not 256.
  EXPECT_GE(busy.kv_blocks_used, 16);
  EXPECT_LE(busy.kv_blocks_used * busy.kv_block_tokens, 16 * 4096 / 8);
  stop = true;
  ASSERT_TRUE(PollUntil([&] { return finished.load() == 16; }));
  EXPECT_EQ(cancelled.load(), 16);
  const EngineStats after = engine->stats();
  EXPECT_EQ(after.kv_blocks_used, 0);
  EXPECT_EQ(after.running, 0);
  EXPECT_EQ(after.waiting, 0);
}

TEST(KvAdmissionTest, ARequestLargerThanThePoolIsRefusedAtOnce) {
  EngineOptions o;
  o.n_ctx = 512;
  o.kv_pool_tokens = 64;
  auto engine = LoadEngine("stories260K-f32", o);
  if (engine == nullptr) GTEST_SKIP() << "model missing";
  GenerateRequest r;
  r.prompt = "Once upon a time";
  r.max_tokens = 100;
  bool called = false;
  const absl::Status refused = engine->Start(r, nullptr, [&](auto) { called = true; });
  EXPECT_EQ(refused.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("KV pool holds 64"));
  EXPECT_FALSE(called);
  r.max_tokens = 40;  // fits
  auto ok = engine->Generate(r, nullptr);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->output_tokens.size(), 40u);
}

TEST(EngineOptionsTest, BadBatchingOptionsAreNamed) {
  const std::string path = testing::SharedPath("models/stories260K-f32.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  EngineOptions o;
  o.max_sequences = 0;
  EXPECT_THAT(std::string(Engine::Load(path, o).status().message()), HasSubstr("max_sequences"));
  o.max_sequences = 32;
  o.n_batch = 16;
  EXPECT_THAT(std::string(Engine::Load(path, o).status().message()), HasSubstr("at least max_sequences"));
  o = EngineOptions{};
  o.kv_block_tokens = 0;
  EXPECT_THAT(std::string(Engine::Load(path, o).status().message()), HasSubstr("KV block size"));
}

TEST(EngineShutdownTest, DestroyingTheEngineEndsEveryRequestWithUnavailable) {
  EngineOptions o;
  o.max_sequences = 4;
  auto engine = LoadEngine("stories260K-f32", o);
  if (engine == nullptr) GTEST_SKIP() << "model missing";
  std::atomic<int> unavailable{0};
  std::atomic<int> pieces{0};
  for (int i = 0; i < 8; ++i) {  // 4 running, 4 waiting
    GenerateRequest r;
    r.prompt = "Once upon a time";
    r.max_tokens = 400;
    ASSERT_TRUE(engine
                    ->Start(
                        r, [&](const GeneratedPiece&) { return ++pieces, true; },
                        [&](absl::StatusOr<GenerateResult> result) {
                          if (result.status().code() == absl::StatusCode::kUnavailable) ++unavailable;
                        })
                    .ok());
  }
  ASSERT_TRUE(PollUntil([&] { return pieces.load() > 0; }));
  engine.reset();
  EXPECT_EQ(unavailable.load(), 8);
}

}  // namespace
}  // namespace airlock::inference

// Structured output through the Engine: every request with a JSON schema ends with a valid instance,
// alone or batched with others (the same tokens either way), a JSON object request gives an object,
// a schema the engine cannot honour is refused at Start with the keyword named, and requests
// repeating a schema share its masks.
#include <atomic>
#include <cmath>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "inference/engine.h"
#include "tests/support/test_data.h"

namespace airlock::inference {
namespace {

using ::testing::HasSubstr;

// Every instance of this schema is short (enums, booleans, integers of at most 19 digits, at most
// three array items, bounded whitespace), so every generation must end by itself.
constexpr char kSchema[] = R"({
  "type": "object",
  "properties": {
    "mood": {"enum": ["happy", "sad", "très fâché"]},
    "age": {"type": "integer"},
    "pets": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    "nothing": {"type": "null"},
    "child": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
  },
  "required": ["mood", "age", "pets"]
})";

// An independent check of an instance against kSchema.
void ExpectInstance(const std::string& text) {
  SCOPED_TRACE(text);
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  ASSERT_TRUE(j.is_object());
  for (const auto& [key, value] : j.items()) {
    EXPECT_TRUE(key == "mood" || key == "age" || key == "pets" || key == "nothing" || key == "child") << key;
  }
  ASSERT_TRUE(j.contains("mood") && j.contains("age") && j.contains("pets"));
  EXPECT_TRUE(j["mood"] == "happy" || j["mood"] == "sad" || j["mood"] == "très fâché");
  EXPECT_TRUE(j["age"].is_number_integer());
  ASSERT_TRUE(j["pets"].is_array());
  EXPECT_LE(j["pets"].size(), 3u);
  for (const auto& p : j["pets"]) EXPECT_TRUE(p.is_boolean());
  if (j.contains("nothing")) {
    EXPECT_TRUE(j["nothing"].is_null());
  }
  if (j.contains("child")) {
    ASSERT_TRUE(j["child"].is_object());
    EXPECT_EQ(j["child"].size(), 1u);
    EXPECT_TRUE(j["child"]["ok"].is_boolean());
  }
}

class StructuredOutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = testing::SharedPath("models/stories260K-f32.gguf");
    AIRLOCK_REQUIRE_SHARED_FILE(path);
    EngineOptions o;
    o.n_threads = 2;
    auto e = Engine::Load(path, o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }

  // Request i: greedy, or seeded at a temperature that makes the draws wander.
  GenerateRequest Request(int i) const {
    GenerateRequest r;
    r.prompt = i % 3 == 0 ? "Once upon a time" : (i % 3 == 1 ? "The cat said" : "Lily wanted to");
    r.max_tokens = 400;
    r.response_format.type = ResponseFormat::Type::kJsonSchema;
    r.response_format.json_schema = kSchema;
    if (i % 4 == 0) {
      r.sampling.temperature = 0.0f;
    } else {
      r.sampling.temperature = i % 4 == 1 ? 0.8f : 1.5f;
      r.sampling.top_k = i % 2 == 0 ? 0 : 40;
      r.sampling.seed = static_cast<uint64_t>(1000 + i);
    }
    return r;
  }

  std::unique_ptr<Engine> engine_;
};

TEST_F(StructuredOutputTest, EveryGenerationIsAnInstanceAloneAndBatched) {
  constexpr int kRequests = 16;
  std::vector<GenerateResult> alone;
  for (int i = 0; i < kRequests; ++i) {
    auto r = engine_->Generate(Request(i), nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->stop_reason, StopReason::kEndOfGeneration) << i << ": " << r->text;
    ExpectInstance(r->text);
    alone.push_back(std::move(*r));
  }
  std::vector<std::promise<absl::StatusOr<GenerateResult>>> promises(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(engine_
                    ->Start(Request(i), nullptr,
                            [&promises, i](absl::StatusOr<GenerateResult> r) { promises[i].set_value(std::move(r)); })
                    .ok());
  }
  for (int i = 0; i < kRequests; ++i) {
    absl::StatusOr<GenerateResult> r = promises[i].get_future().get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->output_tokens, alone[i].output_tokens) << "request " << i << " batched";
    EXPECT_EQ(r->text, alone[i].text);
  }
  // The sixteen requests used one schema: one set of masks.
  auto a = engine_->PrepareConstraint(Request(0).response_format);
  auto b = engine_->PrepareConstraint(Request(1).response_format);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_GT((*a)->stats().hits, 0);
}

// One mask cache shared by sequences on several threads (as the engine's replicas share a
// schema's masks): every mask each thread gets equals the one computed without the cache, and the
// cache, kept small, evicts while others read.
TEST_F(StructuredOutputTest, OneMaskCacheServesManyThreads) {
  TokenMaskCacheOptions small;
  small.max_bytes = 4 * 1024;  // a few masks of the 512-token vocabulary: constant eviction
  auto base = engine_->PrepareConstraint(Request(0).response_format);
  ASSERT_TRUE(base.ok());
  auto shared = std::make_shared<TokenMaskCache>((*base)->grammar_ptr(), (*base)->vocabulary_ptr(), small);
  std::atomic<int> mismatches{0}, steps{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      TokenConstraint constraint(shared);
      MaskWalker walker;
      TokenMask reference;
      std::vector<float> logits;
      uint32_t rng = 17u + static_cast<uint32_t>(t);
      for (int generation = 0; generation < 20; ++generation) {
        constraint.Reset();
        for (int i = 0; i < 200 && !constraint.IsFinished(); ++i) {
          const int32_t n = shared->vocabulary().n_vocab();
          logits.assign(static_cast<size_t>(n), 0.0f);
          constraint.Apply(logits.data(), n);
          shared->Compute(constraint.state(), &walker, &reference);
          std::vector<int32_t> allowed;
          for (int32_t id = 0; id < n; ++id) {
            const bool masked = std::isinf(logits[static_cast<size_t>(id)]);
            const bool eog = shared->vocabulary().IsEndOfGeneration(id);
            if (!eog && masked == reference.Allows(id)) mismatches.fetch_add(1);
            if (!masked) allowed.push_back(id);
          }
          if (allowed.empty()) {
            mismatches.fetch_add(1);
            break;
          }
          rng = rng * 1664525u + 1013904223u;
          if (!constraint.Accept(allowed[(rng >> 8) % allowed.size()]).ok()) mismatches.fetch_add(1);
          steps.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_GT(steps.load(), 400);
  EXPECT_GT(shared->stats().evictions, 0);
}

TEST_F(StructuredOutputTest, JsonObjectGivesAnObject) {
  for (int i = 0; i < 4; ++i) {
    GenerateRequest r = Request(i);
    r.response_format = ResponseFormat{ResponseFormat::Type::kJsonObject, ""};
    r.max_tokens = 200;
    auto out = engine_->Generate(r, nullptr);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_FALSE(out->text.empty());
    EXPECT_EQ(out->text.front(), '{') << out->text;
    if (out->stop_reason == StopReason::kEndOfGeneration) {
      const nlohmann::json j = nlohmann::json::parse(out->text, nullptr, false);
      EXPECT_TRUE(j.is_object()) << out->text;
    } else {
      EXPECT_EQ(out->stop_reason, StopReason::kMaxTokens);  // an object longer than max_tokens
    }
  }
}

TEST_F(StructuredOutputTest, UnsupportedSchemaIsRefusedAtStart) {
  GenerateRequest r = Request(0);
  r.response_format.json_schema = R"({"type":"object","properties":{"date":{"type":"string","pattern":"^x$"}}})";
  bool called = false;
  const absl::Status s = engine_->Start(r, nullptr, [&called](absl::StatusOr<GenerateResult>) { called = true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("pattern"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("/properties/date"));
  r.response_format.json_schema = "{not json";
  EXPECT_EQ(engine_->Start(r, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(called);
}

}  // namespace
}  // namespace airlock::inference

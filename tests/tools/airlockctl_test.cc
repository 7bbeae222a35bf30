// airlockctl end to end: the real binary, its JSON output against llama.cpp's golden records,
// inspect and synth, and clear errors for bad input.
#include <cstdio>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/run_command.h"
#include "tests/support/test_data.h"

namespace airlock {
namespace {

using ::testing::HasSubstr;

using testing::CommandResult;

TEST(AirlockctlTest, RunJsonMatchesGolden) {
  const std::string model = testing::SharedPath("models/stories260K-f32.gguf");
  const std::string golden = testing::SharedPath("golden/kv-f32/stories260K-f32.jsonl");
  AIRLOCK_REQUIRE_SHARED_FILE(model);
  AIRLOCK_REQUIRE_SHARED_FILE(golden);
  for (const nlohmann::json& rec : testing::ReadJsonLines(golden)) {
    const std::string id = rec["case_id"];
    if (id != "once" && id != "unicode" && id != "whitespace") continue;
    SCOPED_TRACE(id);
    CommandResult o = testing::RunAirlockctl({"run", "--model", model, "--prompt", rec["prompt"], "--max-tokens",
                           std::to_string(rec["n_predict"].get<int>()), "--temperature", "0", "--kv-type", "f32",
                           "--threads", "2", "--json"});
    ASSERT_EQ(o.exit_code, 0) << o.err;
    const nlohmann::json j = nlohmann::json::parse(o.out);
    EXPECT_EQ(j["prompt_tokens"], rec["prompt_tokens"]);
    EXPECT_EQ(j["output_tokens"], rec["output_tokens"]);
    EXPECT_EQ(j["output_text"], rec["output_text"]);
    EXPECT_EQ(j["stop_reason"], "max_tokens");
  }
}

TEST(AirlockctlTest, RunStreamsText) {
  const std::string model = testing::SharedPath("models/stories260K-f32.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(model);
  CommandResult o = testing::RunAirlockctl({"run", "-m", model, "-p", "Once upon a time", "-n", "12", "--temperature", "0"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr(", there was a little girl named Lily."));
}

TEST(AirlockctlTest, InspectPrintsConfigAndTensors) {
  const std::string model = testing::SharedPath("models/synth-llama-2L-256d-q4_k_m.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(model);
  CommandResult o = testing::RunAirlockctl({"model", "inspect", model});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("architecture:  llama"));
  EXPECT_THAT(o.out, HasSubstr("heads:         4 (kv 2, head dim 64)"));
  EXPECT_THAT(o.out, HasSubstr("tied"));
  EXPECT_THAT(o.out, HasSubstr("blk.1.ffn_down.weight"));
  EXPECT_THAT(o.out, HasSubstr("q6_K"));
}

TEST(AirlockctlTest, SynthThenRun) {
  const std::string path = testing::MakeTempDir() + "/s.gguf";
  CommandResult o = testing::RunAirlockctl({"model", "synth", "--out", path, "--layers", "2", "--embd", "128", "--heads", "4",
                         "--kv-heads", "2", "--ff", "256", "--type", "q8_0", "--vocab", "400"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  o = testing::RunAirlockctl({"run", "-m", path, "-p", "hello", "-n", "8", "--json"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["output_tokens"].size(), 8u);
  EXPECT_EQ(j["prompt_tokens"][0], 1);
}

TEST(AirlockctlTest, BadInputGetsClearErrors) {
  const std::string dir = testing::MakeTempDir();
  const std::string junk = dir + "/junk.gguf";
  {
    FILE* f = std::fopen(junk.c_str(), "wb");
    std::fputs("this is not a model", f);
    std::fclose(f);
  }
  CommandResult o = testing::RunAirlockctl({"run", "-m", junk, "-p", "x"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("bad magic"));
  o = testing::RunAirlockctl({"model", "inspect", junk});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr(junk));
  o = testing::RunAirlockctl({"run", "-m", dir + "/missing.gguf", "-p", "x"});
  EXPECT_NE(o.exit_code, 0);
  o = testing::RunAirlockctl({"run", "-m", junk, "-p", "x", "--kv-type", "q8"});
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_THAT(o.err, HasSubstr("--kv-type"));
  const std::string model = testing::SharedPath("models/stories260K-f32.gguf");
  if (testing::internal::FileExists(model)) {
    o = testing::RunAirlockctl({"run", "-m", model, "-p", "x", "--top-p", "1.5"});
    EXPECT_EQ(o.exit_code, 1);
    EXPECT_THAT(o.err, HasSubstr("top_p must be in (0, 1], got 1.5"));
  }
  o = testing::RunAirlockctl({"model", "synth", "--out", dir + "/x.gguf", "--type", "iq2_xxs"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("iq2_xxs"));
}

}  // namespace
}  // namespace airlock

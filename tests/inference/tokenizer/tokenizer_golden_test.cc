// The golden generation records from llama.cpp: prompt_tokens must equal our Encode(prompt,
// add_special=true, parse_special=false), and the generated ids must detokenize to output_text (raw
// bytes in output_text_hex; U+FFFD-replaced text through the streaming detokenizer).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/tokenizer.h"
#include "inference/tokenizer/utf8.h"
#include "tests/support/test_data.h"

namespace airlock::inference {
namespace {

constexpr const char* kGoldenModels[] = {
    "stories260K-f32",         "stories260K-f16",           "stories260K-q8_0",
    "stories260K-q4_0",        "llama-2-tiny-random",       "synth-llama-2L-256d-f16",
    "synth-llama-2L-256d-q8_0", "synth-llama-2L-256d-q4_0", "synth-llama-2L-256d-q4_k_m",
    "synth-llama-2L-256d-q6_k",
};

// Tokenizers by model file name, loaded once for all tests.
const Tokenizer* TokenizerFor(const std::string& model_file) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto it = cache->find(model_file);
  if (it != cache->end()) return it->second.get();
  auto file = GgufFile::Open(testing::SharedPath("models/" + model_file));
  if (!file.ok()) return nullptr;
  auto tokenizer = Tokenizer::FromGguf(**file);
  if (!tokenizer.ok()) {
    ADD_FAILURE() << model_file << ": " << tokenizer.status();
    return nullptr;
  }
  return cache->emplace(model_file, std::move(*tokenizer)).first->second.get();
}

std::vector<int32_t> Ids(const nlohmann::json& array) {
  std::vector<int32_t> ids;
  for (const auto& v : array) ids.push_back(v.get<int32_t>());
  return ids;
}

class GoldenRecordsTest : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenRecordsTest, PromptTokensAndOutputText) {
  for (const char* kv : {"kv-f32", "kv-f16"}) {
    const std::string path = testing::SharedPath(std::string("golden/") + kv + "/" + GetParam() + ".jsonl");
    AIRLOCK_REQUIRE_SHARED_FILE(path);
    const std::vector<nlohmann::json> records = testing::ReadJsonLines(path);
    ASSERT_EQ(records.size(), 10u) << path;
    for (const nlohmann::json& r : records) {
      SCOPED_TRACE(std::string(kv) + " " + r["case_id"].get<std::string>());
      const std::string model = r["model"].get<std::string>();
      AIRLOCK_REQUIRE_SHARED_FILE(testing::SharedPath("models/" + model));
      const Tokenizer* t = TokenizerFor(model);
      ASSERT_NE(t, nullptr);
      ASSERT_FALSE(r["parse_special"].get<bool>());
      EXPECT_EQ(t->add_bos(), r["add_bos"].get<bool>());
      EXPECT_EQ(t->Encode(r["prompt"].get<std::string>(), true, false), Ids(r["prompt_tokens"]));

      // Pieces, concatenated, are the exact bytes llama.cpp produced.
      const std::vector<int32_t> output = Ids(r["output_tokens"]);
      std::string raw;
      for (const int32_t id : output) raw += t->TokenToPiece(id);
      if (r.contains("output_text_hex")) {
        EXPECT_EQ(absl::BytesToHexString(raw), r["output_text_hex"].get<std::string>());
        EXPECT_FALSE(r["output_text_utf8_valid"].get<bool>());
      } else {
        EXPECT_EQ(raw, r["output_text"].get<std::string>());
      }
      // Streamed, they never break UTF-8 and come out as the reference text with U+FFFD.
      StreamingDetokenizer detok(*t);
      std::string streamed;
      for (const int32_t id : output) {
        const std::string piece = detok.Push(id);
        EXPECT_TRUE(utf8::IsValid(piece)) << absl::BytesToHexString(piece);
        streamed += piece;
      }
      streamed += detok.Flush();
      EXPECT_EQ(streamed, r["output_text"].get<std::string>());
      if (r["stop_reason"].get<std::string>() == "eog") {
        EXPECT_TRUE(t->IsEndOfGeneration(output.back()));
      }
      for (size_t i = 0; i + 1 < output.size(); ++i) {
        EXPECT_FALSE(t->IsEndOfGeneration(output[i])) << "token " << i << " = " << output[i];
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllModels, GoldenRecordsTest, ::testing::ValuesIn(kGoldenModels),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-' || c == '.') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace airlock::inference

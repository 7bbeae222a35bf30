// llama.cpp's tokenizer test vectors (test-tokenizer-0 format) for every vocabulary we support,
// encoded with add_special=false, parse_special=false, and compared id for id.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/tokenizer.h"
#include "tests/support/test_data.h"

namespace airlock::inference {
namespace {

struct VectorSet {
  const char* name;
  const char* gguf;    // relative to the shared data directory
  const char* vectors; // prefix of the .inp/.out pair
};

void PrintTo(const VectorSet& v, std::ostream* os) { *os << v.name; }

class TokenizerVectorsTest : public ::testing::TestWithParam<VectorSet> {};

TEST_P(TokenizerVectorsTest, MatchesLlamaCpp) {
  const VectorSet& set = GetParam();
  const std::string gguf = testing::SharedPath(set.gguf);
  const std::string inp = testing::SharedPath(std::string(set.vectors) + ".inp");
  const std::string out = testing::SharedPath(std::string(set.vectors) + ".out");
  AIRLOCK_REQUIRE_SHARED_FILE(gguf);
  AIRLOCK_REQUIRE_SHARED_FILE(inp);
  AIRLOCK_REQUIRE_SHARED_FILE(out);

  auto file = GgufFile::Open(gguf);
  ASSERT_TRUE(file.ok()) << file.status();
  auto tokenizer = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::vector<testing::TokenizerCase> cases = testing::ReadTokenizerVectors(inp, out);
  ASSERT_GE(cases.size(), 40u);
  int failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::vector<int32_t> ids = (*tokenizer)->Encode(cases[i].text, false, false);
    EXPECT_EQ(ids, cases[i].expected) << "case " << i << ": '" << cases[i].text << "'";
    failures += ids != cases[i].expected;
  }
  EXPECT_EQ(failures, 0) << "of " << cases.size() << " cases";
}

INSTANTIATE_TEST_SUITE_P(
    AllVocabularies, TokenizerVectorsTest,
    ::testing::Values(
        VectorSet{"llama_spm", "models/vocab/ggml-vocab-llama-spm.gguf", "models/vocab/ggml-vocab-llama-spm.gguf"},
        VectorSet{"phi_3", "models/vocab/ggml-vocab-phi-3.gguf", "models/vocab/ggml-vocab-phi-3.gguf"},
        VectorSet{"gpt_2", "models/vocab/ggml-vocab-gpt-2.gguf", "models/vocab/ggml-vocab-gpt-2.gguf"},
        VectorSet{"deepseek_llm", "models/vocab/ggml-vocab-deepseek-llm.gguf",
                  "models/vocab/ggml-vocab-deepseek-llm.gguf"},
        VectorSet{"deepseek_coder", "models/vocab/ggml-vocab-deepseek-coder.gguf",
                  "models/vocab/ggml-vocab-deepseek-coder.gguf"},
        VectorSet{"llama_bpe", "models/vocab/ggml-vocab-llama-bpe.gguf", "models/vocab/ggml-vocab-llama-bpe.gguf"},
        VectorSet{"qwen2", "models/vocab/ggml-vocab-qwen2.gguf", "models/vocab/ggml-vocab-qwen2.gguf"},
        VectorSet{"stories260K", "models/stories260K-f32.gguf", "golden/tokenizer/stories260K-f32.gguf"},
        VectorSet{"llama_2_tiny_random", "models/llama-2-tiny-random.gguf",
                  "golden/tokenizer/llama-2-tiny-random.gguf"}),
    [](const ::testing::TestParamInfo<VectorSet>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace airlock::inference

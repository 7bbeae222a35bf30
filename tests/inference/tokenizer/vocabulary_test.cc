// Vocabulary validation and llama.cpp's defaults, on small hand-made GGUF files (written with
// GgufWriter, read back with GgufFile) and in-memory specs. No shared data needed.
#include "inference/tokenizer/vocabulary.h"

#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "inference/gguf/gguf_file.h"
#include "inference/gguf/gguf_writer.h"
#include "inference/tokenizer/tokenizer.h"

namespace airlock::inference {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A tiny SPM vocabulary: <unk> <s> </s>, 256 byte tokens, then a few pieces.
struct SpmVocab {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};

  SpmVocab() {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      Add(name, 0, 6);
    }
    Add("\xE2\x96\x81", -1);       // ▁
    Add("a", -2);
    Add("b", -3);
    Add("\xE2\x96\x81" "a", -4);   // ▁a
    Add("ab", -5);
    Add("\xE2\x96\x81" "ab", -1);  // ▁ab: scores better than the pieces it is built from
  }
  int32_t Add(const std::string& text, float score, int32_t type = 1) {
    tokens.push_back(text);
    scores.push_back(score);
    types.push_back(type);
    return static_cast<int32_t>(tokens.size() - 1);
  }
  int32_t Id(const std::string& text) const {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] == text) return static_cast<int32_t>(i);
    }
    return -1;
  }
  // The vocabulary's keys except those in `skip` (GGUF refuses a key written twice, so a test that
  // replaces a key skips it here and writes its own).
  GgufWriter Writer(const std::set<std::string>& skip = {}) const {
    GgufWriter w;
    if (!skip.count("tokenizer.ggml.model")) w.SetString("tokenizer.ggml.model", "llama");
    if (!skip.count("tokenizer.ggml.tokens")) w.SetStringArray("tokenizer.ggml.tokens", tokens);
    if (!skip.count("tokenizer.ggml.scores")) w.SetF32Array("tokenizer.ggml.scores", scores);
    if (!skip.count("tokenizer.ggml.token_type")) w.SetI32Array("tokenizer.ggml.token_type", types);
    return w;
  }
};

// A tiny byte-level BPE vocabulary: the 256 byte characters plus merges "a b", "Ġ a", "Ġa b".
struct BpeVocab {
  std::vector<std::string> tokens;
  std::vector<std::string> merges = {"a b", "\xC4\xA0 a", "\xC4\xA0" "a b"};

  BpeVocab() {
    for (int b = 0; b < 256; ++b) tokens.push_back(std::string(utf8ByteChar(static_cast<uint8_t>(b))));
    tokens.push_back("ab");
    tokens.push_back("\xC4\xA0" "a");  // Ġa
    tokens.push_back("\xC4\xA0" "ab");
    tokens.push_back("<|endoftext|>");
  }
  static std::string utf8ByteChar(uint8_t b);
  GgufWriter Writer(const std::string& pre = "gpt-2", const std::set<std::string>& skip = {}) const {
    GgufWriter w;
    w.SetString("tokenizer.ggml.model", "gpt2");
    w.SetString("tokenizer.ggml.pre", pre);
    w.SetStringArray("tokenizer.ggml.tokens", tokens);
    std::vector<int32_t> types(tokens.size(), 1);
    types.back() = 3;
    w.SetI32Array("tokenizer.ggml.token_type", types);
    if (!skip.count("tokenizer.ggml.merges")) w.SetStringArray("tokenizer.ggml.merges", merges);
    w.SetU32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(tokens.size() - 1));
    w.SetU32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tokens.size() - 1));
    return w;
  }
};

std::string BpeVocab::utf8ByteChar(uint8_t b) {
  // GPT-2's table: printable Latin-1 bytes map to themselves, the others to U+0100 onwards.
  int cp = b;
  if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))) {
    int n = 0;
    for (int c = 0; c < b; ++c) {
      if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE))) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// Serializes, parses and builds a tokenizer; the image lives as long as the test needs it.
struct Built {
  std::string image;
  std::unique_ptr<GgufFile> file;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = absl::UnknownError("not built");
};

std::unique_ptr<Built> Build(const GgufWriter& w) {
  auto b = std::make_unique<Built>();
  b->image = w.Serialize();
  auto file = GgufFile::Parse(reinterpret_cast<const uint8_t*>(b->image.data()), b->image.size());
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return b;
  b->file = std::move(*file);
  b->tokenizer = Tokenizer::FromGguf(*b->file);
  return b;
}

std::string ErrorOf(const GgufWriter& w) {
  auto b = Build(w);
  EXPECT_FALSE(b->tokenizer.ok());
  return b->tokenizer.ok() ? "" : std::string(b->tokenizer.status().message());
}

TEST(VocabularyTest, SpmDefaultsAndMerging) {
  SpmVocab v;
  auto b = Build(v.Writer());
  ASSERT_TRUE(b->tokenizer.ok()) << b->tokenizer.status();
  const Tokenizer& t = **b->tokenizer;
  EXPECT_EQ(t.bos(), 1);
  EXPECT_EQ(t.eos(), 2);
  EXPECT_EQ(t.unk(), 0);
  EXPECT_TRUE(t.add_bos());
  EXPECT_TRUE(t.add_space_prefix());
  EXPECT_EQ(t.pre(), "default");
  // "ab" -> "▁ab" through the best-scoring merges.
  EXPECT_THAT(t.Encode("ab", true, false), ElementsAre(1, v.Id("\xE2\x96\x81" "ab")));
  // Characters with no token fall back to bytes.
  EXPECT_THAT(t.Encode("a\xC3\xA9", false, false),
              ElementsAre(v.Id("\xE2\x96\x81" "a"), 3 + 0xC3, 3 + 0xA9));
  EXPECT_EQ(t.Detokenize(t.Encode("ab ba", false, false)), "ab ba");
}

TEST(VocabularyTest, SpmWithoutSpacePrefixOrBos) {
  SpmVocab v;
  GgufWriter w = v.Writer();
  w.SetBool("tokenizer.ggml.add_space_prefix", false);
  w.SetBool("tokenizer.ggml.add_bos_token", false);
  w.SetBool("tokenizer.ggml.add_eos_token", true);
  auto b = Build(w);
  ASSERT_TRUE(b->tokenizer.ok()) << b->tokenizer.status();
  EXPECT_THAT((*b->tokenizer)->Encode("ab", true, false), ElementsAre(v.Id("ab"), 2));
}

TEST(VocabularyTest, SpmWithoutByteTokensFallsBackToUnknown) {
  VocabularySpec spec;
  spec.model = "llama";
  std::vector<std::string_view> tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a"};
  spec.tokens = tokens;
  auto t = Tokenizer::FromSpec(spec);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT((*t)->Encode("a!", false, false), ElementsAre(3, 4, 0));
}

TEST(VocabularyTest, BpeMergesByRankAndHandlesSpecials) {
  BpeVocab v;
  auto b = Build(v.Writer());
  ASSERT_TRUE(b->tokenizer.ok()) << b->tokenizer.status();
  const Tokenizer& t = **b->tokenizer;
  const int32_t ab = 256, g_a = 257, eot = 259;
  EXPECT_EQ(t.model(), "gpt2");
  EXPECT_FALSE(t.add_bos());  // gpt-2 pre: no BOS unless the file asks
  EXPECT_EQ(t.eot(), eot);    // detected by its text
  EXPECT_TRUE(t.IsEndOfGeneration(eot));
  // "a b" (rank 0) is applied before "Ġ a" (rank 1): " ab" is Ġ + ab, which has no merge.
  EXPECT_THAT(t.Encode(" ab", false, false), ElementsAre(0x20, ab));  // tokens[b] is byte b
  EXPECT_THAT(t.Encode(" a", false, false), ElementsAre(g_a));
  EXPECT_THAT(t.Encode("<|endoftext|>", false, true), ElementsAre(eot));
  EXPECT_EQ(t.Detokenize(t.Encode(" ab ba<|endoftext|>", false, false)), " ab ba<|endoftext|>");
}

TEST(VocabularyTest, RefusesUnknownModelAndPreTokenizer) {
  SpmVocab v;
  GgufWriter w = v.Writer({"tokenizer.ggml.model"});
  w.SetString("tokenizer.ggml.model", "bert");
  EXPECT_THAT(ErrorOf(w), HasSubstr("'bert'"));

  BpeVocab bv;
  EXPECT_THAT(ErrorOf(bv.Writer("no-such-pre")), HasSubstr("'no-such-pre'"));
  // Supported families load.
  for (const char* pre : {"default", "gpt-2", "llama-bpe", "qwen2", "deepseek-llm", "deepseek-coder", "starcoder",
                          "falcon", "dbrx", "chatglm-bpe", "megrez"}) {
    auto b = Build(bv.Writer(pre));
    EXPECT_TRUE(b->tokenizer.ok()) << pre << ": " << b->tokenizer.status();
  }
}

TEST(VocabularyTest, RefusesInconsistentArrays) {
  SpmVocab v;
  {
    GgufWriter w = v.Writer({"tokenizer.ggml.scores"});
    w.SetF32Array("tokenizer.ggml.scores", {0.0f, 1.0f});
    EXPECT_THAT(ErrorOf(w), HasSubstr("tokenizer.ggml.scores has 2 entries"));
  }
  {
    GgufWriter w = v.Writer({"tokenizer.ggml.token_type"});
    w.SetI32Array("tokenizer.ggml.token_type", {1, 1, 1});
    EXPECT_THAT(ErrorOf(w), HasSubstr("tokenizer.ggml.token_type has 3 entries"));
  }
  {
    GgufWriter w = v.Writer({"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"});
    w.SetStringArray("tokenizer.ggml.tokens", {});
    EXPECT_THAT(ErrorOf(w), HasSubstr("empty"));
  }
  {
    GgufWriter w = v.Writer({"tokenizer.ggml.tokens"});
    w.SetU32("tokenizer.ggml.tokens", 7);
    EXPECT_THAT(ErrorOf(w), HasSubstr("tokenizer.ggml.tokens"));
  }
  {
    GgufWriter w;
    w.SetStringArray("tokenizer.ggml.tokens", {"a"});
    EXPECT_THAT(ErrorOf(w), HasSubstr("tokenizer.ggml.model is missing"));
  }
  {
    GgufWriter w;
    w.SetString("tokenizer.ggml.model", "llama");
    EXPECT_THAT(ErrorOf(w), HasSubstr("tokenizer.ggml.tokens is missing"));
  }
  {
    SpmVocab dup;
    dup.Add("a", 0);
    EXPECT_THAT(ErrorOf(dup.Writer()), HasSubstr("duplicates token"));
  }
  {
    SpmVocab nan;
    nan.scores[5] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THAT(ErrorOf(nan.Writer()), HasSubstr("tokenizer.ggml.scores[5] is NaN"));
  }
}

TEST(VocabularyTest, RefusesMalformedMerges) {
  for (const std::string& bad : std::vector<std::string>{"ab", " ab", "a ", ""}) {
    BpeVocab v;
    v.merges.push_back(bad);
    EXPECT_THAT(ErrorOf(v.Writer()), HasSubstr("tokenizer.ggml.merges[3]")) << "'" << bad << "'";
  }
  BpeVocab v;
  GgufWriter w = v.Writer("gpt-2", {"tokenizer.ggml.merges"});
  w.SetString("tokenizer.ggml.merges", "a b");
  EXPECT_THAT(ErrorOf(w), HasSubstr("tokenizer.ggml.merges"));

  VocabularySpec spec;
  spec.model = "gpt2";
  std::vector<std::string_view> tokens = {"a"};
  spec.tokens = tokens;
  EXPECT_THAT(std::string(Tokenizer::FromSpec(spec).status().message()), HasSubstr("merges is missing"));
}

TEST(VocabularyTest, SpecialIdRules) {
  SpmVocab v;
  const uint32_t n = static_cast<uint32_t>(v.tokens.size());
  {
    GgufWriter w = v.Writer();
    w.SetU32("tokenizer.ggml.eos_token_id", n);
    EXPECT_THAT(ErrorOf(w), HasSubstr("tokenizer.ggml.eos_token_id = " + std::to_string(n) + " is out of range"));
  }
  {
    GgufWriter w = v.Writer();
    w.SetU32("tokenizer.ggml.bos_token_id", 1000000);
    EXPECT_THAT(ErrorOf(w), HasSubstr("bos_token_id"));
  }
  {
    // "None" markers and out-of-range ids of roles we do not feed the model keep llama.cpp's default.
    GgufWriter w = v.Writer();
    w.SetU32("tokenizer.ggml.padding_token_id", 0xFFFFFFFFu);
    w.SetU32("tokenizer.ggml.seperator_token_id", n + 5);
    w.SetI32("tokenizer.ggml.eot_token_id", -1);
    w.SetU32("tokenizer.ggml.unknown_token_id", 3);
    auto b = Build(w);
    ASSERT_TRUE(b->tokenizer.ok()) << b->tokenizer.status();
    EXPECT_EQ((*b->tokenizer)->pad(), -1);
    EXPECT_EQ((*b->tokenizer)->eot(), -1);
    EXPECT_EQ((*b->tokenizer)->unk(), 3);
  }
  {
    GgufWriter w = v.Writer();
    w.SetString("tokenizer.ggml.eos_token_id", "2");
    EXPECT_THAT(ErrorOf(w), HasSubstr("should be an integer"));
  }
  {
    // A vocabulary too small for the default BOS cannot ask for one.
    VocabularySpec spec;
    spec.model = "llama";
    std::vector<std::string_view> tokens = {"<unk>"};
    spec.tokens = tokens;
    EXPECT_THAT(std::string(Tokenizer::FromSpec(spec).status().message()), HasSubstr("BOS"));
    spec.add_bos = false;
    auto t = Tokenizer::FromSpec(spec);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->bos(), -1);
    EXPECT_EQ((*t)->eos(), -1);
  }
}

TEST(VocabularyTest, ChatTemplateAndNames) {
  SpmVocab v;
  GgufWriter w = v.Writer();
  w.SetString("tokenizer.chat_template", "{{ messages }}");
  w.SetString("tokenizer.ggml.pre", "default");
  auto b = Build(w);
  ASSERT_TRUE(b->tokenizer.ok());
  EXPECT_EQ((*b->tokenizer)->chat_template(), "{{ messages }}");
  EXPECT_EQ((*b->tokenizer)->model(), "llama");
}

TEST(VocabularyTest, EmptyTokensArePlaceholdersAndUnusedTokensRenderNothing) {
  SpmVocab v;
  v.Add("", 0);
  const int32_t unused = v.Add("zz", 0, 5);
  auto b = Build(v.Writer());
  ASSERT_TRUE(b->tokenizer.ok()) << b->tokenizer.status();
  const Tokenizer& t = **b->tokenizer;
  EXPECT_EQ(t.TokenText(unused - 1), "[EMPTY_" + std::to_string(unused - 1) + "]");
  EXPECT_EQ(t.TokenToPiece(unused), "");
}

}  // namespace
}  // namespace airlock::inference

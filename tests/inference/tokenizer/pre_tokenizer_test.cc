// The PCRE2 pre-tokenizer against splits that llama.cpp's unicode_regex_split produces.
#include "inference/tokenizer/pre_tokenizer.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace airlock::inference {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Split(const std::string& pre, const std::string& text) {
  auto config = LookupPreTokenizer(pre);
  EXPECT_TRUE(config.ok()) << config.status();
  auto p = PreTokenizer::Create(config->patterns);
  EXPECT_TRUE(p.ok()) << p.status();
  std::string words;
  std::vector<size_t> ends;
  (*p)->Split(text, words, ends);
  std::vector<std::string> out;
  size_t start = 0;
  for (const size_t end : ends) {
    out.push_back(words.substr(start, end - start));
    start = end;
  }
  return out;
}

TEST(PreTokenizerTest, Gpt2) {
  EXPECT_THAT(Split("gpt-2", "Hello world's  end\n\nx 12345"),
              ElementsAre("Hello", " world", "'s", " ", " end", "\n", "\n", "x", " 12345"));
  EXPECT_THAT(Split("gpt-2", "a  "), ElementsAre("a", "  "));
}

TEST(PreTokenizerTest, Llama3) {
  EXPECT_THAT(Split("llama-bpe", "Hello World'S 1234567 ..\n\n  x"),
              ElementsAre("Hello", " World", "'S", " ", "123", "456", "7", " ..\n\n", " ", " x"));
  EXPECT_THAT(Split("llama-bpe", "\t\tfoo"), ElementsAre("\t", "\tfoo"));
}

TEST(PreTokenizerTest, Qwen2SplitsDigitsOneByOne) {
  EXPECT_THAT(Split("qwen2", "x 123"), ElementsAre("x", " ", "1", "2", "3"));
}

TEST(PreTokenizerTest, NonAsciiWhitespaceIsWhitespace) {
  // U+3000 and U+00A0 count as \s (llama.cpp maps them to \v before matching), but stay themselves.
  EXPECT_THAT(Split("llama-bpe", "a\xE3\x80\x80\xE3\x80\x80" "b"), ElementsAre("a", "\xE3\x80\x80", "\xE3\x80\x80" "b"));
  EXPECT_THAT(Split("gpt-2", "a\xC2\xA0\xC2\xA0" "b"), ElementsAre("a", "\xC2\xA0", "\xC2\xA0", "b"));
}

TEST(PreTokenizerTest, DeepseekLlmTrailingSpaces) {
  EXPECT_THAT(Split("deepseek-llm", "ab  \x01  "), ElementsAre("ab", "  \x01", "  "));
  EXPECT_THAT(Split("deepseek-llm", "ab\n12"), ElementsAre("ab", "\n", "12"));
}

TEST(PreTokenizerTest, DeepseekCoder) {
  EXPECT_THAT(Split("deepseek-coder", "int x=42;"), ElementsAre("int", " x", "=", "4", "2", ";"));
}

TEST(PreTokenizerTest, InvalidBytesBecomeReplacementCharacters) {
  EXPECT_THAT(Split("gpt-2", "a\xFF"), ElementsAre("a", "\xEF\xBF\xBD"));
  EXPECT_THAT(Split("gpt-2", ""), ElementsAre());
}

TEST(PreTokenizerTest, UnknownNamesAreRefused) {
  auto config = LookupPreTokenizer("tekken-9000");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("'tekken-9000'"));
  EXPECT_EQ(LookupPreTokenizer("")->name, "default");
  EXPECT_EQ(LookupPreTokenizer("llama3")->name, "llama3");
  EXPECT_TRUE(LookupPreTokenizer("llama3")->ignore_merges);
}

}  // namespace
}  // namespace airlock::inference

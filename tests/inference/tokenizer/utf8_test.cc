// UTF-8 helpers: llama.cpp-compatible lenient decoding, strict classification, the GPT-2 byte table.
#include "inference/tokenizer/utf8.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace airlock::inference::utf8 {
namespace {

using ::testing::ElementsAre;

std::vector<uint32_t> Decode(std::string_view s) {
  std::vector<uint32_t> out;
  DecodeLenient(s, out);
  return out;
}

TEST(Utf8Test, LenientDecodingFollowsLlamaCpp) {
  EXPECT_THAT(Decode("a\xC3\xA9\xE2\x98\x95\xF0\x9F\xA6\x99"), ElementsAre('a', 0xE9, 0x2615, 0x1F999));
  // Overlong forms and surrogates pass, as upstream's decoder does not check them.
  EXPECT_THAT(Decode("\xC0\x80"), ElementsAre(0));
  EXPECT_THAT(Decode("\xED\xA0\x80"), ElementsAre(0xD800));
  // Every byte that cannot start or finish a sequence is one U+FFFD.
  EXPECT_THAT(Decode("\x80\xBF"), ElementsAre(kReplacementChar, kReplacementChar));
  EXPECT_THAT(Decode("\xE2\x98"), ElementsAre(kReplacementChar, kReplacementChar));
  EXPECT_THAT(Decode("\xE2" "a"), ElementsAre(kReplacementChar, 'a'));
  EXPECT_THAT(Decode("\xFF"), ElementsAre(kReplacementChar));
  // Above U+10FFFF (upstream would throw later): bytes become U+FFFD one by one.
  EXPECT_THAT(Decode("\xF7\xBF\xBF\xBF"),
              ElementsAre(kReplacementChar, kReplacementChar, kReplacementChar, kReplacementChar));
}

TEST(Utf8Test, LenientSequenceLengthLooksAtTheLeadByteOnly) {
  EXPECT_EQ(LenientSequenceLength('a'), 1u);
  EXPECT_EQ(LenientSequenceLength(0x80), 1u);
  EXPECT_EQ(LenientSequenceLength(0xC0), 2u);
  EXPECT_EQ(LenientSequenceLength(0xE2), 3u);
  EXPECT_EQ(LenientSequenceLength(0xFF), 4u);
}

TEST(Utf8Test, ClassifyPrefixUsesMaximalSubparts) {
  EXPECT_EQ(ClassifyPrefix(""), 0);
  EXPECT_EQ(ClassifyPrefix("a"), 1);
  EXPECT_EQ(ClassifyPrefix("\xE2\x98\x95z"), 3);
  EXPECT_EQ(ClassifyPrefix("\xE2\x98"), 0);   // may still be completed
  EXPECT_EQ(ClassifyPrefix("\xE2\x98z"), -2);  // E2 98 is one ill-formed subpart
  EXPECT_EQ(ClassifyPrefix("\xC0\x80"), -1);   // C0 never starts a character
  EXPECT_EQ(ClassifyPrefix("\xE0\x80\x80"), -1);  // overlong: E0 needs A0..BF next
  EXPECT_EQ(ClassifyPrefix("\xED\xA0\x80"), -1);  // surrogate
  EXPECT_EQ(ClassifyPrefix("\xF4\x90\x80\x80"), -1);  // above U+10FFFF
  EXPECT_EQ(ClassifyPrefix("\xF0\x9F\xA6\x99"), 4);
  EXPECT_EQ(ClassifyPrefix("\xF0\x9F\xA6"), 0);
}

TEST(Utf8Test, SanitizeReplacesLikePython) {
  EXPECT_EQ(Sanitize("ok \xE2\x98\x95"), "ok \xE2\x98\x95");
  EXPECT_EQ(Sanitize("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(Sanitize("\xE2\x98z\xE2"), "\xEF\xBF\xBDz\xEF\xBF\xBD");
  EXPECT_EQ(Sanitize("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(IsValid("plain \xC3\xA9"));
  EXPECT_FALSE(IsValid("\xC3"));
}

TEST(Utf8Test, AppendCodePoint) {
  std::string s;
  AppendCodePoint(0x24, s);
  AppendCodePoint(0xA2, s);
  AppendCodePoint(0x20AC, s);
  AppendCodePoint(0x10348, s);
  EXPECT_EQ(s, "$\xC2\xA2\xE2\x82\xAC\xF0\x90\x8D\x88");
  s.clear();
  AppendCodePoint(0x110000, s);
  EXPECT_EQ(s, "\xEF\xBF\xBD");
}

TEST(Utf8Test, Gpt2ByteTable) {
  EXPECT_EQ(ByteToCodePoint('a'), static_cast<uint32_t>('a'));
  EXPECT_EQ(ByteToCodePoint(' '), 0x120u);   // Ġ
  EXPECT_EQ(ByteToCodePoint('\n'), 0x10Au);  // Ċ
  EXPECT_EQ(ByteToCodePoint(0xAD), 0x143u);  // the last moved byte
  EXPECT_EQ(ByteToUnicode(' '), "\xC4\xA0");
  for (int b = 0; b < 256; ++b) EXPECT_EQ(UnicodeToByte(ByteToCodePoint(static_cast<uint8_t>(b))), b);
  EXPECT_EQ(UnicodeToByte(0x144), -1);
  EXPECT_EQ(UnicodeToByte(0x2581), -1);
}

}  // namespace
}  // namespace airlock::inference::utf8

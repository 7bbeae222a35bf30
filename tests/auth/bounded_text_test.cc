// Tests for BoundedForRecord: short values untouched; long ones cut at a UTF-8 boundary, with
// their length and a digest so that two long values sharing a prefix stay apart.
#include "auth/bounded_text.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "auth/digest.h"

namespace airlock::auth {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(BoundedForRecordTest, ShortValuesAreKeptAsTheyAre) {
  EXPECT_EQ(BoundedForRecord("", 8), "");
  EXPECT_EQ(BoundedForRecord("stories", 8), "stories");
  EXPECT_EQ(BoundedForRecord("12345678", 8), "12345678");
}

TEST(BoundedForRecordTest, AMegabyteModelNameBecomesAFewBytesNamingItsLengthAndDigest) {
  const std::string huge(1000000, 'A');
  const std::string bounded = BoundedForRecord(huge, 128);
  EXPECT_LE(bounded.size(), 128 + kBoundMarkerMaxBytes);
  EXPECT_THAT(bounded, StartsWith(std::string(128, 'A') + "...[1000000 bytes, sha256:"));
  EXPECT_THAT(bounded, EndsWith(HexLower(Sha256(huge)).substr(0, 16) + "]"));
}

TEST(BoundedForRecordTest, TwoLongValuesWithTheSamePrefixStayDistinguishable) {
  const std::string a = std::string(5000, 'x') + "a";
  const std::string b = std::string(5000, 'x') + "b";
  EXPECT_NE(BoundedForRecord(a, 64), BoundedForRecord(b, 64));
  EXPECT_EQ(BoundedForRecord(a, 64), BoundedForRecord(a, 64));  // and the same value bounds the same
}

TEST(BoundedForRecordTest, NeverSplitsAUtf8Character) {
  // "é" is two bytes and "€" three: a cut at byte 5 would fall inside the third "é" / second "€".
  const std::string e_acute = "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9";
  EXPECT_THAT(BoundedForRecord(e_acute, 5), StartsWith("\xC3\xA9\xC3\xA9...["));
  const std::string euro = "\xE2\x82\xAC\xE2\x82\xAC\xE2\x82\xAC";
  EXPECT_THAT(BoundedForRecord(euro, 5), StartsWith("\xE2\x82\xAC...["));
  const std::string emoji = "a\xF0\x9F\x98\x80\xF0\x9F\x98\x80";  // a + two four-byte characters
  EXPECT_THAT(BoundedForRecord(emoji, 4), StartsWith("a...["));
}

TEST(BoundedForRecordTest, BytesThatAreNotUtf8AreCutAtTheBound) {
  // Continuation bytes only: no character boundary to back off to.
  const std::string junk(40, '\x80');
  const std::string bounded = BoundedForRecord(junk, 10);
  EXPECT_THAT(bounded, StartsWith(std::string(10, '\x80') + "...[40 bytes"));
  EXPECT_THAT(bounded, HasSubstr("sha256:"));
}

}  // namespace
}  // namespace airlock::auth

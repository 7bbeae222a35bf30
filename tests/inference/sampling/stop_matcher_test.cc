// StopMatcher: validation, matches across piece boundaries, overlapping prefixes, several stop
// strings, UTF-8 hold-back, and a randomised check that the output never depends on how the text
// was split into pieces.
#include "inference/sampling/stop_matcher.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

int64_t AllocationCount();  // allocation_counter_test.cc

namespace airlock::inference {
namespace {

using ::testing::HasSubstr;

StopMatcher Make(const std::vector<std::string>& stops) {
  absl::StatusOr<StopMatcher> matcher = StopMatcher::Create(stops);
  EXPECT_TRUE(matcher.ok()) << matcher.status();
  return std::move(matcher).value();
}

// Feeds `pieces` and records what each call released.
struct Transcript {
  std::vector<std::string> emitted;  // one entry per Feed(), then one for Flush()
  bool stopped = false;
  int32_t stop_index = -1;
  std::string Joined() const {
    std::string all;
    for (const std::string& s : emitted) all += s;
    return all;
  }
};

Transcript Play(StopMatcher& matcher, const std::vector<std::string>& pieces) {
  Transcript t;
  for (const std::string& piece : pieces) {
    const StopMatcher::FeedResult result = matcher.Feed(piece);
    t.emitted.emplace_back(result.text);
    if (result.stopped) {
      EXPECT_FALSE(t.stopped && result.stop_index != t.stop_index);
      t.stopped = true;
      t.stop_index = result.stop_index;
    }
  }
  t.emitted.emplace_back(matcher.Flush());
  return t;
}

// ---------------------------------------------------------------------------------------------
// Validation

TEST(StopMatcherCreateTest, AcceptsReasonableLists) {
  EXPECT_TRUE(StopMatcher::Create({}).ok());
  EXPECT_TRUE(StopMatcher::Create({"\n\n", "</s>", "User:", "é", "🙂"}).ok());
  EXPECT_TRUE(
      StopMatcher::Create(std::vector<std::string>(StopMatcher::kMaxStopStrings, "x")).ok());
  EXPECT_TRUE(StopMatcher::Create({std::string(StopMatcher::kMaxStopBytes, 'a')}).ok());
}

TEST(StopMatcherCreateTest, NamesTheBadString) {
  EXPECT_EQ(StopMatcher::Create({"ok", ""}).status().message(), "stop string 1 is empty");
  const absl::Status too_long =
      StopMatcher::Create({"a", "b", std::string(StopMatcher::kMaxStopBytes + 1, 'z')}).status();
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_long.message(),
            "stop string 2 (\"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz...\") is 257 bytes, more than the "
            "limit of 256");
  EXPECT_EQ(StopMatcher::Create(std::vector<std::string>(17, "x")).status().message(),
            "at most 16 stop strings are allowed, got 17");
  EXPECT_EQ(StopMatcher::Create({"fine", "bad\xC3"}).status().message(),
            "stop string 1 is not valid UTF-8");
  for (const char* invalid : {"\x80", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "a\xFF"}) {
    EXPECT_THAT(StopMatcher::Create({invalid}).status().message(), HasSubstr("not valid UTF-8"))
        << invalid;
  }
}

// ---------------------------------------------------------------------------------------------
// Matching

TEST(StopMatcherTest, NoStopStringsPassesEverythingThrough) {
  StopMatcher matcher = Make({});
  const Transcript t = Play(matcher, {"Hello", ", ", "world"});
  EXPECT_THAT(t.emitted, ::testing::ElementsAre("Hello", ", ", "world", ""));
  EXPECT_FALSE(t.stopped);
}

TEST(StopMatcherTest, StopInsideOnePiece) {
  StopMatcher matcher = Make({"###"});
  const StopMatcher::FeedResult result = matcher.Feed("Hello###world");
  EXPECT_EQ(result.text, "Hello");
  EXPECT_TRUE(result.stopped);
  EXPECT_EQ(result.stop_index, 0);
  EXPECT_TRUE(matcher.stopped());
  const StopMatcher::FeedResult after = matcher.Feed("more");
  EXPECT_EQ(after.text, "");
  EXPECT_TRUE(after.stopped);
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopMatcherTest, StopSpanningManyPieces) {
  StopMatcher matcher = Make({"</s>"});
  const Transcript t = Play(matcher, {"abc<", "/", "s", ">tail", "ignored"});
  EXPECT_THAT(t.emitted, ::testing::ElementsAre("abc", "", "", "", "", ""));
  EXPECT_TRUE(t.stopped);
}

TEST(StopMatcherTest, HeldPrefixIsReleasedWhenItStopsMatching) {
  StopMatcher matcher = Make({"</s>"});
  const Transcript t = Play(matcher, {"a</", "x", "b<", "/s"});
  EXPECT_THAT(t.emitted, ::testing::ElementsAre("a", "</x", "b", "", "</s"));
  EXPECT_FALSE(t.stopped);
  EXPECT_EQ(t.Joined(), "a</xb</s");
}

TEST(StopMatcherTest, OverlappingPrefix) {
  // "ab" in "aab": the first 'a' is released once the second shows it cannot start the match.
  StopMatcher matcher = Make({"ab"});
  const Transcript t = Play(matcher, {"a", "a", "b"});
  EXPECT_THAT(t.emitted, ::testing::ElementsAre("", "a", "", ""));
  EXPECT_TRUE(t.stopped);
  StopMatcher whole = Make({"ab"});
  EXPECT_EQ(whole.Feed("aab").text, "a");
}

TEST(StopMatcherTest, SelfOverlappingStopString) {
  // KMP must fall back correctly inside "abab": "ababab" contains it at 0, "abaabab" at 3.
  StopMatcher first = Make({"abab"});
  EXPECT_EQ(Play(first, {"aba", "bab"}).Joined(), "");
  StopMatcher later = Make({"abab"});
  const Transcript t = Play(later, {"ab", "a", "a", "b", "a", "b", "zzz"});
  EXPECT_EQ(t.Joined(), "aba");
  EXPECT_TRUE(t.stopped);
  StopMatcher near_miss = Make({"abab"});
  const Transcript miss = Play(near_miss, {"abaab", "aabba"});
  EXPECT_FALSE(miss.stopped);
  EXPECT_EQ(miss.Joined(), "abaabaabba");
}

TEST(StopMatcherTest, EarliestEndingStopWinsThenLongest) {
  // "lo w" ends before "world" does: the output stops there.
  StopMatcher matcher = Make({"world", "lo w"});
  const StopMatcher::FeedResult r = matcher.Feed("hello world");
  EXPECT_EQ(r.text, "hel");
  EXPECT_EQ(r.stop_index, 1);
  // Both end at the same byte: the longer one cuts earlier.
  StopMatcher same_end = Make({"b", "ab"});
  const StopMatcher::FeedResult s = same_end.Feed("xab");
  EXPECT_EQ(s.text, "x");
  EXPECT_EQ(s.stop_index, 1);
}

TEST(StopMatcherTest, MultipleStopStringsAcrossPieces) {
  StopMatcher matcher = Make({"\nUser:", "<|im_end|>", "\n\n"});
  const Transcript t = Play(matcher, {"Sure.", "\nUs", "ually", " <|im", "_end", "|> x"});
  EXPECT_EQ(t.Joined(), "Sure.\nUsually ");
  EXPECT_EQ(t.stop_index, 1);
}

// ---------------------------------------------------------------------------------------------
// UTF-8

TEST(StopMatcherTest, IncompleteCharacterIsHeldUntilComplete) {
  StopMatcher matcher = Make({"x"});
  const Transcript t = Play(matcher, {"a\xC3",
                                      "\xA9"
                                      "b",
                                      "\xF0\x9F", "\x99", "\x82", "!"});
  EXPECT_THAT(t.emitted, ::testing::ElementsAre("a",
                                                "\xC3\xA9"
                                                "b",
                                                "", "", "\xF0\x9F\x99\x82", "!", ""));
}

TEST(StopMatcherTest, MultiByteStopStringSplitInsideCharacters) {
  StopMatcher matcher = Make({"🙂x"});  // F0 9F 99 82 78
  const Transcript t = Play(matcher, {"ab\xF0\x9F", "\x99\x82y", "\xF0", "\x9F\x99\x82", "x!"});
  EXPECT_THAT(t.emitted, ::testing::ElementsAre("ab", "🙂y", "", "", "", ""));
  EXPECT_TRUE(t.stopped);
}

TEST(StopMatcherTest, FlushReleasesHeldTextEvenIfIncomplete) {
  StopMatcher matcher = Make({"</s>"});
  EXPECT_EQ(matcher.Feed("abc</").text, "abc");
  EXPECT_EQ(matcher.Flush(), "</");
  StopMatcher utf8 = Make({});
  EXPECT_EQ(utf8.Feed("é\xE2\x82").text, "é");
  EXPECT_EQ(utf8.Flush(), "\xE2\x82");
}

TEST(StopMatcherTest, InvalidBytesInOutputAreNotHeldForever) {
  StopMatcher matcher = Make({"x"});
  EXPECT_EQ(matcher
                .Feed("\x80\x80\x80\x80\x80"
                      "a")
                .text,
            "\x80\x80\x80\x80\x80"
            "a");
  EXPECT_EQ(matcher.Feed("\xFF").text, "\xFF");
}

TEST(StopMatcherTest, ResetStartsANewStream) {
  StopMatcher matcher = Make({"END"});
  EXPECT_TRUE(matcher.Feed("doneEND").stopped);
  matcher.Reset();
  EXPECT_FALSE(matcher.stopped());
  EXPECT_EQ(matcher.Feed("again E").text, "again ");
  EXPECT_EQ(matcher.Flush(), "E");
}

// ---------------------------------------------------------------------------------------------
// Piece boundaries never matter

// The expected output by brute force: the first byte where any stop ends, longest stop there.
std::pair<std::string, int32_t> Reference(const std::string& text,
                                          const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    int32_t best = -1;
    for (size_t i = 0; i < stops.size(); ++i) {
      const std::string& s = stops[i];
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0 &&
          (best < 0 || s.size() > stops[static_cast<size_t>(best)].size())) {
        best = static_cast<int32_t>(i);
      }
    }
    if (best >= 0) return {text.substr(0, end - stops[static_cast<size_t>(best)].size()), best};
  }
  return {text, -1};
}

bool EndsOnCharacterBoundary(const std::string& valid_utf8_prefix_source, size_t length) {
  return length == valid_utf8_prefix_source.size() ||
         (static_cast<unsigned char>(valid_utf8_prefix_source[length]) & 0xC0) != 0x80;
}

TEST(StopMatcherTest, RandomSplitsGiveTheSameOutputAsTheReference) {
  const std::vector<std::string> alphabet = {"a", "b", "c", "é", "🙂", "\n"};
  const std::vector<std::vector<std::string>> stop_sets = {
      {"ab"}, {"aab", "abc"}, {"é🙂", "b\n"}, {"abab", "ba", "🙂🙂"}, {"cccc"}};
  std::mt19937 gen(99);
  int stops_seen = 0;
  for (int round = 0; round < 3000; ++round) {
    const std::vector<std::string>& stops =
        stop_sets[static_cast<size_t>(round) % stop_sets.size()];
    std::string text;
    const int length = 1 + static_cast<int>(gen() % 20);
    for (int i = 0; i < length; ++i) text += alphabet[gen() % alphabet.size()];
    // Cut at random byte offsets, inside characters too.
    std::vector<std::string> pieces;
    for (size_t at = 0; at < text.size();) {
      const size_t n = std::min(text.size() - at, static_cast<size_t>(1 + gen() % 5));
      pieces.push_back(text.substr(at, n));
      at += n;
    }
    StopMatcher matcher = Make(stops);
    const Transcript t = Play(matcher, pieces);
    const auto [expected, index] = Reference(text, stops);
    ASSERT_EQ(t.Joined(), expected) << "round " << round << " text " << text;
    ASSERT_EQ(t.stop_index, index) << "round " << round;
    stops_seen += t.stopped;
    // Every release ends on a character boundary of the (valid UTF-8) text.
    size_t released = 0;
    for (size_t i = 0; i + 1 < t.emitted.size(); ++i) {
      released += t.emitted[i].size();
      ASSERT_TRUE(EndsOnCharacterBoundary(text, released)) << "round " << round;
    }
  }
  EXPECT_GT(stops_seen, 500);
  EXPECT_LT(stops_seen, 2900);
}

// ---------------------------------------------------------------------------------------------
// Allocation

TEST(StopMatcherTest, SteadyStateFeedDoesNotAllocate) {
  StopMatcher matcher = Make({"</s>", "\n\nUser:"});
  const std::vector<std::string> pieces = {"Hello", " wor", "ld", "\n",
                                           "\nUse", "ful",  " <", "/p>"};
  const int64_t before = AllocationCount();
  for (int i = 0; i < 1000; ++i) {
    for (const std::string& piece : pieces) matcher.Feed(piece);
  }
  EXPECT_EQ(AllocationCount(), before);
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopMatcherTest, LargePieces) {
  StopMatcher matcher = Make({"STOP"});
  const std::string big(100000, 'x');
  EXPECT_EQ(matcher.Feed(big).text.size(), big.size());
  const StopMatcher::FeedResult r = matcher.Feed(big + "STOP" + big);
  EXPECT_EQ(r.text.size(), big.size());
  EXPECT_TRUE(r.stopped);
}

}  // namespace
}  // namespace airlock::inference

// Grammar and GrammarMatcher on hand-written grammars: determinisation, recursion and its depth
// bound, left recursion and dead ends refused, matcher states as values, and the UTF-8 checks of
// the JSON string automaton byte by byte.
#include "inference/sampling/grammar.h"

#include <memory>
#include <string>
#include <unordered_set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "inference/sampling/json_schema.h"

namespace airlock::inference {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const Grammar> BuildOrDie(GrammarBuilder builder, int32_t root) {
  absl::StatusOr<std::shared_ptr<const Grammar>> built = std::move(builder).Build(root);
  EXPECT_TRUE(built.ok()) << built.status();
  return built.ok() ? *built : nullptr;
}

// Whole input accepted and complete.
bool Matches(const std::shared_ptr<const Grammar>& g, std::string_view text) {
  GrammarMatcher m(g);
  return m.Accept(text) && m.IsComplete();
}

// Balanced parentheses: S := '(' S ')' S | empty.
std::shared_ptr<const Grammar> Parens(GrammarLimits limits = {}) {
  GrammarBuilder b(limits);
  const int32_t s = b.AddRule("S");
  b.AddEpsilon(b.RuleStart(s), b.RuleEnd(s));
  const int32_t open = b.AddNode(s);
  b.AddBytes(b.RuleStart(s), '(', '(', open);
  const int32_t inner = b.AddNode(s);
  b.AddCall(open, s, inner);
  const int32_t close = b.AddNode(s);
  b.AddBytes(inner, ')', ')', close);
  b.AddCall(close, s, b.RuleEnd(s));
  return BuildOrDie(std::move(b), s);
}

TEST(GrammarTest, LiteralAndAlternatives) {
  GrammarBuilder b;
  const int32_t r = b.AddRule("r");
  // "abc" | "abd" | "x"*  (x loop on a node of its own)
  b.AddEpsilon(b.AddLiteral(b.RuleStart(r), "abc"), b.RuleEnd(r));
  b.AddEpsilon(b.AddLiteral(b.RuleStart(r), "abd"), b.RuleEnd(r));
  const int32_t loop = b.AddNode(r);
  b.AddEpsilon(b.RuleStart(r), loop);
  b.AddBytes(loop, 'x', 'x', loop);
  b.AddEpsilon(loop, b.RuleEnd(r));
  auto g = BuildOrDie(std::move(b), r);
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(g, "abc"));
  EXPECT_TRUE(Matches(g, "abd"));
  EXPECT_TRUE(Matches(g, ""));
  EXPECT_TRUE(Matches(g, "xxxx"));
  EXPECT_FALSE(Matches(g, "ab"));
  EXPECT_FALSE(Matches(g, "abx"));
  EXPECT_FALSE(Matches(g, "abcx"));

  GrammarMatcher m(g);
  EXPECT_TRUE(m.Accept(std::string_view("ab")));
  EXPECT_FALSE(m.IsComplete());
  EXPECT_TRUE(m.CanContinue());
  EXPECT_TRUE(m.CanAccept('c'));
  EXPECT_FALSE(m.CanAccept('x'));
  EXPECT_FALSE(m.Accept(uint8_t{'x'}));  // refused: state unchanged
  EXPECT_TRUE(m.Accept(uint8_t{'d'}));
  EXPECT_TRUE(m.IsComplete());
  EXPECT_FALSE(m.CanContinue());
  // Determinised: "abc"/"abd" share one path, so one thread at every step.
  m.Reset();
  EXPECT_TRUE(m.Accept(std::string_view("a")));
  EXPECT_EQ(m.state().threads.size(), 2u);  // [depth 1, state]
}

TEST(GrammarTest, AcceptOfManyBytesIsAllOrNothing) {
  GrammarBuilder b;
  const int32_t r = b.AddRule("r");
  b.AddEpsilon(b.AddLiteral(b.RuleStart(r), "hello"), b.RuleEnd(r));
  auto g = BuildOrDie(std::move(b), r);
  GrammarMatcher m(g);
  ASSERT_TRUE(m.Accept(std::string_view("he")));
  const MatcherState before = m.state();
  EXPECT_FALSE(m.Accept(std::string_view("lp")));
  EXPECT_EQ(m.state(), before);
  EXPECT_TRUE(m.Accept(std::string_view("llo")));
  EXPECT_TRUE(m.IsComplete());
}

TEST(GrammarTest, RecursionNestsUpToTheStackBound) {
  auto g = Parens();
  EXPECT_TRUE(Matches(g, ""));
  EXPECT_TRUE(Matches(g, "()"));
  EXPECT_TRUE(Matches(g, "(())()((()))"));
  EXPECT_FALSE(Matches(g, "(()"));
  EXPECT_FALSE(Matches(g, "())"));
  // A long flat sequence: the trailing S is a tail call, so the stack does not grow with length.
  std::string flat;
  for (int i = 0; i < 5000; ++i) flat += "()";
  GrammarMatcher m(g);
  ASSERT_TRUE(m.Accept(flat));
  EXPECT_TRUE(m.IsComplete());
  EXPECT_LE(m.state().threads.size(), 8u);

  GrammarLimits limits;
  limits.max_stack_depth = 10;
  auto shallow = Parens(limits);
  EXPECT_TRUE(Matches(shallow,
                      "((((((((("
                      ")))))))))"));
  GrammarMatcher deep(shallow);
  EXPECT_TRUE(deep.Accept(std::string(9, '(')));
  EXPECT_FALSE(deep.CanAccept('('));  // a tenth level would pass the bound
  EXPECT_TRUE(deep.CanAccept(')'));
}

TEST(GrammarTest, MatcherStatesAreValues) {
  auto g = Parens();
  GrammarMatcher a(g), b(g);
  ASSERT_TRUE(a.Accept(std::string_view("(()")));
  ASSERT_TRUE(b.Accept(std::string_view("()((")));
  ASSERT_TRUE(b.Accept(std::string_view(")")));
  // Both are one level deep inside a pair: the same state whichever way they got there.
  EXPECT_EQ(a.state(), b.state());
  EXPECT_EQ(a.state().Hash(), b.state().Hash());
  GrammarMatcher copy = a;
  ASSERT_TRUE(copy.Accept(uint8_t{')'}));
  EXPECT_TRUE(copy.IsComplete());
  EXPECT_FALSE(a.IsComplete());  // the original is untouched
  std::unordered_set<MatcherState, MatcherStateHash> seen = {a.state(), b.state(), copy.state()};
  EXPECT_EQ(seen.size(), 2u);
}

TEST(GrammarTest, AmbiguousCallsRunInParallel) {
  GrammarBuilder b;
  const int32_t top = b.AddRule("top");
  const int32_t x = b.AddRule("x");
  const int32_t y = b.AddRule("y");
  b.AddEpsilon(b.AddLiteral(b.RuleStart(x), "ab"), b.RuleEnd(x));
  b.AddEpsilon(b.AddLiteral(b.RuleStart(y), "ac"), b.RuleEnd(y));
  const int32_t mid = b.AddNode(top);
  b.AddCall(b.RuleStart(top), x, mid);
  b.AddCall(b.RuleStart(top), y, mid);
  b.AddEpsilon(b.AddLiteral(mid, "!"), b.RuleEnd(top));
  auto g = BuildOrDie(std::move(b), top);
  EXPECT_TRUE(Matches(g, "ab!"));
  EXPECT_TRUE(Matches(g, "ac!"));
  EXPECT_FALSE(Matches(g, "ad!"));
  EXPECT_FALSE(Matches(g, "ab"));
}

TEST(GrammarTest, LeftRecursionIsRefused) {
  GrammarBuilder b;
  const int32_t a = b.AddRule("A");
  // A := A 'x' | 'y'
  const int32_t after = b.AddNode(a);
  b.AddCall(b.RuleStart(a), a, after);
  b.AddEpsilon(b.AddLiteral(after, "x"), b.RuleEnd(a));
  b.AddEpsilon(b.AddLiteral(b.RuleStart(a), "y"), b.RuleEnd(a));
  absl::StatusOr<std::shared_ptr<const Grammar>> built = std::move(b).Build(a);
  ASSERT_FALSE(built.ok());
  EXPECT_EQ(built.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(built.status().message()), HasSubstr("left recursion"));
}

TEST(GrammarTest, IndirectLeftRecursionThroughANullableRuleIsRefused) {
  GrammarBuilder b;
  const int32_t a = b.AddRule("A");
  const int32_t n = b.AddRule("N");  // nullable
  b.AddEpsilon(b.RuleStart(n), b.RuleEnd(n));
  const int32_t mid = b.AddNode(a);
  b.AddCall(b.RuleStart(a), n, mid);
  const int32_t tail = b.AddNode(a);
  b.AddCall(mid, a, tail);
  b.AddEpsilon(b.AddLiteral(tail, "x"), b.RuleEnd(a));
  b.AddEpsilon(b.AddLiteral(b.RuleStart(a), "y"), b.RuleEnd(a));
  absl::StatusOr<std::shared_ptr<const Grammar>> built = std::move(b).Build(a);
  ASSERT_FALSE(built.ok());
  EXPECT_THAT(std::string(built.status().message()), HasSubstr("'A'"));
}

TEST(GrammarTest, NoFiniteSentenceIsRefusedAndDeadEndsArePruned) {
  {
    GrammarBuilder b;
    const int32_t a = b.AddRule("A");  // A := 'x' A
    const int32_t x = b.AddLiteral(b.RuleStart(a), "x");
    b.AddCall(x, a, b.RuleEnd(a));
    absl::StatusOr<std::shared_ptr<const Grammar>> built = std::move(b).Build(a);
    ASSERT_FALSE(built.ok());
    EXPECT_THAT(std::string(built.status().message()), HasSubstr("no finite instance"));
  }
  GrammarBuilder b;
  const int32_t top = b.AddRule("top");  // top := 'x' B | 'y';  B := 'z' B
  const int32_t bad = b.AddRule("B");
  const int32_t z = b.AddLiteral(b.RuleStart(bad), "z");
  b.AddCall(z, bad, b.RuleEnd(bad));
  const int32_t x = b.AddLiteral(b.RuleStart(top), "x");
  b.AddCall(x, bad, b.RuleEnd(top));
  b.AddEpsilon(b.AddLiteral(b.RuleStart(top), "y"), b.RuleEnd(top));
  auto g = BuildOrDie(std::move(b), top);
  ASSERT_NE(g, nullptr);
  GrammarMatcher m(g);
  EXPECT_FALSE(m.CanAccept('x'));  // the way into B is gone: it could never finish
  EXPECT_TRUE(Matches(g, "y"));
}

TEST(GrammarTest, LimitsAreEnforcedByName) {
  GrammarLimits limits;
  limits.max_nfa_nodes = 50;
  GrammarBuilder b(limits);
  const int32_t r = b.AddRule("r");
  b.AddEpsilon(b.AddLiteral(b.RuleStart(r), std::string(100, 'a')), b.RuleEnd(r));
  absl::StatusOr<std::shared_ptr<const Grammar>> built = std::move(b).Build(r);
  ASSERT_FALSE(built.ok());
  EXPECT_THAT(std::string(built.status().message()), HasSubstr("max_nfa_nodes"));

  GrammarLimits states;
  states.max_states = 20;
  GrammarBuilder c(states);
  const int32_t s = c.AddRule("s");
  c.AddEpsilon(c.AddLiteral(c.RuleStart(s), std::string(30, 'a')), c.RuleEnd(s));
  built = std::move(c).Build(s);
  ASSERT_FALSE(built.ok());
  EXPECT_THAT(std::string(built.status().message()), HasSubstr("max_states"));
}

TEST(GrammarTest, ThreadsAreBounded) {
  // 40 rules that all begin with 'a': after "a" there are 40 parallel parses, capped at 8.
  GrammarLimits limits;
  limits.max_threads = 8;
  GrammarBuilder b(limits);
  const int32_t top = b.AddRule("top");
  for (int i = 0; i < 40; ++i) {
    const int32_t r = b.AddRule(absl::StrCat("r", i));
    const int32_t a = b.AddLiteral(b.RuleStart(r), "a");
    b.AddEpsilon(b.AddLiteral(a, absl::StrCat(i)), b.RuleEnd(r));
    b.AddCall(b.RuleStart(top), r, b.RuleEnd(top));
  }
  auto g = BuildOrDie(std::move(b), top);
  GrammarMatcher m(g);
  ASSERT_TRUE(m.Accept(uint8_t{'a'}));
  int threads = 0;
  for (size_t i = 0; i < m.state().threads.size();
       i += static_cast<size_t>(m.state().threads[i]) + 1) {
    ++threads;
  }
  EXPECT_LE(threads, 8);
  EXPECT_GE(threads, 1);
  // Whatever survives is still a correct parse.
  EXPECT_TRUE(m.Accept(uint8_t{'0'}) || m.Accept(uint8_t{'1'}) || m.Accept(uint8_t{'2'}));
}

// The JSON string automaton, byte by byte.
class JsonStringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::shared_ptr<const Grammar>> g = CompileJsonSchema(R"({"type":"string"})");
    ASSERT_TRUE(g.ok()) << g.status();
    grammar_ = *g;
  }
  bool Accepts(std::string_view body) {
    std::string text = "\"";
    text.append(body);
    text.push_back('"');
    return Matches(grammar_, text);
  }
  std::shared_ptr<const Grammar> grammar_;
};

TEST_F(JsonStringTest, ValidUtf8AndEscapes) {
  EXPECT_TRUE(Accepts(""));
  EXPECT_TRUE(Accepts("plain ASCII ~\x7F"));
  EXPECT_TRUE(Accepts("caf\xC3\xA9 \xE2\x82\xAC \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x98\x80"));
  EXPECT_TRUE(Accepts("\xED\x9F\xBF"));      // U+D7FF, last before the surrogates
  EXPECT_TRUE(Accepts("\xEE\x80\x80"));      // U+E000
  EXPECT_TRUE(Accepts("\xF4\x8F\xBF\xBF"));  // U+10FFFF
  EXPECT_TRUE(Accepts(R"(\"\\\/\b\f\n\r\t)"));
  EXPECT_TRUE(Accepts(R"(\u00e9\u20AC\uFFFF\u0000)"));
  EXPECT_TRUE(Accepts(R"(\ud83d\ude00)"));  // a surrogate pair
}

TEST_F(JsonStringTest, InvalidBytesAreRefused) {
  EXPECT_FALSE(Accepts("\xC0\x80"));          // overlong NUL
  EXPECT_FALSE(Accepts("\xC1\xBF"));          // overlong
  EXPECT_FALSE(Accepts("\xE0\x80\x80"));      // overlong 3-byte
  EXPECT_FALSE(Accepts("\xED\xA0\x80"));      // UTF-16 surrogate D800 encoded
  EXPECT_FALSE(Accepts("\xF0\x80\x80\x80"));  // overlong 4-byte
  EXPECT_FALSE(Accepts("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(Accepts("\xF5\x80\x80\x80"));
  EXPECT_FALSE(Accepts("\x80"));  // lone continuation
  EXPECT_FALSE(Accepts("\xC3"));  // truncated before the quote
  EXPECT_FALSE(Accepts("\xFF"));
  EXPECT_FALSE(Accepts("tab\there"));  // raw control character
  EXPECT_FALSE(Accepts("new\nline"));
  EXPECT_FALSE(Accepts(R"(\x41)"));
  EXPECT_FALSE(Accepts(R"(\u12)"));
  EXPECT_FALSE(Accepts(R"(\ud83d)"));        // high surrogate alone
  EXPECT_FALSE(Accepts(R"(\ude00)"));        // low surrogate alone
  EXPECT_FALSE(Accepts(R"(\ud83d\u0041)"));  // high surrogate, then no low one
}

TEST_F(JsonStringTest, CharacterSplitAnywhereIsAcceptedByteByByte) {
  const std::string text = "\"\xF0\x9F\x98\x80\"";
  GrammarMatcher m(grammar_);
  for (size_t i = 0; i < text.size(); ++i) {
    EXPECT_FALSE(m.IsComplete());
    ASSERT_TRUE(m.Accept(static_cast<uint8_t>(text[i]))) << "byte " << i;
    if (i >= 1 && i <= 3) {
      // Mid-character: only a continuation byte may follow.
      EXPECT_FALSE(m.CanAccept('"'));
      EXPECT_FALSE(m.CanAccept('a'));
    }
  }
  EXPECT_TRUE(m.IsComplete());
}

}  // namespace
}  // namespace airlock::inference

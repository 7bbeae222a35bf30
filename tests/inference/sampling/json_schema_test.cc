// CompileJsonSchema: which texts each supported keyword accepts and refuses, the whitespace rule,
// member order, recursion, and every refusal a hostile schema should get (unsupported keywords
// named with their JSON pointer, limits named, malformed JSON, schemas without instances).
#include "inference/sampling/json_schema.h"

#include <chrono>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace airlock::inference {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::shared_ptr<const Grammar> Compile(std::string_view schema) {
  absl::StatusOr<std::shared_ptr<const Grammar>> g = CompileJsonSchema(schema);
  EXPECT_TRUE(g.ok()) << schema << ": " << g.status();
  return g.ok() ? *g : nullptr;
}

bool Matches(const std::shared_ptr<const Grammar>& g, std::string_view text) {
  if (g == nullptr) return false;
  GrammarMatcher m(g);
  return m.Accept(text) && m.IsComplete();
}

// The error message of compiling `schema`, or "" when it compiled.
std::string Error(std::string_view schema, const JsonSchemaLimits& limits = {}) {
  absl::StatusOr<std::shared_ptr<const Grammar>> g = CompileJsonSchema(schema, limits);
  if (g.ok()) return "";
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(g.status().message());
}

TEST(JsonSchemaTest, ScalarTypes) {
  auto integer = Compile(R"({"type":"integer"})");
  for (const char* ok : {"0", "-0", "7", "-12", "1234567890123456789", "-9999999999999999999"}) {
    EXPECT_TRUE(Matches(integer, ok)) << ok;
  }
  for (const char* bad : {"01", "1.0", "1e3", "+1", "-", "", " 1", "1 ", "\"1\"",
                          "12345678901234567890"}) {  // 20 digits: past kMaxIntegerDigits
    EXPECT_FALSE(Matches(integer, bad)) << bad;
  }
  auto number = Compile(R"({"type":"number"})");
  for (const char* ok : {"0", "-0.5", "3.25", "1e10", "1E-7", "-2.5e+3", "10", "1e99",
                         "-1234567890123456789.12345678901234567890E-99"}) {
    EXPECT_TRUE(Matches(number, ok)) << ok;
  }
  for (const char* bad : {".5", "1.", "1e", "00", "NaN", "Infinity", "-", "1e100", "1e+308",
                          "0.123456789012345678901"}) {  // digit runs past their bounds
    EXPECT_FALSE(Matches(number, bad)) << bad;
  }
  auto boolean = Compile(R"({"type":"boolean"})");
  EXPECT_TRUE(Matches(boolean, "true"));
  EXPECT_TRUE(Matches(boolean, "false"));
  EXPECT_FALSE(Matches(boolean, "True"));
  auto null = Compile(R"({"type":"null"})");
  EXPECT_TRUE(Matches(null, "null"));
  EXPECT_FALSE(Matches(null, "nul"));
  auto nullable = Compile(R"({"type":["string","null"]})");
  EXPECT_TRUE(Matches(nullable, "null"));
  EXPECT_TRUE(Matches(nullable, R"("x")"));
  EXPECT_FALSE(Matches(nullable, "1"));
}

TEST(JsonSchemaTest, ObjectMembersInDeclarationOrderOptionalOnesMayBeLeftOut) {
  auto g = Compile(R"({"type":"object","properties":{
      "a":{"type":"integer"},"b":{"type":"string"},"c":{"type":"boolean"}},
      "required":["b"]})");
  EXPECT_TRUE(Matches(g, R"({"b":"x"})"));
  EXPECT_TRUE(Matches(g, R"({"a":1,"b":"x"})"));
  EXPECT_TRUE(Matches(g, R"({"b":"x","c":true})"));
  EXPECT_TRUE(Matches(g, R"({"a":1,"b":"x","c":false})"));
  EXPECT_FALSE(Matches(g, R"({})"));  // b is required
  EXPECT_FALSE(Matches(g, R"({"a":1})"));
  EXPECT_FALSE(Matches(g, R"({"b":"x","a":1})"));  // out of order
  EXPECT_FALSE(Matches(g, R"({"b":"x","d":1})"));  // no additional properties
  EXPECT_FALSE(Matches(g, R"({"b":"x",})"));       // trailing comma
  EXPECT_FALSE(Matches(g, R"({,"b":"x"})"));
  EXPECT_FALSE(Matches(g, R"({"b":"x","b":"y"})"));

  auto all_optional =
      Compile(R"({"type":"object","properties":{"a":{"type":"null"},"b":{"type":"null"}}})");
  EXPECT_TRUE(Matches(all_optional, "{}"));
  EXPECT_TRUE(Matches(all_optional, R"({"b":null})"));
  EXPECT_TRUE(Matches(all_optional, R"({"a":null,"b":null})"));
  EXPECT_FALSE(Matches(all_optional, R"({,"b":null})"));

  auto empty = Compile(R"({"type":"object"})");  // additionalProperties defaults to false
  EXPECT_TRUE(Matches(empty, "{}"));
  EXPECT_FALSE(Matches(empty, R"({"a":1})"));
  auto any_object = Compile(R"({"type":"object","additionalProperties":true})");
  EXPECT_TRUE(Matches(any_object, R"({"a":[1,{"b":null}],"c":"d"})"));
}

TEST(JsonSchemaTest, WhitespaceIsBounded) {
  auto g =
      Compile(R"({"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}}},
                       "required":["a"]})");
  EXPECT_TRUE(Matches(g, R"({"a":[1,2]})"));
  EXPECT_TRUE(Matches(g, R"({ "a" : [ 1 , 2 ] })"));
  EXPECT_TRUE(Matches(g, "{\n  \"a\": [\n    1,\n    2\n  ]\n}"));
  EXPECT_TRUE(Matches(g, "{\n\t\"a\":[1]}"));
  EXPECT_TRUE(Matches(g, absl::StrCat("{\n", std::string(kMaxIndent, ' '), "\"a\":[]}")));
  EXPECT_FALSE(Matches(g, absl::StrCat("{\n", std::string(kMaxIndent + 1, ' '), "\"a\":[]}")));
  EXPECT_FALSE(Matches(g, R"({  "a":[]})"));   // two spaces
  EXPECT_FALSE(Matches(g, "{\n\n\"a\":[]}"));  // two newlines
  EXPECT_FALSE(Matches(g, "{ \n\"a\":[]}"));   // space then newline
  EXPECT_FALSE(Matches(g, "{\r\n\"a\":[]}"));
  EXPECT_FALSE(Matches(g, R"( {"a":[]})"));  // before the value
  EXPECT_FALSE(Matches(g, R"({"a":[]} )"));  // after it
  // Once the object is closed nothing can follow.
  GrammarMatcher m(g);
  ASSERT_TRUE(m.Accept(std::string_view(R"({"a":[]})")));
  EXPECT_TRUE(m.IsComplete());
  EXPECT_FALSE(m.CanContinue());
  // Whitespace cannot go on forever at any point.
  GrammarMatcher spaces(g);
  ASSERT_TRUE(spaces.Accept(std::string_view("{\n")));
  int accepted = 0;
  while (spaces.Accept(uint8_t{' '})) ++accepted;
  EXPECT_EQ(accepted, kMaxIndent);
}

TEST(JsonSchemaTest, ArraysWithItemBounds) {
  auto g = Compile(R"({"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":4})");
  EXPECT_FALSE(Matches(g, "[]"));
  EXPECT_FALSE(Matches(g, "[1]"));
  EXPECT_TRUE(Matches(g, "[1,2]"));
  EXPECT_TRUE(Matches(g, "[1, 2, 3, 4]"));
  EXPECT_FALSE(Matches(g, "[1,2,3,4,5]"));
  EXPECT_FALSE(Matches(g, "[1,2,]"));
  EXPECT_FALSE(Matches(g, "[1,\"a\"]"));
  auto unbounded = Compile(R"({"type":"array","items":{"type":"boolean"},"minItems":1})");
  EXPECT_FALSE(Matches(unbounded, "[]"));
  std::string many = "[true";
  for (int i = 0; i < 500; ++i) many += ",false";
  EXPECT_TRUE(Matches(unbounded, absl::StrCat(many, "]")));
  auto any = Compile(R"({"type":"array"})");
  EXPECT_TRUE(Matches(any, R"([1,"a",null,[{}],{"k":true}])"));
  auto empty_only = Compile(R"({"type":"array","maxItems":0})");
  EXPECT_TRUE(Matches(empty_only, "[]"));
  EXPECT_FALSE(Matches(empty_only, "[1]"));
}

TEST(JsonSchemaTest, EnumAndConstOfAnyValues) {
  auto g = Compile(R"({"enum":["Zürich","東京","😀",1,2.5,null,true,{"k":[1,"é"]},[]]})");
  for (const char* ok :
       {"\"Zürich\"", "\"東京\"", "\"😀\"", "1", "2.5", "null", "true", R"({"k":[1,"é"]})", "[]"}) {
    EXPECT_TRUE(Matches(g, ok)) << ok;
  }
  for (const char* bad : {"\"Zurich\"", "\"Z\\u00fcrich\"", "2", "false", R"({"k": [1,"é"]})"}) {
    EXPECT_FALSE(Matches(g, bad)) << bad;
  }
  auto typed = Compile(R"({"type":"string","enum":["a",1,"b"]})");  // 1 is not a string
  EXPECT_TRUE(Matches(typed, "\"a\""));
  EXPECT_FALSE(Matches(typed, "1"));
  auto constant = Compile(R"({"const":"only"})");
  EXPECT_TRUE(Matches(constant, "\"only\""));
  EXPECT_FALSE(Matches(constant, "\"onl\""));
  // Many values sharing prefixes are one deterministic trie: a single thread throughout.
  std::string many = R"({"enum":[)";
  for (int i = 0; i < 200; ++i) absl::StrAppend(&many, i ? "," : "", "\"value", i, "\"");
  auto trie = Compile(absl::StrCat(many, "]}"));
  GrammarMatcher m(trie);
  ASSERT_TRUE(m.Accept(std::string_view("\"value1")));
  EXPECT_EQ(m.state().threads[0] + 1, static_cast<int32_t>(m.state().threads.size()));
  EXPECT_TRUE(m.Accept(std::string_view("99\"")));
  EXPECT_TRUE(m.IsComplete());
}

TEST(JsonSchemaTest, AnyOfOneOfAndTypeLists) {
  auto g = Compile(R"({"anyOf":[
      {"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":"number"}},"required":["kind","r"]},
      {"type":"object","properties":{"kind":{"const":"rect"},"w":{"type":"number"}},"required":["kind","w"]},
      {"type":"null"}]})");
  EXPECT_TRUE(Matches(g, R"({"kind":"circle","r":1.5})"));
  EXPECT_TRUE(Matches(g, R"({"kind":"rect","w":2})"));
  EXPECT_TRUE(Matches(g, "null"));
  EXPECT_FALSE(Matches(g, R"({"kind":"circle","w":2})"));
  auto one_of = Compile(R"({"oneOf":[{"type":"integer"},{"type":"string"}]})");
  EXPECT_TRUE(Matches(one_of, "3"));
  EXPECT_TRUE(Matches(one_of, "\"3\""));
  auto list = Compile(R"({"type":["integer","number","boolean"]})");
  EXPECT_TRUE(Matches(list, "1"));
  EXPECT_TRUE(Matches(list, "1.5"));
  EXPECT_TRUE(Matches(list, "false"));
}

TEST(JsonSchemaTest, RefsAndRecursion) {
  auto tree = Compile(R"({"$defs":{"node":{"type":"object","properties":{
      "v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},
      "required":["v","kids"]}},"$ref":"#/$defs/node"})");
  EXPECT_TRUE(Matches(tree, R"({"v":1,"kids":[]})"));
  EXPECT_TRUE(
      Matches(tree, R"({"v":1,"kids":[{"v":2,"kids":[{"v":3,"kids":[]}]},{"v":4,"kids":[]}]})"));
  EXPECT_FALSE(Matches(tree, R"({"v":1,"kids":[{"v":2}]})"));
  auto definitions = Compile(R"({"definitions":{"p":{"type":"integer"}},"type":"array",
                                 "items":{"$ref":"#/definitions/p"}})");
  EXPECT_TRUE(Matches(definitions, "[1,2]"));
  auto root =
      Compile(R"({"type":"object","properties":{"next":{"anyOf":[{"$ref":"#"},{"type":"null"}]}},
                          "required":["next"]})");
  EXPECT_TRUE(Matches(root, R"({"next":{"next":{"next":null}}})"));
  auto escaped = Compile(R"({"$defs":{"a/b~c":{"type":"null"}},"$ref":"#/$defs/a~1b~0c"})");
  EXPECT_TRUE(Matches(escaped, "null"));
}

TEST(JsonSchemaTest, AnnotationsAreIgnored) {
  auto g = Compile(R"({"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"x",
      "title":"T","description":"D","$comment":"c","type":"object","examples":[{}],
      "properties":{"a":{"type":"string","default":"z","deprecated":true,"readOnly":false}}})");
  EXPECT_TRUE(Matches(g, R"({"a":"q"})"));
}

TEST(JsonSchemaTest, AnyJsonObject) {
  auto g = AnyJsonObjectGrammar();
  EXPECT_EQ(g, AnyJsonObjectGrammar());  // built once
  EXPECT_TRUE(Matches(g, "{}"));
  EXPECT_TRUE(Matches(g, R"({"a":1,"b":[true,null,{"c":"d"}],"e":-1.5e3})"));
  EXPECT_TRUE(Matches(g, "{\n  \"a\": {}\n}"));
  EXPECT_FALSE(Matches(g, "[]"));
  EXPECT_FALSE(Matches(g, "1"));
  EXPECT_FALSE(Matches(g, R"({"a"})"));
  EXPECT_FALSE(Matches(g, R"({a:1})"));
}

TEST(JsonSchemaTest, UnsupportedKeywordsAreRefusedWithTheirPointer) {
  struct Case {
    const char* schema;
    const char* keyword;
    const char* pointer;
  };
  const Case cases[] = {
      {R"({"type":"object","properties":{"date":{"type":"string","pattern":"^\\d+$"}}})", "pattern",
       "/properties/date/pattern"},
      {R"({"type":"string","format":"date-time"})", "format", "/format"},
      {R"({"type":"string","minLength":3})", "minLength", "/minLength"},
      {R"({"type":"string","maxLength":3})", "maxLength", "/maxLength"},
      {R"({"type":"integer","minimum":0})", "minimum", "/minimum"},
      {R"({"type":"number","multipleOf":2})", "multipleOf", "/multipleOf"},
      {R"({"type":"object","patternProperties":{"^a":{}}})", "patternProperties",
       "/patternProperties"},
      {R"({"allOf":[{"type":"string"}]})", "allOf", "/allOf"},
      {R"({"not":{"type":"string"}})", "not", "/not"},
      {R"({"if":{},"then":{}})", "if", "/if"},
      {R"({"type":"array","items":{"type":"array","uniqueItems":true}})", "uniqueItems",
       "/items/uniqueItems"},
      {R"({"type":"array","prefixItems":[{}]})", "prefixItems", "/prefixItems"},
      {R"({"type":"object","properties":{"a b/c":{"type":"string","format":"email"}}})", "format",
       "/properties/a b~1c/format"},
      {R"({"$defs":{"x":{"type":"integer","exclusiveMaximum":3}},"$ref":"#/$defs/x"})",
       "exclusiveMaximum", "/$defs/x/exclusiveMaximum"},
      {R"({"anyOf":[{"type":"string"},{"type":"integer","maximum":5}]})", "maximum",
       "/anyOf/1/maximum"},
      {R"({"type":"object","properties":{"a":{"nullable":true}}})", "nullable",
       "/properties/a/nullable"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(Error(c.schema),
                AllOf(HasSubstr(absl::StrCat("'", c.keyword, "'")), HasSubstr(c.pointer)))
        << c.schema;
  }
}

// Keywords, property names and $refs are the caller's text: an error quotes each only so far.
TEST(JsonSchemaTest, ErrorsQuoteTheSchemaBoundedly) {
  const std::string name(20000, 'n');
  const std::string keyword = std::string(19999, 'k') + "\u00e9";  // ends in a two-byte character
  for (const std::string& schema :
       {absl::StrCat(R"({"type":"object","properties":{")", name, R"(":{"type":"string","pattern":"a"}}})"),
        absl::StrCat(R"({"type":"string",")", keyword, R"(":1})"),
        absl::StrCat(R"({"$ref":"#/$defs/)", name, R"("})")}) {
    const std::string error = Error(schema);
    EXPECT_LT(error.size(), 600u) << error.substr(0, 300);
    EXPECT_THAT(error, HasSubstr("bytes]"));
  }
}

TEST(JsonSchemaTest, UnsupportedShapesAreRefused) {
  EXPECT_THAT(Error(R"({"$ref":"http://example.com/schema"})"), HasSubstr("only #"));
  EXPECT_THAT(Error(R"({"$ref":"#/properties/a"})"), HasSubstr("only #"));
  EXPECT_THAT(Error(R"({"$ref":"#/$defs/missing"})"), HasSubstr("does not resolve"));
  EXPECT_THAT(Error(R"({"$defs":{"a":{"type":"null"}},"$ref":"#/$defs/a","type":"null"})"),
              AllOf(HasSubstr("'type' beside '$ref'"), HasSubstr("/type")));
  EXPECT_THAT(Error(R"({"type":"object","properties":{"a":{"$defs":{}}}})"),
              AllOf(HasSubstr("only supported at the root"), HasSubstr("/properties/a/$defs")));
  EXPECT_THAT(Error(R"({"type":"object","additionalProperties":{"type":"string"}})"),
              HasSubstr("/additionalProperties"));
  EXPECT_THAT(Error(R"({"type":"object","properties":{"a":{}},"additionalProperties":true})"),
              HasSubstr("additionalProperties true beside 'properties'"));
  EXPECT_THAT(Error(R"({"type":"array","items":[{"type":"string"}]})"), HasSubstr("tuple"));
  EXPECT_THAT(Error(R"({"type":"strin"})"), AllOf(HasSubstr("unknown type"), HasSubstr("/type")));
  EXPECT_THAT(Error(R"({"type":[]})"), HasSubstr("empty type list"));
  EXPECT_THAT(Error(R"({"anyOf":[]})"), HasSubstr("/anyOf"));
  EXPECT_THAT(Error(R"({"type":"string","anyOf":[{"type":"string"}]})"),
              HasSubstr("beside 'anyOf'"));
  EXPECT_THAT(Error(R"({"enum":[1],"const":1})"), HasSubstr("const"));
  EXPECT_THAT(Error(R"({"type":"array","minItems":-1})"), HasSubstr("/minItems"));
  EXPECT_THAT(Error(R"({"type":"array","minItems":1.5})"), HasSubstr("/minItems"));
  EXPECT_THAT(Error("false"), HasSubstr("false"));
  EXPECT_THAT(Error("[]"), HasSubstr("object or a boolean"));
  EXPECT_THAT(Error("3"), HasSubstr("object or a boolean"));
}

TEST(JsonSchemaTest, SchemasWithoutInstancesAreRefused) {
  EXPECT_THAT(Error(R"({"type":"object","properties":{"a":{}},"required":["a","b"]})"),
              AllOf(HasSubstr("'b'"), HasSubstr("/required/1")));
  EXPECT_THAT(Error(R"({"type":"array","minItems":3,"maxItems":2})"), HasSubstr("/maxItems"));
  EXPECT_THAT(Error(R"({"type":"integer","enum":["a","b"]})"), HasSubstr("no value matches"));
  // Recursion with no way out: every node must have a child.
  EXPECT_THAT(Error(R"({"$defs":{"n":{"type":"object","properties":{"c":{"$ref":"#/$defs/n"}},
                       "required":["c"]}},"$ref":"#/$defs/n"})"),
              HasSubstr("no finite instance"));
  // Left recursion through $ref aliases.
  EXPECT_THAT(Error(R"({"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"anyOf":[{"$ref":"#/$defs/a"},
                       {"type":"null"}]}},"$ref":"#/$defs/a"})"),
              HasSubstr("left recursion"));
}

TEST(JsonSchemaTest, MalformedJsonIsRefused) {
  for (const char* bad : {"", "{", R"({"type":})", R"({"type":"string",})", "{'type':'string'}",
                          "{\"type\":\"\xC3\x28\"}", R"({"type":"string"} x)"}) {
    EXPECT_THAT(Error(bad), HasSubstr("not valid JSON")) << bad;
  }
}

TEST(JsonSchemaTest, LimitsAreRefusedByName) {
  JsonSchemaLimits limits;
  limits.max_schema_bytes = 100;
  EXPECT_THAT(
      Error(absl::StrCat(R"({"type":"string","description":")", std::string(200, 'x'), "\"}"),
            limits),
      HasSubstr("max_schema_bytes"));

  std::string deep_text;
  for (int i = 0; i < 1000; ++i) deep_text += "[";
  EXPECT_THAT(Error(deep_text), HasSubstr("max_depth"));
  // 40 nested anyOfs: past the default depth of 32, within a raised one.
  std::string deep_schema = R"({"type":"null"})";
  for (int i = 0; i < 40; ++i) deep_schema = absl::StrCat(R"({"anyOf":[)", deep_schema, "]}");
  EXPECT_THAT(Error(deep_schema), HasSubstr("max_depth"));
  JsonSchemaLimits raised;
  raised.max_depth = 100;
  EXPECT_EQ(Error(deep_schema, raised), "");

  std::string big_enum = R"({"enum":[)";
  for (int i = 0; i < 300; ++i) absl::StrAppend(&big_enum, i ? "," : "", i);
  EXPECT_THAT(Error(absl::StrCat(big_enum, "]}")),
              AllOf(HasSubstr("max_enum_values"), HasSubstr("/enum")));
  EXPECT_THAT(Error(R"({"type":"array","maxItems":100000})"),
              AllOf(HasSubstr("max_array_items"), HasSubstr("/maxItems")));
  EXPECT_THAT(Error(R"({"type":"array","minItems":1000000000000})"), HasSubstr("max_array_items"));
  std::string wide = R"({"type":"object","properties":{)";
  for (int i = 0; i < 200; ++i) absl::StrAppend(&wide, i ? "," : "", "\"p", i, "\":{}");
  EXPECT_THAT(Error(absl::StrCat(wide, "}}")), HasSubstr("max_properties"));
  std::string branches = R"({"anyOf":[)";
  for (int i = 0; i < 100; ++i) absl::StrAppend(&branches, i ? "," : "", R"({"const":)", i, "}");
  EXPECT_THAT(Error(absl::StrCat(branches, "]}")), HasSubstr("max_any_of"));
  // Nested bounded arrays multiply: the grammar's own limits catch it.
  JsonSchemaLimits small;
  small.grammar.max_states = 2000;
  EXPECT_THAT(Error(R"({"type":"array","items":{"type":"array","items":{"type":"integer"},
                       "maxItems":200},"maxItems":200})",
                    small),
              HasSubstr("max_states"));
}

// Hostile input: mutated and truncated schemas either compile or are refused, never crash; what
// compiles is then driven with random bytes.
TEST(JsonSchemaTest, MutatedSchemasCompileOrAreRefused) {
  const std::vector<std::string> seeds = {
      R"({"type":"object","properties":{"a":{"type":"array","items":{"$ref":"#/$defs/n"},"maxItems":3},
         "b":{"enum":["x","ü",1,null]},"c":{"anyOf":[{"type":"string"},{"type":"integer"}]}},
         "required":["a"],"$defs":{"n":{"type":["object","null"],"properties":{"n":{"$ref":"#/$defs/n"}}}}})",
      R"({"type":"array","items":{"type":"object","properties":{"k":{"const":{"x":[1,2]}}}},"minItems":1})",
  };
  const std::string alphabet = R"({}[]:,"0123456789-+.eE truefalsnl$#/bcdefghijkmopquvwxyz)";
  std::mt19937_64 rng(11);
  int compiled = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string text = seeds[static_cast<size_t>(i) % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = rng() % text.size();
      switch (rng() % 4) {
        case 0:
          text[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          text.erase(at, 1 + rng() % 8);
          break;
        case 2:
          text.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          text.resize(at);
          break;
      }
    }
    absl::StatusOr<std::shared_ptr<const Grammar>> g = CompileJsonSchema(text);
    if (!g.ok()) {
      EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << text;
      continue;
    }
    ++compiled;
    GrammarMatcher m(*g);
    for (int b = 0; b < 200; ++b) m.Accept(static_cast<uint8_t>(alphabet[rng() % alphabet.size()]));
  }
  EXPECT_GT(compiled, 10);
}

// A schema at the limits compiles in bounded time (the grammar limits bound the work).
TEST(JsonSchemaTest, LargeSchemaWithinLimitsCompiles) {
  std::string properties;
  for (int i = 0; i < 60; ++i) {
    absl::StrAppend(&properties, i ? "," : "", "\"property_", i,
                    R"(":{"type":["string","number","null"]})");
  }
  std::string branches;
  for (int i = 0; i < 12; ++i) {
    absl::StrAppend(&branches, i ? "," : "", R"({"type":"object","properties":{)", properties,
                    "}}");
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::shared_ptr<const Grammar>> g =
      CompileJsonSchema(absl::StrCat(R"({"anyOf":[)", branches, "]}"));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (g.ok()) {
    EXPECT_TRUE(Matches(*g, R"({"property_3":null,"property_59":"x"})"));
  } else {
    EXPECT_THAT(std::string(g.status().message()), HasSubstr("limit"));
  }
  RecordProperty("compile_seconds", std::to_string(seconds));
  std::printf("12 x 60-member anyOf: %s in %.3f s\n", g.ok() ? "compiled" : "refused", seconds);
}

}  // namespace
}  // namespace airlock::inference

// TokenConstraint on small hand-made vocabularies (UTF-8 split across tokens, end of generation,
// refusals, padding) and on real ones: a seeded random "model" generates under 15 schemas with the
// Llama SentencePiece (32k) and Llama-3 BPE (128k) vocabularies, and every output is parsed and
// checked by a small validator written here, independent of the compiler.
#include "inference/sampling/token_constraint.h"

#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "inference/gguf/gguf_file.h"
#include "inference/sampling/json_schema.h"
#include "inference/tokenizer/tokenizer.h"
#include "tests/support/test_data.h"

int64_t AllocationCount();  // allocation_counter_test.cc

namespace airlock::inference {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

std::shared_ptr<const Grammar> Compile(std::string_view schema) {
  absl::StatusOr<std::shared_ptr<const Grammar>> g = CompileJsonSchema(schema);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : nullptr;
}

std::shared_ptr<const TokenVocabulary> Vocabulary(std::vector<std::string> bytes,
                                                  std::vector<int32_t> eog = {},
                                                  std::vector<int32_t> never = {}) {
  absl::StatusOr<std::shared_ptr<const TokenVocabulary>> v =
      TokenVocabulary::Create(std::move(bytes), eog, never);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : nullptr;
}

// Ids whose logits survive Apply().
std::vector<int32_t> Allowed(TokenConstraint& c, int32_t n_vocab) {
  std::vector<float> logits(static_cast<size_t>(n_vocab), 0.0f);
  c.Apply(logits.data(), n_vocab);
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < n_vocab; ++i) {
    if (logits[static_cast<size_t>(i)] != -INFINITY) ids.push_back(i);
  }
  return ids;
}

// A toy vocabulary: 0 EOS, 1 <ctl>, 2 "", then text tokens.
std::shared_ptr<const TokenVocabulary> Toy() {
  return Vocabulary({"", "<ctl>", "", "\"", "a", "\xE2", "\x82\xAC", "\xE2\x82", "\xAC\"", "\xFF",
                     "\x82", "\"a\"", "1", "12", "\"\xE2\x82\xAC"},
                    /*eog=*/{0}, /*never=*/{1});
}
enum ToyId : int32_t {
  kEos = 0,
  kCtl = 1,
  kEmpty = 2,
  kQuote = 3,
  kA = 4,
  kE2 = 5,
  k82AC = 6,
  kE282 = 7,
  kACQuote = 8,
  kFF = 9,
  k82 = 10,
  kQuoted = 11,
  kOne = 12,
  kTwelve = 13,
  kQuoteEuro = 14,
  kToySize = 15
};

TEST(TokenConstraintTest, Utf8SplitAcrossTokensIsAcceptedAndInvalidUtf8Refused) {
  auto masks = std::make_shared<TokenMaskCache>(Compile(R"({"type":"string"})"), Toy());
  TokenConstraint c(masks);
  EXPECT_THAT(Allowed(c, kToySize), ::testing::ElementsAre(kQuote, kQuoted, kQuoteEuro));
  ASSERT_TRUE(c.Accept(kQuote).ok());
  // Inside the string a lead byte alone is fine: the next token completes the character.
  EXPECT_THAT(Allowed(c, kToySize), ::testing::ElementsAre(kQuote, kA, kE2, kE282, kOne, kTwelve));
  ASSERT_TRUE(c.Accept(kE2).ok());
  // After E2 only continuation bytes; "\xAC\"" is refused (the quote would cut the character).
  EXPECT_THAT(Allowed(c, kToySize), ::testing::ElementsAre(k82AC, k82));
  EXPECT_FALSE(c.Accept(kQuote).ok());
  EXPECT_FALSE(c.Accept(kFF).ok());
  ASSERT_TRUE(c.Accept(k82).ok());
  EXPECT_THAT(Allowed(c, kToySize), ::testing::ElementsAre(kACQuote, k82));
  ASSERT_TRUE(c.Accept(kACQuote).ok());
  EXPECT_TRUE(c.IsComplete());
  EXPECT_THAT(Allowed(c, kToySize), ::testing::ElementsAre(kEos));  // only the end remains
  ASSERT_TRUE(c.Accept(kEos).ok());
  EXPECT_TRUE(c.IsFinished());
  EXPECT_FALSE(c.Accept(kA).ok());

  // The same character split the other way.
  TokenConstraint d(masks);
  ASSERT_TRUE(d.Accept(kQuote).ok());
  ASSERT_TRUE(d.Accept(kE282).ok());
  ASSERT_TRUE(d.Accept(kACQuote).ok());
  EXPECT_TRUE(d.IsComplete());
  // A byte that is never valid UTF-8 is never allowed.
  TokenConstraint e(masks);
  ASSERT_TRUE(e.Accept(kQuote).ok());
  EXPECT_THAT(Allowed(e, kToySize), ::testing::Not(::testing::Contains(kFF)));
  absl::Status refused = e.Accept(kFF);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("refused by the grammar"));
}

TEST(TokenConstraintTest, EndOfGenerationOnlyWhenComplete) {
  auto masks = std::make_shared<TokenMaskCache>(Compile(R"({"type":"integer"})"), Toy());
  TokenConstraint c(masks);
  EXPECT_THAT(Allowed(c, kToySize), ::testing::ElementsAre(kOne, kTwelve));
  absl::Status early = c.Accept(kEos);
  EXPECT_EQ(early.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(early.message()), HasSubstr("before the output is a complete instance"));
  ASSERT_TRUE(c.Accept(kOne).ok());
  // "1" is complete but may go on: the end and more digits.
  EXPECT_TRUE(c.IsComplete());
  EXPECT_TRUE(c.CanContinue());
  EXPECT_THAT(Allowed(c, kToySize), ::testing::ElementsAre(kEos, kOne, kTwelve));
  ASSERT_TRUE(c.Accept(kEos).ok());
  EXPECT_THAT(Allowed(c, kToySize), ::testing::ElementsAre(kEos));
}

TEST(TokenConstraintTest, RefusalsLeaveTheStateUnchanged) {
  auto masks = std::make_shared<TokenMaskCache>(Compile(R"({"type":"string"})"), Toy());
  TokenConstraint c(masks);
  const MatcherState before = c.state();
  for (const int32_t bad : std::vector<int32_t>{kA, kCtl, kEmpty, kOne, -1, kToySize, 1 << 30}) {
    absl::Status s = c.Accept(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(c.state(), before);
    EXPECT_FALSE(c.Allows(bad));
  }
  EXPECT_TRUE(c.Allows(kQuote));
  EXPECT_EQ(c.state(), before);  // Allows() does not advance
  EXPECT_THAT(std::string(c.Accept(kCtl).message()), HasSubstr("never allowed"));
}

TEST(TokenConstraintTest, PaddedRowsAndShortRows) {
  auto masks = std::make_shared<TokenMaskCache>(Compile(R"({"type":"string"})"), Toy());
  TokenConstraint c(masks);
  std::vector<float> logits(100, 1.0f);  // a model row padded past the tokenizer
  c.Apply(logits.data(), 100);
  for (int32_t i = kToySize; i < 100; ++i) EXPECT_EQ(logits[static_cast<size_t>(i)], -INFINITY);
  EXPECT_EQ(logits[kQuote], 1.0f);  // allowed entries untouched
  std::vector<float> short_row(5, 2.0f);
  c.Apply(short_row.data(), 5);
  EXPECT_EQ(short_row[kQuote], 2.0f);
  EXPECT_EQ(short_row[kA], -INFINITY);
}

TEST(TokenConstraintTest, CopiesAreIndependentAndResetStartsOver) {
  auto masks = std::make_shared<TokenMaskCache>(Compile(R"({"type":"string"})"), Toy());
  TokenConstraint c(masks);
  ASSERT_TRUE(c.Accept(kQuote).ok());
  TokenConstraint copy = c;
  ASSERT_TRUE(copy.Accept(kACQuote).ok() == false);  // AC alone is not valid after a quote
  ASSERT_TRUE(copy.Accept(kA).ok());  // inside the string body: the same state as c, until c closes
  ASSERT_TRUE(c.Accept(kQuote).ok());
  EXPECT_TRUE(c.IsComplete());
  EXPECT_FALSE(copy.IsComplete());
  c.Reset();
  EXPECT_EQ(c.state(), masks->grammar().initial_state());
  EXPECT_FALSE(c.IsFinished());
}

TEST(TokenConstraintTest, VocabularyValidation) {
  EXPECT_FALSE(TokenVocabulary::Create({}, {}, {}).ok());
  EXPECT_FALSE(TokenVocabulary::Create({"a"}, std::vector<int32_t>{1}, {}).ok());
  EXPECT_FALSE(TokenVocabulary::Create({"a"}, {}, std::vector<int32_t>{-1}).ok());
  auto v = Toy();
  EXPECT_EQ(v->n_vocab(), kToySize);
  EXPECT_TRUE(v->IsEndOfGeneration(kEos));
  EXPECT_TRUE(v->IsNeverProduced(kCtl));
  EXPECT_TRUE(v->IsNeverProduced(kEmpty));  // no bytes: no progress
  EXPECT_EQ(v->bytes(kQuoted), "\"a\"");
  EXPECT_EQ(v->max_token_bytes(), 4);
}

TEST(TokenConstraintTest, CacheEvictsPastItsBoundAndCountsHits) {
  TokenMaskCacheOptions options;
  options.max_bytes = 1;  // at most one entry is ever kept
  auto masks = std::make_shared<TokenMaskCache>(Compile(R"({"type":"string"})"), Toy(), options);
  TokenConstraint c(masks);
  Allowed(c, kToySize);
  Allowed(c, kToySize);
  ASSERT_TRUE(c.Accept(kQuote).ok());
  Allowed(c, kToySize);
  const TokenMaskCache::Stats stats = masks->stats();
  EXPECT_EQ(stats.hits, 1);
  EXPECT_EQ(stats.misses, 2);
  EXPECT_EQ(stats.evictions, 1);
  EXPECT_EQ(stats.entries, 1);
}

// Once the masks are cached and the buffers have grown, a decode step (Apply + Accept) allocates
// nothing.
TEST(TokenConstraintTest, CachedStepsAllocateNothing) {
  std::vector<std::string> bytes(257);
  for (int b = 0; b < 256; ++b)
    bytes[static_cast<size_t>(b)] = std::string(1, static_cast<char>(b));
  const int32_t eos = 256;
  auto vocabulary = Vocabulary(bytes, {eos});
  auto grammar = Compile(R"({"type":"object","properties":{"name":{"type":"string"},
      "tags":{"type":"array","items":{"type":"string"}},"n":{"type":"object","properties":{
      "v":{"type":"integer"}}}},"required":["name"]})");
  auto masks = std::make_shared<TokenMaskCache>(grammar, vocabulary);
  const std::string text = R"({"name":"xé","tags":["a","b"],"n":{"v":12}})";
  std::vector<float> logits(257);
  TokenConstraint c(masks);
  auto run = [&] {
    c.Reset();
    for (const char ch : text) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      c.Apply(logits.data(), 257);
      ASSERT_NE(logits[static_cast<uint8_t>(ch)], -INFINITY);
      ASSERT_TRUE(c.Accept(static_cast<uint8_t>(ch)).ok());
    }
    std::fill(logits.begin(), logits.end(), 0.0f);
    c.Apply(logits.data(), 257);
    ASSERT_NE(logits[eos], -INFINITY);
    ASSERT_TRUE(c.Accept(eos).ok());
  };
  run();
  run();
  const int64_t before = AllocationCount();
  run();
  EXPECT_EQ(AllocationCount(), before);
}

// ---------------------------------------------------------------------------------------------
// Real vocabularies.

constexpr const char* kLlamaSpm = "models/vocab/ggml-vocab-llama-spm.gguf";
constexpr const char* kLlamaBpe = "models/vocab/ggml-vocab-llama-bpe.gguf";

struct LoadedVocabulary {
  std::unique_ptr<Tokenizer> tokenizer;
  std::shared_ptr<const TokenVocabulary> vocabulary;
  // The token closes more arrays/objects than it opens, or as many with a closer among them (`[]`),
  // and holds no comma (`},{` would start a sibling).
  std::vector<char> closing;
  std::vector<char> quoting;  // the token's bytes hold "
};

// The byte table a caller builds from its tokenizer: PieceView gives SentencePiece's ▁ as a space
// and byte-fallback tokens (<0xE2>) as their raw byte; control tokens render as "" and are never
// produced; end-of-generation tokens come from the tokenizer.
const LoadedVocabulary* Load(const std::string& relative) {
  static auto* cache = new std::map<std::string, std::unique_ptr<LoadedVocabulary>>();
  auto it = cache->find(relative);
  if (it != cache->end()) return it->second.get();
  auto file = GgufFile::Open(testing::SharedPath(relative));
  if (!file.ok()) return nullptr;
  auto tokenizer = Tokenizer::FromGguf(**file);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (!tokenizer.ok()) return nullptr;
  auto loaded = std::make_unique<LoadedVocabulary>();
  loaded->tokenizer = std::move(*tokenizer);
  const Tokenizer& t = *loaded->tokenizer;
  std::vector<std::string> bytes(static_cast<size_t>(t.n_vocab()));
  std::vector<int32_t> never;
  loaded->closing.assign(bytes.size(), 0);
  loaded->quoting.assign(bytes.size(), 0);
  for (int32_t id = 0; id < t.n_vocab(); ++id) {
    if (t.IsControl(id)) {
      never.push_back(id);
      continue;
    }
    bytes[static_cast<size_t>(id)] = std::string(t.PieceView(id));
    int closers = 0, openers = 0;
    bool comma = false;
    for (const char ch : bytes[static_cast<size_t>(id)]) {
      closers += ch == ']' || ch == '}';
      openers += ch == '[' || ch == '{';
      comma = comma || ch == ',';
    }
    loaded->closing[static_cast<size_t>(id)] = !comma && closers > 0 && closers >= openers;
    loaded->quoting[static_cast<size_t>(id)] =
        bytes[static_cast<size_t>(id)].find('"') != std::string::npos;
  }
  auto vocabulary = TokenVocabulary::Create(std::move(bytes), t.end_of_generation_tokens(), never);
  EXPECT_TRUE(vocabulary.ok()) << vocabulary.status();
  if (!vocabulary.ok()) return nullptr;
  loaded->vocabulary = *vocabulary;
  return cache->emplace(relative, std::move(loaded)).first->second.get();
}

#define LOAD_OR_SKIP(var, relative)                           \
  AIRLOCK_REQUIRE_SHARED_FILE(testing::SharedPath(relative)); \
  const LoadedVocabulary* var = Load(relative);               \
  ASSERT_NE(var, nullptr)

TEST(TokenConstraintVocabularyTest, ByteFallbackTokensAreRawBytes) {
  LOAD_OR_SKIP(spm, kLlamaSpm);
  const Tokenizer& t = *spm->tokenizer;
  // <0xE2> is id 3 + 0xE2 in Llama's SentencePiece vocabulary.
  EXPECT_EQ(t.TokenText(3 + 0xE2), "<0xE2>");
  EXPECT_EQ(spm->vocabulary->bytes(3 + 0xE2), "\xE2");
  EXPECT_TRUE(spm->vocabulary->IsEndOfGeneration(t.eos()));
  EXPECT_TRUE(spm->vocabulary->IsNeverProduced(t.bos()));
}

// A character written as SentencePiece byte-fallback tokens, one byte each: the mask allows only
// continuation bytes until the character is complete.
TEST(TokenConstraintVocabularyTest, ByteFallbackCharacterInsideAString) {
  LOAD_OR_SKIP(spm, kLlamaSpm);
  auto masks = std::make_shared<TokenMaskCache>(Compile(R"({"type":"string"})"), spm->vocabulary);
  TokenConstraint c(masks);
  const int32_t n = spm->vocabulary->n_vocab();
  auto byte_token = [](int b) { return 3 + b; };  // <0x00> is id 3
  // The token that is a bare quote (Encode would give SentencePiece's "▁\"" with its space).
  int32_t bare_quote = -1;
  for (int32_t id = 0; id < n; ++id) {
    if (spm->vocabulary->bytes(id) == "\"" && !spm->vocabulary->IsNeverProduced(id)) {
      bare_quote = id;
      break;
    }
  }
  ASSERT_GE(bare_quote, 0);
  ASSERT_TRUE(c.Accept(bare_quote).ok());
  // "東" is E6 9D B1.
  ASSERT_TRUE(c.Accept(byte_token(0xE6)).ok());
  std::vector<int32_t> allowed = Allowed(c, n);
  ASSERT_FALSE(allowed.empty());
  for (const int32_t id : allowed) {
    const auto first = static_cast<uint8_t>(spm->vocabulary->bytes(id)[0]);
    EXPECT_TRUE(first >= 0x80 && first <= 0xBF) << id;  // continuation bytes only
  }
  EXPECT_FALSE(c.Accept(bare_quote).ok());
  ASSERT_TRUE(c.Accept(byte_token(0x9D)).ok());
  ASSERT_TRUE(c.Accept(byte_token(0xB1)).ok());
  ASSERT_TRUE(c.Accept(bare_quote).ok());
  EXPECT_TRUE(c.IsComplete());
}

// Llama-3 reserves ids 128000+ for special tokens: all must be control (never produced) or end of
// generation, or a string could spell "<|reserved_special_token_3|>" as one token.
TEST(TokenConstraintVocabularyTest, Llama3SpecialTokensAreNeverText) {
  LOAD_OR_SKIP(bpe, kLlamaBpe);
  ASSERT_EQ(bpe->vocabulary->n_vocab(), 128256);
  for (int32_t id = 128000; id < 128256; ++id) {
    EXPECT_TRUE(bpe->vocabulary->IsNeverProduced(id) || bpe->vocabulary->IsEndOfGeneration(id))
        << id << " " << bpe->tokenizer->TokenText(id);
  }
}

// --- An independent validator for the generated instances (the subset of JSON Schema the tests
// use: type, properties/required/additionalProperties, items/minItems/maxItems, enum/const,
// anyOf/oneOf, $ref).
bool Valid(const Json& value, const Json& schema, const Json& root, int depth = 0);

bool HasJsonType(const Json& v, const std::string& type) {
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "boolean") return v.is_boolean();
  if (type == "null") return v.is_null();
  if (type == "number") return v.is_number();
  if (type == "integer") {
    if (v.is_number_integer()) return true;
    return v.is_number_float() && std::floor(v.get<double>()) == v.get<double>();
  }
  return false;
}

bool Valid(const Json& value, const Json& schema, const Json& root, int depth) {
  if (depth > 200) return false;
  if (schema.is_boolean()) return schema.get<bool>();
  if (schema.contains("$ref")) {
    const std::string ref = schema["$ref"];
    if (ref == "#") return Valid(value, root, root, depth + 1);
    const Json::json_pointer pointer(ref.substr(1));
    return Valid(value, root.at(pointer), root, depth + 1);
  }
  for (const char* key : {"anyOf", "oneOf"}) {
    if (!schema.contains(key)) continue;
    bool any = false;
    for (const Json& branch : schema[key]) any = any || Valid(value, branch, root, depth + 1);
    if (!any) return false;
  }
  if (schema.contains("const") && value != schema["const"]) return false;
  if (schema.contains("enum")) {
    bool found = false;
    for (const Json& v : schema["enum"]) found = found || v == value;
    if (!found) return false;
  }
  if (schema.contains("type")) {
    const Json& type = schema["type"];
    bool ok = false;
    if (type.is_string()) {
      ok = HasJsonType(value, type);
    } else {
      for (const Json& t : type) ok = ok || HasJsonType(value, t);
    }
    if (!ok) return false;
  }
  if (value.is_object()) {
    const Json properties = schema.value("properties", Json::object());
    for (const Json& name : schema.value("required", Json::array())) {
      if (!value.contains(name.get<std::string>())) return false;
    }
    const bool closed =
        !schema.contains("additionalProperties") || schema["additionalProperties"] == false;
    for (const auto& [name, member] : value.items()) {
      if (properties.contains(name)) {
        if (!Valid(member, properties[name], root, depth + 1)) return false;
      } else if (closed && (schema.contains("properties") || schema.contains("required") ||
                            schema.value("type", Json()) == "object")) {
        return false;
      }
    }
  }
  if (value.is_array()) {
    if (schema.contains("minItems") && value.size() < schema["minItems"].get<size_t>())
      return false;
    if (schema.contains("maxItems") && value.size() > schema["maxItems"].get<size_t>())
      return false;
    if (schema.contains("items")) {
      for (const Json& item : value) {
        if (!Valid(item, schema["items"], root, depth + 1)) return false;
      }
    }
  }
  return true;
}

struct SchemaCase {
  const char* name;
  const char* schema;  // nullptr: AnyJsonObjectGrammar()
};

const std::vector<SchemaCase>& Schemas() {
  static const auto* cases = new std::vector<SchemaCase>{
      {"person",
       R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},
          "email":{"type":"string"}},"required":["name","age"]})"},
      {"nested_objects", R"({"type":"object","properties":{"address":{"type":"object","properties":{
          "street":{"type":"string"},"city":{"type":"string"},"zip":{"type":"string"}},
          "required":["street","city"]},"owner":{"type":"object","properties":{"id":{"type":"integer"}},
          "required":["id"]}},"required":["address","owner"]})"},
      {"array_bounds",
       R"({"type":"object","properties":{"scores":{"type":"array","items":{"type":"number"},
          "minItems":2,"maxItems":5},"flags":{"type":"array","items":{"type":"boolean"},"maxItems":2}},
          "required":["scores","flags"]})"},
      {"enum_non_ascii",
       R"({"type":"object","properties":{"city":{"enum":["Zürich","São Paulo","東京","Кие́в"]},
          "mood":{"type":"string","enum":["😀 happy","😢 sad","ça va"]}},"required":["city","mood"]})"},
      {"any_of_objects", R"({"anyOf":[{"type":"object","properties":{"kind":{"const":"circle"},
          "radius":{"type":"number"}},"required":["kind","radius"]},{"type":"object","properties":{
          "kind":{"const":"rect"},"w":{"type":"number"},"h":{"type":"number"}},"required":["kind","w","h"]}]})"},
      {"recursive_tree",
       R"({"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},
          "children":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":3}},
          "required":["value","children"]}},"$ref":"#/$defs/node"})"},
      {"integers_vs_numbers", R"({"type":"object","properties":{"count":{"type":"integer"},
          "ratio":{"type":"number"},"ints":{"type":"array","items":{"type":"integer"},"maxItems":4}},
          "required":["count","ratio","ints"]})"},
      {"nullable_type_list",
       R"({"type":"object","properties":{"nickname":{"type":["string","null"]},
          "age":{"type":["integer","null"]}},"required":["nickname","age"]})"},
      {"all_optional", R"({"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"null"},
          "c":{"type":"string"},"d":{"type":"integer"}}})"},
      {"one_of_definitions",
       R"({"definitions":{"point":{"type":"object","properties":{"x":{"type":"number"},
          "y":{"type":"number"}},"required":["x","y"]}},"type":"object","properties":{"shape":{"oneOf":[
          {"$ref":"#/definitions/point"},{"type":"array","items":{"$ref":"#/definitions/point"},
          "minItems":1,"maxItems":3}]}},"required":["shape"]})"},
      {"top_level_array", R"({"type":"array","items":{"type":"string","enum":["a","b","c"]},
          "minItems":1,"maxItems":4})"},
      {"enum_mixed_values", R"({"enum":[1,2.5,"x",null,true,{"k":[1,2]},[3,"y"]]})"},
      {"free_form_members",
       R"({"type":"object","properties":{"meta":{},"items":{"type":"array","maxItems":3}},
          "required":["meta","items"]})"},
      {"pydantic_order", R"({"$defs":{"Item":{"properties":{"name":{"title":"Name","type":"string"},
          "price":{"title":"Price","type":"number"}},"required":["name","price"],"title":"Item","type":"object"}},
          "properties":{"items":{"items":{"$ref":"#/$defs/Item"},"title":"Items","type":"array","maxItems":4},
          "note":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Note"}},
          "required":["items"],"title":"Order","type":"object"})"},
      {"json_object", nullptr},
  };
  return *cases;
}

constexpr int kGenerations = 100;
constexpr int kMaxTokens = 1000;

// A seeded random model: at each step it samples among the tokens the mask leaves, with a pull
// towards ending (an allowed end-of-generation token half of the time, otherwise a closing token
// half of the time, otherwise one holding a quote 40% of the time), which is what a model
// that knows JSON does, and what makes every generation end well within kMaxTokens (a random walk
// over Llama-3's tokens alone opens more arrays and objects than it closes).
struct Generation {
  std::string text;
  int tokens = 0;
  bool finished = false;
};

Generation Generate(TokenConstraint& c, const LoadedVocabulary& v, std::mt19937_64& rng) {
  const int32_t n = v.vocabulary->n_vocab();
  std::vector<float> logits(static_cast<size_t>(n));
  std::vector<int32_t> allowed, closing, quoting, eog;
  Generation g;
  for (; g.tokens < kMaxTokens; ++g.tokens) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    c.Apply(logits.data(), n);
    allowed.clear();
    closing.clear();
    quoting.clear();
    eog.clear();
    for (int32_t id = 0; id < n; ++id) {
      if (logits[static_cast<size_t>(id)] == -INFINITY) continue;
      allowed.push_back(id);
      if (v.vocabulary->IsEndOfGeneration(id)) eog.push_back(id);
      if (v.closing[static_cast<size_t>(id)]) closing.push_back(id);
      if (v.quoting[static_cast<size_t>(id)]) quoting.push_back(id);
    }
    if (allowed.empty()) break;  // a dead end: fails the test below
    std::uniform_real_distribution<double> coin(0.0, 1.0);
    const std::vector<int32_t>* pool = &allowed;
    if (!eog.empty() && coin(rng) < 0.5) {
      pool = &eog;
    } else if (!closing.empty() && coin(rng) < 0.5) {
      pool = &closing;
    } else if (!quoting.empty() && coin(rng) < 0.4) {
      pool = &quoting;
    }
    const int32_t token = (*pool)[std::uniform_int_distribution<size_t>(0, pool->size() - 1)(rng)];
    const absl::Status accepted = c.Accept(token);
    EXPECT_TRUE(accepted.ok()) << accepted;  // the mask allowed it
    if (!accepted.ok()) break;
    if (v.vocabulary->IsEndOfGeneration(token)) {
      g.finished = true;
      break;
    }
    g.text += v.vocabulary->bytes(token);
  }
  return g;
}

class RandomModelTest : public ::testing::TestWithParam<const char*> {};

TEST_P(RandomModelTest, EveryGenerationIsAValidInstanceAndEnds) {
  LOAD_OR_SKIP(v, GetParam());
  for (const SchemaCase& schema_case : Schemas()) {
    SCOPED_TRACE(schema_case.name);
    std::shared_ptr<const Grammar> grammar =
        schema_case.schema ? Compile(schema_case.schema) : AnyJsonObjectGrammar();
    ASSERT_NE(grammar, nullptr);
    const Json schema = schema_case.schema
                            ? Json::parse(schema_case.schema)
                            : Json::parse(R"({"type":"object","additionalProperties":true})");
    auto masks = std::make_shared<TokenMaskCache>(grammar, v->vocabulary);
    std::mt19937_64 rng(20261207);
    for (int i = 0; i < kGenerations; ++i) {
      TokenConstraint c(masks);
      const Generation g = Generate(c, *v, rng);
      ASSERT_TRUE(g.finished) << "generation " << i << " did not end in " << kMaxTokens
                              << " tokens: " << g.text.substr(0, 400);
      const Json parsed = Json::parse(g.text, nullptr, /*allow_exceptions=*/false);
      ASSERT_FALSE(parsed.is_discarded()) << "not JSON: " << g.text;
      EXPECT_TRUE(Valid(parsed, schema, schema)) << "invalid instance: " << g.text;
    }
    const TokenMaskCache::Stats stats = masks->stats();
    EXPECT_GT(stats.hits, stats.misses);
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, RandomModelTest, ::testing::Values(kLlamaSpm, kLlamaBpe),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param).find("spm") != std::string::npos
                                      ? std::string("LlamaSpm")
                                      : std::string("LlamaBpe");
                         });

// The cache must be invisible: a constraint without it (every mask walked afresh) gives the same
// masks step for step; and the walk (shared prefixes, refused prefixes skipped, single threads
// followed without building states) must give what stepping each token alone gives.
TEST(TokenConstraintVocabularyTest, MasksIdenticalWithCacheOnAndOff) {
  LOAD_OR_SKIP(v, kLlamaBpe);
  const int32_t n = v->vocabulary->n_vocab();
  for (const char* schema : {Schemas()[3].schema, Schemas()[5].schema, Schemas()[13].schema}) {
    std::shared_ptr<const Grammar> grammar = Compile(schema);
    ASSERT_NE(grammar, nullptr);
    auto cached = std::make_shared<TokenMaskCache>(grammar, v->vocabulary);
    TokenMaskCacheOptions off;
    off.max_bytes = 0;
    auto uncached = std::make_shared<TokenMaskCache>(grammar, v->vocabulary, off);
    std::mt19937_64 rng(7);
    for (int run = 0; run < 2; ++run) {
      TokenConstraint a(cached), b(uncached);
      std::vector<float> la(static_cast<size_t>(n)), lb(static_cast<size_t>(n));
      for (int step = 0; step < 200 && !a.IsFinished(); ++step) {
        std::normal_distribution<float> noise(0.0f, 1.0f);
        for (float& x : la) x = noise(rng);
        lb = la;
        a.Apply(la.data(), n);
        b.Apply(lb.data(), n);
        ASSERT_EQ(la, lb) << "step " << step;
        std::vector<int32_t> allowed;
        for (int32_t id = 0; id < n; ++id) {
          if (la[static_cast<size_t>(id)] != -INFINITY) allowed.push_back(id);
        }
        ASSERT_FALSE(allowed.empty());
        // The mask agrees with stepping each token's bytes one by one (Allows): for every token
        // in the first steps of a run, for a sample afterwards.
        if (step < 12) {
          for (int32_t id = 0; id < n; ++id) {
            ASSERT_EQ(a.Allows(id), la[static_cast<size_t>(id)] != -INFINITY)
                << "step " << step << " id " << id;
          }
        } else {
          for (int k = 0; k < 50; ++k) {
            const auto id = static_cast<int32_t>(rng() % static_cast<uint64_t>(n));
            EXPECT_EQ(a.Allows(id), la[static_cast<size_t>(id)] != -INFINITY) << id;
          }
        }
        // Prefer the end and closing tokens so that runs finish.
        int32_t token = allowed[rng() % allowed.size()];
        for (const int32_t id : allowed) {
          if (v->vocabulary->IsEndOfGeneration(id) ||
              (v->closing[static_cast<size_t>(id)] && rng() % 3 == 0)) {
            token = id;
            break;
          }
        }
        ASSERT_TRUE(a.Accept(token).ok());
        ASSERT_TRUE(b.Accept(token).ok());
      }
    }
    EXPECT_GT(cached->stats().hits, 0);
    EXPECT_EQ(uncached->stats().hits, 0);
    EXPECT_EQ(uncached->stats().entries, 0);
  }
}

}  // namespace
}  // namespace airlock::inference

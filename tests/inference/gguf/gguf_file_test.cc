// GGUF reader: real model files, a writer round trip, and hostile files that must be refused cleanly.
#include "inference/gguf/gguf_file.h"

#include <cstring>
#include <random>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "inference/gguf/gguf_writer.h"
#include "tests/support/test_data.h"

namespace airlock::inference {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::unique_ptr<GgufFile>> ParseString(const std::string& image) {
  return GgufFile::Parse(reinterpret_cast<const uint8_t*>(image.data()), image.size());
}

// A small valid file with one of everything.
GgufWriter SampleWriter() {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetU32("llama.block_count", 2);
  w.SetF32("llama.rope.freq_base", 500000.0f);
  w.SetBool("tokenizer.ggml.add_bos_token", true);
  w.SetStringArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"});
  w.SetF32Array("tokenizer.ggml.scores", {0.0f, 0.0f, 0.0f, -1.5f});
  w.SetI32Array("tokenizer.ggml.token_type", {2, 3, 3, 1});
  std::vector<uint8_t> f32(4 * 8 * 2);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<uint8_t>(i);
  EXPECT_TRUE(w.AddTensor("blk.0.attn_norm.weight", TensorType::kF32, {8, 2}, f32).ok());
  std::vector<uint8_t> q8(34 * 2, 0);
  EXPECT_TRUE(w.AddTensor("blk.0.attn_q.weight", TensorType::kQ8_0, {32, 2}, q8).ok());
  return w;
}

TEST(GgufFileTest, WriterRoundTrip) {
  const std::string image = SampleWriter().Serialize();
  auto file = ParseString(image);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(*f.GetU32("llama.block_count"), 2u);
  EXPECT_FLOAT_EQ(*f.GetF32("llama.rope.freq_base"), 500000.0f);
  EXPECT_TRUE(*f.GetBool("tokenizer.ggml.add_bos_token"));
  auto tokens = f.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ((*tokens)[3], "a");
  EXPECT_FLOAT_EQ((*f.GetF32Array("tokenizer.ggml.scores"))[3], -1.5f);
  EXPECT_EQ((*f.GetI32Array("tokenizer.ggml.token_type"))[0], 2);
  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensorInfo* norm = f.FindTensor("blk.0.attn_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->shape, (std::vector<int64_t>{8, 2}));
  EXPECT_EQ(norm->bytes, 64u);
  EXPECT_EQ(norm->data[5], 5);
  const GgufTensorInfo* q = f.FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->bytes, 68u);
  EXPECT_EQ(static_cast<size_t>(q->data - reinterpret_cast<const uint8_t*>(image.data())) % 32, 0u);
}

TEST(GgufFileTest, TypedGettersNameKeyAndType) {
  auto file = ParseString(SampleWriter().Serialize());
  ASSERT_TRUE(file.ok());
  auto missing = (*file)->GetU32("llama.context_length");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("llama.context_length"));
  auto wrong = (*file)->GetU32("general.architecture");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("is string"));
  EXPECT_EQ(*(*file)->GetU32Or("llama.context_length", 4096), 4096u);
  EXPECT_FALSE((*file)->GetU32Or("general.architecture", 1).ok());
}

TEST(GgufFileTest, NestedArraysAndAllScalarTypes) {
  GgufWriter w;
  std::string p;
  auto put32 = [&](uint32_t v) { p.append(reinterpret_cast<const char*>(&v), 4); };
  auto put64 = [&](uint64_t v) { p.append(reinterpret_cast<const char*>(&v), 8); };
  // array of 2 arrays of uint16
  put32(9);
  put64(2);
  for (int i = 0; i < 2; ++i) {
    put32(2);
    put64(3);
    for (uint16_t v : {uint16_t(1), uint16_t(2), uint16_t(3)}) p.append(reinterpret_cast<const char*>(&v), 2);
  }
  w.SetRaw("nested", 9, p);
  const int8_t i8 = -5;
  w.SetRaw("i8", 1, std::string(reinterpret_cast<const char*>(&i8), 1));
  const double f64 = 2.5;
  w.SetRaw("f64", 12, std::string(reinterpret_cast<const char*>(&f64), 8));
  const int64_t i64 = -7;
  w.SetRaw("i64", 11, std::string(reinterpret_cast<const char*>(&i64), 8));
  auto file = ParseString(w.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufValue* nested = (*file)->Find("nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->arrays.size(), 2u);
  EXPECT_EQ(nested->arrays[1].count, 3u);
  EXPECT_EQ(*(*file)->GetI64("i8"), -5);
  EXPECT_FLOAT_EQ(*(*file)->GetF32("f64"), 2.5f);
  EXPECT_EQ(*(*file)->GetI64("i64"), -7);
  EXPECT_FALSE((*file)->GetU64("i64").ok());  // negative does not fit unsigned
}

TEST(GgufFileTest, OpensEverySharedModel) {
  for (const char* name : {"stories260K-f32", "stories260K-f16", "stories260K-q8_0", "stories260K-q4_0",
                           "llama-2-tiny-random", "synth-llama-2L-256d-f16", "synth-llama-2L-256d-q8_0",
                           "synth-llama-2L-256d-q4_0", "synth-llama-2L-256d-q4_k_m",
                           "synth-llama-2L-256d-q6_k"}) {
    const std::string path = testing::SharedPath(std::string("models/") + name + ".gguf");
    AIRLOCK_REQUIRE_SHARED_FILE(path);
    auto file = GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << name << ": " << file.status();
    EXPECT_EQ(*(*file)->GetString("general.architecture"), "llama") << name;
    EXPECT_NE((*file)->FindTensor("token_embd.weight"), nullptr) << name;
  }
}

TEST(GgufFileTest, Stories260KShapes) {
  const std::string path = testing::SharedPath("models/stories260K-f32.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*(*file)->GetU32("llama.block_count"), 5u);
  EXPECT_EQ(*(*file)->GetU32("llama.embedding_length"), 64u);
  EXPECT_EQ(*(*file)->GetU32("llama.context_length"), 512u);
  const GgufTensorInfo* emb = (*file)->FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(emb->type, TensorType::kF32);
  const GgufTensorInfo* down = (*file)->FindTensor("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->shape, (std::vector<int64_t>{172, 64}));
}

TEST(GgufFileTest, OpensVocabOnlyFiles) {
  for (const char* name : {"llama-spm", "phi-3", "gpt-2", "deepseek-llm", "deepseek-coder", "llama-bpe", "qwen2"}) {
    const std::string path = testing::SharedPath(std::string("models/vocab/ggml-vocab-") + name + ".gguf");
    AIRLOCK_REQUIRE_SHARED_FILE(path);
    auto file = GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << name << ": " << file.status();
    auto tokens = (*file)->GetStringArray("tokenizer.ggml.tokens");
    ASSERT_TRUE(tokens.ok()) << name;
    EXPECT_GT(tokens->size(), 1000u) << name;
  }
}

// ---- Hostile files ----

TEST(GgufHostileTest, EveryTruncationIsRefused) {
  const std::string image = SampleWriter().Serialize();
  auto whole = ParseString(image);
  ASSERT_TRUE(whole.ok());
  const GgufTensorInfo& last = (*whole)->tensors().back();
  const size_t data_end =
      static_cast<size_t>(last.data - reinterpret_cast<const uint8_t*>(image.data())) + last.bytes;
  // Cutting anywhere before the last tensor's final byte leaves a short header or short data;
  // only the alignment padding after it may go.
  for (size_t cut = 0; cut < image.size(); ++cut) {
    if (cut >= data_end) {
      EXPECT_TRUE(ParseString(image.substr(0, cut)).ok()) << cut;
      continue;
    }
    auto file = ParseString(image.substr(0, cut));
    EXPECT_FALSE(file.ok()) << "truncated at " << cut << " was accepted";
    if (!file.ok() && cut > 0) {
      EXPECT_THAT(std::string(file.status().message()), HasSubstr("GGUF")) << cut;
    }
  }
}

TEST(GgufHostileTest, RandomBitFlipsNeverCrash) {
  const std::string image = SampleWriter().Serialize();
  std::mt19937 rng(1234);
  int refused = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string mutated = image;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t pos = rng() % mutated.size();
      mutated[pos] = static_cast<char>(mutated[pos] ^ (1u << (rng() % 8)));
    }
    auto file = ParseString(mutated);
    if (!file.ok()) {
      ++refused;
      continue;
    }
    for (const GgufTensorInfo& t : (*file)->tensors()) {  // ASan checks these reads stay in bounds
      volatile uint8_t first = t.data[0];
      volatile uint8_t last = t.data[t.bytes - 1];
      (void)first;
      (void)last;
    }
  }
  EXPECT_GT(refused, 0);
}

std::string HeaderOnly(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  std::string s = "GGUF";
  s.append(reinterpret_cast<const char*>(&version), 4);
  s.append(reinterpret_cast<const char*>(&n_tensors), 8);
  s.append(reinterpret_cast<const char*>(&n_kv), 8);
  return s;
}

void ExpectRefused(const std::string& image, const std::string& needle) {
  auto file = ParseString(image);
  ASSERT_FALSE(file.ok()) << "expected refusal mentioning '" << needle << "'";
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(needle));
}

TEST(GgufHostileTest, HeaderProblemsAreNamed) {
  ExpectRefused("GGML" + std::string(20, '\0'), "bad magic");
  ExpectRefused(HeaderOnly(1, 0, 0), "version 1");
  ExpectRefused(HeaderOnly(0x03000000, 0, 0), "big-endian");
  ExpectRefused(HeaderOnly(7, 0, 0), "unsupported version 7");
  ExpectRefused(HeaderOnly(3, 0, ~0ull), "metadata count");
  ExpectRefused(HeaderOnly(3, 1ull << 60, 0), "tensor count");
  ExpectRefused("", "empty");
}

TEST(GgufHostileTest, AbsurdStringAndArrayLengths) {
  {
    GgufWriter w;
    std::string p;
    const uint64_t huge = 1ull << 62;
    p.append(reinterpret_cast<const char*>(&huge), 8);
    w.SetRaw("general.name", 8, p);
    ExpectRefused(w.Serialize(), "general.name");
  }
  {
    GgufWriter w;
    std::string p;
    const uint32_t elem = 8;  // strings
    const uint64_t count = 1ull << 40;
    p.append(reinterpret_cast<const char*>(&elem), 4);
    p.append(reinterpret_cast<const char*>(&count), 8);
    w.SetRaw("tokenizer.ggml.tokens", 9, p);
    ExpectRefused(w.Serialize(), "claims 1099511627776 elements");
  }
  {
    GgufWriter w;
    std::string p;
    const uint32_t elem = 6;  // float32
    const uint64_t count = 1ull << 61;  // count * 4 overflows 64 bits if multiplied naively
    p.append(reinterpret_cast<const char*>(&elem), 4);
    p.append(reinterpret_cast<const char*>(&count), 8);
    w.SetRaw("tokenizer.ggml.scores", 9, p);
    ExpectRefused(w.Serialize(), "tokenizer.ggml.scores");
  }
}

TEST(GgufHostileTest, DeeplyNestedArraysAreRefused) {
  std::string p;
  for (int depth = 0; depth < 64; ++depth) {
    const uint32_t elem = 9;
    const uint64_t count = 1;
    p.append(reinterpret_cast<const char*>(&elem), 4);
    p.append(reinterpret_cast<const char*>(&count), 8);
  }
  p.append(std::string(16, '\0'));
  GgufWriter w;
  w.SetRaw("deep", 9, p);
  ExpectRefused(w.Serialize(), "nested deeper");
}

TEST(GgufHostileTest, BadValuesAreNamed) {
  {
    GgufWriter w;
    w.SetRaw("weird", 77, "");
    ExpectRefused(w.Serialize(), "unknown type 77");
  }
  {
    GgufWriter w;
    w.SetRaw("flag", 7, std::string(1, '\x05'));
    ExpectRefused(w.Serialize(), "not a valid bool");
  }
  {
    GgufWriter w;
    w.SetU32("a", 1);
    w.SetU32("a", 2);
    ExpectRefused(w.Serialize(), "duplicate metadata 'a'");
  }
  {
    GgufWriter w;
    w.SetU32("general.alignment", 48);
    ExpectRefused(w.Serialize(), "power of two");
  }
  {
    GgufWriter w;
    w.SetU32("general.alignment", 0);
    ExpectRefused(w.Serialize(), "power of two");
  }
}

// Builds a file with one tensor whose directory entry is patched after serialisation.
std::string WithTensorEntry(const std::string& name, uint32_t n_dims, std::vector<uint64_t> dims,
                            uint32_t type, uint64_t offset, size_t data_bytes) {
  std::string s = HeaderOnly(3, 1, 0);
  const uint64_t len = name.size();
  s.append(reinterpret_cast<const char*>(&len), 8);
  s.append(name);
  s.append(reinterpret_cast<const char*>(&n_dims), 4);
  for (uint64_t d : dims) s.append(reinterpret_cast<const char*>(&d), 8);
  s.append(reinterpret_cast<const char*>(&type), 4);
  s.append(reinterpret_cast<const char*>(&offset), 8);
  s.resize((s.size() + 31) / 32 * 32, '\0');
  s.append(std::string(data_bytes, '\0'));
  return s;
}

TEST(GgufHostileTest, TensorDirectoryProblemsAreNamed) {
  EXPECT_TRUE(ParseString(WithTensorEntry("w", 2, {4, 4}, 0, 0, 64)).ok());
  ExpectRefused(WithTensorEntry("w", 5, {1, 1, 1, 1, 1}, 0, 0, 64), "dimension count 5");
  ExpectRefused(WithTensorEntry("w", 0, {}, 0, 0, 64), "dimension count 0");
  ExpectRefused(WithTensorEntry("w", 2, {4, 0}, 0, 0, 64), "invalid size 0");
  ExpectRefused(WithTensorEntry("w", 2, {1ull << 40, 1ull << 40}, 0, 0, 64), "overflows");
  ExpectRefused(WithTensorEntry("w", 2, {4, 4}, 4, 0, 64), "unknown tensor type id 4");
  ExpectRefused(WithTensorEntry("w", 2, {33, 1}, 8, 0, 64), "not a multiple of the q8_0 block size");
  ExpectRefused(WithTensorEntry("w", 2, {4, 4}, 0, 16, 96), "not a multiple of the alignment");
  ExpectRefused(WithTensorEntry("w", 2, {4, 4}, 0, 0, 63), "runs past the end");
  ExpectRefused(WithTensorEntry("w", 2, {4, 4}, 0, 1ull << 63, 64), "runs past the end");
  ExpectRefused(WithTensorEntry(std::string(100, 'x'), 2, {4, 4}, 0, 0, 64), "name length 100");
  // Dimensions that claim terabytes in a tiny file.
  ExpectRefused(WithTensorEntry("w", 2, {4096, 1ull << 30}, 0, 0, 64), "runs past the end");
}

TEST(GgufHostileTest, DuplicateTensorNames) {
  GgufWriter w;
  ASSERT_TRUE(w.AddTensor("x", TensorType::kF32, {4}, std::vector<uint8_t>(16)).ok());
  ASSERT_TRUE(w.AddTensor("x", TensorType::kF32, {4}, std::vector<uint8_t>(16)).ok());
  ExpectRefused(w.Serialize(), "duplicate tensor 'x'");
}

TEST(GgufHostileTest, OpenReportsPathWithError) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/bad.gguf";
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    std::fputs("GGUF\x03", f);
    std::fclose(f);
  }
  auto file = GgufFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("truncated"));
}

TEST(GgufWriterTest, WriteFileAndReopen) {
  const std::string path = testing::MakeTempDir() + "/w.gguf";
  GgufWriter w = SampleWriter();
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->file_size(), w.Serialize().size());
}

TEST(GgufWriterTest, RejectsWrongDataSize) {
  GgufWriter w;
  EXPECT_FALSE(w.AddTensor("x", TensorType::kF32, {4}, std::vector<uint8_t>(15)).ok());
  EXPECT_FALSE(w.AddTensor("x", TensorType::kQ4_0, {16}, std::vector<uint8_t>(18)).ok());
}

}  // namespace
}  // namespace airlock::inference

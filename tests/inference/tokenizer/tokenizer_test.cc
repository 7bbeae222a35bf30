// Tokenizer behaviour on the shared vocabularies: pieces, round trips, special tokens, end of
// generation, detokenization, and hostile input (invalid UTF-8, megabyte-long runs).
#include "inference/tokenizer/tokenizer.h"

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/utf8.h"
#include "tests/support/test_data.h"

namespace airlock::inference {
namespace {

using ::testing::ElementsAre;

// Loads (once) the tokenizer of a shared GGUF, or skips the test when the file is missing.
const Tokenizer* Load(const std::string& relative) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto it = cache->find(relative);
  if (it != cache->end()) return it->second.get();
  auto file = GgufFile::Open(testing::SharedPath(relative));
  if (!file.ok()) return nullptr;
  auto tokenizer = Tokenizer::FromGguf(**file);
  EXPECT_TRUE(tokenizer.ok()) << relative << ": " << tokenizer.status();
  if (!tokenizer.ok()) return nullptr;
  return cache->emplace(relative, std::move(*tokenizer)).first->second.get();
}

#define LOAD_OR_SKIP(var, relative)                                   \
  AIRLOCK_REQUIRE_SHARED_FILE(testing::SharedPath(relative));        \
  const Tokenizer* var = Load(relative);                              \
  ASSERT_NE(var, nullptr)

constexpr const char* kLlamaSpm = "models/vocab/ggml-vocab-llama-spm.gguf";
constexpr const char* kPhi3 = "models/vocab/ggml-vocab-phi-3.gguf";
constexpr const char* kGpt2 = "models/vocab/ggml-vocab-gpt-2.gguf";
constexpr const char* kDeepseekLlm = "models/vocab/ggml-vocab-deepseek-llm.gguf";
constexpr const char* kDeepseekCoder = "models/vocab/ggml-vocab-deepseek-coder.gguf";
constexpr const char* kLlamaBpe = "models/vocab/ggml-vocab-llama-bpe.gguf";
constexpr const char* kQwen2 = "models/vocab/ggml-vocab-qwen2.gguf";
constexpr const char* kStories = "models/stories260K-f32.gguf";

constexpr const char* kAllVocabs[] = {kLlamaSpm, kPhi3, kGpt2, kDeepseekLlm, kDeepseekCoder, kLlamaBpe, kQwen2,
                                      kStories};

std::string Concat(const Tokenizer& t, const std::vector<int32_t>& ids, bool render_special = false) {
  std::string s;
  for (const int32_t id : ids) s += t.TokenToPiece(id, render_special);
  return s;
}

bool AnyControl(const Tokenizer& t, const std::vector<int32_t>& ids) {
  for (const int32_t id : ids) {
    if (t.IsControl(id)) return true;
  }
  return false;
}

const std::vector<std::string>& SampleTexts() {
  static const auto* texts = new std::vector<std::string>{
      "Hello world",
      " Hello world",
      "  leading spaces\n\nand\ttabs\r\n",
      "Tom had 3 apples, 2 pears and 10 grapes! How many fruits? 15.",
      "Caf\xC3\xA9 \xE2\x98\x95 and na\xC3\xAFve fa\xC3\xA7" "ade \xE2\x80\x94 \xE2\x80\x9Cquotes\xE2\x80\x9D",
      "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\xA6\x99\xF0\x9F\x98\x80",
      "int main() {\n    return 0; // it's done, isn't it?\n}\n",
      "3333333 1234567890 \xD9\xA3\xD9\xA4",  // Arabic-Indic digits are \p{N} too
      "ol\xC3\xA1\xE3\x80\x80mundo\xC2\xA0x",  // ideographic and no-break spaces
  };
  return *texts;
}

TEST(TokenizerTest, BasicPropertiesOfSharedVocabularies) {
  LOAD_OR_SKIP(spm, kLlamaSpm);
  EXPECT_EQ(spm->model(), "llama");
  EXPECT_EQ(spm->n_vocab(), 32000);
  EXPECT_EQ(spm->bos(), 1);
  EXPECT_EQ(spm->eos(), 2);
  EXPECT_EQ(spm->eot(), -1);
  EXPECT_EQ(spm->unk(), 0);
  EXPECT_TRUE(spm->add_bos());
  EXPECT_FALSE(spm->add_eos());
  EXPECT_TRUE(spm->add_space_prefix());

  LOAD_OR_SKIP(bpe, kLlamaBpe);
  EXPECT_EQ(bpe->model(), "gpt2");
  EXPECT_EQ(bpe->pre(), "llama-bpe");
  EXPECT_EQ(bpe->n_vocab(), 128256);
  EXPECT_EQ(bpe->bos(), 128000);
  EXPECT_EQ(bpe->eos(), 128001);
  EXPECT_EQ(bpe->eot(), 128009);
  EXPECT_TRUE(bpe->add_bos());
  EXPECT_FALSE(bpe->chat_template().empty());

  LOAD_OR_SKIP(gpt2, kGpt2);
  EXPECT_EQ(gpt2->eot(), 50256);  // found by its text, as llama.cpp does
  EXPECT_FALSE(gpt2->add_bos());
  LOAD_OR_SKIP(coder, kDeepseekCoder);
  EXPECT_EQ(coder->eot(), 32014);  // <｜end▁of▁sentence｜>
  LOAD_OR_SKIP(qwen, kQwen2);
  EXPECT_FALSE(qwen->add_bos());
  EXPECT_EQ(qwen->pad(), 151643);
  LOAD_OR_SKIP(stories, kStories);
  EXPECT_EQ(stories->pad(), -1);  // the file says 0xFFFFFFFF: none
  EXPECT_TRUE(stories->chat_template().empty());
}

TEST(TokenizerTest, EndOfGenerationMatchesLlamaCpp) {
  LOAD_OR_SKIP(spm, kLlamaSpm);
  EXPECT_THAT(spm->end_of_generation_tokens(), ElementsAre(2));
  EXPECT_FALSE(spm->IsEndOfGeneration(1));
  EXPECT_FALSE(spm->IsEndOfGeneration(-1));
  EXPECT_FALSE(spm->IsEndOfGeneration(32000));
  LOAD_OR_SKIP(bpe, kLlamaBpe);
  EXPECT_TRUE(bpe->IsEndOfGeneration(128001));
  EXPECT_TRUE(bpe->IsEndOfGeneration(128009));
  EXPECT_FALSE(bpe->IsEndOfGeneration(128000));
  LOAD_OR_SKIP(qwen, kQwen2);
  // <|endoftext|>, <|im_end|>, <|fim_pad|>, <|repo_name|>, <|file_sep|>.
  EXPECT_THAT(qwen->end_of_generation_tokens(), ElementsAre(151643, 151645, 151662, 151663, 151664));
  LOAD_OR_SKIP(phi3, kPhi3);
  EXPECT_TRUE(phi3->IsEndOfGeneration(32000));  // eos <|endoftext|>
  EXPECT_TRUE(phi3->IsEndOfGeneration(32007));  // <|end|>
}

TEST(TokenizerTest, PiecesFollowLlamaTokenToPiece) {
  LOAD_OR_SKIP(spm, kLlamaSpm);
  EXPECT_EQ(spm->TokenToPiece(15043), " Hello");  // ▁Hello
  EXPECT_EQ(spm->TokenToPiece(10994), "Hello");
  EXPECT_EQ(spm->TokenToPiece(13), "\n");  // <0x0A>
  EXPECT_EQ(spm->TokenToPiece(3 + 0xE2), "\xE2");  // <0xE2>: one raw byte
  EXPECT_EQ(spm->TokenToPiece(1), "");
  EXPECT_EQ(spm->TokenToPiece(1, /*render_special=*/true), "<s>");
  EXPECT_EQ(spm->TokenToPiece(0), "");  // <unk> is rendered only on request
  EXPECT_EQ(spm->TokenToPiece(0, true), "<unk>");
  EXPECT_EQ(spm->TokenToPiece(-1), "");
  EXPECT_EQ(spm->TokenToPiece(32000), "");
  EXPECT_EQ(spm->TokenText(15043), "\xE2\x96\x81Hello");

  LOAD_OR_SKIP(gpt2, kGpt2);
  EXPECT_EQ(gpt2->TokenToPiece(262), " the");  // Ġthe
  EXPECT_EQ(gpt2->TokenToPiece(50256), "");
  EXPECT_EQ(gpt2->TokenToPiece(50256, true), "<|endoftext|>");
  EXPECT_EQ(gpt2->TokenToPiece(177), "\xF5");  // byte-level 'õ' is the raw byte 0xF5

  LOAD_OR_SKIP(qwen, kQwen2);
  EXPECT_EQ(qwen->TokenToPiece(151657), "<tool_call>");  // user-defined: always rendered
  EXPECT_EQ(qwen->TokenToPiece(151645), "");
  EXPECT_EQ(qwen->TokenToPiece(151700), "");  // [PAD151700], unused
}

TEST(TokenizerTest, PiecesRoundTripValidText) {
  for (const char* vocab : kAllVocabs) {
    LOAD_OR_SKIP(t, vocab);
    for (const std::string& text : SampleTexts()) {
      const std::vector<int32_t> ids = t->Encode(text, false, false);
      for (const int32_t id : ids) ASSERT_TRUE(t->IsValid(id)) << vocab;
      const std::string expected = t->add_space_prefix() && !text.empty() ? " " + text : text;
      EXPECT_EQ(Concat(*t, ids), expected) << vocab << ": " << text;
    }
  }
}

TEST(TokenizerTest, DetokenizeMatchesLlamaDetokenize) {
  LOAD_OR_SKIP(spm, kLlamaSpm);
  // The space prefix is removed again; after a BOS it is kept (llama.cpp strips only the first piece).
  EXPECT_EQ(spm->Detokenize(spm->Encode("Hello world", false, false)), "Hello world");
  EXPECT_EQ(spm->Detokenize(spm->Encode("Hello world", true, false)), " Hello world");
  EXPECT_EQ(spm->Detokenize(spm->Encode("Hello world", true, false), false, true), "<s> Hello world");
  const std::vector<int32_t> with_bos = spm->Encode("Hello", true, false);
  EXPECT_EQ(spm->Detokenize(with_bos, /*remove_special=*/true), " Hello");

  LOAD_OR_SKIP(gpt2, kGpt2);
  // GPT-2 cleans up spaces before punctuation and contractions.
  EXPECT_EQ(gpt2->Detokenize(gpt2->Encode("Hello , world ! it 's", false, false)), "Hello, world! it's");
  LOAD_OR_SKIP(qwen, kQwen2);
  EXPECT_EQ(qwen->Detokenize(qwen->Encode("Hello , world !", false, false)), "Hello , world !");
}

TEST(TokenizerTest, AddSpecial) {
  LOAD_OR_SKIP(spm, kLlamaSpm);
  EXPECT_THAT(spm->Encode("", true, false), ElementsAre(1));
  EXPECT_TRUE(spm->Encode("", false, false).empty());
  EXPECT_THAT(spm->Encode("Hello", true, false), ElementsAre(1, 15043));
  LOAD_OR_SKIP(qwen, kQwen2);
  EXPECT_EQ(qwen->Encode("Hello", true, false), qwen->Encode("Hello", false, false));  // no BOS
  LOAD_OR_SKIP(bpe, kLlamaBpe);
  EXPECT_THAT(bpe->Encode("Hello", true, false), ElementsAre(128000, 9906));
}

TEST(TokenizerTest, ParseSpecialControlsControlTokens) {
  LOAD_OR_SKIP(bpe, kLlamaBpe);
  const std::string text = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
  const std::vector<int32_t> parsed = bpe->Encode(text, false, true);
  std::vector<int32_t> expected = {128006};
  for (const int32_t id : bpe->Encode("user", false, false)) expected.push_back(id);
  expected.push_back(128007);
  for (const int32_t id : bpe->Encode("\n\nHi", false, false)) expected.push_back(id);
  expected.push_back(128009);
  EXPECT_EQ(parsed, expected);
  const std::vector<int32_t> plain = bpe->Encode(text, false, false);
  EXPECT_FALSE(AnyControl(*bpe, plain));
  EXPECT_EQ(Concat(*bpe, plain), text);
  EXPECT_EQ(Concat(*bpe, parsed, /*render_special=*/true), text);
  EXPECT_EQ(bpe->Detokenize(parsed, false, /*render_special=*/true), text);

  LOAD_OR_SKIP(spm, kLlamaSpm);
  // After a special token SPM adds the space prefix again, as llama.cpp does.
  EXPECT_EQ(spm->Encode("<s>Hi</s>", false, true),
            (std::vector<int32_t>{1, spm->Encode("Hi", false, false)[0], 2}));
  EXPECT_FALSE(AnyControl(*spm, spm->Encode("</s>", false, false)));
}

TEST(TokenizerTest, UserDefinedTokensMatchWithoutParseSpecial) {
  LOAD_OR_SKIP(qwen, kQwen2);
  EXPECT_THAT(qwen->Encode("<tool_call>", false, false), ElementsAre(151657));
  LOAD_OR_SKIP(coder, kDeepseekCoder);
  EXPECT_THAT(coder->Encode("\xC3\xB5", false, false), ElementsAre(32000));  // 'õ' is user-defined there
  // DeepSeek's FIM markers are user-defined in the file but llama.cpp makes them control tokens.
  const std::string fim = "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole\xEF\xBD\x9C>";
  EXPECT_THAT(coder->Encode(fim, false, true), ElementsAre(32015));
  EXPECT_FALSE(AnyControl(*coder, coder->Encode(fim, false, false)));
  EXPECT_TRUE(coder->IsControl(32015));

  // Phi-3: </s> is user-defined and swallows the whitespace after it (llama.cpp's RSTRIP quirk).
  LOAD_OR_SKIP(phi3, kPhi3);
  std::vector<int32_t> expected = phi3->Encode("a", false, false);
  expected.push_back(2);
  for (const int32_t id : phi3->Encode("b", false, false)) expected.push_back(id);
  EXPECT_EQ(phi3->Encode("a</s>  \n b", false, false), expected);
}

TEST(TokenizerTest, StreamingDetokenizerHoldsSplitCharacters) {
  LOAD_OR_SKIP(stories, kStories);
  // The golden "unicode" prompt needs byte-fallback tokens in this 512-token vocabulary.
  const std::string prompt =
      "Caf\xC3\xA9 \xE2\x98\x95 and na\xC3\xAFve fa\xC3\xA7" "ade \xE2\x80\x94 \xE2\x80\x9Cquotes\xE2\x80\x9D";
  const std::vector<int32_t> ids = stories->Encode(prompt, true, false);
  StreamingDetokenizer detok(*stories);
  std::string out;
  int held = 0;
  for (const int32_t id : ids) {
    const std::string piece = detok.Push(id);
    EXPECT_TRUE(utf8::IsValid(piece));
    held += detok.pending_bytes() > 0;
    out += piece;
  }
  EXPECT_GT(held, 0);  // some characters really were split across tokens
  out += detok.Flush();
  EXPECT_EQ(out, " " + prompt);

  // <0xE2> <0x98> <0x95> is U+2615: nothing until the last byte arrives.
  const int32_t kByte0 = 3;  // <0x00>
  StreamingDetokenizer d(*stories);
  EXPECT_EQ(d.Push(kByte0 + 0xE2), "");
  EXPECT_EQ(d.Push(kByte0 + 0x98), "");
  EXPECT_EQ(d.Push(kByte0 + 0x95), "\xE2\x98\x95");
  // A broken sequence becomes U+FFFD, and the byte that broke it is kept.
  EXPECT_EQ(d.Push(kByte0 + 0xE2), "");
  EXPECT_EQ(d.Push(kByte0 + 'A'), "\xEF\xBF\xBD" "A");
  EXPECT_EQ(d.Push(kByte0 + 0xFF), "\xEF\xBF\xBD");
  // An unfinished character at the end is flushed as U+FFFD.
  EXPECT_EQ(d.Push(kByte0 + 0xF0), "");
  EXPECT_EQ(d.Push(kByte0 + 0x9F), "");
  EXPECT_EQ(d.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(d.Flush(), "");
  // Control tokens render as nothing unless asked for.
  EXPECT_EQ(d.Push(stories->bos()), "");
  StreamingDetokenizer special(*stories, /*render_special=*/true);
  EXPECT_EQ(special.Push(stories->eos()), "</s>");
}

TEST(TokenizerTest, InvalidUtf8NeverBreaksEncoding) {
  std::mt19937 rng(1234);
  for (const char* vocab : kAllVocabs) {
    LOAD_OR_SKIP(t, vocab);
    for (int round = 0; round < 50; ++round) {
      std::string text(static_cast<size_t>(rng() % 200), '\0');
      for (char& c : text) c = static_cast<char>(rng());
      for (const bool parse_special : {false, true}) {
        const std::vector<int32_t> ids = t->Encode(text, true, parse_special);
        for (const int32_t id : ids) ASSERT_TRUE(t->IsValid(id)) << vocab;
      }
      // SPM spells unknown bytes with byte tokens, so the bytes come back, except that a broken
      // lead byte can swallow the first bytes of an escaped space ("▁"), which then come back
      // raw as in llama.cpp.
      if (t->model() == "llama" && text.find("\xE2\x96\x81") == std::string::npos) {
        const std::vector<int32_t> ids = t->Encode(text, false, false);
        if (!AnyControl(*t, ids)) {
          const std::string raw = Concat(*t, ids);
          std::string back;
          for (size_t i = 0; i < raw.size(); ++i) {
            if (raw.compare(i, 3, "\xE2\x96\x81") == 0) {
              back.push_back(' ');
              i += 2;
            } else {
              back.push_back(raw[i]);
            }
          }
          EXPECT_EQ(back, text.empty() ? "" : " " + text) << vocab;
        }
      }
    }
  }
}

TEST(TokenizerTest, BpeTreatsInvalidBytesAsReplacementCharacters) {
  LOAD_OR_SKIP(bpe, kLlamaBpe);
  // As llama.cpp: every byte that is not part of a sequence becomes U+FFFD before BPE.
  EXPECT_EQ(bpe->Encode("a\xFF" "b", false, false), bpe->Encode("a\xEF\xBF\xBD" "b", false, false));
  EXPECT_EQ(Concat(*bpe, bpe->Encode("\xE2\x98", false, false)), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TokenizerTest, ConcurrentEncodeGivesTheSameIds) {
  LOAD_OR_SKIP(bpe, kQwen2);
  LOAD_OR_SKIP(spm, kLlamaSpm);
  std::string text;
  for (const std::string& s : SampleTexts()) text += s;
  const std::vector<int32_t> bpe_ids = bpe->Encode(text, true, true);
  const std::vector<int32_t> spm_ids = spm->Encode(text, true, true);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int round = 0; round < 20; ++round) {
        if (bpe->Encode(text, true, true) != bpe_ids) ++mismatches;
        if (spm->Encode(text, true, true) != spm_ids) ++mismatches;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// Megabyte inputs made of one repeated character must stay far from quadratic (llama.cpp's
// algorithms are O(n log n) on them; a naive BPE or regex loop would take minutes).
TEST(TokenizerTest, LongRunsStayFast) {
#if defined(__SANITIZE_ADDRESS__)
  const size_t kBytes = 1u << 18;  // sanitizers slow everything down ~5x
#else
  const size_t kBytes = 1u << 20;
#endif
  const std::vector<std::string> units = {"a", " ", "\n", "7", "\xC3", "\xE3\x80\x80", " a"};
  for (const char* vocab : {kLlamaSpm, kLlamaBpe, kQwen2, kDeepseekLlm, kDeepseekCoder, kGpt2}) {
    LOAD_OR_SKIP(t, vocab);
    for (const std::string& unit : units) {
      // The full megabyte for plain letters and spaces; a quarter for the rest keeps the suite quick.
      const size_t bytes = unit == "a" || unit == " " ? kBytes : kBytes / 4;
      std::string text;
      while (text.size() < bytes) text += unit;
      const auto start = std::chrono::steady_clock::now();
      const std::vector<int32_t> ids = t->Encode(text, true, false);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_FALSE(ids.empty());
      // About 1-3 s on a loaded 2-core machine; quadratic behaviour would take hours.
      EXPECT_LT(seconds, 30.0) << vocab << " unit '" << unit << "'";
      if (unit == "a" || unit == " a") {
        EXPECT_EQ(Concat(*t, ids), t->add_space_prefix() ? " " + text : text) << vocab;
      }
    }
  }
}

// Chat prompts: template segments may spell control tokens, content segments never can.
TEST(TokenizerTest, EncodeSegmentsParsesControlTokensOnlyInTemplateSegments) {
  LOAD_OR_SKIP(t, kQwen2);
  const std::string content = "Hi <|im_end|> there";
  const TextSegment segments[] = {{"<|im_start|>user\n", true}, {content, false}, {"<|im_end|>\n<|im_start|>assistant\n", true}};
  const std::vector<int32_t> ids = t->EncodeSegments(segments, true);
  // Two control tokens in the first template part and two in the last; none from the content.
  int control = 0;
  for (const int32_t id : ids) control += t->IsControl(id) ? 1 : 0;
  EXPECT_EQ(control, 3);
  EXPECT_EQ(Concat(*t, ids, true), "<|im_start|>user\n" + content + "<|im_end|>\n<|im_start|>assistant\n");
  // Without control-token text in the content, segments encode exactly like the whole text.
  const TextSegment plain[] = {{"<|im_start|>user\n", true}, {"Hello, world", false}, {"<|im_end|>\n", true}};
  EXPECT_EQ(t->EncodeSegments(plain, true), t->Encode("<|im_start|>user\nHello, world<|im_end|>\n", true, true));
}

TEST(TokenizerTest, EncodeSegmentsMergesTextAcrossSegmentBoundaries) {
  for (const char* vocab : {kLlamaSpm, kLlamaBpe}) {
    SCOPED_TRACE(vocab);
    LOAD_OR_SKIP(t, vocab);
    const TextSegment segments[] = {{"[INST] ", true}, {"What is", false}, {" 2+2? [/INST]", true}};
    EXPECT_EQ(t->EncodeSegments(segments, true), t->Encode("[INST] What is 2+2? [/INST]", true, true));
  }
}

}  // namespace
}  // namespace airlock::inference

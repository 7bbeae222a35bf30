// libFuzzer target: Encode / TokenToPiece / streaming detokenization of arbitrary bytes with real
// SPM and byte-level BPE vocabularies. Checks that every id is valid, that the pieces give the
// input back where llama.cpp's algorithms guarantee it, and that streamed text is always UTF-8.
//
// The vocabularies come from $AIRLOCK_TEST_DATA/models/... (default: ../shared relative to the
// working directory). The first input byte picks the vocabulary and the add/parse_special flags.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/tokenizer.h"
#include "inference/tokenizer/utf8.h"

namespace {

using airlock::inference::GgufFile;
using airlock::inference::StreamingDetokenizer;
using airlock::inference::Tokenizer;
namespace utf8 = airlock::inference::utf8;

constexpr const char* kVocabularies[] = {
    "models/vocab/ggml-vocab-llama-spm.gguf",   // SPM, 32000 tokens
    "models/stories260K-f32.gguf",              // SPM, 512 tokens: mostly byte fallback
    "models/vocab/ggml-vocab-llama-bpe.gguf",   // BPE, Llama 3 (ignore_merges)
    "models/vocab/ggml-vocab-qwen2.gguf",       // BPE, Qwen2 (user-defined tokens)
    "models/vocab/ggml-vocab-deepseek-coder.gguf",  // BPE, many user-defined tokens
};

const std::vector<std::unique_ptr<Tokenizer>>& Tokenizers() {
  static const auto* tokenizers = [] {
    const char* env = std::getenv("AIRLOCK_TEST_DATA");
    const std::string root = env != nullptr && *env != '\0' ? env : "../shared";
    auto* list = new std::vector<std::unique_ptr<Tokenizer>>();
    for (const char* relative : kVocabularies) {
      const std::string path = root + "/" + relative;
      auto file = GgufFile::Open(path);
      if (!file.ok()) {
        std::fprintf(stderr, "tokenizer_fuzz: cannot open %s (set AIRLOCK_TEST_DATA): %s\n", path.c_str(),
                     std::string(file.status().message()).c_str());
        std::abort();
      }
      auto tokenizer = Tokenizer::FromGguf(**file);
      if (!tokenizer.ok()) {
        std::fprintf(stderr, "tokenizer_fuzz: %s: %s\n", path.c_str(), std::string(tokenizer.status().message()).c_str());
        std::abort();
      }
      list->push_back(std::move(*tokenizer));
    }
    return list;
  }();
  return *tokenizers;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tokenizer_fuzz: invariant violated: %s\n", what);
    std::abort();
  }
}

// What llama.cpp's BPE path sees: the text decoded leniently and encoded again.
std::string Normalized(std::string_view text) {
  std::vector<uint32_t> cps;
  utf8::DecodeLenient(text, cps);
  std::string out;
  for (const uint32_t cp : cps) utf8::AppendCodePoint(cp, out);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& tokenizers = Tokenizers();
  const uint8_t options = data[0];
  const Tokenizer& t = *tokenizers[options % std::size(kVocabularies)];
  const bool add_special = (options & 0x40) != 0;
  const bool parse_special = (options & 0x80) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  const std::vector<int32_t> ids = t.Encode(text, add_special, parse_special);
  std::string raw;           // pieces with control tokens spelled out
  std::string plain;         // pieces as generated text shows them
  StreamingDetokenizer detok(t);
  std::string streamed;
  for (const int32_t id : ids) {
    Check(t.IsValid(id), "every id is in the vocabulary");
    raw += t.TokenToPiece(id, /*render_special=*/true);
    plain += t.TokenToPiece(id);
    const std::string piece = detok.Push(id);
    Check(utf8::IsValid(piece), "streamed pieces are valid UTF-8");
    streamed += piece;
  }
  streamed += detok.Flush();
  Check(utf8::IsValid(streamed), "flushed text is valid UTF-8");
  Check(streamed == utf8::Sanitize(plain), "streaming equals replacing ill-formed bytes at the end");
  (void)t.Detokenize(ids, true, true);
  if (add_special && t.add_bos()) Check(!ids.empty() && ids.front() == t.bos(), "BOS comes first");

  // Round trips that hold for llama.cpp's algorithms (special tokens are rendered as their text, so
  // the BOS the vocabulary adds is dropped first).
  std::string body = raw;
  if (add_special && t.add_bos()) body.erase(0, t.TokenToPiece(t.bos(), true).size());
  if (add_special && t.add_eos()) body.resize(body.size() - t.TokenToPiece(t.eos(), true).size());
  if (t.model() == "gpt2") {
    // Byte-level BPE keeps every byte, except that ill-formed UTF-8 becomes U+FFFD.
    Check(body == Normalized(text), "byte-level BPE pieces give the (normalized) input back");
  } else if (!parse_special && text.find("\xE2\x96\x81") == std::string_view::npos) {
    // SPM with byte fallback keeps every byte; spaces come back as spaces or as raw U+2581 bytes
    // (a broken lead byte can swallow part of an escaped space, as in llama.cpp).
    std::string back;
    for (size_t i = 0; i < body.size(); ++i) {
      if (body.compare(i, 3, "\xE2\x96\x81") == 0) {
        back.push_back(' ');
        i += 2;
      } else {
        back.push_back(body[i]);
      }
    }
    Check(back == (text.empty() ? std::string() : " " + std::string(text)), "SPM pieces give the input back");
  }
  return 0;
}

// Regex pre-tokenizer for byte-level BPE vocabularies: splits text into the words that BPE merges
// never cross, with the regex list llama.cpp selects from `tokenizer.ggml.pre`, run on PCRE2.
//
// Thread-safety: immutable after Create(); Split() may be called from any number of threads.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace airlock::inference {

// What a `tokenizer.ggml.pre` name means: the regexes and the vocabulary flags llama.cpp ties to it.
struct PreTokenizerConfig {
  std::string name;                   // the canonical family name, e.g. "llama3" for "llama-bpe"
  std::vector<std::string> patterns;  // PCRE2 syntax, applied in order (each splits the previous pieces)
  bool ignore_merges = false;         // a word that is itself a token is emitted whole (Llama 3)
  bool add_bos = false;               // default for tokenizer.ggml.add_bos_token
  bool clean_spaces = true;           // detokenizer's clean_up_tokenization_spaces
  bool no_bos = false;                // the family has no BOS token at all (chatglm)
};

// The configuration for `pre` (an empty name means llama.cpp's "default"); NotFound naming `pre`
// when the name is not one we implement.
absl::StatusOr<PreTokenizerConfig> LookupPreTokenizer(std::string_view pre);

class PreTokenizer {
 public:
  // Compiles (and JIT-compiles, when available) every pattern once.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(const std::vector<std::string>& patterns);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Splits `text` (any bytes) into words, appended to `words` back to back; `word_ends` receives the
  // end offset of each word in `words`. As in llama.cpp the words hold the text re-encoded from its
  // decoded code points: each invalid byte has become U+FFFD.
  void Split(std::string_view text, std::string& words, std::vector<size_t>& word_ends) const;

 private:
  struct Regex;
  explicit PreTokenizer(std::vector<std::unique_ptr<Regex>> regexes);

  std::vector<std::unique_ptr<Regex>> regexes_;
};

}  // namespace airlock::inference

// Text <-> token ids for GGUF models, matching llama.cpp's llama_tokenize / llama_token_to_piece /
// llama_detokenize token for token: SentencePiece-style vocabularies ("llama") and byte-level BPE
// ("gpt2", with the pre-tokenizer named by tokenizer.ggml.pre).
//
// Thread-safety: immutable after FromGguf()/FromSpec(); every method may be called from any number
// of threads at once. The Tokenizer owns copies of everything it needs: the GgufFile it was built
// from may be closed afterwards.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/streaming_detokenizer.h"
#include "inference/tokenizer/vocabulary.h"

namespace airlock::inference {

class BpeEncoder;
class SpecialTokenSplitter;
struct TextFragment;

// Part of a text to encode, with its own rule for control tokens (chat prompts: template text may
// spell control tokens, message content may not).
struct TextSegment {
  std::string_view text;
  bool parse_special = false;
};

class Tokenizer {
 public:
  // Reads and validates the `tokenizer.*` metadata. Refuses unknown tokenizer models and pre-tokenizer
  // types (naming them), inconsistent array lengths, out-of-range special ids, duplicate tokens and
  // malformed merges.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);
  // The same from metadata already in memory (tests, tools).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromSpec(const VocabularySpec& spec);
  ~Tokenizer();
  // Not copyable or movable: the encoders keep references into it.
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids for `text` (any bytes; invalid UTF-8 is tokenized as llama.cpp does, never refused).
  // add_special: prepend BOS / append EOS when the vocabulary says so (add_bos_token/add_eos_token).
  // parse_special: text spelling a control token (e.g. "<|eot_id|>") becomes that token; when false
  // it is tokenized as plain text. User-defined tokens are always matched (llama.cpp's rule).
  std::vector<int32_t> Encode(std::string_view text, bool add_special, bool parse_special) const;
  // As Encode of the segments' concatenation, except that control tokens are recognised only inside
  // segments with parse_special. Equal to Encode(text, add_special, true) when no plain segment
  // spells a control token.
  std::vector<int32_t> EncodeSegments(std::span<const TextSegment> segments, bool add_special) const;

  // llama_token_to_piece(id, lstrip=0, special=render_special): SPM `▁` becomes a space, byte tokens
  // their raw byte, byte-level BPE text its bytes; control and unknown tokens render as "" unless
  // render_special. An invalid id renders as "". The bytes need not be valid UTF-8 on their own.
  std::string TokenToPiece(int32_t id, bool render_special = false) const {
    return std::string(PieceView(id, render_special));
  }
  // As TokenToPiece without a copy; the view lives as long as the Tokenizer.
  std::string_view PieceView(int32_t id, bool render_special = false) const;

  // llama_detokenize: the pieces of `ids` concatenated, minus the one leading space that SPM
  // vocabularies add (add_space_prefix), with BPE's clean-up of spaces before punctuation when the
  // vocabulary asks for it. remove_special drops a leading BOS / trailing EOS the vocabulary adds.
  std::string Detokenize(std::span<const int32_t> ids, bool remove_special = false,
                         bool render_special = false) const;

  int32_t n_vocab() const { return vocab_.n_tokens(); }
  // Special token ids, -1 when the vocabulary has none.
  int32_t bos() const { return vocab_.special(SpecialRole::kBos); }
  int32_t eos() const { return vocab_.special(SpecialRole::kEos); }
  int32_t eot() const { return vocab_.special(SpecialRole::kEot); }
  int32_t unk() const { return vocab_.special(SpecialRole::kUnk); }
  int32_t pad() const { return vocab_.special(SpecialRole::kPad); }
  bool add_bos() const { return vocab_.add_bos(); }
  bool add_eos() const { return vocab_.add_eos(); }
  bool add_space_prefix() const { return vocab_.add_space_prefix(); }

  // EOS, EOT, EOM, FIM pad/repo/separator and tokens spelled like an end of turn ("<|im_end|>",
  // "<|endoftext|>", "<end_of_turn>", ...), as llama.cpp's llama_vocab_is_eog.
  bool IsEndOfGeneration(int32_t id) const { return vocab_.IsEndOfGeneration(id); }
  const std::vector<int32_t>& end_of_generation_tokens() const { return vocab_.eog_tokens(); }
  bool IsValid(int32_t id) const { return vocab_.IsValid(id); }
  // Control or unknown: rendered only with render_special.
  bool IsControl(int32_t id) const {
    return IsValid(id) && (vocab_.attr(id) & (kTokenAttrControl | kTokenAttrUnknown)) != 0;
  }
  // The token's text as stored in the vocabulary ("" for an invalid id).
  std::string_view TokenText(int32_t id) const { return IsValid(id) ? vocab_.text(id) : std::string_view(); }

  const std::string& model() const { return vocab_.model(); }  // "llama" or "gpt2"
  const std::string& pre() const { return vocab_.pre(); }      // tokenizer.ggml.pre ("default" if absent)
  // tokenizer.chat_template, empty when absent.
  const std::string& chat_template() const { return vocab_.chat_template(); }
  const Vocabulary& vocabulary() const { return vocab_; }

 private:
  explicit Tokenizer(Vocabulary vocab);
  std::vector<int32_t> EncodeFragments(std::string_view text, const std::vector<TextFragment>& fragments,
                                       bool add_special) const;

  Vocabulary vocab_;
  std::unique_ptr<SpecialTokenSplitter> splitter_;
  std::unique_ptr<BpeEncoder> bpe_;  // null for SPM vocabularies
};

}  // namespace airlock::inference

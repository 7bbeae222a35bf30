// The validated token vocabulary behind a Tokenizer: token texts, scores, attributes, special ids,
// merge ranks and the per-token pieces, built from the GGUF `tokenizer.*` metadata with llama.cpp's
// defaults and quirks (src/llama-vocab.cpp, llama_vocab::impl::load) so that ids match upstream.
//
// Thread-safety: immutable after Build(); any thread may read it concurrently.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/pre_tokenizer.h"
#include "inference/tokenizer/string_id_map.h"

namespace airlock::inference {

// Token attribute bits, with llama.cpp's llama_token_attr values.
enum TokenAttr : uint32_t {
  kTokenAttrUndefined = 0,
  kTokenAttrUnknown = 1u << 0,
  kTokenAttrUnused = 1u << 1,
  kTokenAttrNormal = 1u << 2,
  kTokenAttrControl = 1u << 3,
  kTokenAttrUserDefined = 1u << 4,
  kTokenAttrByte = 1u << 5,
  kTokenAttrLstrip = 1u << 7,  // a matched special token swallows the whitespace before it
  kTokenAttrRstrip = 1u << 8,  // ... and after it
};

// Token types as stored in `tokenizer.ggml.token_type`.
enum class GgufTokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class VocabType {
  kSpm,  // tokenizer.ggml.model "llama": SentencePiece BPE by score with byte fallback
  kBpe,  // tokenizer.ggml.model "gpt2": byte-level BPE by merge rank after a regex pre-tokenizer
};

// The special token roles llama.cpp reads from `tokenizer.ggml.<role>_token_id`.
enum class SpecialRole {
  kBos, kEos, kEot, kEom, kUnk, kSep, kPad, kMask,
  kFimPre, kFimSuf, kFimMid, kFimPad, kFimRep, kFimSep,
  kCount,
};

// The tokenizer metadata as found in the file, before any validation or defaulting. String views
// only need to live until Vocabulary::Build returns. Tests build these in memory.
struct VocabularySpec {
  std::string model;                          // tokenizer.ggml.model
  std::optional<std::string> pre;             // tokenizer.ggml.pre
  std::vector<std::string_view> tokens;       // tokenizer.ggml.tokens
  std::optional<std::vector<float>> scores;   // tokenizer.ggml.scores
  std::optional<std::vector<int32_t>> token_types;       // tokenizer.ggml.token_type
  std::optional<std::vector<std::string_view>> merges;   // tokenizer.ggml.merges
  // Raw id values (unsigned 32-bit in well-formed files; a negative or 0xFFFFFFFF value means none).
  std::array<std::optional<int64_t>, static_cast<size_t>(SpecialRole::kCount)> special_ids;
  std::optional<bool> add_bos;                // tokenizer.ggml.add_bos_token
  std::optional<bool> add_eos;                // tokenizer.ggml.add_eos_token
  std::optional<bool> add_space_prefix;       // tokenizer.ggml.add_space_prefix
  std::string general_name;                   // general.name (llama.cpp keys a Phi-3 quirk on it)
  std::string chat_template;                  // tokenizer.chat_template

  std::optional<int64_t>& special_id(SpecialRole role) { return special_ids[static_cast<size_t>(role)]; }
};

// Reads the tokenizer keys of `file` into a spec (type errors are reported, nothing is defaulted).
absl::StatusOr<VocabularySpec> ReadVocabularySpec(const GgufFile& file);

class Vocabulary {
 public:
  static constexpr int32_t kNoToken = -1;
  // Longest token or merge text we accept; real vocabularies stay far below it.
  static constexpr size_t kMaxTokenBytes = 1 << 16;

  // Validates `spec` (array lengths agree, ids in range, no duplicate tokens, merges of the form
  // "left right", finite scores) and applies llama.cpp's defaults. Errors name the key and index.
  static absl::StatusOr<Vocabulary> Build(const VocabularySpec& spec);

  VocabType type() const { return type_; }
  const std::string& model() const { return model_; }
  const std::string& pre() const { return pre_; }
  const PreTokenizerConfig& pre_config() const { return pre_config_; }
  int32_t n_tokens() const { return static_cast<int32_t>(scores_.size()); }
  bool IsValid(int32_t id) const { return id >= 0 && id < n_tokens(); }

  std::string_view text(int32_t id) const {
    return std::string_view(texts_).substr(text_offsets_[id], text_offsets_[id + 1] - text_offsets_[id]);
  }
  float score(int32_t id) const { return scores_[id]; }
  uint32_t attr(int32_t id) const { return attrs_[id]; }
  // The id of the token spelled `text` exactly, or kNoToken.
  int32_t Find(std::string_view text) const { return token_to_id_.Find(text); }
  // SPM byte fallback: the token for a raw byte (`<0xNN>`, else the one-byte token), or kNoToken.
  int32_t byte_token(uint8_t byte) const { return byte_tokens_[byte]; }
  // True when no token of two or more bytes contains `byte` (often '\n' in SPM vocabularies): a
  // symbol holding it can never be merged, so SPM may work on the text between such symbols alone.
  bool IsMergeBarrier(uint8_t byte) const { return merge_barrier_[byte]; }
  // BPE: the rank of merging `left` and `right` (lower merges first), or -1. `scratch` is reused.
  int32_t MergeRank(std::string_view left, std::string_view right, std::string& scratch) const;

  int32_t special(SpecialRole role) const { return special_ids_[static_cast<size_t>(role)]; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  bool clean_spaces() const { return clean_spaces_; }
  bool ignore_merges() const { return pre_config_.ignore_merges; }
  bool IsEndOfGeneration(int32_t id) const { return IsValid(id) && eog_[id] != 0; }
  const std::vector<int32_t>& eog_tokens() const { return eog_tokens_; }
  // Control, user-defined and unknown tokens, longest text first: the order in which llama.cpp
  // cuts them out of the text before sub-word tokenization.
  const std::vector<int32_t>& special_tokens() const { return special_tokens_; }
  // llama_token_to_piece(id, special=true): the token's text as output bytes.
  std::string_view piece(int32_t id) const {
    return std::string_view(pieces_).substr(piece_offsets_[id], piece_offsets_[id + 1] - piece_offsets_[id]);
  }
  const std::string& chat_template() const { return chat_template_; }

 private:
  Vocabulary() = default;
  absl::Status LoadTokens(const VocabularySpec& spec);
  absl::Status LoadMerges(const VocabularySpec& spec);
  absl::Status LoadSpecialIds(const VocabularySpec& spec);
  void DetectSpecialTokensByText();
  void BuildCaches();
  std::string ComputePiece(int32_t id) const;

  VocabType type_ = VocabType::kSpm;
  std::string model_;
  std::string pre_;
  PreTokenizerConfig pre_config_;

  std::string texts_;                 // all token texts back to back
  std::vector<size_t> text_offsets_;  // n_tokens + 1
  std::vector<float> scores_;
  std::vector<uint32_t> attrs_;
  StringIdMap token_to_id_;
  StringIdMap merge_ranks_;  // "left right" -> rank
  std::array<int32_t, 256> byte_tokens_{};
  std::array<bool, 256> merge_barrier_{};

  std::array<int32_t, static_cast<size_t>(SpecialRole::kCount)> special_ids_{};
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;
  bool clean_spaces_ = false;
  std::vector<uint8_t> eog_;
  std::vector<int32_t> eog_tokens_;
  std::vector<int32_t> special_tokens_;

  std::string pieces_;
  std::vector<size_t> piece_offsets_;
  std::string chat_template_;
};

}  // namespace airlock::inference

// Byte-level BPE ("gpt2" vocabularies): regex pre-tokenization into words, GPT-2 byte-to-unicode
// mapping, then merges applied in rank order within each word.
//
// Thread-safety: immutable after Create(); Encode() may be called from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/tokenizer/pre_tokenizer.h"
#include "inference/tokenizer/vocabulary.h"

namespace airlock::inference {

class BpeEncoder {
 public:
  // Compiles the pre-tokenizer regexes of `vocab`'s pre-tokenizer family.
  static absl::StatusOr<std::unique_ptr<BpeEncoder>> Create(const Vocabulary& vocab);

  // Appends the tokens of `text` (any bytes) to `out`. `vocab` must be the one given to Create().
  void Encode(const Vocabulary& vocab, std::string_view text, std::vector<int32_t>& out) const;

 private:
  explicit BpeEncoder(std::unique_ptr<PreTokenizer> pre) : pre_(std::move(pre)) {}

  std::unique_ptr<PreTokenizer> pre_;
};

}  // namespace airlock::inference

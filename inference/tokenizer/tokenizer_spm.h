// SentencePiece-style BPE ("llama" vocabularies): merge adjacent symbols into the best-scoring
// token until no pair forms a token, then fall back to `<0xNN>` byte tokens for what is left.
//
// Thread-safety: stateless; any thread.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "inference/tokenizer/vocabulary.h"

namespace airlock::inference {

// Appends the tokens of `text` to `out`. `text` has already had its spaces replaced by U+2581 (and
// the leading space prefix added) by the caller. Any bytes are accepted.
void EncodeSpm(const Vocabulary& vocab, std::string_view text, std::vector<int32_t>& out);

}  // namespace airlock::inference

// Cuts special tokens (control, user-defined, unknown) out of raw text before sub-word
// tokenization, in llama.cpp's order: longest token first, each split over all remaining text.
//
// Thread-safety: immutable after construction; Split() may be called from any number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "inference/tokenizer/vocabulary.h"

namespace airlock::inference {

// A piece of the input: either raw text [begin, end) or one special token.
struct TextFragment {
  int32_t token = Vocabulary::kNoToken;  // kNoToken for raw text
  size_t begin = 0;
  size_t end = 0;
  bool is_text() const { return token == Vocabulary::kNoToken; }
};

class SpecialTokenSplitter {
 public:
  // `vocab` must outlive the splitter.
  explicit SpecialTokenSplitter(const Vocabulary& vocab);

  // Replaces `fragments` with the partition of `text`. With `parse_special` false only user-defined
  // tokens are cut out; control and unknown tokens stay plain text (llama.cpp's rule).
  void Split(std::string_view text, bool parse_special, std::vector<TextFragment>& fragments) const;

 private:
  // A byte trie over all special token texts, used to find which of them occur in a text at all
  // so that the per-token passes run only for those.
  struct Node {
    int32_t rank = -1;  // position in vocab.special_tokens() of the token spelled by this node
    std::vector<std::pair<uint8_t, int32_t>> children;
  };
  int32_t Child(int32_t node, uint8_t byte) const;

  const Vocabulary& vocab_;
  std::vector<Node> nodes_;
  int32_t root_children_[256];
};

}  // namespace airlock::inference

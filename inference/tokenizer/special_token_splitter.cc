// llama.cpp's tokenizer_st_partition over fragment lists, without its rescans of the whole text.
#include "inference/tokenizer/special_token_splitter.h"

#include <algorithm>

namespace airlock::inference {
namespace {

// C-locale isspace, which llama.cpp uses on raw bytes to strip around LSTRIP/RSTRIP tokens.
bool IsAsciiSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

}  // namespace

SpecialTokenSplitter::SpecialTokenSplitter(const Vocabulary& vocab) : vocab_(vocab) {
  std::fill(std::begin(root_children_), std::end(root_children_), -1);
  nodes_.emplace_back();  // the root
  const std::vector<int32_t>& order = vocab.special_tokens();
  for (size_t rank = 0; rank < order.size(); ++rank) {
    const std::string_view text = vocab.text(order[rank]);
    int32_t node = 0;
    for (const char c : text) {
      int32_t child = Child(node, static_cast<uint8_t>(c));
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        if (node == 0) {
          root_children_[static_cast<uint8_t>(c)] = child;
        } else {
          nodes_[node].children.emplace_back(static_cast<uint8_t>(c), child);
        }
      }
      node = child;
    }
    nodes_[node].rank = static_cast<int32_t>(rank);  // texts are unique, so one token per node
  }
}

int32_t SpecialTokenSplitter::Child(int32_t node, uint8_t byte) const {
  if (node == 0) return root_children_[byte];
  for (const auto& [b, child] : nodes_[node].children) {
    if (b == byte) return child;
  }
  return -1;
}

void SpecialTokenSplitter::Split(std::string_view text, bool parse_special,
                                 std::vector<TextFragment>& fragments) const {
  fragments.clear();
  if (text.empty()) return;
  fragments.push_back(TextFragment{Vocabulary::kNoToken, 0, text.size()});
  const std::vector<int32_t>& order = vocab_.special_tokens();
  if (order.empty()) return;

  // Which special tokens occur anywhere in the text (fragments are substrings of it, so no other
  // token can match later), by their rank in llama.cpp's processing order.
  std::vector<uint8_t> occurs;
  for (size_t i = 0; i < text.size(); ++i) {
    int32_t node = root_children_[static_cast<uint8_t>(text[i])];
    for (size_t j = i + 1; node >= 0; ++j) {
      const int32_t rank = nodes_[node].rank;
      if (rank >= 0) {
        const uint32_t attr = vocab_.attr(order[rank]);
        if (parse_special || !(attr & (kTokenAttrControl | kTokenAttrUnknown))) {
          if (occurs.empty()) occurs.resize(order.size(), 0);
          occurs[rank] = 1;
        }
      }
      if (j >= text.size()) break;
      node = Child(node, static_cast<uint8_t>(text[j]));
    }
  }
  if (occurs.empty()) return;
  std::vector<int32_t> ranks;
  for (size_t rank = 0; rank < occurs.size(); ++rank) {
    if (occurs[rank]) ranks.push_back(static_cast<int32_t>(rank));
  }

  std::vector<TextFragment> next;
  for (const int32_t rank : ranks) {
    const int32_t id = order[rank];
    const std::string_view token = vocab_.text(id);
    const uint32_t attr = vocab_.attr(id);
    next.clear();
    for (const TextFragment& f : fragments) {
      if (!f.is_text()) {
        next.push_back(f);
        continue;
      }
      size_t pos = f.begin;
      size_t found = text.substr(pos, f.end - pos).find(token);
      if (found == std::string_view::npos) {
        next.push_back(f);
        continue;
      }
      while (found != std::string_view::npos) {
        const size_t match = pos + found;
        size_t left_end = match;
        if (attr & kTokenAttrLstrip) {
          while (left_end > pos && IsAsciiSpace(text[left_end - 1])) --left_end;
        }
        if (left_end > pos) next.push_back(TextFragment{Vocabulary::kNoToken, pos, left_end});
        next.push_back(TextFragment{id, match, match + token.size()});
        pos = match + token.size();
        if (attr & kTokenAttrRstrip) {
          while (pos < f.end && IsAsciiSpace(text[pos])) ++pos;
        }
        found = text.substr(pos, f.end - pos).find(token);
      }
      if (pos < f.end) next.push_back(TextFragment{Vocabulary::kNoToken, pos, f.end});
    }
    fragments.swap(next);
  }
}

}  // namespace airlock::inference

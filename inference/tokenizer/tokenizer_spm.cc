// SPM encoding as llama.cpp's llm_tokenizer_spm_session, with a heap of candidate merges so that
// long inputs stay O(n log n).
#include "inference/tokenizer/tokenizer_spm.h"

#include <algorithm>

#include "inference/tokenizer/utf8.h"

namespace airlock::inference {
namespace {

// A run of bytes of the input; merged symbols absorb their right neighbour and leave it empty.
struct Symbol {
  int32_t prev;
  int32_t next;
  uint32_t start;
  uint32_t length;
};

struct Bigram {
  float score;
  int32_t left;
  int32_t right;
  uint32_t length;  // of the merged text: a stale entry no longer matches its symbols
};

// Highest score first; on equal scores the leftmost pair (upstream's order).
struct LowerPriority {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

// Emits one final symbol: its token, else its bytes as byte tokens.
void EmitSymbol(const Vocabulary& vocab, std::string_view piece, std::vector<int32_t>& out) {
  const int32_t id = vocab.Find(piece);
  if (id != Vocabulary::kNoToken) {
    out.push_back(id);
    return;
  }
  // Only single characters can fail to be tokens (every merge forms one): spell them in bytes.
  for (const char c : piece) {
    int32_t byte_id = vocab.byte_token(static_cast<uint8_t>(c));
    // llama.cpp aborts on a vocabulary without byte tokens; we fall back to <unk>, else drop it.
    if (byte_id == Vocabulary::kNoToken) byte_id = vocab.special(SpecialRole::kUnk);
    if (byte_id != Vocabulary::kNoToken) out.push_back(byte_id);
  }
}

// Runs upstream's merge loop on symbols [first, last), which no merge can cross.
void MergeSegment(const Vocabulary& vocab, std::string_view text, std::vector<Symbol>& symbols, int32_t first,
                  int32_t last, std::vector<Bigram>& heap, std::vector<int32_t>& out) {
  for (int32_t i = first; i < last; ++i) {
    symbols[i].prev = i == first ? -1 : i - 1;
    symbols[i].next = i + 1 == last ? -1 : i + 1;
  }
  heap.clear();
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const std::string_view merged = text.substr(symbols[left].start, symbols[left].length + symbols[right].length);
    const int32_t id = vocab.Find(merged);
    if (id == Vocabulary::kNoToken) return;
    heap.push_back(Bigram{vocab.score(id), left, right, static_cast<uint32_t>(merged.size())});
    std::push_heap(heap.begin(), heap.end(), LowerPriority{});
  };
  for (int32_t i = first + 1; i < last; ++i) try_add(i - 1, i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), LowerPriority{});
    const Bigram bigram = heap.back();
    heap.pop_back();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    if (left.length == 0 || right.length == 0 || left.length + right.length != bigram.length) continue;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add(left.prev, bigram.left);
    try_add(bigram.left, left.next);
  }
  for (int32_t i = first; i != -1; i = symbols[i].next) {
    EmitSymbol(vocab, text.substr(symbols[i].start, symbols[i].length), out);
  }
}

}  // namespace

void EncodeSpm(const Vocabulary& vocab, std::string_view text, std::vector<int32_t>& out) {
  if (text.empty()) return;
  // Offsets are 32-bit to keep the heap small; longer texts go in independent 2 GiB slices, which
  // changes nothing unless a token spans a slice boundary.
  constexpr size_t kMaxSlice = size_t{1} << 31;
  if (text.size() > kMaxSlice) {
    for (size_t at = 0; at < text.size(); at += kMaxSlice) EncodeSpm(vocab, text.substr(at, kMaxSlice), out);
    return;
  }
  // Symbols are characters as judged by their lead byte alone (upstream's rule), so a broken
  // sequence swallows the bytes after it exactly as in llama.cpp. A symbol holding a byte that no
  // multi-byte token contains can never merge; it splits the text into independent segments,
  // which keeps the heap small and local without changing the result.
  std::vector<Symbol> symbols;
  std::vector<uint8_t> barrier;
  symbols.reserve(text.size());
  barrier.reserve(text.size());
  for (size_t offset = 0; offset < text.size();) {
    const size_t length = std::min(utf8::LenientSequenceLength(static_cast<uint8_t>(text[offset])),
                                   text.size() - offset);
    bool blocks = false;
    for (size_t k = 0; k < length; ++k) blocks |= vocab.IsMergeBarrier(static_cast<uint8_t>(text[offset + k]));
    symbols.push_back(Symbol{-1, -1, static_cast<uint32_t>(offset), static_cast<uint32_t>(length)});
    barrier.push_back(blocks);
    offset += length;
  }

  std::vector<Bigram> heap;
  const int32_t n = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i < n;) {
    if (barrier[i]) {
      EmitSymbol(vocab, text.substr(symbols[i].start, symbols[i].length), out);
      ++i;
      continue;
    }
    int32_t end = i;
    while (end < n && !barrier[end]) ++end;
    MergeSegment(vocab, text, symbols, i, end, heap, out);
    i = end;
  }
}

}  // namespace airlock::inference

// Byte-level BPE as llama.cpp's llm_tokenizer_bpe_session: a heap of candidate merges per word,
// lowest rank first, leftmost on ties.
#include "inference/tokenizer/tokenizer_bpe.h"

#include <algorithm>
#include <string>

#include "inference/tokenizer/utf8.h"

namespace airlock::inference {
namespace {

struct Symbol {
  int32_t prev;
  int32_t next;
  size_t start;
  size_t length;
};

struct Bigram {
  int32_t rank;
  int32_t left;
  int32_t right;
  size_t length;  // of the merged text: a stale entry no longer matches its symbols
};

struct LowerPriority {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

// Reused buffers for one Encode() call.
struct Scratch {
  std::string words;
  std::vector<size_t> word_ends;
  std::string encoded;
  std::string merge_key;
  std::vector<Symbol> symbols;
  std::vector<Bigram> heap;
};

void EncodeWord(const Vocabulary& vocab, std::string_view word, Scratch& s, std::vector<int32_t>& out) {
  s.encoded.clear();
  for (const char c : word) s.encoded.append(utf8::ByteToUnicode(static_cast<uint8_t>(c)));
  const std::string_view text = s.encoded;

  // Llama 3: a word that is a token as a whole is taken as is, whatever the merges would give.
  if (vocab.ignore_merges()) {
    const int32_t id = vocab.Find(text);
    if (id != Vocabulary::kNoToken) {
      out.push_back(id);
      return;
    }
  }

  s.symbols.clear();
  for (size_t offset = 0; offset < text.size();) {
    const size_t length =
        std::min(utf8::LenientSequenceLength(static_cast<uint8_t>(text[offset])), text.size() - offset);
    const int32_t index = static_cast<int32_t>(s.symbols.size());
    s.symbols.push_back(Symbol{index - 1, offset + length == text.size() ? -1 : index + 1, offset, length});
    offset += length;
  }
  std::vector<Symbol>& symbols = s.symbols;

  std::vector<Bigram>& heap = s.heap;  // a max-heap under LowerPriority, as std::priority_queue
  heap.clear();
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t rank = vocab.MergeRank(text.substr(symbols[left].start, symbols[left].length),
                                         text.substr(symbols[right].start, symbols[right].length), s.merge_key);
    if (rank < 0) return;
    heap.push_back(Bigram{rank, left, right, symbols[left].length + symbols[right].length});
    std::push_heap(heap.begin(), heap.end(), LowerPriority{});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);

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

  for (const Symbol& sym : symbols) {
    if (sym.length == 0) continue;
    const std::string_view piece = text.substr(sym.start, sym.length);
    const int32_t id = vocab.Find(piece);
    if (id != Vocabulary::kNoToken) {
      out.push_back(id);
      continue;
    }
    // A merge result missing from the vocabulary: upstream looks up each byte of the byte-level
    // text on its own and drops those that are not tokens.
    for (size_t i = 0; i < piece.size(); ++i) {
      const int32_t byte_id = vocab.Find(piece.substr(i, 1));
      if (byte_id != Vocabulary::kNoToken) out.push_back(byte_id);
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeEncoder>> BpeEncoder::Create(const Vocabulary& vocab) {
  auto pre = PreTokenizer::Create(vocab.pre_config().patterns);
  if (!pre.ok()) return pre.status();
  return std::unique_ptr<BpeEncoder>(new BpeEncoder(std::move(*pre)));
}

void BpeEncoder::Encode(const Vocabulary& vocab, std::string_view text, std::vector<int32_t>& out) const {
  Scratch s;
  pre_->Split(text, s.words, s.word_ends);
  size_t start = 0;
  for (const size_t end : s.word_ends) {
    EncodeWord(vocab, std::string_view(s.words).substr(start, end - start), s, out);
    start = end;
  }
}

}  // namespace airlock::inference

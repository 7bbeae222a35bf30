// Tokenizer facade: special-token partition, then SPM or byte-level BPE on each text fragment
// (llama_vocab::impl::tokenize), and the piece / detokenize side (token_to_piece, detokenize).
#include "inference/tokenizer/tokenizer.h"

#include "inference/base/status.h"
#include "inference/tokenizer/special_token_splitter.h"
#include "inference/tokenizer/tokenizer_bpe.h"
#include "inference/tokenizer/tokenizer_spm.h"

namespace airlock::inference {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 '▁'

// llama.cpp's clean_up_tokenization_spaces for BPE vocabularies, pass by pass on the bytes.
void CleanSpaces(std::string& text) {
  // Pass 1: " ?", " !", " .", " ," lose their space.
  size_t n = text.size();
  size_t total = n > 0 ? 1 : 0;
  for (size_t i = 1; i < n; ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --total;
    text[total++] = x;
  }
  text.resize(total);
  // Pass 2: a lone apostrophe between spaces (" ' ") loses both spaces.
  n = text.size();
  total = n > 0 ? 1 : 0;
  for (size_t i = 1; i < n; ++i) {
    const char x = text[i];
    if (x == '\'' && i + 1 < n && text[i - 1] == ' ' && text[i + 1] == ' ') {
      --total;
      text[++i] = '\0';  // upstream marks the skipped space; a later look-behind sees the NUL
    }
    text[total++] = x;
  }
  text.resize(total);
  // Pass 3: " 's", " 'm", " 're", " 've" lose their space (" 't", " 'd", " 'll" keep it).
  n = text.size();
  total = n > 0 ? 1 : 0;
  for (size_t i = 1; i < n; ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && x == '\'' && i + 1 < n) {
      const char x1 = text[i + 1];
      if (x1 == 's' || x1 == 'm') {
        --total;
      } else if (x1 != 't' && x1 != 'd' && i + 2 < n) {
        const char x2 = text[i + 2];
        if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) --total;
      }
    }
    text[total++] = x;
  }
  text.resize(total);
}

}  // namespace

Tokenizer::Tokenizer(Vocabulary vocab) : vocab_(std::move(vocab)) {}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& file) {
  AIRLOCK_ASSIGN_OR_RETURN(VocabularySpec spec, ReadVocabularySpec(file));
  return FromSpec(spec);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromSpec(const VocabularySpec& spec) {
  AIRLOCK_ASSIGN_OR_RETURN(Vocabulary vocab, Vocabulary::Build(spec));
  std::unique_ptr<Tokenizer> t(new Tokenizer(std::move(vocab)));
  // Both keep a reference to vocab_, which lives at a fixed address inside the heap-allocated Tokenizer.
  t->splitter_ = std::make_unique<SpecialTokenSplitter>(t->vocab_);
  if (t->vocab_.type() == VocabType::kBpe) {
    AIRLOCK_ASSIGN_OR_RETURN(t->bpe_, BpeEncoder::Create(t->vocab_));
  }
  return t;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<TextFragment> fragments;
  splitter_->Split(text, parse_special, fragments);
  return EncodeFragments(text, fragments, add_special);
}

std::vector<int32_t> Tokenizer::EncodeSegments(std::span<const TextSegment> segments, bool add_special) const {
  std::string text;
  for (const TextSegment& segment : segments) text.append(segment.text);
  // Each segment is split on its own, so a control token is recognised only inside a segment that
  // allows it; raw text on both sides of a segment boundary is then tokenized as one fragment, as
  // if the whole text had been split at once.
  std::vector<TextFragment> fragments;
  std::vector<TextFragment> part;
  size_t offset = 0;
  for (const TextSegment& segment : segments) {
    splitter_->Split(segment.text, segment.parse_special, part);
    for (TextFragment f : part) {
      f.begin += offset;
      f.end += offset;
      if (f.is_text() && !fragments.empty() && fragments.back().is_text() && fragments.back().end == f.begin) {
        fragments.back().end = f.end;
      } else {
        fragments.push_back(f);
      }
    }
    offset += segment.text.size();
  }
  // A token that strips the whitespace beside it (Phi-3's "<|assistant|>" strips to its right) strips
  // it across the segment boundary too, as it would in the whole text.
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  for (size_t i = 0; i < fragments.size(); ++i) {
    if (fragments[i].is_text()) continue;
    const uint32_t attr = vocab_.attr(fragments[i].token);
    if ((attr & kTokenAttrRstrip) && i + 1 < fragments.size() && fragments[i + 1].is_text()) {
      TextFragment& next = fragments[i + 1];
      while (next.begin < next.end && is_space(text[next.begin])) ++next.begin;
    }
    if ((attr & kTokenAttrLstrip) && i > 0 && fragments[i - 1].is_text()) {
      TextFragment& previous = fragments[i - 1];
      while (previous.end > previous.begin && is_space(text[previous.end - 1])) --previous.end;
    }
  }
  std::erase_if(fragments, [](const TextFragment& f) { return f.is_text() && f.begin == f.end; });
  return EncodeFragments(text, fragments, add_special);
}

std::vector<int32_t> Tokenizer::EncodeFragments(std::string_view text, const std::vector<TextFragment>& fragments,
                                                bool add_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && vocab_.add_bos()) out.push_back(bos());
  if (vocab_.type() == VocabType::kSpm) {
    // A text fragment at the start or right after a special token gets the space prefix.
    bool previous_special = true;
    std::string escaped;
    for (const TextFragment& f : fragments) {
      if (!f.is_text()) {
        out.push_back(f.token);
        previous_special = true;
        continue;
      }
      escaped.clear();
      if (vocab_.add_space_prefix() && previous_special) escaped.append(kSpmSpace);
      for (const char c : text.substr(f.begin, f.end - f.begin)) {
        if (c == ' ') {
          escaped.append(kSpmSpace);
        } else {
          escaped.push_back(c);
        }
      }
      EncodeSpm(vocab_, escaped, out);
      previous_special = false;
    }
  } else {
    for (const TextFragment& f : fragments) {
      if (f.is_text()) {
        bpe_->Encode(vocab_, text.substr(f.begin, f.end - f.begin), out);
      } else {
        out.push_back(f.token);
      }
    }
  }
  if (add_special && vocab_.add_eos()) out.push_back(eos());
  return out;
}

std::string_view Tokenizer::PieceView(int32_t id, bool render_special) const {
  if (!IsValid(id)) return std::string_view();
  if (!render_special && (vocab_.attr(id) & (kTokenAttrControl | kTokenAttrUnknown))) return std::string_view();
  return vocab_.piece(id);
}

std::string Tokenizer::Detokenize(std::span<const int32_t> ids, bool remove_special, bool render_special) const {
  bool remove_space = vocab_.add_space_prefix();
  if (remove_special && vocab_.add_bos() && !ids.empty() && ids.front() == bos()) {
    remove_space = false;
    ids = ids.subspan(1);
  }
  if (remove_special && vocab_.add_eos() && !ids.empty() && ids.back() == eos()) {
    ids = ids.first(ids.size() - 1);
  }
  std::string out;
  for (const int32_t id : ids) {
    std::string_view piece = PieceView(id, render_special);
    // Only the first token may lose one leading space: the one SPM's space prefix put there.
    if (remove_space && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    remove_space = false;
    out.append(piece);
  }
  if (vocab_.clean_spaces()) CleanSpaces(out);
  return out;
}

}  // namespace airlock::inference

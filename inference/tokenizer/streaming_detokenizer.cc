// Streaming detokenizer: pieces are concatenated as raw bytes and released character by character.
#include "inference/tokenizer/streaming_detokenizer.h"

#include "inference/tokenizer/tokenizer.h"
#include "inference/tokenizer/utf8.h"

namespace airlock::inference {

std::string StreamingDetokenizer::Push(int32_t id) {
  pending_.append(tokenizer_->PieceView(id, render_special_));
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const int n = utf8::ClassifyPrefix(std::string_view(pending_).substr(i));
    if (n == 0) break;  // the start of a character that later bytes may complete
    if (n > 0) {
      out.append(pending_, i, static_cast<size_t>(n));
      i += static_cast<size_t>(n);
    } else {
      utf8::AppendCodePoint(utf8::kReplacementChar, out);
      i += static_cast<size_t>(-n);
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out = utf8::Sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace airlock::inference

// Incremental detokenization for streaming generated text: each Push() returns only complete,
// well-formed UTF-8, so a character split across byte tokens is never emitted half-way.
//
// Thread-safety: one instance per output stream, used by one thread at a time. The Tokenizer must
// outlive it.
#pragma once

#include <cstdint>
#include <string>

namespace airlock::inference {

class Tokenizer;

class StreamingDetokenizer {
 public:
  // render_special: also render control tokens (as their text); by default they produce nothing.
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool render_special = false)
      : tokenizer_(&tokenizer), render_special_(render_special) {}

  // Appends the piece of `id` (llama_token_to_piece) and returns the text that is now complete.
  // Bytes of an unfinished multi-byte character are held back; an ill-formed sequence is replaced
  // by U+FFFD (one per maximal ill-formed subpart, as Python's errors="replace").
  std::string Push(int32_t id);
  // Returns whatever is held back, an unfinished character becoming U+FFFD, and resets.
  std::string Flush();
  // Drops held bytes without returning them.
  void Reset() { pending_.clear(); }
  // Bytes currently held back (at most 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool render_special_;
  std::string pending_;
};

}  // namespace airlock::inference

// Streaming stop-string detection on generated text: passes pieces through as soon as they can no
// longer be the start of a stop string, and cuts the output where a stop string completes.
//
// Thread-safety: not thread-safe. A StopMatcher belongs to one request and is used by one thread
// at a time; distinct matchers share nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace airlock::inference {

class StopMatcher {
 public:
  // Limits on what a request may ask for (stop strings come from clients).
  static constexpr size_t kMaxStopStrings = 16;
  static constexpr size_t kMaxStopBytes = 256;

  // Each stop string must be non-empty, at most kMaxStopBytes bytes and valid UTF-8; at most
  // kMaxStopStrings of them. The error is INVALID_ARGUMENT and names the offending string by
  // index (and content, shortened). An empty list is allowed: then nothing ever stops.
  static absl::StatusOr<StopMatcher> Create(const std::vector<std::string>& stop_strings);

  struct FeedResult {
    // Text that is final and may be sent to the client now. Points into the matcher: valid until
    // the next call on it.
    std::string_view text;
    // A stop string completed: `text` ends just before it; the stop string and everything after
    // it are dropped, and later Feed() calls return nothing.
    bool stopped = false;
    int32_t stop_index = -1;  // which stop string, when stopped
  };

  // Appends a decoded piece of output. Holds back the longest tail that is a proper prefix of some
  // stop string, widened so the text returned never ends inside a UTF-8 character (which also
  // holds back a piece that ends part-way through a character).
  //
  // Semantics, independent of how the text is split into pieces: the output stops at the first
  // byte where any stop string ends; if several end there, the longest wins.
  // Allocation: only while the internal buffer grows to the largest piece seen (plus the
  // held-back tail); after that none.
  FeedResult Feed(std::string_view piece);

  // End of generation: returns the held-back text (empty after a stop). Valid until the next call.
  std::string_view Flush();

  // Starts over for a new stream with the same stop strings.
  void Reset();

  bool stopped() const { return stopped_; }

 private:
  // A stop string with its Knuth-Morris-Pratt failure table, and how much of it the stream's tail
  // currently matches.
  struct Pattern {
    std::string text;
    std::vector<int32_t> failure;  // failure[i]: longest proper border of text[0, i]
    int32_t matched = 0;
  };

  explicit StopMatcher(std::vector<Pattern> patterns);

  std::vector<Pattern> patterns_;
  // Held-back text, followed by the current piece while Feed() runs. The first `emitted_` bytes
  // were returned by the previous call and are dropped at the start of the next one.
  std::string buffer_;
  size_t emitted_ = 0;
  bool stopped_ = false;
  int32_t stop_index_ = -1;
};

}  // namespace airlock::inference

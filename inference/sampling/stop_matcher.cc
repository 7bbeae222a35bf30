// Stop strings matched byte by byte with one Knuth-Morris-Pratt automaton per string, so a match
// spanning any number of pieces is found without rescanning, in O(bytes x stop strings).
#include "inference/sampling/stop_matcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {
namespace {

bool IsContinuationByte(unsigned char byte) { return (byte & 0xC0) == 0x80; }

// Length of the UTF-8 sequence a lead byte starts; 0 for a byte that cannot start one.
int SequenceLength(unsigned char byte) {
  if (byte < 0x80) return 1;
  if (byte >= 0xC2 && byte <= 0xDF) return 2;
  if (byte >= 0xE0 && byte <= 0xEF) return 3;
  if (byte >= 0xF0 && byte <= 0xF4) return 4;
  return 0;
}

// Strict UTF-8 (RFC 3629): no overlong forms, surrogates or code points past U+10FFFF.
bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const int length = SequenceLength(lead);
    if (length == 0 || i + static_cast<size_t>(length) > text.size()) return false;
    for (int k = 1; k < length; ++k) {
      if (!IsContinuationByte(static_cast<unsigned char>(text[i + static_cast<size_t>(k)]))) {
        return false;
      }
    }
    if (length >= 3) {
      const auto second = static_cast<unsigned char>(text[i + 1]);
      if (lead == 0xE0 && second < 0xA0) return false;  // overlong
      if (lead == 0xED && second > 0x9F) return false;  // surrogate
      if (lead == 0xF0 && second < 0x90) return false;  // overlong
      if (lead == 0xF4 && second > 0x8F) return false;  // past U+10FFFF
    }
    i += static_cast<size_t>(length);
  }
  return true;
}

// Moves a cut point back so that text[0, cut) does not end inside a UTF-8 character: if the
// character around the cut started before it and is not complete by it, cut before that
// character. Invalid bytes are left alone (they are the detokenizer's business, not ours).
size_t BackUpToCharacterStart(std::string_view text, size_t cut) {
  // A character is at most 4 bytes, so its lead byte is among the 4 bytes before the cut.
  size_t lead = cut;
  while (lead > 0 && cut - lead < 4) {
    --lead;
    const auto byte = static_cast<unsigned char>(text[lead]);
    if (IsContinuationByte(byte)) continue;
    const int length = SequenceLength(byte);
    return length > 1 && lead + static_cast<size_t>(length) > cut ? lead : cut;
  }
  return cut;
}

std::string Shorten(std::string_view text) {
  constexpr size_t kShown = 32;
  if (text.size() <= kShown) return std::string(text);
  return absl::StrCat(ToAbsl(text.substr(0, kShown)), "...");
}

}  // namespace

absl::StatusOr<StopMatcher> StopMatcher::Create(const std::vector<std::string>& stop_strings) {
  if (stop_strings.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "at most ", kMaxStopStrings, " stop strings are allowed, got ", stop_strings.size()));
  }
  std::vector<Pattern> patterns;
  patterns.reserve(stop_strings.size());
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    const std::string& text = stop_strings[i];
    if (text.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop string ", i, " is empty"));
    }
    if (text.size() > kMaxStopBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop string ", i, " (\"", Shorten(text), "\") is ", text.size(),
                       " bytes, more than the limit of ", kMaxStopBytes));
    }
    if (!IsValidUtf8(text)) {
      return absl::InvalidArgumentError(absl::StrCat("stop string ", i, " is not valid UTF-8"));
    }
    Pattern pattern;
    pattern.text = text;
    pattern.failure.assign(text.size(), 0);
    int32_t border = 0;
    for (size_t k = 1; k < text.size(); ++k) {
      while (border > 0 && text[k] != text[static_cast<size_t>(border)]) {
        border = pattern.failure[static_cast<size_t>(border - 1)];
      }
      if (text[k] == text[static_cast<size_t>(border)]) ++border;
      pattern.failure[k] = border;
    }
    patterns.push_back(std::move(pattern));
  }
  return StopMatcher(std::move(patterns));
}

StopMatcher::StopMatcher(std::vector<Pattern> patterns) : patterns_(std::move(patterns)) {
  // The held-back tail is below the longest stop string plus one character; reserve for it and
  // for typical pieces so that steady-state Feed() calls do not allocate.
  buffer_.reserve(kMaxStopBytes + 256);
}

StopMatcher::FeedResult StopMatcher::Feed(std::string_view piece) {
  if (stopped_) return {std::string_view(), true, stop_index_};
  buffer_.erase(0, emitted_);
  emitted_ = 0;
  const size_t old_size = buffer_.size();
  buffer_.append(piece.data(), piece.size());

  for (size_t at = old_size; at < buffer_.size(); ++at) {
    const char byte = buffer_[at];
    int32_t best = -1;  // the longest pattern completed by this byte
    for (size_t p = 0; p < patterns_.size(); ++p) {
      Pattern& pattern = patterns_[p];
      int32_t matched = pattern.matched;
      while (matched > 0 && pattern.text[static_cast<size_t>(matched)] != byte) {
        matched = pattern.failure[static_cast<size_t>(matched - 1)];
      }
      if (pattern.text[static_cast<size_t>(matched)] == byte) ++matched;
      if (static_cast<size_t>(matched) == pattern.text.size()) {
        if (best < 0 || pattern.text.size() > patterns_[static_cast<size_t>(best)].text.size()) {
          best = static_cast<int32_t>(p);
        }
        matched = pattern.failure[static_cast<size_t>(matched - 1)];
      }
      pattern.matched = matched;
    }
    if (best >= 0) {
      stopped_ = true;
      stop_index_ = best;
      // Every byte of the match is still held back (the tail held is at least as long as any
      // pattern's partial match), so its start lies inside the buffer.
      const size_t start = at + 1 - patterns_[static_cast<size_t>(best)].text.size();
      buffer_.resize(start);
      emitted_ = start;
      return {std::string_view(buffer_), true, best};
    }
  }

  size_t held = 0;
  for (const Pattern& pattern : patterns_)
    held = std::max(held, static_cast<size_t>(pattern.matched));
  const size_t cut = BackUpToCharacterStart(buffer_, buffer_.size() - held);
  emitted_ = cut;
  return {std::string_view(buffer_).substr(0, cut), false, -1};
}

std::string_view StopMatcher::Flush() {
  if (stopped_) return std::string_view();
  buffer_.erase(0, emitted_);
  emitted_ = buffer_.size();
  for (Pattern& pattern : patterns_) pattern.matched = 0;
  return std::string_view(buffer_);
}

void StopMatcher::Reset() {
  buffer_.clear();
  emitted_ = 0;
  stopped_ = false;
  stop_index_ = -1;
  for (Pattern& pattern : patterns_) pattern.matched = 0;
}

}  // namespace airlock::inference

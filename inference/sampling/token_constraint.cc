// Token masks: the sorted-vocabulary walk (one matcher step per byte not shared with the previous
// token, refused prefixes skipped whole), the LRU cache of masks per matcher state, and the
// per-sequence constraint.
#include "inference/sampling/token_constraint.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {

// ---------------------------------------------------------------------------------------------
// TokenVocabulary

absl::StatusOr<std::shared_ptr<const TokenVocabulary>> TokenVocabulary::Create(
    std::vector<std::string> token_bytes, std::span<const int32_t> end_of_generation,
    std::span<const int32_t> never_produce) {
  if (token_bytes.empty() || token_bytes.size() > static_cast<size_t>(kMaxVocabSize)) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary of ", token_bytes.size(),
                                                   " tokens: must be 1 to ", kMaxVocabSize));
  }
  const auto n = static_cast<int32_t>(token_bytes.size());
  std::shared_ptr<TokenVocabulary> v(new TokenVocabulary());
  v->kind_.assign(token_bytes.size(), kText);
  for (const int32_t id : never_produce) {
    if (id < 0 || id >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("never-produced token id ", id, " outside the vocabulary of ", n));
    }
    v->kind_[static_cast<size_t>(id)] = kNever;
  }
  for (const int32_t id : end_of_generation) {
    if (id < 0 || id >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("end-of-generation token id ", id, " outside the vocabulary of ", n));
    }
    if (v->kind_[static_cast<size_t>(id)] != kEog) {
      v->kind_[static_cast<size_t>(id)] = kEog;
      v->eog_.push_back(id);
    }
  }
  std::sort(v->eog_.begin(), v->eog_.end());
  for (int32_t id = 0; id < n; ++id) {
    if (v->kind_[static_cast<size_t>(id)] == kText &&
        token_bytes[static_cast<size_t>(id)].empty()) {
      v->kind_[static_cast<size_t>(id)] = kNever;
    }
    if (v->kind_[static_cast<size_t>(id)] == kText) v->sorted_ids_.push_back(id);
  }
  std::sort(v->sorted_ids_.begin(), v->sorted_ids_.end(), [&](int32_t a, int32_t b) {
    const std::string& x = token_bytes[static_cast<size_t>(a)];
    const std::string& y = token_bytes[static_cast<size_t>(b)];
    return x != y ? x < y : a < b;
  });
  v->position_.assign(token_bytes.size(), -1);
  v->offsets_.reserve(v->sorted_ids_.size() + 1);
  v->lcp_.reserve(v->sorted_ids_.size());
  const std::string* previous = nullptr;
  for (size_t i = 0; i < v->sorted_ids_.size(); ++i) {
    const int32_t id = v->sorted_ids_[i];
    const std::string& bytes = token_bytes[static_cast<size_t>(id)];
    v->position_[static_cast<size_t>(id)] = static_cast<int32_t>(i);
    v->offsets_.push_back(static_cast<uint32_t>(v->sorted_bytes_.size()));
    v->sorted_bytes_ += bytes;
    if (v->sorted_bytes_.size() > UINT32_MAX / 2) {
      return absl::InvalidArgumentError("vocabulary bytes exceed 2 GiB");
    }
    uint32_t lcp = 0;
    if (previous != nullptr) {
      const size_t limit = std::min(previous->size(), bytes.size());
      while (lcp < limit && (*previous)[lcp] == bytes[lcp]) ++lcp;
    }
    v->lcp_.push_back(lcp);
    v->max_token_bytes_ = std::max(v->max_token_bytes_, static_cast<int32_t>(bytes.size()));
    previous = &bytes;
  }
  v->offsets_.push_back(static_cast<uint32_t>(v->sorted_bytes_.size()));
  return std::shared_ptr<const TokenVocabulary>(std::move(v));
}

std::string_view TokenVocabulary::bytes(int32_t id) const {
  const int32_t at = position_[static_cast<size_t>(id)];
  if (at < 0) return {};
  const uint32_t begin = offsets_[static_cast<size_t>(at)];
  return std::string_view(sorted_bytes_)
      .substr(begin, offsets_[static_cast<size_t>(at) + 1] - begin);
}

// ---------------------------------------------------------------------------------------------
// TokenMaskCache

TokenMaskCache::TokenMaskCache(std::shared_ptr<const Grammar> grammar,
                               std::shared_ptr<const TokenVocabulary> vocabulary,
                               TokenMaskCacheOptions options)
    : grammar_(std::move(grammar)), vocabulary_(std::move(vocabulary)), options_(options) {
  AIRLOCK_CHECK(grammar_ != nullptr && vocabulary_ != nullptr);
}

void TokenMaskCache::Compute(const MatcherState& state, MaskWalker* walker, TokenMask* mask) const {
  const TokenVocabulary& v = *vocabulary_;
  const Grammar& g = *grammar_;
  mask->words.assign((static_cast<size_t>(v.n_vocab()) + 63) / 64, 0);
  uint64_t* words = mask->words.data();
  auto allow = [words](int32_t id) {
    words[static_cast<size_t>(id) >> 6] |= uint64_t{1} << (static_cast<uint32_t>(id) & 63);
  };
  if (state.complete) {
    for (const int32_t id : v.eog_) allow(id);
  }
  if (!state.CanContinue()) return;

  std::vector<MatcherState>& states = walker->states_;
  const size_t depths = static_cast<size_t>(v.max_token_bytes_) + 1;
  if (states.size() < depths) {
    states.resize(depths);
    walker->light_.resize(depths);
    walker->top_.resize(depths);
    walker->anchor_.resize(depths);
  }
  char* light = walker->light_.data();
  int32_t* top = walker->top_.data();
  int32_t* anchor = walker->anchor_.data();
  states[0] = state;
  light[0] = 0;
  const size_t n = v.sorted_ids_.size();
  const char* all_bytes = v.sorted_bytes_.data();
  // Depths 0 .. valid hold the matcher after the first bytes of the previous token.
  uint32_t valid = 0;
  size_t i = 0;
  while (i < n) {
    const uint32_t begin = v.offsets_[i];
    const uint32_t length = v.offsets_[i + 1] - begin;
    const auto* bytes = reinterpret_cast<const uint8_t*>(all_bytes + begin);
    uint32_t d = std::min(v.lcp_[i], valid);
    bool accepted = true;
    for (; d < length; ++d) {
      // One thread: follow its top while it moves between plain states (no state is built).
      const std::vector<int32_t>& threads = states[d].threads;
      const bool single =
          light[d] || (!threads.empty() && threads.size() == static_cast<size_t>(threads[0]) + 1);
      if (single) {
        const int32_t from_top = light[d] ? top[d] : states[d].threads.back();
        const int32_t target = g.ByteTarget(from_top, bytes[d]);
        if (target < 0) {
          accepted = false;
          break;
        }
        if (g.IsPlain(target)) {
          light[d + 1] = 1;
          top[d + 1] = target;
          anchor[d + 1] = light[d] ? anchor[d] : static_cast<int32_t>(d);
          continue;
        }
        if (light[d]) {  // build the state of depth d, then step it in full
          states[d] = states[static_cast<size_t>(anchor[d])];
          states[d].threads.back() = top[d];
          states[d].complete = false;  // a plain state is not final
          light[d] = 0;
        }
      }
      light[d + 1] = 0;
      if (!g.Step(states[d], bytes[d], &states[d + 1], &walker->scratch_)) {
        accepted = false;
        break;
      }
    }
    if (accepted) {
      allow(v.sorted_ids_[i]);
      valid = length;
      ++i;
      continue;
    }
    // Byte d is refused after bytes[0, d): so is every following token starting with bytes[0, d].
    valid = d;
    ++i;
    while (i < n && v.lcp_[i] > d) ++i;
  }
}

std::shared_ptr<const TokenMask> TokenMaskCache::Get(const MatcherState& state,
                                                     MaskWalker* walker) {
  if (options_.max_bytes > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(state);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++stats_.hits;
      return it->second->mask;
    }
    ++stats_.misses;
  } else {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.misses;
  }
  auto mask = std::make_shared<TokenMask>();
  Compute(state, walker, mask.get());
  if (options_.max_bytes == 0) return mask;

  // Key and mask, plus the list node and the index entry.
  const size_t bytes =
      mask->words.size() * sizeof(uint64_t) + 2 * state.threads.size() * sizeof(int32_t) + 160;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(state);
  if (it != index_.end()) return it->second->mask;  // another thread got there first
  lru_.push_front(Entry{state, mask, bytes});
  index_.emplace(state, lru_.begin());
  bytes_ += bytes;
  while (bytes_ > options_.max_bytes && lru_.size() > 1) {
    const Entry& victim = lru_.back();
    bytes_ -= victim.bytes;
    index_.erase(victim.state);
    lru_.pop_back();
    ++stats_.evictions;
  }
  return mask;
}

TokenMaskCache::Stats TokenMaskCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Stats s = stats_;
  s.entries = static_cast<int64_t>(lru_.size());
  s.bytes = bytes_;
  return s;
}

// ---------------------------------------------------------------------------------------------
// TokenConstraint

TokenConstraint::TokenConstraint(std::shared_ptr<TokenMaskCache> masks)
    : masks_(std::move(masks)), state_(masks_->grammar().initial_state()) {}

void TokenConstraint::Reset() {
  state_ = masks_->grammar().initial_state();
  finished_ = false;
}

void TokenConstraint::Apply(float* logits, int32_t n_vocab) {
  const TokenVocabulary& v = masks_->vocabulary();
  const int32_t covered = std::min(n_vocab, v.n_vocab());
  constexpr float kBanned = -INFINITY;
  if (finished_) {  // only end-of-generation tokens stay
    for (int32_t id = 0; id < n_vocab; ++id) {
      if (id >= covered || !v.IsEndOfGeneration(id)) logits[id] = kBanned;
    }
    return;
  }
  const std::shared_ptr<const TokenMask> mask = masks_->Get(state_, &walker_);
  const uint64_t* words = mask->words.data();
  const int32_t full_words = covered / 64;
  for (int32_t w = 0; w < full_words; ++w) {
    const uint64_t word = words[w];
    if (word == ~uint64_t{0}) continue;
    float* row = logits + static_cast<ptrdiff_t>(w) * 64;
    if (word == 0) {
      std::fill(row, row + 64, kBanned);
      continue;
    }
    uint64_t refused = ~word;
    while (refused != 0) {
      row[std::countr_zero(refused)] = kBanned;
      refused &= refused - 1;
    }
  }
  for (int32_t id = full_words * 64; id < covered; ++id) {
    if (!mask->Allows(id)) logits[id] = kBanned;
  }
  for (int32_t id = std::max(covered, 0); id < n_vocab; ++id) logits[id] = kBanned;
}

bool TokenConstraint::StepToken(int32_t token) {
  const Grammar& g = masks_->grammar();
  const std::string_view bytes = masks_->vocabulary().bytes(token);
  const MatcherState* from = &state_;
  MatcherState* to = &next_;
  for (const char c : bytes) {
    if (!g.Step(*from, static_cast<uint8_t>(c), to, &walker_.scratch_)) return false;
    // Alternate between next_ and spare_ so the input of a step is never its output.
    from = to;
    to = to == &next_ ? &spare_ : &next_;
  }
  if (from != &next_) std::swap(next_, spare_);
  return true;
}

bool TokenConstraint::Allows(int32_t token) {
  const TokenVocabulary& v = masks_->vocabulary();
  if (token < 0 || token >= v.n_vocab()) return false;
  if (finished_ || v.IsNeverProduced(token)) return false;
  if (v.IsEndOfGeneration(token)) return state_.complete;
  return StepToken(token);
}

absl::Status TokenConstraint::Accept(int32_t token) {
  const TokenVocabulary& v = masks_->vocabulary();
  if (token < 0 || token >= v.n_vocab()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token ", token, " outside the vocabulary of ", v.n_vocab()));
  }
  if (finished_) {
    return absl::InvalidArgumentError(
        absl::StrCat("token ", token, " after the end of generation was accepted"));
  }
  if (v.IsEndOfGeneration(token)) {
    if (!state_.complete) {
      return absl::InvalidArgumentError(absl::StrCat("end-of-generation token ", token,
                                                     " before the output is a complete instance"));
    }
    finished_ = true;
    return absl::OkStatus();
  }
  if (v.IsNeverProduced(token)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token ", token, " is never allowed under a grammar (control, special or empty)"));
  }
  if (!StepToken(token)) {
    const std::string_view bytes = v.bytes(token);
    return absl::InvalidArgumentError(absl::StrCat("token ", token, " (\"",
                                                   absl::CHexEscape(ToAbsl(bytes)),
                                                   "\") is refused by the grammar here"));
  }
  std::swap(state_, next_);
  return absl::OkStatus();
}

}  // namespace airlock::inference

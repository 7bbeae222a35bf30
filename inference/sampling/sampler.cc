// The sampling chain. Semantics follow llama.cpp's src/llama-sampling.cpp (penalties, top-k, top-p,
// min-p, temperature, dist) in its default order; the algorithms are our own, chosen so that a
// 150k-token row costs one pass over the logits when top-k is on.
#include "inference/sampling/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"
#include "inference/sampling/softmax_exp.h"

namespace airlock::inference {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kLowest = std::numeric_limits<float>::lowest();

// top_k up to this is served by a heap during one pass over the row; larger k copy and select.
constexpr int32_t kMaxHeapTopK = 1024;
// The row scan tests this many logits against the heap's threshold at once (vectorised) and looks
// at them one by one only when one of them could enter the heap.
constexpr int32_t kScanBlock = 16;
// Weights are summed per block so the draw can skip whole blocks.
constexpr int32_t kWeightBlock = 64;
// Unsorted top-p sorts this many leading candidates first, then four times more each round.
constexpr int32_t kTopPFirstChunk = 256;

// The one total order used everywhere: higher logit first, ties to the lower token id. Because it
// is total, every selection and sort below yields the same sequence with any standard library,
// which keeps seeded draws reproducible across platforms.
constexpr auto kRanksBefore = [](const auto& a, const auto& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.token < b.token);
};

}  // namespace

absl::StatusOr<Sampler> Sampler::Create(const SamplingParams& params, int32_t n_vocab,
                                        int32_t context_size) {
  AIRLOCK_RETURN_IF_ERROR(ValidateSamplingParams(params));
  if (n_vocab < 1 || n_vocab > kMaxVocabSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_vocab must be in [1, ", kMaxVocabSize, "], got ", n_vocab));
  }
  if (context_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_size must be >= 1, got ", context_size));
  }
  const bool penalties_active = params.repeat_last_n != 0 && (params.repeat_penalty != 1.0f ||
                                                              params.frequency_penalty != 0.0f ||
                                                              params.presence_penalty != 0.0f);
  int32_t window = 0;
  if (penalties_active) {
    window =
        params.repeat_last_n == -1 ? context_size : std::min(params.repeat_last_n, context_size);
  }
  return Sampler(params, n_vocab, window);
}

Sampler::Sampler(const SamplingParams& params, int32_t n_vocab, int32_t window_capacity)
    : params_(params), n_vocab_(n_vocab), greedy_(params.temperature == 0.0f), rng_(params.seed) {
  if (greedy_) {
    heap_k_ = 1;  // the argmax is the top-1; top-p and min-p can never remove it
  } else if (params.top_k > 0 && params.top_k < n_vocab && params.top_k <= kMaxHeapTopK) {
    heap_k_ = params.top_k;
  }
  const int32_t capacity = heap_k_ > 0 ? heap_k_ : n_vocab;
  candidates_.resize(static_cast<size_t>(capacity));
  weights_.resize(static_cast<size_t>(capacity));
  block_sums_.resize(static_cast<size_t>((capacity + kWeightBlock - 1) / kWeightBlock));
  window_.resize(static_cast<size_t>(window_capacity));
  if (window_capacity > 0) counts_.assign(static_cast<size_t>(n_vocab), 0);
}

int32_t Sampler::Sample(const float* logits, int32_t n_vocab) {
  const Survivors survivors = Filter(logits, n_vocab);
  if (survivors.size == 0) return kNoToken;
  if (greedy_) return candidates_[0].token;
  const double total = ComputeWeights(survivors);
  return Draw(survivors.size, total);
}

int32_t Sampler::Distribution(const float* logits, int32_t n_vocab,
                              std::span<TokenProbability> out) {
  const Survivors survivors = Filter(logits, n_vocab);
  if (survivors.size == 0 || out.empty()) return 0;
  if (greedy_) {
    out[0] = {candidates_[0].token, 1.0f};
    return 1;
  }
  const double total = ComputeWeights(survivors);
  const int32_t written =
      static_cast<int32_t>(std::min<size_t>(static_cast<size_t>(survivors.size), out.size()));
  Candidate* c = candidates_.data();
  // Rank by weight (ties by id, where exp() made distinct logits equal), reusing the logit slot.
  for (int32_t i = 0; i < survivors.size; ++i) c[i].logit = weights_[static_cast<size_t>(i)];
  std::partial_sort(c, c + written, c + survivors.size, kRanksBefore);
  for (int32_t i = 0; i < written; ++i) {
    out[static_cast<size_t>(i)] = {c[i].token, static_cast<float>(c[i].logit / total)};
  }
  return written;
}

void Sampler::Accept(int32_t token) {
  AIRLOCK_CHECK(token >= 0 && token < n_vocab_);
  const int32_t capacity = static_cast<int32_t>(window_.size());
  if (capacity == 0) return;
  if (window_used_ == capacity) {
    --counts_[static_cast<size_t>(window_[static_cast<size_t>(window_next_)])];
  } else {
    ++window_used_;
  }
  window_[static_cast<size_t>(window_next_)] = token;
  ++counts_[static_cast<size_t>(token)];
  window_next_ = window_next_ + 1 == capacity ? 0 : window_next_ + 1;
}

absl::Status Sampler::AcceptPrompt(std::span<const int32_t> tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token ", i, " is ", tokens[i], ", outside the vocabulary [0, ", n_vocab_, ")"));
    }
  }
  // Only the last window_.size() tokens can matter.
  const size_t keep = std::min(tokens.size(), window_.size());
  for (size_t i = tokens.size() - keep; i < tokens.size(); ++i) Accept(tokens[i]);
  return absl::OkStatus();
}

void Sampler::Reset() {
  for (int32_t slot = 0; slot < window_used_; ++slot) {
    counts_[static_cast<size_t>(window_[static_cast<size_t>(slot)])] = 0;
  }
  window_used_ = 0;
  window_next_ = 0;
  rng_.Seed(params_.seed);
}

Sampler::Survivors Sampler::Filter(const float* logits, int32_t n_vocab) {
  AIRLOCK_CHECK(logits != nullptr);
  AIRLOCK_CHECK(n_vocab == n_vocab_);
  Survivors survivors;
  bool saw_pos_inf = false;
  if (heap_k_ > 0) {
    survivors = SelectTopK(logits, heap_k_);
    saw_pos_inf = survivors.size > 0 && candidates_[0].logit == kInf;
  } else {
    survivors = GatherAll(logits, &saw_pos_inf);
    const int32_t k = params_.top_k;
    if (k > 0 && k < survivors.size) {  // a k too large for the heap
      Candidate* c = candidates_.data();
      std::nth_element(c, c + k, c + survivors.size, kRanksBefore);
      std::sort(c, c + k, kRanksBefore);
      survivors = {k, true};
    }
  }
  if (survivors.size == 0) return survivors;
  if (saw_pos_inf) survivors = KeepPositiveInfinities(survivors);
  survivors.max_logit = survivors.sorted ? candidates_[0].logit : MaxLogit(survivors.size);
  if (greedy_) return survivors;
  if (params_.top_p < 1.0f) survivors = TopP(survivors);
  if (params_.min_p > 0.0f) survivors = MinP(survivors);
  return survivors;
}

Sampler::Survivors Sampler::SelectTopK(const float* logits, int32_t k) {
  // candidates_[0, size) is a heap whose front ranks last: the entry a better one replaces.
  Candidate* heap = candidates_.data();
  int32_t size = 0;
  float threshold = -kInf;  // the front's logit once the heap is full
  auto offer = [&](const Candidate& candidate) {
    if (size < k) {
      heap[size++] = candidate;
      std::push_heap(heap, heap + size, kRanksBefore);
      if (size == k) threshold = heap[0].logit;
      return;
    }
    if (!kRanksBefore(candidate, heap[0])) return;
    std::pop_heap(heap, heap + k, kRanksBefore);
    heap[k - 1] = candidate;
    std::push_heap(heap, heap + k, kRanksBefore);
    threshold = heap[0].logit;
  };

  // Penalised tokens enter with their penalised logits first; the scan then skips them.
  const bool penalised = window_used_ > 0;
  if (penalised) {
    ForEachDistinctWindowToken([&](int32_t token, int32_t count) {
      const float logit = logits[token];
      if (logit > -kInf) offer({Penalise(logit, count), token});  // NaN and -inf stay out
    });
  }
  const int32_t* counts = penalised ? counts_.data() : nullptr;
  auto consider = [&](int32_t token) {
    const float logit = logits[token];
    // `>=` lets an equal logit with a lower id in (a penalised entry may have a higher id); the
    // comparison is false for NaN, and -inf only passes while the heap is not full.
    if (!(logit >= threshold) || logit == -kInf) return;
    if (counts != nullptr && counts[token] > 0) return;
    offer({logit, token});
  };
  int32_t token = 0;
  for (; token + kScanBlock <= n_vocab_; token += kScanBlock) {
    const float bar = threshold;  // a local copy lets the check vectorise
    int any = 0;
    // Fully unrolled this loop stays scalar; kept as a loop it becomes a few SIMD compares.
#pragma GCC unroll 1
    for (int32_t j = 0; j < kScanBlock; ++j) any |= logits[token + j] >= bar;
    if (any == 0) continue;
    for (int32_t j = 0; j < kScanBlock; ++j) consider(token + j);
  }
  for (; token < n_vocab_; ++token) consider(token);

  std::sort(heap, heap + size, kRanksBefore);
  return {size, true};
}

Sampler::Survivors Sampler::GatherAll(const float* logits, bool* saw_pos_inf) {
  Candidate* c = candidates_.data();
  const int32_t n = n_vocab_;  // a local: stores through `c` could alias the member
  // Almost every row is all finite: check that with a vectorisable count, then copy straight.
  int32_t finite = 0;
  for (int32_t i = 0; i < n; ++i) finite += (logits[i] - logits[i]) == 0.0f;
  int32_t size = 0;
  if (finite == n) {
    if constexpr (std::endian::native == std::endian::little) {
      // Built as one 64-bit word per candidate, which GCC vectorises (a struct store it won't).
      static_assert(sizeof(Candidate) == 8 && offsetof(Candidate, token) == 4);
      for (int32_t i = 0; i < n; ++i) {
        const uint64_t packed =
            uint64_t{std::bit_cast<uint32_t>(logits[i])} | uint64_t{static_cast<uint32_t>(i)} << 32;
        std::memcpy(c + i, &packed, sizeof(packed));
      }
    } else {
      for (int32_t i = 0; i < n; ++i) c[i] = {logits[i], i};
    }
    size = n;
  } else {
    for (int32_t i = 0; i < n; ++i) {
      const float logit = logits[i];
      if (!(logit > -kInf)) continue;  // NaN or -inf
      if (logit == kInf) *saw_pos_inf = true;
      c[size++] = {logit, i};
    }
  }
  if (window_used_ > 0) ApplyPenaltiesToGathered(size, saw_pos_inf);
  return {size, false};
}

void Sampler::ApplyPenaltiesToGathered(int32_t size, bool* saw_pos_inf) {
  Candidate* c = candidates_.data();
  const bool dense = size == n_vocab_;  // then candidate i is token i
  ForEachDistinctWindowToken([&](int32_t token, int32_t count) {
    Candidate* candidate = nullptr;
    if (dense) {
      candidate = c + token;
    } else {
      candidate = std::lower_bound(c, c + size, token,
                                   [](const Candidate& a, int32_t t) { return a.token < t; });
      if (candidate == c + size || candidate->token != token) return;  // NaN or -inf: skipped
    }
    candidate->logit = Penalise(candidate->logit, count);
    if (candidate->logit == kInf) *saw_pos_inf = true;
  });
}

Sampler::Survivors Sampler::KeepPositiveInfinities(Survivors survivors) {
  // +inf outranks everything else: the +inf tokens share all the mass equally.
  Candidate* c = candidates_.data();
  int32_t kept = 0;
  for (int32_t i = 0; i < survivors.size; ++i) {
    if (c[i].logit == kInf) c[kept++] = {0.0f, c[i].token};
  }
  return {kept, survivors.sorted, 0.0f};  // order kept (ids ascend within equal logits)
}

Sampler::Survivors Sampler::TopP(Survivors survivors) {
  Candidate* c = candidates_.data();
  int32_t size = survivors.size;
  const float max_logit = survivors.max_logit;
  // The normaliser over the current set, at temperature 1 as in llama.cpp (temperature comes last).
  const double target = static_cast<double>(params_.top_p) * SoftmaxMass(size, max_logit);

  if (!survivors.sorted) {
    if (params_.min_p <= 0.0f) {
      return {TopPProgressive(size, max_logit, target), true, max_logit};
    }
    // Both filters keep a prefix of the sorted order and min-p's threshold depends only on the
    // maximum, which top-p keeps; so cutting at min-p's threshold now (after taking top-p's
    // normaliser over the full set) changes nothing but the number of entries to sort.
    const float min_logit = max_logit + std::log(params_.min_p);
    int32_t kept = 0;
    for (int32_t i = 0; i < size; ++i) {
      if (c[i].logit >= min_logit) c[kept++] = c[i];
    }
    size = kept;
    std::sort(c, c + size, kRanksBefore);
  }
  double cumulative = 0.0;
  for (int32_t i = 0; i < size; ++i) {
    cumulative += SoftmaxExp(c[i].logit - max_logit);
    if (cumulative >= target) return {i + 1, true, max_logit};
  }
  return {size, true, max_logit};
}

int32_t Sampler::TopPProgressive(int32_t size, float max_logit, double target) {
  // Sorts only as much of the head as the cut needs: a chunk, then four times more, and so on.
  Candidate* c = candidates_.data();
  double cumulative = 0.0;
  int32_t done = 0;
  int32_t chunk = kTopPFirstChunk;
  while (done < size) {
    const int32_t end = size - done > chunk ? done + chunk : size;
    if (end < size) std::nth_element(c + done, c + end, c + size, kRanksBefore);
    std::sort(c + done, c + end, kRanksBefore);
    for (int32_t i = done; i < end; ++i) {
      cumulative += SoftmaxExp(c[i].logit - max_logit);
      if (cumulative >= target) return i + 1;
    }
    done = end;
    chunk = chunk > size / 4 ? size : chunk * 4;
  }
  return size;
}

Sampler::Survivors Sampler::MinP(Survivors survivors) {
  Candidate* c = candidates_.data();
  const float max_logit = survivors.max_logit;
  // p_i >= min_p * p_max  <=>  logit_i >= max_logit + log(min_p), as llama.cpp computes it.
  const float min_logit = max_logit + std::log(params_.min_p);
  if (survivors.sorted) {
    int32_t kept = 1;  // the maximum always stays
    while (kept < survivors.size && c[kept].logit >= min_logit) ++kept;
    return {kept, true, max_logit};
  }
  int32_t kept = 0;
  for (int32_t i = 0; i < survivors.size; ++i) {
    if (c[i].logit >= min_logit) c[kept++] = c[i];
  }
  return {kept, false, max_logit};
}

float Sampler::MaxLogit(int32_t size) const {
  // Maximum over the bit patterns mapped to integers of the same order (valid: no NaN here); a
  // float max reduction does not vectorise without -ffast-math, this does.
  const Candidate* c = candidates_.data();
  int32_t best = std::numeric_limits<int32_t>::min();
  for (int32_t i = 0; i < size; ++i) {
    const int32_t bits = std::bit_cast<int32_t>(c[i].logit);
    const int32_t key = bits ^ ((bits >> 31) & 0x7fffffff);
    best = key > best ? key : best;
  }
  return std::bit_cast<float>(best ^ ((best >> 31) & 0x7fffffff));
}

double Sampler::SoftmaxMass(int32_t size, float max_logit) const {
  const Candidate* c = candidates_.data();
  // Four fixed chains: vectorises, and the order of additions is the same on every machine.
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int32_t i = 0;
  for (; i + 4 <= size; i += 4) {
    s0 += SoftmaxExp(c[i].logit - max_logit);
    s1 += SoftmaxExp(c[i + 1].logit - max_logit);
    s2 += SoftmaxExp(c[i + 2].logit - max_logit);
    s3 += SoftmaxExp(c[i + 3].logit - max_logit);
  }
  for (; i < size; ++i) s0 += SoftmaxExp(c[i].logit - max_logit);
  return (s0 + s1) + (s2 + s3);
}

double Sampler::ComputeWeights(Survivors survivors) {
  const Candidate* c = candidates_.data();
  float* weights = weights_.data();
  const int32_t size = survivors.size;
  const float max_logit = survivors.max_logit;
  // (logit - max) / T rather than logit / T - max / T: no overflow for huge logits or tiny T, and
  // the maximum gets exactly exp(0) = 1, so the total is >= 1.
  const float temperature = params_.temperature;
  for (int32_t i = 0; i < size; ++i)
    weights[i] = SoftmaxExp((c[i].logit - max_logit) / temperature);
  // Fixed-shape partial sums: four chains per block (vectorised), combined in a fixed order so
  // the total is the same on every machine.
  double total = 0.0;
  for (int32_t block = 0; block * kWeightBlock < size; ++block) {
    const int32_t begin = block * kWeightBlock;
    const int32_t end = std::min(size, begin + kWeightBlock);
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int32_t i = begin;
    for (; i + 4 <= end; i += 4) {
      s0 += weights[i];
      s1 += weights[i + 1];
      s2 += weights[i + 2];
      s3 += weights[i + 3];
    }
    for (; i < end; ++i) s0 += weights[i];
    block_sums_[static_cast<size_t>(block)] = (s0 + s1) + (s2 + s3);
    total += block_sums_[static_cast<size_t>(block)];
  }
  return total;
}

int32_t Sampler::Draw(int32_t size, double total) {
  const Candidate* c = candidates_.data();
  const float* weights = weights_.data();
  // Inverse CDF: the first token whose running weight passes u * total. A zero weight can never
  // be the one that passes, so flushed-to-zero tokens are never drawn.
  const double target = rng_.NextDouble() * total;
  double cumulative = 0.0;
  for (int32_t block = 0; block * kWeightBlock < size; ++block) {
    const double block_sum = block_sums_[static_cast<size_t>(block)];
    if (cumulative + block_sum <= target) {
      cumulative += block_sum;
      continue;
    }
    const int32_t end = std::min(size, (block + 1) * kWeightBlock);
    for (int32_t i = block * kWeightBlock; i < end; ++i) {
      cumulative += weights[i];
      if (cumulative > target) return c[i].token;
    }
    // Summed in another order the block fell a rounding error short: go on to the next one.
  }
  // Rounding left the target above every running sum: take the last token that has weight.
  for (int32_t i = size - 1; i > 0; --i) {
    if (weights[i] > 0.0f) return c[i].token;
  }
  return c[0].token;
}

float Sampler::Penalise(float logit, int32_t count) const {
  // llama.cpp's formulas. Dividing a negative logit would raise it, hence the multiplication.
  float penalised = logit <= 0.0f ? logit * params_.repeat_penalty : logit / params_.repeat_penalty;
  penalised -= static_cast<float>(count) * params_.frequency_penalty + params_.presence_penalty;
  // A penalty may push a huge logit to -inf; keep it finite so that it is not mistaken for a ban.
  return std::max(penalised, kLowest);
}

template <typename Visit>
void Sampler::ForEachDistinctWindowToken(Visit visit) {
  // Counts are negated once visited so that repeats in the window are skipped with no extra
  // memory; the second loop restores them.
  for (int32_t slot = 0; slot < window_used_; ++slot) {
    const int32_t token = window_[static_cast<size_t>(slot)];
    const int32_t count = counts_[static_cast<size_t>(token)];
    if (count <= 0) continue;
    visit(token, count);
    counts_[static_cast<size_t>(token)] = -count;
  }
  for (int32_t slot = 0; slot < window_used_; ++slot) {
    int32_t& count = counts_[static_cast<size_t>(window_[static_cast<size_t>(slot)])];
    if (count < 0) count = -count;
  }
}

}  // namespace airlock::inference

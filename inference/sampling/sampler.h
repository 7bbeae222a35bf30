// Picks the next token from a row of logits: llama.cpp's default chain (penalties -> top-k ->
// top-p -> min-p -> temperature -> seeded draw), plus the recent-token history the penalties need.
//
// Thread-safety: not thread-safe. A Sampler belongs to one request and is used by one thread at a
// time (the thread decoding that request). Distinct Samplers share nothing.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/sampling/sampling_params.h"
#include "inference/sampling/sampling_rng.h"

namespace airlock::inference {

// One entry of the distribution a Sampler draws from.
struct TokenProbability {
  int32_t token = 0;
  float probability = 0.0f;
};

class Sampler {
 public:
  // Returned by Sample() when the row has no usable logit (every one NaN or -inf).
  static constexpr int32_t kNoToken = -1;
  // Largest vocabulary Create() accepts (the biggest real ones are ~256k).
  static constexpr int32_t kMaxVocabSize = 1 << 24;

  // Validates `params` (INVALID_ARGUMENT naming the field) and sizes every buffer, so that
  // Sample(), Distribution() and Accept() never allocate.
  //   n_vocab: the length of every logits row, in [1, kMaxVocabSize].
  //   context_size: the longest history (prompt + generated tokens) a request can have, >= 1. It
  //     is the penalty window when repeat_last_n == -1 and caps it otherwise.
  // Memory: a candidate buffer of 8 bytes per token unless top_k is in [1, 1024] (then 8 bytes per
  // kept token) or greedy (8 bytes), 4 more bytes per such entry for weights, and when a penalty is
  // active 4 bytes per vocabulary token for counts.
  static absl::StatusOr<Sampler> Create(const SamplingParams& params, int32_t n_vocab,
                                        int32_t context_size);

  Sampler(Sampler&&) noexcept = default;
  Sampler& operator=(Sampler&&) noexcept = default;
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Returns the next token for `logits` (n_vocab floats, n_vocab equal to Create()'s: checked).
  // It does not record the token: call Accept() with the token the request keeps.
  //
  // Non-finite logits, decided here once for the whole engine:
  //   - NaN is skipped (never trusted, never picked); -inf is a banned token, never picked.
  //   - +inf outranks every finite logit: if any logit is +inf the draw is uniform among the +inf
  //     tokens (greedy and top_k = 1 take the lowest such id).
  //   - A row with no usable logit returns kNoToken. The caller should fail the request (the model
  //     produced garbage) rather than make up a token.
  // Greedy (temperature 0) returns the argmax after penalties, ties -> lowest id, and draws
  // nothing from the PRNG; otherwise every call consumes exactly one PRNG draw.
  // Allocates nothing.
  int32_t Sample(const float* logits, int32_t n_vocab);

  // The distribution Sample() would draw from for `logits`, for logprobs and tests: writes the
  // min(out.size(), survivors) most likely tokens to `out`, by descending probability (ties by
  // lower id), and returns how many it wrote. Probabilities are normalised over all survivors,
  // not only those written. Returns 0 where Sample() returns kNoToken; greedy gives one token with
  // probability 1. Consumes no randomness and allocates nothing.
  int32_t Distribution(const float* logits, int32_t n_vocab, std::span<TokenProbability> out);

  // Records a generated token in the penalty history. `token` must be in [0, n_vocab) (checked:
  // it came from this engine). O(1), allocates nothing.
  void Accept(int32_t token);

  // Records prompt tokens in the penalty history, oldest first, as llama.cpp's server does. The
  // ids may come from a client, so an id outside [0, n_vocab) is INVALID_ARGUMENT naming its
  // position and value, and then nothing is recorded.
  absl::Status AcceptPrompt(std::span<const int32_t> tokens);

  // Forgets the history and restarts the PRNG from the seed: the Sampler behaves as new.
  void Reset();

  const SamplingParams& params() const { return params_; }
  int32_t n_vocab() const { return n_vocab_; }
  // How many recent tokens the penalties look at (0 when no penalty is active).
  int32_t penalty_window() const { return static_cast<int32_t>(window_.size()); }

 private:
  // A surviving token and its logit.
  struct Candidate {
    float logit;
    int32_t token;
  };
  // Survivors of the filters: candidates_[0, size).
  struct Survivors {
    int32_t size = 0;
    bool sorted = false;     // by descending logit, ties by lower id
    float max_logit = 0.0f;  // of the survivors; every filter keeps the maximum
  };

  Sampler(const SamplingParams& params, int32_t n_vocab, int32_t window_capacity);

  // Runs the chain up to (not including) temperature; every surviving logit is finite.
  Survivors Filter(const float* logits, int32_t n_vocab);
  // Single pass over the row with a k-entry heap, penalties folded in. Returns survivors sorted.
  Survivors SelectTopK(const float* logits, int32_t k);
  // Copies every usable logit, then applies the penalties. Sets *saw_pos_inf.
  Survivors GatherAll(const float* logits, bool* saw_pos_inf);
  void ApplyPenaltiesToGathered(int32_t size, bool* saw_pos_inf);
  Survivors KeepPositiveInfinities(Survivors survivors);
  Survivors TopP(Survivors survivors);
  int32_t TopPProgressive(int32_t size, float max_logit, double target);
  float MaxLogit(int32_t size) const;
  Survivors MinP(Survivors survivors);
  // Writes exp((logit - max) / temperature) of each survivor to weights_ and returns their sum,
  // also leaving per-block sums in block_sums_ for the draw.
  double ComputeWeights(Survivors survivors);
  // Sum of exp(logit - max_logit) over candidates_[0, size): top-p's normaliser.
  double SoftmaxMass(int32_t size, float max_logit) const;
  int32_t Draw(int32_t size, double total);

  float Penalise(float logit, int32_t count) const;
  // Calls visit(token, count) once per distinct token in the penalty window.
  template <typename Visit>
  void ForEachDistinctWindowToken(Visit visit);

  SamplingParams params_;
  int32_t n_vocab_ = 0;
  bool greedy_ = false;
  int32_t heap_k_ = 0;  // > 0: top-k (or greedy, k = 1) by the single-pass heap
  std::vector<Candidate> candidates_;
  std::vector<float> weights_;  // parallel to candidates_ once ComputeWeights() ran
  std::vector<double> block_sums_;

  // Penalty window: a ring of the last window_.size() accepted tokens and their counts.
  std::vector<int32_t> window_;
  int32_t window_next_ = 0;      // slot for the next token
  int32_t window_used_ = 0;      // filled slots; while not full they are [0, window_used_)
  std::vector<int32_t> counts_;  // per token id; empty when no penalty is active

  SamplingRng rng_;
};

}  // namespace airlock::inference

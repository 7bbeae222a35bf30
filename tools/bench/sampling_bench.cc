// Time per Sampler::Sample() for Llama-2 (32000) and Qwen2 (151936) vocabularies, under the default
// chain, greedy and the costlier settings, next to two references measured in the same run: one
// pass over the row (the floor) and copy + std::partial_sort of the top 40 (the naive way).
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "inference/sampling/sampler.h"

namespace airlock::inference {
namespace {

enum Mode : int64_t {
  kDefault = 0,      // llama.cpp defaults: top_k 40, top_p 0.95, min_p 0.05, T 0.8
  kGreedy = 1,       // temperature 0
  kPenalties = 2,    // defaults + repeat 1.1, frequency 0.1, presence 0.1 over 64 tokens
  kNoTopK = 3,       // defaults with top_k = 0: top-p and min-p see the whole row
  kTemperature = 4,  // no filter at all: softmax and draw over the whole row
};

const char* ModeName(int64_t mode) {
  switch (mode) {
    case kDefault:
      return "default";
    case kGreedy:
      return "greedy";
    case kPenalties:
      return "default+penalties";
    case kNoTopK:
      return "top_k=0";
    case kTemperature:
      return "temperature-only";
  }
  return "?";
}

// Rows shaped like a language model's: broad noise with a handful of strong candidates. Several
// rows rotate so that branch predictors cannot learn one.
std::vector<std::vector<float>> MakeRows(int32_t n_vocab) {
  std::mt19937_64 gen(42);
  std::normal_distribution<float> noise(0.0f, 2.5f);
  std::vector<std::vector<float>> rows(4, std::vector<float>(static_cast<size_t>(n_vocab)));
  for (std::vector<float>& row : rows) {
    for (float& v : row) v = noise(gen);
    for (int i = 0; i < 8; ++i) row[gen() % static_cast<uint64_t>(n_vocab)] += 8.0f + i;
  }
  return rows;
}

void BM_Sample(benchmark::State& state) {
  const auto n_vocab = static_cast<int32_t>(state.range(0));
  const int64_t mode = state.range(1);
  SamplingParams params;
  params.seed = 1;
  if (mode == kGreedy) params.temperature = 0.0f;
  if (mode == kPenalties) {
    params.repeat_penalty = 1.1f;
    params.frequency_penalty = 0.1f;
    params.presence_penalty = 0.1f;
  }
  if (mode == kNoTopK) params.top_k = 0;
  if (mode == kTemperature) {
    params.top_k = 0;
    params.top_p = 1.0f;
    params.min_p = 0.0f;
  }
  absl::StatusOr<Sampler> created = Sampler::Create(params, n_vocab, 4096);
  if (!created.ok()) {
    state.SkipWithError(std::string(created.status().message()).c_str());
    return;
  }
  Sampler sampler = std::move(created).value();
  const std::vector<std::vector<float>> rows = MakeRows(n_vocab);
  // A full window of history, some of it on the strong candidates.
  std::mt19937 gen(7);
  for (int i = 0; i < 64; ++i)
    sampler.Accept(static_cast<int32_t>(gen() % static_cast<uint32_t>(n_vocab)));
  size_t step = 0;
  for (auto _ : state) {
    const int32_t token = sampler.Sample(rows[step++ & 3].data(), n_vocab);
    benchmark::DoNotOptimize(token);
    sampler.Accept(token);
  }
  state.SetLabel(ModeName(mode));
}

// The floor: reading the row once (an argmax).
void BM_ReferenceArgmax(benchmark::State& state) {
  const auto n_vocab = static_cast<int32_t>(state.range(0));
  const std::vector<std::vector<float>> rows = MakeRows(n_vocab);
  size_t step = 0;
  for (auto _ : state) {
    const std::vector<float>& row = rows[step++ & 3];
    benchmark::DoNotOptimize(std::max_element(row.begin(), row.end()) - row.begin());
  }
}

// The naive way: copy (id, logit) pairs and partial_sort the top 40 (buffer preallocated).
void BM_ReferenceCopyPartialSort40(benchmark::State& state) {
  const auto n_vocab = static_cast<int32_t>(state.range(0));
  const std::vector<std::vector<float>> rows = MakeRows(n_vocab);
  std::vector<std::pair<float, int32_t>> candidates(static_cast<size_t>(n_vocab));
  size_t step = 0;
  for (auto _ : state) {
    const std::vector<float>& row = rows[step++ & 3];
    for (int32_t i = 0; i < n_vocab; ++i)
      candidates[static_cast<size_t>(i)] = {row[static_cast<size_t>(i)], i};
    std::partial_sort(candidates.begin(), candidates.begin() + 40, candidates.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first; });
    benchmark::DoNotOptimize(candidates.data());
  }
}

void VocabSizes(benchmark::internal::Benchmark* b) {
  for (int64_t n_vocab : {32000, 151936}) {
    for (int64_t mode : {kDefault, kGreedy, kPenalties, kNoTopK, kTemperature}) {
      b->Args({n_vocab, mode});
    }
  }
  b->ArgNames({"n_vocab", "mode"});
}

BENCHMARK(BM_Sample)->Apply(VocabSizes)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReferenceArgmax)->Arg(32000)->Arg(151936)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReferenceCopyPartialSort40)->Arg(32000)->Arg(151936)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace airlock::inference

BENCHMARK_MAIN();

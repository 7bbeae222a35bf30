// Time per Sampler::Sample() for Llama-2 (32000) and Qwen2 (151936) vocabularies, under the default
// chain, greedy and the costlier settings, next to two references measured in the same run: one
// pass over the row (the floor) and copy + std::partial_sort of the top 40 (the naive way).
//
// Structured output: the cost of one TokenConstraint::Apply() (the grammar mask of a JSON schema
// over a row of logits) with the llama-spm (32,000), llama-bpe (128,256) and qwen2 (151,936)
// vocabularies of $AIRLOCK_TEST_DATA/models/vocab (default: ../shared beside the checkout), on
// the matcher states a seeded random model goes through while writing instances of a realistic
// schema: with every mask cached (hit) and with the cache off (miss: a walk of the vocabulary).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "inference/gguf/gguf_file.h"
#include "inference/sampling/json_schema.h"
#include "inference/sampling/sampler.h"
#include "inference/sampling/token_constraint.h"
#include "inference/tokenizer/tokenizer.h"

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
BENCHMARK(BM_ReferenceArgmax)->Arg(32000)->Arg(128256)->Arg(151936)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReferenceCopyPartialSort40)->Arg(32000)->Arg(151936)->Unit(benchmark::kMicrosecond);

// --- Structured output -------------------------------------------------------------------------

// An order as a shop's assistant would emit it: nested objects, an array of them, enums, optional
// members, numbers, integers, a nullable string.
constexpr char kOrderSchema[] = R"({
  "$defs": {
    "Item": {"type": "object", "properties": {
      "sku": {"type": "string"},
      "name": {"type": "string"},
      "quantity": {"type": "integer"},
      "unit_price": {"type": "number"},
      "size": {"enum": ["S", "M", "L", "XL"]},
      "gift": {"type": "boolean"}},
      "required": ["sku", "name", "quantity", "unit_price"]}},
  "type": "object",
  "properties": {
    "order_id": {"type": "string"},
    "customer": {"type": "object", "properties": {
      "name": {"type": "string"},
      "email": {"type": ["string", "null"]},
      "country": {"enum": ["CH", "DE", "FR", "IT", "AT"]}},
      "required": ["name", "email", "country"]},
    "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1, "maxItems": 8},
    "status": {"enum": ["pending", "paid", "shipped", "cancelled"]},
    "notes": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
  "required": ["order_id", "customer", "items", "status"]})";

std::string DataRoot() {
  const char* env = std::getenv("AIRLOCK_TEST_DATA");
  if (env != nullptr && *env != '\0') return env;
  std::string source = __FILE__;  // <checkout>/tools/bench/sampling_bench.cc
  for (int i = 0; i < 3; ++i) source = source.substr(0, source.find_last_of('/'));
  return source + "/../shared";
}

// Per vocabulary: its byte table (built from the tokenizer as a caller would), the schema's
// grammar, and the tokens of a few generations whose states the benchmarks replay.
struct ConstraintSetup {
  std::shared_ptr<const TokenVocabulary> vocabulary;
  std::shared_ptr<const Grammar> grammar;
  std::vector<std::vector<int32_t>> generations;  // token ids of a few generations
};

const ConstraintSetup* Setup(const std::string& name) {
  static auto* cache = new std::map<std::string, std::unique_ptr<ConstraintSetup>>();
  if (auto it = cache->find(name); it != cache->end()) return it->second.get();
  auto file = GgufFile::Open(DataRoot() + "/models/vocab/ggml-vocab-" + name + ".gguf");
  if (!file.ok()) return nullptr;
  auto tokenizer = Tokenizer::FromGguf(**file);
  if (!tokenizer.ok()) return nullptr;
  const Tokenizer& t = **tokenizer;
  std::vector<std::string> bytes(static_cast<size_t>(t.n_vocab()));
  std::vector<int32_t> never;
  std::vector<char> closing(bytes.size(), 0);
  for (int32_t id = 0; id < t.n_vocab(); ++id) {
    if (t.IsControl(id)) {
      never.push_back(id);
      continue;
    }
    bytes[static_cast<size_t>(id)] = std::string(t.PieceView(id));
    const std::string& b = bytes[static_cast<size_t>(id)];
    closing[static_cast<size_t>(id)] = b.find_first_of("\"]}") != std::string::npos &&
                                       b.find_first_of("[{,") == std::string::npos;
  }
  auto setup = std::make_unique<ConstraintSetup>();
  auto vocabulary = TokenVocabulary::Create(std::move(bytes), t.end_of_generation_tokens(), never);
  auto grammar = CompileJsonSchema(kOrderSchema);
  if (!vocabulary.ok() || !grammar.ok()) return nullptr;
  setup->vocabulary = *vocabulary;
  setup->grammar = *grammar;
  // Four generations by a seeded random model that samples among the allowed tokens, drawn to
  // closing ones half of the time and to the end whenever it is allowed.
  auto masks = std::make_shared<TokenMaskCache>(setup->grammar, setup->vocabulary);
  const int32_t n = setup->vocabulary->n_vocab();
  std::vector<float> logits(static_cast<size_t>(n));
  std::mt19937_64 rng(99);
  for (int g = 0; g < 4; ++g) {
    TokenConstraint c(masks);
    setup->generations.emplace_back();
    for (int step = 0; step < 400 && !c.IsFinished(); ++step) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      c.Apply(logits.data(), n);
      std::vector<int32_t> allowed, closers;
      int32_t eog = -1;
      for (int32_t id = 0; id < n; ++id) {
        if (logits[static_cast<size_t>(id)] == -INFINITY) continue;
        allowed.push_back(id);
        if (setup->vocabulary->IsEndOfGeneration(id)) eog = id;
        if (closing[static_cast<size_t>(id)]) closers.push_back(id);
      }
      if (allowed.empty()) break;
      const std::vector<int32_t>& pool = !closers.empty() && rng() % 2 == 0 ? closers : allowed;
      const int32_t token = eog >= 0 ? eog : pool[rng() % pool.size()];
      if (!c.Accept(token).ok()) break;
      setup->generations.back().push_back(token);
    }
  }
  return cache->emplace(name, std::move(setup)).first->second.get();
}

// One Apply() per iteration, cycling through the traced states. Re-masking the same row costs
// what masking a fresh one does (the same entries are written), so the row is not refilled.
void BM_ConstraintApply(benchmark::State& state, const std::string& vocab, bool cached) {
  const ConstraintSetup* setup = Setup(vocab);
  if (setup == nullptr) {
    state.SkipWithError(("cannot load vocabulary " + vocab + " (set AIRLOCK_TEST_DATA)").c_str());
    return;
  }
  TokenMaskCacheOptions options;
  if (!cached) options.max_bytes = 0;
  auto masks = std::make_shared<TokenMaskCache>(setup->grammar, setup->vocabulary, options);
  // The state before each token of the generations, replayed on this benchmark's cache.
  std::vector<TokenConstraint> states;
  for (const std::vector<int32_t>& tokens : setup->generations) {
    TokenConstraint c(masks);
    for (const int32_t token : tokens) {
      states.push_back(c);
      if (!c.Accept(token).ok()) {
        state.SkipWithError("replay refused a token");
        return;
      }
    }
  }
  const int32_t n = setup->vocabulary->n_vocab();
  std::vector<float> logits(static_cast<size_t>(n), 0.0f);
  // Warms the cache; uncached, times each state's walk (the best of three, against noise).
  std::vector<double> walk_us;
  for (TokenConstraint& c : states) {
    double best = 1e300;
    for (int k = 0; k < (cached ? 1 : 3); ++k) {
      const auto start = std::chrono::steady_clock::now();
      c.Apply(logits.data(), n);
      best = std::min(best, std::chrono::duration<double, std::micro>(
                                std::chrono::steady_clock::now() - start).count());
    }
    walk_us.push_back(best);
  }
  std::sort(walk_us.begin(), walk_us.end());
  size_t step = 0;
  for (auto _ : state) {
    states[step].Apply(logits.data(), n);
    benchmark::DoNotOptimize(logits.data());
    if (++step == states.size()) step = 0;
  }
  state.counters["states"] = static_cast<double>(states.size());
  if (!cached) {
    state.counters["median_us"] = walk_us[walk_us.size() / 2];
    state.counters["worst_us"] = walk_us.back();
  }
  state.counters["n_vocab"] = n;
  state.SetLabel(cached ? "cache hit" : "cache miss (vocabulary walk)");
}

// Compiling the schema (once per distinct schema a caller sees).
void BM_CompileJsonSchema(benchmark::State& state) {
  for (auto _ : state) {
    absl::StatusOr<std::shared_ptr<const Grammar>> grammar = CompileJsonSchema(kOrderSchema);
    if (!grammar.ok()) {
      state.SkipWithError(std::string(grammar.status().message()).c_str());
      return;
    }
    state.counters["states"] = (*grammar)->num_states();
    benchmark::DoNotOptimize(grammar->get());
  }
}
BENCHMARK(BM_CompileJsonSchema)->Unit(benchmark::kMicrosecond);

BENCHMARK_CAPTURE(BM_ConstraintApply, llama_spm_hit, std::string("llama-spm"), true)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_ConstraintApply, llama_bpe_hit, std::string("llama-bpe"), true)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_ConstraintApply, qwen2_hit, std::string("qwen2"), true)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_ConstraintApply, llama_spm_miss, std::string("llama-spm"), false)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_ConstraintApply, llama_bpe_miss, std::string("llama-bpe"), false)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_ConstraintApply, qwen2_miss, std::string("qwen2"), false)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace airlock::inference

BENCHMARK_MAIN();

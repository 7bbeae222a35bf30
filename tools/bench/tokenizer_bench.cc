// Google Benchmark of the tokenizers: Encode of a ~4 KB mix of English prose and C++ code with an
// SPM vocabulary (Llama 2) and byte-level BPE ones (Llama 3, Qwen2), reported as tokens/s and
// bytes/s; plus streaming detokenization of the result. Vocabulary loading is timed too.
//
// The vocabularies are read from $AIRLOCK_TEST_DATA/models/vocab (default: ../shared next to the
// source checkout).
//
//   build/<dir>/tools/tokenizer_bench [--benchmark_filter=Encode]
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "inference/gguf/gguf_file.h"
#include "inference/tokenizer/tokenizer.h"

namespace airlock::inference {
namespace {

// English prose and code, the mix a chat prompt typically carries.
constexpr char kText[] = R"(The old lighthouse keeper climbed the spiral stairs every evening at dusk.
He counted the steps out of habit: one hundred and twelve, never more, never fewer. From the
lantern room he could see the whole bay, the fishing boats returning with their nets, the gulls
circling over the harbour wall, and beyond it all the grey line where the sea met the sky.
"Another quiet night," he said to nobody in particular, and lit the lamp.

It wasn't always quiet. In the winter of 1987 a storm had driven three ships onto the rocks, and
he'd spent 36 hours without sleep, signalling to the rescue crews. People in the village still
talked about it: how the beam never faltered, how the keeper's voice on the radio stayed calm.
He didn't like to talk about it himself. "I did the job," he'd say. "That's what it's for."

Questions you might ask a model about this story: Why does the keeper count the steps? What does
the storm reveal about him? Answer in two or three sentences, and quote the text where it helps.

```cpp
// Returns the number of words in `text`, counting runs of non-space characters.
#include <cctype>
#include <string_view>

int CountWords(std::string_view text) {
  int words = 0;
  bool in_word = false;
  for (const char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      in_word = false;
    } else if (!in_word) {
      in_word = true;
      ++words;
    }
  }
  return words;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TEXT\n", argv[0]);
    return 1;
  }
  std::printf("%d\n", CountWords(argv[1]));
  return 0;
}
```

def fibonacci(n: int) -> list[int]:
    """Returns the first n Fibonacci numbers."""
    values = [0, 1]
    while len(values) < n:
        values.append(values[-1] + values[-2])
    return values[:n]

The function above runs in O(n) time; for n = 90 the last value still fits in a 64-bit integer
(2880067194370816120). Beyond that, Python's integers grow as needed, while C++ would overflow.
Résumé, naïve café, jalapeño: a few accented words, and some CJK: 你好，世界。こんにちは。
)";

std::string DataRoot() {
  if (const char* env = std::getenv("AIRLOCK_TEST_DATA"); env != nullptr && *env != '\0') return env;
  std::string source = __FILE__;  // <checkout>/tools/bench/tokenizer_bench.cc
  for (int i = 0; i < 3; ++i) source = source.substr(0, source.find_last_of('/'));
  return source + "/../shared";
}

const Tokenizer* Load(const std::string& name) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  if (auto it = cache->find(name); it != cache->end()) return it->second.get();
  auto file = GgufFile::Open(DataRoot() + "/models/vocab/ggml-vocab-" + name + ".gguf");
  if (!file.ok()) return nullptr;
  auto tokenizer = Tokenizer::FromGguf(**file);
  if (!tokenizer.ok()) return nullptr;
  return cache->emplace(name, std::move(*tokenizer)).first->second.get();
}

void BM_Encode(benchmark::State& state, const std::string& vocab) {
  const Tokenizer* t = Load(vocab);
  if (t == nullptr) {
    state.SkipWithError(("cannot load vocabulary " + vocab + " (set AIRLOCK_TEST_DATA)").c_str());
    return;
  }
  const std::string text = std::string(kText) + kText;  // ~4 KB
  size_t tokens = 0;
  for (auto _ : state) {
    std::vector<int32_t> ids = t->Encode(text, /*add_special=*/true, /*parse_special=*/false);
    tokens += ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
  state.counters["tokens"] = static_cast<double>(tokens) / static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(text.size()));
}

void BM_StreamingDetokenize(benchmark::State& state, const std::string& vocab) {
  const Tokenizer* t = Load(vocab);
  if (t == nullptr) {
    state.SkipWithError(("cannot load vocabulary " + vocab).c_str());
    return;
  }
  const std::vector<int32_t> ids = t->Encode(kText, true, false);
  for (auto _ : state) {
    StreamingDetokenizer detok(*t);
    size_t bytes = 0;
    for (const int32_t id : ids) bytes += detok.Push(id).size();
    bytes += detok.Flush().size();
    benchmark::DoNotOptimize(bytes);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(ids.size() * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

void BM_Load(benchmark::State& state, const std::string& vocab) {
  auto file = GgufFile::Open(DataRoot() + "/models/vocab/ggml-vocab-" + vocab + ".gguf");
  if (!file.ok()) {
    state.SkipWithError(("cannot open vocabulary " + vocab).c_str());
    return;
  }
  for (auto _ : state) {
    auto tokenizer = Tokenizer::FromGguf(**file);
    benchmark::DoNotOptimize(tokenizer.ok());
  }
}

BENCHMARK_CAPTURE(BM_Encode, llama_spm, std::string("llama-spm"));
BENCHMARK_CAPTURE(BM_Encode, llama_bpe, std::string("llama-bpe"));
BENCHMARK_CAPTURE(BM_Encode, qwen2, std::string("qwen2"));
BENCHMARK_CAPTURE(BM_StreamingDetokenize, llama_spm, std::string("llama-spm"));
BENCHMARK_CAPTURE(BM_StreamingDetokenize, llama_bpe, std::string("llama-bpe"));
BENCHMARK_CAPTURE(BM_Load, llama_spm, std::string("llama-spm"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Load, llama_bpe, std::string("llama-bpe"))->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace airlock::inference

BENCHMARK_MAIN();

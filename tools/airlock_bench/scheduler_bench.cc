// airlock-bench scheduler: prefix-cache time to first token, and decode latency while a long
// prompt is prefilled in chunks.
#include "tools/airlock_bench/scheduler_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"
#include "inference/engine.h"

namespace airlock::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t k = static_cast<size_t>(std::max(1.0, std::ceil(p / 100 * static_cast<double>(v.size()))));
  return v[std::min(v.size(), k) - 1];
}

std::vector<int32_t> Text(const inference::Engine& engine, size_t n, size_t offset) {
  std::vector<int32_t> text;
  while (text.size() < n + offset) {
    const std::vector<int32_t> more = engine.tokenizer().Encode(
        "The quick brown fox jumps over the lazy dog. Once upon a time, 1234 words ", false, false);
    text.insert(text.end(), more.begin(), more.end());
  }
  return std::vector<int32_t>(text.begin() + static_cast<ptrdiff_t>(offset),
                              text.begin() + static_cast<ptrdiff_t>(offset + n));
}

// Runs one request to its end; returns the time to its first piece in ms.
absl::StatusOr<double> TimeToFirstToken(inference::Engine& engine, inference::GenerateRequest r) {
  const auto t0 = Clock::now();
  double ttft = -1;
  AIRLOCK_ASSIGN_OR_RETURN(inference::GenerateResult result,
                           engine.Generate(r, [&](const inference::GeneratedPiece&) {
                             if (ttft < 0) ttft = Ms(Clock::now() - t0);
                             return true;
                           }));
  (void)result;
  return ttft;
}

absl::Status RunPrefix(const SchedulerBenchOptions& o) {
  inference::EngineOptions eo;
  eo.n_threads = o.threads;
  eo.n_ctx = std::max(4096, o.prefix_tokens + 64);
  eo.max_sequences = 1;
  eo.n_batch = 512;
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<inference::Engine> engine, inference::Engine::Load(o.model_file, eo));
  const std::vector<int32_t> document = Text(*engine, static_cast<size_t>(o.prefix_tokens), 0);
  const std::vector<int32_t> q = Text(*engine, 16, 200);
  inference::GenerateRequest first;
  first.prompt_tokens = document;
  first.prompt_tokens.insert(first.prompt_tokens.end(), q.begin(), q.begin() + 8);
  first.max_tokens = 4;
  first.sampling.temperature = 0;
  inference::GenerateRequest second = first;
  std::copy(q.begin() + 8, q.begin() + 16, second.prompt_tokens.end() - 8);  // another question
  AIRLOCK_ASSIGN_OR_RETURN(double cold, TimeToFirstToken(*engine, first));
  const inference::EngineStats before = engine->stats();
  AIRLOCK_ASSIGN_OR_RETURN(double warm, TimeToFirstToken(*engine, second));
  const inference::EngineStats after = engine->stats();
  const uint64_t hit = after.prefix_hit_tokens - before.prefix_hit_tokens;
  if (o.json) {
    std::printf("{\"test\":\"prefix\",\"prompt_tokens\":%zu,\"first_ttft_ms\":%.1f,\"second_ttft_ms\":%.1f,"
                "\"ratio\":%.3f,\"hit_tokens\":%llu}\n",
                first.prompt_tokens.size(), cold, warm, warm / cold, static_cast<unsigned long long>(hit));
  } else {
    std::printf("| prompt tokens | first TTFT ms | second TTFT ms | second / first | prefix hit tokens |\n"
                "|---|---|---|---|---|\n| %zu | %.1f | %.1f | %.3f | %llu |\n",
                first.prompt_tokens.size(), cold, warm, warm / cold, static_cast<unsigned long long>(hit));
  }
  return absl::OkStatus();
}

absl::Status RunInterference(const SchedulerBenchOptions& o) {
  if (!o.json) {
    std::printf("| step budget | streams | stream gap p50 ms (before) | gap p50 ms (during) | gap p99 ms (during) "
                "| p99 / p50 before | long prompt tokens | its TTFT ms |\n|---|---|---|---|---|---|---|---|\n");
  }
  for (int budget : o.budgets) {
    inference::EngineOptions eo;
    eo.n_threads = o.threads;
    eo.n_ctx = std::max(4096, o.long_prompt + 64);
    eo.max_sequences = o.streams + 1;
    eo.n_batch = std::max(budget, o.streams + 1);
    AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<inference::Engine> engine, inference::Engine::Load(o.model_file, eo));
    std::mutex mutex;
    std::condition_variable cv;
    // Per stream: when each token arrived.
    std::vector<std::vector<Clock::time_point>> arrivals(static_cast<size_t>(o.streams));
    std::atomic<bool> stop{false};
    int done = 0;
    for (int i = 0; i < o.streams; ++i) {
      inference::GenerateRequest r;
      r.prompt_tokens = Text(*engine, 32, static_cast<size_t>(i));
      r.max_tokens = 100000;
      r.sampling.temperature = 0;
      r.cache_scope = std::to_string(i);
      r.cancelled = [&stop] { return stop.load(); };
      AIRLOCK_RETURN_IF_ERROR(engine->Start(
          std::move(r),
          [&, i](const inference::GeneratedPiece& p) {
            if (p.token >= 0) arrivals[static_cast<size_t>(i)].push_back(Clock::now());
            return true;
          },
          [&](absl::StatusOr<inference::GenerateResult>) {
            std::lock_guard<std::mutex> lock(mutex);
            ++done;
            cv.notify_all();
          }));
    }
    // Let every stream decode for a while: the "before" gaps.
    const auto enough = [&] {
      for (const auto& a : arrivals) {
        if (a.size() < 12) return false;
      }
      return true;
    };
    while (!enough()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    inference::GenerateRequest big;
    big.prompt_tokens = Text(*engine, static_cast<size_t>(o.long_prompt), 1000);
    big.max_tokens = 1;
    big.sampling.temperature = 0;
    const auto arrive = Clock::now();
    AIRLOCK_ASSIGN_OR_RETURN(double ttft, TimeToFirstToken(*engine, big));
    const auto first_token = arrive + std::chrono::microseconds(static_cast<int64_t>(ttft * 1000));
    stop = true;
    {
      std::unique_lock<std::mutex> lock(mutex);
      cv.wait(lock, [&] { return done == o.streams; });
    }
    std::vector<double> before, during;
    for (const auto& a : arrivals) {
      for (size_t k = 1; k < a.size(); ++k) {
        const double gap = Ms(a[k] - a[k - 1]);
        if (a[k] <= arrive) before.push_back(gap);
        if (a[k] > arrive && a[k - 1] < first_token) during.push_back(gap);
      }
    }
    const double p50_before = Percentile(before, 50), p50 = Percentile(during, 50), p99 = Percentile(during, 99);
    if (o.json) {
      std::printf("{\"test\":\"interference\",\"budget\":%d,\"streams\":%d,\"gap_p50_before_ms\":%.1f,"
                  "\"gap_p50_during_ms\":%.1f,\"gap_p99_during_ms\":%.1f,\"p99_over_p50_before\":%.2f,"
                  "\"long_prompt\":%d,\"long_ttft_ms\":%.1f}\n",
                  budget, o.streams, p50_before, p50, p99, p99 / p50_before, o.long_prompt, ttft);
    } else {
      std::printf("| %d | %d | %.1f | %.1f | %.1f | %.2f | %d | %.1f |\n", budget, o.streams, p50_before, p50, p99,
                  p99 / p50_before, o.long_prompt, ttft);
    }
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunSchedulerBench(const SchedulerBenchOptions& o) {
  if (o.test == "prefix") return RunPrefix(o);
  if (o.test == "interference") return RunInterference(o);
  return absl::InvalidArgumentError(absl::StrCat("--test must be prefix or interference, got '", o.test, "'"));
}

}  // namespace airlock::bench

// airlock-bench batched: N sequences prefilled and decoded together through ForwardBatch.
#include "tools/airlock_bench/batched.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/backend/backend.h"
#include "inference/base/status.h"
#include "inference/engine.h"
#include "inference/model/model.h"

namespace airlock::bench {

using inference::BatchEntry;
using inference::ExecutorOptions;
using inference::KvCacheType;
using inference::Model;
using inference::Sequence;

absl::Status RunBatched(const BatchedOptions& o) {
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(o.model_file));
  const int32_t n_vocab = model->config().n_vocab;
  int max_pp = 0, max_tg = 0, max_pl = 0;
  for (int v : o.npp) max_pp = std::max(max_pp, v);
  for (int v : o.ntg) max_tg = std::max(max_tg, v);
  for (int v : o.npl) max_pl = std::max(max_pl, v);
  if (max_pl < 1 || max_pp < 1 || max_tg < 0) return absl::InvalidArgumentError("npl and npp must be >= 1");
  if (o.n_batch < max_pl) {
    return absl::InvalidArgumentError(absl::StrCat("--n-batch ", o.n_batch, " is below the largest --npl ", max_pl));
  }
  ExecutorOptions eo;
  eo.n_threads = o.threads;
  eo.n_ctx = max_pp + max_tg + 1;
  eo.n_batch = o.n_batch;
  eo.kv_type = o.kv_type == "f32" ? KvCacheType::kF32 : KvCacheType::kF16;
  eo.kv_pool_tokens = static_cast<int64_t>(max_pl) * (eo.n_ctx + eo.kv_block_tokens);
  eo.prefix_cache = false;  // random prompts share nothing; measure the computation itself
  if (o.device.find(',') != std::string::npos || !o.placement.empty()) {
    return absl::InvalidArgumentError("several devices (--device A,B --placement P) run with --engine only");
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<inference::Backend> backend, inference::CreateDeviceBackend(o.device));
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<inference::ModelExecutor> ex, backend->CreateExecutor(*model, eo));
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> dist(0, n_vocab - 1);
  if (!o.json) {
    std::printf("| PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |\n"
                "|---|---|---|---|---|---|---|---|---|---|\n");
  }
  using Clock = std::chrono::steady_clock;
  for (int pp : o.npp) {
    for (int tg : o.ntg) {
      for (int pl : o.npl) {
        std::vector<std::unique_ptr<Sequence>> seqs;
        std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(pl));
        std::vector<std::vector<float>> logits(static_cast<size_t>(pl), std::vector<float>(n_vocab));
        for (int s = 0; s < pl; ++s) {
          AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<Sequence> seq, ex->NewSequence());
          seqs.push_back(std::move(seq));
          for (int i = 0; i < pp + tg; ++i) prompts[s].push_back(dist(rng));
          if (!seqs.back()->Reserve(pp + tg)) return absl::ResourceExhaustedError("KV pool too small");
        }
        // Prefill: the sequences' prompts back to back, cut into steps of n_batch tokens.
        const auto t0 = Clock::now();
        int s = 0, at = 0;
        while (s < pl) {
          std::vector<BatchEntry> batch;
          int budget = o.n_batch;
          while (s < pl && budget > 0) {
            const int take = std::min(budget, pp - at);
            BatchEntry e;
            e.seq = seqs[s].get();
            e.tokens = std::span<const int32_t>(prompts[s]).subspan(static_cast<size_t>(at), static_cast<size_t>(take));
            at += take;
            if (at == pp) e.logits = logits[s].data();
            batch.push_back(e);
            budget -= take;
            if (at == pp) {
              ++s;
              at = 0;
            }
          }
          AIRLOCK_RETURN_IF_ERROR(ex->ForwardBatch(batch));
        }
        const auto t1 = Clock::now();
        // Generation: every step advances every sequence by one (pre-drawn) token.
        for (int i = 0; i < tg; ++i) {
          std::vector<BatchEntry> batch;
          for (int q = 0; q < pl; ++q) {
            BatchEntry e;
            e.seq = seqs[q].get();
            e.tokens = std::span<const int32_t>(prompts[q]).subspan(static_cast<size_t>(pp + i), 1);
            e.logits = logits[q].data();
            batch.push_back(e);
          }
          AIRLOCK_RETURN_IF_ERROR(ex->ForwardBatch(batch));
        }
        const auto t2 = Clock::now();
        const double t_pp = std::chrono::duration<double>(t1 - t0).count();
        const double t_tg = std::chrono::duration<double>(t2 - t1).count();
        const double s_pp = pl * pp / t_pp, s_tg = tg > 0 ? pl * tg / t_tg : 0;
        const double total = t_pp + t_tg, s_all = pl * (pp + tg) / total;
        if (o.json) {
          std::printf("{\"pp\":%d,\"tg\":%d,\"pl\":%d,\"n_kv\":%d,\"t_pp\":%.3f,\"speed_pp\":%.2f,\"t_tg\":%.3f,"
                      "\"speed_tg\":%.2f,\"t\":%.3f,\"speed\":%.2f}\n",
                      pp, tg, pl, pl * (pp + tg), t_pp, s_pp, t_tg, s_tg, total, s_all);
        } else {
          std::printf("| %d | %d | %d | %d | %.3f | %.2f | %.3f | %.2f | %.3f | %.2f |\n", pp, tg, pl, pl * (pp + tg),
                      t_pp, s_pp, t_tg, s_tg, total, s_all);
        }
        std::fflush(stdout);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status RunEngineClients(const BatchedOptions& o) {
  int max_pl = 1;
  for (int v : o.npl) max_pl = std::max(max_pl, v);
  inference::EngineOptions eo;
  eo.n_threads = o.threads;
  eo.max_sequences = max_pl;
  eo.n_batch = std::max(o.n_batch, max_pl);
  eo.kv_type = o.kv_type == "f32" ? KvCacheType::kF32 : KvCacheType::kF16;
  AIRLOCK_RETURN_IF_ERROR(inference::SetDevicesFromFlags(o.device, o.placement, &eo));
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<inference::Engine> engine, inference::Engine::Load(o.model_file, eo));
  // Real text, repeated: every client a different window of it, all of the same length.
  std::vector<int32_t> text;
  while (text.size() < 4096) {
    const std::vector<int32_t> more = engine->tokenizer().Encode(
        "The quick brown fox jumps over the lazy dog. Once upon a time, 1234 words ", false, false);
    text.insert(text.end(), more.begin(), more.end());
  }
  if (!o.json) {
    std::printf("| clients | PP | TG | generated | wall s | tokens/s | TTFT p50 ms | TTFT p99 ms |\n"
                "|---|---|---|---|---|---|---|---|\n");
  }
  using Clock = std::chrono::steady_clock;
  for (int pp : o.npp) {
    for (int tg : o.ntg) {
      for (int n : o.npl) {
        std::mutex mutex;
        std::condition_variable cv;
        int done = 0;
        std::vector<int> ended;  // clients whose request just ended, to send the next
        uint64_t generated = 0;
        std::vector<double> ttft;
        absl::Status failure;
        const auto t0 = Clock::now();
        uint64_t request_id = 0;
        const auto start = [&](int i) -> absl::Status {
          inference::GenerateRequest r;
          r.prompt_tokens.assign(text.begin() + i % 16, text.begin() + i % 16 + pp);
          r.max_tokens = tg;
          r.sampling.temperature = 0;
          r.cache_scope = std::to_string(request_id++);  // no prefix sharing at all
          auto sent = std::make_shared<Clock::time_point>(Clock::now());
          auto first = std::make_shared<bool>(true);
          return engine->Start(
              std::move(r),
              [&, sent, first](const inference::GeneratedPiece&) {
                if (*first) {
                  *first = false;
                  std::lock_guard<std::mutex> lock(mutex);
                  ttft.push_back(std::chrono::duration<double, std::milli>(Clock::now() - *sent).count());
                }
                return true;
              },
              [&, i](absl::StatusOr<inference::GenerateResult> result) {
                std::lock_guard<std::mutex> lock(mutex);
                if (result.ok()) {
                  generated += result->output_tokens.size();
                } else {
                  failure = result.status();
                }
                ++done;
                ended.push_back(i);
                cv.notify_all();
              });
        };
        for (int i = 0; i < n; ++i) AIRLOCK_RETURN_IF_ERROR(start(i));
        const int total = n * std::max(1, o.rounds);
        std::vector<int> sent_rounds(static_cast<size_t>(n), 1);
        for (;;) {
          std::vector<int> next;
          {
            std::unique_lock<std::mutex> lock(mutex);
            cv.wait(lock, [&] { return done == total || !ended.empty(); });
            if (done == total) break;
            next.swap(ended);
          }
          for (int i : next) {
            if (sent_rounds[i] < std::max(1, o.rounds)) {
              ++sent_rounds[i];
              AIRLOCK_RETURN_IF_ERROR(start(i));
            }
          }
        }
        AIRLOCK_RETURN_IF_ERROR(failure);
        const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
        std::sort(ttft.begin(), ttft.end());
        const auto pct = [&](double p) {
          const size_t k = static_cast<size_t>(std::max(1.0, std::ceil(p / 100 * static_cast<double>(ttft.size()))));
          return ttft[std::min(ttft.size(), k) - 1];
        };
        if (o.json) {
          std::printf("{\"impl\":\"airlock\",\"clients\":%d,\"pp\":%d,\"tg\":%d,\"generated\":%llu,\"seconds\":%.3f,"
                      "\"tokens_per_second\":%.2f,\"ttft_p50_ms\":%.1f,\"ttft_p99_ms\":%.1f}\n",
                      n, pp, tg, static_cast<unsigned long long>(generated), wall,
                      static_cast<double>(generated) / wall, pct(50), pct(99));
        } else {
          std::printf("| %d | %d | %d | %llu | %.3f | %.2f | %.1f | %.1f |\n", n, pp, tg,
                      static_cast<unsigned long long>(generated), wall, static_cast<double>(generated) / wall,
                      pct(50), pct(99));
        }
        std::fflush(stdout);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace airlock::bench

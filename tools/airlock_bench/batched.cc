// airlock-bench batched: N sequences prefilled and decoded together through ForwardBatch.
#include "tools/airlock_bench/batched.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/backend/backend.h"
#include "inference/base/status.h"
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
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<inference::ModelExecutor> ex,
                           inference::CreateCpuBackend()->CreateExecutor(*model, eo));
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

}  // namespace airlock::bench

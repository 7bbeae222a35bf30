// airlock-bench: engine prompt-processing and generation throughput on one model file, measured
// like llama-bench (pp: one batch of N random tokens into an empty context; tg: N single-token
// steps from an empty context), with peak memory; `overhead` (alias `serve`): what a running
// airlockd adds per request over the same work in-process (overhead.h); and `load`: concurrent
// streaming clients against a running airlockd (load.h); and `batched`: N sequences prefilled and
// decoded together, like llama-batched-bench (batched.h); `memory`: the memory read bandwidth
// (memory_bandwidth.h), which the tg test also measures over the model's own weights to report the
// fraction of it that decode reaches.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "inference/backend/backend.h"
#include "inference/engine.h"
#include "inference/model/model.h"
#include "tools/airlock_bench/batched.h"
#include "tools/airlock_bench/load.h"
#include "tools/airlock_bench/memory_bandwidth.h"
#include "tools/airlock_bench/scheduler_bench.h"
#include "tools/airlock_bench/overhead.h"

namespace {

using airlock::inference::ExecutorOptions;
using airlock::inference::KvCacheType;
using airlock::inference::Model;

struct Stats {
  double mean = 0, stddev = 0;
};

Stats Summarize(const std::vector<double>& v) {
  Stats s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
  s.stddev = v.size() > 1 ? std::sqrt(s.stddev / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

double PeakRssMiB() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"airlock-bench: engine throughput (pp/tg tokens per second) and peak memory; "
               "`overhead`: per-request cost of a running airlockd; `load`: streaming load test of it"};
  std::string model_path;
  std::vector<int> threads = {1};
  int n_prompt = 512, n_gen = 128, reps = 3;
  std::string kv = "f16";
  bool json = false;
  app.add_option("--model,-m", model_path, "GGUF model file (required without a subcommand)")
      ->check(CLI::ExistingFile);
  app.add_option("--threads,-t", threads, "Thread counts to measure (repeatable)")->capture_default_str();
  app.add_option("--n-prompt,-p", n_prompt, "Prompt tokens for the pp test (0 skips)")->capture_default_str();
  app.add_option("--n-gen,-n", n_gen, "Generated tokens for the tg test (0 skips)")->capture_default_str();
  app.add_option("--reps,-r", reps, "Repetitions")->capture_default_str();
  app.add_option("--kv-type", kv, "f16 or f32")->capture_default_str();
  std::string device = "cpu";
  app.add_option("--device", device, "cpu, or a Vulkan device: vulkan:N or vulkan:NAME")->capture_default_str();
  app.add_flag("--json", json, "JSON lines output");
  bool no_bandwidth = false;
  app.add_flag("--no-bandwidth", no_bandwidth,
               "tg: skip reading the model's weights after each run (the read bandwidth its decode is compared with)");

  std::vector<int> mem_threads = {1};
  size_t mem_mib = 1024;
  int mem_reps = 5;
  bool mem_json = false;
  CLI::App* memory = app.add_subcommand(
      "memory", "Memory read bandwidth, STREAM-like: T threads each stream their own part of a buffer far larger "
                "than the caches (decode's access pattern)");
  memory->add_option("--threads,-t", mem_threads, "thread counts (repeatable)")->capture_default_str();
  memory->add_option("--size-mib", mem_mib, "buffer size in MiB")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  memory->add_option("--reps,-r", mem_reps, "measured passes")->capture_default_str()->check(CLI::Range(1, 1000));
  memory->add_flag("--json", mem_json, "JSON lines output");

  airlock::bench::OverheadOptions ov;
  CLI::App* overhead = app.add_subcommand(
      "overhead", "Per-request overhead of a running airlockd (mTLS + admission + validation + queueing) versus "
                  "the same Tokenize/Generate in-process, and the cost of a fresh mTLS connection");
  overhead->alias("serve");
  overhead->add_option("--server", ov.server, "host:port of the running airlockd")->required();
  overhead->add_option("--openai", ov.openai,
                       "host:port of its OpenAI listener: the Generate test also runs over HTTPS (/v1/completions)");
  overhead->add_option("--ca", ov.ca_file, "CA certificate (PEM) of the server")->required()->check(CLI::ExistingFile);
  overhead->add_option("--cert", ov.cert_file, "client certificate (PEM)")->required()->check(CLI::ExistingFile);
  overhead->add_option("--key", ov.key_file, "client private key (PEM)")->required()->check(CLI::ExistingFile);
  overhead->add_option("--server-name", ov.server_name, "name checked against the server certificate")
      ->capture_default_str();
  overhead->add_option("--model-file", ov.model_file, "the GGUF file the daemon serves, loaded in-process")
      ->required()
      ->check(CLI::ExistingFile);
  overhead->add_option("--model-name", ov.model, "the name the daemon serves it under")->capture_default_str();
  overhead->add_option("--engine-threads", ov.engine_threads, "threads of the in-process engine (as the daemon's)")
      ->capture_default_str();
  overhead->add_option("--requests,-n", ov.requests, "measured requests per test and concurrency")
      ->capture_default_str();
  overhead->add_option("--warmup", ov.warmup, "warm-up requests before each test")->capture_default_str();
  overhead->add_option("--concurrency,-c", ov.concurrency, "concurrent callers of the second pass (1 is always run)")
      ->capture_default_str();
  overhead->add_option("--connections", ov.connections, "fresh connections for the handshake test (0 skips)")
      ->capture_default_str();
  overhead->add_option("--text", ov.tokenize_text, "text of the Tokenize test")->capture_default_str();
  overhead->add_option("--prompt", ov.prompt, "prompt of the Generate test")->capture_default_str();
  overhead->add_flag("--json", ov.json, "one JSON document instead of tables");
  overhead->add_option("--only", ov.only, "run only these tests: tokenize, generate, connect (repeatable)");

  airlock::bench::LoadOptions lo;
  uint64_t seed = 0;
  CLI::App* load = app.add_subcommand(
      "load", "Streaming load test of a running airlockd: N concurrent mTLS clients (one connection each) sending "
              "GenerateStream back to back; TTFT, end-to-end latency, req/s, tokens/s, errors by gRPC code, beside "
              "the same request by an in-process engine");
  load->add_option("--server", lo.server, "host:port of the running airlockd")->required();
  load->add_option("--ca", lo.ca_file, "CA certificate (PEM) of the server")->required()->check(CLI::ExistingFile);
  load->add_option("--cert", lo.cert_file, "client certificate (PEM)")->required()->check(CLI::ExistingFile);
  load->add_option("--key", lo.key_file, "client private key (PEM)")->required()->check(CLI::ExistingFile);
  load->add_option("--server-name", lo.server_name, "name checked against the server certificate")
      ->capture_default_str();
  load->add_option("--model-file", lo.model_file,
                   "the GGUF file the daemon serves, run in-process as the reference (omit to skip it)")
      ->check(CLI::ExistingFile);
  load->add_option("--model-name", lo.model, "the name the daemon serves it under")->capture_default_str();
  load->add_option("--engine-threads", lo.engine_threads, "threads of the in-process engine (as the daemon's)")
      ->capture_default_str();
  load->add_option("--concurrency,-c", lo.concurrency, "concurrent clients, one run each (repeatable)")
      ->capture_default_str();
  load->add_option("--requests-per-client,-n", lo.requests_per_client, "measured requests per client and run")
      ->capture_default_str();
  load->add_option("--duration", lo.duration_s, "seconds per run instead of a request count (0: use -n)")
      ->capture_default_str();
  load->add_option("--warmup", lo.warmup, "unmeasured requests per client before each run")->capture_default_str();
  load->add_option("--reference-requests", lo.reference_requests,
                   "measured requests of the in-process reference (0 skips it)")
      ->capture_default_str();
  load->add_option("--max-tokens", lo.max_tokens, "max_tokens of every request")->capture_default_str();
  load->add_option("--temperature", lo.temperature, "sampling temperature (0 = greedy)")->capture_default_str();
  CLI::Option* seed_option =
      load->add_option("--seed", seed, "sampler seed, the same for every request (default: the daemon picks)");
  load->add_option("--prompt", lo.prompt, "prompt of every request")->capture_default_str();
  load->add_option("--deadline", lo.deadline_s, "per-request deadline in seconds")->capture_default_str();
  load->add_flag("--json", lo.json, "one JSON document instead of a table");

  airlock::bench::BatchedOptions bo;
  CLI::App* batched = app.add_subcommand(
      "batched", "Prompt processing and generation with N parallel sequences in one batch (as llama-batched-bench)");
  batched->add_option("--model,-m", bo.model_file, "GGUF model file")->required()->check(CLI::ExistingFile);
  batched->add_option("--threads,-t", bo.threads, "threads")->capture_default_str();
  batched->add_option("--n-batch,-b", bo.n_batch, "tokens per forward step at most")->capture_default_str();
  batched->add_option("--npp", bo.npp, "prompt tokens per sequence (repeatable)")->capture_default_str();
  batched->add_option("--ntg", bo.ntg, "generated tokens per sequence (repeatable)")->capture_default_str();
  batched->add_option("--npl", bo.npl, "parallel sequences (repeatable)")->capture_default_str();
  batched->add_option("--kv-type", bo.kv_type, "f16 or f32")->capture_default_str();
  batched->add_option("--device", bo.device,
                      "cpu, or a Vulkan device: vulkan:N or vulkan:NAME; with --engine several, comma-separated")
      ->capture_default_str();
  batched->add_option("--placement", bo.placement, "with several devices: replicas or layers");
  batched->add_flag("--json", bo.json, "JSON lines output");
  batched->add_option("--rounds", bo.rounds, "with --engine: requests per client, back to back")->capture_default_str();
  batched->add_flag("--engine", bo.engine,
                    "N concurrent requests through the engine's scheduler (aggregate tokens/s, TTFT) instead of raw steps");

  airlock::bench::SchedulerBenchOptions so;
  CLI::App* scheduler = app.add_subcommand(
      "scheduler", "Continuous batching in-process: prefix-cache time to first token (--test prefix), or the "
                   "decoding streams' inter-token latency while a long prompt is prefilled (--test interference)");
  scheduler->add_option("--model,-m", so.model_file, "GGUF model file")->required()->check(CLI::ExistingFile);
  scheduler->add_option("--threads,-t", so.threads, "threads")->capture_default_str();
  scheduler->add_option("--test", so.test, "prefix or interference")->capture_default_str();
  scheduler->add_option("--prefix-tokens", so.prefix_tokens, "prefix: shared prompt tokens")->capture_default_str();
  scheduler->add_option("--streams", so.streams, "interference: decoding streams")->capture_default_str();
  scheduler->add_option("--long-prompt", so.long_prompt, "interference: tokens of the arriving prompt")
      ->capture_default_str();
  scheduler->add_option("--budget", so.budgets, "interference: per-step token budgets (repeatable)")
      ->capture_default_str();
  scheduler->add_flag("--json", so.json, "JSON lines output");
  CLI11_PARSE(app, argc, argv);

  if (memory->parsed()) {
    if (!mem_json) std::printf("| threads | MiB | best GB/s | mean GB/s |\n|---|---|---|---|\n");
    for (int t : mem_threads) {
      auto bw = airlock::bench::MeasureReadBandwidth(t, mem_mib << 20, mem_reps);
      if (!bw.ok()) {
        std::fprintf(stderr, "airlock-bench memory: %s\n", std::string(bw.status().message()).c_str());
        return 1;
      }
      if (mem_json) {
        std::printf("{\"threads\":%d,\"bytes\":%zu,\"best_gb_per_s\":%.3f,\"mean_gb_per_s\":%.3f}\n", t, bw->bytes,
                    bw->best(), bw->mean());
      } else {
        std::printf("| %d | %zu | %.2f | %.2f |\n", t, bw->bytes >> 20, bw->best(), bw->mean());
      }
      std::fflush(stdout);
    }
    return 0;
  }

  if (scheduler->parsed()) {
    const absl::Status status = airlock::bench::RunSchedulerBench(so);
    if (!status.ok()) {
      std::fprintf(stderr, "airlock-bench scheduler: %s\n", std::string(status.message()).c_str());
      return 1;
    }
    return 0;
  }

  if (batched->parsed()) {
    const absl::Status status = bo.engine ? airlock::bench::RunEngineClients(bo) : airlock::bench::RunBatched(bo);
    if (!status.ok()) {
      std::fprintf(stderr, "airlock-bench batched: %s\n", std::string(status.message()).c_str());
      return 1;
    }
    return 0;
  }

  if (load->parsed()) {
    if (seed_option->count() > 0) lo.seed = seed;
    const absl::Status status = airlock::bench::RunStreamingLoad(lo);
    if (!status.ok()) {
      std::fprintf(stderr, "airlock-bench load: %s\n", std::string(status.message()).c_str());
      return 1;
    }
    return 0;
  }

  if (overhead->parsed()) {
    const absl::Status status = airlock::bench::RunOverhead(ov);
    if (!status.ok()) {
      std::fprintf(stderr, "airlock-bench overhead: %s\n", std::string(status.message()).c_str());
      return 1;
    }
    return 0;
  }
  if (model_path.empty()) {
    std::fprintf(stderr, "airlock-bench: --model is required (or use the `overhead` or `load` subcommand)\n");
    return 2;
  }

  auto model = Model::Load(model_path);
  if (!model.ok()) {
    std::fprintf(stderr, "airlock-bench: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const auto& cfg = (*model)->config();
  auto backend_or = airlock::inference::CreateDeviceBackend(device);
  if (!backend_or.ok()) {
    std::fprintf(stderr, "airlock-bench: %s\n", std::string(backend_or.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<airlock::inference::Backend> backend = std::move(*backend_or);
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> dist(0, cfg.n_vocab - 1);
  std::vector<float> logits(static_cast<size_t>(cfg.n_vocab));
  if (!json) {
    std::printf("| model | size | threads | test | t/s | peak RSS MiB | decode weights GB/s | read GB/s | of read |\n"
                "|---|---|---|---|---|---|---|---|---|\n");
  }
  for (int t : threads) {
    ExecutorOptions o;
    o.n_threads = t;
    o.n_ctx = std::max(n_prompt, n_gen) + 1;
    o.n_batch = std::max(1, n_prompt);
    o.kv_type = kv == "f32" ? KvCacheType::kF32 : KvCacheType::kF16;
    auto ex = backend->CreateExecutor(**model, o);
    if (!ex.ok()) {
      std::fprintf(stderr, "airlock-bench: %s\n", std::string(ex.status().message()).c_str());
      return 1;
    }
    // The weights as mapped: one contiguous data section, read after each tg run with the same
    // threads as the reference decode is compared with (the same pages, the same moment).
    const uint8_t* weights_begin = nullptr;
    const uint8_t* weights_end = nullptr;
    for (const auto& info : (*model)->file().tensors()) {
      if (weights_begin == nullptr || info.data < weights_begin) weights_begin = info.data;
      if (info.data + info.bytes > weights_end) weights_end = info.data + info.bytes;
    }
    const double decode_gb = static_cast<double>((*model)->decode_weight_bytes()) / 1e9;
    auto run = [&](const std::string& test, int n, bool batch) {
      if (n <= 0) return;
      std::vector<double> rates, fractions, read_rates;
      for (int r = -1; r < reps; ++r) {  // r = -1 is a warm-up run
        std::vector<int32_t> tokens(static_cast<size_t>(n));
        for (int32_t& tok : tokens) tok = dist(rng);
        auto seq = (*ex)->NewSequence();
        const auto t0 = std::chrono::steady_clock::now();
        if (batch) {
          if (!(*ex)->Forward(**seq, tokens, logits.data(), false).ok()) std::abort();
        } else {
          for (int i = 0; i < n; ++i) {
            if (!(*ex)->Forward(**seq, std::span<const int32_t>(&tokens[i], 1), logits.data(), false).ok()) std::abort();
          }
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r < 0) continue;
        rates.push_back(n / s);
        if (!batch && !no_bandwidth && device == "cpu") {  // a GPU reads its own memory
          auto bw = airlock::bench::MeasureReadBandwidthOf(weights_begin, static_cast<size_t>(weights_end - weights_begin),
                                                           t, 3);
          if (!bw.ok()) {
            std::fprintf(stderr, "airlock-bench: %s\n", std::string(bw.status().message()).c_str());
            std::exit(1);
          }
          read_rates.push_back(bw->best());
          fractions.push_back(n / s * decode_gb / bw->best());
        }
      }
      const Stats st = Summarize(rates);
      const bool with_bw = !read_rates.empty();
      const double weights_gbps = st.mean * decode_gb;
      const double read_gbps = with_bw ? Summarize(read_rates).mean : 0.0;
      const double fraction = with_bw ? Summarize(fractions).mean : 0.0;
      if (json) {
        std::printf("{\"model\":\"%s\",\"threads\":%d,\"test\":\"%s\",\"tokens_per_second\":%.3f,\"stddev\":%.3f,"
                    "\"peak_rss_mib\":%.1f",
                    model_path.c_str(), t, test.c_str(), st.mean, st.stddev, PeakRssMiB());
        if (!batch) std::printf(",\"decode_weight_gb_per_s\":%.3f", weights_gbps);
        if (with_bw) std::printf(",\"read_gb_per_s\":%.3f,\"fraction_of_read\":%.4f", read_gbps, fraction);
        std::printf("}\n");
      } else {
        std::printf("| %s | %.1f MiB | %d | %s | %.2f ± %.2f | %.1f |", model_path.c_str(),
                    static_cast<double>((*model)->weight_bytes()) / (1 << 20), t, test.c_str(), st.mean, st.stddev,
                    PeakRssMiB());
        if (batch) {
          std::printf(" | | |\n");
        } else if (with_bw) {
          std::printf(" %.2f | %.2f | %.0f %% |\n", weights_gbps, read_gbps, 100.0 * fraction);
        } else {
          std::printf(" %.2f | | |\n", weights_gbps);
        }
      }
      std::fflush(stdout);
    };
    run("pp" + std::to_string(n_prompt), n_prompt, true);
    run("tg" + std::to_string(n_gen), n_gen, false);
  }
  return 0;
}

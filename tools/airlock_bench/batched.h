// airlock-bench batched: prompt processing and generation with N parallel sequences in one
// executor, measured like llama.cpp's llama-batched-bench: for each N, N prompts of `npp` random
// tokens are prefilled together (steps of at most n_batch tokens over all of them), then `ntg`
// steps each advance all N sequences by one token. Reports per N the prompt and generation time
// and aggregate tokens/s, so the gain of batching shows as S_TG at N against S_TG at 1. With
// --engine, N concurrent requests go through the engine's scheduler instead.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace airlock::bench {

struct BatchedOptions {
  std::string model_file;             // required
  int threads = 1;
  int n_batch = 512;                  // tokens per forward step at most
  std::vector<int> npp = {128};       // prompt tokens per sequence (repeatable)
  std::vector<int> ntg = {128};       // generated tokens per sequence (repeatable)
  std::vector<int> npl = {1, 2, 4, 8, 16};  // parallel sequences (repeatable)
  std::string kv_type = "f16";
  std::string device = "cpu";  // EngineOptions::device, or several comma-separated (with --engine)
  std::string placement;       // with several devices: replicas or layers
  bool json = false;
  // Instead of raw executor steps: N concurrent requests through Engine::Start (the scheduler, as
  // airlockd runs them), each a prompt of npp real-text tokens then ntg greedy tokens; reports
  // aggregate generated tokens/s and time to first token.
  bool engine = false;
  // With --engine: requests per client, each sent when the client's previous one ends (as
  // `airlock-bench load` clients do against airlockd).
  int rounds = 1;
};

absl::Status RunBatched(const BatchedOptions& options);
absl::Status RunEngineClients(const BatchedOptions& options);

}  // namespace airlock::bench

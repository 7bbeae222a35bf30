// airlock-bench scheduler: what continuous batching promises, measured in-process on one engine.
//   prefix:       a request with a long prompt, then a second one sharing all but its last tokens;
//                 time to first token of each (the second should find the prefix cached).
//   interference: `streams` requests decoding, then one long prompt arrives; the streams'
//                 inter-token gaps before it and while it is prefilled (median, p99), and its time
//                 to first token, for each per-step token budget.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace airlock::bench {

struct SchedulerBenchOptions {
  std::string model_file;            // required
  int threads = 1;
  std::string test = "interference"; // prefix | interference
  int prefix_tokens = 1000;          // prefix: shared prompt tokens
  int streams = 7;                   // interference: decoding streams
  int long_prompt = 2000;            // interference: the arriving prompt's tokens
  std::vector<int> budgets = {32, 64, 256};  // interference: per-step token budgets (n_batch)
  bool json = false;
};

absl::Status RunSchedulerBench(const SchedulerBenchOptions& options);

}  // namespace airlock::bench

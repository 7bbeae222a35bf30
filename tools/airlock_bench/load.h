// airlock-bench load: a streaming load test of a running airlockd. N concurrent mTLS clients, each
// on a connection of its own, send GenerateStream requests back to back; per request the time to
// the first piece, the time to the end of the stream and the completion tokens; per run requests/s,
// percentiles, aggregate generated tokens/s and errors by gRPC code. The same request run by an
// in-process Engine (one caller, streaming callback) is the reference.
//
// Thread-safety: RunStreamingLoad() is not reentrant; it starts and joins its own client threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace airlock::bench {

struct LoadOptions {
  std::string server;                    // host:port of a running airlockd; required
  std::string ca_file;                   // PEM CA bundle the server certificate chains to; required
  std::string cert_file;                 // client certificate; required
  std::string key_file;                  // its private key; required
  std::string server_name = "localhost"; // name checked against the server certificate
  std::string model_file;                // the GGUF file the daemon serves; empty skips the reference
  std::string model = "stories";         // the name the daemon serves it under
  int engine_threads = 1;                // threads of the in-process engine (the daemon's `threads`)
  std::vector<int> concurrency = {1, 4, 16};  // one run per entry: that many clients
  int requests_per_client = 20;          // measured requests per client (when duration_s == 0)
  double duration_s = 0;                 // > 0: each client sends requests until this many seconds pass
  int warmup = 1;                        // unmeasured requests per client before each run
  int reference_requests = 20;           // measured in-process requests (0 skips the reference)
  int max_tokens = 64;
  float temperature = 0.0f;              // 0 = greedy
  std::optional<uint64_t> seed;          // sampler seed (same for every request); unset: daemon picks
  std::string prompt = "Once upon a time";
  double deadline_s = 120;               // per-request gRPC deadline
  bool json = false;                     // one JSON document on stdout instead of a table
};

// Runs the reference and one load run per concurrency, and prints the results. Errors: invalid
// options, unreadable TLS files, a model that does not load, a client that cannot connect. Failed
// requests during a run are counted by gRPC code, not returned.
absl::Status RunStreamingLoad(const LoadOptions& options);

}  // namespace airlock::bench

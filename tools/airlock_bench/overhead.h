// airlock-bench overhead: what a running airlockd adds to a request (mTLS, admission, validation,
// queueing, protobuf) over the same work done in-process on the same GGUF file.
//
// Thread-safety: RunOverhead() is not reentrant; it starts and joins its own caller threads.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace airlock::bench {

struct OverheadOptions {
  std::string server;                    // host:port of a running airlockd; required
  std::string openai;                    // host:port of its OpenAI listener: Generate also over HTTP
  std::string ca_file;                   // PEM CA bundle the server certificate chains to; required
  std::string cert_file;                 // client certificate; required
  std::string key_file;                  // its private key; required
  std::string server_name = "localhost"; // name checked against the server certificate
  std::string model_file;                // the GGUF file the daemon serves; required
  std::string model = "stories";         // the name the daemon serves it under
  int engine_threads = 1;                // threads of the in-process engine (the daemon's `threads`)
  int requests = 2000;                   // measured requests per test and concurrency
  int warmup = 200;                      // unmeasured requests before each test
  int concurrency = 8;                   // concurrent callers of the second pass (1 is always run)
  int connections = 200;                 // fresh connections for the handshake test (0 skips)
  std::string tokenize_text = "Once upon a time, there was a little girl named Lily.";
  std::string prompt = "Once upon a time";
  bool json = false;                     // one JSON document on stdout instead of a table
  // Which tests run: "tokenize", "generate", "connect"; empty runs all (profiling one at a time).
  std::vector<std::string> only;
};

// Runs the tests and prints the results. Errors: a failed RPC (with its status), a model that does
// not load, unreadable TLS files.
absl::Status RunOverhead(const OverheadOptions& options);

}  // namespace airlock::bench

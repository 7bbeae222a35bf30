// airlock-bench shared helpers: latency distributions (nearest-rank percentiles) and their JSON form,
// and the mTLS client plumbing (PEM files, one-connection-per-channel gRPC channels) of the modes
// that talk to a running airlockd.
//
// Thread-safety: free functions without shared state; callable from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/status.h"

namespace airlock::bench {

using Clock = std::chrono::steady_clock;

// Milliseconds from `t0` until now.
double MsSince(Clock::time_point t0);

// Latency distribution of one test, milliseconds.
struct Distribution {
  size_t n = 0;
  double p50 = 0, p90 = 0, p99 = 0, mean = 0, min = 0, max = 0;
};

// Nearest-rank percentiles, mean, min and max of `v`; all zero when `v` is empty.
Distribution Summarize(std::vector<double> v);

// {"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms"}.
nlohmann::json ToJson(const Distribution& d);

// The whole file. Errors: NOT_FOUND when it cannot be read.
absl::StatusOr<std::string> ReadWhole(const std::string& path);

// CA bundle, client certificate and key read from PEM files.
absl::StatusOr<grpc::SslCredentialsOptions> LoadMtlsFiles(const std::string& ca_file, const std::string& cert_file,
                                                          const std::string& key_file);

// A channel to `server` over mTLS that shares no connection with any other channel
// (GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL = 1); `server_name` is checked against the server certificate.
std::shared_ptr<grpc::Channel> NewMtlsChannel(const std::string& server, const std::string& server_name,
                                              const grpc::SslCredentialsOptions& ssl);

// OK for an OK gRPC status; otherwise UNAVAILABLE naming `what`, the gRPC code and message.
absl::Status FromGrpc(const grpc::Status& s, const char* what);

// "OK", "CANCELLED", ... "UNAUTHENTICATED"; "CODE_<n>" for an unknown code.
std::string GrpcCodeName(grpc::StatusCode code);

}  // namespace airlock::bench

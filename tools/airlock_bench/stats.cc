// airlock-bench shared helpers: latency distributions and mTLS client plumbing (see stats.h).
#include "tools/airlock_bench/stats.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/channel_arguments.h"
#include "inference/base/status.h"

namespace airlock::bench {

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

Distribution Summarize(std::vector<double> v) {
  Distribution d;
  if (v.empty()) return d;
  std::sort(v.begin(), v.end());
  auto rank = [&](double p) {  // nearest rank
    const size_t i = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(i, 1, v.size()) - 1];
  };
  d.n = v.size();
  d.p50 = rank(50);
  d.p90 = rank(90);
  d.p99 = rank(99);
  for (double x : v) d.mean += x;
  d.mean /= static_cast<double>(v.size());
  d.min = v.front();
  d.max = v.back();
  return d;
}

nlohmann::json ToJson(const Distribution& d) {
  return {{"n", d.n}, {"p50_ms", d.p50}, {"p90_ms", d.p90}, {"p99_ms", d.p99},
          {"mean_ms", d.mean}, {"min_ms", d.min}, {"max_ms", d.max}};
}

absl::StatusOr<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<grpc::SslCredentialsOptions> LoadMtlsFiles(const std::string& ca_file, const std::string& cert_file,
                                                          const std::string& key_file) {
  grpc::SslCredentialsOptions ssl;
  AIRLOCK_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadWhole(ca_file));
  AIRLOCK_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadWhole(cert_file));
  AIRLOCK_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadWhole(key_file));
  return ssl;
}

std::shared_ptr<grpc::Channel> NewMtlsChannel(const std::string& server, const std::string& server_name,
                                              const grpc::SslCredentialsOptions& ssl) {
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(server_name);
  // Every channel gets its own connection (no subchannel sharing between channels).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(server, grpc::SslCredentials(ssl), args);
}

absl::Status FromGrpc(const grpc::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(what, ": gRPC status ", static_cast<int>(s.error_code()), ": ",
                                             s.error_message()));
}

std::string GrpcCodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {
      "OK",           "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
      "NOT_FOUND",    "ALREADY_EXISTS",    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",      "OUT_OF_RANGE",      "UNIMPLEMENTED",     "INTERNAL",         "UNAVAILABLE",
      "DATA_LOSS",    "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  if (i >= 0 && i < static_cast<int>(std::size(kNames))) return kNames[i];
  return absl::StrCat("CODE_", i);
}

}  // namespace airlock::bench

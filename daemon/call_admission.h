// The first step of every call: who is calling (identity from the verified client certificate)
// and may they call this method on this model (roles). Also the configuration snapshot that
// decides a call: taken once when the call starts, so a reload never changes a call mid-way.
//
// Thread-safety: RuntimeConfigHolder is safe from any thread; AdmitCall is a pure function of its
// arguments.
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "airlock/v1/config.pb.h"
#include "auth/access_policy.h"
#include "auth/identity.h"
#include "auth/quota.h"
#include "auth/revocation.h"
#include "daemon/request_validation.h"
#include "grpcpp/server_context.h"
#include "nlohmann/json.hpp"

namespace airlock::daemon {

class Metrics;

class AuditTrail;
class ApiKeyRegistry;

// What a reload may change, as one immutable snapshot.
struct RuntimeConfig {
  std::shared_ptr<const auth::AccessPolicy> policy;
  airlock::v1::config::IdentitySource identity_source = airlock::v1::config::SUBJECT_CN;
  RequestLimits limits;
  absl::Duration max_request_duration = absl::Seconds(600);  // Default: 600 s
  // Not owned; outlives every snapshot (the daemon's audit log, the same across reloads).
  AuditTrail* audit = nullptr;
  // Who gets which quota (reloaded with the users and roles), and the usage ledger (not owned;
  // the same across reloads; null: no quotas).
  std::shared_ptr<const auth::QuotaPolicy> quotas;
  auth::QuotaLedger* ledger = nullptr;
  // Prometheus metrics (not owned; the same across reloads; null: none kept), and the identities
  // that may scrape them over HTTPS (metrics.scrapers).
  Metrics* metrics = nullptr;
  std::set<std::string, std::less<>> metrics_scrapers;
  // The CRLs in force (not owned; the same across reloads, its list swapped by SIGHUP and the
  // tls.watch_interval re-read). Every call's certificate is checked against it, so a revocation
  // reaches connections opened before it. Null only in tests that exercise admission without TLS.
  const auth::RevocationChecker* revocation = nullptr;
  // The API keys a transport may accept (openai.api_keys; not owned; the same across reloads).
  // Null: keys are off, and a call without a client certificate is refused.
  ApiKeyRegistry* api_keys = nullptr;
};

class RuntimeConfigHolder {
 public:
  explicit RuntimeConfigHolder(std::shared_ptr<const RuntimeConfig> config) : config_(std::move(config)) {}
  std::shared_ptr<const RuntimeConfig> Get() const ABSL_LOCKS_EXCLUDED(mutex_);
  void Set(std::shared_ptr<const RuntimeConfig> config) ABSL_LOCKS_EXCLUDED(mutex_);

 private:
  mutable absl::Mutex mutex_;
  std::shared_ptr<const RuntimeConfig> config_ ABSL_GUARDED_BY(mutex_);
};

// One admitted call. Every string in it is bounded (auth::BoundedForRecord) where it enters, so
// the log lines, audit records and errors made from it stay small whatever the caller sent.
struct CallInfo {
  std::string request_id;  // 32 hex digits, unique per call
  std::string method;      // full gRPC name, "airlock.v1.Inference/Generate"
  std::string model;       // "" for calls that name none; bounded (the name is checked first)
  std::string peer;        // "ipv4:127.0.0.1:51234"
  auth::Identity identity;  // name empty for an unauthenticated call (subject, fingerprint kept)
  std::shared_ptr<const RuntimeConfig> config;
  std::chrono::steady_clock::time_point start;
  // Set by AuditSingle when this refusal was only counted (the refusal rate limit): it has no
  // record of its own, and LogCallEnd writes no line for it.
  bool refusal_counted = false;
};

// Longest peer address, method name and request id kept in a CallInfo (all come from gRPC or the
// daemon; bounded anyway, as everything that reaches a record).
inline constexpr size_t kMaxCallFieldBytes = 256;

// UNAUTHENTICATED without a usable identity, or when the connection's certificate is refused by the
// current CRLs (revoked since the handshake, or its CA's CRL expired: the handshake's verdict, so
// the same code the handshake refusal carries); INVALID_ARGUMENT for a model name longer than
// kMaxModelNameBytes; PERMISSION_DENIED when no role grants the method (and the model, when
// `model` is non-empty). Refusals are logged, counted and audited here (UNAVAILABLE instead when
// the audit record cannot be written).
//
// Transport-neutral: `origin` is what the transport knows of the caller (gRPC: OriginOf(context);
// another listener fills it from its own TLS session), so every transport admits calls with this
// one function, refusals recorded and counted alike.
//
// With API keys on (RuntimeConfig::api_keys), a call may present one instead of a certificate: it
// then acts as the key's identity (subject "API key <id>", no fingerprint), without the
// certificate checks (revocation, users[].issuer: a key is bound to its user by the administrator
// who issued it, not by a CA). A key that does not authenticate (malformed, unknown, revoked,
// expired) refuses the call, even beside a good certificate; a certificate and a key that name
// different identities refuse it too. A credential that is not meant as a key (LooksLikeApiKey)
// is ignored beside a certificate and refused without one. With keys off, `api_key` is ignored.
struct CallOrigin {
  std::string peer;             // "ipv4:127.0.0.1:51234"; bounded by AdmitCall
  std::string client_cert_pem;  // the verified client certificate (leaf), PEM; empty when none
  std::string api_key;          // the bearer credential the call carried; empty when none
};
absl::StatusOr<CallInfo> AdmitCall(const CallOrigin& origin, std::string_view method, std::string_view model,
                                   const RuntimeConfigHolder& holder);

// What a gRPC call's context says of its caller.
CallOrigin OriginOf(const grpc::ServerContextBase& context);

// AdmitCall(OriginOf(context), ...).
absl::StatusOr<CallInfo> AdmitCall(const grpc::ServerContextBase& context, std::string_view method,
                                   std::string_view model, const RuntimeConfigHolder& holder);

// absl::Status -> grpc::Status (the codes are the same numbers).
grpc::Status ToGrpcStatus(const absl::Status& status);

// Records a call that ends without generating (denied, invalid, Tokenize, ListModels, Health) in
// the audit log. Returns `status`, or UNAVAILABLE when the record cannot be written (fail closed).
// A refusal (status not OK) is subject to the refusal rate limit (AuditTrail::Refused): when it is
// only counted, call.refusal_counted is set.
absl::Status AuditSingle(CallInfo& call, const absl::Status& status);

// One structured log line per finished call: identity, method, model, code, duration, and `extra`
// (none for a refusal that was only counted; the metrics count every call).
void LogCallEnd(const CallInfo& call, const absl::Status& status, const nlohmann::json& extra = nullptr);

// A fresh request id (128 random bits, hex).
std::string NewRequestId();

}  // namespace airlock::daemon

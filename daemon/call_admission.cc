// Call admission: identity from the certificate, authorisation by role, request ids, call logs.
#include "daemon/call_admission.h"

#include <openssl/rand.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "daemon/audit_trail.h"
#include "daemon/log.h"

namespace airlock::daemon {

std::shared_ptr<const RuntimeConfig> RuntimeConfigHolder::Get() const {
  absl::MutexLock lock(&mutex_);
  return config_;
}

void RuntimeConfigHolder::Set(std::shared_ptr<const RuntimeConfig> config) {
  absl::MutexLock lock(&mutex_);
  config_ = std::move(config);
}

std::string NewRequestId() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    // OpenSSL's DRBG cannot fail once seeded; a counter keeps ids unique if it ever does.
    static std::atomic<uint64_t> counter{0};
    const uint64_t n = counter.fetch_add(1);
    std::memcpy(bytes, &n, sizeof(n));
    std::memset(bytes + sizeof(n), 0, sizeof(bytes) - sizeof(n));
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

namespace {

// Identity is a pure function of the certificate bytes and the configured source, and parsing a
// certificate (OpenSSL 3 decodes its EC key) was over half of a small call's cost: remember the
// last few hundred. Revocation is not affected: it is checked at every handshake.
class IdentityCache {
 public:
  absl::StatusOr<auth::Identity> Get(const grpc::AuthContext& context,
                                     airlock::v1::config::IdentitySource source) {
    std::vector<grpc::string_ref> pems = context.FindPropertyValues("x509_pem_cert");
    if (pems.empty() || pems[0].empty()) {
      return absl::UnauthenticatedError("the connection carries no client certificate");
    }
    std::string key(pems[0].data(), pems[0].size());
    key.push_back(static_cast<char>(source));
    {
      absl::MutexLock lock(&mutex_);
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    absl::StatusOr<auth::Identity> identity =
        auth::IdentityFromCertificate(std::string(pems[0].data(), pems[0].size()), source);
    if (identity.ok()) {
      absl::MutexLock lock(&mutex_);
      if (cache_.size() >= kMaxEntries) cache_.clear();  // simple bound; refills at once
      cache_.emplace(std::move(key), *identity);
    }
    return identity;
  }

 private:
  static constexpr size_t kMaxEntries = 512;
  absl::Mutex mutex_;
  absl::flat_hash_map<std::string, auth::Identity> cache_ ABSL_GUARDED_BY(mutex_);
};

IdentityCache& Identities() {
  static IdentityCache* cache = new IdentityCache();
  return *cache;
}

void LogDenied(const CallInfo& call, const absl::Status& status) {
  LogWarning("call denied", {{"request_id", call.request_id},
                             {"identity", call.identity.name},
                             {"subject", call.identity.subject},
                             {"fingerprint", call.identity.fingerprint},
                             {"peer", call.peer},
                             {"method", call.method},
                             {"model", call.model},
                             {"code", absl::StatusCodeToString(status.code())},
                             {"reason", std::string(status.message())}});
}

}  // namespace

absl::StatusOr<CallInfo> AdmitCall(const grpc::CallbackServerContext& context, std::string_view method,
                                   std::string_view model, const RuntimeConfigHolder& holder) {
  CallInfo call;
  call.start = std::chrono::steady_clock::now();
  call.request_id = NewRequestId();
  call.method = std::string(method);
  call.model = std::string(model);
  call.peer = context.peer();
  call.config = holder.Get();
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  absl::StatusOr<auth::Identity> identity = auth ? Identities().Get(*auth, call.config->identity_source)
                                                 : absl::UnauthenticatedError("no client certificate");
  if (!identity.ok()) {
    const absl::Status status = absl::UnauthenticatedError(identity.status().message());
    LogDenied(call, status);
    return AuditSingle(call, status);
  }
  call.identity = std::move(*identity);
  if (absl::Status allowed = call.config->policy->Authorize(call.identity.name, method, model); !allowed.ok()) {
    LogDenied(call, allowed);
    return AuditSingle(call, allowed);
  }
  return call;
}

absl::Status AdmitModel(CallInfo& call, std::string_view model) {
  call.model = std::string(model);
  absl::Status allowed = call.config->policy->Authorize(call.identity.name, call.method, model);
  if (!allowed.ok()) LogDenied(call, allowed);
  return allowed;
}

absl::Status AuditSingle(const CallInfo& call, const absl::Status& status) {
  if (call.config->audit == nullptr) return status;
  AuditTrail::Outcome outcome;
  outcome.status = status;
  switch (status.code()) {
    case absl::StatusCode::kOk: outcome.decision = audit::Decision::kAllowed; break;
    case absl::StatusCode::kUnauthenticated: outcome.decision = audit::Decision::kUnauthenticated; break;
    case absl::StatusCode::kPermissionDenied: outcome.decision = audit::Decision::kDeniedByRole; break;
    default: outcome.decision = audit::Decision::kInvalid; break;
  }
  if (absl::Status recorded = call.config->audit->End(call, outcome); !recorded.ok()) return recorded;
  return status;
}

void LogCallEnd(const CallInfo& call, const absl::Status& status, const nlohmann::json& extra) {
  nlohmann::json fields = {
      {"request_id", call.request_id},
      {"identity", call.identity.name},
      {"peer", call.peer},
      {"method", call.method},
      {"model", call.model},
      {"code", absl::StatusCodeToString(status.code())},
      {"duration_ms",
       std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - call.start).count()}};
  if (!status.ok()) fields["error"] = std::string(status.message());
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it) fields[it.key()] = it.value();
  }
  Log(status.ok() ? LogLevel::kInfo : LogLevel::kWarning, "call", fields);
}

}  // namespace airlock::daemon

// Call admission: identity from the certificate, authorisation by role, request ids, call logs.
#include "daemon/call_admission.h"

#include "daemon/metrics.h"

#include <openssl/rand.h>

#include <optional>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "auth/bounded_text.h"
#include "auth/quota.h"
#include "daemon/api_keys.h"
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
  // A google.rpc.Status payload (quota refusals) travels as the standard error details.
  if (auto details = status.GetPayload(auth::kRpcStatusPayloadUrl); details.has_value()) {
    return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                        std::string(*details));
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

namespace {

// Counts the call's end in the metrics (when kept); returns its duration in seconds.
double CountCallEnd(const CallInfo& call, const absl::Status& status) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - call.start).count();
  if (call.config != nullptr && call.config->metrics != nullptr) {
    call.config->metrics->CallEnded(call.method, call.model, status.code(), seconds);
  }
  return seconds;
}

// `reason`: the airlock_auth_failures_total label.
void LogDenied(const CallInfo& call, const absl::Status& status, std::string_view reason) {
  CountCallEnd(call, status);
  // No reason: not an authentication failure (an invalid request), not counted as one.
  if (!reason.empty() && call.config != nullptr && call.config->metrics != nullptr) {
    call.config->metrics->AuthFailed(reason);
  }
  if (call.refusal_counted) return;  // in the aggregate's log line (AuditTrail)
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

CallOrigin OriginOf(const grpc::ServerContextBase& context) {
  CallOrigin origin;
  origin.peer = context.peer();
  if (std::shared_ptr<const grpc::AuthContext> auth = context.auth_context(); auth != nullptr) {
    origin.client_cert_pem = auth::PeerCertificatePem(*auth);
  }
  return origin;
}

absl::StatusOr<CallInfo> AdmitCall(const grpc::ServerContextBase& context, std::string_view method,
                                   std::string_view model, const RuntimeConfigHolder& holder) {
  return AdmitCall(OriginOf(context), method, model, holder);
}

absl::StatusOr<CallInfo> AdmitCall(const CallOrigin& origin, std::string_view method, std::string_view model,
                                   const RuntimeConfigHolder& holder) {
  CallInfo call;
  call.start = std::chrono::steady_clock::now();
  call.request_id = NewRequestId();
  // The one place these caller-influenced strings enter a call's logs, records and errors.
  call.method = auth::BoundedForRecord(method, kMaxCallFieldBytes);
  call.model = auth::BoundedForRecord(model, kMaxModelNameBytes);
  call.peer = auth::BoundedForRecord(origin.peer, kMaxCallFieldBytes);
  call.config = holder.Get();
  const auto refuse = [&call](const absl::Status& status, std::string_view reason) {
    const absl::Status recorded = AuditSingle(call, status);
    LogDenied(call, status, reason);
    return recorded;
  };
  const ApiKeyRegistry* keys = call.config->api_keys;
  const bool with_key = keys != nullptr && !origin.api_key.empty() &&
                        (LooksLikeApiKey(origin.api_key) || origin.client_cert_pem.empty());
  // A call authenticated by a key alone is its user's, by the key.
  const auto identity_of_key = [&call](const ApiKeyRecord& k) {
    call.identity.name = auth::BoundedForRecord(k.identity, auth::kMaxIdentityNameBytes);
    call.identity.subject = absl::StrCat("API key ", k.id);
  };
  std::optional<ApiKeyRecord> key;
  if (with_key) {
    ApiKeyRecord refused_key;  // a revoked or expired key: the refusal is recorded under its user
    absl::StatusOr<ApiKeyRecord> authenticated = keys->Authenticate(origin.api_key, absl::Now(), &refused_key);
    if (!authenticated.ok()) {
      call.identity = auth::CertificateDetails(origin.client_cert_pem);
      if (!refused_key.id.empty() && origin.client_cert_pem.empty()) identity_of_key(refused_key);
      return refuse(authenticated.status(), "api_key_refused");
    }
    key = *std::move(authenticated);
  }
  if (key.has_value() && origin.client_cert_pem.empty()) {
    identity_of_key(*key);
  } else {
    absl::StatusOr<auth::Identity> identity =
        auth::IdentityFromPeerCertificate(origin.client_cert_pem, call.config->identity_source);
    if (!identity.ok()) {
      // No identity, but the record still says which certificate was presented.
      call.identity = auth::CertificateDetails(origin.client_cert_pem);
      if (keys != nullptr && origin.client_cert_pem.empty()) {
        return refuse(absl::UnauthenticatedError("no client certificate and no API key (Authorization: Bearer)"),
                      "unauthenticated");
      }
      return refuse(absl::UnauthenticatedError(identity.status().message()), "unauthenticated");
    }
    call.identity = std::move(*identity);
    if (key.has_value() && key->identity != call.identity.name) {
      return refuse(absl::UnauthenticatedError(absl::StrCat("API key ", key->id,
                                                            " belongs to another identity than the client certificate")),
                    "api_key_refused");
    }
  }
  // Authenticated by a key alone: there is no certificate to check against the CRLs or an issuer
  // binding.
  if (!key.has_value() || !origin.client_cert_pem.empty()) {
    // Revocation per call, not only per handshake: a connection outlives the CRL it was checked
    // against. After the identity, so that the refusal names who was refused.
    auth::RevocationList::Leaf issuer;  // stays empty without a checker: a CA-bound user is refused
    if (call.config->revocation != nullptr) {
      const absl::Status checked = call.config->revocation->Check(origin.client_cert_pem, absl::Now(), &issuer);
      if (!checked.ok()) {
        return refuse(absl::UnauthenticatedError(absl::StrCat("client certificate serial ", call.identity.serial_hex,
                                                              " refused: ", checked.message())),
                      "certificate_refused");
      }
    }
    // A user bound to an issuing CA (users[].issuer) is only that user in certificates of that CA.
    if (absl::Status bound = call.config->policy->CheckIssuer(call.identity.name, issuer.issuer_subject,
                                                               issuer.issuer_fingerprint);
        !bound.ok()) {
      return refuse(bound, "not_permitted");
    }
  }
  // Before the name is matched or echoed anywhere (the policy's refusal quotes it).
  if (absl::Status valid = CheckModelName(model); !valid.ok()) return refuse(valid, "");
  if (absl::Status allowed = call.config->policy->Authorize(call.identity.name, method, model); !allowed.ok()) {
    return refuse(allowed, allowed.code() == absl::StatusCode::kUnauthenticated ? "unauthenticated" : "not_permitted");
  }
  return call;
}

absl::Status AuditSingle(CallInfo& call, const absl::Status& status) {
  if (call.config->audit == nullptr) return status;
  AuditTrail::Outcome outcome;
  outcome.status = status;
  switch (status.code()) {
    case absl::StatusCode::kOk: outcome.decision = audit::Decision::kAllowed; break;
    case absl::StatusCode::kUnauthenticated: outcome.decision = audit::Decision::kUnauthenticated; break;
    case absl::StatusCode::kPermissionDenied: outcome.decision = audit::Decision::kDeniedByRole; break;
    // A quota, or the model's full queue (the fair-use limits).
    case absl::StatusCode::kResourceExhausted: outcome.decision = audit::Decision::kDeniedByQuota; break;
    default: outcome.decision = audit::Decision::kInvalid; break;
  }
  if (!status.ok()) return call.config->audit->Refused(call, outcome);
  if (absl::Status recorded = call.config->audit->End(call, outcome); !recorded.ok()) return recorded;
  return status;
}

void LogCallEnd(const CallInfo& call, const absl::Status& status, const nlohmann::json& extra) {
  const double seconds = CountCallEnd(call, status);
  if (call.refusal_counted) return;  // in the aggregate's log line (AuditTrail)
  nlohmann::json fields = {
      {"request_id", call.request_id},
      {"identity", call.identity.name},
      {"peer", call.peer},
      {"method", call.method},
      {"model", call.model},
      {"code", absl::StatusCodeToString(status.code())},
      {"duration_ms", seconds * 1000}};
  if (!status.ok()) fields["error"] = std::string(status.message());
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it) fields[it.key()] = it.value();
  }
  Log(status.ok() ? LogLevel::kInfo : LogLevel::kWarning, "call", fields);
}

}  // namespace airlock::daemon

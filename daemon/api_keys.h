// API keys for clients of the OpenAI-compatible listener that cannot present a certificate
// (config openai.api_keys; docs/security.md, "API keys"). An administrator issues a key for one
// configured user (airlockctl apikey create); a call that carries it acts as that user, with the
// user's roles and quotas, and is audited under that identity.
//
// A key reads "alk_" + id (16 hex digits) + "_" + secret (32 random bytes, base64url, 43
// characters). The store holds, per key, its metadata and HMAC-SHA256(K, id and secret), never the
// secret; K is derived from the audit log's HMAC secret (audit.hmac_secret_file), which is not in
// the state store. A second MAC under K covers every field of the record, so that whoever can write
// the state store cannot bind a key to another identity, extend its life, lift a revocation by
// editing the record, or plant a key of their own: a record that fails it is not loaded (and says
// so in the log). Records live in the state store's per-identity family (`quota`) under
// "apikey/" + id; a revoked key's record stays, marked, so that listings show it.
//
// Thread-safety: every method may be called from any thread. Create and Revoke write durably
// (synced) before the change applies; Authenticate sees a revocation as soon as Revoke returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "audit/state_db.h"

namespace airlock::daemon {

struct ApiKeyRecord {
  std::string id;        // 16 lowercase hex digits
  std::string identity;  // the user the key acts as
  std::string label;
  int64_t created_unix_seconds = 0;
  std::string created_by;
  int64_t expires_unix_seconds = 0;  // 0: never
  int64_t revoked_unix_seconds = 0;  // 0: not revoked
  std::string revoked_by;
  std::string secret_mac;  // HMAC-SHA256(K, "secret", id, secret): 32 raw bytes
};

// What the daemon derives K from the audit HMAC secret with.
inline constexpr std::string_view kApiKeyMacLabel = "airlock/v1 api key mac key";
// Every key starts with this.
inline constexpr std::string_view kApiKeyPrefix = "alk_";
// Bounds: live keys (neither revoked nor expired) in all and per identity, records kept in all
// (revoked and expired ones count until the store is compacted by hand), the label's length.
inline constexpr size_t kMaxLiveApiKeys = 10000;
inline constexpr size_t kMaxLiveApiKeysPerIdentity = 100;
inline constexpr size_t kMaxApiKeyRecords = 100000;
inline constexpr size_t kMaxApiKeyLabelBytes = 128;
// How far ahead a key's expiry may be.
inline constexpr absl::Duration kMaxApiKeyLifetime = absl::Hours(24 * 3653);

// A key id: 16 lowercase hex digits.
bool IsApiKeyId(std::string_view id);
// OK, or INVALID_ARGUMENT naming the label's fault (longer than kMaxApiKeyLabelBytes, or not
// printable ASCII): the Admin API's rule, and Create's.
absl::Status CheckApiKeyLabel(std::string_view label);

// Whether `credential` is meant as one of our keys (starts with kApiKeyPrefix). A bearer token that
// is not is no API key: with a client certificate it is ignored (OpenAI clients always send one).
bool LooksLikeApiKey(std::string_view credential);

class ApiKeyRegistry {
 public:
  // Loads every key from `db` (which must outlive the registry). `mac_key`: K, at least 32 bytes
  // (the daemon's is AuditTrail::DeriveKey(kApiKeyMacLabel)). A record that does not parse or fails
  // its MAC is left out and logged (it can never authenticate). UNAVAILABLE when the store cannot
  // be read; INVALID_ARGUMENT for a short key.
  static absl::StatusOr<std::unique_ptr<ApiKeyRegistry>> Open(audit::StateDb* db, std::string mac_key);

  struct Created {
    ApiKeyRecord key;
    std::string secret;  // the whole credential, "alk_<id>_<secret>"
  };
  // A fresh random key id (16 lowercase hex digits), for Create: chosen first so that the record of
  // the call that issues a key can name it.
  static std::string NewId();

  // Issues the key `id` (NewId). INVALID_ARGUMENT for a malformed id, a label that is too long or not printable ASCII, an expiry
  // not in the future or beyond kMaxApiKeyLifetime (expires == absl::InfiniteFuture(): never);
  // RESOURCE_EXHAUSTED past the bounds above; ALREADY_EXISTS for an id in use; UNAVAILABLE when the
  // store cannot write (nothing issued). Whether `identity` is a configured user is the caller's
  // check.
  absl::StatusOr<Created> Create(std::string_view id, std::string_view identity, std::string_view label, absl::Time expires,
                                 std::string_view created_by, absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

  // Marks the key revoked, durably, before returning it. NOT_FOUND for an unknown id; a key revoked
  // already is returned unchanged.
  absl::StatusOr<ApiKeyRecord> Revoke(std::string_view id, std::string_view revoked_by, absl::Time now)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Oldest first (by creation, then id); only `identity`'s when not empty.
  std::vector<ApiKeyRecord> List(std::string_view identity) const ABSL_LOCKS_EXCLUDED(mu_);

  // The key `credential` is, when it is a valid, known, unrevoked and unexpired key with this
  // secret. Otherwise UNAUTHENTICATED saying which of those it is not, without echoing any of it
  // (an unknown id and a wrong secret read alike). The secret is compared in constant time. When
  // the secret is right but the key revoked or expired, `refused` (if given) receives the key, so
  // that the refusal can be recorded under its identity.
  absl::StatusOr<ApiKeyRecord> Authenticate(std::string_view credential, absl::Time now,
                                            ApiKeyRecord* refused = nullptr) const ABSL_LOCKS_EXCLUDED(mu_);

  // Serialized record with its MAC, and back (exposed for tests that tamper with the store).
  std::string Encode(const ApiKeyRecord& record) const;
  absl::StatusOr<ApiKeyRecord> Decode(std::string_view value) const;

 private:
  ApiKeyRegistry(audit::StateDb* db, std::string mac_key) : db_(db), mac_key_(std::move(mac_key)) {}
  std::string SecretMac(std::string_view id, std::string_view secret) const;
  std::string RecordMac(const ApiKeyRecord& record) const;
  absl::Status Save(const ApiKeyRecord& record) const;

  audit::StateDb* const db_;
  const std::string mac_key_;
  mutable absl::Mutex mu_;
  std::map<std::string, ApiKeyRecord, std::less<>> keys_ ABSL_GUARDED_BY(mu_);  // by id
};

}  // namespace airlock::daemon

// API keys: issue, revoke, list, authenticate; records in the state store with a MAC each.
#include "daemon/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "audit/privacy.h"
#include "auth/digest.h"
#include "daemon/call_admission.h"
#include "daemon/log.h"
#include "inference/base/status.h"
#include "nlohmann/json.hpp"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace airlock::daemon {
namespace {

constexpr std::string_view kStorePrefix = "apikey/";
constexpr size_t kIdHexDigits = 16;
constexpr size_t kSecretBytes = 32;
constexpr size_t kSecretChars = 43;  // base64url of 32 bytes, unpadded
constexpr size_t kCredentialChars = kApiKeyPrefix.size() + kIdHexDigits + 1 + kSecretChars;
constexpr int kRecordVersion = 1;

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool IsBase64Url(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isalnum(c) || c == '-' || c == '_'; });
}

// Length-prefixed, so that no two different field lists give the same bytes.
void AppendField(std::string& out, std::string_view field) {
  const uint64_t n = field.size();
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xFF));
  out.append(field);
}
void AppendField(std::string& out, int64_t value) { AppendField(out, std::to_string(value)); }

std::optional<std::string> RandomBytes(size_t n) {
  std::string bytes(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), static_cast<int>(n)) != 1) return std::nullopt;
  return bytes;
}

std::string UtcText(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds), absl::UTCTimeZone());
}

bool Live(const ApiKeyRecord& key, absl::Time now) {
  return key.revoked_unix_seconds == 0 &&
         (key.expires_unix_seconds == 0 || absl::FromUnixSeconds(key.expires_unix_seconds) > now);
}

}  // namespace

bool IsApiKeyId(std::string_view id) { return id.size() == kIdHexDigits && IsLowerHex(id); }

absl::Status CheckApiKeyLabel(std::string_view label) {
  if (label.size() > kMaxApiKeyLabelBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("label: ", label.size(), " bytes is more than the maximum of ", kMaxApiKeyLabelBytes));
  }
  if (!std::all_of(label.begin(), label.end(), [](char c) { return c >= 0x20 && c < 0x7F; })) {
    return absl::InvalidArgumentError("label: only printable ASCII is allowed");
  }
  return absl::OkStatus();
}

bool LooksLikeApiKey(std::string_view credential) { return credential.substr(0, kApiKeyPrefix.size()) == kApiKeyPrefix; }

std::string ApiKeyRegistry::SecretMac(std::string_view id, std::string_view secret) const {
  std::string message;
  AppendField(message, "airlock api key secret v1");
  AppendField(message, id);
  AppendField(message, secret);
  return audit::HmacSha256(mac_key_, message);
}

std::string ApiKeyRegistry::RecordMac(const ApiKeyRecord& r) const {
  std::string message;
  AppendField(message, "airlock api key record v1");
  AppendField(message, r.id);
  AppendField(message, r.identity);
  AppendField(message, r.label);
  AppendField(message, r.created_unix_seconds);
  AppendField(message, r.created_by);
  AppendField(message, r.expires_unix_seconds);
  AppendField(message, r.revoked_unix_seconds);
  AppendField(message, r.revoked_by);
  AppendField(message, r.secret_mac);
  return audit::HmacSha256(mac_key_, message);
}

std::string ApiKeyRegistry::Encode(const ApiKeyRecord& r) const {
  const nlohmann::json json = {{"v", kRecordVersion},
                               {"id", r.id},
                               {"identity", r.identity},
                               {"label", r.label},
                               {"created", r.created_unix_seconds},
                               {"created_by", r.created_by},
                               {"expires", r.expires_unix_seconds},
                               {"revoked", r.revoked_unix_seconds},
                               {"revoked_by", r.revoked_by},
                               {"secret_mac", auth::HexLower(r.secret_mac)},
                               {"mac", auth::HexLower(RecordMac(r))}};
  // Identities and labels are bounded text the daemon checked; replace anything else rather than
  // throw (the MAC covers the stored bytes' meaning, and such a record would fail it).
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<ApiKeyRecord> ApiKeyRegistry::Decode(std::string_view value) const {
  const nlohmann::json json = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return absl::DataLossError("not a JSON object");
  ApiKeyRecord r;
  try {
    if (json.at("v").get<int>() != kRecordVersion) return absl::DataLossError("unknown record version");
    r.id = json.at("id").get<std::string>();
    r.identity = json.at("identity").get<std::string>();
    r.label = json.at("label").get<std::string>();
    r.created_unix_seconds = json.at("created").get<int64_t>();
    r.created_by = json.at("created_by").get<std::string>();
    r.expires_unix_seconds = json.at("expires").get<int64_t>();
    r.revoked_unix_seconds = json.at("revoked").get<int64_t>();
    r.revoked_by = json.at("revoked_by").get<std::string>();
    const std::optional<std::string> secret_mac = auth::HexDecode(json.at("secret_mac").get<std::string>());
    const std::optional<std::string> mac = auth::HexDecode(json.at("mac").get<std::string>());
    if (!secret_mac.has_value() || !mac.has_value()) return absl::DataLossError("a MAC is not hex");
    r.secret_mac = *secret_mac;
    const std::string expected = RecordMac(r);
    if (mac->size() != expected.size() || CRYPTO_memcmp(mac->data(), expected.data(), expected.size()) != 0) {
      return absl::DataLossError("its MAC does not verify (changed outside airlockd, or another audit HMAC secret)");
    }
  } catch (const nlohmann::json::exception&) {
    return absl::DataLossError("a field is missing or of the wrong type");
  }
  if (!IsApiKeyId(r.id)) return absl::DataLossError("malformed id");
  return r;
}

absl::StatusOr<std::unique_ptr<ApiKeyRegistry>> ApiKeyRegistry::Open(audit::StateDb* db, std::string mac_key) {
  if (mac_key.size() < 32) return absl::InvalidArgumentError("API keys: the MAC key is shorter than 32 bytes");
  std::unique_ptr<ApiKeyRegistry> registry(new ApiKeyRegistry(db, std::move(mac_key)));
  std::unique_ptr<rocksdb::Iterator> it(db->db()->NewIterator(rocksdb::ReadOptions(), db->quota()));
  size_t refused = 0;
  absl::MutexLock lock(&registry->mu_);
  for (it->Seek(audit::ToSlice(kStorePrefix)); it->Valid() && it->key().starts_with(audit::ToSlice(kStorePrefix));
       it->Next()) {
    const std::string_view stored_id = audit::ToStringView(it->key()).substr(kStorePrefix.size());
    absl::StatusOr<ApiKeyRecord> record = registry->Decode(audit::ToStringView(it->value()));
    if (record.ok() && record->id != stored_id) record = absl::DataLossError("stored under another id");
    if (!record.ok()) {
      ++refused;
      LogError("api key record refused", {{"key", auth::HexLower(std::string(stored_id.substr(0, 64)))},
                                          {"reason", std::string(record.status().message())}});
      continue;
    }
    registry->keys_.emplace(record->id, *std::move(record));
  }
  AIRLOCK_RETURN_IF_ERROR(
      audit::FromRocksDb(it->status(), absl::StatusCode::kUnavailable, "state store: reading API keys"));
  LogInfo("api keys loaded", {{"keys", registry->keys_.size()}, {"refused", refused}});
  return registry;
}

absl::Status ApiKeyRegistry::Save(const ApiKeyRecord& record) const {
  rocksdb::WriteBatch batch;
  const std::string key = absl::StrCat(ToAbsl(kStorePrefix), record.id);
  if (const rocksdb::Status put = batch.Put(db_->quota(), key, Encode(record)); !put.ok()) {
    return audit::FromRocksDb(put, absl::StatusCode::kInternal, "state store: API key");
  }
  return db_->Write(&batch, /*sync=*/true);
}

// The first 64 of a request id's 128 random bits (its fallback, a counter, keeps them unique).
std::string ApiKeyRegistry::NewId() { return NewRequestId().substr(0, kIdHexDigits); }

absl::StatusOr<ApiKeyRegistry::Created> ApiKeyRegistry::Create(std::string_view id, std::string_view identity,
                                                                std::string_view label,
                                                                absl::Time expires, std::string_view created_by,
                                                                absl::Time now) {
  AIRLOCK_RETURN_IF_ERROR(CheckApiKeyLabel(label));
  if (identity.empty()) return absl::InvalidArgumentError("identity: required");
  if (!IsApiKeyId(id)) return absl::InvalidArgumentError("id: not 16 lowercase hex digits");
  if (expires != absl::InfiniteFuture() && expires <= now) {
    return absl::InvalidArgumentError("expires_unix_seconds: must be in the future");
  }
  if (expires != absl::InfiniteFuture() && expires - now > kMaxApiKeyLifetime) {
    return absl::InvalidArgumentError("expires_unix_seconds: at most 10 years ahead (or never_expires)");
  }
  Created created;
  ApiKeyRecord& r = created.key;
  r.identity = std::string(identity);
  r.label = std::string(label);
  r.created_unix_seconds = absl::ToUnixSeconds(now);
  r.created_by = std::string(created_by);
  r.expires_unix_seconds = expires == absl::InfiniteFuture() ? 0 : absl::ToUnixSeconds(expires);
  const std::optional<std::string> secret = RandomBytes(kSecretBytes);
  if (!secret.has_value()) return absl::InternalError("no random bytes for an API key");

  absl::MutexLock lock(&mu_);
  size_t live = 0, live_for_identity = 0;
  for (const auto& [id, key] : keys_) {
    if (!Live(key, now)) continue;
    ++live;
    if (key.identity == identity) ++live_for_identity;
  }
  if (keys_.size() >= kMaxApiKeyRecords || live >= kMaxLiveApiKeys) {
    return absl::ResourceExhaustedError(absl::StrCat("this daemon holds ", live, " live API keys and ", keys_.size(),
                                                     " records; the maximum is ", kMaxLiveApiKeys, " and ",
                                                     kMaxApiKeyRecords));
  }
  if (live_for_identity >= kMaxLiveApiKeysPerIdentity) {
    return absl::ResourceExhaustedError(absl::StrCat("this identity has ", live_for_identity,
                                                     " live API keys, the maximum; revoke one first"));
  }
  if (keys_.contains(id)) return absl::AlreadyExistsError("an API key with this id exists");
  r.id = std::string(id);
  const std::string secret_text = absl::WebSafeBase64Escape(*secret);
  r.secret_mac = SecretMac(r.id, *secret);
  AIRLOCK_RETURN_IF_ERROR(Save(r));
  keys_.emplace(r.id, r);
  created.secret = absl::StrCat(ToAbsl(kApiKeyPrefix), r.id, "_", secret_text);
  return created;
}

absl::StatusOr<ApiKeyRecord> ApiKeyRegistry::Revoke(std::string_view id, std::string_view revoked_by, absl::Time now) {
  absl::MutexLock lock(&mu_);
  const auto it = keys_.find(id);
  if (it == keys_.end()) return absl::NotFoundError("no API key has this id");
  if (it->second.revoked_unix_seconds != 0) return it->second;
  ApiKeyRecord revoked = it->second;
  revoked.revoked_unix_seconds = std::max<int64_t>(absl::ToUnixSeconds(now), 1);
  revoked.revoked_by = std::string(revoked_by);
  AIRLOCK_RETURN_IF_ERROR(Save(revoked));
  it->second = revoked;
  return revoked;
}

std::vector<ApiKeyRecord> ApiKeyRegistry::List(std::string_view identity) const {
  std::vector<ApiKeyRecord> out;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, key] : keys_) {
      if (identity.empty() || key.identity == identity) out.push_back(key);
    }
  }
  std::sort(out.begin(), out.end(), [](const ApiKeyRecord& a, const ApiKeyRecord& b) {
    return std::tie(a.created_unix_seconds, a.id) < std::tie(b.created_unix_seconds, b.id);
  });
  return out;
}

absl::StatusOr<ApiKeyRecord> ApiKeyRegistry::Authenticate(std::string_view credential, absl::Time now,
                                                          ApiKeyRecord* refused) const {
  // "alk_" + id + "_" + secret, nothing else; nothing of it is echoed.
  if (credential.size() != kCredentialChars || !LooksLikeApiKey(credential) ||
      credential[kApiKeyPrefix.size() + kIdHexDigits] != '_') {
    return absl::UnauthenticatedError(
        absl::StrCat("API key malformed: expected ", ToAbsl(kApiKeyPrefix), "<16 hex digits>_<43 base64url characters>"));
  }
  const std::string_view id = credential.substr(kApiKeyPrefix.size(), kIdHexDigits);
  const std::string_view secret_text = credential.substr(kApiKeyPrefix.size() + kIdHexDigits + 1);
  std::string secret;
  if (!IsLowerHex(id) || !IsBase64Url(secret_text) ||
      !absl::WebSafeBase64Unescape(ToAbsl(secret_text), &secret) || secret.size() != kSecretBytes ||
      absl::WebSafeBase64Escape(secret) != secret_text) {  // one spelling per secret (the last digit's spare bits)
    return absl::UnauthenticatedError(
        absl::StrCat("API key malformed: expected ", ToAbsl(kApiKeyPrefix), "<16 hex digits>_<43 base64url characters>"));
  }
  const std::string presented = SecretMac(id, secret);
  ApiKeyRecord key;
  {
    absl::MutexLock lock(&mu_);
    const auto it = keys_.find(id);
    if (it == keys_.end()) return absl::UnauthenticatedError("API key not recognised");
    key = it->second;
  }
  if (key.secret_mac.size() != presented.size() ||
      CRYPTO_memcmp(key.secret_mac.data(), presented.data(), presented.size()) != 0) {
    return absl::UnauthenticatedError("API key not recognised");
  }
  if (!Live(key, now) && refused != nullptr) *refused = key;
  if (key.revoked_unix_seconds != 0) {
    return absl::UnauthenticatedError(
        absl::StrCat("API key ", key.id, " was revoked at ", UtcText(key.revoked_unix_seconds)));
  }
  if (key.expires_unix_seconds != 0 && absl::FromUnixSeconds(key.expires_unix_seconds) <= now) {
    return absl::UnauthenticatedError(
        absl::StrCat("API key ", key.id, " expired at ", UtcText(key.expires_unix_seconds)));
  }
  return key;
}

}  // namespace airlock::daemon

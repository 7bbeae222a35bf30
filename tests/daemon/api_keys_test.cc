// API keys as an attacker would probe them: the secret is never stored, a wrong or malformed key
// reads like an unknown one and echoes nothing, revocation is immediate and durable, expiry holds,
// and whoever can write the state store cannot rebind, extend, un-revoke or plant a key.
#include "daemon/api_keys.h"

#include <memory>
#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "audit/state_db.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "tests/support/test_data.h"

namespace airlock::daemon {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kMacKey(32, 'k');

class ApiKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = airlock::testing::MakeTempDir() + "/state";
    Reopen();
  }

  void Reopen(const std::string& mac_key = kMacKey) {
    keys_.reset();
    db_.reset();
    auto db = audit::StateDb::Open(dir_);
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    auto keys = ApiKeyRegistry::Open(db_.get(), mac_key);
    ASSERT_TRUE(keys.ok()) << keys.status();
    keys_ = *std::move(keys);
  }

  ApiKeyRegistry::Created Create(const std::string& user, absl::Time expires = absl::InfiniteFuture()) {
    auto created = keys_->Create(ApiKeyRegistry::NewId(), user, "ci-bot", expires, "root", now_);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : ApiKeyRegistry::Created{};
  }

  // Every (key, value) of the store's per-identity family.
  std::vector<std::pair<std::string, std::string>> Stored() const {
    std::vector<std::pair<std::string, std::string>> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(rocksdb::ReadOptions(), db_->quota()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) out.emplace_back(it->key().ToString(), it->value().ToString());
    return out;
  }

  void Put(const std::string& key, const std::string& value) {
    rocksdb::WriteBatch batch;
    ASSERT_TRUE(batch.Put(db_->quota(), key, value).ok());
    ASSERT_TRUE(db_->Write(&batch, true).ok());
  }

  std::string dir_;
  absl::Time now_ = absl::Now();
  std::unique_ptr<audit::StateDb> db_;
  std::unique_ptr<ApiKeyRegistry> keys_;
};

TEST_F(ApiKeysTest, AKeyAuthenticatesAsItsUserAndItsSecretIsNeverStored) {
  const ApiKeyRegistry::Created created = Create("alice");
  // "alk_" + 16 lowercase hex digits + "_" + 43 base64url characters.
  const std::string& s = created.secret;
  ASSERT_EQ(s.size(), 64u) << s;
  EXPECT_EQ(s.substr(0, 4), "alk_");
  EXPECT_EQ(s[20], '_');
  EXPECT_TRUE(std::all_of(s.begin() + 4, s.begin() + 20, [](char c) { return std::isdigit(c) || (c >= 'a' && c <= 'f'); }))
      << s;
  EXPECT_TRUE(std::all_of(s.begin() + 21, s.end(), [](char c) { return std::isalnum(c) || c == '-' || c == '_'; }))
      << s;
  EXPECT_EQ(created.secret.substr(4, 16), created.key.id);
  absl::StatusOr<ApiKeyRecord> key = keys_->Authenticate(created.secret, now_);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(key->identity, "alice");
  EXPECT_EQ(key->created_by, "root");
  EXPECT_EQ(key->label, "ci-bot");

  // Neither the credential, its secret part nor the secret's bytes are in the store.
  const std::string secret_text = created.secret.substr(21);
  std::string secret_bytes;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(secret_text, &secret_bytes));
  const auto stored = Stored();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].first, "apikey/" + created.key.id);
  EXPECT_THAT(stored[0].second, Not(HasSubstr(secret_text)));
  EXPECT_THAT(stored[0].second, Not(HasSubstr(secret_bytes)));
  EXPECT_THAT(stored[0].second, Not(HasSubstr(absl::BytesToHexString(secret_bytes))));

  // And it still authenticates after a restart.
  Reopen();
  EXPECT_TRUE(keys_->Authenticate(created.secret, now_).ok());
}

TEST_F(ApiKeysTest, WrongUnknownAndMalformedKeysAreRefusedWithoutEcho) {
  const ApiKeyRegistry::Created created = Create("alice");
  std::string wrong_secret = created.secret;
  wrong_secret[30] = wrong_secret[30] == 'x' ? 'y' : 'x';
  std::string unknown_id = created.secret;
  unknown_id[4] = unknown_id[4] == 'a' ? 'b' : 'a';
  std::string spare_bits = created.secret;  // the same secret, another spelling of its last digit
  spare_bits.back() = static_cast<char>(spare_bits.back() ^ 1);
  const std::vector<std::string> bad = {
      wrong_secret, unknown_id, spare_bits, created.secret + "=", created.secret.substr(0, 63),
      "alk_", "", "sk-" + created.secret.substr(3), "ALK_" + created.secret.substr(4),
      created.secret.substr(0, 20) + "-" + created.secret.substr(21),  // wrong separator
      "alk_" + std::string(16, 'G') + "_" + created.secret.substr(21), std::string(100000, 'a'),
      created.secret.substr(0, 40) + std::string(1, '\0') + created.secret.substr(41)};
  for (const std::string& credential : bad) {
    absl::StatusOr<ApiKeyRecord> key = keys_->Authenticate(credential, now_);
    EXPECT_EQ(key.status().code(), absl::StatusCode::kUnauthenticated) << credential.substr(0, 80);
    EXPECT_LT(key.status().message().size(), 120u);
    if (credential.size() > 25) {
      EXPECT_THAT(std::string(key.status().message()), Not(HasSubstr(credential.substr(21, 12))));
    }
  }
  // A wrong secret and an unknown id read alike.
  EXPECT_EQ(keys_->Authenticate(wrong_secret, now_).status(), keys_->Authenticate(unknown_id, now_).status());
}

TEST_F(ApiKeysTest, RevocationIsImmediateDurableAndIdempotent) {
  const ApiKeyRegistry::Created created = Create("alice");
  const ApiKeyRegistry::Created other = Create("alice");
  absl::StatusOr<ApiKeyRecord> revoked = keys_->Revoke(created.key.id, "auditor", now_);
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  EXPECT_EQ(revoked->revoked_by, "auditor");
  absl::StatusOr<ApiKeyRecord> refused = keys_->Authenticate(created.secret, now_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("revoked"));
  EXPECT_TRUE(keys_->Authenticate(other.secret, now_).ok());  // only that key

  // Again: the first revocation stands.
  absl::StatusOr<ApiKeyRecord> again = keys_->Revoke(created.key.id, "someone-else", now_ + absl::Hours(1));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->revoked_by, "auditor");
  EXPECT_EQ(keys_->Revoke("0123456789abcdef", "auditor", now_).status().code(), absl::StatusCode::kNotFound);

  Reopen();
  EXPECT_EQ(keys_->Authenticate(created.secret, now_).status().code(), absl::StatusCode::kUnauthenticated);
  const std::vector<ApiKeyRecord> listed = keys_->List("alice");
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].revoked_by.empty() ? listed[1].revoked_by : listed[0].revoked_by, "auditor");
  EXPECT_TRUE(keys_->List("bob").empty());
}

TEST_F(ApiKeysTest, ExpiryHoldsAndIsBounded) {
  const ApiKeyRegistry::Created created = Create("alice", now_ + absl::Hours(1));
  EXPECT_TRUE(keys_->Authenticate(created.secret, now_ + absl::Minutes(59)).ok());
  absl::StatusOr<ApiKeyRecord> expired = keys_->Authenticate(created.secret, now_ + absl::Hours(1));
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(expired.status().message()), HasSubstr("expired"));

  const auto create = [&](absl::Time expires) {
    return keys_->Create(ApiKeyRegistry::NewId(), "alice", "", expires, "root", now_).status().code();
  };
  EXPECT_EQ(create(now_), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(now_ - absl::Hours(1)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(now_ + kMaxApiKeyLifetime + absl::Hours(1)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(now_ + kMaxApiKeyLifetime), absl::StatusCode::kOk);
}

TEST_F(ApiKeysTest, CreateRefusesBadInputAndBoundsHowManyKeysLive) {
  const auto create = [&](std::string id, std::string user, std::string label) {
    return keys_->Create(id, user, label, absl::InfiniteFuture(), "root", now_).status().code();
  };
  EXPECT_EQ(create(ApiKeyRegistry::NewId(), "alice", std::string(kMaxApiKeyLabelBytes + 1, 'l')),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(ApiKeyRegistry::NewId(), "alice", "tab\there"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(ApiKeyRegistry::NewId(), "", ""), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create("not-an-id", "alice", ""), absl::StatusCode::kInvalidArgument);
  const std::string id = ApiKeyRegistry::NewId();
  EXPECT_EQ(create(id, "alice", ""), absl::StatusCode::kOk);
  EXPECT_EQ(create(id, "alice", ""), absl::StatusCode::kAlreadyExists);

  for (size_t i = 1; i < kMaxLiveApiKeysPerIdentity; ++i) {
    ASSERT_EQ(create(ApiKeyRegistry::NewId(), "alice", ""), absl::StatusCode::kOk) << i;
  }
  EXPECT_EQ(create(ApiKeyRegistry::NewId(), "alice", ""), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(create(ApiKeyRegistry::NewId(), "bob", ""), absl::StatusCode::kOk);  // per identity
  ASSERT_TRUE(keys_->Revoke(id, "root", now_).ok());
  EXPECT_EQ(create(ApiKeyRegistry::NewId(), "alice", ""), absl::StatusCode::kOk);  // a revoked key is not live
}

// What a storage administrator might do to the records, each refused at the next start.
TEST_F(ApiKeysTest, RecordsChangedInTheStoreAreNotLoaded) {
  const ApiKeyRegistry::Created alice = Create("alice");
  const ApiKeyRegistry::Created bob = Create("bob");
  ASSERT_TRUE(keys_->Revoke(bob.key.id, "root", now_).ok());
  std::string alice_value, bob_value;
  for (const auto& [key, value] : Stored()) (key == "apikey/" + alice.key.id ? alice_value : bob_value) = value;

  const auto edited = [](std::string value, const std::string& from, const std::string& to) {
    const size_t at = value.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return at == std::string::npos ? value : value.replace(at, from.size(), to);
  };
  // alice's key rebound to root.
  Put("apikey/" + alice.key.id, edited(alice_value, "\"identity\":\"alice\"", "\"identity\":\"root\""));
  // bob's revocation lifted.
  ApiKeyRecord unrevoked = *keys_->Decode(bob_value);
  Put("apikey/" + bob.key.id,
      edited(bob_value, absl::StrCat("\"revoked\":", unrevoked.revoked_unix_seconds), "\"revoked\":0"));
  // A planted key: bob's record copied under a new id (its MAC covers the id it was made for).
  Put("apikey/00000000deadbeef", bob_value);
  // Not JSON at all.
  Put("apikey/ffffffffffffffff", "garbage");
  Reopen();
  EXPECT_TRUE(keys_->List("").empty());
  EXPECT_EQ(keys_->Authenticate(alice.secret, now_).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys_->Authenticate(bob.secret, now_).status().code(), absl::StatusCode::kUnauthenticated);

  // Restored, they load again; under another MAC key (another audit secret) none does.
  Put("apikey/" + alice.key.id, alice_value);
  Reopen();
  EXPECT_TRUE(keys_->Authenticate(alice.secret, now_).ok());
  Reopen(std::string(32, 'x'));
  EXPECT_EQ(keys_->Authenticate(alice.secret, now_).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ApiKeyRegistry::Open(db_.get(), "short").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace airlock::daemon

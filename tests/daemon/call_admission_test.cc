// Call admission without gRPC: AdmitCall from a transport-neutral CallOrigin (the peer's address and
// its verified certificate's PEM), as every listener will call it: the identity, the role check,
// the refusals and their bounds, and that the gRPC path reads the same origin.
#include "daemon/call_admission.h"

#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "audit/state_db.h"
#include "auth/dev_pki.h"
#include "daemon/api_keys.h"
#include "tests/support/test_data.h"

namespace airlock::daemon {
namespace {

using ::testing::HasSubstr;

constexpr char kGenerate[] = "airlock.v1.Inference/Generate";

class CallAdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    airlock::v1::config::DaemonConfig config;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"pb(
      models { name: "m" }
      models { name: "other" }
      roles { name: "user" methods: "airlock.v1.Inference/Generate" models: "m" }
      users { name: "alice" roles: "user" }
      users { name: "bob" }
    )pb", &config));
    auto policy = auth::AccessPolicy::Create(config);
    ASSERT_TRUE(policy.ok()) << policy.status();
    auto runtime = std::make_shared<RuntimeConfig>();
    runtime->policy = *policy;
    runtime->identity_source = airlock::v1::config::SUBJECT_CN;
    holder_ = std::make_unique<RuntimeConfigHolder>(runtime);
    auto ca = auth::CreateCertificateAuthority("Test CA", absl::Hours(1));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *ca;
  }

  std::string Cert(const std::string& cn) {
    auth::CertificateSpec spec;
    spec.common_name = cn;
    auto pair = auth::IssueCertificate(ca_, spec);
    EXPECT_TRUE(pair.ok()) << pair.status();
    return pair.ok() ? pair->cert_pem : "";
  }

  absl::StatusOr<CallInfo> Admit(const std::string& pem, std::string_view model = "m",
                                 std::string peer = "ipv4:127.0.0.1:4000") {
    return AdmitCall(CallOrigin{std::move(peer), pem, ""}, kGenerate, model, *holder_);
  }

  // API keys on: a registry over a fresh state store, in the runtime configuration.
  void EnableApiKeys() {
    dir_ = airlock::testing::MakeTempDir();
    auto db = audit::StateDb::Open(dir_ + "/state");
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    auto keys = ApiKeyRegistry::Open(db_.get(), std::string(32, 'k'));
    ASSERT_TRUE(keys.ok()) << keys.status();
    keys_ = *std::move(keys);
    auto runtime = std::make_shared<RuntimeConfig>(*holder_->Get());
    runtime->api_keys = keys_.get();
    holder_->Set(runtime);
  }

  std::string NewKey(const std::string& user) {
    auto created =
        keys_->Create(ApiKeyRegistry::NewId(), user, "", absl::InfiniteFuture(), "root", absl::Now());
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? created->secret : "";
  }

  absl::StatusOr<CallInfo> AdmitWith(const std::string& pem, const std::string& api_key) {
    return AdmitCall(CallOrigin{"ipv4:127.0.0.1:4000", pem, api_key}, kGenerate, "m", *holder_);
  }

  auth::PemKeyPair ca_;
  std::unique_ptr<RuntimeConfigHolder> holder_;
  std::string dir_;
  std::unique_ptr<audit::StateDb> db_;
  std::unique_ptr<ApiKeyRegistry> keys_;
};

TEST_F(CallAdmissionTest, AGrantedCallerIsAdmittedWithItsIdentity) {
  const std::string pem = Cert("alice");
  absl::StatusOr<CallInfo> call = Admit(pem);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->identity.name, "alice");
  EXPECT_EQ(call->identity.subject, "CN=alice");
  EXPECT_EQ(call->identity.fingerprint.size(), 64u);
  EXPECT_EQ(call->peer, "ipv4:127.0.0.1:4000");
  EXPECT_EQ(call->method, kGenerate);
  EXPECT_EQ(call->model, "m");
  EXPECT_EQ(call->request_id.size(), 32u);
  // The second call on the same certificate is answered from the identity cache: the same.
  absl::StatusOr<CallInfo> again = Admit(pem);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->identity.fingerprint, call->identity.fingerprint);
  EXPECT_NE(again->request_id, call->request_id);
}

TEST_F(CallAdmissionTest, RefusalsNameTheirCause) {
  absl::StatusOr<CallInfo> none = Admit("");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("no client certificate"));

  absl::StatusOr<CallInfo> garbage = Admit("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kUnauthenticated);

  EXPECT_EQ(Admit(Cert("bob")).status().code(), absl::StatusCode::kPermissionDenied);        // no role
  EXPECT_EQ(Admit(Cert("mallory")).status().code(), absl::StatusCode::kPermissionDenied);    // not a user
  EXPECT_EQ(Admit(Cert("alice"), "other").status().code(), absl::StatusCode::kPermissionDenied);
  absl::StatusOr<CallInfo> long_model = Admit(Cert("alice"), std::string(5000, 'm'));
  EXPECT_EQ(long_model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(long_model.status().message().size(), 200u);
}

TEST_F(CallAdmissionTest, ALongPeerAddressIsBounded) {
  absl::StatusOr<CallInfo> call = Admit(Cert("alice"), "m", std::string(100000, 'p'));
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_LE(call->peer.size(), kMaxCallFieldBytes + 64);
  EXPECT_THAT(call->peer, HasSubstr("100000 bytes"));
}

TEST_F(CallAdmissionTest, WithKeysOffABearerCredentialIsIgnored) {
  EnableApiKeys();
  const std::string key = NewKey("alice");
  auto runtime = std::make_shared<RuntimeConfig>(*holder_->Get());
  runtime->api_keys = nullptr;
  holder_->Set(runtime);
  // No certificate: refused, however good the key.
  absl::StatusOr<CallInfo> call = AdmitWith("", key);
  EXPECT_EQ(call.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(call.status().message()), HasSubstr("no client certificate"));
}

TEST_F(CallAdmissionTest, AKeyAloneActsAsItsUser) {
  EnableApiKeys();
  const std::string key = NewKey("alice");
  absl::StatusOr<CallInfo> call = AdmitWith("", key);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->identity.name, "alice");
  EXPECT_EQ(call->identity.subject, "API key " + key.substr(4, 16));
  EXPECT_EQ(call->identity.fingerprint, "");
  // The user's roles still decide: bob's key is admitted as bob, and bob has no role.
  EXPECT_EQ(AdmitWith("", NewKey("bob")).status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(CallAdmissionTest, AKeyThatDoesNotAuthenticateRefusesTheCallEvenBesideACertificate) {
  EnableApiKeys();
  const std::string key = NewKey("alice");
  std::string wrong = key;
  wrong[40] = wrong[40] == 'A' ? 'B' : 'A';  // a digit of the secret
  for (const std::string& bad : {wrong, std::string("alk_"), key + "x", std::string("alk_") + std::string(60, 'z')}) {
    for (const std::string& pem : {std::string(), Cert("alice")}) {
      absl::StatusOr<CallInfo> call = AdmitWith(pem, bad);
      EXPECT_EQ(call.status().code(), absl::StatusCode::kUnauthenticated) << bad;
      // Nothing of the credential's secret comes back.
      if (bad.size() > 25) {
        EXPECT_THAT(std::string(call.status().message()), ::testing::Not(HasSubstr(bad.substr(21, 12))));
      }
    }
  }
  // Revoked: refused from the next call on.
  ASSERT_TRUE(keys_->Revoke(key.substr(4, 16), "root", absl::Now()).ok());
  absl::StatusOr<CallInfo> revoked = AdmitWith("", key);
  EXPECT_EQ(revoked.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(revoked.status().message()), HasSubstr("revoked"));
}

TEST_F(CallAdmissionTest, ACertificateAndAKeyMustNameTheSameIdentity) {
  EnableApiKeys();
  const std::string bobs = NewKey("bob");
  // alice's certificate with bob's key: neither is believed.
  absl::StatusOr<CallInfo> mixed = AdmitWith(Cert("alice"), bobs);
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(mixed.status().message()), HasSubstr("another identity"));
  // alice's certificate with her own key: alice, as her certificate says (fingerprint kept).
  absl::StatusOr<CallInfo> same = AdmitWith(Cert("alice"), NewKey("alice"));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->identity.subject, "CN=alice");
  EXPECT_EQ(same->identity.fingerprint.size(), 64u);
}

TEST_F(CallAdmissionTest, ABearerThatIsNoKeyIsIgnoredBesideACertificateAndRefusedWithoutOne) {
  EnableApiKeys();
  // OpenAI clients always send some bearer token ("sk-unused").
  absl::StatusOr<CallInfo> with_cert = AdmitWith(Cert("alice"), "sk-unused");
  ASSERT_TRUE(with_cert.ok()) << with_cert.status();
  EXPECT_EQ(with_cert->identity.name, "alice");
  absl::StatusOr<CallInfo> alone = AdmitWith("", "sk-unused");
  EXPECT_EQ(alone.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(alone.status().message()), HasSubstr("API key malformed"));
  EXPECT_THAT(std::string(alone.status().message()), ::testing::Not(HasSubstr("unused")));
  absl::StatusOr<CallInfo> nothing = AdmitWith("", "");
  EXPECT_EQ(nothing.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(nothing.status().message()), HasSubstr("no client certificate and no API key"));
}

}  // namespace
}  // namespace airlock::daemon

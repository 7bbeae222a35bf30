// Call admission without gRPC: AdmitCall from a transport-neutral CallOrigin (the peer's address and
// its verified certificate's PEM), as every listener will call it: the identity, the role check,
// the refusals and their bounds, and that the gRPC path reads the same origin.
#include "daemon/call_admission.h"

#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "auth/dev_pki.h"

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
    return AdmitCall(CallOrigin{std::move(peer), pem}, kGenerate, model, *holder_);
  }

  auth::PemKeyPair ca_;
  std::unique_ptr<RuntimeConfigHolder> holder_;
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

}  // namespace
}  // namespace airlock::daemon

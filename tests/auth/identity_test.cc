// Tests for certificate -> identity: each configured source, missing names, subject, fingerprint, serial.
#include "auth/identity.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "auth/dev_pki.h"
#include "tests/auth/openssl_test_util.h"

namespace airlock::auth {
namespace {

using airlock::v1::config::IDENTITY_SOURCE_UNSPECIFIED;
using airlock::v1::config::SAN_DNS;
using airlock::v1::config::SAN_EMAIL;
using airlock::v1::config::SAN_URI;
using airlock::v1::config::SUBJECT_CN;

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<PemKeyPair> ca = CreateCertificateAuthority("Clinic CA", absl::Hours(24));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *ca;
  }
  std::string Issue(const CertificateSpec& spec) {
    absl::StatusOr<PemKeyPair> pair = IssueCertificate(ca_, spec);
    EXPECT_TRUE(pair.ok()) << pair.status();
    return pair.ok() ? pair->cert_pem : "";
  }
  PemKeyPair ca_;
};

TEST_F(IdentityTest, EachSource) {
  CertificateSpec spec;
  spec.common_name = "alice";
  spec.emails = {"alice@clinic.example", "second@clinic.example"};
  spec.dns_names = {"alice.clinic.example", "other.example"};
  spec.uris = {"spiffe://clinic/ns/lab/sa/alice"};
  spec.ip_addresses = {"10.1.2.3"};
  const std::string pem = Issue(spec);
  EXPECT_EQ(IdentityFromCertificate(pem, SUBJECT_CN)->name, "alice");
  EXPECT_EQ(IdentityFromCertificate(pem, IDENTITY_SOURCE_UNSPECIFIED)->name, "alice");
  EXPECT_EQ(IdentityFromCertificate(pem, SAN_EMAIL)->name, "alice@clinic.example");
  EXPECT_EQ(IdentityFromCertificate(pem, SAN_DNS)->name, "alice.clinic.example");
  EXPECT_EQ(IdentityFromCertificate(pem, SAN_URI)->name, "spiffe://clinic/ns/lab/sa/alice");
}

TEST_F(IdentityTest, SubjectFingerprintSerial) {
  CertificateSpec spec;
  spec.common_name = "bob";
  const std::string pem = Issue(spec);
  absl::StatusOr<Identity> identity = IdentityFromCertificate(pem, SUBJECT_CN);
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_EQ(identity->subject, "CN=bob");
  EXPECT_EQ(identity->serial_hex, *CertificateSerialHex(pem));
  // Fingerprint: SHA-256 over the DER, computed independently here.
  testing::X509Ptr cert = testing::ParsePem(pem);
  unsigned char* der = nullptr;
  int length = i2d_X509(cert.get(), &der);
  ASSERT_GT(length, 0);
  unsigned char digest[32];
  unsigned int digest_length = 0;
  ASSERT_EQ(EVP_Digest(der, length, digest, &digest_length, EVP_sha256(), nullptr), 1);
  OPENSSL_free(der);
  EXPECT_EQ(identity->fingerprint,
            absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), 32)));
  EXPECT_EQ(identity->fingerprint.size(), 64u);
}

TEST_F(IdentityTest, MissingSourceIsUnauthenticated) {
  CertificateSpec spec;
  spec.common_name = "carol";
  spec.ip_addresses = {"10.0.0.1"};
  const std::string pem = Issue(spec);
  struct Case {
    airlock::v1::config::IdentitySource source;
    const char* message;
  };
  for (const Case& c : {Case{SAN_EMAIL, "client certificate has no email subject alternative name"},
                        Case{SAN_DNS, "client certificate has no DNS subject alternative name"},
                        Case{SAN_URI, "client certificate has no URI subject alternative name"}}) {
    absl::StatusOr<Identity> identity = IdentityFromCertificate(pem, c.source);
    EXPECT_EQ(identity.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(identity.status().message(), c.message);
  }
  EXPECT_EQ(IdentityFromCertificate("garbage", SUBJECT_CN).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(IdentityTest, ANameLongerThanTheBoundIsNoIdentityAndIsNotEchoed) {
  // A site CA may sign whatever a request asks for; a 20 KB name must not become a 20 KB identity
  // in every log line and audit record of its calls.
  CertificateSpec spec;
  spec.common_name = "dave";
  const std::string long_local(20000, 'd');
  spec.emails = {long_local + "@clinic.example"};
  spec.uris = {"spiffe://clinic/" + std::string(kMaxIdentityNameBytes - 16, 'u')};  // exactly the bound
  const std::string pem = Issue(spec);
  absl::StatusOr<Identity> identity = IdentityFromCertificate(pem, SAN_EMAIL);
  EXPECT_EQ(identity.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(identity.status().message(),
            "client certificate's email subject alternative name is 20015 bytes; an identity is at most 256");
  absl::StatusOr<Identity> at_bound = IdentityFromCertificate(pem, SAN_URI);
  ASSERT_TRUE(at_bound.ok()) << at_bound.status();
  EXPECT_EQ(at_bound->name.size(), kMaxIdentityNameBytes);
}

TEST_F(IdentityTest, ASubjectWithTwoCommonNamesIsRefusedWhateverTheSource) {
  // "CN=alice, CN=auditor": the first CN would name the caller while logs might show the other.
  CertificateSpec spec;
  spec.common_name = "alice";
  spec.emails = {"alice@clinic.example"};
  const std::string pem = testing::WithSecondCommonName(Issue(spec), ca_, "auditor");
  for (const auto source : {SUBJECT_CN, SAN_EMAIL}) {
    absl::StatusOr<Identity> identity = IdentityFromCertificate(pem, source);
    ASSERT_FALSE(identity.ok()) << identity->name;
    EXPECT_EQ(identity.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_THAT(identity.status().message(), ::testing::HasSubstr("has 2 common names"));
  }
  EXPECT_EQ(CheckSubjectUnambiguous(pem).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(CheckSubjectUnambiguous(Issue(spec)).ok());
}

}  // namespace
}  // namespace airlock::auth

// Tests for the development PKI: certificates verify with OpenSSL, files and modes, CRLs, refusals.
#include "auth/dev_pki.h"

#include <sys/stat.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "auth/openssl_util.h"
#include "tests/auth/openssl_test_util.h"
#include "tests/support/test_data.h"

namespace airlock::auth {
namespace {

using ::airlock::auth::testing::ParseCrlPem;
using ::airlock::auth::testing::ParsePem;
using ::airlock::auth::testing::SubjectAltNames;
using ::airlock::auth::testing::VerifyChain;
using ::airlock::testing::ReadFileOrDie;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(DevPkiTest, CaIsSelfSignedCa) {
  absl::StatusOr<PemKeyPair> ca = CreateCertificateAuthority("Test CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok()) << ca.status();
  EXPECT_EQ(VerifyChain(ca->cert_pem, ca->cert_pem, "any"), X509_V_OK);
  testing::X509Ptr cert = ParsePem(ca->cert_pem);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ca(cert.get()), 1);
  EXPECT_EQ(X509_get_version(cert.get()), X509_VERSION_3);
  EXPECT_NE(X509_get0_subject_key_id(cert.get()), nullptr);
  EXPECT_NE(X509_get0_authority_key_id(cert.get()), nullptr);
  EXPECT_TRUE(X509_get_key_usage(cert.get()) & KU_KEY_CERT_SIGN);
  EXPECT_TRUE(X509_get_key_usage(cert.get()) & KU_CRL_SIGN);
  EXPECT_EQ(EVP_PKEY_get_base_id(X509_get0_pubkey(cert.get())), EVP_PKEY_EC);
}

TEST(DevPkiTest, IssuedCertificatesVerifyAndCarrySans) {
  absl::StatusOr<PemKeyPair> ca = CreateCertificateAuthority("Test CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok()) << ca.status();
  CertificateSpec spec;
  spec.common_name = "alice";
  spec.dns_names = {"alice.example"};
  spec.ip_addresses = {"10.0.0.1", "::1"};
  spec.emails = {"alice@example.org"};
  spec.uris = {"spiffe://site/ns/alice"};
  absl::StatusOr<PemKeyPair> client = IssueCertificate(*ca, spec);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ(VerifyChain(ca->cert_pem, client->cert_pem, "sslclient"), X509_V_OK);
  // clientAuth only: not usable as a server certificate.
  EXPECT_NE(VerifyChain(ca->cert_pem, client->cert_pem, "sslserver"), X509_V_OK);
  EXPECT_THAT(SubjectAltNames(client->cert_pem),
              ElementsAre("DNS:alice.example", "IP:10.0.0.1", "IP:::1",
                          "email:alice@example.org", "URI:spiffe://site/ns/alice"));

  spec.server = true;
  spec.common_name = "localhost";
  absl::StatusOr<PemKeyPair> server = IssueCertificate(*ca, spec);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(VerifyChain(ca->cert_pem, server->cert_pem, "sslserver"), X509_V_OK);

  testing::X509Ptr cert = ParsePem(client->cert_pem);
  testing::X509Ptr ca_cert = ParsePem(ca->cert_pem);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  // The leaf's authority key id is the CA's subject key id.
  const ASN1_OCTET_STRING* akid = X509_get0_authority_key_id(cert.get());
  const ASN1_OCTET_STRING* skid = X509_get0_subject_key_id(ca_cert.get());
  ASSERT_NE(akid, nullptr);
  ASSERT_NE(skid, nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(akid, skid), 0);
  // Signed with SHA-256.
  EXPECT_EQ(X509_get_signature_nid(cert.get()), NID_ecdsa_with_SHA256);
}

TEST(DevPkiTest, SerialsAreRandomPositiveAndPrintedLikeOpenssl) {
  absl::StatusOr<PemKeyPair> ca = CreateCertificateAuthority("Test CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok()) << ca.status();
  CertificateSpec spec;
  spec.common_name = "bob";
  absl::StatusOr<PemKeyPair> a = IssueCertificate(*ca, spec);
  absl::StatusOr<PemKeyPair> b = IssueCertificate(*ca, spec);
  ASSERT_TRUE(a.ok() && b.ok());
  absl::StatusOr<std::string> serial_a = CertificateSerialHex(a->cert_pem);
  absl::StatusOr<std::string> serial_b = CertificateSerialHex(b->cert_pem);
  ASSERT_TRUE(serial_a.ok() && serial_b.ok());
  EXPECT_NE(*serial_a, *serial_b);
  EXPECT_LE(serial_a->size(), 32u);
  EXPECT_GE(serial_a->size(), 2u);
  EXPECT_EQ(serial_a->find_first_not_of("0123456789ABCDEF"), std::string::npos) << *serial_a;
  EXPECT_FALSE(absl::StartsWith(*serial_a, "00"));
  EXPECT_FALSE(CertificateSerialHex("not a certificate").ok());
}

TEST(DevPkiTest, IssueRejectsBadInput) {
  absl::StatusOr<PemKeyPair> ca = CreateCertificateAuthority("Test CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok()) << ca.status();
  CertificateSpec spec;
  EXPECT_FALSE(IssueCertificate(*ca, spec).ok());  // no CN
  spec.common_name = "x";
  spec.ip_addresses = {"not-an-ip"};
  absl::Status bad_ip = IssueCertificate(*ca, spec).status();
  EXPECT_THAT(bad_ip.message(), HasSubstr("not-an-ip"));
  spec.ip_addresses.clear();
  PemKeyPair wrong = *ca;
  absl::StatusOr<PemKeyPair> other = CreateCertificateAuthority("Other", absl::Hours(1));
  ASSERT_TRUE(other.ok());
  wrong.key_pem = other->key_pem;
  absl::Status mismatch = IssueCertificate(wrong, spec).status();
  EXPECT_FALSE(mismatch.ok());
  EXPECT_THAT(mismatch.message(), HasSubstr("does not match"));
  // The OpenSSL reason is part of the message.
  PemKeyPair garbage{"garbage", "garbage"};
  absl::Status parse = IssueCertificate(garbage, spec).status();
  EXPECT_THAT(parse.message(), HasSubstr("cannot parse CA certificate"));
}

TEST(DevPkiTest, CrlListsRevokedSerialsAndIsSignedByCa) {
  absl::StatusOr<PemKeyPair> ca = CreateCertificateAuthority("Test CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok()) << ca.status();
  CertificateSpec spec;
  spec.common_name = "carol";
  absl::StatusOr<PemKeyPair> carol = IssueCertificate(*ca, spec);
  ASSERT_TRUE(carol.ok());
  absl::StatusOr<std::string> serial = CertificateSerialHex(carol->cert_pem);
  ASSERT_TRUE(serial.ok());
  const absl::Time now = absl::Now();
  absl::StatusOr<std::string> crl =
      CreateCrl(*ca, {{*serial, now - absl::Hours(1)}}, now - absl::Minutes(1), now + absl::Hours(1), 7);
  ASSERT_TRUE(crl.ok()) << crl.status();
  testing::X509CrlPtr parsed = ParseCrlPem(*crl);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(X509_CRL_get_version(parsed.get()), 1);  // v2
  testing::X509Ptr ca_cert = ParsePem(ca->cert_pem);
  EXPECT_EQ(X509_CRL_verify(parsed.get(), X509_get0_pubkey(ca_cert.get())), 1);
  auto* number = static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(parsed.get(), NID_crl_number, nullptr, nullptr));
  ASSERT_NE(number, nullptr);
  EXPECT_EQ(ASN1_INTEGER_get(number), 7);
  ASN1_INTEGER_free(number);
  auto* akid = static_cast<AUTHORITY_KEYID*>(
      X509_CRL_get_ext_d2i(parsed.get(), NID_authority_key_identifier, nullptr, nullptr));
  ASSERT_NE(akid, nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(akid->keyid, X509_get0_subject_key_id(ca_cert.get())), 0);
  AUTHORITY_KEYID_free(akid);
  // OpenSSL's own CRL check agrees: carol is revoked.
  EXPECT_EQ(VerifyChain(ca->cert_pem, carol->cert_pem, "sslclient", *crl), X509_V_ERR_CERT_REVOKED);

  EXPECT_FALSE(CreateCrl(*ca, {{"XYZ", now}}, now, now + absl::Hours(1), 1).ok());
  EXPECT_FALSE(CreateCrl(*ca, {}, now, now - absl::Hours(1), 1).ok());
}

TEST(DevPkiTest, InitLayoutAndModes) {
  testing::ScopedTempDir tmp;
  const std::string dir = tmp.path + "/pki";
  ASSERT_TRUE(InitPki(dir, PkiInitOptions()).ok());
  for (const char* name : {"ca.key", "server.key"}) {
    EXPECT_EQ(ModeOf(dir + "/" + name), 0600u) << name;
  }
  for (const char* name : {"ca.crt", "server.crt", "crl.pem", "revoked.txt", "crl_number"}) {
    EXPECT_EQ(ModeOf(dir + "/" + name), 0644u) << name;
  }
  EXPECT_EQ(ModeOf(dir), 0700u);
  const std::string ca = ReadFileOrDie(dir + "/ca.crt");
  const std::string server = ReadFileOrDie(dir + "/server.crt");
  const std::string crl = ReadFileOrDie(dir + "/crl.pem");
  EXPECT_EQ(VerifyChain(ca, server, "sslserver", crl), X509_V_OK);
  EXPECT_THAT(SubjectAltNames(server),
              UnorderedElementsAre("DNS:localhost", "IP:127.0.0.1", "IP:::1"));
  EXPECT_EQ(ReadFileOrDie(dir + "/crl_number"), "1\n");
  EXPECT_EQ(ReadFileOrDie(dir + "/revoked.txt"), "");
  // No temp files left behind.
  for (const char* name : {"ca.key", "crl.pem"}) {
    struct stat st;
    EXPECT_NE(stat((dir + "/" + name + ".tmp").c_str(), &st), 0);
  }
}

TEST(DevPkiTest, InitRefusesExistingCa) {
  testing::ScopedTempDir tmp;
  const std::string dir = tmp.path + "/pki";
  ASSERT_TRUE(InitPki(dir, PkiInitOptions()).ok());
  const std::string ca_before = ReadFileOrDie(dir + "/ca.crt");
  const std::string key_before = ReadFileOrDie(dir + "/ca.key");
  absl::Status again = InitPki(dir, PkiInitOptions());
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.message(), HasSubstr("ca.key"));
  EXPECT_EQ(ReadFileOrDie(dir + "/ca.crt"), ca_before);
  EXPECT_EQ(ReadFileOrDie(dir + "/ca.key"), key_before);
}

TEST(DevPkiTest, IssueClientWritesVerifiableFilesAndRefusesOverwrite) {
  testing::ScopedTempDir tmp;
  const std::string dir = tmp.path + "/pki";
  ASSERT_TRUE(InitPki(dir, PkiInitOptions()).ok());
  CertificateSpec spec;
  spec.common_name = "alice";
  spec.emails = {"alice@example.org"};
  ASSERT_TRUE(IssueClient(dir, "alice", spec).ok());
  EXPECT_EQ(ModeOf(dir + "/alice.key"), 0600u);
  EXPECT_EQ(ModeOf(dir + "/alice.crt"), 0644u);
  const std::string alice = ReadFileOrDie(dir + "/alice.crt");
  EXPECT_EQ(VerifyChain(ReadFileOrDie(dir + "/ca.crt"), alice, "sslclient"), X509_V_OK);

  absl::Status again = IssueClient(dir, "alice", spec);
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadFileOrDie(dir + "/alice.crt"), alice);
  EXPECT_EQ(IssueClient(dir, "ca", spec).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IssueClient(dir, "../evil", spec).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IssueClient(dir, "server", spec).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(IssueClient(tmp.path + "/nothing", "bob", spec).code(),
            absl::StatusCode::kNotFound);
}

TEST(DevPkiTest, RevokeUpdatesCrl) {
  testing::ScopedTempDir tmp;
  const std::string dir = tmp.path + "/pki";
  ASSERT_TRUE(InitPki(dir, PkiInitOptions()).ok());
  CertificateSpec spec;
  spec.common_name = "alice";
  ASSERT_TRUE(IssueClient(dir, "alice", spec).ok());
  spec.common_name = "bob";
  ASSERT_TRUE(IssueClient(dir, "bob", spec).ok());
  const std::string ca = ReadFileOrDie(dir + "/ca.crt");
  const std::string alice = ReadFileOrDie(dir + "/alice.crt");
  const std::string bob = ReadFileOrDie(dir + "/bob.crt");

  ASSERT_TRUE(Revoke(dir, alice).ok());
  std::string crl = ReadFileOrDie(dir + "/crl.pem");
  EXPECT_EQ(VerifyChain(ca, alice, "sslclient", crl), X509_V_ERR_CERT_REVOKED);
  EXPECT_EQ(VerifyChain(ca, bob, "sslclient", crl), X509_V_OK);
  EXPECT_EQ(ReadFileOrDie(dir + "/crl_number"), "2\n");
  absl::StatusOr<std::string> serial = CertificateSerialHex(alice);
  ASSERT_TRUE(serial.ok());
  EXPECT_THAT(ReadFileOrDie(dir + "/revoked.txt"), HasSubstr(*serial + " "));

  EXPECT_EQ(Revoke(dir, alice).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(Revoke(dir, bob).ok());
  crl = ReadFileOrDie(dir + "/crl.pem");
  EXPECT_EQ(VerifyChain(ca, alice, "sslclient", crl), X509_V_ERR_CERT_REVOKED);
  EXPECT_EQ(VerifyChain(ca, bob, "sslclient", crl), X509_V_ERR_CERT_REVOKED);
  EXPECT_EQ(ReadFileOrDie(dir + "/crl_number"), "3\n");

  // A certificate from another CA is refused rather than silently listed.
  absl::StatusOr<PemKeyPair> other = CreateCertificateAuthority("Other", absl::Hours(1));
  ASSERT_TRUE(other.ok());
  spec.common_name = "mallory";
  absl::StatusOr<PemKeyPair> mallory = IssueCertificate(*other, spec);
  ASSERT_TRUE(mallory.ok());
  EXPECT_EQ(Revoke(dir, mallory->cert_pem).code(), absl::StatusCode::kInvalidArgument);

  // RefreshCrl keeps the list and bumps the number.
  ASSERT_TRUE(RefreshCrl(dir).ok());
  crl = ReadFileOrDie(dir + "/crl.pem");
  EXPECT_EQ(VerifyChain(ca, alice, "sslclient", crl), X509_V_ERR_CERT_REVOKED);
  EXPECT_EQ(ReadFileOrDie(dir + "/crl_number"), "4\n");
}

// The certificate-expiry metric reads this: the first certificate of a file to expire.
TEST(DevPkiTest, EarliestNotAfterIsTheFirstCertificateOfAFileToExpire) {
  testing::ScopedTempDir tmp;
  const absl::Time now = absl::Now();
  absl::StatusOr<PemKeyPair> ca = CreateCertificateAuthority("Test CA", absl::Hours(48));
  ASSERT_TRUE(ca.ok()) << ca.status();
  CertificateSpec spec;
  spec.common_name = "server";
  spec.server = true;
  spec.validity = absl::Hours(24);
  absl::StatusOr<PemKeyPair> leaf = IssueCertificate(*ca, spec);
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  const std::string chain = tmp.path + "/chain.pem";
  const std::string ca_only = tmp.path + "/ca.pem";
  const std::string empty = tmp.path + "/empty.pem";
  ASSERT_TRUE(WritePublicFile(chain, ca->cert_pem + leaf->cert_pem).ok());  // the CA first: order does not matter
  ASSERT_TRUE(WritePublicFile(ca_only, ca->cert_pem).ok());
  ASSERT_TRUE(WritePublicFile(empty, "not a certificate\n").ok());

  absl::StatusOr<absl::Time> chain_end = ossl::EarliestNotAfter("server certificate", chain);
  ASSERT_TRUE(chain_end.ok()) << chain_end.status();
  EXPECT_LT(absl::AbsDuration(*chain_end - (now + absl::Hours(24))), absl::Minutes(5));
  absl::StatusOr<absl::Time> ca_end = ossl::EarliestNotAfter("CA certificate", ca_only);
  ASSERT_TRUE(ca_end.ok()) << ca_end.status();
  EXPECT_LT(absl::AbsDuration(*ca_end - (now + absl::Hours(48))), absl::Minutes(5));

  absl::StatusOr<absl::Time> none = ossl::EarliestNotAfter("CA certificate", empty);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("CA certificate " + empty + ": holds no PEM certificate"));
  absl::StatusOr<absl::Time> missing = ossl::EarliestNotAfter("CA certificate", tmp.path + "/absent.pem");
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("absent.pem"));
}

TEST(DevPkiTest, WritePrivateFileReplacesWithMode0600) {
  testing::ScopedTempDir tmp;
  const std::string path = tmp.path + "/secret";
  ASSERT_TRUE(WritePublicFile(path, "old").ok());
  EXPECT_EQ(ModeOf(path), 0644u);
  ASSERT_TRUE(WritePrivateFile(path, "new").ok());
  EXPECT_EQ(ModeOf(path), 0600u);
  absl::StatusOr<std::string> text = ReadTextFile(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "new");
  EXPECT_EQ(ReadTextFile(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace airlock::auth

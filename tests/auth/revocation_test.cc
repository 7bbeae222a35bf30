// Tests for fail-closed revocation: missing, foreign, expired and future CRLs; revoked leaves; multi-CA.
#include "auth/revocation.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "auth/dev_pki.h"
#include "auth/identity.h"
#include "tests/auth/openssl_test_util.h"

namespace airlock::auth {
namespace {

using ::testing::HasSubstr;

struct Ca {
  PemKeyPair pair;
  PemKeyPair leaf;
  std::string leaf_serial;
};

Ca MakeCa(const std::string& name) {
  Ca ca;
  absl::StatusOr<PemKeyPair> pair = CreateCertificateAuthority(name, absl::Hours(24));
  EXPECT_TRUE(pair.ok()) << pair.status();
  ca.pair = *pair;
  CertificateSpec spec;
  spec.common_name = name + " client";
  absl::StatusOr<PemKeyPair> leaf = IssueCertificate(ca.pair, spec);
  EXPECT_TRUE(leaf.ok()) << leaf.status();
  ca.leaf = *leaf;
  ca.leaf_serial = *CertificateSerialHex(ca.leaf.cert_pem);
  return ca;
}

std::string Crl(const Ca& ca, const std::vector<RevokedEntry>& revoked, absl::Time this_update,
                absl::Time next_update, int64_t number = 1) {
  absl::StatusOr<std::string> crl = CreateCrl(ca.pair, revoked, this_update, next_update, number);
  EXPECT_TRUE(crl.ok()) << crl.status();
  return *crl;
}

class RevocationTest : public ::testing::Test {
 protected:
  const absl::Time now_ = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()));
  Ca a_ = MakeCa("CA A");
  Ca b_ = MakeCa("CA B");
};

TEST_F(RevocationTest, CurrentEmptyCrlAcceptsLeaf) {
  auto list = RevocationList::Create(
      a_.pair.cert_pem, {Crl(a_, {}, now_ - absl::Hours(1), now_ + absl::Hours(1))}, now_);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE((*list)->Check(a_.leaf.cert_pem, now_).ok());
  EXPECT_EQ((*list)->earliest_next_update(), now_ + absl::Hours(1));
}

TEST_F(RevocationTest, CaWithoutCrlIsAnErrorNamingTheCa) {
  auto list = RevocationList::Create(a_.pair.cert_pem, {}, now_);
  ASSERT_FALSE(list.ok());
  EXPECT_THAT(list.status().message(), HasSubstr("no CRL for CA CN=CA A"));
  // Two CAs, one CRL: the other CA is named.
  list = RevocationList::Create(a_.pair.cert_pem + b_.pair.cert_pem,
                                {Crl(a_, {}, now_ - absl::Hours(1), now_ + absl::Hours(1))}, now_);
  ASSERT_FALSE(list.ok());
  EXPECT_THAT(list.status().message(), HasSubstr("CN=CA B"));
}

TEST_F(RevocationTest, CrlFromAnotherCaIsRefused) {
  auto list = RevocationList::Create(
      a_.pair.cert_pem, {Crl(b_, {}, now_ - absl::Hours(1), now_ + absl::Hours(1))}, now_);
  ASSERT_FALSE(list.ok());
  EXPECT_THAT(list.status().message(), HasSubstr("not signed by any CA"));
  EXPECT_THAT(list.status().message(), HasSubstr("CN=CA B"));
}

TEST_F(RevocationTest, CrlSignedByImpostorWithSameNameIsRefused) {
  Ca impostor = MakeCa("CA A");  // same subject, different key
  auto list = RevocationList::Create(
      a_.pair.cert_pem, {Crl(impostor, {}, now_ - absl::Hours(1), now_ + absl::Hours(1))}, now_);
  ASSERT_FALSE(list.ok());
  EXPECT_THAT(list.status().message(), HasSubstr("not signed by any CA"));
}

TEST_F(RevocationTest, ExpiredCrlAtLoadIsRefused) {
  auto list = RevocationList::Create(
      a_.pair.cert_pem, {Crl(a_, {}, now_ - absl::Hours(2), now_ - absl::Hours(1))}, now_);
  ASSERT_FALSE(list.ok());
  EXPECT_THAT(list.status().message(),
              HasSubstr("CRL of CN=CA A expired at " +
                        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", now_ - absl::Hours(1),
                                         absl::UTCTimeZone())));
}

TEST_F(RevocationTest, FutureCrlIsRefused) {
  auto list = RevocationList::Create(
      a_.pair.cert_pem, {Crl(a_, {}, now_ + absl::Hours(1), now_ + absl::Hours(2))}, now_);
  ASSERT_FALSE(list.ok());
  EXPECT_THAT(list.status().message(), HasSubstr("not valid before"));
}

TEST_F(RevocationTest, RevokedVersusNotRevoked) {
  CertificateSpec spec;
  spec.common_name = "other";
  absl::StatusOr<PemKeyPair> other = IssueCertificate(a_.pair, spec);
  ASSERT_TRUE(other.ok());
  const absl::Time revoked_at = now_ - absl::Minutes(30);
  auto list = RevocationList::Create(
      a_.pair.cert_pem,
      {Crl(a_, {{a_.leaf_serial, revoked_at}}, now_ - absl::Hours(1), now_ + absl::Hours(1))},
      now_);
  ASSERT_TRUE(list.ok()) << list.status();
  absl::Status revoked = (*list)->Check(a_.leaf.cert_pem, now_);
  EXPECT_EQ(revoked.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(revoked.message(),
            "certificate serial " + a_.leaf_serial + " revoked at " +
                absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", revoked_at, absl::UTCTimeZone()));
  EXPECT_TRUE((*list)->Check(other->cert_pem, now_).ok());
}

TEST_F(RevocationTest, CrlExpiringAfterLoadRefusesEveryone) {
  auto list = RevocationList::Create(
      a_.pair.cert_pem, {Crl(a_, {}, now_ - absl::Hours(1), now_ + absl::Hours(1))}, now_);
  ASSERT_TRUE(list.ok());
  absl::Status later = (*list)->Check(a_.leaf.cert_pem, now_ + absl::Hours(2));
  EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(later.message(), HasSubstr("CRL of CN=CA A expired at"));
}

TEST_F(RevocationTest, MultiCaBundleUsesEachIssuersCrl) {
  // Revoke A's leaf in A's CRL; B's CRL lists A's serial too but must not matter for B's leaf.
  auto list = RevocationList::Create(
      a_.pair.cert_pem + b_.pair.cert_pem,
      {Crl(a_, {{a_.leaf_serial, now_ - absl::Minutes(1)}}, now_ - absl::Hours(1),
           now_ + absl::Hours(3)),
       Crl(b_, {{a_.leaf_serial, now_ - absl::Minutes(1)}}, now_ - absl::Hours(1),
           now_ + absl::Hours(1))},
      now_);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ((*list)->Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE((*list)->Check(b_.leaf.cert_pem, now_).ok());
  EXPECT_EQ((*list)->earliest_next_update(), now_ + absl::Hours(1));
  // Only B's CRL expired: B's clients are refused, A's verdicts are unchanged.
  EXPECT_EQ((*list)->Check(b_.leaf.cert_pem, now_ + absl::Hours(2)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*list)->Check(a_.leaf.cert_pem, now_ + absl::Hours(2)).code(),
            absl::StatusCode::kPermissionDenied);

  // A leaf of a CA outside the bundle has no CRL.
  Ca c = MakeCa("CA C");
  absl::Status unknown = (*list)->Check(c.leaf.cert_pem, now_);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(unknown.message(), HasSubstr("CN=CA C"));
}

TEST_F(RevocationTest, SeveralCrlsInOneFileAndNewestWins) {
  // An old CRL that revoked nothing and a newer one that revokes the leaf, in one file.
  const std::string file = Crl(a_, {}, now_ - absl::Hours(3), now_ + absl::Hours(1), 1) +
                           Crl(a_, {{a_.leaf_serial, now_ - absl::Hours(1)}},
                               now_ - absl::Hours(2), now_ + absl::Hours(1), 2);
  auto list = RevocationList::Create(a_.pair.cert_pem, {file}, now_);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ((*list)->Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(RevocationTest, LoadNamesFiles) {
  testing::ScopedTempDir tmp;
  const std::string& dir = tmp.path;
  ASSERT_TRUE(WritePublicFile(dir + "/ca.crt", a_.pair.cert_pem).ok());
  ASSERT_TRUE(
      WritePublicFile(dir + "/crl.pem", Crl(a_, {}, now_ - absl::Hours(1), now_ + absl::Hours(1)))
          .ok());
  ASSERT_TRUE(WritePublicFile(dir + "/junk.pem", "not a crl").ok());
  EXPECT_TRUE(RevocationList::Load(dir + "/ca.crt", {dir + "/crl.pem"}, now_).ok());
  absl::Status missing = RevocationList::Load(dir + "/ca.crt", {dir + "/nope.pem"}, now_).status();
  EXPECT_THAT(missing.message(), HasSubstr("nope.pem"));
  absl::Status junk = RevocationList::Load(dir + "/ca.crt", {dir + "/junk.pem"}, now_).status();
  EXPECT_THAT(junk.message(), HasSubstr("junk.pem"));
  absl::Status no_crl = RevocationList::Load(dir + "/ca.crt", {}, now_).status();
  EXPECT_THAT(no_crl.message(), HasSubstr("ca.crt"));
}

TEST_F(RevocationTest, CheckerReplaceSwapsAtomically) {
  auto open = RevocationList::Create(
      a_.pair.cert_pem, {Crl(a_, {}, now_ - absl::Hours(1), now_ + absl::Hours(1))}, now_);
  auto revoking = RevocationList::Create(
      a_.pair.cert_pem,
      {Crl(a_, {{a_.leaf_serial, now_}}, now_ - absl::Hours(1), now_ + absl::Hours(1), 2)}, now_);
  ASSERT_TRUE(open.ok() && revoking.ok());
  RevocationChecker checker(*open);
  EXPECT_TRUE(checker.Check(a_.leaf.cert_pem, now_).ok());
  // Concurrent checks while the list is replaced: each sees one list or the other, never a crash.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        absl::Status s = checker.Check(a_.leaf.cert_pem, now_);
        EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kPermissionDenied) << s;
      }
    });
  }
  checker.Replace(*revoking);
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(checker.Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(checker.current(), *revoking);
  RevocationChecker empty(nullptr);
  EXPECT_EQ(empty.Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace airlock::auth

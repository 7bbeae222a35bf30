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

// --- CRLs never go backwards (an older CRL un-revokes) -----------------------------------------

// A checker holding A's CRL `number` that revokes the leaf, as the daemon has after a revocation.
class CrlOrderTest : public RevocationTest {
 protected:
  std::shared_ptr<const RevocationList> List(const std::string& crl) {
    auto list = RevocationList::Create(a_.pair.cert_pem, {crl}, now_);
    EXPECT_TRUE(list.ok()) << list.status();
    return list.ok() ? *list : nullptr;
  }
  std::string Revoking(int64_t number, absl::Time this_update) {
    return Crl(a_, {{a_.leaf_serial, now_ - absl::Hours(2)}}, this_update, now_ + absl::Hours(1), number);
  }
  std::string Empty(int64_t number, absl::Time this_update) {
    return Crl(a_, {}, this_update, now_ + absl::Hours(1), number);
  }
};

TEST_F(CrlOrderTest, LowerCrlNumberIsRefusedAndTheRevocationStays) {
  const std::string crl5 = Revoking(5, now_ - absl::Hours(1));
  RevocationChecker checker(List(crl5));
  // The attacker's replay: the CA's own, validly signed, still current CRL 4 from before the
  // revocation, even with a later thisUpdate.
  absl::Status older = checker.ReplaceIfNotOlder(List(Empty(4, now_ - absl::Minutes(1))));
  EXPECT_EQ(older.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(older.message(), HasSubstr("CRL of CN=CA A (crlNumber 0x04"));
  EXPECT_THAT(older.message(), HasSubstr("its crlNumber is lower than the CRL in use (crlNumber 0x05"));
  EXPECT_EQ(checker.Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
  // The same CRL again is no change; a higher number is taken.
  EXPECT_TRUE(checker.ReplaceIfNotOlder(List(crl5)).ok());
  EXPECT_TRUE(checker.ReplaceIfNotOlder(List(Empty(6, now_ - absl::Minutes(1)))).ok());
  EXPECT_TRUE(checker.Check(a_.leaf.cert_pem, now_).ok());
}

TEST_F(CrlOrderTest, LosingTheCrlNumberIsRefused) {
  RevocationChecker checker(List(Revoking(5, now_ - absl::Hours(1))));
  absl::Status status = checker.ReplaceIfNotOlder(List(Empty(-1, now_ - absl::Minutes(1))));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("no crlNumber"));
  EXPECT_EQ(checker.Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(CrlOrderTest, SameCrlNumberWithOtherContentsIsRefused) {
  RevocationChecker checker(List(Revoking(5, now_ - absl::Hours(1))));
  absl::Status status = checker.ReplaceIfNotOlder(List(Empty(5, now_ - absl::Minutes(1))));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("same crlNumber but other contents"));
  EXPECT_EQ(checker.Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(CrlOrderTest, WithoutNumbersAnOlderThisUpdateIsRefused) {
  RevocationChecker checker(List(Revoking(-1, now_ - absl::Minutes(30))));
  absl::Status older = checker.ReplaceIfNotOlder(List(Empty(-1, now_ - absl::Hours(1))));
  EXPECT_EQ(older.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(older.message(), HasSubstr("no crlNumber and is no newer"));
  EXPECT_EQ(checker.Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
  // Same thisUpdate, other contents: refused too.
  EXPECT_FALSE(checker.ReplaceIfNotOlder(List(Empty(-1, now_ - absl::Minutes(30)))).ok());
  // Newer: taken; and a numbered CRL may follow an unnumbered one.
  EXPECT_TRUE(checker.ReplaceIfNotOlder(List(Empty(-1, now_ - absl::Minutes(10)))).ok());
  EXPECT_TRUE(checker.ReplaceIfNotOlder(List(Revoking(1, now_ - absl::Minutes(5)))).ok());
  EXPECT_EQ(checker.Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(CrlOrderTest, ACaNewToTheBundleIsNotCompared) {
  RevocationChecker checker(List(Revoking(5, now_ - absl::Hours(1))));
  auto both = RevocationList::Create(
      a_.pair.cert_pem + b_.pair.cert_pem,
      {Revoking(6, now_ - absl::Minutes(1)), Crl(b_, {}, now_ - absl::Hours(1), now_ + absl::Hours(1), 1)}, now_);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_TRUE(checker.ReplaceIfNotOlder(*both).ok());
  EXPECT_TRUE(checker.Check(b_.leaf.cert_pem, now_).ok());
}

TEST_F(CrlOrderTest, WithinOneLoadTheHigherNumberWinsWhateverTheOrder) {
  // An attacker who can only append to a CRL file cannot win by appending an older CRL with a
  // later thisUpdate.
  auto list = RevocationList::Create(
      a_.pair.cert_pem, {Revoking(5, now_ - absl::Hours(1)) + Empty(4, now_ - absl::Minutes(1))}, now_);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ((*list)->Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(CrlOrderTest, CheckerRemembersLeavesButAlwaysAsksTheCurrentList) {
  RevocationChecker checker(List(Empty(1, now_ - absl::Hours(1))));
  EXPECT_TRUE(checker.Check(a_.leaf.cert_pem, now_).ok());  // remembered now
  ASSERT_TRUE(checker.ReplaceIfNotOlder(List(Revoking(2, now_ - absl::Minutes(1)))).ok());
  EXPECT_EQ(checker.Check(a_.leaf.cert_pem, now_).code(), absl::StatusCode::kPermissionDenied);
  // A list without the leaf's CA (bundle changed): the remembered issuer does not count.
  checker.Replace(*RevocationList::Create(b_.pair.cert_pem, {Crl(b_, {}, now_ - absl::Hours(1), now_ + absl::Hours(1))},
                                          now_));
  absl::Status unknown = checker.Check(a_.leaf.cert_pem, now_);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(unknown.message(), HasSubstr("CN=CA A"));
}

TEST_F(CrlOrderTest, CachedCheckIsCheap) {
  // The per-call budget is < 1 ms p50 for the whole admission; a remembered certificate must cost
  // a small fraction of it (a parse and a signature check take ~100 us).
  RevocationChecker checker(List(Empty(1, now_ - absl::Hours(1))));
  ASSERT_TRUE(checker.Check(a_.leaf.cert_pem, now_).ok());
  constexpr int kCalls = 2000;
  const absl::Time start = absl::Now();
  for (int i = 0; i < kCalls; ++i) ASSERT_TRUE(checker.Check(a_.leaf.cert_pem, now_).ok());
  const absl::Duration each = (absl::Now() - start) / kCalls;
  EXPECT_LT(each, absl::Microseconds(50)) << each;
}

}  // namespace
}  // namespace airlock::auth

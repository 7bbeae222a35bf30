// Tests of the chain verifier: every kind of tampering is found at its first affected sequence.
#include "audit/chain_verifier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "audit/audit_record.h"
#include "audit/checkpoint.h"

namespace airlock::audit {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kRecords = 22;
constexpr uint64_t kCheckpointEvery = 5;  // checkpoints at 5, 10, 15, 20; 21..22 unsigned

AuditRecord MakeRecord(uint64_t i) {
  AuditRecord record;
  record.phase = i % 2 == 1 ? Phase::kBegin : Phase::kEnd;
  record.decision = Decision::kAllowed;
  record.time_unix_micros = 1700000000000000 + static_cast<int64_t>(i) * 1000;
  record.request_id = absl::StrCat("req-", (i + 1) / 2);
  record.identity = "alice";
  record.method = "/airlock.v1.Inference/Generate";
  record.model = "tiny";
  record.completion_tokens = static_cast<uint32_t>(i);
  return record;
}

class ChainVerifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pem = GenerateSigningKeyPem();
    ASSERT_TRUE(pem.ok());
    auto signer = CheckpointSigner::FromPrivateKeyPem(*pem);
    ASSERT_TRUE(signer.ok());
    signer_.emplace(*std::move(signer));
    public_key_ = signer_->PublicKeyPem();
    std::string prev = GenesisHash();
    for (uint64_t i = 1; i <= kRecords; ++i) {
      records_.push_back(Chain(i, prev, MakeRecord(i)));
      prev = records_.back().hash;
      if (i % kCheckpointEvery == 0) {
        checkpoints_.push_back(signer_->Sign(i, prev, 1700000000000000 + static_cast<int64_t>(i)));
      }
    }
  }

  VerifyReport Verify(const std::vector<ChainedRecord>& records,
                      const std::vector<Checkpoint>& checkpoints,
                      const std::optional<Checkpoint>& anchor = std::nullopt) {
    return VerifyChain(records, checkpoints, public_key_, anchor);
  }
  // Index in records_ of sequence s.
  static size_t At(uint64_t s) { return static_cast<size_t>(s - 1); }

  void ExpectBadAt(const VerifyReport& report, uint64_t sequence, const std::string& context) {
    EXPECT_FALSE(report.ok) << context;
    ASSERT_TRUE(report.first_bad_sequence.has_value()) << context << ": " << report.problem;
    EXPECT_EQ(*report.first_bad_sequence, sequence) << context << ": " << report.problem;
    EXPECT_FALSE(report.problem.empty()) << context;
  }

  std::optional<CheckpointSigner> signer_;
  std::string public_key_;
  std::vector<ChainedRecord> records_;
  std::vector<Checkpoint> checkpoints_;
};

TEST_F(ChainVerifierTest, IntactChainVerifiesAndReportsItsUnsignedTail) {
  const VerifyReport report = Verify(records_, checkpoints_);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records_checked, kRecords);
  EXPECT_EQ(report.checkpoints_checked, 4u);
  EXPECT_FALSE(report.first_bad_sequence.has_value());
  EXPECT_EQ(report.head_sequence, 22u);
  EXPECT_EQ(report.signed_through, 20u);
  EXPECT_EQ(report.unsigned_tail, 2u);
  EXPECT_EQ(report.problem, "unsigned tail of 2 records (sequences 21..22)");
}

TEST_F(ChainVerifierTest, FullySignedChainHasNoProblem) {
  checkpoints_.push_back(signer_->Sign(22, records_.back().hash, 1));
  std::reverse(checkpoints_.begin(), checkpoints_.end());  // any order
  const VerifyReport report = Verify(records_, checkpoints_);
  EXPECT_TRUE(report.ok);
  EXPECT_EQ(report.unsigned_tail, 0u);
  EXPECT_EQ(report.problem, "");
}

TEST_F(ChainVerifierTest, EmptyChain) {
  VerifyReport report = Verify({}, {});
  EXPECT_TRUE(report.ok);
  EXPECT_EQ(report.records_checked, 0u);
  EXPECT_EQ(report.head_sequence, 0u);
  // An empty store with a signed checkpoint: everything was cut off.
  report = Verify({}, checkpoints_);
  ExpectBadAt(report, 1, "empty with checkpoints");
  EXPECT_THAT(report.problem, HasSubstr("truncated"));
}

TEST_F(ChainVerifierTest, ModifiedRecordIsReportedAtItself) {
  for (uint64_t s = 1; s <= kRecords; ++s) {
    std::vector<ChainedRecord> records = records_;
    records[At(s)].record.model = "other-model";  // stored hash left as it was
    ExpectBadAt(Verify(records, checkpoints_), s, absl::StrCat("modify ", s));
  }
}

TEST_F(ChainVerifierTest, ModifiedAndRehashedRecordIsReportedAtItself) {
  // Rewriting one record and recomputing its hash breaks the next link or the checkpoint at it.
  for (uint64_t s = 1; s < kRecords; ++s) {
    std::vector<ChainedRecord> records = records_;
    ChainedRecord& victim = records[At(s)];
    victim.record.identity = "mallory";
    victim = Chain(victim.sequence, victim.prev_hash, victim.record);
    ExpectBadAt(Verify(records, checkpoints_), s, absl::StrCat("rewrite ", s));
  }
  // The last record is unsigned: rewriting it is only visible as the unsigned tail.
  std::vector<ChainedRecord> records = records_;
  records.back().record.identity = "mallory";
  records.back() = Chain(kRecords, records.back().prev_hash, records.back().record);
  const VerifyReport report = Verify(records, checkpoints_);
  EXPECT_TRUE(report.ok);
  EXPECT_EQ(report.unsigned_tail, 2u);
}

TEST_F(ChainVerifierTest, RewrittenSuffixIsReportedAtTheMismatchingCheckpoint) {
  // An attacker who rechains everything from 12 on is caught by checkpoint 15.
  std::vector<ChainedRecord> records(records_.begin(), records_.begin() + 11);
  for (uint64_t s = 12; s <= kRecords; ++s) {
    AuditRecord record = MakeRecord(s);
    if (s == 12) record.model = "forged";
    records.push_back(Chain(s, records.back().hash, record));
  }
  const VerifyReport report = Verify(records, checkpoints_);
  ExpectBadAt(report, 15, "rechained suffix");
  EXPECT_THAT(report.problem, HasSubstr("checkpoint 15"));
}

TEST_F(ChainVerifierTest, ChangedLinkIsReportedAtItsRecord) {
  for (uint64_t s = 1; s <= kRecords; ++s) {
    std::vector<ChainedRecord> records = records_;
    records[At(s)].prev_hash[0] ^= 1;
    ExpectBadAt(Verify(records, checkpoints_), s, absl::StrCat("link ", s));
  }
}

TEST_F(ChainVerifierTest, ChangedStoredHashIsReportedAtItsRecord) {
  for (uint64_t s = 1; s <= kRecords; ++s) {
    std::vector<ChainedRecord> records = records_;
    records[At(s)].hash[31] ^= 1;
    ExpectBadAt(Verify(records, checkpoints_), s, absl::StrCat("hash ", s));
  }
}

TEST_F(ChainVerifierTest, DeletedRecordIsReportedAtItsSequence) {
  for (uint64_t s = 1; s < kRecords; ++s) {
    std::vector<ChainedRecord> records = records_;
    records.erase(records.begin() + static_cast<ptrdiff_t>(At(s)));
    const VerifyReport report = Verify(records, checkpoints_);
    ExpectBadAt(report, s, absl::StrCat("delete ", s));
    EXPECT_THAT(report.problem, HasSubstr("missing"));
  }
}

TEST_F(ChainVerifierTest, DeletedAndRenumberedRecordsAreReportedAtTheFirstGap) {
  for (uint64_t s = 1; s < kRecords; ++s) {
    std::vector<ChainedRecord> records = records_;
    records.erase(records.begin() + static_cast<ptrdiff_t>(At(s)));
    for (size_t i = At(s); i < records.size(); ++i) records[i].sequence = i + 1;  // no rehash
    ExpectBadAt(Verify(records, checkpoints_), s, absl::StrCat("delete+renumber ", s));
  }
}

TEST_F(ChainVerifierTest, ReorderedRecordsAreReportedAtTheFirstMovedOne) {
  for (uint64_t s = 1; s < kRecords; ++s) {
    std::vector<ChainedRecord> records = records_;
    std::swap(records[At(s)], records[At(s + 1)]);
    ExpectBadAt(Verify(records, checkpoints_), s, absl::StrCat("swap ", s));
    // Swapped and renumbered (sequence fields kept in order, contents swapped).
    std::swap(records[At(s)].sequence, records[At(s + 1)].sequence);
    ExpectBadAt(Verify(records, checkpoints_), s, absl::StrCat("swap+renumber ", s));
  }
}

TEST_F(ChainVerifierTest, InsertedRecordIsReportedAtItsPosition) {
  for (uint64_t s = 1; s <= kRecords; ++s) {
    // A well-formed forged record claiming sequence s, linked to s - 1, placed before the real s.
    const std::string prev = s == 1 ? GenesisHash() : records_[At(s - 1)].hash;
    AuditRecord forged_record = MakeRecord(s);
    forged_record.identity = "forger";
    const ChainedRecord forged = Chain(s, prev, forged_record);

    std::vector<ChainedRecord> records = records_;
    records.insert(records.begin() + static_cast<ptrdiff_t>(At(s)), forged);
    ExpectBadAt(Verify(records, checkpoints_), s, absl::StrCat("insert ", s));

    // The same, with every later record renumbered (without rehashing) to close the gap.
    for (size_t i = At(s) + 1; i < records.size(); ++i) records[i].sequence = i + 1;
    ExpectBadAt(Verify(records, checkpoints_), s, absl::StrCat("insert+renumber ", s));
  }
}

TEST_F(ChainVerifierTest, TruncationIsReportedAtTheFirstMissingRecord) {
  for (uint64_t keep = 0; keep < 20; ++keep) {
    std::vector<ChainedRecord> records(records_.begin(),
                                       records_.begin() + static_cast<ptrdiff_t>(keep));
    const VerifyReport report = Verify(records, checkpoints_);
    ExpectBadAt(report, keep + 1, absl::StrCat("keep ", keep));
    EXPECT_THAT(report.problem, HasSubstr("truncated"));
  }
  // Cutting only the unsigned tail cannot be told from a shorter log.
  std::vector<ChainedRecord> records(records_.begin(), records_.begin() + 21);
  EXPECT_TRUE(Verify(records, checkpoints_).ok);
}

TEST_F(ChainVerifierTest, ForgedCheckpointIsReportedAtItsSequence) {
  for (size_t c = 0; c < checkpoints_.size(); ++c) {
    std::vector<Checkpoint> checkpoints = checkpoints_;
    checkpoints[c].signature[10] ^= 1;
    const VerifyReport report = Verify(records_, checkpoints);
    ExpectBadAt(report, checkpoints_[c].sequence, absl::StrCat("forged signature ", c));
    EXPECT_THAT(report.problem, HasSubstr("forged"));
  }
  // A checkpoint signed by another key, at a sequence that exists and beyond the head.
  auto other_pem = GenerateSigningKeyPem();
  ASSERT_TRUE(other_pem.ok());
  auto other = CheckpointSigner::FromPrivateKeyPem(*other_pem);
  ASSERT_TRUE(other.ok());
  std::vector<Checkpoint> checkpoints = checkpoints_;
  checkpoints.push_back(other->Sign(12, records_[At(12)].hash, 0));
  ExpectBadAt(Verify(records_, checkpoints), 12, "other key at 12");
  checkpoints = checkpoints_;
  checkpoints.push_back(other->Sign(30, std::string(32, 'z'), 0));
  ExpectBadAt(Verify(records_, checkpoints), 30, "other key beyond the head");
  // A genuine signature over a hash this chain never had (a checkpoint from another chain).
  checkpoints = checkpoints_;
  checkpoints.push_back(signer_->Sign(7, std::string(32, 'z'), 0));
  ExpectBadAt(Verify(records_, checkpoints), 7, "foreign hash");
}

TEST_F(ChainVerifierTest, WrongPublicKeyFailsAtTheFirstCheckpoint) {
  auto other_pem = GenerateSigningKeyPem();
  ASSERT_TRUE(other_pem.ok());
  auto other = CheckpointSigner::FromPrivateKeyPem(*other_pem);
  ASSERT_TRUE(other.ok());
  const VerifyReport report =
      VerifyChain(records_, checkpoints_, other->PublicKeyPem(), std::nullopt);
  ExpectBadAt(report, 5, "wrong key");

  const VerifyReport garbage = VerifyChain(records_, checkpoints_, "garbage", std::nullopt);
  EXPECT_FALSE(garbage.ok);
  EXPECT_FALSE(garbage.first_bad_sequence.has_value());
  EXPECT_FALSE(garbage.problem.empty());
}

TEST_F(ChainVerifierTest, PrunedChainVerifiesFromItsAnchor) {
  const Checkpoint anchor = checkpoints_[1];  // sequence 10
  ASSERT_EQ(anchor.sequence, 10u);
  std::vector<ChainedRecord> records(records_.begin() + 10, records_.end());
  VerifyReport report = Verify(records, checkpoints_, anchor);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records_checked, 12u);
  EXPECT_EQ(report.signed_through, 20u);

  // Only the checkpoints from the anchor on are needed.
  report = Verify(records, {checkpoints_[2], checkpoints_[3]}, anchor);
  EXPECT_TRUE(report.ok) << report.problem;

  // The first record after the anchor deleted.
  std::vector<ChainedRecord> missing(records_.begin() + 11, records_.end());
  ExpectBadAt(Verify(missing, checkpoints_, anchor), 11, "anchor + delete 11");

  // Records before the anchor left in place are not the pruned chain.
  ExpectBadAt(Verify(records_, checkpoints_, anchor), 11, "unpruned records");

  // A forged anchor.
  Checkpoint forged = anchor;
  forged.chain_hash[0] ^= 1;
  ExpectBadAt(Verify(records, checkpoints_, forged), 10, "forged anchor");

  // Record 11 modified after pruning.
  records[0].record.model = "edited";
  ExpectBadAt(Verify(records, checkpoints_, anchor), 11, "anchor + modify 11");
}

TEST_F(ChainVerifierTest, StoredChainReportsEveryByteFlipAtItsRecord) {
  std::vector<std::string> stored;
  for (const ChainedRecord& record : records_) stored.push_back(EncodeStoredRecord(record));
  VerifyReport report = VerifyStoredChain(stored, checkpoints_, public_key_, std::nullopt);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records_checked, kRecords);

  for (uint64_t s : {1, 5, 6, 13, 20, 21}) {
    const std::string& original = stored[At(s)];
    for (size_t byte = 0; byte < original.size(); ++byte) {
      std::vector<std::string> tampered = stored;
      tampered[At(s)][byte] ^= 0x20;
      ExpectBadAt(VerifyStoredChain(tampered, checkpoints_, public_key_, std::nullopt), s,
                  absl::StrCat("record ", s, " byte ", byte));
    }
  }
  std::vector<std::string> truncated = stored;
  truncated[At(8)].resize(10);
  report = VerifyStoredChain(truncated, checkpoints_, public_key_, std::nullopt);
  ExpectBadAt(report, 8, "undecodable 8");
  EXPECT_THAT(report.problem, HasSubstr("does not decode"));
}

TEST_F(ChainVerifierTest, IncrementalWalkStopsAtTheFirstProblemAndKeepsIt) {
  std::vector<ChainedRecord> records = records_;
  records[6].record.identity = "mallory";  // sequence 7 modified
  ChainVerifier verifier(public_key_, checkpoints_, std::nullopt);
  size_t accepted = 0;
  for (const ChainedRecord& record : records) {
    if (!verifier.Add(record)) break;
    ++accepted;
  }
  EXPECT_EQ(accepted, 6u);
  EXPECT_TRUE(verifier.failed());
  EXPECT_FALSE(verifier.AddStored(EncodeStoredRecord(records_[7])));  // ignored once failed
  const VerifyReport report = verifier.Finish();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_sequence, 7u);
  EXPECT_EQ(report.records_checked, 6u);

  // Undecodable bytes are reported at the sequence expected in their place.
  ChainVerifier stored(public_key_, checkpoints_, std::nullopt);
  EXPECT_TRUE(stored.AddStored(EncodeStoredRecord(records_[0])));
  EXPECT_FALSE(stored.AddStored("not a record"));
  EXPECT_EQ(stored.Finish().first_bad_sequence, 2u);
}

}  // namespace
}  // namespace airlock::audit

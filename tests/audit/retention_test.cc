// Tests of audit log retention: choosing the anchor, what is deleted and kept, refusing tampered
// chains, pruning under concurrent appends, reopening a pruned store, and forged or unreadable anchors.
#include "audit/retention.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "audit/audit_record.h"
#include "audit/audit_store.h"
#include "audit/chain_verifier.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"
#include "inference/base/status.h"
#include "tests/audit/audit_test_support.h"
#include "tests/support/test_data.h"

namespace airlock::audit {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Record n is appended with the time kStart + n seconds, so a cutoff is "records before n".
constexpr int64_t kStartMicros = 1'700'000'000'000'000;
absl::Time TimeOf(uint64_t n) { return absl::FromUnixMicros(kStartMicros + static_cast<int64_t>(n) * 1'000'000); }

// Bytes that appear in the store only inside record n (in its sealed text).
std::string MarkerOf(uint64_t n) { return absl::StrCat("retention-marker-", n, "-end"); }

AuditRecord RecordAt(uint64_t n) {
  AuditRecord record;
  record.phase = Phase::kEnd;
  record.time_unix_micros = absl::ToUnixMicros(TimeOf(n));
  record.request_id = absl::StrCat("req-", n);
  record.identity = "alice";
  record.method = "/airlock.v1.Inference/Generate";
  record.model = "tiny";
  record.sealed_text = MarkerOf(n);
  return record;
}

// A checkpoint every 10 records; only the count (and a clean shutdown) signs.
std::unique_ptr<AuditLog> OpenRetentionLogOrDie(StateDb* db) {
  AuditLogOptions options;
  options.checkpoint_every_records = 10;
  options.checkpoint_interval = absl::Hours(1);
  return OpenLogOrDie(db, options);
}

// The store as `airlockctl audit verify --state-dir` sees it: records, checkpoints and anchor.
VerifyReport VerifyStore(const StateDb& db, const std::string& key_pem = TestKeyPem()) {
  absl::StatusOr<std::vector<std::string>> records = ReadStoredAuditRange(db, 0, UINT64_MAX);
  absl::StatusOr<std::vector<Checkpoint>> checkpoints = ReadAuditCheckpoints(db);
  absl::StatusOr<std::optional<Checkpoint>> anchor = ReadAuditAnchor(db);
  EXPECT_TRUE(records.ok()) << records.status();
  EXPECT_TRUE(checkpoints.ok()) << checkpoints.status();
  EXPECT_TRUE(anchor.ok()) << anchor.status();
  if (!records.ok() || !checkpoints.ok() || !anchor.ok()) return {};
  return VerifyStoredChain(*records, *checkpoints, SignerFromPem(key_pem).PublicKeyPem(), *anchor);
}

std::vector<uint64_t> RecordSequences(const StateDb& db) {
  absl::StatusOr<std::vector<ChainedRecord>> records = ReadAuditRange(db, 0, UINT64_MAX);
  EXPECT_TRUE(records.ok()) << records.status();
  std::vector<uint64_t> out;
  if (records.ok()) {
    for (const ChainedRecord& record : *records) out.push_back(record.sequence);
  }
  return out;
}

std::vector<uint64_t> CheckpointSequences(const StateDb& db) {
  absl::StatusOr<std::vector<Checkpoint>> checkpoints = ReadAuditCheckpoints(db);
  EXPECT_TRUE(checkpoints.ok()) << checkpoints.status();
  std::vector<uint64_t> out;
  if (checkpoints.ok()) {
    for (const Checkpoint& checkpoint : *checkpoints) out.push_back(checkpoint.sequence);
  }
  return out;
}

// The anchor's sequence, 0 when there is none.
uint64_t AnchorSequence(const PruneResult& result) {
  return result.anchor.has_value() ? result.anchor->sequence : 0;
}

std::vector<uint64_t> Range(uint64_t from, uint64_t to) {
  std::vector<uint64_t> out;
  for (uint64_t n = from; n <= to; ++n) out.push_back(n);
  return out;
}

Checkpoint StoredCheckpoint(const StateDb& db, uint64_t sequence) {
  absl::StatusOr<std::vector<Checkpoint>> checkpoints = ReadAuditCheckpoints(db);
  AIRLOCK_CHECK(checkpoints.ok());
  for (const Checkpoint& checkpoint : *checkpoints) {
    if (checkpoint.sequence == sequence) return checkpoint;
  }
  ADD_FAILURE() << "no checkpoint at " << sequence;
  return {};
}

void PutRaw(StateDb* db, rocksdb::ColumnFamilyHandle* family, const std::string& key, const std::string& value) {
  rocksdb::WriteBatch batch;
  ASSERT_TRUE(batch.Put(family, key, value).ok());
  ASSERT_TRUE(db->Write(&batch, /*sync=*/true).ok());
}

void PutAnchor(StateDb* db, const Checkpoint& anchor) {
  PutRaw(db, db->meta(), kAuditAnchorKey, EncodeCheckpoint(anchor));
}

// Whether any file under `dir` contains `needle`.
bool AnyFileContains(const std::string& dir, const std::string& needle) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (content.find(needle) != std::string::npos) return true;
  }
  return false;
}

class RetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    db_ = OpenDbOrDie(dir_);
  }
  void TearDown() override {
    db_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Appends records 1..n through a real AuditLog (a checkpoint every 10 records) and closes it,
  // which signs the tail: checkpoints at 10, 20, ... and at n.
  void Fill(uint64_t n) {
    std::unique_ptr<AuditLog> log = OpenRetentionLogOrDie(db_.get());
    Append(log.get(), log->head().sequence + 1, n);
  }
  static void Append(AuditLog* log, uint64_t from, uint64_t to) {
    for (uint64_t n = from; n <= to; ++n) {
      absl::StatusOr<uint64_t> sequence = log->Append(RecordAt(n));
      ASSERT_TRUE(sequence.ok()) << sequence.status();
      ASSERT_EQ(*sequence, n);
    }
  }
  PruneResult PruneOrDie(absl::Time cutoff) {
    absl::StatusOr<PruneResult> result = PruneAuditLog(db_.get(), cutoff);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *std::move(result) : PruneResult{};
  }
  std::optional<Checkpoint> StoredAnchor() {
    absl::StatusOr<std::optional<Checkpoint>> anchor = ReadAuditAnchor(*db_);
    EXPECT_TRUE(anchor.ok()) << anchor.status();
    return anchor.ok() ? *anchor : std::nullopt;
  }

  std::string dir_;
  std::unique_ptr<StateDb> db_;
};

TEST_F(RetentionTest, PrunesThroughTheLastCheckpointBeforeTheCutoff) {
  Fill(35);
  ASSERT_THAT(CheckpointSequences(*db_), ElementsAre(10, 20, 30, 35));
  const Checkpoint checkpoint_20 = StoredCheckpoint(*db_, 20);

  // Records 1..25 are older than the cutoff; the last checkpoint among them is 20.
  const PruneResult result = PruneOrDie(TimeOf(26));
  ASSERT_TRUE(result.anchor.has_value());
  EXPECT_EQ(*result.anchor, checkpoint_20);
  EXPECT_EQ(result.records_deleted, 20u);
  EXPECT_EQ(result.checkpoints_deleted, 1u);
  EXPECT_EQ(result.first_kept_sequence, 21u);

  EXPECT_EQ(StoredAnchor(), checkpoint_20);
  EXPECT_EQ(RecordSequences(*db_), Range(21, 35));
  // The anchor's own checkpoint stays: the verifier checks it against the anchor.
  EXPECT_THAT(CheckpointSequences(*db_), ElementsAre(20, 30, 35));

  const VerifyReport report = VerifyStore(*db_);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records_checked, 15u);
  EXPECT_EQ(report.head_sequence, 35u);
  EXPECT_EQ(report.signed_through, 35u);
  EXPECT_EQ(report.unsigned_tail, 0u);
  EXPECT_EQ(report.problem, "");

  // Without the anchor the pruned chain does not verify: the anchor is what makes it checkable.
  absl::StatusOr<std::vector<std::string>> records = ReadStoredAuditRange(*db_, 0, UINT64_MAX);
  absl::StatusOr<std::vector<Checkpoint>> checkpoints = ReadAuditCheckpoints(*db_);
  ASSERT_TRUE(records.ok() && checkpoints.ok());
  EXPECT_FALSE(VerifyStoredChain(*records, *checkpoints, SignerFromPem().PublicKeyPem(), std::nullopt).ok);
}

TEST_F(RetentionTest, TheCutoffIsExclusive) {
  Fill(35);
  // Record 10 is exactly as old as the cutoff: it is kept, so checkpoint 10 cannot be the anchor.
  PruneResult result = PruneOrDie(TimeOf(10));
  EXPECT_FALSE(result.anchor.has_value());
  EXPECT_EQ(result.records_deleted, 0u);
  EXPECT_EQ(result.first_kept_sequence, 1u);

  result = PruneOrDie(TimeOf(10) + absl::Microseconds(1));
  ASSERT_TRUE(result.anchor.has_value());
  EXPECT_EQ(result.anchor->sequence, 10u);
  EXPECT_EQ(result.records_deleted, 10u);
  EXPECT_EQ(result.checkpoints_deleted, 0u);
  EXPECT_EQ(RecordSequences(*db_), Range(11, 35));
}

TEST_F(RetentionTest, ACutoffOlderThanEverythingDeletesNothing) {
  Fill(35);
  const PruneResult result = PruneOrDie(TimeOf(0));
  EXPECT_FALSE(result.anchor.has_value());
  EXPECT_EQ(result.records_deleted, 0u);
  EXPECT_EQ(result.checkpoints_deleted, 0u);
  EXPECT_EQ(result.first_kept_sequence, 1u);
  EXPECT_EQ(StoredAnchor(), std::nullopt);
  EXPECT_EQ(RecordSequences(*db_), Range(1, 35));
  EXPECT_THAT(CheckpointSequences(*db_), ElementsAre(10, 20, 30, 35));
  EXPECT_EQ(VerifyStore(*db_).records_checked, 35u);
}

TEST_F(RetentionTest, AnEmptyStoreHasNothingToPrune) {
  const PruneResult result = PruneOrDie(absl::InfiniteFuture());
  EXPECT_FALSE(result.anchor.has_value());
  EXPECT_EQ(result.records_deleted, 0u);
  EXPECT_EQ(result.first_kept_sequence, 1u);
}

TEST_F(RetentionTest, KeepsTheHeadRecordEvenWhenEverythingIsOld) {
  Fill(35);
  absl::StatusOr<ChainHead> head = ReadChainHead(*db_);
  ASSERT_TRUE(head.ok());
  // Checkpoint 35 covers the head, so the anchor is the checkpoint before it.
  const PruneResult result = PruneOrDie(absl::InfiniteFuture());
  ASSERT_TRUE(result.anchor.has_value());
  EXPECT_EQ(result.anchor->sequence, 30u);
  EXPECT_EQ(result.records_deleted, 30u);
  EXPECT_EQ(result.checkpoints_deleted, 2u);
  EXPECT_EQ(RecordSequences(*db_), Range(31, 35));
  absl::StatusOr<ChainHead> after = ReadChainHead(*db_);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->sequence, 35u);
  EXPECT_EQ(after->hash, head->hash);
  EXPECT_TRUE(VerifyStore(*db_).ok);
}

TEST_F(RetentionTest, OnlyACheckpointAtTheHeadMeansNothingToPrune) {
  Fill(10);  // one checkpoint, at the head
  ASSERT_THAT(CheckpointSequences(*db_), ElementsAre(10));
  const PruneResult result = PruneOrDie(absl::InfiniteFuture());
  EXPECT_FALSE(result.anchor.has_value());
  EXPECT_EQ(result.records_deleted, 0u);
  EXPECT_EQ(RecordSequences(*db_), Range(1, 10));
}

TEST_F(RetentionTest, PruningAgainIsIdempotentAndTheAnchorOnlyMovesForward) {
  Fill(35);
  PruneResult first = PruneOrDie(TimeOf(26));
  ASSERT_TRUE(first.anchor.has_value());
  ASSERT_EQ(first.anchor->sequence, 20u);

  // The same cutoff again: nothing to do, the anchor stays.
  PruneResult again = PruneOrDie(TimeOf(26));
  ASSERT_TRUE(again.anchor.has_value());
  EXPECT_EQ(*again.anchor, *first.anchor);
  EXPECT_EQ(again.records_deleted, 0u);
  EXPECT_EQ(again.checkpoints_deleted, 0u);
  EXPECT_EQ(again.first_kept_sequence, 21u);

  // An older cutoff never moves the anchor back.
  PruneResult older = PruneOrDie(TimeOf(12));
  ASSERT_TRUE(older.anchor.has_value());
  EXPECT_EQ(older.anchor->sequence, 20u);
  EXPECT_EQ(older.records_deleted, 0u);
  EXPECT_EQ(StoredAnchor()->sequence, 20u);

  // A newer one moves it forward from the anchor.
  PruneResult newer = PruneOrDie(TimeOf(33));
  ASSERT_TRUE(newer.anchor.has_value());
  EXPECT_EQ(newer.anchor->sequence, 30u);
  EXPECT_EQ(newer.records_deleted, 10u);
  EXPECT_EQ(newer.checkpoints_deleted, 1u);  // checkpoint 20, the old anchor's
  EXPECT_EQ(newer.first_kept_sequence, 31u);
  EXPECT_THAT(CheckpointSequences(*db_), ElementsAre(30, 35));
  const VerifyReport report = VerifyStore(*db_);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records_checked, 5u);
}

// Each way of damaging the part that would be pruned, and what the refusal must name.
struct Tampering {
  const char* name;
  void (*apply)(StateDb* db);
  const char* message;
};

ChainedRecord ReadRecord(const StateDb& db, uint64_t sequence) {
  absl::StatusOr<std::vector<ChainedRecord>> records = ReadAuditRange(db, sequence, sequence);
  AIRLOCK_CHECK(records.ok() && records->size() == 1);
  return records->front();
}

void ModifyKeepingTheHash(StateDb* db, uint64_t sequence) {
  ChainedRecord record = ReadRecord(*db, sequence);
  record.record.identity = "mallory";
  PutRaw(db, db->audit(), EncodeSequenceKey(sequence), EncodeStoredRecord(record));
}

const Tampering kTamperings[] = {
    {"record at the anchor modified", [](StateDb* db) { ModifyKeepingTheHash(db, 20); },
     "audit record 20 was modified"},
    {"record at the anchor rewritten and rehashed",
     [](StateDb* db) {
       ChainedRecord record = ReadRecord(*db, 20);
       record.record.identity = "mallory";
       PutRaw(db, db->audit(), EncodeSequenceKey(20),
              EncodeStoredRecord(Chain(20, record.prev_hash, record.record)));
     },
     "audit record 20 does not match checkpoint 20"},
    {"earlier record modified", [](StateDb* db) { ModifyKeepingTheHash(db, 5); }, "audit record 5 was modified"},
    {"earlier record deleted",
     [](StateDb* db) {
       rocksdb::WriteBatch batch;
       AIRLOCK_CHECK(batch.Delete(db->audit(), EncodeSequenceKey(7)).ok());
       AIRLOCK_CHECK(db->Write(&batch, true).ok());
     },
     "audit record 7 is missing"},
    {"checkpoint over another hash",
     [](StateDb* db) {
       PutRaw(db, db->checkpoints(), EncodeSequenceKey(10),
              EncodeCheckpoint(SignerFromPem().Sign(10, std::string(kHashSize, 'x'), 1)));
     },
     "audit record 10 does not match checkpoint 10"},
};

TEST(RetentionTamperTest, RefusesToPruneAChainThatDoesNotMatchItsCheckpoints) {
  for (const Tampering& tampering : kTamperings) {
    SCOPED_TRACE(tampering.name);
    const std::string dir = testing::MakeTempDir();
    {
      std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
      {
        std::unique_ptr<AuditLog> log = OpenRetentionLogOrDie(db.get());
        for (uint64_t n = 1; n <= 35; ++n) ASSERT_TRUE(log->Append(RecordAt(n)).ok());
      }
      tampering.apply(db.get());
      const std::vector<uint64_t> records_before = RecordSequences(*db);
      const std::vector<uint64_t> checkpoints_before = CheckpointSequences(*db);

      absl::StatusOr<PruneResult> result = PruneAuditLog(db.get(), TimeOf(26));
      ASSERT_FALSE(result.ok());
      EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss) << result.status();
      EXPECT_THAT(std::string(result.status().message()), HasSubstr(tampering.message));
      EXPECT_THAT(std::string(result.status().message()), HasSubstr("refusing to prune"));

      // Nothing was deleted: the evidence is still there for the verifier.
      absl::StatusOr<std::optional<Checkpoint>> anchor = ReadAuditAnchor(*db);
      ASSERT_TRUE(anchor.ok());
      EXPECT_EQ(*anchor, std::nullopt);
      EXPECT_EQ(RecordSequences(*db), records_before);
      EXPECT_EQ(CheckpointSequences(*db), checkpoints_before);
      EXPECT_FALSE(VerifyStore(*db).ok);
    }
    std::filesystem::remove_all(dir);
  }
}

TEST_F(RetentionTest, RefusesWhenTheKeptRecordsDoNotStartAtTheAnchor) {
  Fill(35);
  const Checkpoint checkpoint_10 = StoredCheckpoint(*db_, 10);
  const std::optional<Checkpoint> pruned = PruneOrDie(TimeOf(26)).anchor;
  ASSERT_TRUE(pruned.has_value());
  const Checkpoint anchor = *pruned;
  ASSERT_EQ(anchor.sequence, 20u);

  // A genuine but older checkpoint stored as the anchor: records 11..20 look deleted.
  PutAnchor(db_.get(), checkpoint_10);
  absl::StatusOr<PruneResult> result = PruneAuditLog(db_.get(), absl::InfiniteFuture());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("audit record 11 is missing"));

  // The right sequence, but a hash the first kept record does not link to.
  PutAnchor(db_.get(), SignerFromPem().Sign(20, std::string(kHashSize, 'x'), anchor.time_unix_micros));
  result = PruneAuditLog(db_.get(), absl::InfiniteFuture());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("audit record 21 does not link to the anchor's (20)"));
  EXPECT_EQ(RecordSequences(*db_), Range(21, 35));
}

TEST_F(RetentionTest, PrunesWhileFourThreadsAppend) {
  std::unique_ptr<AuditLog> log = OpenRetentionLogOrDie(db_.get());
  constexpr int kThreads = 4;
  constexpr int kMinPerThread = 100;
  std::atomic<bool> stop{false};
  std::atomic<int> failed_appends{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Every record is old; each thread keeps appending until the pruning below is done.
      for (int i = 0; i < kMinPerThread || !stop.load(); ++i) {
        AuditRecord record = RecordAt(static_cast<uint64_t>(t * 1'000'000 + i + 1));
        if (!log->Append(std::move(record)).ok()) failed_appends.fetch_add(1);
      }
    });
  }

  // Prune repeatedly while the log grows, until several prunes deleted records mid-append.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  uint64_t anchor_sequence = 0;
  int deleting_prunes = 0;
  while (deleting_prunes < 5 && absl::Now() < deadline) {
    absl::StatusOr<PruneResult> result = PruneAuditLog(db_.get(), absl::InfiniteFuture());
    ASSERT_TRUE(result.ok()) << result.status();
    const uint64_t sequence = result->anchor.has_value() ? result->anchor->sequence : 0;
    EXPECT_GE(sequence, anchor_sequence) << "the anchor moved back";
    if (sequence > 0) {
      EXPECT_LT(sequence, log->head().sequence) << "the anchor must stay below the head";
    }
    if (result->records_deleted > 0) ++deleting_prunes;
    anchor_sequence = sequence;
  }
  stop.store(true);
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(deleting_prunes, 5) << "the appenders outran the deadline";
  EXPECT_EQ(failed_appends.load(), 0);
  EXPECT_TRUE(log->healthy());
  const uint64_t head = log->head().sequence;
  EXPECT_GE(head, static_cast<uint64_t>(kThreads * kMinPerThread));
  log.reset();  // signs the tail

  const VerifyReport report = VerifyStore(*db_);
  EXPECT_TRUE(report.ok) << report.problem;
  ASSERT_TRUE(StoredAnchor().has_value());
  EXPECT_EQ(StoredAnchor()->sequence, anchor_sequence);
  EXPECT_EQ(report.records_checked, head - anchor_sequence);
  EXPECT_EQ(report.head_sequence, head);
  EXPECT_EQ(report.signed_through, head);
}

TEST_F(RetentionTest, AReopenedStoreContinuesThePrunedChain) {
  Fill(35);
  ASSERT_EQ(AnchorSequence(PruneOrDie(absl::InfiniteFuture())), 30u);
  db_.reset();

  db_ = OpenDbOrDie(dir_);
  {
    std::unique_ptr<AuditLog> log = OpenRetentionLogOrDie(db_.get());
    EXPECT_EQ(log->head().sequence, 35u);
    Append(log.get(), 36, 45);
  }
  VerifyReport report = VerifyStore(*db_);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records_checked, 15u);
  EXPECT_EQ(report.head_sequence, 45u);
  EXPECT_EQ(report.signed_through, 45u);

  // The log counts its checkpoints on from 35 (the last before the restart): 35 and 45.
  EXPECT_THAT(CheckpointSequences(*db_), ElementsAre(30, 35, 45));
  const PruneResult result = PruneOrDie(absl::InfiniteFuture());
  EXPECT_EQ(AnchorSequence(result), 35u);
  EXPECT_EQ(result.records_deleted, 5u);
  EXPECT_EQ(result.checkpoints_deleted, 1u);
  report = VerifyStore(*db_);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records_checked, 10u);
}

TEST_F(RetentionTest, AStoreWithEveryRecordPrunedContinuesFromTheAnchor) {
  Fill(20);
  const Checkpoint checkpoint_20 = StoredCheckpoint(*db_, 20);
  // PruneAuditLog always keeps the head; a store emptied otherwise (an older build, a manual
  // repair) must still continue the chain from its anchor, not fork it from the genesis hash.
  rocksdb::WriteBatch batch;
  ASSERT_TRUE(batch.DeleteRange(db_->audit(), EncodeSequenceKey(0), EncodeSequenceKey(21)).ok());
  ASSERT_TRUE(batch.DeleteRange(db_->checkpoints(), EncodeSequenceKey(0), EncodeSequenceKey(20)).ok());
  ASSERT_TRUE(batch.Put(db_->meta(), kAuditAnchorKey, EncodeCheckpoint(checkpoint_20)).ok());
  ASSERT_TRUE(db_->Write(&batch, /*sync=*/true).ok());

  absl::StatusOr<ChainHead> head = ReadChainHead(*db_);
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->sequence, 20u);
  EXPECT_EQ(head->hash, checkpoint_20.chain_hash);
  {
    std::unique_ptr<AuditLog> log = OpenRetentionLogOrDie(db_.get());
    EXPECT_EQ(log->head().sequence, 20u);
    Append(log.get(), 21, 25);
  }
  const VerifyReport report = VerifyStore(*db_);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records_checked, 5u);
  EXPECT_EQ(report.head_sequence, 25u);
}

TEST_F(RetentionTest, AForgedAnchorDoesNotVerify) {
  Fill(35);
  const std::optional<Checkpoint> pruned = PruneOrDie(TimeOf(26)).anchor;
  ASSERT_TRUE(pruned.has_value());
  const Checkpoint anchor = *pruned;
  ASSERT_TRUE(VerifyStore(*db_).ok);

  Checkpoint bad_signature = anchor;
  bad_signature.signature[0] ^= 0x01;
  PutAnchor(db_.get(), bad_signature);
  VerifyReport report = VerifyStore(*db_);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_sequence, 20u);
  EXPECT_THAT(report.problem, HasSubstr("anchor checkpoint 20 does not verify"));

  // Signed, but with another key.
  absl::StatusOr<std::string> other_key = GenerateSigningKeyPem();
  ASSERT_TRUE(other_key.ok());
  PutAnchor(db_.get(), SignerFromPem(*other_key).Sign(anchor.sequence, anchor.chain_hash, anchor.time_unix_micros));
  report = VerifyStore(*db_);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_sequence, 20u);
  EXPECT_THAT(report.problem, HasSubstr("anchor"));

  // The genuine anchor verifies again.
  PutAnchor(db_.get(), anchor);
  EXPECT_TRUE(VerifyStore(*db_).ok);
}

TEST_F(RetentionTest, AnAnchorThatDoesNotDecodeIsDataLoss) {
  Fill(35);
  PutRaw(db_.get(), db_->meta(), kAuditAnchorKey, "not a checkpoint");
  absl::StatusOr<std::optional<Checkpoint>> anchor = ReadAuditAnchor(*db_);
  ASSERT_FALSE(anchor.ok());
  EXPECT_EQ(anchor.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(anchor.status().message()), HasSubstr("meta key 'audit_anchor') does not decode"));

  absl::StatusOr<PruneResult> result = PruneAuditLog(db_.get(), absl::InfiniteFuture());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(RecordSequences(*db_), Range(1, 35));
}

TEST_F(RetentionTest, PrunedRecordsLeaveTheDisk) {
  Fill(35);
  // Fresh records are in the write-ahead log as written, so the scan can see them.
  ASSERT_TRUE(AnyFileContains(dir_, MarkerOf(5)));
  ASSERT_EQ(AnchorSequence(PruneOrDie(absl::InfiniteFuture())), 30u);
  for (uint64_t n = 1; n <= 30; ++n) {
    EXPECT_FALSE(AnyFileContains(dir_, MarkerOf(n))) << "record " << n << " is still on disk";
  }
  EXPECT_EQ(RecordSequences(*db_), Range(31, 35));
  EXPECT_TRUE(VerifyStore(*db_).ok);
}

}  // namespace
}  // namespace airlock::audit

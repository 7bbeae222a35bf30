// Tampering with a real RocksDB audit store — a record modified, deleted, reordered, inserted, or
// records cut off the end — is found by verifying the store as airlockd and airlockctl do
// (VerifySnapshot over one snapshot), at the first affected sequence.
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "audit/audit_reader.h"
#include "audit/audit_record.h"
#include "audit/audit_store.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"
#include "inference/base/status.h"
#include "tests/audit/audit_test_support.h"
#include "tests/support/test_data.h"

namespace airlock::audit {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kRecords = 22;  // checkpoints at 5, 10, 15, 20, and 22 when the log closes

class StoreTamperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    public_key_ = SignerFromPem().PublicKeyPem();
    dir_ = airlock::testing::MakeTempDir() + "/state";
    db_ = OpenDbOrDie(dir_);
    AuditLogOptions options;
    options.checkpoint_every_records = 5;
    options.checkpoint_interval = absl::Hours(1);
    std::unique_ptr<AuditLog> log = OpenLogOrDie(db_.get(), options);
    for (uint64_t i = 1; i <= kRecords; ++i) {
      AuditRecord record;
      record.phase = Phase::kEnd;
      record.request_id = absl::StrCat("req-", i);
      record.identity = "alice";
      record.method = "airlock.v1.Inference/Generate";
      record.model = "tiny";
      record.completion_tokens = static_cast<uint32_t>(i);
      ASSERT_TRUE(log->Append(record).ok());
    }
    log.reset();  // signs the head on close
  }

  VerifyReport Verify() {
    AuditSnapshot snapshot(*db_);
    absl::StatusOr<VerifyReport> report = VerifySnapshot(snapshot, public_key_);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : VerifyReport{};
  }
  std::string Get(uint64_t sequence) {
    std::string value;
    EXPECT_TRUE(db_->db()->Get(rocksdb::ReadOptions(), db_->audit(), EncodeSequenceKey(sequence), &value).ok());
    return value;
  }
  void Put(uint64_t sequence, const std::string& value) {
    ASSERT_TRUE(db_->db()->Put(rocksdb::WriteOptions(), db_->audit(), EncodeSequenceKey(sequence), value).ok());
  }
  void Delete(uint64_t sequence) {
    ASSERT_TRUE(db_->db()->Delete(rocksdb::WriteOptions(), db_->audit(), EncodeSequenceKey(sequence)).ok());
  }
  // A rewritten record: decoded, changed by `edit`, re-encoded; `rehash` recomputes its hash.
  std::string Rewritten(uint64_t sequence, const std::function<void(ChainedRecord&)>& edit, bool rehash) {
    absl::StatusOr<ChainedRecord> record = DecodeStoredRecord(Get(sequence));
    EXPECT_TRUE(record.ok());
    edit(*record);
    if (rehash) record->hash = ChainHash(record->prev_hash, EncodeRecord(*record));
    return EncodeStoredRecord(*record);
  }
  void ExpectBadAt(uint64_t sequence) {
    const VerifyReport report = Verify();
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.first_bad_sequence, std::optional<uint64_t>(sequence)) << report.problem;
  }

  std::string public_key_;
  std::string dir_;
  std::unique_ptr<StateDb> db_;
};

TEST_F(StoreTamperTest, AnUntouchedStoreVerifies) {
  const VerifyReport report = Verify();
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.records_checked, kRecords);
  EXPECT_EQ(report.signed_through, kRecords);
}

TEST_F(StoreTamperTest, AModifiedRecordIsFoundAtItself) {
  Put(7, Rewritten(7, [](ChainedRecord& r) { r.record.identity = "mallory"; }, /*rehash=*/false));
  ExpectBadAt(7);
}

TEST_F(StoreTamperTest, AModifiedAndRehashedRecordIsFoundAtItself) {
  Put(7, Rewritten(7, [](ChainedRecord& r) { r.record.completion_tokens = 0; }, /*rehash=*/true));
  ExpectBadAt(7);
}

TEST_F(StoreTamperTest, ADeletedRecordIsFoundAtItsSequence) {
  Delete(9);
  ExpectBadAt(9);
}

TEST_F(StoreTamperTest, SwappedRecordsAreFoundAtTheFirstOfThem) {
  const std::string eleven = Get(11);
  const std::string twelve = Get(12);
  Put(11, twelve);
  Put(12, eleven);
  ExpectBadAt(11);
  // Renumbered to fit their new places too (sequence fields rewritten, hashes recomputed).
  Put(11, Rewritten(11, [](ChainedRecord& r) { r.sequence = 11; }, true));
  Put(12, Rewritten(12, [](ChainedRecord& r) { r.sequence = 12; }, true));
  ExpectBadAt(11);
}

TEST_F(StoreTamperTest, AnInsertedRecordIsFoundAtItsPosition) {
  // Everything from 14 moves one key up (renumbered and rehashed), and a forged record takes 14.
  for (uint64_t s = kRecords; s >= 14; --s) {
    Put(s + 1, Rewritten(s, [s](ChainedRecord& r) { r.sequence = s + 1; }, true));
  }
  Put(14, Rewritten(13, [](ChainedRecord& r) {
        r.sequence = 14;
        r.prev_hash = r.hash;
        r.record.identity = "forged";
      }, true));
  ExpectBadAt(14);
}

TEST_F(StoreTamperTest, RecordsCutOffTheEndAreFoundAtTheFirstMissing) {
  for (uint64_t s = 18; s <= kRecords; ++s) Delete(s);
  ExpectBadAt(18);
  const VerifyReport report = Verify();
  EXPECT_THAT(report.problem, HasSubstr("truncated"));
}

}  // namespace
}  // namespace airlock::audit

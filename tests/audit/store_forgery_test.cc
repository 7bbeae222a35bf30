// A storage administrator's attacks on the audit store — without the signing key — are caught:
// records rewritten and rechained with the checkpoints deleted, a signed checkpoint deleted, the
// store rolled back or truncated below the witness, a flipped byte in the write-ahead log. The
// verifier fails, and AuditLog::Open (the daemon's start) refuses the store before signing anything.
#include <dirent.h>
#include <sys/stat.h>

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "audit/audit_reader.h"
#include "audit/audit_record.h"
#include "audit/audit_store.h"
#include "audit/chain_verifier.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"
#include "audit/witness.h"
#include "inference/base/status.h"
#include "tests/audit/audit_test_support.h"
#include "tests/support/test_data.h"

namespace airlock::audit {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kEvery = 5;

AuditRecord MakeRecord(uint64_t i, const std::string& identity = "alice") {
  AuditRecord record;
  record.phase = Phase::kEnd;
  record.request_id = absl::StrCat("req-", i);
  record.identity = identity;
  record.method = "airlock.v1.Inference/Generate";
  record.model = "tiny";
  record.completion_tokens = static_cast<uint32_t>(i);
  return record;
}

// Every regular file under `dir` with its contents (what "nothing was written" compares).
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return files;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::ifstream in(dir + "/" + name, std::ios::binary);
    std::ostringstream contents;
    contents << in.rdbuf();
    files[name] = contents.str();
  }
  ::closedir(d);
  return files;
}

class StoreForgeryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    public_key_ = SignerFromPem().PublicKeyPem();
    dir_ = airlock::testing::MakeTempDir() + "/state";
  }

  AuditLogOptions Options() {
    AuditLogOptions options;
    options.checkpoint_every_records = kEvery;
    options.checkpoint_interval = absl::Hours(1);
    options.witness = witness_;
    options.checkpoint_written = [this](const Checkpoint& c) { witness_ = c; };
    return options;
  }

  // Appends `count` records through a log opened on the store (which then signs its head on close).
  void Write(uint64_t count) {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir_);
    std::unique_ptr<AuditLog> log = OpenLogOrDie(db.get(), Options());
    for (uint64_t i = 0; i < count; ++i) ASSERT_TRUE(log->Append(MakeRecord(++written_)).ok());
  }

  absl::Status OpenLog() {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir_);
    return AuditLog::Open(db.get(), SignerFromPem(), Options()).status();
  }

  VerifyReport Verify(const VerifyPolicy& policy) {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir_);
    AuditSnapshot snapshot(*db);
    absl::StatusOr<VerifyReport> report = VerifySnapshot(snapshot, public_key_, nullptr, policy);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : VerifyReport{};
  }

  // Changes record `from`'s identity and rechains every record after it (no key needed), deleting
  // the checkpoints at and after `from` (which would no longer match) — or all of them.
  void RewriteAndRechain(uint64_t from, bool delete_all_checkpoints) {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir_);
    absl::StatusOr<std::vector<ChainedRecord>> records = ReadAuditRange(*db, 1, UINT64_MAX);
    ASSERT_TRUE(records.ok());
    std::string prev = GenesisHash();
    rocksdb::WriteBatch batch;
    for (ChainedRecord& r : *records) {
      if (r.sequence == from) r.record.identity = "mallory";
      if (r.sequence >= from) {
        r.prev_hash = prev;
        r.hash = ChainHash(r.prev_hash, EncodeRecord(r));
        ASSERT_TRUE(batch.Put(db->audit(), EncodeSequenceKey(r.sequence), EncodeStoredRecord(r)).ok());
      }
      prev = r.hash;
    }
    const uint64_t first_deleted = delete_all_checkpoints ? 0 : from;
    ASSERT_TRUE(batch.DeleteRange(db->checkpoints(), EncodeSequenceKey(first_deleted),
                                  EncodeSequenceKey(UINT64_MAX)).ok());
    ASSERT_TRUE(db->Write(&batch, true).ok());
  }

  std::string public_key_;
  std::string dir_;
  std::optional<Checkpoint> witness_;  // as the daemon's witness file would hold it
  uint64_t written_ = 0;
};

TEST_F(StoreForgeryTest, AnUntouchedStoreOpensAndVerifies) {
  Write(23);
  Write(4);
  EXPECT_TRUE(OpenLog().ok());
  const VerifyReport report = Verify({.max_unsigned_tail = kEvery});
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.head_sequence, 27u);
}

TEST_F(StoreForgeryTest, RecordsRewrittenAndRechainedWithTheCheckpointsDeletedAreRefused) {
  Write(40);
  RewriteAndRechain(3, /*delete_all_checkpoints=*/true);
  // The verifier: an unsigned tail of 40 where the log signs every 5.
  const VerifyReport report = Verify({.max_unsigned_tail = kEvery});
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.first_bad_sequence, std::optional<uint64_t>(1));
  EXPECT_THAT(report.problem, HasSubstr("checkpoints were removed"));
  // The daemon's start, even without a witness: refused, and nothing signed over the forgery.
  witness_.reset();
  const absl::Status opened = OpenLog();
  EXPECT_EQ(opened.code(), absl::StatusCode::kDataLoss) << opened;
  EXPECT_THAT(opened.message(), HasSubstr("checkpoints were removed"));
  std::unique_ptr<StateDb> db = OpenDbOrDie(dir_);
  absl::StatusOr<std::vector<Checkpoint>> checkpoints = ReadAuditCheckpoints(*db);
  ASSERT_TRUE(checkpoints.ok());
  EXPECT_TRUE(checkpoints->empty());
}

TEST_F(StoreForgeryTest, ARewriteWithinTheTailBoundIsCaughtByTheWitness) {
  Write(12);  // checkpoints at 5, 10, 12
  // Rewrite record 11 and delete checkpoint 12: the tail (11..12) is within the bound.
  RewriteAndRechain(11, /*delete_all_checkpoints=*/false);
  EXPECT_TRUE(Verify({.max_unsigned_tail = kEvery}).ok);  // undetectable from the store alone
  const absl::Status opened = OpenLog();
  EXPECT_EQ(opened.code(), absl::StatusCode::kDataLoss) << opened;
  EXPECT_THAT(opened.message(), HasSubstr("checkpoint 12 (in the witness) is missing"));
  // An auditor with the witness as an external anchor finds it too.
  std::unique_ptr<StateDb> db = OpenDbOrDie(dir_);
  absl::StatusOr<std::vector<Checkpoint>> stored = ReadAuditCheckpoints(*db);
  ASSERT_TRUE(stored.ok());
  std::vector<Checkpoint> with_anchor = *stored;
  with_anchor.push_back(*witness_);
  absl::StatusOr<std::vector<ChainedRecord>> records = ReadAuditRange(*db, 1, UINT64_MAX);
  ASSERT_TRUE(records.ok());
  const VerifyReport anchored = VerifyChain(*records, with_anchor, public_key_, std::nullopt);
  EXPECT_FALSE(anchored.ok);
  EXPECT_EQ(anchored.first_bad_sequence, std::optional<uint64_t>(12));
}

TEST_F(StoreForgeryTest, AStoreRolledBackBelowTheWitnessIsRefused) {
  Write(8);
  const std::string backup = dir_ + ".old";
  ASSERT_EQ(std::system(absl::StrCat("cp -a ", dir_, " ", backup).c_str()), 0);
  Write(9);  // the witness now holds checkpoint 17
  ASSERT_EQ(std::system(absl::StrCat("rm -rf ", dir_, " && mv ", backup, " ", dir_).c_str()), 0);
  const absl::Status opened = OpenLog();
  EXPECT_EQ(opened.code(), absl::StatusCode::kDataLoss) << opened;
  EXPECT_THAT(opened.message(), HasSubstr("the chain ends at 8"));
}

TEST_F(StoreForgeryTest, AForgedNewestCheckpointIsRefused) {
  Write(7);
  std::unique_ptr<StateDb> db = OpenDbOrDie(dir_);
  // A checkpoint at the head signed with another key.
  absl::StatusOr<std::string> other_key = GenerateSigningKeyPem();
  ASSERT_TRUE(other_key.ok());
  absl::StatusOr<ChainHead> head = ReadChainHead(*db);
  ASSERT_TRUE(head.ok());
  const Checkpoint forged = SignerFromPem(*other_key).Sign(head->sequence, head->hash, 1);
  ASSERT_TRUE(db->db()->Put(rocksdb::WriteOptions(), db->checkpoints(), EncodeSequenceKey(head->sequence),
                            EncodeCheckpoint(forged)).ok());
  db.reset();
  witness_.reset();
  const absl::Status opened = OpenLog();
  EXPECT_EQ(opened.code(), absl::StatusCode::kDataLoss) << opened;
  EXPECT_THAT(opened.message(), HasSubstr("does not verify with this daemon's key"));
}

TEST_F(StoreForgeryTest, AnEditedTailRecordIsRefusedAtStart) {
  Write(12);
  {
    // Record 13 appended by hand after checkpoint 12, not chained to it.
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir_);
    ChainedRecord bogus = Chain(13, std::string(kHashSize, 'x'), MakeRecord(13, "mallory"));
    ASSERT_TRUE(db->db()->Put(rocksdb::WriteOptions(), db->audit(), EncodeSequenceKey(13),
                              EncodeStoredRecord(bogus)).ok());
  }
  const absl::Status opened = OpenLog();
  EXPECT_EQ(opened.code(), absl::StatusCode::kDataLoss) << opened;
  EXPECT_THAT(opened.message(), HasSubstr("first bad sequence 13"));
}

// Finds the newest WAL file of the store.
std::string WalFile(const std::string& dir) {
  std::string newest;
  for (const auto& [name, contents] : Snapshot(dir)) {
    if (absl::EndsWith(name, ".log") && name > newest) newest = name;
  }
  return newest.empty() ? "" : dir + "/" + newest;
}

TEST_F(StoreForgeryTest, AFlippedByteInTheWriteAheadLogRefusesTheStoreInsteadOfDroppingRecords) {
  Write(30);  // 30 records and 7 checkpoints, each batch its own WAL record (no flush: 4 MiB memtables)
  const std::string wal = WalFile(dir_);
  ASSERT_FALSE(wal.empty());
  std::fstream file(wal, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  ASSERT_GT(size, 4000);
  const std::streamoff at = size / 3;  // inside an acknowledged record, far from the tail
  file.seekg(at);
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x40);
  file.seekp(at);
  file.write(&byte, 1);
  file.close();

  absl::StatusOr<std::unique_ptr<StateDb>> db = StateDb::Open(dir_);
  ASSERT_FALSE(db.ok()) << "the store opened and silently dropped the records after the damage";
  EXPECT_EQ(db.status().code(), absl::StatusCode::kDataLoss) << db.status();
  EXPECT_THAT(db.status().message(), HasSubstr("corrupt"));
  StateDbOptions read_only;
  read_only.read_only = true;
  EXPECT_EQ(StateDb::Open(dir_, read_only).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(StoreForgeryTest, AnIncompleteLastWriteIsDroppedAndTheRestKept) {
  Write(10);
  const std::string wal = WalFile(dir_);
  ASSERT_FALSE(wal.empty());
  // A write that never completed (the process died in the middle of it): the WAL ends mid-record.
  struct stat st {};
  ASSERT_EQ(::stat(wal.c_str(), &st), 0);
  {
    std::ofstream out(wal, std::ios::binary | std::ios::app);
    const std::string header("\x12\x34\x56\x78\xff\x7f\x01", 7);  // checksum, length 32767, type full
    out << header << std::string(100, 'z');
  }
  absl::StatusOr<std::unique_ptr<StateDb>> db = StateDb::Open(dir_);
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<ChainHead> head = ReadChainHead(**db);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->sequence, 10u);
}

TEST_F(StoreForgeryTest, AReadOnlyOpenWritesNothingIntoTheEvidence) {
  Write(10);
  const std::map<std::string, std::string> before = Snapshot(dir_);
  StateDbOptions options;
  options.read_only = true;
  {
    absl::StatusOr<std::unique_ptr<StateDb>> db = StateDb::Open(dir_, options);
    ASSERT_TRUE(db.ok()) << db.status();
    AuditSnapshot snapshot(**db);
    absl::StatusOr<VerifyReport> report = VerifySnapshot(snapshot, public_key_);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->ok) << report->problem;
    EXPECT_EQ(report->head_sequence, 10u);
  }
  EXPECT_EQ(Snapshot(dir_), before);
  // And a directory that is not a store is not created.
  EXPECT_FALSE(StateDb::Open(dir_ + "-missing", options).ok());
  struct stat st {};
  EXPECT_NE(::stat((dir_ + "-missing").c_str(), &st), 0);
}

TEST(WitnessTest, RoundTripsAndRefusesWhatIsNotOneCheckpoint) {
  const std::string dir = airlock::testing::MakeTempDir();
  const std::string path = dir + "/witness";
  absl::StatusOr<std::optional<Checkpoint>> none = ReadWitness(path);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  const Checkpoint c = SignerFromPem().Sign(42, std::string(kHashSize, '\x07'), 1700000000000000);
  ASSERT_TRUE(WriteWitness(path, c).ok());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  absl::StatusOr<std::optional<Checkpoint>> read = ReadWitness(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(**read, c);
  // The witness line is also an export checkpoint line.
  absl::StatusOr<std::vector<Checkpoint>> lines = ParseCheckpointLines(CheckpointJsonLine(c) + "\n", "x");
  ASSERT_TRUE(lines.ok());
  EXPECT_EQ(lines->size(), 1u);

  for (const std::string& bad : {std::string("not json\n"), CheckpointJsonLine(c) + "\n" + CheckpointJsonLine(c),
                                std::string("{\"encoded\":\"!!\"}"), std::string("{\"encoded\":\"QUxDUA==\"}"),
                                std::string(5000, ' ')}) {
    std::ofstream(path, std::ios::trunc) << bad;
    EXPECT_EQ(ReadWitness(path).status().code(), absl::StatusCode::kDataLoss) << bad.substr(0, 40);
  }
}

}  // namespace
}  // namespace airlock::audit

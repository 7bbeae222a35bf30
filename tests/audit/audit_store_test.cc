// Tests of the durable audit log: append/read/reopen, group commit under concurrency, checkpoints,
// fail-closed behaviour under injected write errors, and acknowledged records surviving SIGKILL.
#include "audit/audit_store.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "audit/audit_record.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"
#include "inference/base/status.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "tests/audit/audit_test_support.h"
#include "tests/support/test_data.h"

extern char** environ;

namespace airlock::audit {
namespace {

using ::testing::HasSubstr;

// ---- Fault injection ---------------------------------------------------------------------------

// A FileSystem whose writable files fail with NoSpace (or "Permission denied") while a flag is set:
// `fail_writes` fails appends and syncs (nothing reaches the file), `fail_syncs` fails only syncs
// (the bytes reach the OS page cache but are never acknowledged as durable: the harder case for
// "nothing half-written").
class FaultInjectingFs : public rocksdb::FileSystemWrapper {
 public:
  explicit FaultInjectingFs(std::shared_ptr<rocksdb::FileSystem> base)
      : rocksdb::FileSystemWrapper(std::move(base)) {}
  static const char* kClassName() { return "AirlockFaultInjectingFs"; }
  const char* Name() const override { return kClassName(); }

  void set_fail_writes(bool fail) { fail_writes_.store(fail); }
  void set_fail_syncs(bool fail) { fail_syncs_.store(fail); }
  bool fail_writes() const { return fail_writes_.load(); }
  bool fail_syncs() const { return fail_syncs_.load(); }
  // Instead of no space, the faults are "Permission denied" (EACCES; EIO alike): errors RocksDB
  // takes as fatal under paranoid_checks unless they are marked retryable, as StateDb's file
  // system does.
  void set_permission_errors(bool on) { permission_errors_.store(on); }
  rocksdb::IOStatus Injected(const std::string& what) const {
    return permission_errors_.load() ? rocksdb::IOStatus::IOError("injected: Permission denied " + what)
                                     : rocksdb::IOStatus::NoSpace("injected: no space " + what);
  }

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    if (fail_writes()) return Injected("creating " + fname);
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus status = target()->NewWritableFile(fname, options, &file, dbg);
    if (status.ok()) result->reset(new File(this, std::move(file)));
    return status;
  }

  // A full disk reports no free space: RocksDB's own recovery (SstFileManager) then waits for
  // space instead of retrying into the failure.
  rocksdb::IOStatus GetFreeSpace(const std::string& path, const rocksdb::IOOptions& options, uint64_t* free,
                                 rocksdb::IODebugContext* dbg) override {
    if (fail_writes() || fail_syncs()) {
      *free = 0;
      return rocksdb::IOStatus::OK();
    }
    return target()->GetFreeSpace(path, options, free, dbg);
  }

  rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    if (fail_writes()) return Injected("reopening " + fname);
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus status = target()->ReopenWritableFile(fname, options, &file, dbg);
    if (status.ok()) result->reset(new File(this, std::move(file)));
    return status;
  }

 private:
  class File : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(FaultInjectingFs* fs, std::unique_ptr<rocksdb::FSWritableFile> file)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(file)), fs_(fs) {}

    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      if (fs_->fail_writes()) return NoSpace();
      return FSWritableFileOwnerWrapper::Append(data, options, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info,
                             rocksdb::IODebugContext* dbg) override {
      if (fs_->fail_writes()) return NoSpace();
      return FSWritableFileOwnerWrapper::Append(data, options, info, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                       const rocksdb::IOOptions& options,
                                       rocksdb::IODebugContext* dbg) override {
      if (fs_->fail_writes()) return NoSpace();
      return FSWritableFileOwnerWrapper::PositionedAppend(data, offset, options, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                       const rocksdb::IOOptions& options,
                                       const rocksdb::DataVerificationInfo& info,
                                       rocksdb::IODebugContext* dbg) override {
      if (fs_->fail_writes()) return NoSpace();
      return FSWritableFileOwnerWrapper::PositionedAppend(data, offset, options, info, dbg);
    }
    rocksdb::IOStatus Flush(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      if (fs_->fail_writes()) return NoSpace();
      return FSWritableFileOwnerWrapper::Flush(options, dbg);
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      if (fs_->fail_writes() || fs_->fail_syncs()) return NoSpace();
      return FSWritableFileOwnerWrapper::Sync(options, dbg);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      if (fs_->fail_writes() || fs_->fail_syncs()) return NoSpace();
      return FSWritableFileOwnerWrapper::Fsync(options, dbg);
    }
    rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override {
      if (fs_->fail_writes() || fs_->fail_syncs()) return NoSpace();
      return FSWritableFileOwnerWrapper::RangeSync(offset, nbytes, options, dbg);
    }

   private:
    rocksdb::IOStatus NoSpace() { return fs_->Injected("left"); }
    FaultInjectingFs* fs_;
  };

  std::atomic<bool> fail_writes_{false};
  std::atomic<bool> fail_syncs_{false};
  std::atomic<bool> permission_errors_{false};
};

// ---- Helpers -----------------------------------------------------------------------------------

AuditRecord MakeRecord(uint64_t n) {
  AuditRecord record;
  record.phase = n % 2 == 0 ? Phase::kBegin : Phase::kEnd;
  record.decision = Decision::kAllowed;
  record.time_unix_micros = 1'700'000'000'000'000 + static_cast<int64_t>(n);
  record.request_id = absl::StrCat("req-", n);
  record.identity = "alice";
  record.subject = "CN=alice,O=Airlock";
  record.cert_fingerprint = std::string(64, 'a');
  record.peer = "ipv4:127.0.0.1:5000";
  record.method = "/airlock.v1.Inference/Generate";
  record.model = "tiny";
  record.sampling = "temperature=0.7;top_p=0.9";
  record.prompt_tokens = static_cast<uint32_t>(n % 1000);
  record.completion_tokens = 7;
  record.stop_reason = "eos";
  record.prompt_hmac = std::string(kHmacSize, 'p');
  return record;
}

// Checks the whole chain in `db` independently of AuditLog: sequences are 1..N with no gap, every
// hash recomputes from the record and links to the previous one, and every checkpoint's signature
// verifies and matches the hash of the record it covers. Returns N.
uint64_t ExpectChainVerifies(const StateDb& db, const std::string& key_pem = TestKeyPem()) {
  absl::StatusOr<std::vector<ChainedRecord>> records = ReadAuditRange(db, 0, UINT64_MAX);
  EXPECT_TRUE(records.ok()) << records.status();
  if (!records.ok()) return 0;
  std::string prev = GenesisHash();
  uint64_t expected = 1;
  std::map<uint64_t, std::string> hashes;
  for (const ChainedRecord& record : *records) {
    EXPECT_EQ(record.sequence, expected);
    EXPECT_EQ(record.prev_hash, prev) << "link broken at " << record.sequence;
    EXPECT_EQ(record.hash, ChainHash(record.prev_hash, EncodeRecord(record)))
        << "hash does not recompute at " << record.sequence;
    prev = record.hash;
    hashes[record.sequence] = record.hash;
    ++expected;
  }
  absl::StatusOr<CheckpointSigner> signer = CheckpointSigner::FromPrivateKeyPem(key_pem);
  EXPECT_TRUE(signer.ok());
  absl::StatusOr<CheckpointVerifier> verifier = CheckpointVerifier::FromPublicKeyPem(signer->PublicKeyPem());
  EXPECT_TRUE(verifier.ok());
  absl::StatusOr<std::vector<Checkpoint>> checkpoints = ReadAuditCheckpoints(db);
  EXPECT_TRUE(checkpoints.ok()) << checkpoints.status();
  if (checkpoints.ok() && verifier.ok()) {
    for (const Checkpoint& checkpoint : *checkpoints) {
      EXPECT_TRUE(verifier->Verify(checkpoint).ok()) << "checkpoint " << checkpoint.sequence;
      auto it = hashes.find(checkpoint.sequence);
      if (it == hashes.end()) {
        ADD_FAILURE() << "checkpoint beyond the chain: " << checkpoint.sequence;
        continue;
      }
      EXPECT_EQ(it->second, checkpoint.chain_hash) << "checkpoint " << checkpoint.sequence;
    }
  }
  return expected - 1;
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

// Polls `condition` until it holds or `timeout` passes; returns whether it held.
template <typename Condition>
bool WaitFor(Condition condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// ---- StateDb -----------------------------------------------------------------------------------

TEST(StateDbTest, SequenceKeysSortInSequenceOrder) {
  EXPECT_LT(EncodeSequenceKey(255), EncodeSequenceKey(256));
  EXPECT_LT(EncodeSequenceKey(1), EncodeSequenceKey(UINT64_MAX));
  uint64_t decoded = 0;
  ASSERT_TRUE(DecodeSequenceKey(EncodeSequenceKey(0x0102030405060708ULL), &decoded));
  EXPECT_EQ(decoded, 0x0102030405060708ULL);
  EXPECT_FALSE(DecodeSequenceKey("short", &decoded));
}

TEST(StateDbTest, CreatesFamiliesAndRecordsFormatVersion) {
  const std::string dir = testing::MakeTempDir();
  {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
    EXPECT_EQ(db->format_version(), kStateFormatVersion);
    EXPECT_NE(db->quota(), nullptr);
    std::string value;
    ASSERT_TRUE(db->db()->Get(rocksdb::ReadOptions(), db->meta(), kFormatVersionKey, &value).ok());
    EXPECT_EQ(value, std::to_string(kStateFormatVersion));
  }
  std::vector<std::string> families;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &families).ok());
  EXPECT_THAT(families, ::testing::IsSupersetOf({"audit", "audit_checkpoints", "meta", "quota"}));
  std::filesystem::remove_all(dir);
}

TEST(StateDbTest, RefusesNewerFormatVersion) {
  const std::string dir = testing::MakeTempDir();
  {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
    rocksdb::WriteBatch batch;
    ASSERT_TRUE(batch.Put(db->meta(), kFormatVersionKey, std::to_string(kStateFormatVersion + 1)).ok());
    ASSERT_TRUE(db->Write(&batch, /*sync=*/true).ok());
  }
  absl::StatusOr<std::unique_ptr<StateDb>> reopened = StateDb::Open(dir);
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(reopened.status().message()), HasSubstr("newer"));
  std::filesystem::remove_all(dir);
}

TEST(StateDbTest, OpensAStoreWithAFamilyItDoesNotKnow) {
  const std::string dir = testing::MakeTempDir();
  {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
    rocksdb::ColumnFamilyHandle* extra = nullptr;
    ASSERT_TRUE(db->db()->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), "future", &extra).ok());
    db->db()->DestroyColumnFamilyHandle(extra);
  }
  std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
  EXPECT_NE(db->audit(), nullptr);
  db.reset();
  std::filesystem::remove_all(dir);
}

// ---- AuditLog ----------------------------------------------------------------------------------

TEST(AuditLogTest, AppendReadAndReopenKeepTheChain) {
  const std::string dir = testing::MakeTempDir();
  std::string head_hash;
  {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
    std::unique_ptr<AuditLog> log = OpenLogOrDie(db.get());
    EXPECT_EQ(log->head().sequence, 0u);
    EXPECT_EQ(log->head().hash, GenesisHash());
    for (uint64_t i = 1; i <= 10; ++i) {
      absl::StatusOr<uint64_t> sequence = log->Append(MakeRecord(i));
      ASSERT_TRUE(sequence.ok()) << sequence.status();
      EXPECT_EQ(*sequence, i);
    }
    EXPECT_TRUE(log->healthy());
    EXPECT_EQ(log->head().sequence, 10u);
    head_hash = log->head().hash;

    absl::StatusOr<std::vector<ChainedRecord>> some = log->ReadRange(3, 5);
    ASSERT_TRUE(some.ok()) << some.status();
    ASSERT_EQ(some->size(), 3u);
    for (size_t i = 0; i < some->size(); ++i) {
      EXPECT_EQ((*some)[i].sequence, 3 + i);
      EXPECT_EQ((*some)[i].record, MakeRecord(3 + i));
    }
    absl::StatusOr<std::vector<std::string>> stored = ReadStoredAuditRange(*db, 10, 20);
    ASSERT_TRUE(stored.ok());
    ASSERT_EQ(stored->size(), 1u);
    absl::StatusOr<ChainedRecord> last = DecodeStoredRecord(stored->front());
    ASSERT_TRUE(last.ok());
    EXPECT_EQ(last->hash, head_hash);
  }
  {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
    std::unique_ptr<AuditLog> log = OpenLogOrDie(db.get());
    EXPECT_EQ(log->head().sequence, 10u);
    EXPECT_EQ(log->head().hash, head_hash);
    absl::StatusOr<uint64_t> sequence = log->Append(MakeRecord(11));
    ASSERT_TRUE(sequence.ok()) << sequence.status();
    EXPECT_EQ(*sequence, 11u);
    log.reset();
    EXPECT_EQ(ExpectChainVerifies(*db), 11u);
  }
  std::filesystem::remove_all(dir);
}

TEST(AuditLogTest, FillsInTheTimeWhenMissing) {
  const std::string dir = testing::MakeTempDir();
  std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
  std::unique_ptr<AuditLog> log = OpenLogOrDie(db.get());
  AuditRecord record = MakeRecord(1);
  record.time_unix_micros = 0;
  const int64_t before = absl::ToUnixMicros(absl::Now());
  ASSERT_TRUE(log->Append(record).ok());
  absl::StatusOr<std::vector<ChainedRecord>> read = log->ReadRange(1, 1);
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 1u);
  EXPECT_GE(read->front().record.time_unix_micros, before);
  EXPECT_LE(read->front().record.time_unix_micros, absl::ToUnixMicros(absl::Now()));
  log.reset();
  db.reset();
  std::filesystem::remove_all(dir);
}

TEST(AuditLogTest, ConcurrentAppendsFormOneContiguousChain) {
  const std::string dir = testing::MakeTempDir();
  std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
  std::unique_ptr<AuditLog> log = OpenLogOrDie(db.get());
  constexpr int kThreads = 16;
  constexpr int kPerThread = 150;
  std::vector<std::vector<uint64_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<uint64_t> sequence = log->Append(MakeRecord(static_cast<uint64_t>(t * 1000 + i)));
        ASSERT_TRUE(sequence.ok()) << sequence.status();
        got[t].push_back(*sequence);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  std::set<uint64_t> all;
  for (const std::vector<uint64_t>& mine : got) {
    ASSERT_EQ(mine.size(), static_cast<size_t>(kPerThread));
    // One caller's appends are sequential, so its sequences increase.
    EXPECT_TRUE(std::is_sorted(mine.begin(), mine.end()));
    for (uint64_t sequence : mine) EXPECT_TRUE(all.insert(sequence).second) << "duplicate " << sequence;
  }
  constexpr uint64_t kTotal = kThreads * kPerThread;
  ASSERT_EQ(all.size(), kTotal);
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), kTotal);
  EXPECT_EQ(log->head().sequence, kTotal);
  EXPECT_EQ(ExpectChainVerifies(*db), kTotal);

  // Each caller's record is stored under the sequence it was given.
  absl::StatusOr<std::vector<ChainedRecord>> records = log->ReadRange(1, kTotal);
  ASSERT_TRUE(records.ok());
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      EXPECT_EQ((*records)[got[t][i] - 1].record.request_id, absl::StrCat("req-", t * 1000 + i));
    }
  }
  log.reset();
  db.reset();
  std::filesystem::remove_all(dir);
}

TEST(AuditLogTest, WritesACheckpointEveryNRecords) {
  const std::string dir = testing::MakeTempDir();
  std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
  AuditLogOptions options;
  options.checkpoint_every_records = 10;
  options.checkpoint_interval = absl::Hours(1);
  std::unique_ptr<AuditLog> log = OpenLogOrDie(db.get(), options);
  // Concurrent writers so that batches straddle the multiples of 10.
  std::vector<std::thread> threads;
  for (int t = 0; t < 5; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 7; ++i) ASSERT_TRUE(log->Append(MakeRecord(static_cast<uint64_t>(t * 10 + i))).ok());
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(CheckpointSequences(*db), ::testing::ElementsAre(10, 20, 30));
  // A clean shutdown signs the tail.
  log.reset();
  EXPECT_THAT(CheckpointSequences(*db), ::testing::ElementsAre(10, 20, 30, 35));
  EXPECT_EQ(ExpectChainVerifies(*db), 35u);

  // After a restart the count continues from the last checkpoint.
  log = OpenLogOrDie(db.get(), options);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(log->Append(MakeRecord(100 + static_cast<uint64_t>(i))).ok());
  EXPECT_THAT(CheckpointSequences(*db), ::testing::ElementsAre(10, 20, 30, 35, 45));
  log.reset();
  EXPECT_EQ(ExpectChainVerifies(*db), 45u);
  db.reset();
  std::filesystem::remove_all(dir);
}

TEST(AuditLogTest, WritesACheckpointAfterTheIntervalWhenIdle) {
  const std::string dir = testing::MakeTempDir();
  std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
  AuditLogOptions options;
  options.checkpoint_every_records = 1'000'000;
  options.checkpoint_interval = absl::Milliseconds(100);
  std::unique_ptr<AuditLog> log = OpenLogOrDie(db.get(), options);
  const auto last_checkpoint = [&]() -> uint64_t {
    std::vector<uint64_t> sequences = CheckpointSequences(*db);
    return sequences.empty() ? 0 : sequences.back();
  };
  ASSERT_TRUE(log->Append(MakeRecord(1)).ok());
  ASSERT_TRUE(log->Append(MakeRecord(2)).ok());
  // No further append: the writer signs the head once the interval has passed.
  EXPECT_TRUE(WaitFor([&] { return last_checkpoint() == 2; }, absl::Seconds(10)));
  ASSERT_TRUE(log->Append(MakeRecord(3)).ok());
  EXPECT_TRUE(WaitFor([&] { return last_checkpoint() == 3; }, absl::Seconds(10)));
  const std::vector<uint64_t> signed_heads = CheckpointSequences(*db);
  EXPECT_TRUE(std::is_sorted(signed_heads.begin(), signed_heads.end()));
  EXPECT_LE(signed_heads.size(), 3u);
  // Nothing new after the head was signed: no further checkpoint, not even at shutdown.
  log.reset();
  EXPECT_EQ(CheckpointSequences(*db), signed_heads);
  EXPECT_EQ(ExpectChainVerifies(*db), 3u);
  db.reset();
  std::filesystem::remove_all(dir);
}

// ---- Fail closed -------------------------------------------------------------------------------

// kPermission: writes fail with EACCES (the state directory's mode changed), then work again.
enum class Fault { kWrites, kSyncs, kPermission };

class AuditLogFaultTest : public ::testing::TestWithParam<Fault> {};

TEST_P(AuditLogFaultTest, FailsClosedAndRecoversWhenWritesWorkAgain) {
  const std::string dir = testing::MakeTempDir();
  auto fs = std::make_shared<FaultInjectingFs>(rocksdb::FileSystem::Default());
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
  const auto set_fault = [&](bool on) {
    fs->set_permission_errors(GetParam() == Fault::kPermission);
    if (GetParam() != Fault::kSyncs) fs->set_fail_writes(on);
    else fs->set_fail_syncs(on);
  };

  AuditLogOptions options;
  options.checkpoint_every_records = 4;  // failed batches include checkpoints too
  options.checkpoint_interval = absl::Hours(1);
  {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir, env.get());
    std::unique_ptr<AuditLog> log = OpenLogOrDie(db.get(), options);
    for (uint64_t i = 1; i <= 5; ++i) ASSERT_TRUE(log->Append(MakeRecord(i)).ok());
    const ChainHead before = log->head();

    set_fault(true);
    // Concurrent callers in failing batches: every one is refused.
    std::vector<std::thread> threads;
    std::atomic<int> refused{0};
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 3; ++i) {
          absl::StatusOr<uint64_t> sequence = log->Append(MakeRecord(static_cast<uint64_t>(100 + t * 10 + i)));
          EXPECT_FALSE(sequence.ok());
          if (!sequence.ok()) {
            EXPECT_EQ(sequence.status().code(), absl::StatusCode::kUnavailable);
            EXPECT_THAT(std::string(sequence.status().message()), HasSubstr("injected"));
            ++refused;
          }
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(refused.load(), 24);
    EXPECT_FALSE(log->healthy());
    EXPECT_EQ(log->health().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(log->head().sequence, before.sequence);
    EXPECT_EQ(log->head().hash, before.hash);
    // Nothing of the failed batches is readable.
    absl::StatusOr<std::vector<ChainedRecord>> beyond = log->ReadRange(before.sequence + 1, UINT64_MAX);
    ASSERT_TRUE(beyond.ok()) << beyond.status();
    EXPECT_TRUE(beyond->empty());
    EXPECT_THAT(CheckpointSequences(*db), ::testing::ElementsAre(4));

    // Still failing: each Append retries and is refused again.
    EXPECT_FALSE(log->Append(MakeRecord(200)).ok());

    // Space returns: the log becomes healthy by itself, without any append to drive it (RocksDB's
    // own disk-full recovery retries every 5 s; the log's writer retries every second).
    set_fault(false);
    EXPECT_TRUE(WaitFor([&] { return log->healthy(); }, absl::Seconds(30))) << log->health();
    absl::StatusOr<uint64_t> resumed = log->Append(MakeRecord(300));
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    EXPECT_EQ(*resumed, before.sequence + 1);
    EXPECT_TRUE(log->healthy());
    EXPECT_TRUE(log->health().ok());
    for (uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(log->Append(MakeRecord(400 + i)).ok());
    EXPECT_EQ(log->head().sequence, 11u);
    EXPECT_EQ(ExpectChainVerifies(*db), 11u);
  }
  // After a restart (WAL replay included) nothing of the failed attempts comes back.
  {
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir, env.get());
    EXPECT_EQ(ExpectChainVerifies(*db), 11u);
    EXPECT_THAT(CheckpointSequences(*db), ::testing::ElementsAre(4, 8, 11));
    absl::StatusOr<std::vector<ChainedRecord>> records = ReadAuditRange(*db, 6, 6);
    ASSERT_TRUE(records.ok());
    ASSERT_EQ(records->size(), 1u);
    EXPECT_EQ(records->front().record, MakeRecord(300));
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Faults, AuditLogFaultTest,
                         ::testing::Values(Fault::kWrites, Fault::kSyncs, Fault::kPermission),
                         [](const ::testing::TestParamInfo<Fault>& info) {
                           return info.param == Fault::kWrites ? std::string("FailWrites")
                                  : info.param == Fault::kSyncs ? std::string("FailSyncs")
                                                                : std::string("PermissionDenied");
                         });

// ---- Crash (SIGKILL) ---------------------------------------------------------------------------

constexpr char kCrashDirEnv[] = "AIRLOCK_AUDIT_CRASH_DIR";
constexpr char kCrashFdEnv[] = "AIRLOCK_AUDIT_CRASH_FD";
constexpr char kCrashChildTest[] = "AuditLogCrashChild.DISABLED_AppendUntilKilled";
constexpr int kCrashCheckpointEvery = 50;

// The child's side of the crash test: only runs when the parent re-executes this binary with the
// environment above. Appends from 4 threads forever and writes each acknowledged sequence (8 bytes,
// atomic on a pipe) to the parent.
TEST(AuditLogCrashChild, DISABLED_AppendUntilKilled) {
  const char* dir = std::getenv(kCrashDirEnv);
  const char* fd_text = std::getenv(kCrashFdEnv);
  if (dir == nullptr || fd_text == nullptr) GTEST_SKIP() << "only run by AuditLogCrashTest";
  const int fd = std::atoi(fd_text);
  std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
  AuditLogOptions options;
  options.checkpoint_every_records = kCrashCheckpointEvery;
  std::unique_ptr<AuditLog> log =
      OpenLogOrDie(db.get(), options, testing::ReadFileOrDie(absl::StrCat(dir, "/key.pem")));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0;; ++i) {
        absl::StatusOr<uint64_t> sequence = log->Append(MakeRecord(static_cast<uint64_t>(t) * 1'000'000 + i));
        if (!sequence.ok()) _exit(3);
        const uint64_t value = *sequence;
        if (write(fd, &value, sizeof(value)) != sizeof(value)) _exit(4);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();  // never: the parent kills us
}

// Reads 8-byte sequences from `fd` into `acked` until EOF, `stop_after` values, or the deadline.
// Returns false on timeout.
bool ReadAcks(int fd, std::set<uint64_t>* acked, size_t stop_after, absl::Time deadline, bool* eof) {
  std::string pending;  // writes of 8 bytes are atomic, but a read need not end on a boundary
  char buffer[4096];
  size_t got = 0;
  while (got < stop_after) {
    const int timeout_ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
    pollfd pfd{fd, POLLIN, 0};
    const int ready = poll(&pfd, 1, timeout_ms);
    if (ready == 0) return false;
    if (ready < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *eof = true;
      return true;
    }
    pending.append(buffer, static_cast<size_t>(n));
    size_t used = 0;
    for (; used + 8 <= pending.size(); used += 8) {
      uint64_t value = 0;
      std::memcpy(&value, pending.data() + used, 8);
      acked->insert(value);
      ++got;
    }
    pending.erase(0, used);
  }
  return true;
}

TEST(AuditLogCrashTest, AcknowledgedRecordsSurviveSigkill) {
  const std::string dir = testing::MakeTempDir();
  {
    std::ofstream key(dir + "/key.pem");
    key << TestKeyPem();
  }
  const uint64_t seed = std::random_device()();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937_64 rng(seed);
  std::set<uint64_t> all_acked;
  constexpr int kRounds = 4;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    int pipe_fds[2];
    ASSERT_EQ(pipe(pipe_fds), 0);
    // The child's environment and arguments are built before fork (only exec runs after it).
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    env_strings.push_back(absl::StrCat(kCrashDirEnv, "=", dir));
    env_strings.push_back(absl::StrCat(kCrashFdEnv, "=", pipe_fds[1]));
    std::vector<char*> envp;
    for (std::string& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string arg0 = "audit_tests";
    std::string filter = absl::StrCat("--gtest_filter=", kCrashChildTest);
    std::string disabled = "--gtest_also_run_disabled_tests";
    char* argv[] = {arg0.data(), filter.data(), disabled.data(), nullptr};

    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      close(pipe_fds[0]);
      const int devnull = open("/dev/null", O_WRONLY);
      if (devnull >= 0) dup2(devnull, STDOUT_FILENO);
      execve("/proc/self/exe", argv, envp.data());
      _exit(127);
    }
    close(pipe_fds[1]);

    // Kill at a random moment: after a random number of acknowledgements.
    std::set<uint64_t> acked;
    bool eof = false;
    const size_t kill_after = 1 + rng() % 1500;
    const bool in_time = ReadAcks(pipe_fds[0], &acked, kill_after, absl::Now() + absl::Seconds(60), &eof);
    kill(child, SIGKILL);
    int wait_status = 0;
    ASSERT_EQ(waitpid(child, &wait_status, 0), child);
    ASSERT_TRUE(in_time) << "the child acknowledged too little in time";
    ASSERT_FALSE(eof) << "the child exited before it was killed, status " << wait_status;
    ASSERT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL);
    // What the child acknowledged before it died is still in the pipe.
    ASSERT_TRUE(ReadAcks(pipe_fds[0], &acked, SIZE_MAX, absl::Now() + absl::Seconds(10), &eof));
    close(pipe_fds[0]);
    ASSERT_GE(acked.size(), kill_after);
    all_acked.insert(acked.begin(), acked.end());

    // Restart: every acknowledged record is there, the chain verifies, appends work again.
    std::unique_ptr<StateDb> db = OpenDbOrDie(dir);
    const uint64_t head = ExpectChainVerifies(*db);
    EXPECT_GE(head, *all_acked.rbegin());
    absl::StatusOr<std::vector<ChainedRecord>> records = ReadAuditRange(*db, 1, head);
    ASSERT_TRUE(records.ok());
    std::set<uint64_t> present;
    for (const ChainedRecord& record : *records) present.insert(record.sequence);
    for (uint64_t sequence : all_acked) ASSERT_TRUE(present.count(sequence)) << "lost acknowledged " << sequence;
    std::unique_ptr<AuditLog> log = OpenLogOrDie(db.get());
    absl::StatusOr<uint64_t> next = log->Append(MakeRecord(999));
    ASSERT_TRUE(next.ok()) << next.status();
    EXPECT_EQ(*next, head + 1);
    all_acked.insert(*next);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace airlock::audit

// The daemon's one RocksDB instance: opens it with chosen options and the column families that hold
// the audit chain, its checkpoints, store metadata and (issue 5) quota usage.
//
// Thread-safety: a StateDb is safe to use from any thread once Open returned (RocksDB's DB and
// column family handles are thread-safe); the object must outlive every user of its handles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/slice.h"
#include "rocksdb/status.h"
#include "rocksdb/write_batch.h"

namespace airlock::audit {

// Column family names (RocksDB's "default" family exists too and stays empty).
inline constexpr char kAuditColumnFamily[] = "audit";
inline constexpr char kCheckpointColumnFamily[] = "audit_checkpoints";
inline constexpr char kMetaColumnFamily[] = "meta";
inline constexpr char kQuotaColumnFamily[] = "quota";

// `meta` key whose value is the store's format version as decimal ASCII.
inline constexpr char kFormatVersionKey[] = "format_version";
// The format this build writes. A store that says a newer one is refused.
inline constexpr uint32_t kStateFormatVersion = 1;

struct StateDbOptions {
  // The Env RocksDB does its I/O through; nullptr means rocksdb::Env::Default(). Tests pass a
  // fault-injecting one. Not owned: it must outlive the StateDb.
  rocksdb::Env* env = nullptr;
  // LRU block cache shared by all column families. The audit log is mostly appended and read in
  // sequential ranges by the verifier/export, so a small cache is enough.
  size_t block_cache_bytes = 8 << 20;
  // Bound on open SST files (-1 would keep every file open: unbounded file descriptors).
  int max_open_files = 256;
  // Where RocksDB's own diagnostics go (warnings and errors, one formatted line each), e.g. the
  // daemon's log; empty drops them. RocksDB never writes its info LOG file into the state
  // directory: that file shares the disk with the audit log, and Debian's librocksdb keeps a debug
  // assertion that aborts the process on the next LOG line after a LOG write failed (a full disk
  // would kill the daemon instead of refusing calls).
  std::function<void(std::string_view line)> diagnostics;
  // Opens without writing anything into the directory (no lock file, no WAL replayed into new
  // files, no format version recorded): for verifying or exporting evidence, also on a read-only
  // copy. Writes through such a StateDb fail. The store must exist.
  bool read_only = false;
};

class StateDb {
 public:
  // Opens (creating if missing, unless read_only) the store at `path`. FAILED_PRECONDITION when
  // `meta` says a newer format version than kStateFormatVersion, DATA_LOSS when the version is
  // unreadable or RocksDB finds the store corrupt (a damaged WAL record that is not an incomplete
  // last write, a bad table file), UNAVAILABLE when RocksDB cannot open (lock held, I/O error),
  // with RocksDB's message.
  static absl::StatusOr<std::unique_ptr<StateDb>> Open(const std::string& path,
                                                       const StateDbOptions& options = {});

  StateDb(const StateDb&) = delete;
  StateDb& operator=(const StateDb&) = delete;
  // Closes the column family handles and the DB (flushing nothing extra: the WAL is durable).
  ~StateDb();

  rocksdb::DB* db() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* audit() const { return audit_; }
  rocksdb::ColumnFamilyHandle* checkpoints() const { return checkpoints_; }
  rocksdb::ColumnFamilyHandle* meta() const { return meta_; }
  rocksdb::ColumnFamilyHandle* quota() const { return quota_; }
  const std::string& path() const { return path_; }

  // Writes `batch` atomically. sync=true: the WAL is fsynced before this returns (audit writes);
  // sync=false: durable against a process crash but not a power loss. UNAVAILABLE with RocksDB's
  // message on failure.
  absl::Status Write(rocksdb::WriteBatch* batch, bool sync);

  // Clears a background error (after a failed write RocksDB refuses every write until resumed).
  // First checks that the directory takes a small synced write again: resuming while the disk
  // still fails would escalate RocksDB's error to fatal (recoverable only by reopening). UNAVAILABLE
  // when the probe fails, when RocksDB's own recovery is still in progress (RocksDB retries a
  // disk-full error by itself every 5 s once space returns), or with Resume()'s error.
  absl::Status Resume();

  // The format version recorded in `meta`.
  uint32_t format_version() const { return format_version_; }

 private:
  StateDb() = default;

  std::string path_;
  std::unique_ptr<rocksdb::Env> env_;  // RocksDB's I/O (state_db.cc); outlives db_
  std::unique_ptr<rocksdb::DB> db_;
  // Every family opened (ours and any unknown ones a newer build added); closed in the destructor.
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* audit_ = nullptr;
  rocksdb::ColumnFamilyHandle* checkpoints_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* quota_ = nullptr;
  uint32_t format_version_ = 0;
};

// Keys of `audit` and `audit_checkpoints`: the sequence number as 8 bytes big-endian, so that
// RocksDB's bytewise order is sequence order.
std::string EncodeSequenceKey(uint64_t sequence);
// False unless `key` is exactly 8 bytes.
bool DecodeSequenceKey(std::string_view key, uint64_t* sequence);

// RocksDB status -> absl::Status with `code` (OK stays OK), message prefixed with `context`.
absl::Status FromRocksDb(const rocksdb::Status& status, absl::StatusCode code, std::string_view context);

inline std::string_view ToStringView(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }
inline rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

}  // namespace airlock::audit

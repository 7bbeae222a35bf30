// Opening the daemon's RocksDB state store: the options, the column families and the format check.
#include "audit/state_db.h"

#include <algorithm>
#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"
#include "rocksdb/cache.h"
#include "rocksdb/convenience.h"
#include "rocksdb/file_system.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"

namespace airlock::audit {
namespace {

// The best compression this librocksdb was built with: ZSTD, then LZ4, then Snappy, else none.
rocksdb::CompressionType BestCompression() {
  const std::vector<rocksdb::CompressionType> supported = rocksdb::GetSupportedCompressions();
  for (rocksdb::CompressionType type :
       {rocksdb::kZSTD, rocksdb::kLZ4Compression, rocksdb::kSnappyCompression}) {
    if (std::find(supported.begin(), supported.end(), type) != supported.end()) return type;
  }
  return rocksdb::kNoCompression;
}

// With paranoid_checks, RocksDB treats a failed write whose error is not "no space" (EACCES, EIO,
// a read-only remount) as fatal: the DB refuses every write until it is reopened, so a transient
// fault of the state directory would stop the audit log — and so the service — for good. This file
// system marks such errors of writable files retryable, which makes them "hard" errors instead:
// RocksDB still refuses every write until Resume() (StateDb::Resume probes the directory first),
// and Resume() can clear them once writing works again. No-space errors keep RocksDB's own path.
class RetryableWriteErrorsFs final : public rocksdb::FileSystemWrapper {
 public:
  explicit RetryableWriteErrorsFs(std::shared_ptr<rocksdb::FileSystem> base)
      : rocksdb::FileSystemWrapper(std::move(base)) {}
  static const char* kClassName() { return "AirlockRetryableWriteErrorsFs"; }
  const char* Name() const override { return kClassName(); }

  static rocksdb::IOStatus Mark(rocksdb::IOStatus status) {
    if (!status.ok() && status.IsIOError() && !status.IsNoSpace()) status.SetRetryable(true);
    return status;
  }

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus status = target()->NewWritableFile(fname, options, &file, dbg);
    if (status.ok()) result->reset(new File(std::move(file)));
    return Mark(std::move(status));
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus status = target()->ReopenWritableFile(fname, options, &file, dbg);
    if (status.ok()) result->reset(new File(std::move(file)));
    return Mark(std::move(status));
  }

 private:
  class File final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    explicit File(std::unique_ptr<rocksdb::FSWritableFile> file)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(file)) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      return Mark(FSWritableFileOwnerWrapper::Append(data, options, dbg));
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info, rocksdb::IODebugContext* dbg) override {
      return Mark(FSWritableFileOwnerWrapper::Append(data, options, info, dbg));
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset, const rocksdb::IOOptions& options,
                                       rocksdb::IODebugContext* dbg) override {
      return Mark(FSWritableFileOwnerWrapper::PositionedAppend(data, offset, options, dbg));
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset, const rocksdb::IOOptions& options,
                                       const rocksdb::DataVerificationInfo& info,
                                       rocksdb::IODebugContext* dbg) override {
      return Mark(FSWritableFileOwnerWrapper::PositionedAppend(data, offset, options, info, dbg));
    }
    rocksdb::IOStatus Flush(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      return Mark(FSWritableFileOwnerWrapper::Flush(options, dbg));
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      return Mark(FSWritableFileOwnerWrapper::Sync(options, dbg));
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      return Mark(FSWritableFileOwnerWrapper::Fsync(options, dbg));
    }
    rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override {
      return Mark(FSWritableFileOwnerWrapper::RangeSync(offset, nbytes, options, dbg));
    }
    rocksdb::IOStatus Close(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      return Mark(FSWritableFileOwnerWrapper::Close(options, dbg));
    }
  };
};

// RocksDB's info log, forwarded line by line (warnings and errors only) instead of written to a
// file on the audit disk (see StateDbOptions::diagnostics).
class ForwardingLogger final : public rocksdb::Logger {
 public:
  explicit ForwardingLogger(std::function<void(std::string_view)> sink)
      : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), sink_(std::move(sink)) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    if (!sink_) return;
    char line[1024];
    va_list copy;
    va_copy(copy, ap);
    const int n = std::vsnprintf(line, sizeof(line), format, copy);
    va_end(copy);
    if (n <= 0) return;
    sink_(std::string_view(line, std::min(static_cast<size_t>(n), sizeof(line) - 1)));
  }

 private:
  const std::function<void(std::string_view)> sink_;
};

rocksdb::DBOptions MakeDbOptions(const StateDbOptions& options) {
  rocksdb::DBOptions db;
  db.create_if_missing = true;
  db.create_missing_column_families = true;
  // Verify checksums on open and treat any write error as a background error: RocksDB then refuses
  // further writes until Resume(), so a failed WAL write can never be followed by writes that
  // build on it (AuditLog resumes explicitly before retrying).
  db.paranoid_checks = true;
  // The WAL is on (AuditLog writes with WriteOptions::sync). After a crash, a record left
  // incomplete at the end of the WAL (a write that was never acknowledged) is dropped. Any other
  // damage — a checksum mismatch anywhere, an incomplete record followed by more — fails the open:
  // kPointInTimeRecovery would stop replay there and silently drop every acknowledged, synced
  // record after it (sequence numbers would then be reused).
  db.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  // Bounded resources for a long-running appliance on a small machine.
  db.max_open_files = options.max_open_files;
  db.max_background_jobs = 2;
  db.max_total_wal_size = 64 << 20;      // forces flushes of cold families so old WALs go away
  db.db_write_buffer_size = 64 << 20;    // total memtable budget across families
  db.bytes_per_sync = 1 << 20;           // smooth SST writeback instead of one big sync at the end
  db.info_log = std::make_shared<ForwardingLogger>(options.diagnostics);
  // No preallocation of WAL and SST space: a preallocated WAL (1.1 x the write buffer) would keep
  // accepting records on a disk that is otherwise full, and hide the condition until the next
  // file. Without it a full disk is seen at the next record, and the log fails closed at once.
  db.allow_fallocate = false;
  return db;
}

rocksdb::ColumnFamilyOptions MakeFamilyOptions(const std::shared_ptr<rocksdb::Cache>& cache,
                                               size_t write_buffer, bool compress) {
  rocksdb::ColumnFamilyOptions cf;
  // Level compaction with dynamic level sizes: the audit keys arrive in order, so compaction mostly
  // moves whole files down; dynamic sizing keeps space amplification near 1.1x.
  cf.compaction_style = rocksdb::kCompactionStyleLevel;
  cf.level_compaction_dynamic_level_bytes = true;
  cf.write_buffer_size = write_buffer;
  cf.max_write_buffer_number = 3;
  // Records are text-heavy (identities, model names, hashes are not compressible but the field
  // structure is), and they are kept for years: compress every level.
  cf.compression = compress ? BestCompression() : rocksdb::kNoCompression;
  cf.bottommost_compression = cf.compression;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.cache_index_and_filter_blocks = true;
  table.format_version = 5;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return cf;
}

absl::StatusOr<uint32_t> ParseVersion(std::string_view text) {
  uint32_t version = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), version);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    return absl::DataLossError(absl::StrCat("state store: unreadable format_version '", ToAbsl(text), "'"));
  }
  return version;
}

constexpr size_t kWriteBufferBytes = 4 << 20;

}  // namespace

std::string EncodeSequenceKey(uint64_t sequence) {
  std::string key(8, '\0');
  for (int i = 7; i >= 0; --i) {
    key[i] = static_cast<char>(sequence & 0xff);
    sequence >>= 8;
  }
  return key;
}

bool DecodeSequenceKey(std::string_view key, uint64_t* sequence) {
  if (key.size() != 8) return false;
  uint64_t value = 0;
  for (char c : key) value = (value << 8) | static_cast<uint8_t>(c);
  *sequence = value;
  return true;
}

absl::Status FromRocksDb(const rocksdb::Status& status, absl::StatusCode code, std::string_view context) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(code, absl::StrCat(ToAbsl(context), ": ", status.ToString()));
}

absl::StatusOr<std::unique_ptr<StateDb>> StateDb::Open(const std::string& path,
                                                       const StateDbOptions& options) {
  rocksdb::DBOptions db_options = MakeDbOptions(options);
  // RocksDB's I/O goes through RetryableWriteErrorsFs over the given Env's file system.
  rocksdb::Env* base = options.env != nullptr ? options.env : rocksdb::Env::Default();
  std::unique_ptr<rocksdb::Env> env =
      rocksdb::NewCompositeEnv(std::make_shared<RetryableWriteErrorsFs>(base->GetFileSystem()));
  db_options.env = env.get();
  if (options.read_only) {
    db_options.create_if_missing = false;
    db_options.create_missing_column_families = false;
  }
  const std::shared_ptr<rocksdb::Cache> cache = rocksdb::NewLRUCache(options.block_cache_bytes);

  // Open every family the store has (a newer build may have added some), plus ours.
  std::vector<std::string> names;
  rocksdb::Status listed = rocksdb::DB::ListColumnFamilies(db_options, path, &names);
  if (!listed.ok() && options.read_only) {
    return FromRocksDb(listed, absl::StatusCode::kUnavailable, absl::StrCat("state store: cannot open ", path));
  }
  if (!listed.ok()) names.clear();  // a new store: no CURRENT file yet
  for (const char* ours : {rocksdb::kDefaultColumnFamilyName.c_str(), kAuditColumnFamily,
                           kCheckpointColumnFamily, kMetaColumnFamily, kQuotaColumnFamily}) {
    if (std::find(names.begin(), names.end(), ours) != names.end()) continue;
    if (options.read_only) {
      return absl::DataLossError(absl::StrCat("state store ", path, " has no column family \"", ours,
                                              "\" (removed, or not an airlockd state directory)"));
    }
    names.emplace_back(ours);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : names) {
    // 4 MiB memtables: after a disk-full error RocksDB resumes writing only once the free space
    // is at least the largest write buffer, so this is also how much must be free again before
    // the audit log (and so the service) comes back by itself.
    const bool audit = name == kAuditColumnFamily || name == kCheckpointColumnFamily;
    descriptors.emplace_back(name, MakeFamilyOptions(cache, kWriteBufferBytes, /*compress=*/audit));
  }

  std::unique_ptr<StateDb> state(new StateDb());
  state->path_ = path;
  state->env_ = std::move(env);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status opened =
      options.read_only ? rocksdb::DB::OpenForReadOnly(db_options, path, descriptors, &state->handles_, &raw)
                        : rocksdb::DB::Open(db_options, path, descriptors, &state->handles_, &raw);
  if (opened.IsCorruption()) {
    return absl::DataLossError(absl::StrCat(
        "state store ", path, " is corrupt (", opened.ToString(),
        "): acknowledged records may be missing, so it is not used; see docs/operations.md (\"The state store is "
        "corrupt\")"));
  }
  if (!opened.ok()) {
    return FromRocksDb(opened, absl::StatusCode::kUnavailable,
                       absl::StrCat("state store: cannot open ", path));
  }
  state->db_.reset(raw);
  for (rocksdb::ColumnFamilyHandle* handle : state->handles_) {
    const std::string& name = handle->GetName();
    if (name == kAuditColumnFamily) state->audit_ = handle;
    if (name == kCheckpointColumnFamily) state->checkpoints_ = handle;
    if (name == kMetaColumnFamily) state->meta_ = handle;
    if (name == kQuotaColumnFamily) state->quota_ = handle;
  }
  AIRLOCK_CHECK(state->audit_ && state->checkpoints_ && state->meta_ && state->quota_);

  std::string stored;
  rocksdb::Status got = state->db_->Get(rocksdb::ReadOptions(), state->meta_, kFormatVersionKey, &stored);
  if (got.IsNotFound() && options.read_only) {
    state->format_version_ = kStateFormatVersion;  // nothing written yet; a reader writes nothing
  } else if (got.IsNotFound()) {
    // A new store (or one created before the version existed, which only this build wrote).
    rocksdb::WriteBatch batch;
    rocksdb::Status put = batch.Put(state->meta_, kFormatVersionKey, std::to_string(kStateFormatVersion));
    if (!put.ok()) return FromRocksDb(put, absl::StatusCode::kInternal, "state store: format_version");
    AIRLOCK_RETURN_IF_ERROR(state->Write(&batch, /*sync=*/true));
    state->format_version_ = kStateFormatVersion;
  } else if (!got.ok()) {
    return FromRocksDb(got, absl::StatusCode::kUnavailable, "state store: reading format_version");
  } else {
    AIRLOCK_ASSIGN_OR_RETURN(state->format_version_, ParseVersion(stored));
    if (state->format_version_ > kStateFormatVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("state store ", path, " has format version ", state->format_version_,
                       ", newer than this build's ", kStateFormatVersion, "; refusing to open it"));
    }
  }
  return state;
}

StateDb::~StateDb() {
  if (db_ == nullptr) return;
  for (rocksdb::ColumnFamilyHandle* handle : handles_) db_->DestroyColumnFamilyHandle(handle);
  handles_.clear();
  db_->Close();
  db_.reset();
}

absl::Status StateDb::Write(rocksdb::WriteBatch* batch, bool sync) {
  rocksdb::WriteOptions write_options;
  write_options.sync = sync;
  return FromRocksDb(db_->Write(write_options, batch), absl::StatusCode::kUnavailable,
                     "state store write failed");
}

absl::Status StateDb::Resume() {
  // Probe: one synced 4 KiB write through the same Env RocksDB uses.
  rocksdb::Env* env = db_->GetEnv();
  const std::string probe = path_ + "/AIRLOCK_WRITE_PROBE";
  {
    std::unique_ptr<rocksdb::WritableFile> file;
    rocksdb::Status s = env->NewWritableFile(probe, &file, rocksdb::EnvOptions());
    if (s.ok()) s = file->Append(rocksdb::Slice(std::string(4096, '\0')));
    if (s.ok()) s = file->Sync();
    if (file != nullptr) {
      rocksdb::Status closed = file->Close();
      if (s.ok()) s = closed;
    }
    env->DeleteFile(probe).PermitUncheckedError();
    if (!s.ok()) return FromRocksDb(s, absl::StatusCode::kUnavailable, "state store still not writable");
  }
  rocksdb::Status resumed = db_->Resume();
  if (resumed.IsBusy()) {
    return absl::UnavailableError("state store is recovering from a write error (RocksDB recovery in progress)");
  }
  return FromRocksDb(resumed, absl::StatusCode::kUnavailable, "state store resume failed");
}

}  // namespace airlock::audit

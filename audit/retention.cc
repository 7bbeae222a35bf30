// Pruning the audit log to a signed anchor: choosing the anchor, checking what goes, deleting it for good.
#include "audit/retention.h"

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "audit/audit_record.h"
#include "inference/base/status.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace airlock::audit {
namespace {

// Two prunes racing could store their anchors out of order (the later write carrying the lower
// anchor), leaving records that no longer start at anchor + 1. One process owns a StateDb (RocksDB
// locks it), so a process-wide lock is enough.
ABSL_CONST_INIT absl::Mutex prune_mu(absl::kConstInit);

// Holds a RocksDB snapshot for the reads that choose and check the anchor, so that they all see
// one instant while an AuditLog appends. Released before compaction, which could not drop keys a
// snapshot still sees.
class ScopedSnapshot {
 public:
  explicit ScopedSnapshot(rocksdb::DB* db) : db_(db), snapshot_(db->GetSnapshot()) {}
  ~ScopedSnapshot() { Release(); }
  ScopedSnapshot(const ScopedSnapshot&) = delete;
  ScopedSnapshot& operator=(const ScopedSnapshot&) = delete;

  rocksdb::ReadOptions ReadOptions() const {
    rocksdb::ReadOptions options;
    options.snapshot = snapshot_;
    options.fill_cache = false;  // a scan of old records should not evict the hot set
    return options;
  }
  void Release() {
    if (snapshot_ != nullptr) db_->ReleaseSnapshot(snapshot_);
    snapshot_ = nullptr;
  }

 private:
  rocksdb::DB* const db_;
  const rocksdb::Snapshot* snapshot_;
};

absl::StatusOr<std::optional<Checkpoint>> ReadAnchorWith(const StateDb& db,
                                                         const rocksdb::ReadOptions& options) {
  std::string value;
  const rocksdb::Status status = db.db()->Get(options, db.meta(), kAuditAnchorKey, &value);
  if (status.IsNotFound()) return std::optional<Checkpoint>();
  AIRLOCK_RETURN_IF_ERROR(
      FromRocksDb(status, absl::StatusCode::kUnavailable, "audit store: reading the anchor"));
  absl::StatusOr<Checkpoint> anchor = DecodeCheckpoint(value);
  if (!anchor.ok()) {
    return absl::DataLossError(absl::StrCat("audit store: the anchor (meta key '", kAuditAnchorKey,
                                            "') does not decode: ", anchor.status().message()));
  }
  return std::optional<Checkpoint>(*std::move(anchor));
}

absl::Status MalformedKey(rocksdb::ColumnFamilyHandle* family, size_t size) {
  return absl::DataLossError(
      absl::StrCat("audit store: malformed key of ", size, " bytes in ", family->GetName()));
}

// The highest sequence in `family` (found=false when it is empty).
absl::Status LastSequence(const StateDb& db, rocksdb::ColumnFamilyHandle* family,
                          const rocksdb::ReadOptions& options, bool* found, uint64_t* sequence) {
  std::unique_ptr<rocksdb::Iterator> it(db.db()->NewIterator(options, family));
  it->SeekToLast();
  *found = it->Valid();
  if (*found && !DecodeSequenceKey(ToStringView(it->key()), sequence)) {
    return MalformedKey(family, it->key().size());
  }
  return FromRocksDb(it->status(), absl::StatusCode::kUnavailable, "audit store: reading");
}

using CheckpointsBySequence = std::map<uint64_t, Checkpoint>;

// The checkpoints stored under keys below `below`, by sequence. DATA_LOSS for one that does not
// decode or is stored under another sequence's key.
absl::StatusOr<CheckpointsBySequence> CheckpointsBelow(const StateDb& db,
                                                                const rocksdb::ReadOptions& options,
                                                                uint64_t below) {
  CheckpointsBySequence out;
  std::unique_ptr<rocksdb::Iterator> it(db.db()->NewIterator(options, db.checkpoints()));
  const std::string end = EncodeSequenceKey(below);
  for (it->SeekToFirst(); it->Valid() && it->key().compare(rocksdb::Slice(end)) < 0; it->Next()) {
    uint64_t sequence = 0;
    if (!DecodeSequenceKey(ToStringView(it->key()), &sequence)) {
      return MalformedKey(db.checkpoints(), it->key().size());
    }
    absl::StatusOr<Checkpoint> checkpoint = DecodeCheckpoint(ToStringView(it->value()));
    if (!checkpoint.ok()) {
      return absl::DataLossError(absl::StrCat("checkpoint ", sequence, ": ", checkpoint.status().message(),
                                              "; refusing to prune"));
    }
    if (checkpoint->sequence != sequence) {
      return absl::DataLossError(absl::StrCat("checkpoint ", sequence, ": stored under the key of sequence ",
                                              sequence, " but covers ", checkpoint->sequence,
                                              "; refusing to prune"));
    }
    out.emplace(sequence, *std::move(checkpoint));
  }
  AIRLOCK_RETURN_IF_ERROR(FromRocksDb(it->status(), absl::StatusCode::kUnavailable, "audit store: reading"));
  return out;
}

// Walks the records after the anchor (`base_sequence`, `base_hash`) up to sequence `limit`, checking
// that they are intact, and returns the highest checkpoint among them that is older than `cutoff`
// together with everything before it (nullopt when there is none). DATA_LOSS naming the first bad
// sequence otherwise.
absl::StatusOr<std::optional<Checkpoint>> ChooseAnchor(const StateDb& db, const rocksdb::ReadOptions& options,
                                                       uint64_t base_sequence, const std::string& base_hash,
                                                       uint64_t limit, int64_t cutoff_micros,
                                                       const CheckpointsBySequence& checkpoints) {
  std::optional<Checkpoint> chosen;
  std::unique_ptr<rocksdb::Iterator> it(db.db()->NewIterator(options, db.audit()));
  const std::string last = EncodeSequenceKey(limit);
  uint64_t expected = base_sequence + 1;
  std::string prev_hash = base_hash;
  const std::string base_name =
      base_sequence == 0 ? std::string("the genesis hash") : absl::StrCat("the anchor's (", base_sequence, ")");
  bool reached_cutoff = false;
  for (it->SeekToFirst(); it->Valid() && it->key().compare(rocksdb::Slice(last)) <= 0; it->Next()) {
    uint64_t sequence = 0;
    if (!DecodeSequenceKey(ToStringView(it->key()), &sequence)) return MalformedKey(db.audit(), it->key().size());
    if (sequence != expected) {
      if (sequence < expected) {
        return absl::DataLossError(absl::StrCat("audit record ", sequence, " is still stored below the anchor ",
                                                base_sequence, "; refusing to prune"));
      }
      return absl::DataLossError(absl::StrCat("audit record ", expected, " is missing (the store holds ", sequence,
                                              " next); refusing to prune"));
    }
    absl::StatusOr<ChainedRecord> record = DecodeStoredRecord(ToStringView(it->value()));
    if (!record.ok()) {
      return absl::DataLossError(absl::StrCat("audit record ", sequence, " does not decode: ",
                                              record.status().message(), "; refusing to prune"));
    }
    if (record->sequence != sequence) {
      return absl::DataLossError(absl::StrCat("audit record ", sequence, " is stored under the key of sequence ",
                                              sequence, " but says ", record->sequence, "; refusing to prune"));
    }
    if (record->prev_hash != prev_hash) {
      return absl::DataLossError(absl::StrCat(
          "audit record ", sequence, " does not link to ",
          sequence == base_sequence + 1 ? base_name : absl::StrCat("record ", sequence - 1),
          " (prev_hash differs); refusing to prune"));
    }
    if (ChainHash(record->prev_hash, EncodeRecord(*record)) != record->hash) {
      return absl::DataLossError(absl::StrCat("audit record ", sequence,
                                              " was modified: its hash does not recompute; refusing to prune"));
    }
    if (record->record.time_unix_micros >= cutoff_micros) {
      reached_cutoff = true;
      break;
    }
    if (auto checkpoint = checkpoints.find(sequence); checkpoint != checkpoints.end()) {
      if (checkpoint->second.chain_hash != record->hash) {
        return absl::DataLossError(absl::StrCat("audit record ", sequence, " does not match checkpoint ", sequence,
                                                " (the checkpoint signs another hash); refusing to prune"));
      }
      chosen = checkpoint->second;
    }
    prev_hash = std::move(record->hash);
    ++expected;
  }
  AIRLOCK_RETURN_IF_ERROR(FromRocksDb(it->status(), absl::StatusCode::kUnavailable, "audit store: reading"));
  if (!reached_cutoff && expected <= limit) {
    return absl::DataLossError(absl::StrCat("audit record ", expected, " is missing (checkpoint ", limit,
                                            " covers a later record); refusing to prune"));
  }
  return chosen;
}

// Makes the deleted ranges leave the disk: compaction to the bottom level drops the keys under the
// range tombstones (and the tombstones), and flushing every family lets RocksDB delete the WAL files
// that still hold the records (a WAL goes once no family needs it for recovery).
absl::Status EraseDeleted(StateDb* db, uint64_t through) {
  rocksdb::CompactRangeOptions options;
  options.exclusive_manual_compaction = false;  // the log's own flushes and compactions go on
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  const std::string end = EncodeSequenceKey(through);
  const rocksdb::Slice end_slice(end);
  for (rocksdb::ColumnFamilyHandle* family : {db->audit(), db->checkpoints()}) {
    AIRLOCK_RETURN_IF_ERROR(FromRocksDb(db->db()->CompactRange(options, family, nullptr, &end_slice),
                                        absl::StatusCode::kUnavailable,
                                        absl::StrCat("compacting ", family->GetName())));
  }
  rocksdb::FlushOptions flush;
  flush.wait = true;
  const std::vector<rocksdb::ColumnFamilyHandle*> families = {
      db->db()->DefaultColumnFamily(), db->audit(), db->checkpoints(), db->meta(), db->quota()};
  return FromRocksDb(db->db()->Flush(flush, families), absl::StatusCode::kUnavailable,
                     "flushing the write-ahead log");
}

}  // namespace

absl::StatusOr<std::optional<Checkpoint>> ReadAuditAnchor(const StateDb& db) {
  return ReadAnchorWith(db, rocksdb::ReadOptions());
}

absl::StatusOr<PruneResult> PruneAuditLog(StateDb* db, absl::Time cutoff) {
  AIRLOCK_CHECK(db != nullptr);
  absl::MutexLock lock(&prune_mu);
  ScopedSnapshot snapshot(db->db());
  const rocksdb::ReadOptions read_options = snapshot.ReadOptions();

  PruneResult result;
  AIRLOCK_ASSIGN_OR_RETURN(result.anchor, ReadAnchorWith(*db, read_options));
  const uint64_t base_sequence = result.anchor.has_value() ? result.anchor->sequence : 0;
  const std::string base_hash = result.anchor.has_value() ? result.anchor->chain_hash : GenesisHash();
  result.first_kept_sequence = base_sequence + 1;

  bool found = false;
  uint64_t head = 0;
  AIRLOCK_RETURN_IF_ERROR(LastSequence(*db, db->audit(), read_options, &found, &head));
  if (!found || head <= base_sequence + 1) return result;  // nothing below the head to prune

  AIRLOCK_ASSIGN_OR_RETURN(const CheckpointsBySequence checkpoints,
                           CheckpointsBelow(*db, read_options, head));
  if (checkpoints.empty() || checkpoints.rbegin()->first <= base_sequence) return result;
  AIRLOCK_ASSIGN_OR_RETURN(const std::optional<Checkpoint> chosen,
                           ChooseAnchor(*db, read_options, base_sequence, base_hash, checkpoints.rbegin()->first,
                                        absl::ToUnixMicros(cutoff), checkpoints));
  if (!chosen.has_value()) return result;
  snapshot.Release();

  const uint64_t through = chosen->sequence;
  rocksdb::WriteBatch batch;
  const auto check = [](const rocksdb::Status& status) {
    return FromRocksDb(status, absl::StatusCode::kInternal, "audit retention: building the write batch");
  };
  // From key 0: the whole start of the chain (ChooseAnchor refused a store with records below the
  // anchor). The checkpoint at `through` stays; it is the anchor.
  const std::string start = EncodeSequenceKey(0);
  AIRLOCK_RETURN_IF_ERROR(check(batch.DeleteRange(db->audit(), start, EncodeSequenceKey(through + 1))));
  AIRLOCK_RETURN_IF_ERROR(check(batch.DeleteRange(db->checkpoints(), start, EncodeSequenceKey(through))));
  AIRLOCK_RETURN_IF_ERROR(check(batch.Put(db->meta(), kAuditAnchorKey, EncodeCheckpoint(*chosen))));
  if (absl::Status written = db->Write(&batch, /*sync=*/true); !written.ok()) {
    // The batch is atomic: a restart finds the store either unchanged or pruned through `through`.
    return absl::UnavailableError(
        absl::StrCat("audit retention: pruning through sequence ", through, " failed: ", written.message()));
  }

  result.records_deleted = through - base_sequence;
  for (const auto& [sequence, checkpoint] : checkpoints) {
    if (sequence < through) ++result.checkpoints_deleted;
  }
  result.anchor = *chosen;
  result.first_kept_sequence = through + 1;

  if (absl::Status erased = EraseDeleted(db, through); !erased.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "audit retention: pruned through sequence ", through, " (the anchor is stored and the records are "
        "unreadable), but removing them from disk failed: ", erased.message(),
        "; RocksDB's own compactions remove them later"));
  }
  return result;
}

}  // namespace airlock::audit

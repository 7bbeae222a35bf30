// Consistent reads of a live audit store: one RocksDB snapshot, so that a query, a verification
// or an export sees the chain, its checkpoints and its anchor as of one instant even while the
// log appends and retention prunes.
//
// Thread-safety: an AuditSnapshot is immutable after construction and may be read from several
// threads; the StateDb must outlive it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "audit/chain_verifier.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"
#include "rocksdb/db.h"

namespace airlock::audit {

// Called with each key's sequence and value; returns false to stop the scan early.
using ScanVisitor = std::function<bool(uint64_t sequence, std::string_view value)>;

// Visits the keys of `family` with from <= sequence <= to, ascending (or descending), as of
// `snapshot` (nullptr: the latest state). DATA_LOSS for a key that is not 8 bytes, UNAVAILABLE
// with RocksDB's message when the store cannot be read.
absl::Status ScanSequenceRange(const StateDb& db, rocksdb::ColumnFamilyHandle* family,
                               const rocksdb::Snapshot* snapshot, uint64_t from, uint64_t to,
                               bool descending, const ScanVisitor& visit);

class AuditSnapshot {
 public:
  explicit AuditSnapshot(const StateDb& db);
  ~AuditSnapshot();
  AuditSnapshot(const AuditSnapshot&) = delete;
  AuditSnapshot& operator=(const AuditSnapshot&) = delete;

  // The anchor of a pruned chain (nullopt when nothing was pruned). DATA_LOSS when it does not
  // decode.
  absl::StatusOr<std::optional<Checkpoint>> Anchor() const;
  // Every checkpoint, in sequence order. DATA_LOSS naming the sequence for one that does not decode.
  absl::StatusOr<std::vector<Checkpoint>> Checkpoints() const;
  // The last record's sequence (the anchor's when every record was pruned, 0 for an empty log).
  absl::StatusOr<uint64_t> HeadSequence() const;
  // Visits stored records (EncodeStoredRecord bytes, not decoded) with from <= sequence <= to.
  absl::Status ScanRecords(uint64_t from, uint64_t to, bool descending, const ScanVisitor& visit) const;

 private:
  const StateDb& db_;
  const rocksdb::Snapshot* snapshot_;
};

// Verifies the whole chain of `snapshot` — from its anchor when pruned — and every checkpoint with
// `public_key_pem`, in constant memory (audit/chain_verifier.h). `cancelled`, when given, is asked
// before each record; CANCELLED when it says so. UNAVAILABLE / DATA_LOSS when the store cannot be
// read (an undecodable record is not an error: the report names it).
absl::StatusOr<VerifyReport> VerifySnapshot(const AuditSnapshot& snapshot, const std::string& public_key_pem,
                                            const std::function<bool()>& cancelled = nullptr,
                                            const VerifyPolicy& policy = {});

}  // namespace airlock::audit

// Retention of the audit log: pruning the start of the chain up to a signed anchor checkpoint, so
// that what is kept stays verifiable (VerifyStoredChain with ReadAuditAnchor's anchor).
//
// What is stored where (docs/audit.md, "Pruning and anchors"): the anchor is the EncodeCheckpoint
// bytes of a checkpoint from `audit_checkpoints`, under kAuditAnchorKey in `meta`. Pruning through
// anchor sequence A deletes the records 1..A from `audit` and the checkpoints below A from
// `audit_checkpoints` (the checkpoint at A itself stays: it is the anchor, and the verifier checks
// it against the anchor's hash), in one synced WriteBatch with the new anchor.
//
// Thread-safety: PruneAuditLog may run while an AuditLog appends to the same StateDb: it deletes
// only sequences <= the new anchor, which is below the chain head it read, and the log never writes
// there again. Calls of PruneAuditLog are serialised by a process-wide lock. ReadAuditAnchor may be
// called from any thread; a reader that wants the anchor, records and checkpoints of one instant
// while pruning runs reads them through one snapshot (audit/audit_reader.h).
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"

namespace airlock::audit {

// `meta` key whose value is the anchor of a pruned chain (EncodeCheckpoint bytes); absent until
// the first prune.
inline constexpr char kAuditAnchorKey[] = "audit_anchor";

// The anchor of a pruned chain; nullopt when the log was never pruned. DATA_LOSS when the stored
// value does not decode, UNAVAILABLE when the store cannot be read. The signature is not checked
// here (no key is needed): the verifier checks it.
absl::StatusOr<std::optional<Checkpoint>> ReadAuditAnchor(const StateDb& db);

struct PruneResult {
  // The anchor after this call (the previous one when nothing was pruned; nullopt when the log
  // was never pruned).
  std::optional<Checkpoint> anchor;
  uint64_t records_deleted = 0;
  uint64_t checkpoints_deleted = 0;
  // The first sequence the store keeps: anchor->sequence + 1, or 1 without an anchor.
  uint64_t first_kept_sequence = 1;
};

// Deletes the records older than `cutoff` from the start of the chain, through the highest stored
// checkpoint C such that
//   - C.sequence is below the chain head (the head record is always kept, so that the head can
//     still be read from `audit`),
//   - the record at C.sequence and every record before it have time_unix_micros < cutoff (a
//     record is never deleted before its time, even after the clock was stepped back), and
//   - C.sequence is above the current anchor's (the anchor only moves forward).
// Without such a checkpoint nothing changes and records_deleted is 0.
//
// Before deleting anything, the records read to choose C (from the current anchor up to the first
// record not older than the cutoff, at most to the last checkpoint below the head) must be intact:
// contiguous sequences from the current anchor (or sequence 1), each stored hash recomputing and
// linking to the previous one (the first to the anchor's hash, or the genesis hash), and every
// stored checkpoint among them (C included) naming its record's hash; and every checkpoint below
// the head must decode. Otherwise DATA_LOSS naming the first bad sequence, and
// nothing is deleted: pruning must not launder tampering. The new anchor's signature is not
// checked here (no key is needed); a forged one fails every later verification.
//
// Deleted means gone: after the write, the deleted key ranges are compacted to the bottom level
// and every column family is flushed, so the deleted records leave the store's SST files and
// write-ahead log (once no open iterator or snapshot still holds an older version). This removes
// the files; it does not overwrite freed blocks of the file system. When that step fails, the
// records are already deleted logically (unreadable, the anchor stored) and UNAVAILABLE says so;
// RocksDB's own compactions remove them later.
//
// UNAVAILABLE when the store cannot be read or written, DATA_LOSS as above or when the stored
// anchor, a record or a checkpoint does not decode.
absl::StatusOr<PruneResult> PruneAuditLog(StateDb* db, absl::Time cutoff);

}  // namespace airlock::audit

// The durable audit log: appends records to the hash chain in the state store with group commit,
// writes signed checkpoints every N records or T seconds, fails closed when the store cannot write
// and recovers by itself when it can again; plus reads for the verifier and export.
//
// Group commit: one writer thread takes every record that arrived while the previous sync ran,
// assigns their sequences, chains their hashes (so the chain never forks), and writes them with any
// due checkpoint as one atomic WriteBatch with WriteOptions::sync. Each Append blocks until its
// batch is durable, so a request's begin record is on disk before the request proceeds.
//
// Thread-safety: AuditLog is safe to use from any number of threads. The free Read* functions are
// safe to call concurrently with an AuditLog appending to the same StateDb.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "audit/audit_record.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"

namespace airlock::audit {

struct AuditLogOptions {
  // A signed checkpoint covers the head at least every this many records...
  uint64_t checkpoint_every_records = 1000;
  // ...and at most this long after an uncovered record was appended (also when the log is idle).
  absl::Duration checkpoint_interval = absl::Seconds(10);
  // Upper bound on records per WriteBatch; more waiting records go into the next one.
  size_t max_batch_records = 8192;
  // Group commit delay: when fewer records are waiting than there were callers when the previous
  // batch completed, the writer waits up to this long (and never longer than the previous sync
  // took) for those callers to come back before it syncs, so that N steady writers share one sync
  // instead of splitting into alternating partial batches. A lone writer never waits. Zero
  // disables it.
  absl::Duration max_commit_delay = absl::Milliseconds(1);
  // The newest checkpoint as kept outside the store (audit/witness.h), when the caller has one:
  // Open refuses a store that lost it or disagrees with it. Default: none.
  std::optional<Checkpoint> witness;
  // Called on the writer thread after each durable write that added checkpoints, with the newest
  // one (the daemon updates its witness file and logs it). Must not call into the log.
  std::function<void(const Checkpoint&)> checkpoint_written;
};

// Counters since the log was opened (for metrics and the benchmark).
struct AuditLogStats {
  uint64_t batches = 0;        // successful synced writes
  uint64_t records = 0;        // records in them
  uint64_t checkpoints = 0;    // checkpoints in them
  uint64_t failed_writes = 0;  // writes (or resumes) that failed
};

// The last record of the chain: sequence 0 and GenesisHash() for an empty log.
struct ChainHead {
  uint64_t sequence = 0;
  std::string hash;
};

class AuditLog {
 public:
  // Starts the log on `db` (which must outlive it), reading the chain head and the last checkpoint
  // from the store. At most one AuditLog may be open on a StateDb at a time (two would fork the
  // chain). `signer` signs checkpoints. UNAVAILABLE when the store cannot be read.
  //
  // Before anything is written or signed, Open checks the store (CheckStoreAtOpen): the newest
  // checkpoint (or the anchor) verifies with the signer's key, the records after it chain from it,
  // there are at most checkpoint_every_records of them, and the witness, when given, is in the
  // store. DATA_LOSS naming what is wrong otherwise: a store rewritten or rolled back without the
  // key is refused, never signed over.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(StateDb* db, CheckpointSigner signer,
                                                        const AuditLogOptions& options = {});

  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;
  // Writes what is queued (its callers get their answers), then stops the writer thread. Appends
  // that arrive after destruction began get UNAVAILABLE.
  ~AuditLog();

  // Appends `record` (time_unix_micros set to now when 0) and returns its sequence number once it is
  // durable. UNAVAILABLE, with RocksDB's message, when the write failed: the record is then not in
  // the chain, and the next Append tries the store again (resuming RocksDB after its error).
  absl::StatusOr<uint64_t> Append(AuditRecord record) ABSL_LOCKS_EXCLUDED(mu_);

  // False after a failed write until a write succeeds again, or until the writer, retrying by
  // itself every second while idle, finds the store writable and resumes it.
  bool healthy() const ABSL_LOCKS_EXCLUDED(mu_);
  // OK when healthy, else the error of the last failed write (for health checks, metrics, logs).
  absl::Status health() const ABSL_LOCKS_EXCLUDED(mu_);
  // The durable chain head.
  ChainHead head() const ABSL_LOCKS_EXCLUDED(mu_);
  AuditLogStats stats() const ABSL_LOCKS_EXCLUDED(mu_);

  // Records with from <= sequence <= to that are in the store, in order (see ReadAuditRange).
  absl::StatusOr<std::vector<ChainedRecord>> ReadRange(uint64_t from, uint64_t to) const;
  // Every checkpoint in the store, in sequence order.
  absl::StatusOr<std::vector<Checkpoint>> ReadCheckpoints() const;

 private:
  // One caller of Append waiting for its batch; lives on that caller's stack.
  struct Pending {
    AuditRecord record;
    absl::Status status;
    uint64_t sequence = 0;
    bool done = false;
  };

  AuditLog(StateDb* db, CheckpointSigner signer, const AuditLogOptions& options);
  void WriterLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Chains, signs and writes one batch (runs on the writer thread without mu_). On success returns
  // the new head and advances the checkpoint state; on failure changes nothing but
  // max_attempted_sequence_.
  absl::StatusOr<ChainHead> WriteBatch(const ChainHead& head, const std::vector<Pending*>& batch);

  StateDb* const db_;
  const CheckpointSigner signer_;
  const AuditLogOptions options_;

  mutable absl::Mutex mu_;
  std::vector<Pending*> queue_ ABSL_GUARDED_BY(mu_);
  ChainHead head_ ABSL_GUARDED_BY(mu_);
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  AuditLogStats stats_ ABSL_GUARDED_BY(mu_);

  // Owned by the writer thread (and Open, before it starts).
  uint64_t checkpoint_sequence_ = 0;       // the head the last durable checkpoint covers
  absl::Time checkpoint_time_;             // when it was written (or the log opened)
  uint64_t max_attempted_sequence_ = 0;    // highest sequence of a failed write not yet superseded
  bool needs_resume_ = false;              // the last write failed: Resume() RocksDB first
  size_t commit_target_ = 0;               // callers waiting when the previous batch completed
  absl::Duration last_write_duration_;     // how long the previous successful write took
  uint64_t pending_checkpoints_ = 0;       // checkpoints in the batch being written
  Checkpoint last_checkpoint_;             // the newest durable checkpoint written by this log

  std::thread writer_;
};

// The start-up check of AuditLog::Open, usable on its own (e.g. by tools): see Open. `head` is the
// store's chain head (ReadChainHead).
absl::Status CheckStoreAtOpen(const StateDb& db, const std::string& public_key_pem, const ChainHead& head,
                              uint64_t max_unsigned_tail, const std::optional<Checkpoint>& witness);

// Reads from the store directly (usable on a stopped daemon's state directory, without a key):
// the stored records with from <= sequence <= to, in key order, as EncodeStoredRecord bytes and
// not decoded, so that a verifier can report an undecodable record at its position.
absl::StatusOr<std::vector<std::string>> ReadStoredAuditRange(const StateDb& db, uint64_t from,
                                                              uint64_t to);
// As ReadStoredAuditRange, decoded (the stored hash is kept as stored). DATA_LOSS naming the
// sequence for a record that does not decode.
absl::StatusOr<std::vector<ChainedRecord>> ReadAuditRange(const StateDb& db, uint64_t from,
                                                          uint64_t to);
// Every checkpoint, in sequence order. DATA_LOSS naming the sequence for one that does not decode.
absl::StatusOr<std::vector<Checkpoint>> ReadAuditCheckpoints(const StateDb& db);
// The last record's sequence and stored hash; when every record was pruned, the anchor's sequence and
// chain hash (audit/retention.h); sequence 0 and GenesisHash() for a log never written.
absl::StatusOr<ChainHead> ReadChainHead(const StateDb& db);

}  // namespace airlock::audit

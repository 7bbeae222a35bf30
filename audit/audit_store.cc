// The durable audit log: group commit by one writer thread, checkpoints, fail-closed recovery, reads.
#include "audit/audit_store.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "audit/audit_reader.h"
#include "audit/chain_verifier.h"
#include "audit/retention.h"
#include "inference/base/status.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace airlock::audit {
namespace {

// Minimum wait before retrying a checkpoint-only write that failed (a record append always retries
// at once: its caller is waiting).
constexpr absl::Duration kCheckpointRetryDelay = absl::Seconds(1);
// While unhealthy and idle, the writer tries to resume the store this often by itself, so health
// comes back even when no request arrives (a load balancer may stop sending them).
constexpr absl::Duration kRecoveryRetryDelay = absl::Seconds(1);

// Calls `visit(sequence, value)` for each key in [from, to] of `family`, in order, stopping at
// the first error it returns.
template <typename Visit>
absl::Status ScanRange(const StateDb& db, rocksdb::ColumnFamilyHandle* family, uint64_t from, uint64_t to,
                       Visit visit) {
  absl::Status visit_error;
  AIRLOCK_RETURN_IF_ERROR(ScanSequenceRange(db, family, /*snapshot=*/nullptr, from, to, /*descending=*/false,
                                            [&](uint64_t sequence, std::string_view value) {
                                              visit_error = visit(sequence, value);
                                              return visit_error.ok();
                                            }));
  return visit_error;
}

absl::StatusOr<ChainedRecord> DecodeAt(uint64_t sequence, std::string_view value) {
  absl::StatusOr<ChainedRecord> record = DecodeStoredRecord(value);
  if (!record.ok()) {
    return absl::DataLossError(absl::StrCat("audit record ", sequence, ": ", record.status().message()));
  }
  if (record->sequence != sequence) {
    return absl::DataLossError(
        absl::StrCat("audit record ", sequence, ": stored under the key of sequence ", record->sequence));
  }
  return record;
}

absl::StatusOr<Checkpoint> DecodeCheckpointAt(uint64_t sequence, std::string_view value) {
  absl::StatusOr<Checkpoint> checkpoint = DecodeCheckpoint(value);
  if (!checkpoint.ok()) {
    return absl::DataLossError(absl::StrCat("checkpoint ", sequence, ": ", checkpoint.status().message()));
  }
  return checkpoint;
}

// The last key/value of `family`, or nullopt-like empty key when the family is empty.
absl::Status SeekLast(const StateDb& db, rocksdb::ColumnFamilyHandle* family, bool* found, uint64_t* sequence,
                      std::string* value) {
  std::unique_ptr<rocksdb::Iterator> it(db.db()->NewIterator(rocksdb::ReadOptions(), family));
  it->SeekToLast();
  *found = it->Valid();
  if (*found) {
    if (!DecodeSequenceKey(ToStringView(it->key()), sequence)) {
      return absl::DataLossError(absl::StrCat("audit store: malformed key in ", family->GetName()));
    }
    value->assign(it->value().data(), it->value().size());
  }
  return FromRocksDb(it->status(), absl::StatusCode::kUnavailable, "audit store: reading");
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadStoredAuditRange(const StateDb& db, uint64_t from, uint64_t to) {
  std::vector<std::string> out;
  AIRLOCK_RETURN_IF_ERROR(ScanRange(db, db.audit(), from, to, [&](uint64_t, std::string_view value) {
    out.emplace_back(value);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<ChainedRecord>> ReadAuditRange(const StateDb& db, uint64_t from, uint64_t to) {
  std::vector<ChainedRecord> out;
  AIRLOCK_RETURN_IF_ERROR(ScanRange(db, db.audit(), from, to, [&](uint64_t sequence, std::string_view value) {
    AIRLOCK_ASSIGN_OR_RETURN(ChainedRecord record, DecodeAt(sequence, value));
    out.push_back(std::move(record));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<Checkpoint>> ReadAuditCheckpoints(const StateDb& db) {
  std::vector<Checkpoint> out;
  AIRLOCK_RETURN_IF_ERROR(ScanRange(db, db.checkpoints(), 0, UINT64_MAX,
                                    [&](uint64_t sequence, std::string_view value) {
                                      AIRLOCK_ASSIGN_OR_RETURN(Checkpoint checkpoint,
                                                               DecodeCheckpointAt(sequence, value));
                                      out.push_back(std::move(checkpoint));
                                      return absl::OkStatus();
                                    }));
  return out;
}

absl::StatusOr<ChainHead> ReadChainHead(const StateDb& db) {
  bool found = false;
  uint64_t sequence = 0;
  std::string value;
  AIRLOCK_RETURN_IF_ERROR(SeekLast(db, db.audit(), &found, &sequence, &value));
  if (!found) {
    // Every record pruned (audit/retention.h): the chain continues from the anchor, not from genesis.
    AIRLOCK_ASSIGN_OR_RETURN(std::optional<Checkpoint> anchor, ReadAuditAnchor(db));
    if (anchor.has_value()) return ChainHead{anchor->sequence, std::move(anchor->chain_hash)};
    return ChainHead{0, GenesisHash()};
  }
  AIRLOCK_ASSIGN_OR_RETURN(ChainedRecord record, DecodeAt(sequence, value));
  return ChainHead{sequence, std::move(record.hash)};
}

absl::Status CheckStoreAtOpen(const StateDb& db, const std::string& public_key_pem, const ChainHead& head,
                              uint64_t max_unsigned_tail, const std::optional<Checkpoint>& witness) {
  AIRLOCK_ASSIGN_OR_RETURN(CheckpointVerifier verifier, CheckpointVerifier::FromPublicKeyPem(public_key_pem));
  const auto refuse = [](std::string_view why) {
    return absl::DataLossError(absl::StrCat("audit store check failed, refusing to start (nothing was signed): ",
                                            ToAbsl(why)));
  };
  // The newest signed point of the chain: the last checkpoint, or the anchor of a pruned chain.
  AIRLOCK_ASSIGN_OR_RETURN(std::optional<Checkpoint> base, ReadAuditAnchor(db));
  const bool pruned = base.has_value();
  const uint64_t anchor_sequence = pruned ? base->sequence : 0;
  {
    bool found = false;
    uint64_t key = 0;
    std::string value;
    AIRLOCK_RETURN_IF_ERROR(SeekLast(db, db.checkpoints(), &found, &key, &value));
    if (found) {
      AIRLOCK_ASSIGN_OR_RETURN(Checkpoint last, DecodeCheckpointAt(key, value));
      if (!base.has_value() || last.sequence >= base->sequence) base = std::move(last);
    }
  }
  if (base.has_value()) {
    if (absl::Status status = verifier.Verify(*base); !status.ok()) {
      return refuse(absl::StrCat("the newest checkpoint does not verify with this daemon's key (key id ",
                                 verifier.key_id(), "): ", status.message()));
    }
    if (base->sequence > head.sequence) {
      return refuse(absl::StrCat("checkpoint ", base->sequence, " is signed but the chain ends at ", head.sequence,
                                 ": records were removed"));
    }
    // The record the checkpoint covers (gone only when it is the anchor of a pruned chain).
    AIRLOCK_ASSIGN_OR_RETURN(std::vector<ChainedRecord> covered, ReadAuditRange(db, base->sequence, base->sequence));
    if (covered.empty() ? base->sequence != 0 && !(pruned && base->sequence == anchor_sequence)
                        : covered.front().hash != base->chain_hash) {
      return refuse(absl::StrCat("record ", base->sequence, " is not the one checkpoint ", base->sequence,
                                 " signs: it was rewritten or removed"));
    }
  }
  // The records after it: they must chain from it, and there may be no more of them than the log
  // writes between two checkpoints (more means checkpoints were removed).
  VerifyPolicy policy;
  policy.max_unsigned_tail = max_unsigned_tail;
  const uint64_t from = base.has_value() ? base->sequence + 1 : 0;
  std::optional<Checkpoint> start = base;
  if (start.has_value() && start->sequence == 0) start.reset();  // the empty chain's checkpoint
  ChainVerifier chain(public_key_pem, {}, start, policy);
  AIRLOCK_RETURN_IF_ERROR(ScanRange(db, db.audit(), from, UINT64_MAX, [&](uint64_t, std::string_view stored) {
    chain.AddStored(stored);
    return absl::OkStatus();
  }));
  const VerifyReport report = chain.Finish();
  if (!report.ok) {
    return refuse(absl::StrCat(report.problem, report.first_bad_sequence
                                                   ? absl::StrCat(" (first bad sequence ", *report.first_bad_sequence, ")")
                                                   : ""));
  }
  // The witness: the newest checkpoint as kept outside the store.
  if (witness.has_value()) {
    if (absl::Status status = verifier.Verify(*witness); !status.ok()) {
      return refuse(absl::StrCat("the witness checkpoint does not verify with this daemon's key: ", status.message()));
    }
    const uint64_t signed_through = base.has_value() ? base->sequence : 0;
    if (witness->sequence > head.sequence) {
      return refuse(absl::StrCat("the witness holds signed checkpoint ", witness->sequence,
                                 " but the chain ends at ", head.sequence,
                                 ": records were removed or the store was rolled back"));
    }
    if (witness->sequence > signed_through) {
      return refuse(absl::StrCat("checkpoint ", witness->sequence,
                                 " (in the witness) is missing from the store, whose newest is ", signed_through,
                                 ": checkpoints were removed"));
    }
    if (witness->sequence > 0 && !(pruned && witness->sequence < anchor_sequence)) {
      std::string hash;
      if (base.has_value() && witness->sequence == base->sequence) {
        hash = base->chain_hash;
      } else {
        AIRLOCK_ASSIGN_OR_RETURN(std::vector<ChainedRecord> at,
                                 ReadAuditRange(db, witness->sequence, witness->sequence));
        if (!at.empty()) hash = at.front().hash;
      }
      if (hash != witness->chain_hash) {
        return refuse(absl::StrCat("record ", witness->sequence, " is not the one the witness checkpoint signs: ",
                                   "the chain was rewritten"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(StateDb* db, CheckpointSigner signer,
                                                         const AuditLogOptions& options) {
  AIRLOCK_CHECK(db != nullptr);
  AIRLOCK_ASSIGN_OR_RETURN(ChainHead head, ReadChainHead(*db));
  AIRLOCK_RETURN_IF_ERROR(
      CheckStoreAtOpen(*db, signer.PublicKeyPem(), head, options.checkpoint_every_records, options.witness));

  bool found = false;
  uint64_t checkpoint_sequence = 0;
  std::string value;
  AIRLOCK_RETURN_IF_ERROR(SeekLast(*db, db->checkpoints(), &found, &checkpoint_sequence, &value));
  absl::Time checkpoint_time = absl::Now();
  if (found) {
    AIRLOCK_ASSIGN_OR_RETURN(Checkpoint checkpoint, DecodeCheckpointAt(checkpoint_sequence, value));
    if (checkpoint.sequence > head.sequence) {
      return absl::DataLossError(absl::StrCat("audit store: the last checkpoint covers sequence ",
                                              checkpoint.sequence, " beyond the chain head ",
                                              head.sequence, " (records were removed)"));
    }
    checkpoint_sequence = checkpoint.sequence;
    // The interval runs from the last checkpoint, so a tail left uncovered by a crash is signed soon.
    checkpoint_time = absl::FromUnixMicros(checkpoint.time_unix_micros);
  }

  std::unique_ptr<AuditLog> log(new AuditLog(db, std::move(signer), options));
  {
    absl::MutexLock lock(&log->mu_);
    log->head_ = std::move(head);
  }
  log->checkpoint_sequence_ = checkpoint_sequence;
  log->checkpoint_time_ = checkpoint_time;
  log->writer_ = std::thread([raw = log.get()] { raw->WriterLoop(); });
  return log;
}

AuditLog::AuditLog(StateDb* db, CheckpointSigner signer, const AuditLogOptions& options)
    : db_(db), signer_(std::move(signer)), options_(options) {
  AIRLOCK_CHECK(options_.checkpoint_every_records > 0);
  AIRLOCK_CHECK(options_.max_batch_records > 0);
}

AuditLog::~AuditLog() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (writer_.joinable()) writer_.join();
}

absl::StatusOr<uint64_t> AuditLog::Append(AuditRecord record) {
  Pending pending;
  pending.record = std::move(record);
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("audit log is shutting down");
  queue_.push_back(&pending);
  mu_.Await(absl::Condition(&pending.done));
  if (!pending.status.ok()) return pending.status;
  return pending.sequence;
}

bool AuditLog::healthy() const {
  absl::MutexLock lock(&mu_);
  return last_error_.ok();
}

absl::Status AuditLog::health() const {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

ChainHead AuditLog::head() const {
  absl::MutexLock lock(&mu_);
  return head_;
}

AuditLogStats AuditLog::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

absl::StatusOr<std::vector<ChainedRecord>> AuditLog::ReadRange(uint64_t from, uint64_t to) const {
  return ReadAuditRange(*db_, from, to);
}

absl::StatusOr<std::vector<Checkpoint>> AuditLog::ReadCheckpoints() const { return ReadAuditCheckpoints(*db_); }

void AuditLog::WriterLoop() {
  // checkpoint_* and the retry state are touched only here (after Open handed them over).
  absl::Time checkpoint_retry_at = absl::InfinitePast();
  absl::Time recovery_retry_at = absl::InfinitePast();
  bool final_checkpoint_done = false;
  mu_.Lock();
  while (true) {
    const auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
    absl::Time wake = absl::InfiniteFuture();
    if (head_.sequence > checkpoint_sequence_) {
      wake = std::max(checkpoint_time_ + options_.checkpoint_interval, checkpoint_retry_at);
    }
    if (needs_resume_) wake = std::min(wake, recovery_retry_at);
    if (wake == absl::InfiniteFuture()) {
      mu_.Await(absl::Condition(&has_work));
    } else {
      mu_.AwaitWithDeadline(absl::Condition(&has_work), wake);
    }

    // Idle and unhealthy: try to resume the store (a write would do the same first).
    if (queue_.empty() && !stopping_ && needs_resume_ && absl::Now() >= recovery_retry_at) {
      mu_.Unlock();
      const absl::Status resumed = db_->Resume();
      mu_.Lock();
      if (resumed.ok()) {
        needs_resume_ = false;
        last_error_ = absl::OkStatus();
      } else {
        last_error_ = absl::UnavailableError(absl::StrCat("audit log cannot write: ", resumed.message()));
        ++stats_.failed_writes;
        recovery_retry_at = absl::Now() + kRecoveryRetryDelay;
      }
      continue;
    }

    // Group commit delay: wait briefly for the callers of the previous batch to come back.
    const absl::Duration delay = std::min(options_.max_commit_delay, last_write_duration_);
    if (!queue_.empty() && !stopping_ && queue_.size() < commit_target_ && delay > absl::ZeroDuration()) {
      const size_t target = std::min(commit_target_, options_.max_batch_records);
      const auto gathered = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return queue_.size() >= target || stopping_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&gathered), delay);
    }

    std::vector<Pending*> batch;
    if (queue_.empty()) {
      if (stopping_) {
        // A clean shutdown signs the tail so that the whole log verifies as signed (best effort).
        if (final_checkpoint_done || head_.sequence == checkpoint_sequence_) break;
        final_checkpoint_done = true;
      } else {
        const absl::Time due = std::max(checkpoint_time_ + options_.checkpoint_interval, checkpoint_retry_at);
        if (head_.sequence == checkpoint_sequence_ || absl::Now() < due) continue;
      }
      // Fall through with an empty batch: a checkpoint-only write.
    } else if (queue_.size() <= options_.max_batch_records) {
      batch.swap(queue_);
    } else {
      batch.assign(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(options_.max_batch_records));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(options_.max_batch_records));
    }
    const ChainHead head = head_;
    mu_.Unlock();
    absl::StatusOr<ChainHead> written = WriteBatch(head, batch);
    mu_.Lock();

    if (written.ok()) {
      uint64_t sequence = head_.sequence;
      for (Pending* pending : batch) {
        pending->sequence = ++sequence;
        pending->done = true;
      }
      head_ = *std::move(written);
      last_error_ = absl::OkStatus();
      ++stats_.batches;
      stats_.records += batch.size();
      stats_.checkpoints += pending_checkpoints_;
      // Everyone in this batch plus whoever queued meanwhile: the callers the next batch expects.
      if (!batch.empty()) commit_target_ = batch.size() + queue_.size();
      if (pending_checkpoints_ > 0 && options_.checkpoint_written) {
        // After the callers were answered: the witness write must not delay them.
        mu_.Unlock();
        options_.checkpoint_written(last_checkpoint_);
        mu_.Lock();
      }
    } else {
      for (Pending* pending : batch) {
        pending->status = written.status();
        pending->done = true;
      }
      last_error_ = written.status();
      ++stats_.failed_writes;
      recovery_retry_at = absl::Now() + kRecoveryRetryDelay;
      if (batch.empty()) checkpoint_retry_at = absl::Now() + kCheckpointRetryDelay;
    }
  }
  mu_.Unlock();
}

absl::StatusOr<ChainHead> AuditLog::WriteBatch(const ChainHead& head, const std::vector<Pending*>& batch) {
  const absl::Time now = absl::Now();
  const int64_t now_micros = absl::ToUnixMicros(now);
  rocksdb::WriteBatch write;
  auto check = [](const rocksdb::Status& status) {
    return FromRocksDb(status, absl::StatusCode::kInternal, "audit log: building write batch");
  };

  // A failed write may still be in the WAL (appended, sync failed) and would come back on replay.
  // This batch supersedes it: it removes every key such an attempt could have written past the
  // head, then writes its own (later operations in a batch win).
  if (max_attempted_sequence_ > head.sequence) {
    const std::string begin = EncodeSequenceKey(head.sequence + 1);
    const std::string end = EncodeSequenceKey(max_attempted_sequence_ + 1);
    AIRLOCK_RETURN_IF_ERROR(check(write.DeleteRange(db_->audit(), begin, end)));
    AIRLOCK_RETURN_IF_ERROR(check(write.DeleteRange(db_->checkpoints(), begin, end)));
  }

  uint64_t sequence = head.sequence;
  std::string hash = head.hash;
  uint64_t checkpoint_sequence = checkpoint_sequence_;
  absl::Time checkpoint_time = checkpoint_time_;
  pending_checkpoints_ = 0;
  Checkpoint newest;
  const auto add_checkpoint = [&]() -> absl::Status {
    const Checkpoint checkpoint = signer_.Sign(sequence, hash, now_micros);
    AIRLOCK_RETURN_IF_ERROR(
        check(write.Put(db_->checkpoints(), EncodeSequenceKey(sequence), EncodeCheckpoint(checkpoint))));
    checkpoint_sequence = sequence;
    checkpoint_time = now;
    ++pending_checkpoints_;
    newest = checkpoint;
    return absl::OkStatus();
  };

  for (Pending* pending : batch) {
    ++sequence;
    AuditRecord record = std::move(pending->record);
    if (record.time_unix_micros == 0) record.time_unix_micros = now_micros;
    ChainedRecord chained = Chain(sequence, std::move(hash), std::move(record));
    AIRLOCK_RETURN_IF_ERROR(
        check(write.Put(db_->audit(), EncodeSequenceKey(sequence), EncodeStoredRecord(chained))));
    hash = std::move(chained.hash);
    if (sequence - checkpoint_sequence >= options_.checkpoint_every_records) {
      AIRLOCK_RETURN_IF_ERROR(add_checkpoint());
    }
  }
  // Time-based: sign the head when the last checkpoint is old (or this is a checkpoint-only batch).
  if (sequence > checkpoint_sequence &&
      (batch.empty() || now - checkpoint_time >= options_.checkpoint_interval)) {
    AIRLOCK_RETURN_IF_ERROR(add_checkpoint());
  }
  if (write.Count() == 0) return ChainHead{sequence, std::move(hash)};

  absl::Status status;
  if (needs_resume_) status = db_->Resume();
  const absl::Time write_start = absl::Now();
  if (status.ok()) status = db_->Write(&write, /*sync=*/true);
  if (status.ok()) last_write_duration_ = absl::Now() - write_start;
  if (!status.ok()) {
    needs_resume_ = true;
    max_attempted_sequence_ = std::max(max_attempted_sequence_, sequence);
    return absl::UnavailableError(absl::StrCat("audit log cannot write: ", status.message()));
  }
  needs_resume_ = false;
  max_attempted_sequence_ = 0;
  checkpoint_sequence_ = checkpoint_sequence;
  checkpoint_time_ = checkpoint_time;
  if (pending_checkpoints_ > 0) last_checkpoint_ = std::move(newest);
  return ChainHead{sequence, std::move(hash)};
}

}  // namespace airlock::audit

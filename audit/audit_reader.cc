// Snapshot reads of the audit store.
#include "audit/audit_reader.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "audit/retention.h"
#include "inference/base/status.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"

namespace airlock::audit {

absl::Status ScanSequenceRange(const StateDb& db, rocksdb::ColumnFamilyHandle* family,
                               const rocksdb::Snapshot* snapshot, uint64_t from, uint64_t to,
                               bool descending, const ScanVisitor& visit) {
  if (from > to) return absl::OkStatus();
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot;
  read_options.fill_cache = false;  // verifier/export/query scans should not evict the hot set
  std::unique_ptr<rocksdb::Iterator> it(db.db()->NewIterator(read_options, family));
  const std::string first = EncodeSequenceKey(from);
  const std::string last = EncodeSequenceKey(to);
  if (descending) {
    it->SeekForPrev(last);
  } else {
    it->Seek(first);
  }
  for (; it->Valid(); descending ? it->Prev() : it->Next()) {
    if (descending ? it->key().compare(rocksdb::Slice(first)) < 0
                   : it->key().compare(rocksdb::Slice(last)) > 0) {
      break;
    }
    uint64_t sequence = 0;
    if (!DecodeSequenceKey(ToStringView(it->key()), &sequence)) {
      return absl::DataLossError(absl::StrCat("audit store: malformed key of ", it->key().size(),
                                              " bytes in ", family->GetName()));
    }
    if (!visit(sequence, ToStringView(it->value()))) return absl::OkStatus();
  }
  return FromRocksDb(it->status(), absl::StatusCode::kUnavailable, "audit store: reading");
}

AuditSnapshot::AuditSnapshot(const StateDb& db) : db_(db), snapshot_(db.db()->GetSnapshot()) {}

AuditSnapshot::~AuditSnapshot() { db_.db()->ReleaseSnapshot(snapshot_); }

absl::StatusOr<std::optional<Checkpoint>> AuditSnapshot::Anchor() const {
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot_;
  std::string value;
  const rocksdb::Status status = db_.db()->Get(read_options, db_.meta(), kAuditAnchorKey, &value);
  if (status.IsNotFound()) return std::optional<Checkpoint>();
  AIRLOCK_RETURN_IF_ERROR(FromRocksDb(status, absl::StatusCode::kUnavailable, "audit store: reading the anchor"));
  absl::StatusOr<Checkpoint> anchor = DecodeCheckpoint(value);
  if (!anchor.ok()) {
    return absl::DataLossError(absl::StrCat("audit store: the anchor does not decode: ", anchor.status().message()));
  }
  return std::optional<Checkpoint>(*std::move(anchor));
}

absl::StatusOr<std::vector<Checkpoint>> AuditSnapshot::Checkpoints() const {
  std::vector<Checkpoint> out;
  absl::Status decode_error;
  AIRLOCK_RETURN_IF_ERROR(ScanSequenceRange(
      db_, db_.checkpoints(), snapshot_, 0, UINT64_MAX, false, [&](uint64_t sequence, std::string_view value) {
        absl::StatusOr<Checkpoint> checkpoint = DecodeCheckpoint(value);
        if (!checkpoint.ok()) {
          decode_error = absl::DataLossError(
              absl::StrCat("checkpoint ", sequence, ": ", checkpoint.status().message()));
          return false;
        }
        out.push_back(*std::move(checkpoint));
        return true;
      }));
  AIRLOCK_RETURN_IF_ERROR(decode_error);
  return out;
}

absl::StatusOr<uint64_t> AuditSnapshot::HeadSequence() const {
  uint64_t head = 0;
  bool found = false;
  AIRLOCK_RETURN_IF_ERROR(ScanRecords(0, UINT64_MAX, true, [&](uint64_t sequence, std::string_view) {
    head = sequence;
    found = true;
    return false;
  }));
  if (found) return head;
  AIRLOCK_ASSIGN_OR_RETURN(std::optional<Checkpoint> anchor, Anchor());
  return anchor.has_value() ? anchor->sequence : 0;
}

absl::StatusOr<VerifyReport> VerifySnapshot(const AuditSnapshot& snapshot, const std::string& public_key_pem,
                                            const std::function<bool()>& cancelled, const VerifyPolicy& policy) {
  AIRLOCK_ASSIGN_OR_RETURN(std::optional<Checkpoint> anchor, snapshot.Anchor());
  AIRLOCK_ASSIGN_OR_RETURN(std::vector<Checkpoint> checkpoints, snapshot.Checkpoints());
  ChainVerifier verifier(public_key_pem, checkpoints, anchor, policy);
  bool stopped = false;
  AIRLOCK_RETURN_IF_ERROR(snapshot.ScanRecords(0, UINT64_MAX, false, [&](uint64_t, std::string_view stored) {
    if (cancelled && cancelled()) {
      stopped = true;
      return false;
    }
    return verifier.AddStored(stored);
  }));
  if (stopped) return absl::CancelledError("verification cancelled");
  return verifier.Finish();
}

absl::Status AuditSnapshot::ScanRecords(uint64_t from, uint64_t to, bool descending,
                                        const ScanVisitor& visit) const {
  return ScanSequenceRange(db_, db_.audit(), snapshot_, from, to, descending, visit);
}

}  // namespace airlock::audit

// The offline chain verifier: one pass over the stored records, matching checkpoints on the way.
#include "audit/chain_verifier.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::audit {
namespace {

// How many recent record hashes are remembered to recognise a run of inserted records: a record
// whose prev_hash is the hash of an earlier record than its predecessor had records inserted
// before it. Longer runs are still detected, reported at the record after them.
constexpr size_t kInsertWindow = 1024;

}  // namespace

struct ChainVerifier::State {
  std::optional<CheckpointVerifier> verifier;
  VerifyPolicy policy;
  VerifyReport report;
  bool done = false;  // failed (or finished): further records are ignored
  // Checkpoints in sequence order; those below the anchor belong to the pruned part.
  std::vector<Checkpoint> sorted;
  size_t next_checkpoint = 0;
  // Whether the previous hash is proven: the genesis, the anchor, or signed by a checkpoint.
  bool prev_proven = true;
  std::string prev_hash;
  std::deque<std::pair<std::string, uint64_t>> recent;  // (hash, sequence), newest last
  uint64_t expected = 0;
  uint64_t position = 0;

  void Fail(uint64_t sequence, std::string problem) {
    report.ok = false;
    report.first_bad_sequence = sequence;
    report.problem = std::move(problem);
    report.unsigned_tail = 0;
    done = true;
  }

  // Checks every checkpoint at `sequence` against `hash`; true when one verified and matched.
  // Fails the walk on a forged or mismatching one.
  bool CheckCheckpointsAt(uint64_t sequence, const std::string& hash) {
    bool signed_here = false;
    for (; next_checkpoint < sorted.size() && sorted[next_checkpoint].sequence == sequence;
         ++next_checkpoint) {
      const Checkpoint& checkpoint = sorted[next_checkpoint];
      ++report.checkpoints_checked;
      if (absl::Status status = verifier->Verify(checkpoint); !status.ok()) {
        Fail(sequence, absl::StrCat("forged checkpoint: ", status.message()));
        return false;
      }
      if (checkpoint.chain_hash != hash) {
        Fail(sequence, absl::StrCat("record ", sequence,
                                    " was rewritten: its hash is not the one checkpoint ", sequence,
                                    " signs"));
        return false;
      }
      signed_here = true;
    }
    return signed_here;
  }
};

ChainVerifier::ChainVerifier(const std::string& public_key_pem,
                             std::span<const Checkpoint> checkpoints,
                             const std::optional<Checkpoint>& anchor, const VerifyPolicy& policy)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.policy = policy;
  auto verifier_or = CheckpointVerifier::FromPublicKeyPem(public_key_pem);
  if (!verifier_or.ok()) {
    s.report.problem = std::string(verifier_or.status().message());
    s.done = true;
    return;
  }
  s.verifier.emplace(*std::move(verifier_or));

  uint64_t base_sequence = 0;
  std::string base_hash = GenesisHash();
  if (anchor.has_value()) {
    ++s.report.checkpoints_checked;
    if (absl::Status status = s.verifier->Verify(*anchor); !status.ok()) {
      s.Fail(anchor->sequence, absl::StrCat("anchor checkpoint ", anchor->sequence,
                                            " does not verify: ", status.message()));
      return;
    }
    base_sequence = anchor->sequence;
    base_hash = anchor->chain_hash;
  }
  s.report.head_sequence = base_sequence;
  s.report.signed_through = base_sequence;

  for (const Checkpoint& checkpoint : checkpoints) {
    if (checkpoint.sequence >= base_sequence) s.sorted.push_back(checkpoint);
  }
  std::stable_sort(s.sorted.begin(), s.sorted.end(),
                   [](const Checkpoint& a, const Checkpoint& b) { return a.sequence < b.sequence; });

  s.CheckCheckpointsAt(base_sequence, base_hash);
  s.prev_hash = base_hash;
  s.recent.emplace_back(base_hash, base_sequence);
  s.expected = base_sequence + 1;
}

ChainVerifier::~ChainVerifier() = default;
ChainVerifier::ChainVerifier(ChainVerifier&&) noexcept = default;
ChainVerifier& ChainVerifier::operator=(ChainVerifier&&) noexcept = default;

bool ChainVerifier::failed() const { return state_->done; }

void ChainVerifier::Reject(uint64_t sequence, std::string problem) {
  if (state_->done) return;
  state_->Fail(sequence, std::move(problem));
}

bool ChainVerifier::Add(const ChainedRecord& record) {
  State& s = *state_;
  if (s.done) return false;
  const uint64_t expected = s.expected;
  const uint64_t position = s.position;
  if (record.sequence != expected) {
    if (record.sequence > expected) {
      s.Fail(expected, absl::StrCat("record ", expected, " is missing: position ", position,
                                    " holds sequence ", record.sequence,
                                    " (deleted or reordered)"));
    } else if (record.sequence + 1 == expected && !s.prev_proven) {
      // Two records claim sequence e-1: either the first was inserted before the real one or
      // this one after it. The earlier explanation is reported, unless a checkpoint proves
      // the first.
      s.Fail(expected - 1,
             absl::StrCat("two records claim sequence ", expected - 1, " (one was inserted)"));
    } else {
      s.Fail(expected, absl::StrCat("position ", position, " should hold sequence ", expected,
                                    " but holds ", record.sequence,
                                    " again (inserted or reordered)"));
    }
    return false;
  }
  const bool hash_ok = record.hash.size() == kHashSize &&
                       ChainHash(record.prev_hash, EncodeRecord(record)) == record.hash;
  const bool link_ok = record.prev_hash == s.prev_hash;
  if (!link_ok) {
    // A link to an older record: the records between it and this one were inserted.
    for (const auto& [hash, sequence] : s.recent) {
      if (sequence + 1 < expected && hash == record.prev_hash) {
        s.Fail(sequence + 1, absl::StrCat("records ", sequence + 1, "..", expected - 1,
                                          " were inserted: record ", expected,
                                          " links to record ", sequence));
        return false;
      }
    }
    if (!hash_ok) {
      s.Fail(expected, absl::StrCat("record ", expected,
                                    " was modified: its hash does not recompute "
                                    "and it does not link to record ",
                                    expected - 1));
    } else if (s.prev_proven) {
      s.Fail(expected, absl::StrCat("record ", expected,
                                    " was modified: it does not link to record ", expected - 1,
                                    ", whose hash is signed"));
    } else {
      s.Fail(expected - 1, absl::StrCat("record ", expected - 1,
                                        " was rewritten (and rehashed): record ", expected,
                                        " does not link to it"));
    }
    return false;
  }
  if (!hash_ok) {
    s.Fail(expected,
           absl::StrCat("record ", expected, " was modified: its hash does not recompute"));
    return false;
  }
  s.prev_proven = s.CheckCheckpointsAt(expected, record.hash);
  if (s.done) return false;
  if (s.prev_proven) s.report.signed_through = expected;
  ++s.report.records_checked;
  s.report.head_sequence = expected;
  s.prev_hash = record.hash;
  s.recent.emplace_back(record.hash, expected);
  if (s.recent.size() > kInsertWindow) s.recent.pop_front();
  ++s.expected;
  ++s.position;
  return true;
}

bool ChainVerifier::AddStored(std::string_view stored) {
  if (state_->done) return false;
  absl::StatusOr<ChainedRecord> record = DecodeStoredRecord(stored);
  if (!record.ok()) {
    const uint64_t at = state_->expected;
    state_->Fail(at, absl::StrCat("record ", at, " does not decode: ", record.status().message()));
    return false;
  }
  return Add(*record);
}

VerifyReport ChainVerifier::Finish() {
  State& s = *state_;
  if (s.done) return s.report;
  s.done = true;
  VerifyReport& report = s.report;
  const uint64_t head = report.head_sequence;
  // Checkpoints beyond the head: a valid one proves records were cut off the end; an invalid one
  // is a forgery at its own sequence (reported unless a truncation comes first).
  std::optional<uint64_t> forged;
  std::string forged_problem;
  for (; s.next_checkpoint < s.sorted.size(); ++s.next_checkpoint) {
    const Checkpoint& checkpoint = s.sorted[s.next_checkpoint];
    ++report.checkpoints_checked;
    if (absl::Status status = s.verifier->Verify(checkpoint); !status.ok()) {
      if (!forged.has_value()) {
        forged = checkpoint.sequence;
        forged_problem = absl::StrCat("forged checkpoint: ", status.message());
      }
      continue;
    }
    s.Fail(head + 1, absl::StrCat("records from ", head + 1, " are missing: the chain ends at ",
                                  head, " but checkpoint ", checkpoint.sequence,
                                  " is signed (truncated)"));
    return report;
  }
  if (forged.has_value()) {
    s.Fail(*forged, std::move(forged_problem));
    return report;
  }
  const uint64_t tail = head - report.signed_through;
  if (tail > s.policy.max_unsigned_tail) {
    // The log signs at least every max_unsigned_tail records: checkpoints were removed, which is
    // what rewriting signed records (and rechaining them) without the key requires.
    s.Fail(report.signed_through + 1,
           absl::StrCat("unsigned tail of ", tail, " records (sequences ", report.signed_through + 1, "..", head,
                        ") is longer than the ", s.policy.max_unsigned_tail,
                        " the checkpoint policy permits: checkpoints were removed, so the records after ",
                        report.signed_through, " may have been rewritten"));
    return report;
  }
  report.ok = true;
  report.unsigned_tail = tail;
  if (report.unsigned_tail > 0) {
    report.problem = absl::StrCat("unsigned tail of ", report.unsigned_tail, " records (sequences ",
                                  report.signed_through + 1, "..", head, ")");
  }
  return report;
}

VerifyReport VerifyChain(std::span<const ChainedRecord> records,
                         std::span<const Checkpoint> checkpoints, const std::string& public_key_pem,
                         const std::optional<Checkpoint>& anchor, const VerifyPolicy& policy) {
  ChainVerifier verifier(public_key_pem, checkpoints, anchor, policy);
  for (const ChainedRecord& record : records) {
    if (!verifier.Add(record)) break;
  }
  return verifier.Finish();
}

VerifyReport VerifyStoredChain(std::span<const std::string> stored_records,
                               std::span<const Checkpoint> checkpoints,
                               const std::string& public_key_pem,
                               const std::optional<Checkpoint>& anchor, const VerifyPolicy& policy) {
  ChainVerifier verifier(public_key_pem, checkpoints, anchor, policy);
  for (const std::string& stored : stored_records) {
    if (!verifier.AddStored(stored)) break;
  }
  return verifier.Finish();
}

}  // namespace airlock::audit

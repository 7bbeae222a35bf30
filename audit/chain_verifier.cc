// The offline chain verifier: one pass over the stored records, matching checkpoints on the way.
#include "audit/chain_verifier.h"

#include <algorithm>
#include <deque>
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

struct Walk {
  const CheckpointVerifier& verifier;
  VerifyReport report;

  VerifyReport Fail(uint64_t sequence, std::string problem) {
    report.ok = false;
    report.first_bad_sequence = sequence;
    report.problem = std::move(problem);
    report.unsigned_tail = 0;
    return report;
  }
};

// `trailing_problem`, when set, says that a record after `records` could not be decoded: it is
// reported at the sequence that record should have had, unless something earlier is bad.
VerifyReport VerifyDecoded(std::span<const ChainedRecord> records,
                           std::span<const Checkpoint> checkpoints,
                           const std::string& public_key_pem,
                           const std::optional<Checkpoint>& anchor,
                           const std::optional<std::string>& trailing_problem) {
  auto verifier_or = CheckpointVerifier::FromPublicKeyPem(public_key_pem);
  if (!verifier_or.ok()) {
    VerifyReport report;
    report.problem = std::string(verifier_or.status().message());
    return report;
  }
  Walk walk{*verifier_or, {}};
  VerifyReport& report = walk.report;

  uint64_t base_sequence = 0;
  std::string base_hash = GenesisHash();
  if (anchor.has_value()) {
    ++report.checkpoints_checked;
    if (absl::Status status = walk.verifier.Verify(*anchor); !status.ok()) {
      return walk.Fail(anchor->sequence, absl::StrCat("anchor checkpoint ", anchor->sequence,
                                                      " does not verify: ", status.message()));
    }
    base_sequence = anchor->sequence;
    base_hash = anchor->chain_hash;
  }
  report.head_sequence = base_sequence;
  report.signed_through = base_sequence;

  // Checkpoints in sequence order; those below the anchor belong to the pruned part.
  std::vector<const Checkpoint*> sorted;
  for (const Checkpoint& checkpoint : checkpoints) {
    if (checkpoint.sequence >= base_sequence) sorted.push_back(&checkpoint);
  }
  std::stable_sort(sorted.begin(), sorted.end(), [](const Checkpoint* a, const Checkpoint* b) {
    return a->sequence < b->sequence;
  });
  size_t next_checkpoint = 0;

  // Checks every checkpoint at `sequence` against `hash`; true when one verified and matched.
  // Sets *failed (and the report) on a forged or mismatching one.
  auto check_checkpoints_at = [&](uint64_t sequence, const std::string& hash,
                                  bool* failed) -> bool {
    bool signed_here = false;
    for (; next_checkpoint < sorted.size() && sorted[next_checkpoint]->sequence == sequence;
         ++next_checkpoint) {
      const Checkpoint& checkpoint = *sorted[next_checkpoint];
      ++report.checkpoints_checked;
      if (absl::Status status = walk.verifier.Verify(checkpoint); !status.ok()) {
        *failed = true;
        walk.Fail(sequence, absl::StrCat("forged checkpoint: ", status.message()));
        return false;
      }
      if (checkpoint.chain_hash != hash) {
        *failed = true;
        walk.Fail(sequence, absl::StrCat("record ", sequence,
                                         " was rewritten: its hash is not the one checkpoint ",
                                         sequence, " signs"));
        return false;
      }
      signed_here = true;
    }
    return signed_here;
  };

  bool failed = false;
  // Whether the previous hash is proven: the genesis, the anchor, or signed by a checkpoint.
  bool prev_proven = true;
  check_checkpoints_at(base_sequence, base_hash, &failed);
  if (failed) return report;

  std::string prev_hash = base_hash;
  std::deque<std::pair<std::string, uint64_t>> recent;  // (hash, sequence), newest last
  recent.emplace_back(base_hash, base_sequence);
  uint64_t expected = base_sequence + 1;
  for (size_t position = 0; position < records.size(); ++position, ++expected) {
    const ChainedRecord& record = records[position];
    if (record.sequence != expected) {
      if (record.sequence > expected) {
        return walk.Fail(
            expected, absl::StrCat("record ", expected, " is missing: position ", position,
                                   " holds sequence ", record.sequence, " (deleted or reordered)"));
      }
      if (record.sequence + 1 == expected && !prev_proven) {
        // Two records claim sequence e-1: either the first was inserted before the real one or
        // this one after it. The earlier explanation is reported, unless a checkpoint proves
        // the first.
        return walk.Fail(expected - 1, absl::StrCat("two records claim sequence ", expected - 1,
                                                    " (one was inserted)"));
      }
      return walk.Fail(
          expected, absl::StrCat("position ", position, " should hold sequence ", expected,
                                 " but holds ", record.sequence, " again (inserted or reordered)"));
    }
    const bool hash_ok = record.hash.size() == kHashSize &&
                         ChainHash(record.prev_hash, EncodeRecord(record)) == record.hash;
    const bool link_ok = record.prev_hash == prev_hash;
    if (!link_ok) {
      // A link to an older record: the records between it and this one were inserted.
      for (const auto& [hash, sequence] : recent) {
        if (sequence + 1 < expected && hash == record.prev_hash) {
          return walk.Fail(sequence + 1, absl::StrCat("records ", sequence + 1, "..", expected - 1,
                                                      " were inserted: record ", expected,
                                                      " links to record ", sequence));
        }
      }
      if (!hash_ok) {
        return walk.Fail(expected, absl::StrCat("record ", expected,
                                                " was modified: its hash does not recompute "
                                                "and it does not link to record ",
                                                expected - 1));
      }
      if (prev_proven) {
        return walk.Fail(expected, absl::StrCat("record ", expected,
                                                " was modified: it does not link to record ",
                                                expected - 1, ", whose hash is signed"));
      }
      return walk.Fail(expected - 1, absl::StrCat("record ", expected - 1,
                                                  " was rewritten (and rehashed): record ",
                                                  expected, " does not link to it"));
    }
    if (!hash_ok) {
      return walk.Fail(expected, absl::StrCat("record ", expected,
                                              " was modified: its hash does not recompute"));
    }
    prev_proven = check_checkpoints_at(expected, record.hash, &failed);
    if (failed) return report;
    if (prev_proven) report.signed_through = expected;
    ++report.records_checked;
    report.head_sequence = expected;
    prev_hash = record.hash;
    recent.emplace_back(record.hash, expected);
    if (recent.size() > kInsertWindow) recent.pop_front();
  }

  const uint64_t head = report.head_sequence;
  if (trailing_problem.has_value()) {
    return walk.Fail(head + 1,
                     absl::StrCat("record ", head + 1, " does not decode: ", *trailing_problem));
  }
  // Checkpoints beyond the head: a valid one proves records were cut off the end; an invalid one
  // is a forgery at its own sequence (reported unless a truncation comes first).
  std::optional<uint64_t> forged;
  std::string forged_problem;
  for (; next_checkpoint < sorted.size(); ++next_checkpoint) {
    const Checkpoint& checkpoint = *sorted[next_checkpoint];
    ++report.checkpoints_checked;
    if (absl::Status status = walk.verifier.Verify(checkpoint); !status.ok()) {
      if (!forged.has_value()) {
        forged = checkpoint.sequence;
        forged_problem = absl::StrCat("forged checkpoint: ", status.message());
      }
      continue;
    }
    return walk.Fail(
        head + 1, absl::StrCat("records from ", head + 1, " are missing: the chain ends at ", head,
                               " but checkpoint ", checkpoint.sequence, " is signed (truncated)"));
  }
  if (forged.has_value()) return walk.Fail(*forged, std::move(forged_problem));

  report.ok = true;
  report.unsigned_tail = head - report.signed_through;
  if (report.unsigned_tail > 0) {
    report.problem = absl::StrCat("unsigned tail of ", report.unsigned_tail, " records (sequences ",
                                  report.signed_through + 1, "..", head, ")");
  }
  return report;
}

}  // namespace

VerifyReport VerifyChain(std::span<const ChainedRecord> records,
                         std::span<const Checkpoint> checkpoints, const std::string& public_key_pem,
                         const std::optional<Checkpoint>& anchor) {
  return VerifyDecoded(records, checkpoints, public_key_pem, anchor, std::nullopt);
}

VerifyReport VerifyStoredChain(std::span<const std::string> stored_records,
                               std::span<const Checkpoint> checkpoints,
                               const std::string& public_key_pem,
                               const std::optional<Checkpoint>& anchor) {
  std::vector<ChainedRecord> records;
  records.reserve(stored_records.size());
  std::optional<std::string> trailing_problem;
  for (const std::string& stored : stored_records) {
    auto record = DecodeStoredRecord(stored);
    if (!record.ok()) {
      trailing_problem = std::string(record.status().message());
      break;
    }
    records.push_back(*std::move(record));
  }
  return VerifyDecoded(records, checkpoints, public_key_pem, anchor, trailing_problem);
}

}  // namespace airlock::audit

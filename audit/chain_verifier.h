// Offline verification of an audit chain: links, hashes, sequence numbers and signed checkpoints.
//
// This is what `airlockctl audit verify` runs, over the records and checkpoints read from a store
// or an export file, with only the public key. The rules, and how the first bad sequence is
// chosen for each kind of tampering, are in docs/audit.md ("Verifying offline").
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "audit/audit_record.h"
#include "audit/checkpoint.h"

namespace airlock::audit {

// How much of the chain may lack a signature. The log signs the head at least every
// checkpoint_every records (AuditLogOptions), so a longer unsigned tail means checkpoints were
// removed: without the key, that is the only way to rewrite or drop signed records unnoticed.
struct VerifyPolicy {
  // Most records after the last valid checkpoint. Default: 1000, the daemon's default
  // audit.checkpoint_every; pass the configured value when it differs.
  uint64_t max_unsigned_tail = 1000;
};

struct VerifyReport {
  bool ok = false;               // integrity holds (an unsigned tail within the policy does not make it false)
  uint64_t records_checked = 0;  // records whose sequence, hash and link were checked and held
  uint64_t checkpoints_checked = 0;  // checkpoints whose signature was checked
  // The first affected sequence number when !ok (the lowest the tampering can be pinned to).
  std::optional<uint64_t> first_bad_sequence;
  // Why !ok; when ok, empty or "unsigned tail of N records (sequences A..B)". A tail longer than
  // VerifyPolicy::max_unsigned_tail is !ok, reported at its first sequence.
  std::string problem;
  uint64_t head_sequence = 0;   // last record's sequence (the anchor's, or 0, when none)
  uint64_t signed_through = 0;  // highest sequence covered by a valid, matching checkpoint
  uint64_t unsigned_tail = 0;   // head_sequence - signed_through when ok
};

// The same walk one record at a time, so that a chain of any length is verified in constant
// memory (the checkpoints are held; they are one per N records). Feed records in stored order;
// Add/AddStored return false once the chain is known bad (later records are then ignored), and
// Finish() gives the report (call it once, after the last record).
class ChainVerifier {
 public:
  ChainVerifier(const std::string& public_key_pem, std::span<const Checkpoint> checkpoints,
                const std::optional<Checkpoint>& anchor, const VerifyPolicy& policy = {});
  ~ChainVerifier();
  ChainVerifier(ChainVerifier&&) noexcept;
  ChainVerifier& operator=(ChainVerifier&&) noexcept;

  bool Add(const ChainedRecord& record);
  // A record in its stored form; one that does not decode is reported at the sequence expected.
  bool AddStored(std::string_view stored);
  // True once a problem was found (the report is then final).
  bool failed() const;
  // Fails the walk at `sequence` for a reason found outside the chain (e.g. an export line whose
  // readable fields disagree with its stored bytes). Ignored once a problem was found.
  void Reject(uint64_t sequence, std::string problem);
  VerifyReport Finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Verifies `records` as stored (not re-sorted) and `checkpoints` (any order) with the Ed25519
// public key `public_key_pem`. Without an anchor the chain starts at sequence 1 with prev_hash
// GenesisHash(); with one (the signed checkpoint at the start of a pruned chain) it starts at
// anchor->sequence + 1 with prev_hash anchor->chain_hash, and the anchor must verify.
// Checkpoints below the anchor are ignored. An unparsable public key gives !ok with no sequence.
VerifyReport VerifyChain(std::span<const ChainedRecord> records,
                         std::span<const Checkpoint> checkpoints, const std::string& public_key_pem,
                         const std::optional<Checkpoint>& anchor, const VerifyPolicy& policy = {});

// As VerifyChain, over records in their stored form (EncodeStoredRecord). A record that does not
// decode is reported at the sequence expected in its position.
VerifyReport VerifyStoredChain(std::span<const std::string> stored_records,
                               std::span<const Checkpoint> checkpoints,
                               const std::string& public_key_pem,
                               const std::optional<Checkpoint>& anchor, const VerifyPolicy& policy = {});

}  // namespace airlock::audit

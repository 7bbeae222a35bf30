// Audit records and their canonical, versioned byte encoding, plus the hash that chains them.
//
// The encoding is ours and documented byte by byte in docs/audit.md ("Canonical encoding"): it
// never depends on a serialisation library, so the bytes a record hashes to today are the bytes an
// auditor recomputes in ten years. The golden-bytes test in tests/audit/audit_record_test.cc pins
// it; a change to the layout needs a new version byte, never an edit of version 1.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "auth/digest.h"

namespace airlock::audit {

// Which moment of a call a record describes.
enum class Phase : uint8_t {
  kBegin = 1,  // written (durably) before the engine starts
  kEnd = 2,    // written when the call finishes, fails or is cancelled
  kAdmin = 3,  // an Admin service call (itself audited)
};

// What the daemon decided about the call.
enum class Decision : uint8_t {
  kAllowed = 1,
  kDeniedByRole = 2,
  kDeniedByQuota = 3,
  kInvalid = 4,
  kUnauthenticated = 5,
};

// Stable lowercase names ("begin", "denied_by_role"), for JSON Lines exports and messages;
// "unknown" for a value outside the enum.
std::string_view PhaseName(Phase phase);
std::string_view DecisionName(Decision decision);

// What the daemon fills in for one record. Text fields are arbitrary bytes (UTF-8 by convention);
// the encoding does not interpret them.
struct AuditRecord {
  Phase phase = Phase::kBegin;
  Decision decision = Decision::kAllowed;
  int64_t time_unix_micros = 0;  // set by the log when appended if 0
  std::string request_id;
  std::string identity;          // the authenticated identity (role-bearing name)
  std::string subject;           // certificate subject, RFC 2253
  std::string cert_fingerprint;  // SHA-256 of the client certificate, hex
  std::string peer;              // peer address as gRPC reports it
  std::string method;            // full gRPC method name
  std::string model;
  std::string sampling;  // canonical "k=v;..." text of the sampling parameters, may be empty
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  std::string stop_reason;
  int32_t status_code = 0;  // gRPC status code
  uint64_t latency_micros = 0;
  std::string prompt_hmac;  // 32-byte HMAC-SHA256 (raw bytes) or empty
  std::string output_hmac;  // 32-byte HMAC-SHA256 (raw bytes) or empty
  std::string sealed_text;  // optional AES-256-GCM sealed prompt/output (opt-in), raw bytes

  bool operator==(const AuditRecord&) const = default;
};

// A record in its place in the chain.
struct ChainedRecord {
  uint64_t sequence = 0;  // 1 for the first record ever written; contiguous
  std::string prev_hash;  // 32 bytes: the previous record's hash, GenesisHash() before sequence 1
  AuditRecord record;
  std::string hash;  // 32 bytes: ChainHash(prev_hash, EncodeRecord(*this))

  bool operator==(const ChainedRecord&) const = default;
};

inline constexpr size_t kHashSize = 32;                   // SHA-256
inline constexpr size_t kHmacSize = 32;                   // HMAC-SHA256
inline constexpr uint8_t kRecordVersion = 1;              // the version byte after the magic
inline constexpr std::string_view kRecordMagic = "ALAR";  // "AirLock Audit Record"

// The prev_hash of sequence 1: 32 zero bytes.
std::string GenesisHash();

// The canonical encoding of everything but `hash` (layout in docs/audit.md). Deterministic: equal
// records give equal bytes. Does not validate; DecodeRecord is what enforces the rules.
std::string EncodeRecord(const ChainedRecord& record);

// Strict inverse of EncodeRecord; the result's `hash` is empty (nothing is recomputed).
// INVALID_ARGUMENT, naming the offending field, for a wrong magic, an unknown version, a tag out
// of order, a length that overruns the input, an unknown phase or decision, a prev_hash that is
// not 32 bytes, an HMAC that is neither empty nor 32 bytes, or trailing bytes. Safe on hostile
// input: never reads out of bounds, never allocates more than the input's size.
absl::StatusOr<ChainedRecord> DecodeRecord(std::string_view bytes);

// The form a record is kept in (the store's values, export files): EncodeRecord(record) followed
// by the 32-byte stored `hash`. AIRLOCK_CHECKs that `hash` is 32 bytes.
std::string EncodeStoredRecord(const ChainedRecord& record);
// Inverse of EncodeStoredRecord: the trailing 32 bytes become `hash` as stored (not recomputed,
// so that a verifier can compare), the rest must DecodeRecord. INVALID_ARGUMENT as DecodeRecord.
absl::StatusOr<ChainedRecord> DecodeStoredRecord(std::string_view bytes);

// SHA-256 over "airlock-audit-chain-v1" 0x00, the 4-byte big-endian length of prev_hash,
// prev_hash, then `encoded`. 32 raw bytes.
std::string ChainHash(std::string_view prev_hash, std::string_view encoded);

// A chained record with `hash` filled in. `record.time_unix_micros` is kept as given.
ChainedRecord Chain(uint64_t sequence, std::string prev_hash, AuditRecord record);

// Every field of a chained record, in one table for the views that show them all (the Admin API's
// AuditRecord message, airlockctl's JSON export schema), so that they cannot drift apart. Calls
// `visit(name, value)` once per field in order, with `name` the proto / JSON field name and
// `value` one of: uint64_t, int64_t, std::string_view (text), RecordTime (the record's time),
// RecordBytes (raw bytes with the text encoding the JSON schema uses).
struct RecordTime {
  int64_t unix_micros;
};
struct RecordBytes {
  std::string_view bytes;
  bool base64;  // base64 in JSON (large, opaque); otherwise lowercase hex (hashes, HMACs)
};
template <typename Visit>
void ForEachRecordField(const ChainedRecord& c, Visit&& visit);

// SHA-256 (32 raw bytes) and lowercase hex, shared with auth (auth/digest.h).
using ::airlock::auth::HexLower;
using ::airlock::auth::Sha256;

// The primitives of the canonical encodings in this directory (records and checkpoints). Integers
// are fixed-width big-endian; byte strings are a 4-byte big-endian length and the bytes.
namespace wire {
void AppendU8(std::string& out, uint8_t v);
void AppendU32(std::string& out, uint32_t v);
void AppendU64(std::string& out, uint64_t v);
void AppendBytes(std::string& out, std::string_view bytes);

// Reads the primitives in order from a borrowed buffer; every Read* fails (INVALID_ARGUMENT
// "<what>: ...") instead of reading past the end.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : rest_(bytes) {}
  absl::StatusOr<uint8_t> ReadU8(std::string_view what);
  absl::StatusOr<uint32_t> ReadU32(std::string_view what);
  absl::StatusOr<uint64_t> ReadU64(std::string_view what);
  absl::StatusOr<std::string> ReadBytes(std::string_view what);
  // Reads the tag byte and fails unless it is `tag`.
  absl::Status ExpectTag(uint8_t tag, std::string_view what);
  // Takes exactly `n` raw bytes.
  absl::StatusOr<std::string_view> ReadRaw(size_t n, std::string_view what);
  size_t remaining() const { return rest_.size(); }

 private:
  std::string_view rest_;
};
}  // namespace wire

template <typename Visit>
void ForEachRecordField(const ChainedRecord& c, Visit&& visit) {
  const AuditRecord& r = c.record;
  visit("sequence", uint64_t{c.sequence});
  visit("time_unix_micros", RecordTime{r.time_unix_micros});
  visit("phase", PhaseName(r.phase));
  visit("decision", DecisionName(r.decision));
  visit("request_id", std::string_view(r.request_id));
  visit("identity", std::string_view(r.identity));
  visit("subject", std::string_view(r.subject));
  visit("cert_fingerprint", std::string_view(r.cert_fingerprint));
  visit("peer", std::string_view(r.peer));
  visit("method", std::string_view(r.method));
  visit("model", std::string_view(r.model));
  visit("sampling", std::string_view(r.sampling));
  visit("prompt_tokens", uint64_t{r.prompt_tokens});
  visit("completion_tokens", uint64_t{r.completion_tokens});
  visit("stop_reason", std::string_view(r.stop_reason));
  visit("status_code", int64_t{r.status_code});
  visit("latency_micros", uint64_t{r.latency_micros});
  visit("prompt_hmac", RecordBytes{r.prompt_hmac, false});
  visit("output_hmac", RecordBytes{r.output_hmac, false});
  visit("sealed_text", RecordBytes{r.sealed_text, true});
  visit("prev_hash", RecordBytes{c.prev_hash, false});
  visit("hash", RecordBytes{c.hash, false});
}

}  // namespace airlock::audit

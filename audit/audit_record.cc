// Audit records: the canonical version-1 encoding, its strict decoder, and the chain hash.
#include "audit/audit_record.h"

#include <openssl/evp.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::audit {
namespace {

// Field tags of version 1, in the order they appear. Never renumber: add a version instead.
enum Tag : uint8_t {
  kTagSequence = 1,
  kTagPrevHash = 2,
  kTagPhase = 3,
  kTagDecision = 4,
  kTagTime = 5,
  kTagRequestId = 6,
  kTagIdentity = 7,
  kTagSubject = 8,
  kTagCertFingerprint = 9,
  kTagPeer = 10,
  kTagMethod = 11,
  kTagModel = 12,
  kTagSampling = 13,
  kTagPromptTokens = 14,
  kTagCompletionTokens = 15,
  kTagStopReason = 16,
  kTagStatusCode = 17,
  kTagLatency = 18,
  kTagPromptHmac = 19,
  kTagOutputHmac = 20,
  kTagSealedText = 21,
};

constexpr std::string_view kChainDomain{"airlock-audit-chain-v1\0", 23};

void PutU8(std::string& out, Tag tag, uint8_t v) {
  wire::AppendU8(out, tag);
  wire::AppendU8(out, v);
}
void PutU32(std::string& out, Tag tag, uint32_t v) {
  wire::AppendU8(out, tag);
  wire::AppendU32(out, v);
}
void PutU64(std::string& out, Tag tag, uint64_t v) {
  wire::AppendU8(out, tag);
  wire::AppendU64(out, v);
}
void PutBytes(std::string& out, Tag tag, std::string_view v) {
  wire::AppendU8(out, tag);
  wire::AppendBytes(out, v);
}

absl::StatusOr<uint8_t> GetU8(wire::Reader& in, Tag tag, std::string_view what) {
  AIRLOCK_RETURN_IF_ERROR(in.ExpectTag(tag, what));
  return in.ReadU8(what);
}
absl::StatusOr<uint32_t> GetU32(wire::Reader& in, Tag tag, std::string_view what) {
  AIRLOCK_RETURN_IF_ERROR(in.ExpectTag(tag, what));
  return in.ReadU32(what);
}
absl::StatusOr<uint64_t> GetU64(wire::Reader& in, Tag tag, std::string_view what) {
  AIRLOCK_RETURN_IF_ERROR(in.ExpectTag(tag, what));
  return in.ReadU64(what);
}
absl::StatusOr<std::string> GetBytes(wire::Reader& in, Tag tag, std::string_view what) {
  AIRLOCK_RETURN_IF_ERROR(in.ExpectTag(tag, what));
  return in.ReadBytes(what);
}

absl::Status Invalid(std::string_view what, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("audit record: ", ToAbsl(what), ": ", ToAbsl(problem)));
}

absl::Status CheckHmac(std::string_view what, const std::string& value) {
  if (value.empty() || value.size() == kHmacSize) return absl::OkStatus();
  return Invalid(what, absl::StrCat("must be empty or ", kHmacSize, " bytes, not ", value.size()));
}

}  // namespace

namespace wire {

void AppendU8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }

void AppendU32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void AppendU64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void AppendBytes(std::string& out, std::string_view bytes) {
  AIRLOCK_CHECK(bytes.size() <= UINT32_MAX);
  AppendU32(out, static_cast<uint32_t>(bytes.size()));
  out.append(bytes);
}

absl::StatusOr<std::string_view> Reader::ReadRaw(size_t n, std::string_view what) {
  if (rest_.size() < n) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToAbsl(what), ": needs ", n, " bytes, ", rest_.size(), " left"));
  }
  std::string_view taken = rest_.substr(0, n);
  rest_.remove_prefix(n);
  return taken;
}

absl::StatusOr<uint8_t> Reader::ReadU8(std::string_view what) {
  AIRLOCK_ASSIGN_OR_RETURN(std::string_view raw, ReadRaw(1, what));
  return static_cast<uint8_t>(raw[0]);
}

absl::StatusOr<uint32_t> Reader::ReadU32(std::string_view what) {
  AIRLOCK_ASSIGN_OR_RETURN(std::string_view raw, ReadRaw(4, what));
  uint32_t v = 0;
  for (char c : raw) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

absl::StatusOr<uint64_t> Reader::ReadU64(std::string_view what) {
  AIRLOCK_ASSIGN_OR_RETURN(std::string_view raw, ReadRaw(8, what));
  uint64_t v = 0;
  for (char c : raw) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

absl::StatusOr<std::string> Reader::ReadBytes(std::string_view what) {
  AIRLOCK_ASSIGN_OR_RETURN(uint32_t length, ReadU32(what));
  // ReadRaw checks the length against what is left before anything is allocated.
  AIRLOCK_ASSIGN_OR_RETURN(std::string_view raw, ReadRaw(length, what));
  return std::string(raw);
}

absl::Status Reader::ExpectTag(uint8_t tag, std::string_view what) {
  AIRLOCK_ASSIGN_OR_RETURN(uint8_t got, ReadU8(what));
  if (got != tag) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToAbsl(what), ": expected tag ", tag, ", found ", got));
  }
  return absl::OkStatus();
}

}  // namespace wire

std::string_view PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kBegin:
      return "begin";
    case Phase::kEnd:
      return "end";
    case Phase::kAdmin:
      return "admin";
  }
  return "unknown";
}

std::string_view DecisionName(Decision decision) {
  switch (decision) {
    case Decision::kAllowed:
      return "allowed";
    case Decision::kDeniedByRole:
      return "denied_by_role";
    case Decision::kDeniedByQuota:
      return "denied_by_quota";
    case Decision::kInvalid:
      return "invalid";
    case Decision::kUnauthenticated:
      return "unauthenticated";
  }
  return "unknown";
}

std::string GenesisHash() { return std::string(kHashSize, '\0'); }

std::string EncodeRecord(const ChainedRecord& chained) {
  const AuditRecord& r = chained.record;
  std::string out;
  out.reserve(160 + r.request_id.size() + r.identity.size() + r.subject.size() +
              r.cert_fingerprint.size() + r.peer.size() + r.method.size() + r.model.size() +
              r.sampling.size() + r.stop_reason.size() + r.prompt_hmac.size() +
              r.output_hmac.size() + r.sealed_text.size() + chained.prev_hash.size());
  out.append(kRecordMagic);
  wire::AppendU8(out, kRecordVersion);
  PutU64(out, kTagSequence, chained.sequence);
  PutBytes(out, kTagPrevHash, chained.prev_hash);
  PutU8(out, kTagPhase, static_cast<uint8_t>(r.phase));
  PutU8(out, kTagDecision, static_cast<uint8_t>(r.decision));
  PutU64(out, kTagTime, static_cast<uint64_t>(r.time_unix_micros));
  PutBytes(out, kTagRequestId, r.request_id);
  PutBytes(out, kTagIdentity, r.identity);
  PutBytes(out, kTagSubject, r.subject);
  PutBytes(out, kTagCertFingerprint, r.cert_fingerprint);
  PutBytes(out, kTagPeer, r.peer);
  PutBytes(out, kTagMethod, r.method);
  PutBytes(out, kTagModel, r.model);
  PutBytes(out, kTagSampling, r.sampling);
  PutU32(out, kTagPromptTokens, r.prompt_tokens);
  PutU32(out, kTagCompletionTokens, r.completion_tokens);
  PutBytes(out, kTagStopReason, r.stop_reason);
  PutU32(out, kTagStatusCode, static_cast<uint32_t>(r.status_code));
  PutU64(out, kTagLatency, r.latency_micros);
  PutBytes(out, kTagPromptHmac, r.prompt_hmac);
  PutBytes(out, kTagOutputHmac, r.output_hmac);
  PutBytes(out, kTagSealedText, r.sealed_text);
  return out;
}

absl::StatusOr<ChainedRecord> DecodeRecord(std::string_view bytes) {
  wire::Reader in(bytes);
  {
    auto magic = in.ReadRaw(kRecordMagic.size(), "magic");
    if (!magic.ok() || *magic != kRecordMagic) return Invalid("magic", "not an audit record");
  }
  AIRLOCK_ASSIGN_OR_RETURN(uint8_t version, in.ReadU8("version"));
  if (version != kRecordVersion) {
    return Invalid("version", absl::StrCat("unknown version ", version));
  }

  ChainedRecord chained;
  AuditRecord& r = chained.record;
  uint8_t phase = 0;
  uint8_t decision = 0;
  uint64_t time = 0;
  uint32_t status_code = 0;
  // Every field read, in order; an error names the field and is prefixed below.
  absl::Status status = [&]() -> absl::Status {
    AIRLOCK_ASSIGN_OR_RETURN(chained.sequence, GetU64(in, kTagSequence, "sequence"));
    AIRLOCK_ASSIGN_OR_RETURN(chained.prev_hash, GetBytes(in, kTagPrevHash, "prev_hash"));
    AIRLOCK_ASSIGN_OR_RETURN(phase, GetU8(in, kTagPhase, "phase"));
    AIRLOCK_ASSIGN_OR_RETURN(decision, GetU8(in, kTagDecision, "decision"));
    AIRLOCK_ASSIGN_OR_RETURN(time, GetU64(in, kTagTime, "time"));
    AIRLOCK_ASSIGN_OR_RETURN(r.request_id, GetBytes(in, kTagRequestId, "request_id"));
    AIRLOCK_ASSIGN_OR_RETURN(r.identity, GetBytes(in, kTagIdentity, "identity"));
    AIRLOCK_ASSIGN_OR_RETURN(r.subject, GetBytes(in, kTagSubject, "subject"));
    AIRLOCK_ASSIGN_OR_RETURN(r.cert_fingerprint,
                             GetBytes(in, kTagCertFingerprint, "cert_fingerprint"));
    AIRLOCK_ASSIGN_OR_RETURN(r.peer, GetBytes(in, kTagPeer, "peer"));
    AIRLOCK_ASSIGN_OR_RETURN(r.method, GetBytes(in, kTagMethod, "method"));
    AIRLOCK_ASSIGN_OR_RETURN(r.model, GetBytes(in, kTagModel, "model"));
    AIRLOCK_ASSIGN_OR_RETURN(r.sampling, GetBytes(in, kTagSampling, "sampling"));
    AIRLOCK_ASSIGN_OR_RETURN(r.prompt_tokens, GetU32(in, kTagPromptTokens, "prompt_tokens"));
    AIRLOCK_ASSIGN_OR_RETURN(r.completion_tokens,
                             GetU32(in, kTagCompletionTokens, "completion_tokens"));
    AIRLOCK_ASSIGN_OR_RETURN(r.stop_reason, GetBytes(in, kTagStopReason, "stop_reason"));
    AIRLOCK_ASSIGN_OR_RETURN(status_code, GetU32(in, kTagStatusCode, "status_code"));
    AIRLOCK_ASSIGN_OR_RETURN(r.latency_micros, GetU64(in, kTagLatency, "latency_micros"));
    AIRLOCK_ASSIGN_OR_RETURN(r.prompt_hmac, GetBytes(in, kTagPromptHmac, "prompt_hmac"));
    AIRLOCK_ASSIGN_OR_RETURN(r.output_hmac, GetBytes(in, kTagOutputHmac, "output_hmac"));
    AIRLOCK_ASSIGN_OR_RETURN(r.sealed_text, GetBytes(in, kTagSealedText, "sealed_text"));
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("audit record: ", status.message()));
  }

  if (in.remaining() != 0) {
    return Invalid("end", absl::StrCat(in.remaining(), " trailing bytes"));
  }
  if (chained.prev_hash.size() != kHashSize) {
    return Invalid("prev_hash",
                   absl::StrCat("must be ", kHashSize, " bytes, not ", chained.prev_hash.size()));
  }
  if (phase < static_cast<uint8_t>(Phase::kBegin) || phase > static_cast<uint8_t>(Phase::kAdmin)) {
    return Invalid("phase", absl::StrCat("unknown value ", phase));
  }
  if (decision < static_cast<uint8_t>(Decision::kAllowed) ||
      decision > static_cast<uint8_t>(Decision::kUnauthenticated)) {
    return Invalid("decision", absl::StrCat("unknown value ", decision));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckHmac("prompt_hmac", r.prompt_hmac));
  AIRLOCK_RETURN_IF_ERROR(CheckHmac("output_hmac", r.output_hmac));
  r.phase = static_cast<Phase>(phase);
  r.decision = static_cast<Decision>(decision);
  r.time_unix_micros = static_cast<int64_t>(time);
  r.status_code = static_cast<int32_t>(status_code);
  return chained;
}

std::string EncodeStoredRecord(const ChainedRecord& record) {
  AIRLOCK_CHECK(record.hash.size() == kHashSize);
  std::string out = EncodeRecord(record);
  out.append(record.hash);
  return out;
}

absl::StatusOr<ChainedRecord> DecodeStoredRecord(std::string_view bytes) {
  if (bytes.size() < kHashSize) {
    return Invalid("hash", absl::StrCat("stored record of ", bytes.size(),
                                        " bytes is too short to hold its hash"));
  }
  AIRLOCK_ASSIGN_OR_RETURN(ChainedRecord record,
                           DecodeRecord(bytes.substr(0, bytes.size() - kHashSize)));
  record.hash = std::string(bytes.substr(bytes.size() - kHashSize));
  return record;
}

std::string ChainHash(std::string_view prev_hash, std::string_view encoded) {
  std::string prefix(kChainDomain);
  wire::AppendBytes(prefix, prev_hash);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  AIRLOCK_CHECK(ctx != nullptr);
  AIRLOCK_CHECK(EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1);
  AIRLOCK_CHECK(EVP_DigestUpdate(ctx.get(), prefix.data(), prefix.size()) == 1);
  AIRLOCK_CHECK(EVP_DigestUpdate(ctx.get(), encoded.data(), encoded.size()) == 1);
  AIRLOCK_CHECK(EVP_DigestFinal_ex(ctx.get(), digest, &size) == 1);
  return std::string(reinterpret_cast<const char*>(digest), size);
}

ChainedRecord Chain(uint64_t sequence, std::string prev_hash, AuditRecord record) {
  ChainedRecord chained;
  chained.sequence = sequence;
  chained.prev_hash = std::move(prev_hash);
  chained.record = std::move(record);
  chained.hash = ChainHash(chained.prev_hash, EncodeRecord(chained));
  return chained;
}

}  // namespace airlock::audit

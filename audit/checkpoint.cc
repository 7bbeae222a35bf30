// Checkpoints: the version-1 encoding, the signed data, and signing/verification (auth/ed25519).
#include "audit/checkpoint.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "audit/audit_record.h"
#include "inference/base/status.h"

namespace airlock::audit {
namespace {

constexpr std::string_view kSignDomain{"airlock-audit-checkpoint-v1\0", 28};

enum Tag : uint8_t {
  kTagSequence = 1,
  kTagChainHash = 2,
  kTagTime = 3,
  kTagKeyId = 4,
  kTagSignature = 5,
};

absl::Status Invalid(std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("checkpoint: ", ToAbsl(problem)));
}

}  // namespace

std::string CheckpointSignedData(const Checkpoint& checkpoint) {
  std::string out(kSignDomain);
  wire::AppendU64(out, checkpoint.sequence);
  wire::AppendBytes(out, checkpoint.chain_hash);
  wire::AppendU64(out, static_cast<uint64_t>(checkpoint.time_unix_micros));
  wire::AppendBytes(out, checkpoint.key_id);
  return out;
}

std::string EncodeCheckpoint(const Checkpoint& checkpoint) {
  std::string out(kCheckpointMagic);
  wire::AppendU8(out, kCheckpointVersion);
  wire::AppendU8(out, kTagSequence);
  wire::AppendU64(out, checkpoint.sequence);
  wire::AppendU8(out, kTagChainHash);
  wire::AppendBytes(out, checkpoint.chain_hash);
  wire::AppendU8(out, kTagTime);
  wire::AppendU64(out, static_cast<uint64_t>(checkpoint.time_unix_micros));
  wire::AppendU8(out, kTagKeyId);
  wire::AppendBytes(out, checkpoint.key_id);
  wire::AppendU8(out, kTagSignature);
  wire::AppendBytes(out, checkpoint.signature);
  return out;
}

absl::StatusOr<Checkpoint> DecodeCheckpoint(std::string_view bytes) {
  wire::Reader in(bytes);
  {
    auto magic = in.ReadRaw(kCheckpointMagic.size(), "magic");
    if (!magic.ok() || *magic != kCheckpointMagic) return Invalid("not a checkpoint (magic)");
  }
  auto version = in.ReadU8("version");
  if (!version.ok()) return Invalid(std::string(version.status().message()));
  if (*version != kCheckpointVersion) return Invalid(absl::StrCat("unknown version ", *version));

  Checkpoint checkpoint;
  uint64_t time = 0;
  absl::Status status = [&]() -> absl::Status {
    AIRLOCK_RETURN_IF_ERROR(in.ExpectTag(kTagSequence, "sequence"));
    AIRLOCK_ASSIGN_OR_RETURN(checkpoint.sequence, in.ReadU64("sequence"));
    AIRLOCK_RETURN_IF_ERROR(in.ExpectTag(kTagChainHash, "chain_hash"));
    AIRLOCK_ASSIGN_OR_RETURN(checkpoint.chain_hash, in.ReadBytes("chain_hash"));
    AIRLOCK_RETURN_IF_ERROR(in.ExpectTag(kTagTime, "time"));
    AIRLOCK_ASSIGN_OR_RETURN(time, in.ReadU64("time"));
    AIRLOCK_RETURN_IF_ERROR(in.ExpectTag(kTagKeyId, "key_id"));
    AIRLOCK_ASSIGN_OR_RETURN(checkpoint.key_id, in.ReadBytes("key_id"));
    AIRLOCK_RETURN_IF_ERROR(in.ExpectTag(kTagSignature, "signature"));
    AIRLOCK_ASSIGN_OR_RETURN(checkpoint.signature, in.ReadBytes("signature"));
    return absl::OkStatus();
  }();
  if (!status.ok()) return Invalid(std::string(status.message()));
  if (in.remaining() != 0) return Invalid(absl::StrCat(in.remaining(), " trailing bytes"));
  if (checkpoint.chain_hash.size() != kHashSize) {
    return Invalid(absl::StrCat("chain_hash must be ", kHashSize, " bytes, not ",
                                checkpoint.chain_hash.size()));
  }
  if (checkpoint.key_id.size() != kKeyIdSize) {
    return Invalid(
        absl::StrCat("key_id must be ", kKeyIdSize, " bytes, not ", checkpoint.key_id.size()));
  }
  if (checkpoint.signature.size() != kSignatureSize) {
    return Invalid(absl::StrCat("signature must be ", kSignatureSize, " bytes, not ",
                                checkpoint.signature.size()));
  }
  checkpoint.time_unix_micros = static_cast<int64_t>(time);
  return checkpoint;
}

absl::StatusOr<CheckpointSigner> CheckpointSigner::FromPrivateKeyPem(std::string_view pem) {
  AIRLOCK_ASSIGN_OR_RETURN(auth::Ed25519PrivateKey key, auth::Ed25519PrivateKey::FromPem(pem, "the audit signing key"));
  return CheckpointSigner(std::move(key));
}

Checkpoint CheckpointSigner::Sign(uint64_t sequence, std::string chain_hash, int64_t time_unix_micros) const {
  Checkpoint checkpoint;
  checkpoint.sequence = sequence;
  checkpoint.chain_hash = std::move(chain_hash);
  checkpoint.time_unix_micros = time_unix_micros;
  checkpoint.key_id = key_id_;
  checkpoint.signature = key_.Sign(CheckpointSignedData(checkpoint));
  return checkpoint;
}

absl::StatusOr<CheckpointVerifier> CheckpointVerifier::FromPublicKeyPem(std::string_view pem) {
  AIRLOCK_ASSIGN_OR_RETURN(auth::Ed25519PublicKey key, auth::Ed25519PublicKey::FromPem(pem, "the audit public key"));
  return CheckpointVerifier(std::move(key));
}

absl::Status CheckpointVerifier::Verify(const Checkpoint& checkpoint) const {
  if (checkpoint.key_id != key_id_) {
    return absl::DataLossError(absl::StrCat("checkpoint ", checkpoint.sequence,
                                            ": signed by key id \"", checkpoint.key_id,
                                            "\", expected ", key_id_));
  }
  if (checkpoint.chain_hash.size() != kHashSize || checkpoint.signature.size() != kSignatureSize) {
    return absl::DataLossError(
        absl::StrCat("checkpoint ", checkpoint.sequence, ": malformed hash or signature"));
  }
  if (!key_.Verify(CheckpointSignedData(checkpoint), checkpoint.signature)) {
    return absl::DataLossError(
        absl::StrCat("checkpoint ", checkpoint.sequence, ": signature does not verify"));
  }
  return absl::OkStatus();
}

absl::Status VerifyCheckpoint(const Checkpoint& checkpoint, std::string_view public_key_pem) {
  AIRLOCK_ASSIGN_OR_RETURN(CheckpointVerifier verifier,
                           CheckpointVerifier::FromPublicKeyPem(public_key_pem));
  return verifier.Verify(checkpoint);
}

}  // namespace airlock::audit

// Ed25519-signed checkpoints over the audit chain head, their canonical encoding, and verification.
//
// A checkpoint says "the record with this sequence number has this chain hash", signed with the
// installation's audit key; an auditor needs only the public key PEM to check it offline. The
// signature input and the encoding are documented in docs/audit.md ("Checkpoints").
//
// Thread-safety: CheckpointSigner and CheckpointVerifier are immutable after construction; Sign
// and Verify may be called from many threads at once. Free functions have no shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "auth/ed25519.h"

namespace airlock::audit {

struct Checkpoint {
  uint64_t sequence = 0;         // the record this checkpoint covers (0: the empty chain)
  std::string chain_hash;        // 32 bytes: that record's hash
  int64_t time_unix_micros = 0;  // when it was signed
  std::string key_id;            // auth::Ed25519KeyId of the signing key, 16 lowercase hex characters
  std::string signature;         // 64-byte Ed25519 signature over CheckpointSignedData()

  bool operator==(const Checkpoint&) const = default;
};

inline constexpr uint8_t kCheckpointVersion = 1;
inline constexpr std::string_view kCheckpointMagic = "ALCP";  // "AirLock CheckPoint"
inline constexpr size_t kSignatureSize = auth::kEd25519SignatureSize;
inline constexpr size_t kKeyIdSize = 16;  // hex characters (auth::Ed25519KeyId)

// The exact bytes that are signed: "airlock-audit-checkpoint-v1" 0x00, sequence (8 bytes BE),
// chain_hash (length-prefixed), time_unix_micros (8 bytes BE, two's complement), key_id
// (length-prefixed). The signature field is not part of it.
std::string CheckpointSignedData(const Checkpoint& checkpoint);

// Canonical encoding: magic, version, then each field as tag + value (docs/audit.md).
std::string EncodeCheckpoint(const Checkpoint& checkpoint);
// Strict inverse: INVALID_ARGUMENT for a wrong magic or version, a tag out of order, a length
// that overruns, a chain_hash that is not 32 bytes, a key_id that is not 16 bytes, a signature
// that is not 64 bytes, or trailing bytes. Safe on hostile input. Does not verify the signature.
absl::StatusOr<Checkpoint> DecodeCheckpoint(std::string_view bytes);

// A fresh Ed25519 private key as PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"). INTERNAL when
// OpenSSL fails.
inline absl::StatusOr<std::string> GenerateSigningKeyPem() { return auth::GenerateEd25519KeyPem(); }

// Signs checkpoints with the installation's audit key.
class CheckpointSigner {
 public:
  // INVALID_ARGUMENT when `pem` is not an unencrypted Ed25519 private key PEM.
  static absl::StatusOr<CheckpointSigner> FromPrivateKeyPem(std::string_view pem);

  // A checkpoint for `sequence` whose chain hash is `chain_hash`, signed now with this key.
  // Ed25519 signing does not fail on a valid key; an OpenSSL failure (allocation) aborts.
  Checkpoint Sign(uint64_t sequence, std::string chain_hash, int64_t time_unix_micros) const;

  // The public key as SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----"): all an auditor
  // needs.
  const std::string& PublicKeyPem() const { return key_.public_key_pem(); }
  const std::string& key_id() const { return key_id_; }

 private:
  explicit CheckpointSigner(auth::Ed25519PrivateKey key) : key_(std::move(key)), key_id_(key_.key_id()) {}

  auth::Ed25519PrivateKey key_;
  std::string key_id_;
};

// Verifies checkpoints against one public key (parsed once, for verifying many).
class CheckpointVerifier {
 public:
  // INVALID_ARGUMENT when `pem` is not an Ed25519 public key PEM.
  static absl::StatusOr<CheckpointVerifier> FromPublicKeyPem(std::string_view pem);

  // OK when the checkpoint's key_id is this key's and its signature verifies over
  // CheckpointSignedData. DATA_LOSS ("checkpoint N: ...") otherwise.
  absl::Status Verify(const Checkpoint& checkpoint) const;
  const std::string& key_id() const { return key_id_; }

 private:
  explicit CheckpointVerifier(auth::Ed25519PublicKey key) : key_(std::move(key)), key_id_(key_.key_id()) {}

  auth::Ed25519PublicKey key_;
  std::string key_id_;
};

// One-shot CheckpointVerifier::FromPublicKeyPem(public_key_pem) then Verify(checkpoint).
absl::Status VerifyCheckpoint(const Checkpoint& checkpoint, std::string_view public_key_pem);

}  // namespace airlock::audit

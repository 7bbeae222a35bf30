// Checkpoints: the version-1 encoding, the signed data, and Ed25519 signing/verification (EVP).
#include "audit/checkpoint.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "audit/audit_record.h"
#include "inference/base/free_deleter.h"
#include "inference/base/status.h"

namespace airlock::audit {
namespace {

using BioPtr = std::unique_ptr<BIO, FreeDeleter<BIO_free_all>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, FreeDeleter<EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, FreeDeleter<EVP_PKEY_CTX_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, FreeDeleter<EVP_MD_CTX_free>>;

constexpr std::string_view kSignDomain{"airlock-audit-checkpoint-v1\0", 28};

enum Tag : uint8_t {
  kTagSequence = 1,
  kTagChainHash = 2,
  kTagTime = 3,
  kTagKeyId = 4,
  kTagSignature = 5,
};

// Drains OpenSSL's per-thread error queue into "; "-joined text ("" when empty).
std::string DrainErrors() {
  std::string message;
  unsigned long code;  // NOLINT(runtime/int): OpenSSL's type
  while ((code = ERR_get_error()) != 0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    absl::StrAppend(&message, message.empty() ? "" : "; ", buffer);
  }
  return message;
}

absl::Status OpenSslError(std::string_view what) {
  const std::string errors = DrainErrors();
  if (errors.empty()) return absl::InternalError(ToAbsl(what));
  return absl::InternalError(absl::StrCat(ToAbsl(what), ": ", errors));
}

int NoPassword(char* /*buffer*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) { return -1; }

absl::StatusOr<std::string> BioText(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);  // NOLINT(runtime/int): OpenSSL's type
  if (size < 0) return OpenSslError("BIO_get_mem_data");
  return std::string(data, static_cast<size_t>(size));
}

absl::StatusOr<std::string> RawPublicKey(EVP_PKEY* key) {
  unsigned char raw[32];
  size_t size = sizeof(raw);
  if (EVP_PKEY_get_raw_public_key(key, raw, &size) != 1 || size != sizeof(raw)) {
    return OpenSslError("cannot read the Ed25519 public key");
  }
  return std::string(reinterpret_cast<const char*>(raw), size);
}

absl::StatusOr<std::string> PublicKeyPemOf(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) {
    return OpenSslError("cannot write the public key PEM");
  }
  return BioText(bio.get());
}

absl::Status CheckEd25519(EVP_PKEY* key, std::string_view what) {
  if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToAbsl(what), " is not an Ed25519 key (the audit log signs with Ed25519)"));
  }
  return absl::OkStatus();
}

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

absl::StatusOr<std::string> GenerateSigningKeyPem() {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
  EVP_PKEY* raw_key = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw_key) != 1) {
    return OpenSslError("cannot generate an Ed25519 key");
  }
  PkeyPtr key(raw_key);
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("cannot write the private key PEM");
  }
  return BioText(bio.get());
}

std::string KeyIdOfRawPublicKey(std::string_view raw_public_key) {
  return HexLower(Sha256(raw_public_key)).substr(0, kKeyIdSize);
}

absl::StatusOr<CheckpointSigner> CheckpointSigner::FromPrivateKeyPem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassword, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot parse the audit signing key (an unencrypted private key PEM): ", DrainErrors()));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckEd25519(key.get(), "the audit signing key"));
  AIRLOCK_ASSIGN_OR_RETURN(std::string raw_public, RawPublicKey(key.get()));
  AIRLOCK_ASSIGN_OR_RETURN(std::string public_pem, PublicKeyPemOf(key.get()));
  return CheckpointSigner(std::shared_ptr<EVP_PKEY>(key.release(), EVP_PKEY_free),
                          std::move(public_pem), KeyIdOfRawPublicKey(raw_public));
}

Checkpoint CheckpointSigner::Sign(uint64_t sequence, std::string chain_hash,
                                  int64_t time_unix_micros) const {
  Checkpoint checkpoint;
  checkpoint.sequence = sequence;
  checkpoint.chain_hash = std::move(chain_hash);
  checkpoint.time_unix_micros = time_unix_micros;
  checkpoint.key_id = key_id_;
  const std::string data = CheckpointSignedData(checkpoint);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  unsigned char signature[kSignatureSize];
  size_t size = sizeof(signature);
  // Ed25519 is one-shot (no digest): EVP_DigestSign with a null md.
  const bool signed_ok =
      ctx && EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) == 1 &&
      EVP_DigestSign(ctx.get(), signature, &size,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  if (!signed_ok)
    std::fprintf(stderr, "audit checkpoint signing failed: %s\n", DrainErrors().c_str());
  AIRLOCK_CHECK(signed_ok && size == kSignatureSize);
  checkpoint.signature.assign(reinterpret_cast<const char*>(signature), size);
  return checkpoint;
}

absl::StatusOr<CheckpointVerifier> CheckpointVerifier::FromPublicKeyPem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, NoPassword, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot parse the audit public key (a PUBLIC KEY PEM): ", DrainErrors()));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckEd25519(key.get(), "the audit public key"));
  AIRLOCK_ASSIGN_OR_RETURN(std::string raw_public, RawPublicKey(key.get()));
  return CheckpointVerifier(std::shared_ptr<EVP_PKEY>(key.release(), EVP_PKEY_free),
                            KeyIdOfRawPublicKey(raw_public));
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
  const std::string data = CheckpointSignedData(checkpoint);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1) {
    return OpenSslError("EVP_DigestVerifyInit");
  }
  const int verified = EVP_DigestVerify(
      ctx.get(), reinterpret_cast<const unsigned char*>(checkpoint.signature.data()),
      checkpoint.signature.size(), reinterpret_cast<const unsigned char*>(data.data()),
      data.size());
  ERR_clear_error();
  if (verified != 1) {
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

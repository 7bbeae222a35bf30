// Ed25519 keys: generate, sign, verify (OpenSSL EVP). Used by the audit log's checkpoints and by
// signed model bundles; each prefixes what it signs with a domain string of its own, so that a
// signature made for one can never be taken for the other.
//
// Thread-safety: keys are immutable after construction and may be used from any thread.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace airlock::auth {

inline constexpr size_t kEd25519SignatureSize = 64;
inline constexpr size_t kEd25519PublicKeySize = 32;

// A fresh Ed25519 private key as unencrypted PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----").
// INTERNAL when OpenSSL fails.
absl::StatusOr<std::string> GenerateEd25519KeyPem();

// The first 16 lowercase hex characters of SHA-256 over a raw 32-byte public key: a short,
// stable name for a key in messages, manifests and checkpoints.
std::string Ed25519KeyId(std::string_view raw_public_key);

class Ed25519PrivateKey {
 public:
  // INVALID_ARGUMENT "cannot parse <what> (an unencrypted private key PEM): ..." or "<what> is not
  // an Ed25519 key".
  static absl::StatusOr<Ed25519PrivateKey> FromPem(std::string_view pem, std::string_view what);

  // The 64-byte signature of `data`. Ed25519 signing does not fail on a valid key; an OpenSSL
  // failure (allocation) aborts.
  std::string Sign(std::string_view data) const;

  // SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----"), the raw key and its id.
  const std::string& public_key_pem() const { return public_key_pem_; }
  const std::string& raw_public_key() const { return raw_public_key_; }
  std::string key_id() const { return Ed25519KeyId(raw_public_key_); }

 private:
  Ed25519PrivateKey(std::shared_ptr<EVP_PKEY> key, std::string public_key_pem, std::string raw_public_key)
      : key_(std::move(key)), public_key_pem_(std::move(public_key_pem)), raw_public_key_(std::move(raw_public_key)) {}

  std::shared_ptr<EVP_PKEY> key_;
  std::string public_key_pem_;
  std::string raw_public_key_;
};

class Ed25519PublicKey {
 public:
  // INVALID_ARGUMENT "cannot parse <what> (a PUBLIC KEY PEM): ..." or "<what> is not an Ed25519 key".
  static absl::StatusOr<Ed25519PublicKey> FromPem(std::string_view pem, std::string_view what);

  // Whether `signature` is this key's signature of `data` (false for a malformed signature).
  bool Verify(std::string_view data, std::string_view signature) const;

  const std::string& raw() const { return raw_; }
  std::string key_id() const { return Ed25519KeyId(raw_); }

 private:
  Ed25519PublicKey(std::shared_ptr<EVP_PKEY> key, std::string raw) : key_(std::move(key)), raw_(std::move(raw)) {}

  std::shared_ptr<EVP_PKEY> key_;
  std::string raw_;
};

}  // namespace airlock::auth

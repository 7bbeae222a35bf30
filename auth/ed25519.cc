// Ed25519 through OpenSSL's EVP interface (one-shot DigestSign/DigestVerify with no digest).
#include "auth/ed25519.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "auth/digest.h"
#include "auth/openssl_util.h"
#include "inference/base/status.h"

namespace airlock::auth {
namespace {

using ossl::BioPtr;
using ossl::PkeyPtr;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, FreeDeleter<EVP_PKEY_CTX_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, FreeDeleter<EVP_MD_CTX_free>>;

absl::StatusOr<std::string> RawPublicKey(EVP_PKEY* key) {
  unsigned char raw[kEd25519PublicKeySize];
  size_t size = sizeof(raw);
  if (EVP_PKEY_get_raw_public_key(key, raw, &size) != 1 || size != sizeof(raw)) {
    return ossl::OpenSslError("cannot read the Ed25519 public key");
  }
  return std::string(reinterpret_cast<const char*>(raw), size);
}

absl::Status CheckEd25519(EVP_PKEY* key, std::string_view what) {
  if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(absl::StrCat(ToAbsl(what), " is not an Ed25519 key"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> GenerateEd25519KeyPem() {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
  EVP_PKEY* raw_key = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw_key) != 1) {
    return ossl::OpenSslError("cannot generate an Ed25519 key");
  }
  PkeyPtr key(raw_key);
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return ossl::OpenSslError("cannot write the private key PEM");
  }
  return ossl::BioContents(bio.get());
}

std::string Ed25519KeyId(std::string_view raw_public_key) { return HexLower(Sha256(raw_public_key)).substr(0, 16); }

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::FromPem(std::string_view pem, std::string_view what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return ossl::OpenSslError("BIO_new_mem_buf");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, ossl::NoPassword, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(absl::StrCat("cannot parse ", ToAbsl(what),
                                                   " (an unencrypted private key PEM): ", ossl::OpenSslErrors()));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckEd25519(key.get(), what));
  AIRLOCK_ASSIGN_OR_RETURN(std::string raw_public, RawPublicKey(key.get()));
  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_PUBKEY(out.get(), key.get()) != 1) {
    return ossl::OpenSslError("cannot write the public key PEM");
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::string public_pem, ossl::BioContents(out.get()));
  return Ed25519PrivateKey(std::shared_ptr<EVP_PKEY>(key.release(), EVP_PKEY_free), std::move(public_pem),
                           std::move(raw_public));
}

std::string Ed25519PrivateKey::Sign(std::string_view data) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  unsigned char signature[kEd25519SignatureSize];
  size_t size = sizeof(signature);
  const bool signed_ok = ctx && EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) == 1 &&
                         EVP_DigestSign(ctx.get(), signature, &size, reinterpret_cast<const unsigned char*>(data.data()),
                                        data.size()) == 1;
  if (!signed_ok) std::fprintf(stderr, "Ed25519 signing failed: %s\n", ossl::OpenSslErrors().c_str());
  AIRLOCK_CHECK(signed_ok && size == kEd25519SignatureSize);
  return std::string(reinterpret_cast<const char*>(signature), size);
}

absl::StatusOr<Ed25519PublicKey> Ed25519PublicKey::FromPem(std::string_view pem, std::string_view what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return ossl::OpenSslError("BIO_new_mem_buf");
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, ossl::NoPassword, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot parse ", ToAbsl(what), " (a PUBLIC KEY PEM): ", ossl::OpenSslErrors()));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckEd25519(key.get(), what));
  AIRLOCK_ASSIGN_OR_RETURN(std::string raw, RawPublicKey(key.get()));
  return Ed25519PublicKey(std::shared_ptr<EVP_PKEY>(key.release(), EVP_PKEY_free), std::move(raw));
}

bool Ed25519PublicKey::Verify(std::string_view data, std::string_view signature) const {
  if (signature.size() != kEd25519SignatureSize) return false;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1) {
    ERR_clear_error();
    return false;
  }
  const int verified =
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                       reinterpret_cast<const unsigned char*>(data.data()), data.size());
  ERR_clear_error();
  return verified == 1;
}

}  // namespace airlock::auth

// Privacy of the audit log: HMAC-SHA256 of prompt/output text and AES-256-GCM sealing (EVP).
#include "audit/privacy.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <climits>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::audit {
namespace {

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

const unsigned char* Bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

absl::Status CheckKey(std::string_view key32) {
  if (key32.size() != kSealKeySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("the audit seal key must be ", kSealKeySize, " bytes, not ", key32.size()));
  }
  return absl::OkStatus();
}

absl::Status CheckLength(std::string_view what, size_t size) {
  if (size > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(ToAbsl(what), " is too long to seal"));
  }
  return absl::OkStatus();
}

// The authenticated data: the version byte, then the caller's associated data.
std::string AuthenticatedData(std::string_view associated_data) {
  std::string aad(1, static_cast<char>(kSealVersion));
  aad.append(associated_data);
  return aad;
}

absl::Status CipherError(std::string_view what) {
  ERR_clear_error();
  return absl::InternalError(absl::StrCat("AES-256-GCM: ", ToAbsl(what), " failed"));
}

}  // namespace

std::string HmacSha256(std::string_view secret, std::string_view text) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  // HMAC() takes the key length as int; secrets are small, so this cannot overflow in practice.
  AIRLOCK_CHECK(secret.size() <= static_cast<size_t>(INT_MAX));
  static const unsigned char kEmpty = 0;
  const unsigned char* key = secret.empty() ? &kEmpty : Bytes(secret);
  AIRLOCK_CHECK(HMAC(EVP_sha256(), key, static_cast<int>(secret.size()), Bytes(text), text.size(),
                     mac, &size) != nullptr);
  return std::string(reinterpret_cast<const char*>(mac), size);
}

absl::StatusOr<std::string> GenerateSecret() {
  std::string secret(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()),
                 static_cast<int>(secret.size())) != 1) {
    ERR_clear_error();
    return absl::InternalError("RAND_bytes failed");
  }
  return secret;
}

absl::StatusOr<std::string> Seal(std::string_view key32, std::string_view plaintext,
                                 std::string_view associated_data) {
  AIRLOCK_RETURN_IF_ERROR(CheckKey(key32));
  AIRLOCK_RETURN_IF_ERROR(CheckLength("plaintext", plaintext.size() + kSealOverhead));
  AIRLOCK_RETURN_IF_ERROR(CheckLength("associated data", associated_data.size() + 1));
  const std::string aad = AuthenticatedData(associated_data);

  std::string out(kSealOverhead + plaintext.size(), '\0');
  auto* base = reinterpret_cast<unsigned char*>(out.data());
  base[0] = kSealVersion;
  unsigned char* nonce = base + 1;
  unsigned char* ciphertext = nonce + kSealNonceSize;
  unsigned char* tag = ciphertext + plaintext.size();
  if (RAND_bytes(nonce, static_cast<int>(kSealNonceSize)) != 1) return CipherError("RAND_bytes");

  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int length = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kSealNonceSize, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, Bytes(key32), nonce) != 1) {
    return CipherError("init");
  }
  if (EVP_EncryptUpdate(ctx.get(), nullptr, &length, Bytes(aad), static_cast<int>(aad.size())) !=
      1) {
    return CipherError("associated data");
  }
  if (!plaintext.empty() && EVP_EncryptUpdate(ctx.get(), ciphertext, &length, Bytes(plaintext),
                                              static_cast<int>(plaintext.size())) != 1) {
    return CipherError("encrypt");
  }
  int final_length = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), ciphertext + plaintext.size(), &final_length) != 1 ||
      final_length != 0 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kSealTagSize, tag) != 1) {
    return CipherError("finish");
  }
  return out;
}

absl::StatusOr<std::string> Open(std::string_view key32, std::string_view sealed,
                                 std::string_view associated_data) {
  AIRLOCK_RETURN_IF_ERROR(CheckKey(key32));
  if (sealed.size() < kSealOverhead) {
    return absl::InvalidArgumentError(absl::StrCat("sealed text of ", sealed.size(),
                                                   " bytes is shorter than its ", kSealOverhead,
                                                   "-byte framing"));
  }
  if (static_cast<uint8_t>(sealed[0]) != kSealVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("sealed text has unknown version ", static_cast<uint8_t>(sealed[0])));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckLength("sealed text", sealed.size()));
  AIRLOCK_RETURN_IF_ERROR(CheckLength("associated data", associated_data.size() + 1));
  const std::string aad = AuthenticatedData(associated_data);
  const std::string_view nonce = sealed.substr(1, kSealNonceSize);
  const std::string_view ciphertext =
      sealed.substr(1 + kSealNonceSize, sealed.size() - kSealOverhead);
  // The tag is copied because EVP_CTRL_GCM_SET_TAG takes a non-const pointer.
  std::string tag(sealed.substr(sealed.size() - kSealTagSize));

  std::string plaintext(ciphertext.size(), '\0');
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int length = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kSealNonceSize, nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, Bytes(key32), Bytes(nonce)) != 1) {
    return CipherError("init");
  }
  if (EVP_DecryptUpdate(ctx.get(), nullptr, &length, Bytes(aad), static_cast<int>(aad.size())) !=
      1) {
    return CipherError("associated data");
  }
  if (!ciphertext.empty() && EVP_DecryptUpdate(ctx.get(), out, &length, Bytes(ciphertext),
                                               static_cast<int>(ciphertext.size())) != 1) {
    return CipherError("decrypt");
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kSealTagSize, tag.data()) != 1) {
    return CipherError("set tag");
  }
  int final_length = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), out + ciphertext.size(), &final_length) != 1) {
    ERR_clear_error();
    return absl::DataLossError("sealed text does not authenticate");
  }
  return plaintext;
}

}  // namespace airlock::audit

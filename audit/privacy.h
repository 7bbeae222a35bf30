// Keeping prompt and output text out of the audit log: keyed hashes, and opt-in sealed text.
//
// By default the log holds HmacSha256(installation secret, text), so that a known document can be
// matched against the log later without the log revealing it. A site that opts in to storing the
// text stores Seal(key, text, request_id): AES-256-GCM under a 32-byte key it provides. The sealed
// layout is documented in docs/audit.md ("Privacy").
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace airlock::audit {

inline constexpr size_t kSealKeySize = 32;    // AES-256
inline constexpr size_t kSealNonceSize = 12;  // 96-bit GCM nonce
inline constexpr size_t kSealTagSize = 16;    // GCM tag
inline constexpr uint8_t kSealVersion = 1;
// version byte + nonce + tag: the size of a sealed empty plaintext.
inline constexpr size_t kSealOverhead = 1 + kSealNonceSize + kSealTagSize;

// HMAC-SHA256(key = secret, message = text): 32 raw bytes. Any secret length is accepted (an
// installation secret should be 32 random bytes).
std::string HmacSha256(std::string_view secret, std::string_view text);

// 32 random bytes from OpenSSL's CSPRNG, for a seal key or an HMAC secret. INTERNAL on failure.
absl::StatusOr<std::string> GenerateSecret();

// Seals `plaintext` under `key32` with AES-256-GCM and a fresh random 96-bit nonce. Result:
// version byte (1) || nonce (12) || ciphertext (len(plaintext)) || tag (16). The authenticated
// data is the version byte followed by `associated_data` (the request id), so a sealed text moved
// to another record does not open. INVALID_ARGUMENT when key32 is not 32 bytes; INTERNAL when
// OpenSSL fails.
absl::StatusOr<std::string> Seal(std::string_view key32, std::string_view plaintext,
                                 std::string_view associated_data);

// Inverse of Seal. INVALID_ARGUMENT for a key that is not 32 bytes, a sealed text shorter than
// kSealOverhead or with an unknown version; DATA_LOSS "sealed text does not authenticate" when
// the key, the associated data, or any byte is wrong.
absl::StatusOr<std::string> Open(std::string_view key32, std::string_view sealed,
                                 std::string_view associated_data);

}  // namespace airlock::audit

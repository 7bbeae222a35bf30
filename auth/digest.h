// SHA-256 and hex text: key ids, fingerprints, manifest and audit hashes.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace airlock::auth {

// SHA-256 of `data`: 32 raw bytes.
std::string Sha256(std::string_view data);
std::string Sha256(std::span<const uint8_t> data);

// Lowercase hex of `bytes`, two digits per byte.
std::string HexLower(std::string_view bytes);
// The bytes of a hex text (either case); nullopt when it has an odd length or a non-hex digit.
std::optional<std::string> HexDecode(std::string_view hex);

}  // namespace airlock::auth

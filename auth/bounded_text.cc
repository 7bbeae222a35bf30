// BoundedForRecord: cut at a UTF-8 boundary, then length and digest of the whole value.
#include "auth/bounded_text.h"

#include "absl/strings/str_cat.h"
#include "auth/digest.h"

namespace airlock::auth {

std::string BoundedForRecord(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t cut = max_bytes;
  // text[cut] is the first byte left out; while it continues a character, that character would be
  // split. A UTF-8 character has at most three continuation bytes; past that the text is not
  // UTF-8 and the plain byte cut stands.
  for (int back = 0; back < 3 && cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80; ++back) --cut;
  if (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) cut = max_bytes;
  const std::string digest = HexLower(Sha256(text)).substr(0, 16);
  return absl::StrCat(absl::string_view(text.data(), cut), "...[", text.size(), " bytes, sha256:", digest, "]");
}

}  // namespace airlock::auth

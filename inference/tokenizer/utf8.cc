// UTF-8 decoding, validation and the GPT-2 byte-level table.
#include "inference/tokenizer/utf8.h"

#include <array>

namespace airlock::inference::utf8 {
namespace {

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// The byte -> code point table of GPT-2's bytes_to_unicode(): printable Latin-1 bytes keep their
// value, the remaining 68 bytes are moved, in byte order, to U+0100 and up.
struct ByteTable {
  std::array<uint32_t, 256> code_point{};
  std::array<std::string, 256> spelling;
  std::array<int16_t, 324> byte_of{};  // indexed by code point (< 256 + 68)

  ByteTable() {
    byte_of.fill(-1);
    uint32_t moved = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : 256 + moved++;
      code_point[b] = cp;
      AppendCodePoint(cp, spelling[b]);
      byte_of[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteTable& Table() {
  static const ByteTable* const table = new ByteTable();
  return *table;
}

}  // namespace

void DecodeLenient(std::string_view text, std::vector<uint32_t>& out) {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  out.reserve(out.size() + n);
  size_t i = 0;
  while (i < n) {
    const uint8_t b0 = p[i];
    if (b0 < 0x80) {
      out.push_back(b0);
      i += 1;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((b0 & 0x40) == 0) {
      len = 0;  // a continuation byte cannot start a character
    } else if ((b0 & 0x20) == 0) {
      if (i + 1 < n && IsContinuation(p[i + 1])) {
        len = 2;
        cp = (static_cast<uint32_t>(b0 & 0x1F) << 6) | (p[i + 1] & 0x3F);
      }
    } else if ((b0 & 0x10) == 0) {
      if (i + 2 < n && IsContinuation(p[i + 1]) && IsContinuation(p[i + 2])) {
        len = 3;
        cp = (static_cast<uint32_t>(b0 & 0x0F) << 12) | (static_cast<uint32_t>(p[i + 1] & 0x3F) << 6) |
             (p[i + 2] & 0x3F);
      }
    } else if ((b0 & 0x08) == 0) {
      if (i + 3 < n && IsContinuation(p[i + 1]) && IsContinuation(p[i + 2]) && IsContinuation(p[i + 3])) {
        cp = (static_cast<uint32_t>(b0 & 0x07) << 18) | (static_cast<uint32_t>(p[i + 1] & 0x3F) << 12) |
             (static_cast<uint32_t>(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
        // llama.cpp would throw while re-encoding these; one U+FFFD per byte keeps going instead.
        if (cp <= 0x10FFFF) len = 4;
      }
    }
    if (len == 0) {
      out.push_back(kReplacementChar);
      i += 1;
    } else {
      out.push_back(cp);
      i += len;
    }
  }
}

void AppendCodePoint(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp <= 0x10FFFF) {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    AppendCodePoint(kReplacementChar, out);
  }
}

int ClassifyPrefix(std::string_view bytes) {
  if (bytes.empty()) return 0;
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint8_t b0 = p[0];
  if (b0 < 0x80) return 1;
  // Expected length and the allowed range of the second byte (Unicode Table 3-7); the third and
  // fourth bytes are always 80..BF.
  int len = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 == 0xE0) {
    len = 3, lo = 0xA0;
  } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
    len = 3;
  } else if (b0 == 0xED) {
    len = 3, hi = 0x9F;  // excludes the surrogates
  } else if (b0 == 0xF0) {
    len = 4, lo = 0x90;
  } else if (b0 >= 0xF1 && b0 <= 0xF3) {
    len = 4;
  } else if (b0 == 0xF4) {
    len = 4, hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;  // 80..C1 and F5..FF never start a character
  }
  for (int k = 1; k < len; ++k) {
    if (static_cast<size_t>(k) >= bytes.size()) return 0;  // so far so good: wait for more bytes
    const uint8_t b = p[k];
    const bool ok = k == 1 ? (b >= lo && b <= hi) : IsContinuation(b);
    if (!ok) return -k;
  }
  return len;
}

bool IsValid(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const int n = ClassifyPrefix(bytes.substr(i));
    if (n <= 0) return false;
    i += static_cast<size_t>(n);
  }
  return true;
}

std::string Sanitize(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const int n = ClassifyPrefix(bytes.substr(i));
    if (n > 0) {
      out.append(bytes.substr(i, static_cast<size_t>(n)));
      i += static_cast<size_t>(n);
    } else {
      AppendCodePoint(kReplacementChar, out);
      i += n < 0 ? static_cast<size_t>(-n) : bytes.size() - i;  // 0: incomplete tail
    }
  }
  return out;
}

uint32_t ByteToCodePoint(uint8_t byte) { return Table().code_point[byte]; }

std::string_view ByteToUnicode(uint8_t byte) { return Table().spelling[byte]; }

int UnicodeToByte(uint32_t cp) {
  const ByteTable& t = Table();
  return cp < t.byte_of.size() ? t.byte_of[cp] : -1;
}

}  // namespace airlock::inference::utf8

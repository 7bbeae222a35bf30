// UTF-8 helpers for the tokenizers: llama.cpp-compatible lenient decoding, strict validation for
// output, and GPT-2's byte <-> printable-character table used by byte-level BPE vocabularies.
//
// Thread-safety: pure functions and immutable tables; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace airlock::inference::utf8 {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Length of the UTF-8 sequence that `lead` starts, judged from its top four bits only, exactly as
// llama.cpp's unicode_len_utf8: continuation bytes count as 1, 0xF8..0xFF as 4. The SPM tokenizer
// splits text into symbols with this rule, so invalid input tokenizes the same way as upstream.
inline size_t LenientSequenceLength(uint8_t lead) {
  static constexpr uint8_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

// Decodes `text` into code points the way llama.cpp's unicode_cpts_from_utf8 does: well-formed
// sequences are decoded without checking for overlong forms or surrogates (upstream accepts them),
// and every byte that cannot start or complete a sequence becomes one U+FFFD. Sequences that decode
// above U+10FFFF (upstream throws on them later) are also treated as invalid bytes.
void DecodeLenient(std::string_view text, std::vector<uint32_t>& out);

// Appends the UTF-8 encoding of `cp` (any value up to U+10FFFF, surrogates included, as llama.cpp's
// unicode_cpt_to_utf8). Larger values append U+FFFD.
void AppendCodePoint(uint32_t cp, std::string& out);

// Length of the well-formed UTF-8 character at the start of `bytes` (Unicode Table 3-7): 1..4.
// Returns 0 when `bytes` holds only the beginning of a well-formed character (more bytes could
// complete it), and -n when the first n bytes (n >= 1) are an ill-formed "maximal subpart" that must
// be replaced by one U+FFFD (the Unicode / WHATWG substitution practice, as Python's "replace").
int ClassifyPrefix(std::string_view bytes);

// True when `bytes` is entirely well-formed UTF-8.
bool IsValid(std::string_view bytes);

// Replaces every ill-formed subsequence (and an incomplete tail) by U+FFFD.
std::string Sanitize(std::string_view bytes);

// GPT-2 byte-level encoding: every byte maps to one printable code point so that BPE merges never
// see raw control bytes or spaces (space is U+0120 'Ġ', newline U+010A 'Ċ').
uint32_t ByteToCodePoint(uint8_t byte);
// The UTF-8 spelling of ByteToCodePoint(byte) (1 or 2 bytes).
std::string_view ByteToUnicode(uint8_t byte);
// Inverse of ByteToCodePoint; -1 for a code point outside the 256-entry table.
int UnicodeToByte(uint32_t cp);

}  // namespace airlock::inference::utf8

// Bounds on attacker-chosen strings (model names, certificate subjects, roles...) before they are
// echoed into an error, a log line or an audit record, so one call cannot make those grow by
// megabytes.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace airlock::auth {

// `text` itself when it has at most `max_bytes` bytes. Otherwise its first at most `max_bytes`
// bytes, cut at a UTF-8 character boundary, followed by the marker
// "...[N bytes, sha256:<first 16 hex digits>]" naming the full length and a digest of the full
// value, so two long values that share a prefix stay distinguishable. The result of a long value
// is at most max_bytes + kBoundMarkerMaxBytes bytes.
std::string BoundedForRecord(std::string_view text, size_t max_bytes);

// The longest marker BoundedForRecord appends ("...[18446744073709551615 bytes, sha256:...]").
inline constexpr size_t kBoundMarkerMaxBytes = 64;

}  // namespace airlock::auth

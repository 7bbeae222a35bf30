// Status helpers shared by every layer: early-return macros and the one CHECK for impossible states.
//
// Debian 12's Abseil (20220623) ships absl::Status/StatusOr but no status macros, so they live here.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#define AIRLOCK_CONCAT_INNER(a, b) a##b
#define AIRLOCK_CONCAT(a, b) AIRLOCK_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define AIRLOCK_RETURN_IF_ERROR(expr)                \
  do {                                               \
    ::absl::Status airlock_status_ = (expr);         \
    if (!airlock_status_.ok()) return airlock_status_; \
  } while (0)

// `AIRLOCK_ASSIGN_OR_RETURN(auto x, Foo());` declares/assigns `x` from a StatusOr, or returns its error.
#define AIRLOCK_ASSIGN_OR_RETURN(lhs, expr) \
  AIRLOCK_ASSIGN_OR_RETURN_IMPL(AIRLOCK_CONCAT(airlock_statusor_, __LINE__), lhs, expr)
#define AIRLOCK_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()

// Aborts on a state that our own code must never reach (not for untrusted input: that gets a Status).
#define AIRLOCK_CHECK(cond)                                                                   \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "%s:%d: AIRLOCK_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace airlock {
// Debian's Abseil has its own string_view (not std::string_view); this bridges the two for StrCat.
inline absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }
}  // namespace airlock

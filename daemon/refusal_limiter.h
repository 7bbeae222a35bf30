// Per-caller rate limit on the audit records of refused calls. Refusals cost the caller nothing,
// so one certificate could otherwise fill the audit disk (fail-closed: and stop everyone) with
// records of calls that did nothing. Within a window, a caller's first N refusals are recorded one
// by one; the rest are only counted, into one aggregate per kind (decision, status code, method),
// written when the window closes, when the key must make room, or at shutdown: the count of every
// refusal is kept, just not one record each (docs/audit.md, "Refusal records").
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "audit/audit_record.h"
#include "daemon/call_admission.h"

namespace airlock::daemon {

// Whose refusals a call counts against: "identity:<name>", or without an identity the certificate
// ("cert:<fingerprint>"), or the peer address without its port ("peer:ipv4:10.0.0.1").
std::string RefusalKey(const CallInfo& call);

class RefusalLimiter {
 public:
  struct Options {
    // Refusals recorded one by one per key and window; 0: every refusal is (no limit). Default: 60.
    uint32_t records_per_window = 60;
    // Default: 1 minute.
    absl::Duration window = absl::Minutes(1);
    // Keys tracked at once; when full, the oldest window is closed (its aggregates written) to
    // make room. Default: 10000.
    size_t max_keys = 10000;
  };

  // Refusals of one kind from one key, in one window, that were counted instead of recorded.
  struct Aggregate {
    CallInfo call;  // the first one counted (config cleared: it may outlive every snapshot)
    audit::Decision decision = audit::Decision::kInvalid;
    absl::StatusCode code = absl::StatusCode::kUnknown;
    uint64_t suppressed = 0;
    absl::Time window_start;
    absl::Duration window;
  };

  explicit RefusalLimiter(Options options) : options_(std::move(options)) {}

  // Counts a refusal at `now`; true when it is to be recorded on its own, false when it was only
  // counted into an aggregate. Aggregates that are due now (windows closed at `now`, or a window
  // closed to make room for this key) are appended to `due`, oldest first, to be written before
  // this refusal's own record.
  bool Admit(const CallInfo& call, audit::Decision decision, absl::StatusCode code, absl::Time now,
             std::vector<Aggregate>* due) ABSL_LOCKS_EXCLUDED(mutex_);

  // The aggregates of windows closed at `now` (their keys are forgotten).
  std::vector<Aggregate> TakeClosed(absl::Time now) ABSL_LOCKS_EXCLUDED(mutex_);
  // Every pending aggregate, windows open or not (at shutdown); every key is forgotten.
  std::vector<Aggregate> TakeAll() ABSL_LOCKS_EXCLUDED(mutex_);

  size_t tracked_keys() const ABSL_LOCKS_EXCLUDED(mutex_);
  const Options& options() const { return options_; }

 private:
  struct KeyWindow {
    absl::Time start;
    uint32_t recorded = 0;
    std::vector<Aggregate> counted;  // one per (decision, code, method); methods are a fixed set
  };

  // Forgets the oldest key (the front of order_), moving its aggregates to `due`.
  void CloseOldest(std::vector<Aggregate>* due) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void CloseExpired(absl::Time now, std::vector<Aggregate>* due) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const Options options_;
  mutable absl::Mutex mutex_;
  absl::flat_hash_map<std::string, KeyWindow> keys_ ABSL_GUARDED_BY(mutex_);
  // Keys by window start, oldest first (one entry per key in keys_: a key leaves both at once).
  std::deque<std::pair<absl::Time, std::string>> order_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace airlock::daemon

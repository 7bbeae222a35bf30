// The daemon's side of the audit log: opens the state store and the keys, and turns calls into
// records — a durable begin record before any generation starts, an end record before the result
// is acknowledged, one record for every other call (denied ones included). Fail closed: when a
// record cannot be written the call is refused with UNAVAILABLE.
//
// Thread-safety: every method may be called from any thread (AuditLog batches concurrent appends).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "audit/audit_record.h"
#include "audit/audit_store.h"
#include "audit/state_db.h"
#include "daemon/call_admission.h"
#include "daemon/config/daemon_options.h"

namespace airlock::daemon {

class AuditTrail {
 public:
  // Creates state_dir (0700) and the signing key / HMAC secret files (0600) when absent, writes
  // the public key to <signing_key_file>.pub, opens the store and the chain.
  static absl::StatusOr<std::unique_ptr<AuditTrail>> Open(const AuditOptions& options);

  // What a record says about the call, beyond CallInfo.
  struct Outcome {
    audit::Decision decision = audit::Decision::kAllowed;
    absl::Status status;
    uint32_t prompt_tokens = 0;
    uint32_t completion_tokens = 0;
    std::string stop_reason;
    std::string sampling;      // canonical "k=v;..." text
    std::string_view prompt;   // HMAC'd, never stored
    std::string_view output;   // HMAC'd, never stored
  };

  // The begin record of a generation, durable on return. UNAVAILABLE when it cannot be written.
  absl::Status Begin(const CallInfo& call, const Outcome& outcome);
  // The end record of a generation, or the only record of any other call. UNAVAILABLE when it
  // cannot be written (the caller then must not acknowledge success).
  absl::Status End(const CallInfo& call, const Outcome& outcome);

  // OK, or why the log cannot write (health and refusals report it).
  absl::Status health() const { return log_->health(); }
  audit::ChainHead head() const { return log_->head(); }
  const std::string& public_key_pem() const { return public_key_pem_; }

 private:
  AuditTrail() = default;
  absl::Status Append(audit::Phase phase, const CallInfo& call, const Outcome& outcome);

  std::unique_ptr<audit::StateDb> db_;
  std::unique_ptr<audit::AuditLog> log_;
  std::string hmac_secret_;
  std::string seal_key_;  // empty: texts are not stored
  std::string public_key_pem_;
};

// "temperature=0.8;top_k=40;..." for a record (fixed order, fixed precision).
std::string CanonicalSampling(const inference::SamplingParams& params);

}  // namespace airlock::daemon

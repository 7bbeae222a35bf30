// The daemon's side of the audit log: opens the state store and the keys, and turns calls into
// records — a durable begin record before any generation starts, an end record before the result
// is acknowledged, one record for every other call (denied ones included). Fail closed: when a
// record cannot be written the call is refused with UNAVAILABLE.
//
// Thread-safety: every method may be called from any thread (AuditLog batches concurrent appends).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "audit/audit_record.h"
#include "audit/audit_store.h"
#include "audit/chain_verifier.h"
#include "audit/retention.h"
#include "audit/state_db.h"
#include "daemon/call_admission.h"
#include "daemon/config/daemon_options.h"
#include "daemon/refusal_limiter.h"

namespace airlock::daemon {

class AuditTrail {
 public:
  // Creates the signing key / HMAC secret files (0600) when absent, writes the public key to
  // <signing_key_file>.pub, and opens the chain in `db` (the daemon's state store, which must
  // outlive the trail; OpenStateStore).
  // With a finite options.retention, a thread prunes records older than it (checked every
  // quarter of the window, between 1 s and 1 h), and each prune that deletes leaves an admin
  // record (method "airlockd/retention").
  static absl::StatusOr<std::unique_ptr<AuditTrail>> Open(const AuditOptions& options, audit::StateDb* db);
  // Stops the pruning and refusal threads, writes the pending refusal aggregates (windows still
  // open included: nothing counted is lost at shutdown), then what is queued, and closes the store.
  ~AuditTrail();

  // One retention pass now: prunes records older than the window (no-op without one). Returns
  // what was pruned. (The pruning thread calls this; tests call it directly.)
  absl::StatusOr<audit::PruneResult> PruneNow();

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

  // The only record of a refused call (denied by role, invalid, over quota, unauthenticated),
  // under the refusal rate limit (options.refusal_records_per_minute, RefusalLimiter): the
  // caller's first refusals in a window are recorded as End does; the rest only counted (then
  // call.refusal_counted is set), and each (caller, window, kind) gets one aggregate record whose
  // sampling field is "suppressed=N;..." (docs/audit.md). Returns outcome.status, or UNAVAILABLE
  // when the record cannot be written or the log cannot write.
  absl::Status Refused(CallInfo& call, const Outcome& outcome);
  // Writes the aggregates of refusal windows that have closed by `now`. (A thread calls this
  // every few seconds; tests call it directly.)
  void FlushClosedRefusals(absl::Time now = absl::Now());

  // The record of an Admin call, durable on return, written before the call reads anything;
  // `parameters` is the request as canonical JSON. UNAVAILABLE when it cannot be written.
  absl::Status Admin(const CallInfo& call, std::string parameters);

  // OK, or why the log cannot be used: the chain failed its verification at start (calls are
  // refused until a restart on a sound store), or the log cannot write (health checks, readiness
  // and refusals report it).
  absl::Status health() const ABSL_LOCKS_EXCLUDED(integrity_mu_);
  // True once the whole-chain verification after the start has passed.
  bool chain_verified() const { return chain_verified_.load(); }
  audit::ChainHead head() const { return log_->head(); }
  const std::string& public_key_pem() const { return public_key_pem_; }
  // A key for another use of this installation's secret (audit.hmac_secret_file):
  // HMAC-SHA256(secret, label), 32 bytes. Distinct labels give independent keys.
  std::string DeriveKey(std::string_view label) const;
  // What verifying this log allows (its checkpoint_every).
  const audit::VerifyPolicy& verify_policy() const { return verify_policy_; }
  // The store, for consistent reads (audit::AuditSnapshot) by the Admin service.
  const audit::StateDb& db() const { return *db_; }

 private:
  AuditTrail() = default;
  absl::Status Append(audit::Phase phase, const CallInfo& call, const Outcome& outcome);
  // One end record per aggregate ("suppressed=N;..."), and one log line each.
  void WriteAggregates(std::vector<RefusalLimiter::Aggregate> aggregates);

  audit::StateDb* db_ = nullptr;  // not owned
  std::unique_ptr<audit::AuditLog> log_;
  std::string hmac_secret_;
  std::string seal_key_;  // empty: texts are not stored
  std::string public_key_pem_;
  audit::VerifyPolicy verify_policy_;
  absl::Duration retention_ = absl::InfiniteDuration();

  // The whole chain verified once after the start, in the background (CheckStoreAtOpen covers only
  // the tail): damage below the newest checkpoint — an edited or corrupt table file — fails the
  // log closed instead of being served until someone runs verify.
  void VerifyWholeChain() ABSL_LOCKS_EXCLUDED(integrity_mu_);
  // OK, or why the chain failed that verification (then nothing more is recorded).
  absl::Status Integrity() const ABSL_LOCKS_EXCLUDED(integrity_mu_);
  mutable absl::Mutex integrity_mu_;
  absl::Status integrity_ ABSL_GUARDED_BY(integrity_mu_);
  std::atomic<bool> closing_{false};
  std::atomic<bool> chain_verified_{false};
  std::thread verifier_;

  // The pruning thread: waits for the interval or for stopping_.
  std::unique_ptr<RefusalLimiter> refusals_;

  // The pruning thread: waits for the interval or for stopping_. The refusal thread: writes the
  // aggregates of closed windows every few seconds.
  void PruneLoop(absl::Duration interval) ABSL_LOCKS_EXCLUDED(prune_mu_);
  void RefusalLoop(absl::Duration interval) ABSL_LOCKS_EXCLUDED(prune_mu_);
  absl::Mutex prune_mu_;
  bool stopping_ ABSL_GUARDED_BY(prune_mu_) = false;
  std::thread pruner_;
  std::thread refusal_flusher_;
};

// "temperature=0.8;top_k=40;..." for a record (fixed order, fixed precision).
std::string CanonicalSampling(const inference::SamplingParams& params);
// What CanonicalSampling's text gains for structured output: "" for free text,
// ";response_format=json_object", or ";response_format=json_schema;json_schema_sha256=<hex>"
// (the schema itself is request content and is not stored; its hash identifies it).
std::string CanonicalResponseFormat(const inference::ResponseFormat& format);

}  // namespace airlock::daemon

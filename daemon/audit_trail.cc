// AuditTrail: keys and store set-up, and call -> audit record.
#include "daemon/audit_trail.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "audit/audit_reader.h"
#include "audit/checkpoint.h"
#include "audit/privacy.h"
#include "audit/witness.h"
#include "auth/bounded_text.h"
#include "auth/digest.h"
#include "auth/dev_pki.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "inference/base/status.h"

namespace airlock::daemon {
namespace {

// Longest text field of a record. Every field is bounded well below this where it enters the call
// (CallInfo, auth::Identity); this is the last line of defence at the record itself.
constexpr size_t kMaxRecordFieldBytes = 2048;
// How often closed refusal windows are looked for.
constexpr absl::Duration kRefusalFlushInterval = absl::Seconds(5);

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// Reads `path`, or creates it (0600) with `make()` when absent.
absl::StatusOr<std::string> ReadOrCreateSecret(const std::string& path, std::string_view what,
                                               const std::function<absl::StatusOr<std::string>()>& make) {
  if (Exists(path)) {
    absl::StatusOr<std::string> contents = auth::ReadTextFile(path);
    if (!contents.ok()) return absl::Status(contents.status().code(), absl::StrCat(ToAbsl(what), ": ", contents.status().message()));
    return contents;
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::string contents, make());
  if (absl::Status written = auth::WritePrivateFile(path, contents); !written.ok()) {
    return absl::Status(written.code(), absl::StrCat(ToAbsl(what), ": cannot create ", path, ": ", written.message()));
  }
  LogInfo("created audit secret", {{"file", path}, {"what", std::string(what)}});
  return contents;
}

}  // namespace

std::string CanonicalSampling(const inference::SamplingParams& p) {
  return absl::StrFormat(
      "temperature=%.6g;top_k=%d;top_p=%.6g;min_p=%.6g;repeat_penalty=%.6g;repeat_last_n=%d;"
      "frequency_penalty=%.6g;presence_penalty=%.6g;seed=%u",
      p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.repeat_last_n, p.frequency_penalty,
      p.presence_penalty, p.seed);
}

std::string CanonicalResponseFormat(const inference::ResponseFormat& format) {
  switch (format.type) {
    case inference::ResponseFormat::Type::kText: return "";
    case inference::ResponseFormat::Type::kJsonObject: return ";response_format=json_object";
    case inference::ResponseFormat::Type::kJsonSchema:
      return absl::StrCat(";response_format=json_schema;json_schema_sha256=",
                          auth::HexLower(auth::Sha256(format.json_schema)));
  }
  return "";
}

namespace {

// The witness the store is checked against. A new store gets one for the empty chain at once, so
// that a missing witness beside a store with records never happens by accident: it is refused.
absl::StatusOr<std::optional<audit::Checkpoint>> ReadOrStartWitness(const std::string& path, const audit::StateDb& db,
                                                                    const audit::CheckpointSigner& signer) {
  absl::StatusOr<std::optional<audit::Checkpoint>> witness = audit::ReadWitness(path);
  if (!witness.ok()) {
    return absl::Status(witness.status().code(),
                        absl::StrCat(witness.status().message(), " (audit.witness_file; refusing to start)"));
  }
  if (witness->has_value()) return witness;
  AIRLOCK_ASSIGN_OR_RETURN(const audit::ChainHead head, audit::ReadChainHead(db));
  if (head.sequence != 0) {
    return absl::DataLossError(absl::StrCat(
        "audit witness ", path, " is missing but the store holds ", head.sequence,
        " records: the witness may have been deleted to hide a rewrite, so airlockd refuses to start. Restore it "
        "(the newest \"audit checkpoint\" line of airlockd's log holds it, as does an export's last checkpoint line) "
        "after checking the store with airlockctl audit verify --state-dir ... --anchor FILE"));
  }
  const audit::Checkpoint genesis = signer.Sign(0, audit::GenesisHash(), absl::ToUnixMicros(absl::Now()));
  AIRLOCK_RETURN_IF_ERROR(audit::WriteWitness(path, genesis));
  LogInfo("audit witness created", {{"file", path}});
  return std::optional<audit::Checkpoint>(genesis);
}

}  // namespace

std::string AuditTrail::DeriveKey(std::string_view label) const { return audit::HmacSha256(hmac_secret_, label); }

absl::StatusOr<std::unique_ptr<AuditTrail>> AuditTrail::Open(const AuditOptions& options, audit::StateDb* db) {
  std::unique_ptr<AuditTrail> trail(new AuditTrail());
  trail->db_ = db;
  AIRLOCK_ASSIGN_OR_RETURN(std::string key_pem,
                           ReadOrCreateSecret(options.signing_key_file, "audit.signing_key_file",
                                              [] { return audit::GenerateSigningKeyPem(); }));
  absl::StatusOr<audit::CheckpointSigner> signer = audit::CheckpointSigner::FromPrivateKeyPem(key_pem);
  if (!signer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit.signing_key_file ", options.signing_key_file, ": ", signer.status().message()));
  }
  trail->public_key_pem_ = signer->PublicKeyPem();
  // Auditors verify with the public key alone; keep it beside the private one.
  if (absl::Status pub = auth::WritePublicFile(options.signing_key_file + ".pub", trail->public_key_pem_); !pub.ok()) {
    return pub;
  }
  AIRLOCK_ASSIGN_OR_RETURN(trail->hmac_secret_, ReadOrCreateSecret(options.hmac_secret_file, "audit.hmac_secret_file",
                                                                   [] { return audit::GenerateSecret(); }));
  if (trail->hmac_secret_.size() < 32) {
    return absl::InvalidArgumentError(absl::StrCat("audit.hmac_secret_file ", options.hmac_secret_file,
                                                   ": holds ", trail->hmac_secret_.size(),
                                                   " bytes; at least 32 are required"));
  }
  if (!options.sealed_text_key_file.empty()) {
    absl::StatusOr<std::string> key = auth::ReadTextFile(options.sealed_text_key_file);
    if (!key.ok()) return absl::Status(key.status().code(), absl::StrCat("audit.sealed_text_key_file: ", key.status().message()));
    if (key->size() != 32) {
      return absl::InvalidArgumentError(absl::StrCat("audit.sealed_text_key_file ", options.sealed_text_key_file,
                                                     ": holds ", key->size(), " bytes; an AES-256 key is exactly 32"));
    }
    trail->seal_key_ = *std::move(key);
    LogInfo("audit stores prompt and output texts, sealed (AES-256-GCM)");
  }
  audit::AuditLogOptions log_options;
  log_options.checkpoint_every_records = options.checkpoint_every;
  log_options.checkpoint_interval = options.checkpoint_interval;
  AIRLOCK_ASSIGN_OR_RETURN(log_options.witness, ReadOrStartWitness(options.witness_file, *trail->db_, *signer));
  log_options.checkpoint_written = [path = options.witness_file](const audit::Checkpoint& checkpoint) {
    const std::string line = audit::CheckpointJsonLine(checkpoint);
    // The log line is the witness a SIEM keeps; the file is the one the next start checks.
    LogInfo("audit checkpoint", {{"sequence", checkpoint.sequence}, {"witness", line}});
    if (absl::Status written = audit::WriteWitness(path, checkpoint); !written.ok()) {
      LogError("audit witness not updated", {{"error", std::string(written.message())}});
    }
  };
  trail->verify_policy_.max_unsigned_tail = options.checkpoint_every;
  AIRLOCK_ASSIGN_OR_RETURN(trail->log_, audit::AuditLog::Open(trail->db_, *std::move(signer), log_options));
  {
    AuditTrail* self = trail.get();
    trail->verifier_ = std::thread([self] { self->VerifyWholeChain(); });
  }
  RefusalLimiter::Options refusal_options;
  refusal_options.records_per_window = options.refusal_records_per_minute;
  trail->refusals_ = std::make_unique<RefusalLimiter>(refusal_options);
  if (options.refusal_records_per_minute != 0) {
    AuditTrail* self = trail.get();
    trail->refusal_flusher_ = std::thread([self] { self->RefusalLoop(kRefusalFlushInterval); });
  }
  trail->retention_ = options.retention;
  if (options.retention != absl::InfiniteDuration()) {
    const absl::Duration interval = std::clamp(options.retention / 4, absl::Seconds(1), absl::Hours(1));
    AuditTrail* self = trail.get();
    trail->pruner_ = std::thread([self, interval] { self->PruneLoop(interval); });
  }
  return trail;
}

AuditTrail::~AuditTrail() {
  {
    absl::MutexLock lock(&prune_mu_);
    stopping_ = true;
  }
  closing_.store(true);
  if (pruner_.joinable()) pruner_.join();
  if (verifier_.joinable()) verifier_.join();
  if (refusal_flusher_.joinable()) refusal_flusher_.join();
  // Before the log closes: the counts of windows still open are written too.
  if (refusals_ != nullptr) WriteAggregates(refusals_->TakeAll());
}

absl::Status AuditTrail::Integrity() const {
  absl::MutexLock lock(&integrity_mu_);
  return integrity_;
}

absl::Status AuditTrail::health() const {
  if (absl::Status integrity = Integrity(); !integrity.ok()) return integrity;
  return log_->health();
}

void AuditTrail::VerifyWholeChain() {
  const absl::Time start = absl::Now();
  audit::AuditSnapshot snapshot(*db_);
  absl::StatusOr<audit::VerifyReport> report =
      audit::VerifySnapshot(snapshot, public_key_pem_, [this] { return closing_.load(); }, verify_policy_);
  if (report.status().code() == absl::StatusCode::kCancelled) return;
  // Callers see only that the log does not verify (and where); the reason, which may name paths
  // or RocksDB internals, goes to the daemon's log.
  absl::Status failure;
  std::string why;
  if (!report.ok()) {
    failure = absl::UnavailableError("the audit log cannot be read to verify it, so requests are refused");
    why = std::string(report.status().message());
  } else if (!report->ok) {
    failure = absl::UnavailableError(absl::StrCat(
        "the audit log does not verify, so requests are refused",
        report->first_bad_sequence ? absl::StrCat(" (first bad sequence ", *report->first_bad_sequence, ")") : ""));
    why = report->problem;
  }
  if (!failure.ok()) {
    LogError("audit log failed its verification at start; refusing calls until restarted on a sound store",
             {{"error", std::string(failure.message())}, {"why", why}});
    absl::MutexLock lock(&integrity_mu_);
    integrity_ = failure;
    return;
  }
  chain_verified_.store(true);
  LogInfo("audit log verified", {{"records", report->records_checked},
                                 {"checkpoints", report->checkpoints_checked},
                                 {"head_sequence", report->head_sequence},
                                 {"seconds", absl::ToDoubleSeconds(absl::Now() - start)}});
}

void AuditTrail::RefusalLoop(absl::Duration interval) {
  absl::MutexLock lock(&prune_mu_);
  while (!stopping_) {
    prune_mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval);
    if (stopping_) break;
    prune_mu_.Unlock();
    FlushClosedRefusals();
    prune_mu_.Lock();
  }
}

void AuditTrail::FlushClosedRefusals(absl::Time now) { WriteAggregates(refusals_->TakeClosed(now)); }

void AuditTrail::WriteAggregates(std::vector<RefusalLimiter::Aggregate> aggregates) {
  for (RefusalLimiter::Aggregate& a : aggregates) {
    CallInfo call = std::move(a.call);
    call.request_id = NewRequestId();  // the record's own; it stands for many calls
    call.start = std::chrono::steady_clock::now();
    Outcome outcome;
    outcome.decision = a.decision;
    outcome.status = absl::Status(a.code, "");
    outcome.sampling = absl::StrCat("suppressed=", a.suppressed, ";window_start_unix=",
                                    absl::ToUnixSeconds(a.window_start), ";window_seconds=",
                                    absl::ToInt64Seconds(a.window));
    const absl::Status written = Append(audit::Phase::kEnd, call, outcome);
    const nlohmann::json fields = {{"request_id", call.request_id},
                                   {"key", RefusalKey(call)},
                                   {"method", call.method},
                                   {"decision", std::string(audit::DecisionName(a.decision))},
                                   {"code", absl::StatusCodeToString(a.code)},
                                   {"suppressed", a.suppressed},
                                   {"window_start", absl::FormatTime(a.window_start, absl::UTCTimeZone())}};
    if (written.ok()) {
      LogWarning("refusals counted, not recorded one by one", fields);
    } else {
      // The count survives in the daemon log at least.
      nlohmann::json with_error = fields;
      with_error["error"] = std::string(written.message());
      LogError("aggregate refusal record not written", with_error);
    }
  }
}

absl::Status AuditTrail::Refused(CallInfo& call, const Outcome& outcome) {
  std::vector<RefusalLimiter::Aggregate> due;
  const bool record = refusals_->Admit(call, outcome.decision, outcome.status.code(), absl::Now(), &due);
  WriteAggregates(std::move(due));
  if (record) {
    AIRLOCK_RETURN_IF_ERROR(End(call, outcome));
    return outcome.status;
  }
  call.refusal_counted = true;
  // Fail closed as a recorded refusal would: a log that cannot write refuses with UNAVAILABLE.
  if (absl::Status integrity = Integrity(); !integrity.ok()) return integrity;
  if (!log_->health().ok()) {
    return absl::UnavailableError("the audit log cannot be written, so the request is refused");
  }
  return outcome.status;
}

absl::StatusOr<audit::PruneResult> AuditTrail::PruneNow() {
  if (retention_ == absl::InfiniteDuration()) return audit::PruneResult{};
  const absl::Time cutoff = absl::Now() - retention_;
  AIRLOCK_ASSIGN_OR_RETURN(audit::PruneResult result, audit::PruneAuditLog(db_, cutoff));
  if (result.records_deleted == 0) return result;
  LogInfo("audit records pruned", {{"records_deleted", result.records_deleted},
                                   {"checkpoints_deleted", result.checkpoints_deleted},
                                   {"anchor_sequence", result.anchor->sequence},
                                   {"retention", absl::FormatDuration(retention_)}});
  // The pruning itself is on the record: who (the daemon), when, and where the chain now starts.
  CallInfo call;
  call.request_id = NewRequestId();
  call.method = "airlockd/retention";
  call.identity.name = "airlockd";
  call.start = std::chrono::steady_clock::now();
  AIRLOCK_RETURN_IF_ERROR(Admin(call, nlohmann::json{{"anchor_sequence", result.anchor->sequence},
                                                     {"records_deleted", result.records_deleted},
                                                     {"retention", absl::FormatDuration(retention_)}}
                                          .dump()));
  return result;
}

void AuditTrail::PruneLoop(absl::Duration interval) {
  absl::MutexLock lock(&prune_mu_);
  while (!stopping_) {
    prune_mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval);
    if (stopping_) break;
    prune_mu_.Unlock();
    absl::StatusOr<audit::PruneResult> pruned = PruneNow();
    if (!pruned.ok()) {
      LogError("audit retention: pruning failed", {{"error", std::string(pruned.status().message())}});
    }
    prune_mu_.Lock();
  }
}

absl::Status AuditTrail::Append(audit::Phase phase, const CallInfo& call, const Outcome& outcome) {
  if (absl::Status integrity = Integrity(); !integrity.ok()) return integrity;
  audit::AuditRecord r;
  r.phase = phase;
  r.decision = outcome.decision;
  const auto bounded = [](std::string_view text) { return auth::BoundedForRecord(text, kMaxRecordFieldBytes); };
  r.request_id = bounded(call.request_id);
  r.identity = bounded(call.identity.name);
  r.subject = bounded(call.identity.subject);
  r.cert_fingerprint = bounded(call.identity.fingerprint);
  r.peer = bounded(call.peer);
  r.method = bounded(call.method);
  r.model = bounded(call.model);
  // Canonical text made by the daemon (sampling parameters, an admin request as JSON): not cut.
  r.sampling = outcome.sampling;
  r.prompt_tokens = outcome.prompt_tokens;
  r.completion_tokens = outcome.completion_tokens;
  r.stop_reason = bounded(outcome.stop_reason);
  r.status_code = static_cast<int32_t>(outcome.status.code());
  r.latency_micros = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - call.start).count());
  // The texts themselves are never stored; a keyed hash lets a known document be matched later.
  if (!outcome.prompt.empty()) r.prompt_hmac = audit::HmacSha256(hmac_secret_, outcome.prompt);
  if (!outcome.output.empty()) r.output_hmac = audit::HmacSha256(hmac_secret_, outcome.output);
  // Opt-in full text: the prompt in the begin record, the output in the end record.
  if (!seal_key_.empty()) {
    const std::string_view text = phase == audit::Phase::kBegin ? outcome.prompt : outcome.output;
    if (!text.empty()) {
      absl::StatusOr<std::string> sealed = audit::Seal(seal_key_, text, call.request_id);
      if (!sealed.ok()) {
        return absl::UnavailableError(absl::StrCat("cannot seal the audit text: ", sealed.status().message()));
      }
      r.sealed_text = *std::move(sealed);
    }
  }
  const auto append_start = std::chrono::steady_clock::now();
  absl::StatusOr<uint64_t> sequence = log_->Append(std::move(r));
  if (Metrics* metrics = call.config != nullptr ? call.config->metrics : nullptr; metrics != nullptr) {
    metrics->AuditWritten(std::chrono::duration<double>(std::chrono::steady_clock::now() - append_start).count(),
                          sequence.ok());
  }
  if (!sequence.ok()) {
    // The cause (a path, RocksDB's words) is for the operator, in the daemon log; the client is
    // told only that the log cannot be written.
    LogError("audit record not written; refusing the call",
             {{"request_id", call.request_id}, {"error", std::string(sequence.status().message())}});
    return absl::UnavailableError("the audit log cannot be written, so the request is refused");
  }
  return absl::OkStatus();
}

absl::Status AuditTrail::Begin(const CallInfo& call, const Outcome& outcome) {
  return Append(audit::Phase::kBegin, call, outcome);
}

absl::Status AuditTrail::End(const CallInfo& call, const Outcome& outcome) {
  return Append(audit::Phase::kEnd, call, outcome);
}

absl::Status AuditTrail::Admin(const CallInfo& call, std::string parameters) {
  Outcome outcome;
  outcome.sampling = std::move(parameters);
  return Append(audit::Phase::kAdmin, call, outcome);
}

}  // namespace airlock::daemon

// The Admin service: query, verify and export the audit log of the running daemon.
#include "daemon/admin_service.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "audit/audit_reader.h"
#include "daemon/audit_trail.h"
#include "google/protobuf/util/json_util.h"
#include "inference/base/status.h"

namespace airlock::daemon {
namespace {

constexpr char kQueryAudit[] = "airlock.v1.Admin/QueryAudit";
constexpr char kVerifyAudit[] = "airlock.v1.Admin/VerifyAudit";
constexpr char kExportAudit[] = "airlock.v1.Admin/ExportAudit";

constexpr uint32_t kDefaultQueryLimit = 1000;
constexpr uint32_t kMaxQueryLimit = 100000;
// Records per streamed message; also the unit after which a long scan checks for cancellation.
constexpr size_t kRecordsPerMessage = 256;
// A message is sent once it holds this many bytes of records even if it has fewer records (sealed
// texts can make records large).
constexpr size_t kBytesPerMessage = 1 << 20;
// How often a following query looks for new records.
constexpr absl::Duration kFollowPoll = absl::Milliseconds(250);

bool KnownName(std::string_view name, std::string_view (*name_of)(uint8_t), uint8_t first, uint8_t last) {
  for (uint8_t v = first; v <= last; ++v) {
    if (name_of(v) == name) return true;
  }
  return false;
}
std::string_view DecisionNameOf(uint8_t v) { return audit::DecisionName(static_cast<audit::Decision>(v)); }
std::string_view PhaseNameOf(uint8_t v) { return audit::PhaseName(static_cast<audit::Phase>(v)); }

std::string NamesOf(std::string_view (*name_of)(uint8_t), uint8_t first, uint8_t last) {
  std::vector<std::string> names;
  for (uint8_t v = first; v <= last; ++v) names.emplace_back(name_of(v));
  return absl::StrJoin(names, ", ");
}

// The request as canonical JSON (proto field names in number order, defaults omitted), for the
// admin record.
std::string Parameters(const google::protobuf::Message& request) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(request, &json, options).ok()) json = "{}";
  return json;
}

void ToProto(const audit::ChainedRecord& c, std::string_view stored, airlock::v1::AuditRecord* out) {
  const audit::AuditRecord& r = c.record;
  out->set_sequence(c.sequence);
  out->set_time_unix_micros(r.time_unix_micros);
  out->set_phase(std::string(audit::PhaseName(r.phase)));
  out->set_decision(std::string(audit::DecisionName(r.decision)));
  out->set_request_id(r.request_id);
  out->set_identity(r.identity);
  out->set_subject(r.subject);
  out->set_cert_fingerprint(r.cert_fingerprint);
  out->set_peer(r.peer);
  out->set_method(r.method);
  out->set_model(r.model);
  out->set_sampling(r.sampling);
  out->set_prompt_tokens(r.prompt_tokens);
  out->set_completion_tokens(r.completion_tokens);
  out->set_stop_reason(r.stop_reason);
  out->set_status_code(r.status_code);
  out->set_latency_micros(r.latency_micros);
  out->set_prompt_hmac(r.prompt_hmac);
  out->set_output_hmac(r.output_hmac);
  out->set_sealed_text(r.sealed_text);
  out->set_prev_hash(c.prev_hash);
  out->set_hash(c.hash);
  out->set_stored(std::string(stored));
}

// Admission, the call's own admin record, and the audit trail to read. On failure the status to
// return (already audited and logged as the call's end).
absl::StatusOr<std::pair<CallInfo, AuditTrail*>> AdmitAdmin(const grpc::ServerContext& context, const char* method,
                                                            const google::protobuf::Message& request,
                                                            const RuntimeConfigHolder& holder,
                                                            absl::Status (*validate)(const google::protobuf::Message&)) {
  absl::StatusOr<CallInfo> call = AdmitCall(context, method, "", holder);
  if (!call.ok()) return call.status();
  AuditTrail* trail = call->config->audit;
  if (trail == nullptr) {
    const absl::Status status = absl::FailedPreconditionError("this daemon has no audit log");
    LogCallEnd(*call, status);
    return status;
  }
  if (validate != nullptr) {
    if (absl::Status valid = validate(request); !valid.ok()) {
      LogCallEnd(*call, valid);
      return AuditSingle(*call, valid);
    }
  }
  if (absl::Status recorded = trail->Admin(*call, Parameters(request)); !recorded.ok()) {
    LogCallEnd(*call, recorded);
    return recorded;
  }
  return std::make_pair(*std::move(call), trail);
}

absl::Status ValidateQueryMessage(const google::protobuf::Message& message) {
  return ValidateQuery(static_cast<const airlock::v1::QueryAuditRequest&>(message));
}

}  // namespace

absl::Status ValidateQuery(const airlock::v1::QueryAuditRequest& request) {
  if (request.until_unix_micros() != 0 && request.until_unix_micros() <= request.since_unix_micros()) {
    return absl::InvalidArgumentError(absl::StrCat("until_unix_micros (", request.until_unix_micros(),
                                                   ") must be greater than since_unix_micros (",
                                                   request.since_unix_micros(), ")"));
  }
  if (!request.decision().empty() && !KnownName(request.decision(), DecisionNameOf, 1, 5)) {
    return absl::InvalidArgumentError(absl::StrCat("decision: unknown \"", request.decision(), "\" (expected one of ",
                                                   NamesOf(DecisionNameOf, 1, 5), ")"));
  }
  if (!request.phase().empty() && !KnownName(request.phase(), PhaseNameOf, 1, 3)) {
    return absl::InvalidArgumentError(absl::StrCat("phase: unknown \"", request.phase(), "\" (expected one of ",
                                                   NamesOf(PhaseNameOf, 1, 3), ")"));
  }
  if (request.limit() > kMaxQueryLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: ", request.limit(), " is more than the maximum of ", kMaxQueryLimit));
  }
  if (request.newest_first() && request.after_sequence() != 0) {
    return absl::InvalidArgumentError("after_sequence: newest_first pages with before_sequence");
  }
  if (request.newest_first() && request.follow()) {
    return absl::InvalidArgumentError("follow: only oldest first (new records come after the head)");
  }
  if (!request.newest_first() && request.before_sequence() != 0) {
    return absl::InvalidArgumentError("before_sequence: only with newest_first (oldest first pages with after_sequence)");
  }
  return absl::OkStatus();
}

bool MatchesQuery(const airlock::v1::QueryAuditRequest& request, const audit::ChainedRecord& c) {
  const audit::AuditRecord& r = c.record;
  if (request.since_unix_micros() != 0 && r.time_unix_micros < request.since_unix_micros()) return false;
  if (request.until_unix_micros() != 0 && r.time_unix_micros >= request.until_unix_micros()) return false;
  if (!request.identity().empty() && r.identity != request.identity()) return false;
  if (!request.model().empty() && r.model != request.model()) return false;
  if (!request.method().empty() && r.method != request.method()) return false;
  if (!request.decision().empty() && audit::DecisionName(r.decision) != request.decision()) return false;
  if (!request.phase().empty() && audit::PhaseName(r.phase) != request.phase()) return false;
  return true;
}

grpc::Status AdminService::QueryAudit(grpc::ServerContext* context, const airlock::v1::QueryAuditRequest* request,
                                      grpc::ServerWriter<airlock::v1::QueryAuditResponse>* writer) {
  auto admitted = AdmitAdmin(*context, kQueryAudit, *request, config_, ValidateQueryMessage);
  if (!admitted.ok()) return ToGrpcStatus(admitted.status());
  auto& [call, trail] = *admitted;

  // With follow, `limit` does not apply: the stream runs until the client ends it.
  const bool follow = request->follow();
  const uint32_t limit = follow ? UINT32_MAX : (request->limit() == 0 ? kDefaultQueryLimit : request->limit());
  const bool descending = request->newest_first();
  uint64_t from = 0;
  uint64_t to = UINT64_MAX;
  if (descending) {
    if (request->before_sequence() != 0) to = request->before_sequence() - 1;
  } else if (request->after_sequence() == UINT64_MAX) {
    to = 0;  // nothing comes after the largest sequence: an empty range
    from = 1;
  } else {
    from = request->after_sequence() + 1;
  }

  airlock::v1::QueryAuditResponse page;
  size_t page_bytes = 0;
  uint32_t matched = 0;
  uint64_t cursor = descending ? 0 : from - 1;  // the last sequence scanned
  absl::Status problem;
  auto flush = [&]() -> bool {
    page.set_next_cursor(cursor);
    const bool sent = writer->Write(page);
    page.Clear();
    page_bytes = 0;
    if (!sent) problem = absl::CancelledError("the client went away");
    return sent;
  };
  auto visit = [&](uint64_t sequence, std::string_view stored) {
    if (context->IsCancelled()) {
      problem = absl::CancelledError("the client cancelled the query");
      return false;
    }
    absl::StatusOr<audit::ChainedRecord> record = audit::DecodeStoredRecord(stored);
    if (!record.ok()) {
      problem = absl::DataLossError(absl::StrCat("audit record ", sequence, " does not decode (",
                                                 record.status().message(), "); run VerifyAudit"));
      return false;
    }
    cursor = sequence;
    if (!MatchesQuery(*request, *record)) return true;
    ToProto(*record, stored, page.add_records());
    page_bytes += stored.size();
    ++matched;
    if (matched >= limit) return false;
    if (page.records_size() >= static_cast<int>(kRecordsPerMessage) || page_bytes >= kBytesPerMessage) {
      return flush();
    }
    return true;
  };
  {
    audit::AuditSnapshot snapshot(trail->db());
    if (absl::Status scanned = snapshot.ScanRecords(from, to, descending, visit); !scanned.ok()) problem = scanned;
  }
  if (problem.ok()) {
    page.set_limit_reached(matched >= limit);
    flush();
  }
  // Follow: new records as they are written, until the client cancels or its deadline passes (or
  // the daemon drains, which cancels the call).
  while (follow && problem.ok() && !context->IsCancelled()) {
    if (ending_.load()) {
      problem = absl::UnavailableError("the server is shutting down");
      break;
    }
    absl::SleepFor(kFollowPoll);
    if (trail->head().sequence <= cursor) continue;
    audit::AuditSnapshot snapshot(trail->db());
    if (absl::Status scanned = snapshot.ScanRecords(cursor + 1, UINT64_MAX, false, visit); !scanned.ok()) {
      problem = scanned;
    }
    if (problem.ok() && page.records_size() > 0) flush();
  }
  const absl::Status status = follow && problem.ok() ? absl::CancelledError("the client ended the follow") : problem;
  LogCallEnd(call, status, {{"records", matched}});
  return ToGrpcStatus(status);
}

grpc::Status AdminService::VerifyAudit(grpc::ServerContext* context, const airlock::v1::VerifyAuditRequest* request,
                                       airlock::v1::VerifyAuditResponse* response) {
  auto admitted = AdmitAdmin(*context, kVerifyAudit, *request, config_, nullptr);
  if (!admitted.ok()) return ToGrpcStatus(admitted.status());
  auto& [call, trail] = *admitted;

  audit::AuditSnapshot snapshot(trail->db());
  absl::StatusOr<std::optional<audit::Checkpoint>> anchor = snapshot.Anchor();
  absl::StatusOr<audit::VerifyReport> report =
      anchor.ok() ? audit::VerifySnapshot(snapshot, trail->public_key_pem(), [context] { return context->IsCancelled(); })
                  : absl::StatusOr<audit::VerifyReport>(anchor.status());
  absl::Status status = report.status();
  if (status.ok()) {
    response->set_ok(report->ok);
    response->set_records_checked(report->records_checked);
    response->set_checkpoints_checked(report->checkpoints_checked);
    response->set_first_bad_sequence(report->first_bad_sequence.value_or(0));
    response->set_problem(report->problem);
    response->set_head_sequence(report->head_sequence);
    response->set_signed_through(report->signed_through);
    response->set_unsigned_tail(report->unsigned_tail);
    response->set_anchor_sequence(anchor->has_value() ? (*anchor)->sequence : 0);
    response->set_public_key_pem(trail->public_key_pem());
  }
  LogCallEnd(call, status, {{"chain_ok", response->ok()}, {"records_checked", response->records_checked()}});
  return ToGrpcStatus(status);
}

grpc::Status AdminService::ExportAudit(grpc::ServerContext* context, const airlock::v1::ExportAuditRequest* request,
                                       grpc::ServerWriter<airlock::v1::ExportAuditResponse>* writer) {
  auto admitted = AdmitAdmin(*context, kExportAudit, *request, config_, nullptr);
  if (!admitted.ok()) return ToGrpcStatus(admitted.status());
  auto& [call, trail] = *admitted;

  audit::AuditSnapshot snapshot(trail->db());
  uint64_t exported = 0;
  absl::Status status = [&]() -> absl::Status {
    AIRLOCK_ASSIGN_OR_RETURN(std::optional<audit::Checkpoint> anchor, snapshot.Anchor());
    AIRLOCK_ASSIGN_OR_RETURN(std::vector<audit::Checkpoint> checkpoints, snapshot.Checkpoints());
    AIRLOCK_ASSIGN_OR_RETURN(uint64_t head, snapshot.HeadSequence());
    airlock::v1::ExportAuditResponse first;
    if (anchor.has_value()) first.set_anchor(audit::EncodeCheckpoint(*anchor));
    for (const audit::Checkpoint& c : checkpoints) first.add_checkpoints(audit::EncodeCheckpoint(c));
    first.set_head_sequence(head);
    first.set_public_key_pem(trail->public_key_pem());
    if (!writer->Write(first)) return absl::CancelledError("the client went away");
    airlock::v1::ExportAuditResponse page;
    size_t page_bytes = 0;
    bool gone = false;
    AIRLOCK_RETURN_IF_ERROR(snapshot.ScanRecords(0, UINT64_MAX, false, [&](uint64_t, std::string_view stored) {
      if (context->IsCancelled()) {
        gone = true;
        return false;
      }
      page.add_stored_records(std::string(stored));
      page_bytes += stored.size();
      ++exported;
      if (page.stored_records_size() >= static_cast<int>(kRecordsPerMessage) || page_bytes >= kBytesPerMessage) {
        gone = !writer->Write(page);
        page.Clear();
        page_bytes = 0;
      }
      return !gone;
    }));
    if (gone) return absl::CancelledError("the client went away");
    if (page.stored_records_size() > 0 && !writer->Write(page)) return absl::CancelledError("the client went away");
    return absl::OkStatus();
  }();
  LogCallEnd(call, status, {{"records", exported}});
  return ToGrpcStatus(status);
}

}  // namespace airlock::daemon

// The Admin service: query, verify and export the audit log of the running daemon.
#include "daemon/admin_service.h"

#include <set>
#include <tuple>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "audit/audit_reader.h"
#include "auth/bounded_text.h"
#include "auth/quota.h"
#include "daemon/api_keys.h"
#include "daemon/audit_trail.h"
#include "daemon/log.h"
#include "google/protobuf/util/json_util.h"
#include "inference/base/status.h"

namespace airlock::daemon {
namespace {

constexpr char kQueryAudit[] = "airlock.v1.Admin/QueryAudit";
constexpr char kVerifyAudit[] = "airlock.v1.Admin/VerifyAudit";
constexpr char kExportAudit[] = "airlock.v1.Admin/ExportAudit";
constexpr char kGetUsage[] = "airlock.v1.Admin/GetUsage";
constexpr char kListUsage[] = "airlock.v1.Admin/ListUsage";
constexpr char kSetQuotaOverride[] = "airlock.v1.Admin/SetQuotaOverride";
constexpr char kResetUsage[] = "airlock.v1.Admin/ResetUsage";
constexpr char kCreateApiKey[] = "airlock.v1.Admin/CreateApiKey";
constexpr char kListApiKeys[] = "airlock.v1.Admin/ListApiKeys";
constexpr char kRevokeApiKey[] = "airlock.v1.Admin/RevokeApiKey";

constexpr uint32_t kDefaultListLimit = 1000;
constexpr uint32_t kMaxListLimit = 10000;
// Longest identity a quota call accepts (identities are configured user names).
constexpr size_t kMaxIdentityBytes = 1024;
// Longest method filter of a query (method names are well under 100 bytes), and the most of an
// unknown name a refusal echoes.
constexpr size_t kMaxMethodFilterBytes = 256;
constexpr size_t kMaxEchoBytes = 64;

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
// admin record; `extra`'s members (what the daemon decided before the record, e.g. a new key's id)
// after them.
std::string Parameters(const google::protobuf::Message& request, const nlohmann::json& extra = nullptr) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(request, &json, options).ok()) json = "{}";
  if (!extra.is_object()) return json;
  nlohmann::ordered_json merged = nlohmann::ordered_json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!merged.is_object()) merged = nlohmann::ordered_json::object();
  for (auto it = extra.begin(); it != extra.end(); ++it) merged[it.key()] = it.value();
  return merged.dump();
}

// The record's fields by the names they share with airlock.v1.AuditRecord (audit::ForEachRecordField).
void ToProto(const audit::ChainedRecord& c, std::string_view stored, airlock::v1::AuditRecord* out) {
  const google::protobuf::Descriptor* descriptor = out->GetDescriptor();
  const google::protobuf::Reflection* reflection = out->GetReflection();
  audit::ForEachRecordField(c, [&](const char* name, const auto& value) {
    const google::protobuf::FieldDescriptor* field = descriptor->FindFieldByName(name);
    using T = std::decay_t<decltype(value)>;
    if constexpr (std::is_same_v<T, audit::RecordTime>) {
      reflection->SetInt64(out, field, value.unix_micros);
    } else if constexpr (std::is_same_v<T, audit::RecordBytes>) {
      reflection->SetString(out, field, std::string(value.bytes));
    } else if constexpr (std::is_same_v<T, std::string_view>) {
      reflection->SetString(out, field, std::string(value));
    } else {
      switch (field->cpp_type()) {
        case google::protobuf::FieldDescriptor::CPPTYPE_UINT64: reflection->SetUInt64(out, field, value); break;
        case google::protobuf::FieldDescriptor::CPPTYPE_UINT32:
          reflection->SetUInt32(out, field, static_cast<uint32_t>(value));
          break;
        case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
          reflection->SetInt32(out, field, static_cast<int32_t>(value));
          break;
        default: reflection->SetInt64(out, field, static_cast<int64_t>(value)); break;
      }
    }
  });
  out->set_stored(std::string(stored));
}

// Admission, the call's own admin record, and the audit trail to read. On failure the status to
// return (already audited and logged as the call's end).
absl::StatusOr<std::pair<CallInfo, AuditTrail*>> AdmitAdmin(const grpc::ServerContext& context, const char* method,
                                                            const google::protobuf::Message& request,
                                                            const RuntimeConfigHolder& holder,
                                                            absl::Status (*validate)(const google::protobuf::Message&),
                                                            const nlohmann::json& extra_parameters = nullptr) {
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
      // Recorded first: a refusal only counted (the refusal limit) gets no log line of its own.
      const absl::Status recorded = AuditSingle(*call, valid);
      LogCallEnd(*call, recorded);
      return recorded;
    }
  }
  if (absl::Status recorded = trail->Admin(*call, Parameters(request, extra_parameters)); !recorded.ok()) {
    LogCallEnd(*call, recorded);
    return recorded;
  }
  return std::make_pair(*std::move(call), trail);
}

absl::Status ValidateQueryMessage(const google::protobuf::Message& message) {
  return ValidateQuery(static_cast<const airlock::v1::QueryAuditRequest&>(message));
}
absl::Status ValidateGetUsageMessage(const google::protobuf::Message& message) {
  return ValidateGetUsage(static_cast<const airlock::v1::GetUsageRequest&>(message));
}
absl::Status ValidateListUsageMessage(const google::protobuf::Message& message) {
  return ValidateListUsage(static_cast<const airlock::v1::ListUsageRequest&>(message));
}
absl::Status ValidateSetQuotaOverrideMessage(const google::protobuf::Message& message) {
  return ValidateSetQuotaOverride(static_cast<const airlock::v1::SetQuotaOverrideRequest&>(message));
}
absl::Status ValidateResetUsageMessage(const google::protobuf::Message& message) {
  return ValidateResetUsage(static_cast<const airlock::v1::ResetUsageRequest&>(message));
}

absl::Status ValidateCreateApiKeyMessage(const google::protobuf::Message& message) {
  return ValidateCreateApiKey(static_cast<const airlock::v1::CreateApiKeyRequest&>(message));
}
absl::Status ValidateListApiKeysMessage(const google::protobuf::Message& message) {
  return ValidateListApiKeys(static_cast<const airlock::v1::ListApiKeysRequest&>(message));
}
absl::Status ValidateRevokeApiKeyMessage(const google::protobuf::Message& message) {
  return ValidateRevokeApiKey(static_cast<const airlock::v1::RevokeApiKeyRequest&>(message));
}

absl::Status ValidateIdentity(const std::string& identity) {
  if (identity.empty()) return absl::InvalidArgumentError("identity: required");
  if (identity.size() > kMaxIdentityBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("identity: ", identity.size(), " bytes is more than the maximum of ", kMaxIdentityBytes));
  }
  return absl::OkStatus();
}

void ToProto(const auth::QuotaUsage& u, airlock::v1::QuotaUsage* out) {
  out->set_minute_start_unix_seconds(absl::ToUnixSeconds(auth::MinuteStartOf(u)));
  out->set_minute_requests(u.minute_requests);
  out->set_minute_tokens(u.minute_tokens);
  out->set_day_start_unix_seconds(absl::ToUnixSeconds(auth::DayStartOf(u)));
  out->set_day_prompt_tokens(u.day_prompt_tokens);
  out->set_day_completion_tokens(u.day_completion_tokens);
  out->set_month_start_unix_seconds(absl::ToUnixSeconds(auth::MonthStartOf(u)));
  out->set_month_prompt_tokens(u.month_prompt_tokens);
  out->set_month_completion_tokens(u.month_completion_tokens);
  out->set_running(u.running);
  out->set_reserved_prompt_tokens(u.reserved_prompt);
  out->set_reserved_completion_tokens(u.reserved_completion);
}

// An identity's limits (configured, overridden, in force) and usage.
void FillQuota(const RuntimeConfig& config, const std::string& identity, airlock::v1::IdentityQuota* out) {
  const auth::QuotaLimits& configured = config.quotas->LimitsOf(identity);
  const auth::QuotaOverride override_limits = config.ledger->OverrideOf(identity);
  out->set_identity(identity);
  out->set_configured_user(config.quotas->IsConfiguredUser(identity));
  *out->mutable_configured() = auth::ToConfigLimits(configured);
  *out->mutable_admin_override() = override_limits;
  *out->mutable_effective() = auth::ToConfigLimits(auth::ApplyOverride(configured, override_limits));
  ToProto(config.ledger->UsageOf(identity), out->mutable_usage());
}

// The quota calls' admission: AdmitAdmin, then a daemon that keeps quotas.
absl::StatusOr<CallInfo> AdmitQuota(const grpc::ServerContext& context, const char* method,
                                    const google::protobuf::Message& request, const RuntimeConfigHolder& holder,
                                    absl::Status (*validate)(const google::protobuf::Message&)) {
  auto admitted = AdmitAdmin(context, method, request, holder, validate);
  if (!admitted.ok()) return admitted.status();
  CallInfo call = std::move(admitted->first);
  if (call.config->ledger == nullptr || call.config->quotas == nullptr) {
    const absl::Status status = absl::FailedPreconditionError("this daemon keeps no quota ledger");
    LogCallEnd(call, status);
    return status;
  }
  return call;
}

// An identity a quota call may name: a configured user, or one the ledger knows.
absl::Status CheckKnownIdentity(const RuntimeConfig& config, const std::string& identity) {
  if (config.quotas->IsConfiguredUser(identity) || config.ledger->Knows(identity)) return absl::OkStatus();
  return absl::NotFoundError(
      absl::StrCat("identity \"", identity, "\" is not a configured user and has no quota usage or override"));
}

}  // namespace

absl::Status ValidateQuery(const airlock::v1::QueryAuditRequest& request) {
  if (request.until_unix_micros() != 0 && request.until_unix_micros() <= request.since_unix_micros()) {
    return absl::InvalidArgumentError(absl::StrCat("until_unix_micros (", request.until_unix_micros(),
                                                   ") must be greater than since_unix_micros (",
                                                   request.since_unix_micros(), ")"));
  }
  // The filters end up in the call's admin record (its parameters): bounded like what they match.
  for (const auto& [field, value, max] : {std::tuple<const char*, const std::string&, size_t>{
                                              "identity", request.identity(), kMaxIdentityBytes},
                                          {"model", request.model(), kMaxModelNameBytes},
                                          {"method", request.method(), kMaxMethodFilterBytes}}) {
    if (value.size() > max) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": ", value.size(), " bytes is more than the maximum of ", max));
    }
  }
  if (!request.decision().empty() && !KnownName(request.decision(), DecisionNameOf, 1, 5)) {
    return absl::InvalidArgumentError(absl::StrCat("decision: unknown \"",
                                                   auth::BoundedForRecord(request.decision(), kMaxEchoBytes),
                                                   "\" (expected one of ", NamesOf(DecisionNameOf, 1, 5), ")"));
  }
  if (!request.phase().empty() && !KnownName(request.phase(), PhaseNameOf, 1, 3)) {
    return absl::InvalidArgumentError(absl::StrCat("phase: unknown \"",
                                                   auth::BoundedForRecord(request.phase(), kMaxEchoBytes),
                                                   "\" (expected one of ", NamesOf(PhaseNameOf, 1, 3), ")"));
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

absl::Status ValidateGetUsage(const airlock::v1::GetUsageRequest& request) { return ValidateIdentity(request.identity()); }

absl::Status ValidateListUsage(const airlock::v1::ListUsageRequest& request) {
  if (request.limit() > kMaxListLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: ", request.limit(), " is more than the maximum of ", kMaxListLimit));
  }
  return absl::OkStatus();
}

absl::Status ValidateSetQuotaOverride(const airlock::v1::SetQuotaOverrideRequest& request) {
  AIRLOCK_RETURN_IF_ERROR(ValidateIdentity(request.identity()));
  for (const std::string& name : request.remove()) {
    if (!auth::LimitNamed(name).has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("remove: unknown limit \"", auth::BoundedForRecord(name, kMaxEchoBytes),
                                                     "\" (expected a field of QuotaLimits, such as tokens_per_day)"));
    }
  }
  if (const auto broken = auth::QuotaRuleViolations(request.set()); !broken.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("set.", broken.front().first, ": ", broken.front().second));
  }
  return absl::OkStatus();
}

absl::Status ValidateResetUsage(const airlock::v1::ResetUsageRequest& request) {
  AIRLOCK_RETURN_IF_ERROR(ValidateIdentity(request.identity()));
  if (!airlock::v1::ResetUsageRequest::Window_IsValid(request.window())) {
    return absl::InvalidArgumentError(absl::StrCat("window: unknown value ", request.window()));
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
      anchor.ok() ? audit::VerifySnapshot(
                        snapshot, trail->public_key_pem(), [context] { return context->IsCancelled(); },
                        trail->verify_policy())
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

grpc::Status AdminService::GetUsage(grpc::ServerContext* context, const airlock::v1::GetUsageRequest* request,
                                    airlock::v1::GetUsageResponse* response) {
  absl::StatusOr<CallInfo> call = AdmitQuota(*context, kGetUsage, *request, config_, ValidateGetUsageMessage);
  if (!call.ok()) return ToGrpcStatus(call.status());
  const RuntimeConfig& config = *call->config;
  absl::Status status = CheckKnownIdentity(config, request->identity());
  if (status.ok()) FillQuota(config, request->identity(), response->mutable_quota());
  LogCallEnd(*call, status, {{"identity_asked", request->identity()}});
  return ToGrpcStatus(status);
}

grpc::Status AdminService::ListUsage(grpc::ServerContext* context, const airlock::v1::ListUsageRequest* request,
                                     airlock::v1::ListUsageResponse* response) {
  absl::StatusOr<CallInfo> call = AdmitQuota(*context, kListUsage, *request, config_, ValidateListUsageMessage);
  if (!call.ok()) return ToGrpcStatus(call.status());
  const RuntimeConfig& config = *call->config;
  std::set<std::string> identities;
  for (std::string& name : config.quotas->Users()) identities.insert(std::move(name));
  for (std::string& name : config.ledger->Identities()) identities.insert(std::move(name));
  const uint32_t limit = request->limit() == 0 ? kDefaultListLimit : request->limit();
  for (auto it = identities.upper_bound(request->after_identity()); it != identities.end(); ++it) {
    if (static_cast<uint32_t>(response->quotas_size()) >= limit) {
      response->set_more(true);
      break;
    }
    FillQuota(config, *it, response->add_quotas());
  }
  LogCallEnd(*call, absl::OkStatus(), {{"identities", response->quotas_size()}});
  return grpc::Status::OK;
}

grpc::Status AdminService::SetQuotaOverride(grpc::ServerContext* context,
                                            const airlock::v1::SetQuotaOverrideRequest* request,
                                            airlock::v1::SetQuotaOverrideResponse* response) {
  absl::StatusOr<CallInfo> call =
      AdmitQuota(*context, kSetQuotaOverride, *request, config_, ValidateSetQuotaOverrideMessage);
  if (!call.ok()) return ToGrpcStatus(call.status());
  const RuntimeConfig& config = *call->config;
  absl::Status status = CheckKnownIdentity(config, request->identity());
  if (status.ok()) {
    std::vector<auth::Limit> remove;
    for (const std::string& name : request->remove()) remove.push_back(*auth::LimitNamed(name));
    absl::StatusOr<auth::QuotaOverride> updated =
        config.ledger->UpdateOverride(request->identity(), request->set(), remove, request->clear());
    status = updated.status();
    if (status.ok()) FillQuota(config, request->identity(), response->mutable_quota());
  }
  if (status.ok()) {
    LogInfo("quota override changed", {{"request_id", call->request_id},
                                       {"by", call->identity.name},
                                       {"identity", request->identity()},
                                       {"override", Parameters(response->quota().admin_override())}});
  }
  LogCallEnd(*call, status, {{"identity_asked", request->identity()}});
  return ToGrpcStatus(status);
}

grpc::Status AdminService::ResetUsage(grpc::ServerContext* context, const airlock::v1::ResetUsageRequest* request,
                                      airlock::v1::ResetUsageResponse* response) {
  absl::StatusOr<CallInfo> call = AdmitQuota(*context, kResetUsage, *request, config_, ValidateResetUsageMessage);
  if (!call.ok()) return ToGrpcStatus(call.status());
  const RuntimeConfig& config = *call->config;
  absl::Status status = CheckKnownIdentity(config, request->identity());
  if (status.ok()) {
    auth::QuotaLedger::Window window = auth::QuotaLedger::Window::kAll;
    switch (request->window()) {
      case airlock::v1::ResetUsageRequest::WINDOW_MINUTE: window = auth::QuotaLedger::Window::kMinute; break;
      case airlock::v1::ResetUsageRequest::WINDOW_DAY: window = auth::QuotaLedger::Window::kDay; break;
      case airlock::v1::ResetUsageRequest::WINDOW_MONTH: window = auth::QuotaLedger::Window::kMonth; break;
      default: break;
    }
    absl::StatusOr<std::pair<auth::QuotaUsage, auth::QuotaUsage>> reset =
        config.ledger->ResetUsage(request->identity(), window);
    status = reset.status();
    if (status.ok()) {
      ToProto(reset->first, response->mutable_before());
      FillQuota(config, request->identity(), response->mutable_quota());
      LogInfo("quota usage reset", {{"request_id", call->request_id},
                                    {"by", call->identity.name},
                                    {"identity", request->identity()},
                                    {"window", airlock::v1::ResetUsageRequest::Window_Name(request->window())},
                                    {"before", Parameters(response->before())}});
    }
  }
  LogCallEnd(*call, status, {{"identity_asked", request->identity()}});
  return ToGrpcStatus(status);
}

absl::Status ValidateCreateApiKey(const airlock::v1::CreateApiKeyRequest& request) {
  AIRLOCK_RETURN_IF_ERROR(ValidateIdentity(request.identity()));
  AIRLOCK_RETURN_IF_ERROR(CheckApiKeyLabel(request.label()));
  if (request.never_expires() == (request.expires_unix_seconds() != 0)) {
    return absl::InvalidArgumentError("give either expires_unix_seconds or never_expires");
  }
  if (request.expires_unix_seconds() < 0) return absl::InvalidArgumentError("expires_unix_seconds: negative");
  return absl::OkStatus();
}

absl::Status ValidateListApiKeys(const airlock::v1::ListApiKeysRequest& request) {
  if (request.identity().empty()) return absl::OkStatus();
  return ValidateIdentity(request.identity());
}

absl::Status ValidateRevokeApiKey(const airlock::v1::RevokeApiKeyRequest& request) {
  if (!IsApiKeyId(request.id())) {
    return absl::InvalidArgumentError("id: expected 16 lowercase hex digits (airlockctl apikey list shows them)");
  }
  return absl::OkStatus();
}

namespace {

void ToProto(const ApiKeyRecord& key, airlock::v1::ApiKey* out) {
  out->set_id(key.id);
  out->set_identity(key.identity);
  out->set_label(key.label);
  out->set_created_unix_seconds(key.created_unix_seconds);
  out->set_created_by(key.created_by);
  out->set_expires_unix_seconds(key.expires_unix_seconds);
  out->set_revoked_unix_seconds(key.revoked_unix_seconds);
  out->set_revoked_by(key.revoked_by);
}

// The API key calls' admission: AdmitAdmin, then a daemon that accepts keys.
absl::StatusOr<CallInfo> AdmitApiKeys(const grpc::ServerContext& context, const char* method,
                                      const google::protobuf::Message& request, const RuntimeConfigHolder& holder,
                                      absl::Status (*validate)(const google::protobuf::Message&),
                                      const nlohmann::json& extra_parameters = nullptr) {
  auto admitted = AdmitAdmin(context, method, request, holder, validate, extra_parameters);
  if (!admitted.ok()) return admitted.status();
  CallInfo call = std::move(admitted->first);
  if (call.config->api_keys == nullptr) {
    const absl::Status status = absl::FailedPreconditionError("this daemon has API keys off (openai.api_keys)");
    LogCallEnd(call, status);
    return status;
  }
  return call;
}

}  // namespace

grpc::Status AdminService::CreateApiKey(grpc::ServerContext* context, const airlock::v1::CreateApiKeyRequest* request,
                                        airlock::v1::CreateApiKeyResponse* response) {
  // The id is chosen first, so that the call's admin record names the key it issues.
  const std::string id = ApiKeyRegistry::NewId();
  absl::StatusOr<CallInfo> call = AdmitApiKeys(*context, kCreateApiKey, *request, config_,
                                               ValidateCreateApiKeyMessage, {{"api_key_id", id}});
  if (!call.ok()) return ToGrpcStatus(call.status());
  const RuntimeConfig& config = *call->config;
  absl::Status status = absl::OkStatus();
  if (config.quotas == nullptr || !config.quotas->IsConfiguredUser(request->identity())) {
    status = absl::NotFoundError(absl::StrCat("identity \"", request->identity(), "\" is not a configured user"));
  } else {
    const absl::Time expires =
        request->never_expires() ? absl::InfiniteFuture() : absl::FromUnixSeconds(request->expires_unix_seconds());
    absl::StatusOr<ApiKeyRegistry::Created> created = config.api_keys->Create(
        id, request->identity(), request->label(), expires, call->identity.name, absl::Now());
    status = created.status();
    if (status.ok()) {
      ToProto(created->key, response->mutable_key());
      response->set_secret(std::move(created->secret));
      LogInfo("api key created", {{"request_id", call->request_id},
                                  {"by", call->identity.name},
                                  {"identity", request->identity()},
                                  {"api_key_id", id}});
    }
  }
  LogCallEnd(*call, status, {{"identity_asked", request->identity()}, {"api_key_id", id}});
  return ToGrpcStatus(status);
}

grpc::Status AdminService::ListApiKeys(grpc::ServerContext* context, const airlock::v1::ListApiKeysRequest* request,
                                       airlock::v1::ListApiKeysResponse* response) {
  absl::StatusOr<CallInfo> call = AdmitApiKeys(*context, kListApiKeys, *request, config_, ValidateListApiKeysMessage);
  if (!call.ok()) return ToGrpcStatus(call.status());
  for (const ApiKeyRecord& key : call->config->api_keys->List(request->identity())) ToProto(key, response->add_keys());
  LogCallEnd(*call, absl::OkStatus(), {{"keys", response->keys_size()}});
  return grpc::Status::OK;
}

grpc::Status AdminService::RevokeApiKey(grpc::ServerContext* context, const airlock::v1::RevokeApiKeyRequest* request,
                                        airlock::v1::RevokeApiKeyResponse* response) {
  absl::StatusOr<CallInfo> call =
      AdmitApiKeys(*context, kRevokeApiKey, *request, config_, ValidateRevokeApiKeyMessage);
  if (!call.ok()) return ToGrpcStatus(call.status());
  absl::StatusOr<ApiKeyRecord> revoked = call->config->api_keys->Revoke(request->id(), call->identity.name, absl::Now());
  if (revoked.ok()) {
    ToProto(*revoked, response->mutable_key());
    LogInfo("api key revoked", {{"request_id", call->request_id},
                                {"by", call->identity.name},
                                {"identity", revoked->identity},
                                {"api_key_id", revoked->id}});
  }
  LogCallEnd(*call, revoked.status(), {{"api_key_id", request->id()}});
  return ToGrpcStatus(revoked.status());
}

}  // namespace airlock::daemon

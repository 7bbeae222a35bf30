// The transport-neutral steps of a generation call (generation_call.h).
#include "daemon/generation_call.h"

#include <algorithm>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "daemon/audit_trail.h"
#include "daemon/log.h"
#include "inference/tokenizer/utf8.h"

namespace airlock::daemon {
namespace {

// The status a job ends with, before its end record.
absl::Status Outcome(const absl::StatusOr<inference::GenerateResult>& result, const CallState& state) {
  if (!result.ok()) return result.status();
  if (result->stop_reason == inference::StopReason::kCancelled) {
    if (state.over_time.load()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the request ran past its deadline (the client's, or limits.max_request_duration = ",
          absl::FormatDuration(state.call.config->max_request_duration), ")"));
    }
    // The transport cancels the calls still running when the drain's deadline passes: the client
    // got UNAVAILABLE, and the record must say that, not that the client cancelled.
    const int64_t drain_at = state.drain_cancel_at != nullptr ? state.drain_cancel_at->load() : 0;
    if (drain_at != 0 && absl::Now() >= absl::FromUnixNanos(drain_at)) {
      return absl::UnavailableError(
          "airlockd is shutting down: the request was still running when server.drain_timeout ran out");
    }
    return absl::CancelledError("the client cancelled the request");
  }
  return absl::OkStatus();
}

// Validation shared by the generation methods (after AdmitCall authorised method and model).
template <typename Request>
absl::StatusOr<PreparedGeneration> Prepare(const Request& request, const CallInfo& call, const ModelRegistry& models) {
  if (request.model().empty()) return absl::InvalidArgumentError("model: required");
  if (!inference::utf8::IsValid(request.model())) return absl::InvalidArgumentError("model: is not valid UTF-8");
  PreparedGeneration prepared;
  prepared.model = models.Find(request.model());
  if (prepared.model == nullptr) {
    return absl::NotFoundError(absl::StrCat("model: \"", request.model(), "\" is not served here"));
  }
  const ServedModel& model = *prepared.model;
  const RequestLimits& limits = call.config->limits;
  absl::StatusOr<inference::GenerateRequest> checked;
  if constexpr (std::is_same_v<Request, airlock::v1::ChatRequest>) {
    if (!model.chat_template) {
      return absl::FailedPreconditionError(
          absl::StrCat("model \"", model.name, "\" has no usable chat template: ", model.chat_template_error));
    }
    checked = PrepareChat(request, *model.engine, *model.chat_template, limits);
  } else {
    checked = PrepareGenerate(request, *model.engine, limits);
  }
  if (!checked.ok()) return checked.status();
  prepared.request = *std::move(checked);
  return prepared;
}

std::string PromptText(const airlock::v1::GenerateRequest& request) { return request.prompt(); }

// A chat as one text for its HMAC: "role\ncontent\n" per message (documented in docs/audit.md).
std::string PromptText(const airlock::v1::ChatRequest& request) {
  std::string text;
  for (const airlock::v1::ChatMessage& m : request.messages()) absl::StrAppend(&text, m.role(), "\n", m.content(), "\n");
  return text;
}

// Who may reuse the prompt prefixes this call caches (models[].prefix_cache). Per identity by
// default: the time to first token shows whether a prefix was cached, so a shared cache would let
// one caller probe another's prompts.
std::string CacheScope(const ServedModel& model, const CallState& state) {
  switch (model.prefix_cache) {
    case PrefixCacheScope::kModel: return "model";
    case PrefixCacheScope::kOff: return "off";  // the engine caches nothing then
    case PrefixCacheScope::kIdentity: break;
  }
  return absl::StrCat("identity:", state.call.identity.name);
}

template <typename Request>
absl::StatusOr<PreparedGeneration> Begin(CallState& state, const Request& request, const ModelRegistry& models) {
  absl::StatusOr<PreparedGeneration> prepared = Prepare(request, state.call, models);
  if (!prepared.ok()) return AuditSingle(state.call, prepared.status());
  const CallInfo& c = state.call;
  // Quota: the worst case (prompt + max_tokens) is reserved before anything is recorded as begun.
  if (auth::QuotaLedger* ledger = c.config->ledger; ledger != nullptr) {
    absl::StatusOr<std::unique_ptr<auth::QuotaLedger::Reservation>> reserved =
        ledger->Reserve(c.identity.name, c.config->quotas->LimitsOf(c.identity.name),
                        prepared->request.prompt_tokens.size(),
                        static_cast<uint64_t>(std::max(prepared->request.max_tokens, 0)));
    if (!reserved.ok()) {
      if (auto limit = reserved.status().GetPayload(auth::kQuotaLimitPayloadUrl); limit && c.config->metrics) {
        c.config->metrics->QuotaRefused(std::string(*limit));
      }
      const absl::Status recorded = AuditSingle(state.call, reserved.status());
      if (auto cause = reserved.status().GetPayload(auth::kQuotaStoreErrorPayloadUrl); cause.has_value()) {
        LogError("quota usage not saved; refusing the call",
                 {{"request_id", c.request_id}, {"identity", c.identity.name}, {"error", std::string(*cause)}});
      } else if (!c.refusal_counted) {
        LogWarning("call refused by quota", {{"request_id", c.request_id},
                                             {"identity", c.identity.name},
                                             {"reason", std::string(reserved.status().message())}});
      }
      return recorded;
    }
    state.quota = *std::move(reserved);
  }
  // The begin record is durable before any work starts; no record, no generation.
  state.prompt_text = PromptText(request);
  state.sampling =
      CanonicalSampling(prepared->request.sampling) + CanonicalResponseFormat(prepared->request.response_format);
  if (AuditTrail* audit = c.config->audit; audit != nullptr) {
    AuditTrail::Outcome begin;
    begin.sampling = state.sampling;
    begin.prompt = state.prompt_text;
    begin.prompt_tokens = static_cast<uint32_t>(prepared->request.prompt_tokens.size());
    if (absl::Status recorded = audit->Begin(state.call, begin); !recorded.ok()) return recorded;
  }
  if (Metrics* metrics = c.config->metrics; metrics != nullptr) state.timers = metrics->TimersFor(prepared->model->name);
  return prepared;
}

}  // namespace

bool CallState::ShouldStop() {
  if (client_gone.load(std::memory_order_relaxed)) return true;
  if (std::chrono::steady_clock::now() >= deadline) {
    over_time.store(true);
    return true;
  }
  return false;
}

void CallState::NotePiece(const inference::GeneratedPiece& piece) {
  const auto now = std::chrono::steady_clock::now();
  const auto seconds = [](auto d) { return std::chrono::duration<double>(d).count(); };
  if (!saw_first_piece.exchange(true)) {
    first_piece = now;
    if (timers.first_token != nullptr) timers.first_token->Observe(seconds(now - call.start));
  } else if (piece.token >= 0 && timers.inter_token != nullptr) {
    timers.inter_token->Observe(seconds(now - last_token));
  }
  if (piece.token >= 0) last_token = now;
}

std::optional<double> CallState::TimeToFirstPiece() const {
  if (!saw_first_piece.load()) return std::nullopt;
  return std::chrono::duration<double>(first_piece - call.start).count();
}

absl::StatusOr<std::shared_ptr<CallState>> AdmitGeneration(
    const CallOrigin& origin, std::string_view method, std::string_view model, const RuntimeConfigHolder& config,
    const std::atomic<int64_t>& drain_cancel_at,
    std::optional<std::chrono::system_clock::time_point> client_deadline) {
  // Method and model are authorised together, once (an empty model is refused by BeginGeneration).
  absl::StatusOr<CallInfo> call = AdmitCall(origin, method, model, config);
  if (!call.ok()) return call.status();
  auto state = std::make_shared<CallState>();
  state->drain_cancel_at = &drain_cancel_at;
  state->call = *std::move(call);
  state->deadline = state->call.start + absl::ToChronoNanoseconds(state->call.config->max_request_duration);
  if (client_deadline.has_value() && *client_deadline != std::chrono::system_clock::time_point::max()) {
    const auto remaining = *client_deadline - std::chrono::system_clock::now();
    state->deadline = std::min(state->deadline, std::chrono::steady_clock::now() + remaining);
  }
  return state;
}

absl::StatusOr<PreparedGeneration> BeginGeneration(CallState& state, const airlock::v1::GenerateRequest& request,
                                                   const ModelRegistry& models) {
  return Begin(state, request, models);
}

absl::StatusOr<PreparedGeneration> BeginGeneration(CallState& state, const airlock::v1::ChatRequest& request,
                                                   const ModelRegistry& models) {
  return Begin(state, request, models);
}

std::unique_ptr<GenerationJob> MakeGenerationJob(
    const std::shared_ptr<CallState>& state, const ServedModel& model, inference::GenerateRequest request,
    std::function<bool(const inference::GeneratedPiece&)> on_piece,
    std::function<void(absl::StatusOr<inference::GenerateResult>, double)> on_done) {
  auto job = std::make_unique<GenerationJob>();
  job->owner = state->call.identity.name;
  job->request = std::move(request);
  job->request.cache_scope = CacheScope(model, *state);
  job->request.cancelled = [state] { return state->ShouldStop(); };
  job->on_piece = [state, on_piece = std::move(on_piece)](const inference::GeneratedPiece& piece) {
    state->NotePiece(piece);
    return on_piece(piece);
  };
  job->on_done = std::move(on_done);
  return job;
}

absl::Status EndGeneration(CallState& state, const absl::StatusOr<inference::GenerateResult>& result,
                           double queue_seconds) {
  const absl::Status status = Outcome(result, state);
  if (state.quota != nullptr) {
    const uint64_t prompt = result.ok() ? result->prompt_tokens.size() : 0;
    const uint64_t completion = result.ok() ? result->output_tokens.size() : 0;
    if (absl::Status settled = state.quota->Settle(prompt, completion); !settled.ok()) {
      LogError("quota usage not saved", {{"request_id", state.call.request_id},
                                         {"error", std::string(settled.message())}});
    }
  }
  if (Metrics* metrics = state.call.config->metrics; metrics != nullptr && result.ok()) {
    metrics->GenerationEnded(state.call.model, result->prompt_tokens.size(), result->output_tokens.size(),
                             queue_seconds);
  }
  AuditTrail* audit = state.call.config->audit;
  if (audit == nullptr) return status;
  AuditTrail::Outcome outcome;
  outcome.status = status;
  outcome.sampling = state.sampling;
  if (result.ok()) {
    outcome.prompt_tokens = static_cast<uint32_t>(result->prompt_tokens.size());
    outcome.completion_tokens = static_cast<uint32_t>(result->output_tokens.size());
    outcome.stop_reason = inference::StopReasonName(result->stop_reason);
    outcome.output = result->text;
  }
  if (absl::Status recorded = audit->End(state.call, outcome); !recorded.ok()) return recorded;
  return status;
}

airlock::v1::StopReason ToProto(inference::StopReason reason) {
  switch (reason) {
    case inference::StopReason::kMaxTokens: return airlock::v1::STOP_REASON_MAX_TOKENS;
    case inference::StopReason::kEndOfGeneration: return airlock::v1::STOP_REASON_END_OF_GENERATION;
    case inference::StopReason::kStopString: return airlock::v1::STOP_REASON_STOP_STRING;
    case inference::StopReason::kContextFull: return airlock::v1::STOP_REASON_CONTEXT_FULL;
    case inference::StopReason::kCancelled: return airlock::v1::STOP_REASON_CANCELLED;
  }
  return airlock::v1::STOP_REASON_UNSPECIFIED;
}

nlohmann::json GenerationLogFields(const absl::StatusOr<inference::GenerateResult>& result, double queue_seconds) {
  if (!result.ok()) return {{"queue_seconds", queue_seconds}};
  return {{"prompt_tokens", result->prompt_tokens.size()},
          {"completion_tokens", result->output_tokens.size()},
          {"stop_reason", inference::StopReasonName(result->stop_reason)},
          {"queue_seconds", queue_seconds},
          {"prompt_seconds", result->prompt_seconds},
          {"generation_seconds", result->generation_seconds}};
}

}  // namespace airlock::daemon

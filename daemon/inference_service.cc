// The Inference service: admission -> validation -> generation job -> reactor (unary or stream).
#include "daemon/inference_service.h"

#include <atomic>
#include <deque>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/audit_trail.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "inference/tokenizer/utf8.h"

namespace airlock::daemon {
namespace {

using airlock::v1::GenerateStreamResponse;

constexpr char kGenerate[] = "airlock.v1.Inference/Generate";
constexpr char kGenerateStream[] = "airlock.v1.Inference/GenerateStream";
constexpr char kChat[] = "airlock.v1.Inference/Chat";
constexpr char kChatStream[] = "airlock.v1.Inference/ChatStream";
constexpr char kTokenize[] = "airlock.v1.Inference/Tokenize";
constexpr char kListModels[] = "airlock.v1.Inference/ListModels";

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

// State shared by a call's reactor and its generation job.
struct CallState {
  CallInfo call;
  std::atomic<bool> client_gone{false};  // the client cancelled, disconnected or its deadline passed
  std::atomic<bool> over_time{false};    // limits.max_request_duration passed
  // When the daemon's drain cancels what still runs (unix nanoseconds, 0 while not draining):
  // InferenceService::drain_cancel_at_, which outlives every call.
  const std::atomic<int64_t>* drain_cancel_at = nullptr;
  std::chrono::steady_clock::time_point deadline;
  std::chrono::steady_clock::time_point first_piece{};
  std::atomic<bool> saw_first_piece{false};
  // The model's token timing histograms (none without metrics), and when the last token came
  // (the engine's step thread only).
  Metrics::TokenTimers timers;
  std::chrono::steady_clock::time_point last_token{};
  // For the audit records: the prompt as the client sent it (HMAC'd, never stored) and the
  // sampling parameters in canonical text.
  std::string prompt_text;
  std::string sampling;
  // The quota reservation, settled with the actual usage when the job ends (or released with the
  // state when it never ran).
  std::unique_ptr<auth::QuotaLedger::Reservation> quota;

  bool ShouldStop() {
    if (client_gone.load(std::memory_order_relaxed)) return true;
    if (std::chrono::steady_clock::now() >= deadline) {
      over_time.store(true);
      return true;
    }
    return false;
  }
  // On the engine's step thread, for every piece: the first one's time, and the token timings.
  void NotePiece(const inference::GeneratedPiece& piece) {
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
};

// Deadline: the client's, capped by limits.max_request_duration.
std::chrono::steady_clock::time_point CallDeadline(const grpc::CallbackServerContext& context, const CallInfo& call) {
  const auto cap = call.start + absl::ToChronoNanoseconds(call.config->max_request_duration);
  const auto client = context.deadline();  // system_clock; max() when the client set none
  if (client == std::chrono::system_clock::time_point::max()) return cap;
  const auto remaining = client - std::chrono::system_clock::now();
  const auto client_steady = std::chrono::steady_clock::now() + remaining;
  return std::min(cap, client_steady);
}

// The status a job ends with, before its end record.
absl::Status Outcome(const absl::StatusOr<inference::GenerateResult>& result, const CallState& state) {
  if (!result.ok()) return result.status();
  if (result->stop_reason == inference::StopReason::kCancelled) {
    if (state.over_time.load()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the request ran past its deadline (the client's, or limits.max_request_duration = ",
          absl::FormatDuration(state.call.config->max_request_duration), ")"));
    }
    // gRPC cancels the calls still running when the drain's deadline passes: the client got
    // UNAVAILABLE, and the record must say that, not that the client cancelled.
    const int64_t drain_at = state.drain_cancel_at != nullptr ? state.drain_cancel_at->load() : 0;
    if (drain_at != 0 && absl::Now() >= absl::FromUnixNanos(drain_at)) {
      return absl::UnavailableError(
          "airlockd is shutting down: the request was still running when server.drain_timeout ran out");
    }
    return absl::CancelledError("the client cancelled the request");
  }
  return absl::OkStatus();
}

void FillUsageAndTimings(const inference::GenerateResult& result, double queue_seconds, const CallState& state,
                         airlock::v1::Usage* usage, airlock::v1::Timings* timings) {
  usage->set_prompt_tokens(static_cast<uint32_t>(result.prompt_tokens.size()));
  usage->set_completion_tokens(static_cast<uint32_t>(result.output_tokens.size()));
  usage->set_total_tokens(usage->prompt_tokens() + usage->completion_tokens());
  timings->set_queue_seconds(queue_seconds);
  timings->set_prompt_seconds(result.prompt_seconds);
  timings->set_generation_seconds(result.generation_seconds);
  if (state.saw_first_piece.load()) {
    timings->set_time_to_first_token_seconds(
        std::chrono::duration<double>(state.first_piece - state.call.start).count());
  }
}

// Settles the quota reservation with what the job used, counts it in the metrics, then writes the
// end record of a generation. The result is acknowledged only if it is recorded: an unwritable audit log turns
// success into UNAVAILABLE.
absl::Status AuditEnd(CallState& state, const absl::StatusOr<inference::GenerateResult>& result,
                      const absl::Status& status, double queue_seconds) {
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

nlohmann::json UsageFields(const absl::StatusOr<inference::GenerateResult>& result, double queue_seconds) {
  if (!result.ok()) return {{"queue_seconds", queue_seconds}};
  return {{"prompt_tokens", result->prompt_tokens.size()},
          {"completion_tokens", result->output_tokens.size()},
          {"stop_reason", inference::StopReasonName(result->stop_reason)},
          {"queue_seconds", queue_seconds},
          {"prompt_seconds", result->prompt_seconds},
          {"generation_seconds", result->generation_seconds}};
}

// Validation shared by the four generation methods (after AdmitCall authorised method and model).
// On success `model` is set.
template <typename Request>
absl::StatusOr<inference::GenerateRequest> Prepare(const Request& request, CallInfo& call, const ModelRegistry& models,
                                                   const ServedModel*& model) {
  if (request.model().empty()) return absl::InvalidArgumentError("model: required");
  if (!inference::utf8::IsValid(request.model())) return absl::InvalidArgumentError("model: is not valid UTF-8");
  model = models.Find(request.model());
  if (model == nullptr) return absl::NotFoundError(absl::StrCat("model: \"", request.model(), "\" is not served here"));
  RequestLimits limits = call.config->limits;
  if constexpr (std::is_same_v<Request, airlock::v1::ChatRequest>) {
    if (!model->chat_template) {
      return absl::FailedPreconditionError(
          absl::StrCat("model \"", model->name, "\" has no usable chat template: ", model->chat_template_error));
    }
    return PrepareChat(request, *model->engine, *model->chat_template, limits);
  } else {
    return PrepareGenerate(request, *model->engine, limits);
  }
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

// ---- Unary generation ------------------------------------------------------------------------

class UnaryGeneration final : public grpc::ServerUnaryReactor {
 public:
  UnaryGeneration(std::shared_ptr<CallState> state, airlock::v1::GenerateResponse* response)
      : state_(std::move(state)), response_(response) {}

  // Submits the job or finishes with the error.
  void Start(const ServedModel& model, inference::GenerateRequest request) {
    auto job = std::make_unique<GenerationJob>();
    job->owner = state_->call.identity.name;
    job->request = std::move(request);
    job->request.cache_scope = CacheScope(model, *state_);
    std::shared_ptr<CallState> state = state_;
    job->request.cancelled = [state] { return state->ShouldStop(); };
    job->on_piece = [state](const inference::GeneratedPiece& piece) {
      state->NotePiece(piece);
      return true;
    };
    job->on_done = [this, name = model.name](absl::StatusOr<inference::GenerateResult> result, double queue_seconds) {
      Complete(name, result, queue_seconds);
    };
    if (absl::Status submitted = model.queue->Submit(std::move(job)); !submitted.ok()) End(submitted);
  }

  void End(const absl::Status& status, const nlohmann::json& fields = nullptr) {
    LogCallEnd(state_->call, status, fields);
    Finish(ToGrpcStatus(status));  // the last use of `this` by our code
  }

  void OnCancel() override { state_->client_gone.store(true); }
  void OnDone() override { delete this; }

 private:
  void Complete(const std::string& model_name, const absl::StatusOr<inference::GenerateResult>& result,
                double queue_seconds) {
    const absl::Status status = AuditEnd(*state_, result, Outcome(result, *state_), queue_seconds);
    if (status.ok()) {
      response_->set_request_id(state_->call.request_id);
      response_->set_model(model_name);
      response_->set_text(result->text);
      response_->mutable_token_ids()->Add(result->output_tokens.begin(), result->output_tokens.end());
      response_->set_stop_reason(ToProto(result->stop_reason));
      FillUsageAndTimings(*result, queue_seconds, *state_, response_->mutable_usage(), response_->mutable_timings());
    }
    End(status, UsageFields(result, queue_seconds));
  }

  std::shared_ptr<CallState> state_;
  airlock::v1::GenerateResponse* response_;
};

// ---- Streamed generation ---------------------------------------------------------------------

// Pieces arrive from the engine's step thread faster or slower than the client reads them; they
// wait in `pending_` (consecutive pieces are merged, so a slow reader gets fewer, larger messages)
// and are written one at a time. The final message and Finish follow the last piece.
//
// Lifetime: two references, gRPC's (dropped in OnDone) and the producer's (dropped by End, the
// producer's last call), because a write completing on a gRPC thread may Finish the call while the
// queue's dispatcher thread (which runs on_done) is still inside End.
class StreamGeneration final : public grpc::ServerWriteReactor<GenerateStreamResponse> {
 public:
  explicit StreamGeneration(std::shared_ptr<CallState> state) : state_(std::move(state)) {}

  // Ends the call before any job was submitted (admission failed).
  void Finish(const grpc::Status& status) {
    grpc::ServerWriteReactor<GenerateStreamResponse>::Finish(status);
    Unref();
  }

  void Start(const ServedModel& model, inference::GenerateRequest request) {
    auto job = std::make_unique<GenerationJob>();
    job->owner = state_->call.identity.name;
    job->request = std::move(request);
    job->request.cache_scope = CacheScope(model, *state_);
    std::shared_ptr<CallState> state = state_;
    job->request.cancelled = [state] { return state->ShouldStop(); };
    job->on_piece = [this](const inference::GeneratedPiece& piece) {
      state_->NotePiece(piece);
      AddPiece(piece);
      return !state_->client_gone.load(std::memory_order_relaxed);
    };
    job->on_done = [this, name = model.name](absl::StatusOr<inference::GenerateResult> result, double queue_seconds) {
      Complete(name, result, queue_seconds);
    };
    if (absl::Status submitted = model.queue->Submit(std::move(job)); !submitted.ok()) End(submitted);
  }

  void End(const absl::Status& status, const nlohmann::json& fields = nullptr) {
    LogCallEnd(state_->call, status, fields);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      finish_status_ = ToGrpcStatus(status);
    }
    Pump();
    Unref();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      writing_ = false;
      if (!ok) {  // the client is gone: stop generating, drop what is left
        state_->client_gone.store(true);
        pending_.clear();
      }
    }
    Pump();
  }
  void OnCancel() override { state_->client_gone.store(true); }
  void OnDone() override { Unref(); }

 private:
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  void AddPiece(const inference::GeneratedPiece& piece) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (pending_.empty() || !pending_.back().has_piece()) pending_.emplace_back().mutable_piece();
      airlock::v1::TextPiece* p = pending_.back().mutable_piece();
      p->mutable_text()->append(piece.text);
      if (piece.token >= 0) p->add_token_ids(piece.token);
    }
    Pump();
  }

  void Complete(const std::string& model_name, const absl::StatusOr<inference::GenerateResult>& result,
                double queue_seconds) {
    const absl::Status status = AuditEnd(*state_, result, Outcome(result, *state_), queue_seconds);
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(mutex_);
      airlock::v1::Completion* done = pending_.emplace_back().mutable_done();
      done->set_request_id(state_->call.request_id);
      done->set_model(model_name);
      done->set_stop_reason(ToProto(result->stop_reason));
      FillUsageAndTimings(*result, queue_seconds, *state_, done->mutable_usage(), done->mutable_timings());
    }
    End(status, UsageFields(result, queue_seconds));
  }

  // Starts the next write, or Finish once everything is written and the job has ended. gRPC
  // methods are called outside the lock (a reaction may run inline).
  void Pump() {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    grpc::Status status;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (writing_ || finished_) return;
      if (!pending_.empty()) {
        in_flight_ = std::move(pending_.front());
        pending_.pop_front();
        writing_ = true;
        action = kWrite;
      } else if (finish_status_) {
        finished_ = true;
        status = *finish_status_;
        action = kFinish;
      }
    }
    if (action == kWrite) StartWrite(&in_flight_);
    if (action == kFinish) grpc::ServerWriteReactor<GenerateStreamResponse>::Finish(status);
  }

  std::atomic<int> refs_{2};
  std::shared_ptr<CallState> state_;
  std::mutex mutex_;
  std::deque<GenerateStreamResponse> pending_;  // guarded by mutex_
  GenerateStreamResponse in_flight_;            // owned by gRPC while writing_
  bool writing_ = false;                        // guarded by mutex_
  bool finished_ = false;                       // guarded by mutex_
  std::optional<grpc::Status> finish_status_;   // guarded by mutex_
};

template <typename Request, typename Reactor, typename... Extra>
Reactor* StartGeneration(grpc::CallbackServerContext* context, const Request& request, const char* method,
                         const ModelRegistry& models, const RuntimeConfigHolder& config,
                         const std::atomic<int64_t>& drain_cancel_at, Extra... extra) {
  // Method and model are authorised together, once (an empty model is refused by Prepare).
  absl::StatusOr<CallInfo> call = AdmitCall(*context, method, request.model(), config);
  if (!call.ok()) {
    auto* reactor = new Reactor(std::make_shared<CallState>(), extra...);
    reactor->Finish(ToGrpcStatus(call.status()));
    return reactor;
  }
  auto state = std::make_shared<CallState>();
  state->drain_cancel_at = &drain_cancel_at;
  state->call = std::move(*call);
  state->deadline = CallDeadline(*context, state->call);
  auto* reactor = new Reactor(state, extra...);
  const ServedModel* model = nullptr;
  absl::StatusOr<inference::GenerateRequest> prepared = Prepare(request, state->call, models, model);
  if (!prepared.ok()) {
    reactor->End(AuditSingle(state->call, prepared.status()));
    return reactor;
  }
  // Quota: the worst case (prompt + max_tokens) is reserved before anything is recorded as begun.
  if (auth::QuotaLedger* ledger = state->call.config->ledger; ledger != nullptr) {
    const CallInfo& c = state->call;
    absl::StatusOr<std::unique_ptr<auth::QuotaLedger::Reservation>> reserved =
        ledger->Reserve(c.identity.name, c.config->quotas->LimitsOf(c.identity.name), prepared->prompt_tokens.size(),
                        static_cast<uint64_t>(std::max(prepared->max_tokens, 0)));
    if (!reserved.ok()) {
      if (auto limit = reserved.status().GetPayload(auth::kQuotaLimitPayloadUrl); limit && c.config->metrics) {
        c.config->metrics->QuotaRefused(std::string(*limit));
      }
      const absl::Status recorded = AuditSingle(state->call, reserved.status());
      if (auto cause = reserved.status().GetPayload(auth::kQuotaStoreErrorPayloadUrl); cause.has_value()) {
        LogError("quota usage not saved; refusing the call",
                 {{"request_id", c.request_id}, {"identity", c.identity.name}, {"error", std::string(*cause)}});
      } else if (!c.refusal_counted) {
        LogWarning("call refused by quota", {{"request_id", c.request_id},
                                             {"identity", c.identity.name},
                                             {"reason", std::string(reserved.status().message())}});
      }
      reactor->End(recorded);
      return reactor;
    }
    state->quota = *std::move(reserved);
  }
  // The begin record is durable before any work starts; no record, no generation.
  state->prompt_text = PromptText(request);
  state->sampling = CanonicalSampling(prepared->sampling) + CanonicalResponseFormat(prepared->response_format);
  if (AuditTrail* audit = state->call.config->audit; audit != nullptr) {
    AuditTrail::Outcome begin;
    begin.sampling = state->sampling;
    begin.prompt = state->prompt_text;
    begin.prompt_tokens = static_cast<uint32_t>(prepared->prompt_tokens.size());
    if (absl::Status recorded = audit->Begin(state->call, begin); !recorded.ok()) {
      reactor->End(recorded);
      return reactor;
    }
  }
  if (Metrics* metrics = state->call.config->metrics; metrics != nullptr) {
    state->timers = metrics->TimersFor(model->name);
  }
  reactor->Start(*model, std::move(*prepared));
  return reactor;
}

// Trivial unary reactor for calls answered at once.
class ImmediateReactor final : public grpc::ServerUnaryReactor {
 public:
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* FinishNow(const absl::Status& status) {
  auto* reactor = new ImmediateReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Token text for display: valid UTF-8 as is, otherwise each byte as <0xNN>.
std::string DisplayPiece(std::string_view piece) {
  if (inference::utf8::IsValid(piece)) return std::string(piece);
  std::string out;
  for (const char c : piece) absl::StrAppendFormat(&out, "<0x%02X>", static_cast<unsigned char>(c));
  return out;
}

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                     const airlock::v1::GenerateRequest* request,
                                                     airlock::v1::GenerateResponse* response) {
  return StartGeneration<airlock::v1::GenerateRequest, UnaryGeneration>(context, *request, kGenerate, models_, config_,
                                                                        drain_cancel_at_, response);
}

grpc::ServerWriteReactor<GenerateStreamResponse>* InferenceService::GenerateStream(
    grpc::CallbackServerContext* context, const airlock::v1::GenerateRequest* request) {
  return StartGeneration<airlock::v1::GenerateRequest, StreamGeneration>(context, *request, kGenerateStream, models_,
                                                                         config_, drain_cancel_at_);
}

grpc::ServerUnaryReactor* InferenceService::Chat(grpc::CallbackServerContext* context,
                                                 const airlock::v1::ChatRequest* request,
                                                 airlock::v1::GenerateResponse* response) {
  return StartGeneration<airlock::v1::ChatRequest, UnaryGeneration>(context, *request, kChat, models_, config_,
                                                                    drain_cancel_at_, response);
}

grpc::ServerWriteReactor<GenerateStreamResponse>* InferenceService::ChatStream(grpc::CallbackServerContext* context,
                                                                              const airlock::v1::ChatRequest* request) {
  return StartGeneration<airlock::v1::ChatRequest, StreamGeneration>(context, *request, kChatStream, models_, config_,
                                                                     drain_cancel_at_);
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const airlock::v1::TokenizeRequest* request,
                                                     airlock::v1::TokenizeResponse* response) {
  absl::StatusOr<CallInfo> call = AdmitCall(*context, kTokenize, request->model(), config_);
  if (!call.ok()) return FinishNow(call.status());
  const absl::Status status = [&]() -> absl::Status {
    if (request->model().empty()) return absl::InvalidArgumentError("model: required");
    const ServedModel* model = models_.Find(request->model());
    if (model == nullptr) {
      return absl::NotFoundError(absl::StrCat("model: \"", request->model(), "\" is not served here"));
    }
    if (!inference::utf8::IsValid(request->text())) return absl::InvalidArgumentError("text: is not valid UTF-8");
    const inference::Tokenizer& tokenizer = model->engine->tokenizer();
    // Tokenizing is cheap next to generation and the tokenizer is immutable: done on this thread.
    const std::vector<int32_t> ids = tokenizer.Encode(request->text(), request->add_special(), request->parse_special());
    response->mutable_token_ids()->Add(ids.begin(), ids.end());
    for (const int32_t id : ids) response->add_pieces(DisplayPiece(tokenizer.PieceView(id, true)));
    return absl::OkStatus();
  }();
  const absl::Status recorded = AuditSingle(*call, status);
  if (!recorded.ok()) response->Clear();
  LogCallEnd(*call, recorded, {{"tokens", response->token_ids_size()}});
  return FinishNow(recorded);
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* context,
                                                       const airlock::v1::ListModelsRequest* /*request*/,
                                                       airlock::v1::ListModelsResponse* response) {
  absl::StatusOr<CallInfo> call = AdmitCall(*context, kListModels, "", config_);
  if (!call.ok()) return FinishNow(call.status());
  // Only the models the caller may use with some method.
  static constexpr std::string_view kModelMethods[] = {kGenerate, kGenerateStream, kChat, kChatStream, kTokenize};
  for (const auto& model : models_.models()) {
    if (!call->config->policy->AllowsAnyOf(call->identity.name, kModelMethods, model->name)) continue;
    airlock::v1::ModelInfo* info = response->add_models();
    *info = model->info;
    info->set_requests_running(static_cast<uint32_t>(model->queue->running()));
    info->set_requests_waiting(static_cast<uint32_t>(model->queue->waiting()));
    if (const absl::Status health = model->engine->Health(); !health.ok()) {
      info->set_unavailable(std::string(health.message()));
    }
  }
  const absl::Status recorded = AuditSingle(*call, absl::OkStatus());
  if (!recorded.ok()) response->Clear();
  LogCallEnd(*call, recorded, {{"models", response->models_size()}});
  return FinishNow(recorded);
}

}  // namespace airlock::daemon

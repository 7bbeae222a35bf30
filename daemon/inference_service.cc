// The Inference service: admission -> validation -> generation job -> reactor (unary or stream).
#include "daemon/inference_service.h"

#include <atomic>
#include <deque>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/audit_trail.h"
#include "daemon/generation_call.h"
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

// The client's deadline (system_clock; nullopt when it set none).
std::optional<std::chrono::system_clock::time_point> ClientDeadline(const grpc::CallbackServerContext& context) {
  const auto client = context.deadline();  // max() when the client set none
  if (client == std::chrono::system_clock::time_point::max()) return std::nullopt;
  return client;
}

void FillUsageAndTimings(const inference::GenerateResult& result, double queue_seconds, const CallState& state,
                         airlock::v1::Usage* usage, airlock::v1::Timings* timings) {
  usage->set_prompt_tokens(static_cast<uint32_t>(result.prompt_tokens.size()));
  usage->set_completion_tokens(static_cast<uint32_t>(result.output_tokens.size()));
  usage->set_total_tokens(usage->prompt_tokens() + usage->completion_tokens());
  timings->set_queue_seconds(queue_seconds);
  timings->set_prompt_seconds(result.prompt_seconds);
  timings->set_generation_seconds(result.generation_seconds);
  if (const std::optional<double> ttft = state.TimeToFirstPiece(); ttft.has_value()) {
    timings->set_time_to_first_token_seconds(*ttft);
  }
}

// ---- Unary generation ------------------------------------------------------------------------

class UnaryGeneration final : public grpc::ServerUnaryReactor {
 public:
  UnaryGeneration(std::shared_ptr<CallState> state, airlock::v1::GenerateResponse* response)
      : state_(std::move(state)), response_(response) {}

  // Submits the job or finishes with the error.
  void Start(PreparedGeneration prepared) {
    const ServedModel& model = *prepared.model;
    auto job = MakeGenerationJob(
        state_, model, std::move(prepared.request), [](const inference::GeneratedPiece&) { return true; },
        [this, name = model.name](absl::StatusOr<inference::GenerateResult> result, double queue_seconds) {
          Complete(name, result, queue_seconds);
        });
    // A refusal (queue full, shutting down) ends the generation as the queue's own refusals do
    // (quota settled, the end record written).
    if (absl::Status submitted = model.queue->Submit(std::move(job)); !submitted.ok()) {
      Complete(model.name, submitted, 0);
    }
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
    const absl::Status status = EndGeneration(*state_, result, queue_seconds);
    if (status.ok()) {
      response_->set_request_id(state_->call.request_id);
      response_->set_model(model_name);
      response_->set_text(result->text);
      response_->mutable_token_ids()->Add(result->output_tokens.begin(), result->output_tokens.end());
      response_->set_stop_reason(ToProto(result->stop_reason));
      FillUsageAndTimings(*result, queue_seconds, *state_, response_->mutable_usage(), response_->mutable_timings());
    }
    End(status, GenerationLogFields(result, queue_seconds));
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

  void Start(PreparedGeneration prepared) {
    const ServedModel& model = *prepared.model;
    auto job = MakeGenerationJob(
        state_, model, std::move(prepared.request),
        [this](const inference::GeneratedPiece& piece) {
          AddPiece(piece);
          return !state_->client_gone.load(std::memory_order_relaxed);
        },
        [this, name = model.name](absl::StatusOr<inference::GenerateResult> result, double queue_seconds) {
          Complete(name, result, queue_seconds);
        });
    // A refusal (queue full, shutting down) ends the generation as the queue's own refusals do
    // (quota settled, the end record written).
    if (absl::Status submitted = model.queue->Submit(std::move(job)); !submitted.ok()) {
      Complete(model.name, submitted, 0);
    }
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
    const absl::Status status = EndGeneration(*state_, result, queue_seconds);
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(mutex_);
      airlock::v1::Completion* done = pending_.emplace_back().mutable_done();
      done->set_request_id(state_->call.request_id);
      done->set_model(model_name);
      done->set_stop_reason(ToProto(result->stop_reason));
      FillUsageAndTimings(*result, queue_seconds, *state_, done->mutable_usage(), done->mutable_timings());
    }
    End(status, GenerationLogFields(result, queue_seconds));
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
  absl::StatusOr<std::shared_ptr<CallState>> state =
      AdmitGeneration(OriginOf(*context), method, request.model(), config, drain_cancel_at, ClientDeadline(*context));
  if (!state.ok()) {
    auto* reactor = new Reactor(std::make_shared<CallState>(), extra...);
    reactor->Finish(ToGrpcStatus(state.status()));
    return reactor;
  }
  auto* reactor = new Reactor(*state, extra...);
  absl::StatusOr<PreparedGeneration> prepared = BeginGeneration(**state, request, models);
  if (!prepared.ok()) {
    reactor->End(prepared.status());
    return reactor;
  }
  reactor->Start(*std::move(prepared));
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

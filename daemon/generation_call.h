// The life of a generation call, the same for every transport (gRPC's reactors in
// inference_service.cc, the OpenAI-compatible HTTPS listener in openai_server.cc):
//
//   AdmitGeneration   identity, roles (AdmitCall), the call's deadline
//   BeginGeneration   validation and tokenization (PrepareGenerate/PrepareChat), the quota
//                     reservation of the worst case, the durable begin record
//   MakeGenerationJob the job for the model's queue: cache scope, cancellation, token timings
//   EndGeneration     the quota settled with the actual usage, the metrics, the end record; the
//                     result is acknowledged only if it is recorded (fail closed)
//
// A transport turns its request into the API's protobuf request (ChatRequest or GenerateRequest,
// whose rules proto/airlock/v1/inference.proto states), calls these in order, and renders pieces,
// the final result and errors in its own format. What is refused, recorded, charged and counted is
// decided here, once for all transports.
//
// Thread-safety: the functions are re-entrant; a CallState is shared by the transport's call
// object and the job (the engine's step thread, the queue's dispatcher thread) as its comments say.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "airlock/v1/inference.pb.h"
#include "auth/quota.h"
#include "daemon/call_admission.h"
#include "daemon/generation_queue.h"
#include "daemon/metrics.h"
#include "daemon/model_registry.h"
#include "nlohmann/json.hpp"

namespace airlock::daemon {

// State shared by a call's transport object and its generation job.
struct CallState {
  CallInfo call;
  std::atomic<bool> client_gone{false};  // the client cancelled, disconnected or its deadline passed
  std::atomic<bool> over_time{false};    // the deadline (limits.max_request_duration) passed
  // When the daemon's drain cancels what still runs (unix nanoseconds, 0 while not draining); owned
  // by the transport's service, which outlives every call.
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

  // Polled by the engine: the client is gone or the deadline passed (which sets over_time).
  bool ShouldStop();
  // On the engine's step thread, for every piece: the first one's time, and the token timings.
  void NotePiece(const inference::GeneratedPiece& piece);
  // Seconds from the call's start to its first piece; nullopt before any.
  std::optional<double> TimeToFirstPiece() const;
};

// Identity and roles for `method` on `model` (AdmitCall), then the call's state with its deadline:
// the client's (a system_clock time point; nullopt when it set none) capped by
// limits.max_request_duration. Not OK: the refusal, already logged, counted and recorded; the
// transport only sends it.
absl::StatusOr<std::shared_ptr<CallState>> AdmitGeneration(
    const CallOrigin& origin, std::string_view method, std::string_view model, const RuntimeConfigHolder& config,
    const std::atomic<int64_t>& drain_cancel_at,
    std::optional<std::chrono::system_clock::time_point> client_deadline);

// A validated request ready for the model's queue.
struct PreparedGeneration {
  const ServedModel* model = nullptr;
  inference::GenerateRequest request;
};

// For an admitted call: validation (INVALID_ARGUMENT naming the field, NOT_FOUND for a model not
// served, FAILED_PRECONDITION for Chat without a chat template), the quota reservation
// (RESOURCE_EXHAUSTED with QuotaFailure/RetryInfo details, UNAVAILABLE when usage cannot be saved)
// and the begin record (UNAVAILABLE when it cannot be written: no record, no generation). Not OK:
// the status the call ends with, already recorded; the transport writes the call's log line
// (LogCallEnd) and sends it.
absl::StatusOr<PreparedGeneration> BeginGeneration(CallState& state, const airlock::v1::GenerateRequest& request,
                                                   const ModelRegistry& models);
absl::StatusOr<PreparedGeneration> BeginGeneration(CallState& state, const airlock::v1::ChatRequest& request,
                                                   const ModelRegistry& models);

// The queue job of a begun call. `on_piece` runs on the engine's step thread after the state
// noted the piece (return false to stop); `on_done` once, on the queue's thread, with the engine's
// result and the seconds the job waited (pass both to EndGeneration).
std::unique_ptr<GenerationJob> MakeGenerationJob(
    const std::shared_ptr<CallState>& state, const ServedModel& model, inference::GenerateRequest request,
    std::function<bool(const inference::GeneratedPiece&)> on_piece,
    std::function<void(absl::StatusOr<inference::GenerateResult>, double)> on_done);

// The end of a job: the status the call ends with (the engine's error; DEADLINE_EXCEEDED,
// UNAVAILABLE (drain) or CANCELLED for a generation stopped early), after the quota is settled,
// the metrics counted and the end record written. An unwritable audit log turns success into
// UNAVAILABLE: nothing is acknowledged that is not recorded.
absl::Status EndGeneration(CallState& state, const absl::StatusOr<inference::GenerateResult>& result,
                           double queue_seconds);

// The engine's stop reason as the API's enum.
airlock::v1::StopReason ToProto(inference::StopReason reason);

// The extra fields of the call's log line (LogCallEnd) for a generation.
nlohmann::json GenerationLogFields(const absl::StatusOr<inference::GenerateResult>& result, double queue_seconds);

}  // namespace airlock::daemon

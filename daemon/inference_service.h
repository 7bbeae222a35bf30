// airlock.v1.Inference on gRPC's callback API: admission, validation, then generation jobs on the
// model's queue whose pieces stream back through reactors. No gRPC thread waits for the engine.
//
// Thread-safety: gRPC calls the methods from its own threads; everything shared is either
// immutable (the registry's models) or a snapshot (RuntimeConfigHolder).
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "daemon/call_admission.h"
#include "daemon/model_registry.h"

namespace airlock::daemon {

class InferenceService final : public airlock::v1::Inference::CallbackService {
 public:
  // Both must outlive the service.
  InferenceService(const ModelRegistry& models, const RuntimeConfigHolder& config)
      : models_(models), config_(config) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context, const airlock::v1::GenerateRequest* request,
                                     airlock::v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<airlock::v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context, const airlock::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Chat(grpc::CallbackServerContext* context, const airlock::v1::ChatRequest* request,
                                 airlock::v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<airlock::v1::GenerateStreamResponse>* ChatStream(
      grpc::CallbackServerContext* context, const airlock::v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const airlock::v1::TokenizeRequest* request,
                                     airlock::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const airlock::v1::ListModelsRequest* request,
                                       airlock::v1::ListModelsResponse* response) override;

  // The drain (Daemon::Drain) cancels the calls still running at `forced_at`: generations that
  // end cancelled from then on are recorded as UNAVAILABLE, the status their clients get, not
  // as cancelled by the client. Any thread.
  void DrainCancelsAt(absl::Time forced_at) { drain_cancel_at_.store(absl::ToUnixNanos(forced_at)); }

 private:
  const ModelRegistry& models_;
  const RuntimeConfigHolder& config_;
  std::atomic<int64_t> drain_cancel_at_{0};  // unix nanoseconds; 0 while not draining
};

}  // namespace airlock::daemon

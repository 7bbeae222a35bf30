// The health service: Check answers at once; Watch streams the status and every change.
#include "daemon/health_service.h"

#include "absl/strings/str_cat.h"
#include "daemon/audit_trail.h"

namespace airlock::daemon {
namespace {

using grpc::health::v1::HealthCheckResponse;

constexpr char kCheck[] = "grpc.health.v1.Health/Check";
constexpr char kWatch[] = "grpc.health.v1.Health/Watch";

bool KnownService(const std::string& name) { return name.empty() || name == "airlock.v1.Inference"; }

class ImmediateReactor final : public grpc::ServerUnaryReactor {
 public:
  void OnDone() override { delete this; }
};

}  // namespace

// One Watch stream: writes the latest status whenever it changes (older unsent ones are dropped).
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* service, bool known) : service_(service), known_(known) {}

  void Send(bool serving) {
    std::lock_guard<std::mutex> lock(mutex_);
    next_ = !known_ ? HealthCheckResponse::SERVICE_UNKNOWN
                    : (serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING);
    has_next_ = true;
    PumpLocked();
  }
  void End(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mutex_);
    end_ = status;
    has_end_ = true;
    PumpLocked();
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mutex_);
    writing_ = false;
    if (!ok) {
      has_next_ = false;
      if (!has_end_) {
        end_ = grpc::Status::CANCELLED;
        has_end_ = true;
      }
    }
    PumpLocked();
  }
  void OnCancel() override { End(grpc::Status::CANCELLED); }
  void OnDone() override {
    service_->Remove(this);
    delete this;
  }

 private:
  // gRPC's callback reactions never run inline from StartWrite/Finish under the default (non
  // inline) executor, so calling them under our lock is safe here; the lock keeps one write at a
  // time and Finish after the last write.
  void PumpLocked() {
    if (writing_ || finished_) return;
    if (has_next_) {
      current_.set_status(next_);
      has_next_ = false;
      writing_ = true;
      StartWrite(&current_);
    } else if (has_end_) {
      finished_ = true;
      Finish(end_);
    }
  }

  HealthService* service_;
  const bool known_;
  std::mutex mutex_;
  HealthCheckResponse current_;
  HealthCheckResponse::ServingStatus next_ = HealthCheckResponse::UNKNOWN;
  bool has_next_ = false, writing_ = false, finished_ = false, has_end_ = false;
  grpc::Status end_;
};

HealthService::HealthService(const RuntimeConfigHolder& config)
    : config_(config), follower_([this] { FollowAuditHealth(); }) {}

HealthService::~HealthService() {
  stop_.Notify();
  follower_.join();
}

void HealthService::FollowAuditHealth() {
  while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
    const AuditTrail* audit = config_.Get()->audit;
    const bool ok = audit == nullptr || audit->health().ok();
    std::lock_guard<std::mutex> lock(mutex_);
    if (ok == audit_ok_) continue;
    audit_ok_ = ok;
    for (Watcher* w : watchers_) w->Send(serving_ && audit_ok_);
  }
}

void HealthService::SetServing(bool serving) {
  std::lock_guard<std::mutex> lock(mutex_);
  serving_ = serving;
  for (Watcher* w : watchers_) w->Send(serving_ && audit_ok_);
}

void HealthService::EndWatches() {
  std::lock_guard<std::mutex> lock(mutex_);
  ended_ = true;
  for (Watcher* w : watchers_) w->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
}

void HealthService::Remove(Watcher* watcher) {
  std::lock_guard<std::mutex> lock(mutex_);
  watchers_.remove(watcher);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const grpc::health::v1::HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  auto* reactor = new ImmediateReactor();
  absl::StatusOr<CallInfo> call = AdmitCall(*context, kCheck, "", config_);
  if (!call.ok()) {
    reactor->Finish(ToGrpcStatus(call.status()));
    return reactor;
  }
  if (!KnownService(request->service())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 absl::StrCat("service: \"", request->service(), "\" is not known here")));
    return reactor;
  }
  // Not serving while draining, or while the audit log cannot write (calls would be refused). A
  // check whose own record cannot be written is answered NOT_SERVING too: that failure is exactly
  // what a load balancer must learn (the refusal is in the daemon's log).
  const bool recorded = AuditSingle(*call, absl::OkStatus()).ok();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool audit_ok = recorded && (call->config->audit == nullptr || call->config->audit->health().ok());
    response->set_status(serving_ && audit_ok ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* context, const grpc::health::v1::HealthCheckRequest* request) {
  auto* watcher = new Watcher(this, KnownService(request->service()));
  // Admission (and its audit record) before taking the lock: an append waits for a disk sync.
  // A watch whose own record cannot be written starts with NOT_SERVING (as Check answers).
  absl::StatusOr<CallInfo> call = AdmitCall(*context, kWatch, "", config_);
  const bool recorded = call.ok() && AuditSingle(*call, absl::OkStatus()).ok();
  std::lock_guard<std::mutex> lock(mutex_);
  watchers_.push_back(watcher);
  if (!call.ok()) {
    watcher->End(ToGrpcStatus(call.status()));
  } else if (ended_) {
    watcher->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
  } else {
    watcher->Send(serving_ && audit_ok_ && recorded);
  }
  return watcher;
}

}  // namespace airlock::daemon

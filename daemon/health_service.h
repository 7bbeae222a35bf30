// grpc.health.v1.Health, served through the same mTLS and roles as everything else (a load
// balancer gets a certificate and the role "health-probe"). "" and "airlock.v1.Inference" are
// known services; SERVING while the daemon accepts work, NOT_SERVING once it drains or while the
// audit log cannot write (Watch streams learn of the audit log's state within a second).
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <list>
#include <mutex>
#include <thread>

#include "absl/synchronization/notification.h"

#include "daemon/call_admission.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace airlock::daemon {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  // Starts a thread that follows the audit log's health for Watch streams.
  explicit HealthService(const RuntimeConfigHolder& config);
  ~HealthService() override;

  // Changes the status of every known service and tells every Watch.
  void SetServing(bool serving);
  // Ends every Watch stream (before the server shuts down: they would otherwise never end).
  void EndWatches();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context, const grpc::health::v1::HealthCheckRequest* request) override;

  class Watcher;

 private:
  friend class Watcher;
  void Remove(Watcher* watcher);
  // Every second until stopped: tells the watchers when the audit log's health changes.
  void FollowAuditHealth();

  const RuntimeConfigHolder& config_;
  std::mutex mutex_;
  bool serving_ = true;          // guarded by mutex_
  bool ended_ = false;           // guarded by mutex_
  std::list<Watcher*> watchers_;  // guarded by mutex_
  bool audit_ok_ = true;         // guarded by mutex_: the audit log's health when last looked at
  absl::Notification stop_;
  std::thread follower_;
};

}  // namespace airlock::daemon

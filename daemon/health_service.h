// grpc.health.v1.Health, served through the same mTLS and roles as everything else (a load
// balancer gets a certificate and the role "health-probe"). "" and "airlock.v1.Inference" are
// known services; SERVING while the daemon accepts work, NOT_SERVING once it drains.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <list>
#include <mutex>

#include "daemon/call_admission.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace airlock::daemon {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  explicit HealthService(const RuntimeConfigHolder& config) : config_(config) {}
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

  const RuntimeConfigHolder& config_;
  std::mutex mutex_;
  bool serving_ = true;          // guarded by mutex_
  bool ended_ = false;           // guarded by mutex_
  std::list<Watcher*> watchers_;  // guarded by mutex_
};

}  // namespace airlock::daemon

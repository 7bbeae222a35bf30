// airlock.v1.Admin: the audit log of the running daemon, quota usage and overrides, and API keys, through the
// same mTLS and roles as everything else. Every call is itself audited (a durable "admin" record with the request's
// parameters, written before anything is read; no record, no answer).
//
// A synchronous gRPC service: its calls scan the store and may run for a while, so they run on
// gRPC's synchronous thread pool rather than on the callback threads that serve inference. Each
// reads one RocksDB snapshot (audit::AuditSnapshot), so it sees the chain as of one instant while
// the log appends and retention prunes.
//
// Thread-safety: gRPC calls the methods from many threads; the only mutable state is an atomic.
#pragma once

#include <atomic>

#include "airlock/v1/admin.grpc.pb.h"
#include "audit/audit_record.h"
#include "daemon/call_admission.h"

namespace airlock::daemon {

class AdminService final : public airlock::v1::Admin::Service {
 public:
  explicit AdminService(const RuntimeConfigHolder& config) : config_(config) {}

  grpc::Status QueryAudit(grpc::ServerContext* context, const airlock::v1::QueryAuditRequest* request,
                          grpc::ServerWriter<airlock::v1::QueryAuditResponse>* writer) override;
  grpc::Status VerifyAudit(grpc::ServerContext* context, const airlock::v1::VerifyAuditRequest* request,
                           airlock::v1::VerifyAuditResponse* response) override;
  grpc::Status ExportAudit(grpc::ServerContext* context, const airlock::v1::ExportAuditRequest* request,
                           grpc::ServerWriter<airlock::v1::ExportAuditResponse>* writer) override;

  grpc::Status GetUsage(grpc::ServerContext* context, const airlock::v1::GetUsageRequest* request,
                        airlock::v1::GetUsageResponse* response) override;
  grpc::Status ListUsage(grpc::ServerContext* context, const airlock::v1::ListUsageRequest* request,
                         airlock::v1::ListUsageResponse* response) override;
  grpc::Status SetQuotaOverride(grpc::ServerContext* context, const airlock::v1::SetQuotaOverrideRequest* request,
                                airlock::v1::SetQuotaOverrideResponse* response) override;
  grpc::Status ResetUsage(grpc::ServerContext* context, const airlock::v1::ResetUsageRequest* request,
                          airlock::v1::ResetUsageResponse* response) override;

  grpc::Status CreateApiKey(grpc::ServerContext* context, const airlock::v1::CreateApiKeyRequest* request,
                            airlock::v1::CreateApiKeyResponse* response) override;
  grpc::Status ListApiKeys(grpc::ServerContext* context, const airlock::v1::ListApiKeysRequest* request,
                           airlock::v1::ListApiKeysResponse* response) override;
  grpc::Status RevokeApiKey(grpc::ServerContext* context, const airlock::v1::RevokeApiKeyRequest* request,
                            airlock::v1::RevokeApiKeyResponse* response) override;

  // Ends every following query (UNAVAILABLE, "shutting down") within a poll, and any later one
  // at once: a follow never ends by itself, and must not hold up a drain.
  void EndFollows() { ending_.store(true); }

 private:
  const RuntimeConfigHolder& config_;
  std::atomic<bool> ending_{false};
};

// The requests' rules (docs/api.md): INVALID_ARGUMENT naming the field.
absl::Status ValidateQuery(const airlock::v1::QueryAuditRequest& request);
absl::Status ValidateGetUsage(const airlock::v1::GetUsageRequest& request);
absl::Status ValidateListUsage(const airlock::v1::ListUsageRequest& request);
absl::Status ValidateSetQuotaOverride(const airlock::v1::SetQuotaOverrideRequest& request);
absl::Status ValidateResetUsage(const airlock::v1::ResetUsageRequest& request);
absl::Status ValidateCreateApiKey(const airlock::v1::CreateApiKeyRequest& request);
absl::Status ValidateListApiKeys(const airlock::v1::ListApiKeysRequest& request);
absl::Status ValidateRevokeApiKey(const airlock::v1::RevokeApiKeyRequest& request);
// Whether `record` passes the request's filters (time window, identity, model, decision, method,
// phase).
bool MatchesQuery(const airlock::v1::QueryAuditRequest& request, const audit::ChainedRecord& record);

}  // namespace airlock::daemon

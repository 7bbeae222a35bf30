// The running daemon: models loaded, the mTLS gRPC server listening, and the two lifecycle
// operations the signals ask for: Reload (SIGHUP) and Drain (SIGTERM).
//
// Thread-safety: Start() once; Reload() and Drain() from the signal-handling thread only.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "auth/revocation.h"
#include "auth/tls_credentials.h"
#include "daemon/admin_service.h"
#include "daemon/audit_trail.h"
#include "daemon/call_admission.h"
#include "daemon/config/daemon_options.h"
#include "daemon/health_service.h"
#include "daemon/inference_service.h"
#include "daemon/api_keys.h"
#include "daemon/openai_server.h"
#include "daemon/metrics.h"
#include "daemon/metrics_server.h"
#include "daemon/model_registry.h"
#include "daemon/quota_store.h"
#include "daemon/state_store.h"
#include "grpcpp/server.h"

namespace airlock::daemon {

class Daemon {
 public:
  // Checks the TLS files and CRLs, loads every model, listens. `config_path` is what Reload()
  // reads again.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const std::string& config_path, const DaemonOptions& options);
  ~Daemon();

  int port() const { return port_; }

  // Re-reads the configuration file, TLS files and CRLs (the CRLs and client CA bundle are also
  // re-read every tls.watch_interval; an older CRL than the one in use is refused either way). Identities, roles, limits and CRLs take
  // effect for new calls; a change that needs a restart (listen address, TLS file paths, models,
  // message-size limits) is reported and ignored. Any error leaves the running configuration as it
  // was and is returned.
  absl::Status Reload();

  // Stops accepting calls, lets in-flight calls finish until drain_timeout, cancels the rest,
  // stops the model queues. Returns when everything has ended.
  void Drain();

 private:
  Daemon() = default;
  absl::StatusOr<std::shared_ptr<const RuntimeConfig>> MakeRuntimeConfig(const DaemonOptions& options) const;
  // The values read at each scrape (model states, queues, engines, audit state, certificates),
  // and readiness for /readyz. Both may run while the models load.
  std::vector<prometheus::MetricFamily> ScrapeNow() const;
  // OK with a note naming the models that cannot serve (or ""), or why the daemon is not ready.
  absl::StatusOr<std::string> Ready() const;
  // The named model's engine health (OK until the models have loaded, and for unknown names).
  absl::Status ModelHealth(std::string_view name) const;
  // Whether the named model serves on fewer replicas than it started with (a replica's GPU lost).
  bool ModelDegraded(std::string_view name) const;
  // Whether a scraper's certificate may read the metrics: the revocation check, then its identity
  // must be in metrics.scrapers (as of now: reloads apply). Refusals are logged and counted.
  absl::Status CheckScraper(const std::string& leaf_pem) const;
  // A client certificate refused by the revocation check, on either listener: logged and counted.
  void CertificateRefused(std::string_view listener, std::string_view reason) const;
  // The files the trust-anchor watcher re-reads (as of start, then of each successful reload).
  void SetWatchedFiles(const DaemonOptions& options) ABSL_LOCKS_EXCLUDED(watched_mu_);
  // The watcher thread: every tls.watch_interval, RereadTrustAnchors; a refusal is logged (once
  // per distinct error) and the CRLs in use stay.
  void WatchTrustAnchors();
  // Checks the trust anchors' permissions (auth::CheckTrustedFile), loads the client CA bundle and
  // CRLs, and swaps the new list in unless it is the same or older (RevocationChecker).
  absl::Status RereadTrustAnchors() ABSL_LOCKS_EXCLUDED(reload_mu_, watched_mu_);
  void StopWatching();

  std::string config_path_;
  DaemonOptions options_;  // as started
  std::unique_ptr<audit::StateDb> state_;  // audit.state_dir; outlives audit_ and usage_store_
  std::unique_ptr<AuditTrail> audit_;  // outlives the services and every RuntimeConfig
  std::unique_ptr<StateDbUsageStore> usage_store_;   // in state_
  std::unique_ptr<auth::QuotaLedger> quota_ledger_;  // outlives every RuntimeConfig
  std::unique_ptr<ApiKeyRegistry> api_keys_;          // in state_; null unless openai.api_keys
  std::unique_ptr<Metrics> metrics_;  // outlives every RuntimeConfig
  std::unique_ptr<ModelRegistry> models_;
  // The metrics listener starts before the models load: until models_loaded_ is set (after
  // models_), its handlers read only load_seconds_ (model name -> load time, each as it loads).
  std::atomic<bool> models_loaded_{false};
  mutable absl::Mutex load_mu_;
  std::map<std::string, double> load_seconds_ ABSL_GUARDED_BY(load_mu_);
  std::shared_ptr<auth::RevocationChecker> revocation_;
  std::unique_ptr<RuntimeConfigHolder> runtime_;
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<grpc::Server> server_;
  // The OpenAI-compatible listener (config openai:); null when not configured.
  std::unique_ptr<OpenAiServer> openai_server_;
  std::unique_ptr<MetricsServer> metrics_server_;  // stopped first: its handlers read the above
  // metrics_server_, for its handlers' scrapes: set once Start has returned (a scrape before that
  // has no metrics_server certificate series).
  std::atomic<const MetricsServer*> metrics_listener_{nullptr};
  int port_ = 0;
  bool drained_ = false;
  // Serialises Reload and the watcher's re-read (each loads a list and swaps it in).
  absl::Mutex reload_mu_;
  mutable absl::Mutex watched_mu_;
  auth::TlsFiles watched_tls_ ABSL_GUARDED_BY(watched_mu_);
  std::vector<std::pair<std::string, std::string>> watched_anchors_ ABSL_GUARDED_BY(watched_mu_);
  absl::Notification stop_watching_;
  std::thread trust_watcher_;  // joined by StopWatching
  std::atomic<bool> draining_{false};  // /readyz answers 503 once a drain begins
};

// The reloaded TLS/CRL files must hold together before anything is swapped in.
auth::TlsFiles TlsFilesOf(const TlsOptions& tls);

}  // namespace airlock::daemon

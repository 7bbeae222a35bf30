// Daemon: start (TLS, CRLs, policy, models, listener), reload, drain.
#include "daemon/server.h"

#include <algorithm>
#include <climits>
#include <fstream>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "auth/file_trust.h"
#include "auth/identity.h"
#include "auth/openssl_util.h"
#include "auth/tls_credentials.h"
#include "daemon/grpc_log.h"
#include "daemon/log.h"
#include "grpcpp/server_builder.h"
#include "inference/base/status.h"

namespace airlock::daemon {
namespace {

constexpr uint32_t kDefaultMaxTokens = 256;

std::vector<ModelSpec> ModelSpecs(const DaemonOptions& options,
                                  const std::shared_ptr<const auth::TrustedPublishers>& publishers) {
  std::vector<ModelSpec> specs;
  for (const ModelOptions& m : options.models) {
    ModelSpec& spec = specs.emplace_back();
    spec.name = m.name;
    spec.path = m.path;
    spec.context_length = m.context_length;
    spec.threads = m.threads;
    spec.kv_f32 = m.kv_f32;
    spec.chat_template = m.chat_template;
    spec.max_queue = m.max_queue;
    spec.max_sequences = m.max_sequences;
    spec.step_tokens = m.step_tokens;
    spec.kv_cache_tokens = m.kv_cache_tokens;
    spec.kv_block_tokens = m.kv_block_tokens;
    spec.prefix_cache = m.prefix_cache;
    spec.device = m.device;
    spec.devices = m.devices;
    spec.placement = m.placement;
    spec.publishers = publishers;
  }
  return specs;
}

// What Reload cannot change without a restart, by name.
std::vector<std::string> RestartOnlyChanges(const DaemonOptions& a, const DaemonOptions& b) {
  std::vector<std::string> changed;
  if (a.listen != b.listen) changed.push_back("server.listen");
  if (a.sandbox != b.sandbox) changed.push_back("server.sandbox");
  if (a.handshake_timeout != b.handshake_timeout) changed.push_back("server.handshake_timeout");
  if (a.port_file != b.port_file) changed.push_back("server.port_file");
  if (a.metrics != b.metrics) changed.push_back("metrics");
  if (a.openai != b.openai) changed.push_back("openai");
  if (a.require_signed_models != b.require_signed_models || a.trusted_publisher_keys != b.trusted_publisher_keys) {
    changed.push_back("model_signatures");
  }
  if (a.tls.cert_file != b.tls.cert_file || a.tls.key_file != b.tls.key_file ||
      a.tls.client_ca_file != b.tls.client_ca_file) {
    changed.push_back("tls file paths");
  }
  if (a.tls.min_tls13 != b.tls.min_tls13) changed.push_back("tls.min_version");
  if (a.tls.watch_interval != b.tls.watch_interval) changed.push_back("tls.watch_interval");
  if (a.limits.max_request_bytes != b.limits.max_request_bytes) changed.push_back("limits.max_request_bytes");
  if (a.audit.state_dir != b.audit.state_dir || a.audit.signing_key_file != b.audit.signing_key_file ||
      a.audit.hmac_secret_file != b.audit.hmac_secret_file || a.audit.checkpoint_every != b.audit.checkpoint_every ||
      a.audit.checkpoint_interval != b.audit.checkpoint_interval ||
      a.audit.sealed_text_key_file != b.audit.sealed_text_key_file ||
      a.audit.refusal_records_per_minute != b.audit.refusal_records_per_minute ||
      a.audit.retention != b.audit.retention || a.audit.witness_file != b.audit.witness_file) {
    changed.push_back("audit");
  }
  if (a.limits.max_concurrent_streams != b.limits.max_concurrent_streams) {
    changed.push_back("limits.max_concurrent_streams");
  }
  if (a.limits.max_connection_age != b.limits.max_connection_age) changed.push_back("limits.max_connection_age");
  // Every models[] key shapes a loaded engine or its queue.
  if (a.models != b.models) changed.push_back("models");
  return changed;
}

// A duration as a gRPC channel argument (int milliseconds; "forever" and anything longer than
// ~24 days become INT_MAX, which gRPC reads as no limit).
int ClampedMilliseconds(absl::Duration duration) {
  return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(duration), 1, INT_MAX));
}

}  // namespace

auth::TlsFiles TlsFilesOf(const TlsOptions& tls) {
  return auth::TlsFiles{tls.cert_file, tls.key_file, tls.client_ca_file, tls.crl_files};
}

absl::StatusOr<std::shared_ptr<const RuntimeConfig>> Daemon::MakeRuntimeConfig(const DaemonOptions& options) const {
  auto runtime = std::make_shared<RuntimeConfig>();
  AIRLOCK_ASSIGN_OR_RETURN(runtime->policy, auth::AccessPolicy::Create(options.config));
  runtime->identity_source = options.identity_source;
  runtime->limits.max_prompt_tokens = options.limits.max_prompt_tokens;
  runtime->limits.max_tokens_per_request = options.limits.max_tokens_per_request;
  runtime->limits.default_max_tokens = kDefaultMaxTokens;
  runtime->max_request_duration = options.limits.max_request_duration;
  runtime->audit = audit_.get();
  runtime->quotas = auth::QuotaPolicy::Create(options.config);
  runtime->ledger = quota_ledger_.get();
  runtime->metrics = metrics_.get();
  runtime->revocation = revocation_.get();
  runtime->api_keys = api_keys_.get();
  const auto& scrapers = options.config.metrics().scrapers();
  runtime->metrics_scrapers.insert(scrapers.begin(), scrapers.end());
  return runtime;
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const std::string& config_path, const DaemonOptions& options) {
  std::unique_ptr<Daemon> d(new Daemon());
  d->config_path_ = config_path;
  d->options_ = options;

  // TLS material first: a broken certificate or a missing CRL must stop the start before models
  // take minutes to load.
  const auth::TlsFiles tls_files = TlsFilesOf(options.tls);
  AIRLOCK_RETURN_IF_ERROR(auth::ValidateTlsFiles(tls_files, absl::Now()));
  AIRLOCK_ASSIGN_OR_RETURN(std::shared_ptr<const auth::RevocationList> crls,
                           auth::RevocationList::Load(tls_files.client_ca_file, tls_files.crl_files, absl::Now()));
  d->revocation_ = std::make_shared<auth::RevocationChecker>(crls);
  // The state store and the audit log before anything can be served: no record, no service.
  AIRLOCK_ASSIGN_OR_RETURN(d->state_, OpenStateStore(options.audit.state_dir));
  AIRLOCK_ASSIGN_OR_RETURN(d->audit_, AuditTrail::Open(options.audit, d->state_.get()));
  {
    const audit::ChainHead head = d->audit_->head();
    LogInfo("audit log open", {{"state_dir", options.audit.state_dir},
                               {"chain_head_sequence", head.sequence},
                               {"public_key_file", options.audit.signing_key_file + ".pub"}});
  }
  // Quota usage is loaded from the same store before anything is admitted.
  d->usage_store_ = std::make_unique<StateDbUsageStore>(d->state_.get());
  AIRLOCK_ASSIGN_OR_RETURN(d->quota_ledger_, auth::QuotaLedger::Open(d->usage_store_.get()));
  // API keys (openai.api_keys), from the same store, hashed under a key derived from the audit
  // log's HMAC secret.
  if (options.openai.api_keys) {
    AIRLOCK_ASSIGN_OR_RETURN(d->api_keys_,
                             ApiKeyRegistry::Open(d->state_.get(), d->audit_->DeriveKey(kApiKeyMacLabel)));
  }
  {
    std::vector<std::string> model_names;
    for (const ModelOptions& m : options.models) model_names.push_back(m.name);
    d->metrics_ = std::make_unique<Metrics>(std::move(model_names), AIRLOCK_VERSION);
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::shared_ptr<const RuntimeConfig> runtime, d->MakeRuntimeConfig(options));
  d->runtime_ = std::make_unique<RuntimeConfigHolder>(std::move(runtime));

  // The metrics listener binds before the models load (minutes, for large ones): /healthz answers,
  // /readyz says which are still loading, /metrics shows their state. It binds before the network
  // sandbox forbids new sockets.
  if (!options.metrics.listen.empty()) {
    Daemon* self = d.get();
    AIRLOCK_ASSIGN_OR_RETURN(
        d->metrics_server_,
        MetricsServer::Start(options.metrics,
                             {options.tls.watch_interval, options.tls.min_tls13, options.handshake_timeout},
                             [self](const std::string& pem) { return self->CheckScraper(pem); },
                             {[self] { return self->metrics_->Scrape(self->ScrapeNow()); },
                              [self] { return self->Ready(); }}));
    d->metrics_listener_.store(d->metrics_server_.get(), std::memory_order_release);
  }

  const auto loaded = [self = d.get()](const ServedModel& m) {
    LogInfo("model loaded", {{"model", m.name},
                             {"architecture", m.info.architecture()},
                             {"parameters", m.info.parameters()},
                             {"weight_type", m.info.weight_type()},
                             {"device", m.device},
                             {"context_length", m.info.context_length()},
                             {"chat_template", m.chat_template ? std::string(m.chat_template->name()) : ""},
                             {"chat_template_error", m.chat_template_error},
                             {"load_seconds", m.load_seconds}});
    if (m.bundle) {
      LogInfo("model verified", {{"model", m.name},
                                 {"bundle", m.bundle->manifest.name},
                                 {"bundle_version", m.bundle->manifest.version},
                                 {"licence", m.bundle->manifest.licence},
                                 {"publisher_key_id", m.bundle->key_id}});
    }
    absl::MutexLock lock(&self->load_mu_);
    self->load_seconds_[m.name] = m.load_seconds;
  };
  std::shared_ptr<const auth::TrustedPublishers> publishers;
  if (options.require_signed_models) {
    absl::StatusOr<auth::TrustedPublishers> trusted = auth::TrustedPublishers::Load(options.trusted_publisher_keys);
    if (!trusted.ok()) {
      return absl::Status(trusted.status().code(),
                          absl::StrCat("model_signatures.trusted_keys: ", trusted.status().message()));
    }
    publishers = std::make_shared<const auth::TrustedPublishers>(*std::move(trusted));
    LogInfo("model signatures required", {{"trusted_publishers", publishers->KeyIds()}});
  }
  AIRLOCK_ASSIGN_OR_RETURN(d->models_, ModelRegistry::Load(ModelSpecs(options, publishers), loaded));
  d->models_loaded_.store(true, std::memory_order_release);

  d->inference_ = std::make_unique<InferenceService>(*d->models_, *d->runtime_);
  d->health_ = std::make_unique<HealthService>(*d->runtime_);
  d->admin_ = std::make_unique<AdminService>(*d->runtime_);

  auth::TlsServerSettings tls;
  tls.files = tls_files;
  tls.min_tls13 = options.tls.min_tls13;
  tls.watch_interval = options.tls.watch_interval;
  grpc::ServerBuilder builder;
  const auto refused = [self = d.get()](const std::string& reason) { self->CertificateRefused("grpc", reason); };
  builder.AddListeningPort(options.listen, auth::MakeServerCredentials(tls, d->revocation_, refused), &d->port_);
  builder.RegisterService(d->inference_.get());
  builder.RegisterService(d->health_.get());
  // Admin calls are rare and may scan the store for a while: a small synchronous pool of their own.
  builder.RegisterService(d->admin_.get());
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.limits.max_request_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, static_cast<int>(options.limits.max_concurrent_streams));
  // Another process must not be able to share our port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Idle or half-open connections are closed rather than kept forever.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 30 * 60 * 1000);
  // A connection that has not completed TLS and the HTTP/2 preface by then is closed (gRPC's
  // default is 120 s): idle unauthenticated peers cannot pile up descriptors (grpc_log.h).
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(options.handshake_timeout)));
  // Connections age out and handshake again (CA bundle, CRLs, certificate validity); calls in flight
  // get max_request_duration to finish, the longest a call may run anyway.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, ClampedMilliseconds(options.limits.max_connection_age));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                             ClampedMilliseconds(options.limits.max_request_duration));
  d->server_ = builder.BuildAndStart();
  if (d->server_ == nullptr || d->port_ == 0) {
    d->models_->Shutdown();
    return absl::UnavailableError(absl::StrCat("could not listen on ", options.listen,
                                               " (address in use, or not an address of this host?)"));
  }
  if (!options.port_file.empty()) {
    std::ofstream out(options.port_file, std::ios::trunc);
    out << d->port_ << "\n";
    if (!out.good()) {
      d->Drain();
      return absl::PermissionDeniedError(absl::StrCat("server.port_file: cannot write ", options.port_file));
    }
  }
  // The OpenAI-compatible listener: the gRPC port's TLS files and policy; a certificate refused by
  // the CRLs is refused at the handshake, as on gRPC (and every call checks it again).
  if (!options.openai.listen.empty()) {
    Daemon* self = d.get();
    OpenAiServer::Settings settings;
    settings.tls_files = {options.tls.cert_file, options.tls.key_file, options.tls.client_ca_file,
                          "tls.cert_file",       "tls.key_file",       "tls.client_ca_file",
                          "openai"};
    settings.tls_policy = {options.tls.watch_interval, options.tls.min_tls13, options.handshake_timeout,
                           /*client_certificate_optional=*/options.openai.api_keys};
    settings.check_client = [self](const std::string& pem) {
      absl::Status checked = auth::CheckClientCertificate(self->revocation_.get(), pem);
      if (!checked.ok()) self->CertificateRefused("openai", std::string(checked.message()));
      return checked;
    };
    settings.max_request_bytes = options.limits.max_request_bytes;
    absl::StatusOr<std::unique_ptr<OpenAiServer>> openai =
        OpenAiServer::Start(options.openai, std::move(settings), *d->models_, *d->runtime_);
    if (!openai.ok()) {
      d->Drain();
      return openai.status();
    }
    d->openai_server_ = *std::move(openai);
  }
  d->SetWatchedFiles(options);
  d->trust_watcher_ = std::thread([self = d.get()] { self->WatchTrustAnchors(); });
  LogInfo("listening", {{"address", options.listen},
                        {"port", d->port_},
                        {"tls_min", options.tls.min_tls13 ? "1.3" : "1.2"},
                        {"crl_next_update", absl::FormatTime(crls->earliest_next_update())}});
  return d;
}

Daemon::~Daemon() {
  Drain();
  StopWatching();
}

void Daemon::StopWatching() {
  if (!stop_watching_.HasBeenNotified()) stop_watching_.Notify();
  if (trust_watcher_.joinable()) trust_watcher_.join();
}

void Daemon::SetWatchedFiles(const DaemonOptions& options) {
  absl::MutexLock lock(&watched_mu_);
  watched_tls_ = TlsFilesOf(options.tls);
  watched_anchors_ = TrustAnchorFiles(options.config);
}

void Daemon::WatchTrustAnchors() {
  std::string last_error;
  while (!stop_watching_.WaitForNotificationWithTimeout(options_.tls.watch_interval)) {
    const absl::Status status = RereadTrustAnchors();
    // A fault that persists is logged once, when it appears (and its end when it is fixed), not
    // every interval.
    if (!status.ok() && status.message() != last_error) {
      LogError("CRL re-read refused; the CRLs in use stay", {{"error", std::string(status.message())}});
    } else if (status.ok() && !last_error.empty()) {
      LogInfo("CRL re-read succeeds again");
    }
    last_error = status.ok() ? "" : std::string(status.message());
  }
}

absl::Status Daemon::RereadTrustAnchors() {
  // One re-read at a time: a SIGHUP reload and a watch must not race each other's older list in.
  absl::MutexLock reload_lock(&reload_mu_);
  auth::TlsFiles files;
  std::vector<std::pair<std::string, std::string>> anchors;
  {
    absl::MutexLock lock(&watched_mu_);
    files = watched_tls_;
    anchors = watched_anchors_;
  }
  for (const auto& [field, file] : anchors) {
    if (absl::Status trusted = auth::CheckTrustedFile(TrustAnchorWhat(field), file); !trusted.ok()) {
      return absl::Status(trusted.code(), absl::StrCat(field, ": ", trusted.message()));
    }
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::shared_ptr<const auth::RevocationList> crls,
                           auth::RevocationList::Load(files.client_ca_file, files.crl_files, absl::Now()));
  if (const std::shared_ptr<const auth::RevocationList> current = revocation_->current();
      current != nullptr && crls->SameAs(*current)) {
    return absl::OkStatus();
  }
  AIRLOCK_RETURN_IF_ERROR(revocation_->ReplaceIfNotOlder(crls));
  LogInfo("CRLs re-read", {{"crl_next_update", absl::FormatTime(crls->earliest_next_update())}});
  return absl::OkStatus();
}

absl::Status Daemon::Reload() {
  const auto refuse = [](const absl::Status& status) {
    LogError("reload refused; the running configuration stays", {{"error", std::string(status.message())}});
    return status;
  };
  absl::MutexLock reload_lock(&reload_mu_);
  absl::StatusOr<ParsedConfig> parsed = LoadConfigFile(config_path_);
  if (!parsed.ok()) return refuse(parsed.status());
  if (absl::Status files = CheckConfigFiles(*parsed); !files.ok()) return refuse(files);
  const DaemonOptions options = ResolveOptions(*parsed);
  const auth::TlsFiles tls_files = TlsFilesOf(options.tls);
  if (absl::Status tls = auth::ValidateTlsFiles(tls_files, absl::Now()); !tls.ok()) return refuse(tls);
  absl::StatusOr<std::shared_ptr<const auth::RevocationList>> crls =
      auth::RevocationList::Load(tls_files.client_ca_file, tls_files.crl_files, absl::Now());
  if (!crls.ok()) return refuse(crls.status());
  absl::StatusOr<std::shared_ptr<const RuntimeConfig>> runtime = MakeRuntimeConfig(options);
  if (!runtime.ok()) return refuse(runtime.status());

  // Everything checked; the CRLs last, as they may still be refused for being older than those in use.
  if (absl::Status newer = revocation_->ReplaceIfNotOlder(*crls); !newer.ok()) return refuse(newer);
  runtime_->Set(*runtime);
  SetWatchedFiles(options);
  // The metrics listener's certificate files, now rather than at its next check (logged there; a
  // set that does not load leaves the current one, as the gRPC listener does).
  if (metrics_server_ != nullptr) metrics_server_->ReloadCertificates().IgnoreError();
  if (openai_server_ != nullptr) openai_server_->ReloadCertificates().IgnoreError();
  const std::vector<std::string> ignored = RestartOnlyChanges(options_, options);
  if (!ignored.empty()) {
    LogWarning("reload: these changes need a restart and were not applied", {{"fields", ignored}});
  }
  LogInfo("configuration reloaded", {{"users", options.config.users_size()},
                                     {"roles", options.config.roles_size()},
                                     {"crl_next_update", absl::FormatTime((*crls)->earliest_next_update())}});
  return absl::OkStatus();
}

std::vector<prometheus::MetricFamily> Daemon::ScrapeNow() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> families;
  const auto add = [&families](prometheus::MetricFamily family) {
    if (!family.metric.empty()) families.push_back(std::move(family));
  };

  // Every configured model: loading until it has loaded, loaded while serving, degraded while it
  // serves on fewer replicas than it started with, unavailable once its device failed for good,
  // stopped once draining.
  prometheus::MetricFamily state = Metrics::Family(
      "airlock_model_state",
      "1 for the model's current state: loading, loaded (serving), degraded (serving, but the GPU of one of its "
      "replicas was lost), unavailable (its GPU was lost) or stopped (draining)");
  prometheus::MetricFamily load_time =
      Metrics::Family("airlock_model_load_seconds", "Time the model took to load (once it has loaded), by model");
  {
    absl::MutexLock lock(&load_mu_);
    for (const ModelOptions& m : options_.models) {
      const auto seconds = load_seconds_.find(m.name);
      std::string_view now = seconds == load_seconds_.end() ? "loading" : draining_.load() ? "stopped" : "loaded";
      if (now == "loaded" && !ModelHealth(m.name).ok()) now = "unavailable";
      if (now == "loaded" && ModelDegraded(m.name)) now = "degraded";
      for (const std::string_view s : {"loading", "loaded", "degraded", "unavailable", "stopped"}) {
        Metrics::AddValue(state, {{"model", m.name}, {"state", std::string(s)}}, s == now ? 1 : 0);
      }
      if (seconds != load_seconds_.end()) Metrics::AddValue(load_time, {{"model", m.name}}, seconds->second);
    }
  }
  add(std::move(state));
  add(std::move(load_time));

  if (models_loaded_.load(std::memory_order_acquire)) {
    std::vector<ModelLoad> loads;
    for (const auto& m : models_->models()) {
      loads.push_back(ModelLoad{m->name, m->queue->running(), m->queue->waiting(), m->queue->refused_full(),
                                m->engine->stats()});
    }
    for (prometheus::MetricFamily& f : Metrics::ModelLoadFamilies(loads)) add(std::move(f));

    // Per GPU: what the models placed on it hold there, its size, and the time it spent on their steps.
    struct DeviceTotals {
      uint64_t used = 0, total = 0;
      double busy = 0;
    };
    std::map<std::string, DeviceTotals> devices;
    for (const auto& m : models_->models()) {
      for (const inference::ModelExecutor::DeviceUsage& u : m->engine->device_usage()) {
        DeviceTotals& d = devices[u.device];
        d.used += u.memory_used_bytes;
        d.total = u.memory_total_bytes;
        d.busy += u.busy_seconds;
      }
    }
    prometheus::MetricFamily memory = Metrics::Family(
        "airlock_device_memory_bytes",
        "Device-local memory of a GPU: total, and used by the models placed on it (weights, KV cache, buffers)");
    prometheus::MetricFamily busy = Metrics::Family(
        "airlock_device_busy_seconds_total", "Time a GPU spent running the forward steps of the models placed on it",
        MetricType::Counter);
    for (const auto& [device, d] : devices) {
      Metrics::AddValue(memory, {{"device", device}, {"state", "used"}}, static_cast<double>(d.used));
      Metrics::AddValue(memory, {{"device", device}, {"state", "total"}}, static_cast<double>(d.total));
      Metrics::AddValue(busy, {{"device", device}}, d.busy);
    }
    add(std::move(memory));
    add(std::move(busy));
  }

  prometheus::MetricFamily listener_up = Metrics::Family(
      "airlock_grpc_listener_up",
      "1 while the gRPC listener accepts connections, 0 once gRPC gave it up (the daemon then drains and exits 75)");
  Metrics::AddValue(listener_up, {}, GrpcListenerFailure().empty() ? 1 : 0);
  add(std::move(listener_up));

  prometheus::MetricFamily audit_up =
      Metrics::Family("airlock_audit_up", "1 while the audit log can write, 0 while calls are refused for it");
  Metrics::AddValue(audit_up, {}, audit_->health().ok() ? 1 : 0);
  add(std::move(audit_up));
  prometheus::MetricFamily head =
      Metrics::Family("airlock_audit_chain_head_sequence", "Sequence number of the newest audit record");
  Metrics::AddValue(head, {}, static_cast<double>(audit_->head().sequence));
  add(std::move(head));

  // The gRPC listener's files are read at each scrape: it reloads them (tls.watch_interval), so a
  // renewed certificate shows once it is in place. A file that cannot be read has no series (the
  // listener says why). The metrics listener's is the one it serves now (it reloads its own).
  prometheus::MetricFamily expiry = Metrics::Family(
      "airlock_certificate_expiry_timestamp_seconds",
      "When the certificate expires (Unix time; the earliest of a file's certificates): server (gRPC), "
      "client_ca, metrics_server");
  const auto add_expiry = [&expiry](const std::string& role, absl::Time not_after) {
    Metrics::AddValue(expiry, {{"certificate", role}}, static_cast<double>(absl::ToUnixSeconds(not_after)));
  };
  for (const auto& [role, path] : {std::pair<std::string, std::string>{"server", options_.tls.cert_file},
                                   {"client_ca", options_.tls.client_ca_file}}) {
    if (absl::StatusOr<absl::Time> not_after = auth::ossl::EarliestNotAfter(role, path); not_after.ok()) {
      add_expiry(role, *not_after);
    }
  }
  if (const MetricsServer* listener = metrics_listener_.load(std::memory_order_acquire); listener != nullptr) {
    if (const absl::Time not_after = listener->certificate_not_after(); not_after != absl::InfiniteFuture()) {
      add_expiry("metrics_server", not_after);
    }
  }
  add(std::move(expiry));
  const absl::Time crl_next_update = revocation_->current()->earliest_next_update();
  if (crl_next_update != absl::InfiniteFuture()) {
    prometheus::MetricFamily crl = Metrics::Family(
        "airlock_crl_next_update_timestamp_seconds",
        "When the earliest of the configured CRLs expires (Unix time); after it every client is refused");
    Metrics::AddValue(crl, {}, static_cast<double>(absl::ToUnixSeconds(crl_next_update)));
    add(std::move(crl));
  }
  return families;
}

void Daemon::CertificateRefused(std::string_view listener, std::string_view reason) const {
  metrics_->AuthFailed("certificate_refused");
  LogWarning("TLS handshake refused", {{"listener", std::string(listener)}, {"reason", std::string(reason)}});
}

absl::Status Daemon::CheckScraper(const std::string& leaf_pem) const {
  if (absl::Status checked = auth::CheckClientCertificate(revocation_.get(), leaf_pem); !checked.ok()) {
    CertificateRefused("metrics", std::string(checked.message()));
    return checked;
  }
  const std::shared_ptr<const RuntimeConfig> config = runtime_->Get();
  absl::StatusOr<auth::Identity> identity = auth::IdentityFromCertificate(leaf_pem, config->identity_source);
  if (!identity.ok()) {
    metrics_->AuthFailed("unauthenticated");
    LogWarning("metrics scrape refused", {{"reason", std::string(identity.status().message())}});
    return identity.status();
  }
  if (!config->metrics_scrapers.contains(identity->name)) {
    metrics_->AuthFailed("not_permitted");
    LogWarning("metrics scrape refused", {{"identity", identity->name},
                                          {"subject", identity->subject},
                                          {"reason", "not in metrics.scrapers"}});
    return absl::PermissionDeniedError(absl::StrCat(identity->name, " is not in metrics.scrapers"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Daemon::Ready() const {
  // First: it holds from the moment gRPC gave up, before the drain begins.
  if (std::string failure = GrpcListenerFailure(); !failure.empty()) {
    return absl::UnavailableError(absl::StrCat("the gRPC listener stopped accepting connections (", failure,
                                               "); draining, then exiting for a restart"));
  }
  if (draining_.load()) return absl::UnavailableError("draining (shutting down)");
  if (!models_loaded_.load(std::memory_order_acquire)) {
    absl::MutexLock lock(&load_mu_);
    return absl::UnavailableError(absl::StrCat("loading models: ", load_seconds_.size(), " of ",
                                               options_.models.size(), " loaded"));
  }
  if (absl::Status audit = audit_->health(); !audit.ok()) {
    return absl::UnavailableError(absl::StrCat("the audit log cannot write: ", audit.message()));
  }
  // A model whose GPU was lost serves nothing until a restart; the others keep serving, so the
  // daemon is ready while any model is (airlock_model_state names the unavailable one).
  // A model on replicas serves on while any of its GPUs works; the lost ones are named.
  std::vector<std::string> unavailable, degraded;
  for (const auto& m : models_->models()) {
    if (absl::Status health = m->engine->Health(); !health.ok()) {
      unavailable.push_back(absl::StrCat(m->name, " (", health.message(), ")"));
    } else if (const std::vector<std::string> lost = m->engine->degraded(); !lost.empty()) {
      degraded.push_back(absl::StrCat(m->name, " (", absl::StrJoin(lost, "; "), ")"));
    }
  }
  if (!unavailable.empty() && unavailable.size() == models_->models().size()) {
    return absl::UnavailableError(absl::StrCat("no model can serve: ", absl::StrJoin(unavailable, "; ")));
  }
  std::vector<std::string> notes;
  if (!unavailable.empty()) notes.push_back(absl::StrCat("unavailable: ", absl::StrJoin(unavailable, "; ")));
  if (!degraded.empty()) notes.push_back(absl::StrCat("degraded: ", absl::StrJoin(degraded, "; ")));
  return absl::StrJoin(notes, "; ");
}

absl::Status Daemon::ModelHealth(std::string_view name) const {
  if (!models_loaded_.load(std::memory_order_acquire)) return absl::OkStatus();
  const ServedModel* model = models_->Find(name);
  return model == nullptr ? absl::OkStatus() : model->engine->Health();
}

bool Daemon::ModelDegraded(std::string_view name) const {
  const ServedModel* model = models_->Find(name);
  return model != nullptr && !model->engine->degraded().empty();
}

void Daemon::Drain() {
  if (drained_) return;
  drained_ = true;
  draining_.store(true);
  if (server_ != nullptr) {
    LogInfo("draining", {{"drain_timeout", absl::FormatDuration(options_.drain_timeout)}});
    health_->SetServing(false);
    health_->EndWatches();
    admin_->EndFollows();
    // New calls are refused at once; calls still running at the deadline are cancelled, which
    // stops their generation within one token.
    const absl::Time forced_at = absl::Now() + options_.drain_timeout;
    if (inference_ != nullptr) inference_->DrainCancelsAt(forced_at);
    if (openai_server_ != nullptr) openai_server_->BeginDrain(forced_at);
    server_->Shutdown(absl::ToChronoTime(forced_at));
    if (openai_server_ != nullptr) openai_server_->AwaitCalls(forced_at);
  }
  if (models_ != nullptr) models_->Shutdown();
  if (server_ != nullptr) server_->Wait();
  openai_server_.reset();  // after the queues: no job of its calls is left
  metrics_server_.reset();
  LogInfo("drained");
}

}  // namespace airlock::daemon

// The daemon's Prometheus metrics (docs/operations.md): one registry holding the counters and
// histograms that calls update as they end, plus values read at scrape time (queues, audit
// health). Label values are bounded: a served method, a configured model (any other name is
// recorded as ""), a gRPC code name. Per-user figures come from the Admin API, never from labels.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "inference/engine.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace airlock::daemon {

// What one model's queue and engine hold and have done, read at a scrape.
struct ModelLoad {
  std::string model;
  size_t running = 0;  // the queue's jobs handed to the engine
  size_t waiting = 0;  // the queue's jobs not yet handed over
  uint64_t queue_refusals = 0;
  inference::EngineStats engine;
};

class Metrics {
 public:
  // `models`: the configured model names (the only values the model label takes).
  Metrics(std::vector<std::string> models, std::string_view version);

  // Every finished call: airlock_requests_total{method,model,code} and
  // airlock_request_duration_seconds{method}.
  void CallEnded(std::string_view method, std::string_view model, absl::StatusCode code, double seconds);
  // A finished generation: airlock_prompt_tokens_total / airlock_generation_tokens_total{model},
  // and how long it waited in the model's queue (airlock_request_queue_seconds{model}).
  void GenerationEnded(std::string_view model, uint64_t prompt_tokens, uint64_t completion_tokens,
                       double queue_seconds);

  // A refusal before a call is served: airlock_auth_failures_total{reason}, reason one of
  // "unauthenticated" (no usable identity in the verified certificate), "not_permitted" (no role
  // grants the method or model), "certificate_refused" (the revocation check, at the handshake or on
  // a call of an open connection), "api_key_refused" (an API key that does not authenticate, or
  // names another identity than the call's certificate).
  void AuthFailed(std::string_view reason);
  // A generation refused by a quota: airlock_quota_refusals_total{limit}, limit a QuotaLimits key.
  void QuotaRefused(std::string_view limit);

  // A model's token timing histograms, looked up once per generation and observed per token:
  // airlock_time_to_first_token_seconds{model} (from the call's arrival, so queue and prompt
  // processing included) and airlock_inter_token_latency_seconds{model}.
  struct TokenTimers {
    prometheus::Histogram* first_token = nullptr;
    prometheus::Histogram* inter_token = nullptr;
  };
  TokenTimers TimersFor(std::string_view model);

  // One audit append (durable on return, or failed): airlock_audit_write_seconds and, when it
  // failed, airlock_audit_write_failures_total.
  void AuditWritten(double seconds, bool ok);

  // The Prometheus text format (version 0.0.4) of the registry and `at_scrape` (families whose
  // values are read now: queue depths, audit state).
  std::string Scrape(const std::vector<prometheus::MetricFamily>& at_scrape) const;

  // A family of one value per label set (a gauge, or a counter kept elsewhere), for at_scrape.
  static prometheus::MetricFamily Family(std::string name, std::string help,
                                         prometheus::MetricType type = prometheus::MetricType::Gauge);
  static void AddValue(prometheus::MetricFamily& family, std::vector<prometheus::ClientMetric::Label> labels,
                       double value);
  // The queue and engine families of every model, for at_scrape: airlock_requests_running,
  // airlock_requests_waiting, airlock_queue_refusals_total, airlock_batch_size,
  // airlock_batch_tokens, airlock_engine_sequences_waiting, airlock_kv_cache_blocks{state},
  // airlock_kv_cache_block_tokens, airlock_kv_cache_usage_ratio, airlock_engine_steps_total,
  // airlock_prefix_cache_query_tokens_total, airlock_prefix_cache_hit_tokens_total,
  // airlock_preemptions_total.
  static std::vector<prometheus::MetricFamily> ModelLoadFamilies(const std::vector<ModelLoad>& models);

 private:
  std::string ModelLabel(std::string_view model) const;

  const std::set<std::string, std::less<>> models_;
  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& generation_tokens_;
  prometheus::Family<prometheus::Histogram>& queue_;
  prometheus::Family<prometheus::Counter>& auth_failures_;
  prometheus::Family<prometheus::Counter>& quota_refusals_;
  prometheus::Family<prometheus::Histogram>& first_token_;
  prometheus::Family<prometheus::Histogram>& inter_token_;
  prometheus::Histogram& audit_write_;
  prometheus::Counter& audit_failures_;
};

}  // namespace airlock::daemon

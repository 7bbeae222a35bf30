// The metrics registry: what a call's end counts, bounded label values, and the text exposition
// with values read at scrape time.
#include "daemon/metrics.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace airlock::daemon {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, CountsCallsAndTokensWithOnlyConfiguredModelsAsLabels) {
  Metrics metrics({"llama"}, "9.9.9");
  metrics.CallEnded("airlock.v1.Inference/Generate", "llama", absl::StatusCode::kOk, 0.2);
  metrics.CallEnded("airlock.v1.Inference/Generate", "llama", absl::StatusCode::kOk, 0.3);
  metrics.CallEnded("airlock.v1.Inference/Generate", "../../etc/passwd", absl::StatusCode::kNotFound, 0.001);
  metrics.GenerationEnded("llama", 12, 30, 0.05);
  const std::string text = metrics.Scrape({});
  EXPECT_THAT(text, HasSubstr("airlock_build_info{version=\"9.9.9\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_requests_total{code=\"OK\",method=\"airlock.v1.Inference/Generate\","
                              "model=\"llama\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("airlock_requests_total{code=\"NOT_FOUND\",method=\"airlock.v1.Inference/Generate\","
                              "model=\"\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("passwd")));
  EXPECT_THAT(text, HasSubstr("airlock_request_duration_seconds_bucket{method=\"airlock.v1.Inference/Generate\","
                              "le=\"0.25\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("airlock_request_duration_seconds_count{method=\"airlock.v1.Inference/Generate\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("airlock_prompt_tokens_total{model=\"llama\"} 12\n"));
  EXPECT_THAT(text, HasSubstr("airlock_generation_tokens_total{model=\"llama\"} 30\n"));
  EXPECT_THAT(text, HasSubstr("airlock_request_queue_seconds_sum{model=\"llama\"} 0.05\n"));
}

TEST(MetricsTest, RefusalsByReasonAndLimit) {
  Metrics metrics({"llama"}, "1");
  metrics.AuthFailed("not_permitted");
  metrics.AuthFailed("not_permitted");
  metrics.QuotaRefused("tokens_per_day");
  const std::string text = metrics.Scrape({});
  EXPECT_THAT(text, HasSubstr("airlock_auth_failures_total{reason=\"not_permitted\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("airlock_auth_failures_total{reason=\"certificate_refused\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_quota_refusals_total{limit=\"tokens_per_day\"} 1\n"));
}

TEST(MetricsTest, ModelSeriesExistAtZeroAndScrapeTimeGaugesAreAppended) {
  Metrics metrics({"a", "b"}, "1");
  prometheus::MetricFamily waiting = Metrics::Family("airlock_requests_waiting", "Waiting");
  Metrics::AddValue(waiting, {{"model", "a"}}, 3);
  prometheus::MetricFamily full =
      Metrics::Family("airlock_queue_refusals_total", "Refused", prometheus::MetricType::Counter);
  Metrics::AddValue(full, {{"model", "a"}}, 7);
  const std::string text = metrics.Scrape({waiting, full});
  EXPECT_THAT(text, HasSubstr("airlock_generation_tokens_total{model=\"b\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_time_to_first_token_seconds_count{model=\"b\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_inter_token_latency_seconds_count{model=\"a\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE airlock_requests_waiting gauge\n"));
  EXPECT_THAT(text, HasSubstr("airlock_requests_waiting{model=\"a\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE airlock_queue_refusals_total counter\n"));
  EXPECT_THAT(text, HasSubstr("airlock_queue_refusals_total{model=\"a\"} 7\n"));
}

// The engine's batching figures become the model's series: counts, not 0/1 any more.
TEST(MetricsTest, ModelLoadFamiliesReportTheQueueAndTheEnginesBatch) {
  inference::EngineStats e;
  e.running = 5;
  e.waiting = 2;
  e.batch_sequences = 5;
  e.batch_tokens = 133;
  e.kv_blocks_total = 1024;
  e.kv_blocks_used = 256;
  e.kv_blocks_cached = 40;
  e.kv_block_tokens = 16;
  e.steps = 9000;
  e.prefix_query_tokens = 4000;
  e.prefix_hit_tokens = 3000;
  e.preemptions = 3;
  // An engine that went idle after a step of 3 sequences still holds that step's figures.
  inference::EngineStats idle;
  idle.batch_sequences = 3;
  idle.batch_tokens = 3;
  idle.steps = 50;
  Metrics metrics({"llama", "idle"}, "1");
  const std::string text =
      metrics.Scrape(Metrics::ModelLoadFamilies({ModelLoad{"llama", 7, 11, 4, e}, ModelLoad{"idle", 0, 0, 0, idle}}));
  EXPECT_THAT(text, HasSubstr("airlock_requests_running{model=\"llama\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("airlock_requests_waiting{model=\"llama\"} 11\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE airlock_queue_refusals_total counter\n"));
  EXPECT_THAT(text, HasSubstr("airlock_queue_refusals_total{model=\"llama\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("airlock_batch_size{model=\"llama\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("airlock_batch_tokens{model=\"llama\"} 133\n"));
  EXPECT_THAT(text, HasSubstr("airlock_engine_sequences_waiting{model=\"llama\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_blocks{model=\"llama\",state=\"total\"} 1024\n"));
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_blocks{model=\"llama\",state=\"used\"} 256\n"));
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_blocks{model=\"llama\",state=\"cached\"} 40\n"));
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_block_tokens{model=\"llama\"} 16\n"));
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_usage_ratio{model=\"llama\"} 0.25\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE airlock_engine_steps_total counter\n"));
  EXPECT_THAT(text, HasSubstr("airlock_engine_steps_total{model=\"llama\"} 9000\n"));
  EXPECT_THAT(text, HasSubstr("airlock_prefix_cache_query_tokens_total{model=\"llama\"} 4000\n"));
  EXPECT_THAT(text, HasSubstr("airlock_prefix_cache_hit_tokens_total{model=\"llama\"} 3000\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE airlock_preemptions_total counter\n"));
  EXPECT_THAT(text, HasSubstr("airlock_preemptions_total{model=\"llama\"} 3\n"));
  // Nothing running or waiting: no batch, whatever the last step was.
  EXPECT_THAT(text, HasSubstr("airlock_batch_size{model=\"idle\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_batch_tokens{model=\"idle\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_engine_steps_total{model=\"idle\"} 50\n"));
  // An engine with no pool yet reports a ratio of 0, not NaN.
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_usage_ratio{model=\"idle\"} 0\n"));
  EXPECT_THAT(text, Not(HasSubstr("NaN")));
}

TEST(MetricsTest, TokenTimersObserveIntoTheModelsHistogramsAndUnknownModelsShareTheEmptyLabel) {
  Metrics metrics({"llama"}, "1");
  Metrics::TokenTimers timers = metrics.TimersFor("llama");
  ASSERT_NE(timers.first_token, nullptr);
  ASSERT_NE(timers.inter_token, nullptr);
  timers.first_token->Observe(0.3);
  timers.inter_token->Observe(0.002);
  timers.inter_token->Observe(0.02);
  // The same series every time a generation of the model asks.
  EXPECT_EQ(metrics.TimersFor("llama").inter_token, timers.inter_token);
  metrics.TimersFor("not-configured").first_token->Observe(1);
  const std::string text = metrics.Scrape({});
  EXPECT_THAT(text, HasSubstr("airlock_time_to_first_token_seconds_bucket{model=\"llama\",le=\"0.5\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_time_to_first_token_seconds_bucket{model=\"llama\",le=\"0.25\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_inter_token_latency_seconds_bucket{model=\"llama\",le=\"0.0025\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_inter_token_latency_seconds_count{model=\"llama\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("airlock_time_to_first_token_seconds_count{model=\"\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("not-configured")));
}

TEST(MetricsTest, AuditWritesAreTimedAndFailuresCounted) {
  Metrics metrics({}, "1");
  EXPECT_THAT(metrics.Scrape({}), HasSubstr("airlock_audit_write_failures_total 0\n"));
  metrics.AuditWritten(0.0004, true);
  metrics.AuditWritten(0.002, false);
  const std::string text = metrics.Scrape({});
  EXPECT_THAT(text, HasSubstr("airlock_audit_write_seconds_bucket{le=\"0.0005\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_audit_write_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("airlock_audit_write_failures_total 1\n"));
}

}  // namespace
}  // namespace airlock::daemon

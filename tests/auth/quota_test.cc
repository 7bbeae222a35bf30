// Tests of quotas: precedence of user, group, role and default limits; the reserve/settle ledger
// with an injected clock (exact minute, day and month rollover); refusal messages and their
// google.rpc details; no overshoot under concurrency; usage kept across a restart or a crash.
#include "auth/quota.h"

#include <gmock/gmock.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/civil_time.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace airlock::auth {
namespace {

using ::testing::HasSubstr;

airlock::v1::config::DaemonConfig Config(const std::string& text) {
  airlock::v1::config::DaemonConfig config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &config)) << text;
  return config;
}

TEST(QuotaPolicyTest, MostSpecificLevelWinsPerLimitAndTheLargestWithinALevel) {
  auto policy = QuotaPolicy::Create(Config(R"pb(
    quota_defaults { tokens_per_day: 1000 requests_per_minute: 10 max_concurrent_requests: 2 }
    roles { name: "small" quota { tokens_per_day: 5000 tokens_per_month: 50000 } }
    roles { name: "big" quota { tokens_per_day: 20000 } }
    groups { name: "batch" roles: "small" quota { requests_per_minute: 100 } }
    groups { name: "lab" quota { requests_per_minute: 300 } }
    users { name: "alice" groups: "batch" groups: "lab" roles: "big" quota { max_concurrent_requests: 0 } }
    users { name: "bob" roles: "small" }
    users { name: "carol" }
  )pb"));
  const QuotaLimits& alice = policy->LimitsOf("alice");
  EXPECT_EQ(alice.Get(Limit::kRequestsPerMinute), 300u);    // groups: the larger of 100 and 300
  EXPECT_EQ(alice.Get(Limit::kTokensPerDay), 20000u);       // roles (direct + via group): 20000 > 5000
  EXPECT_EQ(alice.Get(Limit::kTokensPerMonth), 50000u);     // only "small" sets it
  EXPECT_EQ(alice.Get(Limit::kMaxConcurrentRequests), std::nullopt);  // 0 at the user level: no limit
  const QuotaLimits& bob = policy->LimitsOf("bob");
  EXPECT_EQ(bob.Get(Limit::kTokensPerDay), 5000u);
  EXPECT_EQ(bob.Get(Limit::kRequestsPerMinute), 10u);  // from the defaults
  EXPECT_EQ(policy->LimitsOf("carol").Get(Limit::kTokensPerDay), 1000u);
  EXPECT_EQ(policy->LimitsOf("stranger").Get(Limit::kMaxConcurrentRequests), 2u);
  EXPECT_EQ(policy->LimitsOf("carol").Get(Limit::kPromptTokensPerDay), std::nullopt);
  EXPECT_EQ(LimitName(Limit::kCompletionTokensPerMonth), "completion_tokens_per_month");
}

// Usage kept in memory, as the state store keeps it; `fail` makes saving fail.
class MemoryStore : public UsageStore {
 public:
  absl::Status Save(std::string_view identity, std::string_view value) override {
    absl::MutexLock lock(&mu_);
    if (fail) return absl::UnavailableError("disk full");
    values_[std::string(identity)] = std::string(value);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadAll() const override {
    absl::MutexLock lock(&mu_);
    return std::vector<std::pair<std::string, std::string>>(values_.begin(), values_.end());
  }
  absl::Status SaveOverride(std::string_view identity, std::string_view value) override {
    absl::MutexLock lock(&mu_);
    if (fail) return absl::UnavailableError("disk full");
    if (value.empty()) {
      overrides_.erase(std::string(identity));
    } else {
      overrides_[std::string(identity)] = std::string(value);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadOverrides() const override {
    absl::MutexLock lock(&mu_);
    return std::vector<std::pair<std::string, std::string>>(overrides_.begin(), overrides_.end());
  }
  std::map<std::string, std::string> Snapshot() const {
    absl::MutexLock lock(&mu_);
    return values_;
  }
  void Restore(std::map<std::string, std::string> values) {
    absl::MutexLock lock(&mu_);
    values_ = std::move(values);
  }
  bool fail = false;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> overrides_;
};

absl::Time At(int y, int mo, int d, int h, int mi, int s) {
  return absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, s), absl::UTCTimeZone());
}

class QuotaLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    auto ledger = QuotaLedger::Open(&store_, [this] {
      absl::MutexLock lock(&clock_mu_);
      return now_;
    });
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = *std::move(ledger);
  }
  void SetNow(absl::Time t) {
    absl::MutexLock lock(&clock_mu_);
    now_ = t;
  }
  QuotaLimits Limits(Limit limit, uint64_t value) {
    QuotaLimits limits;
    limits.Set(limit, value);
    return limits;
  }

  MemoryStore store_;
  absl::Mutex clock_mu_;
  absl::Time now_ = At(2026, 11, 23, 10, 0, 0);
  std::unique_ptr<QuotaLedger> ledger_;
};

TEST_F(QuotaLedgerTest, ReservesTheWorstCaseAndSettlesTheActualUsage) {
  const QuotaLimits limits = Limits(Limit::kTokensPerDay, 1000);
  auto r = ledger_->Reserve("alice", limits, 100, 400);
  ASSERT_TRUE(r.ok()) << r.status();
  QuotaUsage u = ledger_->UsageOf("alice");
  EXPECT_EQ(u.day_prompt_tokens + u.day_completion_tokens, 500u);
  EXPECT_EQ(u.running, 1u);
  // A second worst case of 600 does not fit beside the first reservation...
  EXPECT_EQ(ledger_->Reserve("alice", limits, 100, 500).status().code(), absl::StatusCode::kResourceExhausted);
  // ...but once the first settles at 100 + 50, it does.
  ASSERT_TRUE((*r)->Settle(100, 50).ok());
  u = ledger_->UsageOf("alice");
  EXPECT_EQ(u.day_prompt_tokens, 100u);
  EXPECT_EQ(u.day_completion_tokens, 50u);
  EXPECT_EQ(u.running, 0u);
  EXPECT_TRUE(ledger_->Reserve("alice", limits, 100, 500).ok());
  // Other identities have their own budgets.
  EXPECT_TRUE(ledger_->Reserve("bob", limits, 100, 900).ok());
}

TEST_F(QuotaLedgerTest, ARefusalSaysWhichBudgetWhatIsUsedAndWhenItResetsWithRpcDetails) {
  const QuotaLimits limits = Limits(Limit::kTokensPerDay, 200000);
  auto r = ledger_->Reserve("alice", limits, 1000, 198000);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Settle(1000, 198000).ok());
  const absl::Status refused = ledger_->Reserve("alice", limits, 500, 1024).status();
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.message(),
            "daily token budget of 200000 used (199000 used or reserved; this request needs 1524); resets at "
            "2026-11-24T00:00:00Z");
  const auto payload = refused.GetPayload(kRpcStatusPayloadUrl);
  ASSERT_TRUE(payload.has_value());
  google::rpc::Status rpc;
  ASSERT_TRUE(rpc.ParseFromString(std::string(*payload)));
  EXPECT_EQ(rpc.code(), 8);  // RESOURCE_EXHAUSTED
  ASSERT_EQ(rpc.details_size(), 2);
  google::rpc::QuotaFailure failure;
  ASSERT_TRUE(rpc.details(0).UnpackTo(&failure));
  ASSERT_EQ(failure.violations_size(), 1);
  EXPECT_EQ(failure.violations(0).subject(), "identity:alice");
  EXPECT_THAT(failure.violations(0).description(), HasSubstr("daily token budget"));
  google::rpc::RetryInfo retry;
  ASSERT_TRUE(rpc.details(1).UnpackTo(&retry));
  EXPECT_EQ(retry.retry_delay().seconds(), 14 * 3600);  // 10:00 -> midnight UTC

  // A request larger than the whole budget can never fit: said so, and no RetryInfo.
  const absl::Status never = ledger_->Reserve("bob", limits, 100000, 100001).status();
  EXPECT_THAT(never.message(), HasSubstr("smaller than this request's 200001"));
  ASSERT_TRUE(rpc.ParseFromString(std::string(*never.GetPayload(kRpcStatusPayloadUrl))));
  EXPECT_EQ(rpc.details_size(), 1);
  // The limit that refused, for the metrics.
  ASSERT_TRUE(never.GetPayload(kQuotaLimitPayloadUrl).has_value());
  EXPECT_EQ(std::string(*never.GetPayload(kQuotaLimitPayloadUrl)), "tokens_per_day");
}

TEST_F(QuotaLedgerTest, MinuteDayAndMonthWindowsRollOverExactly) {
  QuotaLimits limits;
  limits.Set(Limit::kRequestsPerMinute, 2);
  limits.Set(Limit::kTokensPerDay, 100);
  limits.Set(Limit::kCompletionTokensPerMonth, 150);
  SetNow(At(2026, 11, 30, 23, 58, 30));
  for (int i = 0; i < 2; ++i) {
    auto r = ledger_->Reserve("alice", limits, 10, 20);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE((*r)->Settle(10, 20).ok());
  }
  // Third request in the same minute: refused until 23:59:00 exactly.
  SetNow(At(2026, 11, 30, 23, 58, 59) + absl::Milliseconds(999));
  EXPECT_THAT(ledger_->Reserve("alice", limits, 10, 20).status().message(),
              HasSubstr("per-minute request limit of 2 used"));
  SetNow(At(2026, 11, 30, 23, 59, 0));
  auto r = ledger_->Reserve("alice", limits, 10, 20);
  ASSERT_TRUE(r.ok()) << r.status();  // day: 90 of 100 now charged (30 + 30 + 30 reserved)
  ASSERT_TRUE((*r)->Settle(10, 20).ok());
  // The day budget (100) is spent until midnight; the month's completion budget has 90 of 150.
  EXPECT_THAT(ledger_->Reserve("alice", limits, 10, 20).status().message(),
              HasSubstr("daily token budget of 100 used (90 used or reserved; this request needs 30); resets at "
                        "2026-12-01T00:00:00Z"));
  SetNow(At(2026, 12, 1, 0, 0, 0));  // a new day and a new month
  QuotaUsage u = ledger_->UsageOf("alice");
  EXPECT_EQ(u.day_prompt_tokens + u.day_completion_tokens, 0u);
  EXPECT_EQ(u.month_completion_tokens, 0u);
  for (int i = 0; i < 2; ++i) {
    auto again = ledger_->Reserve("alice", limits, 10, 20);
    ASSERT_TRUE(again.ok()) << again.status();
  }
}

TEST_F(QuotaLedgerTest, AReservationCarriedOverMidnightIsChargedWhereItEnds) {
  const QuotaLimits limits = Limits(Limit::kTokensPerDay, 1000);
  SetNow(At(2026, 11, 23, 23, 59, 59));
  auto r = ledger_->Reserve("alice", limits, 100, 800);
  ASSERT_TRUE(r.ok());
  SetNow(At(2026, 11, 24, 0, 0, 5));
  // The new day already holds the running request's reservation...
  EXPECT_EQ(ledger_->Reserve("alice", limits, 100, 100).status().code(), absl::StatusCode::kResourceExhausted);
  // ...and once it settles, exactly what it used.
  ASSERT_TRUE((*r)->Settle(100, 10).ok());
  QuotaUsage u = ledger_->UsageOf("alice");
  EXPECT_EQ(u.day_prompt_tokens, 100u);
  EXPECT_EQ(u.day_completion_tokens, 10u);
}

TEST_F(QuotaLedgerTest, PerRequestAndConcurrencyLimits) {
  QuotaLimits limits;
  limits.Set(Limit::kMaxPromptTokens, 512);
  limits.Set(Limit::kMaxTokensPerRequest, 256);
  limits.Set(Limit::kMaxConcurrentRequests, 2);
  EXPECT_THAT(ledger_->Reserve("alice", limits, 513, 10).status().message(), HasSubstr("max_prompt_tokens"));
  EXPECT_THAT(ledger_->Reserve("alice", limits, 10, 257).status().message(), HasSubstr("max_tokens_per_request"));
  auto a = ledger_->Reserve("alice", limits, 10, 10);
  auto b = ledger_->Reserve("alice", limits, 10, 10);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_THAT(ledger_->Reserve("alice", limits, 10, 10).status().message(),
              HasSubstr("concurrent request limit of 2 reached"));
  a->reset();  // a reservation dropped without settling (the request never ran) frees its slot
  auto c = ledger_->Reserve("alice", limits, 10, 10);
  EXPECT_TRUE(c.ok());
  EXPECT_EQ(ledger_->UsageOf("alice").running, 2u);
}

TEST_F(QuotaLedgerTest, ConcurrentRequestsNeverOvershootTheBudget) {
  constexpr uint64_t kBudget = 10000;
  const QuotaLimits limits = Limits(Limit::kTokensPerDay, kBudget);
  std::atomic<uint64_t> charged{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const uint64_t prompt = 5 + (t + i) % 7;
        const uint64_t max_tokens = 20 + (t * 3 + i) % 13;
        auto r = ledger_->Reserve("alice", limits, prompt, max_tokens);
        if (!r.ok()) continue;
        const uint64_t used = max_tokens / 2;  // requests use less than they reserve
        charged += prompt + used;
        ASSERT_TRUE((*r)->Settle(prompt, used).ok());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const QuotaUsage u = ledger_->UsageOf("alice");
  EXPECT_EQ(u.day_prompt_tokens + u.day_completion_tokens, charged.load());
  EXPECT_LE(charged.load(), kBudget);
  EXPECT_GT(charged.load(), kBudget - 100);  // and the budget was used up, not left idle
  EXPECT_EQ(u.running, 0u);
}

TEST_F(QuotaLedgerTest, UsageSurvivesARestartAndACrashChargesTheWorstCase) {
  const QuotaLimits limits = Limits(Limit::kTokensPerDay, 1000);
  auto done = ledger_->Reserve("alice", limits, 100, 200);
  ASSERT_TRUE(done.ok());
  ASSERT_TRUE((*done)->Settle(100, 50).ok());
  auto running = ledger_->Reserve("alice", limits, 100, 300);
  ASSERT_TRUE(running.ok());
  // "Crash": the store as it is while a request runs is what the next start finds.
  const std::map<std::string, std::string> on_disk = store_.Snapshot();
  ASSERT_TRUE((*running)->Settle(100, 300).ok());
  running->reset();
  ledger_.reset();
  store_.Restore(on_disk);
  Open();
  QuotaUsage u = ledger_->UsageOf("alice");
  EXPECT_EQ(u.day_prompt_tokens, 200u);       // 100 used + 100 of the interrupted request
  EXPECT_EQ(u.day_completion_tokens, 350u);   // 50 used + the interrupted request's whole 300
  EXPECT_EQ(u.running, 0u);
  // A clean restart keeps exact usage, and the budget still holds.
  EXPECT_THAT(ledger_->Reserve("alice", limits, 200, 300).status().message(), HasSubstr("daily token budget"));
}

TEST_F(QuotaLedgerTest, FailsClosedWhenUsageCannotBeSavedAndRefusesACorruptStore) {
  store_.fail = true;
  const absl::Status refused = ledger_->Reserve("alice", QuotaLimits{}, 10, 10).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  // The client's message says what failed; the store's words (paths, RocksDB) only for the log.
  EXPECT_EQ(refused.message(), "quota usage cannot be recorded, so the request is refused");
  EXPECT_EQ(refused.GetPayload(kQuotaStoreErrorPayloadUrl).value_or(absl::Cord()), "disk full");
  EXPECT_EQ(ledger_->UsageOf("alice").running, 0u);  // nothing was admitted
  store_.fail = false;

  EXPECT_FALSE(DecodeUsage("short").ok());
  QuotaUsage usage;
  usage.day = 20000;
  usage.day_prompt_tokens = 7;
  ASSERT_TRUE(DecodeUsage(EncodeUsage(usage)).ok());
  EXPECT_EQ(*DecodeUsage(EncodeUsage(usage)), usage);
  store_.Restore({{"mallory", "garbage"}});
  auto reopened = QuotaLedger::Open(&store_, [] { return absl::Now(); });
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(reopened.status().message(), HasSubstr("mallory"));
}

TEST_F(QuotaLedgerTest, AnOverrideReplacesTheConfiguredLimitsItSetsAndSurvivesARestart) {
  const QuotaLimits configured = Limits(Limit::kTokensPerDay, 1000);
  QuotaOverride set;
  set.set_tokens_per_day(100);
  set.set_max_concurrent_requests(0);  // 0: no limit, whatever the configuration says
  auto updated = ledger_->UpdateOverride("alice", set, {}, false);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->tokens_per_day(), 100u);
  EXPECT_TRUE(ledger_->Knows("alice"));
  EXPECT_FALSE(ledger_->Knows("bob"));
  // Admission applies it: 150 no longer fits alice's day, but still fits bob's.
  const absl::Status refused = ledger_->Reserve("alice", configured, 50, 100).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("daily token budget of 100"));
  EXPECT_TRUE(ledger_->Reserve("bob", configured, 50, 100).ok());
  const QuotaLimits effective = ApplyOverride(Limits(Limit::kMaxConcurrentRequests, 2), *updated);
  EXPECT_EQ(effective.Get(Limit::kTokensPerDay), 100u);
  EXPECT_EQ(effective.Get(Limit::kMaxConcurrentRequests), std::nullopt);

  // A restart finds it; merging keeps what is not named; removing returns a limit to the config.
  ledger_.reset();
  Open();
  EXPECT_EQ(ledger_->OverrideOf("alice").tokens_per_day(), 100u);
  QuotaOverride more;
  more.set_requests_per_minute(5);
  updated = ledger_->UpdateOverride("alice", more, {Limit::kTokensPerDay}, false);
  ASSERT_TRUE(updated.ok());
  EXPECT_FALSE(updated->has_tokens_per_day());
  EXPECT_TRUE(updated->has_max_concurrent_requests());
  EXPECT_EQ(updated->requests_per_minute(), 5u);
  EXPECT_TRUE(ledger_->Reserve("alice", configured, 50, 100).ok());
  // Clearing removes it from the store as well.
  ASSERT_TRUE(ledger_->UpdateOverride("alice", QuotaOverride(), {}, true).ok());
  EXPECT_EQ(ledger_->OverrideOf("alice").ByteSizeLong(), 0u);
  ledger_.reset();
  Open();
  EXPECT_EQ(ledger_->OverrideOf("alice").ByteSizeLong(), 0u);
}

TEST_F(QuotaLedgerTest, AnOverrideThatBreaksARuleOrCannotBeSavedChangesNothing) {
  QuotaOverride set;
  set.set_tokens_per_day(100);
  ASSERT_TRUE(ledger_->UpdateOverride("alice", set, {}, false).ok());
  QuotaOverride wider;
  wider.set_tokens_per_minute(500);  // above the overridden tokens_per_day of 100
  const absl::Status broken = ledger_->UpdateOverride("alice", wider, {}, false).status();
  EXPECT_EQ(broken.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(broken.message(), HasSubstr("tokens_per_minute: 500 is more than tokens_per_day (100)"));
  QuotaOverride huge;
  huge.set_tokens_per_month(kMaxQuotaValue + 1);
  EXPECT_THAT(ledger_->UpdateOverride("alice", huge, {}, false).status().message(),
              HasSubstr("tokens_per_month: 1000000000001 is more than the maximum"));
  store_.fail = true;
  EXPECT_EQ(ledger_->UpdateOverride("alice", QuotaOverride(), {}, true).status().code(),
            absl::StatusCode::kUnavailable);
  store_.fail = false;
  EXPECT_EQ(ledger_->OverrideOf("alice").tokens_per_day(), 100u);
  EXPECT_EQ(ledger_->OverrideOf("alice").has_tokens_per_minute(), false);
}

TEST_F(QuotaLedgerTest, ResetStartsTheChosenWindowsAfreshButKeepsRunningReservations) {
  const QuotaLimits limits = Limits(Limit::kTokensPerDay, 1000);
  auto done = ledger_->Reserve("alice", limits, 300, 300);
  ASSERT_TRUE(done.ok());
  ASSERT_TRUE((*done)->Settle(300, 300).ok());
  auto running = ledger_->Reserve("alice", limits, 100, 200);
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(ledger_->Reserve("alice", limits, 100, 200).status().code(), absl::StatusCode::kResourceExhausted);

  auto minute_only = ledger_->ResetUsage("alice", QuotaLedger::Window::kMinute);
  ASSERT_TRUE(minute_only.ok());
  EXPECT_EQ(minute_only->second.minute_requests, 0u);
  EXPECT_EQ(minute_only->second.minute_tokens, 300u);                 // the running reservation
  EXPECT_EQ(minute_only->second.day_prompt_tokens, 400u);              // untouched
  auto all = ledger_->ResetUsage("alice", QuotaLedger::Window::kAll);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->first.day_prompt_tokens + all->first.day_completion_tokens, 900u);
  EXPECT_EQ(all->second.day_prompt_tokens, 100u);
  EXPECT_EQ(all->second.day_completion_tokens, 200u);
  EXPECT_EQ(all->second.month_prompt_tokens + all->second.month_completion_tokens, 300u);
  EXPECT_EQ(all->second.running, 1u);
  EXPECT_TRUE(ledger_->Reserve("alice", limits, 100, 200).ok());  // (released again at once)
  // The running request settles what it used against the reset window.
  ASSERT_TRUE((*running)->Settle(100, 20).ok());
  EXPECT_EQ(ledger_->UsageOf("alice").day_prompt_tokens, 100u);
  EXPECT_EQ(ledger_->UsageOf("alice").day_completion_tokens, 20u);
  // Saved: a restart sees the reset.
  running->reset();
  ledger_.reset();
  Open();
  EXPECT_EQ(ledger_->UsageOf("alice").day_prompt_tokens, 100u);
  EXPECT_EQ(ledger_->UsageOf("alice").day_completion_tokens, 20u);
}

TEST(QuotaRulesTest, LimitNamesRoundTripAndOverridesConvertBothWays) {
  for (int i = 0; i < kLimitCount; ++i) {
    const Limit limit = static_cast<Limit>(i);
    EXPECT_EQ(LimitNamed(LimitName(limit)), limit);
  }
  EXPECT_EQ(LimitNamed("tokens_per_year"), std::nullopt);
  QuotaLimits limits;
  limits.Set(Limit::kMaxPromptTokens, 4096);
  const airlock::v1::config::QuotaLimits message = ToConfigLimits(limits);
  EXPECT_EQ(message.max_prompt_tokens(), 4096u);
  EXPECT_FALSE(message.has_tokens_per_day());
  EXPECT_EQ(ApplyOverride(QuotaLimits{}, message), limits);
}

}  // namespace
}  // namespace airlock::auth

// Quotas: resolving a user's limits from the configuration, and the reserve/settle ledger.
#include "auth/quota.h"

#include <algorithm>
#include <set>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "google/protobuf/duration.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "inference/base/status.h"

namespace airlock::auth {
namespace {

namespace pb = google::protobuf;
// The configuration message (auth::QuotaLimits is the resolved form).
using ConfigQuota = airlock::v1::config::QuotaLimits;

constexpr uint8_t kUsageVersion = 1;
constexpr size_t kUsageSize = 1 + 8 * 9;

const pb::FieldDescriptor* FieldOf(Limit limit) {
  return ConfigQuota::descriptor()->FindFieldByNumber(static_cast<int>(limit) + 1);
}

// The largest value among the messages that set `limit` (0, "no limit", is the largest).
std::optional<uint64_t> Largest(const std::vector<const ConfigQuota*>& levels, Limit limit) {
  std::optional<uint64_t> best;
  for (const ConfigQuota* l : levels) {
    const std::optional<uint64_t> v = LimitValue(*l, limit);
    if (!v.has_value()) continue;
    if (*v == 0 || (best.has_value() && *best == 0)) {
      best = 0;
    } else {
      best = std::max(best.value_or(0), *v);
    }
  }
  return best;
}

std::optional<uint64_t> NoLimitIfZero(std::optional<uint64_t> v) {
  if (v.has_value() && *v == 0) return std::nullopt;
  return v;
}

int64_t MinuteOf(absl::Time t) { return absl::ToUnixSeconds(t) / 60 - (absl::ToUnixSeconds(t) % 60 < 0 ? 1 : 0); }
int64_t DayOf(absl::Time t) {
  const int64_t s = absl::ToUnixSeconds(t);
  return s / 86400 - (s % 86400 < 0 ? 1 : 0);
}
int64_t MonthOf(absl::Time t) {
  const absl::CivilMonth m = absl::ToCivilMonth(t, absl::UTCTimeZone());
  return m.year() * 12 + (m.month() - 1);
}
absl::Time MinuteStart(int64_t minute) { return absl::FromUnixSeconds(minute * 60); }
absl::Time DayStart(int64_t day) { return absl::FromUnixSeconds(day * 86400); }
absl::Time MonthStart(int64_t month) {
  return absl::FromCivil(absl::CivilMonth(month / 12, static_cast<int>(month % 12) + 1), absl::UTCTimeZone());
}

std::string Rfc3339(absl::Time t) { return absl::FormatTime("%Y-%m-%d%ET%H:%M:%SZ", t, absl::UTCTimeZone()); }

void AppendU64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}
uint64_t ReadU64(std::string_view bytes, size_t at) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
  return v;
}

// One violated limit: the refusal's message and details.
struct Violation {
  std::string description;
  absl::Time retry_at;  // when trying again can succeed (InfiniteFuture: never, as the request is)
  Limit limit;
};

absl::Status QuotaError(std::string_view identity, const Violation& v, absl::Time now) {
  const std::string& message = v.description;
  google::rpc::QuotaFailure failure;
  google::rpc::QuotaFailure::Violation* violation = failure.add_violations();
  violation->set_subject(absl::StrCat("identity:", ToAbsl(identity)));
  violation->set_description(message);
  google::rpc::Status rpc;
  rpc.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
  rpc.set_message(message);
  rpc.add_details()->PackFrom(failure);
  if (v.retry_at != absl::InfiniteFuture()) {
    google::rpc::RetryInfo retry;
    const absl::Duration delay = std::max(v.retry_at - now, absl::ZeroDuration());
    retry.mutable_retry_delay()->set_seconds(absl::ToInt64Seconds(delay));
    retry.mutable_retry_delay()->set_nanos(
        static_cast<int32_t>(absl::ToInt64Nanoseconds(delay - absl::Seconds(absl::ToInt64Seconds(delay)))));
    rpc.add_details()->PackFrom(retry);
  }
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kRpcStatusPayloadUrl, absl::Cord(rpc.SerializeAsString()));
  status.SetPayload(kQuotaLimitPayloadUrl, absl::Cord(ToAbsl(LimitName(v.limit))));
  return status;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> QuotaRuleViolations(const ConfigQuota& limits) {
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = 0; i < kLimitCount; ++i) {
    const Limit limit = static_cast<Limit>(i);
    if (const std::optional<uint64_t> v = LimitValue(limits, limit); v.has_value() && *v > kMaxQuotaValue) {
      out.emplace_back(std::string(LimitName(limit)),
                       absl::StrCat(*v, " is more than the maximum of ", kMaxQuotaValue));
    }
  }
  const std::pair<Limit, Limit> nested[] = {
      {Limit::kTokensPerMinute, Limit::kTokensPerDay},
      {Limit::kTokensPerDay, Limit::kTokensPerMonth},
      {Limit::kPromptTokensPerDay, Limit::kPromptTokensPerMonth},
      {Limit::kCompletionTokensPerDay, Limit::kCompletionTokensPerMonth},
  };
  for (const auto& [narrow, wide] : nested) {
    const std::optional<uint64_t> n = NoLimitIfZero(LimitValue(limits, narrow));
    const std::optional<uint64_t> w = NoLimitIfZero(LimitValue(limits, wide));
    if (n.has_value() && w.has_value() && *n > *w) {
      out.emplace_back(std::string(LimitName(narrow)),
                       absl::StrCat(*n, " is more than ", ToAbsl(LimitName(wide)), " (", *w, ")"));
    }
  }
  return out;
}

std::optional<Limit> LimitNamed(std::string_view name) {
  const pb::FieldDescriptor* field = ConfigQuota::descriptor()->FindFieldByName(std::string(name));
  if (field == nullptr) return std::nullopt;
  return static_cast<Limit>(field->number() - 1);
}

QuotaLimits ApplyOverride(const QuotaLimits& configured, const QuotaOverride& override_limits) {
  QuotaLimits out = configured;
  for (int i = 0; i < kLimitCount; ++i) {
    const Limit limit = static_cast<Limit>(i);
    if (const std::optional<uint64_t> v = LimitValue(override_limits, limit); v.has_value()) {
      out.Set(limit, NoLimitIfZero(v));
    }
  }
  return out;
}

ConfigQuota ToConfigLimits(const QuotaLimits& limits) {
  ConfigQuota out;
  for (int i = 0; i < kLimitCount; ++i) SetLimitValue(out, static_cast<Limit>(i), limits.Get(static_cast<Limit>(i)));
  return out;
}

absl::Time MinuteStartOf(const QuotaUsage& usage) { return MinuteStart(usage.minute); }
absl::Time DayStartOf(const QuotaUsage& usage) { return DayStart(usage.day); }
absl::Time MonthStartOf(const QuotaUsage& usage) { return MonthStart(usage.month); }

std::optional<uint64_t> LimitValue(const ConfigQuota& limits, Limit limit) {
  const pb::Reflection* reflection = limits.GetReflection();
  if (!reflection->HasField(limits, FieldOf(limit))) return std::nullopt;
  return reflection->GetUInt64(limits, FieldOf(limit));
}

void SetLimitValue(ConfigQuota& limits, Limit limit, std::optional<uint64_t> value) {
  const pb::Reflection* reflection = limits.GetReflection();
  if (value.has_value()) {
    reflection->SetUInt64(&limits, FieldOf(limit), *value);
  } else {
    reflection->ClearField(&limits, FieldOf(limit));
  }
}

std::string_view LimitName(Limit limit) {
  const pb::FieldDescriptor* field = FieldOf(limit);
  return field == nullptr ? std::string_view("unknown") : std::string_view(field->name());
}

std::vector<std::string> QuotaPolicy::Users() const {
  std::vector<std::string> out;
  out.reserve(users_.size());
  for (const auto& [name, limits] : users_) out.push_back(name);
  return out;
}

std::shared_ptr<const QuotaPolicy> QuotaPolicy::Create(const airlock::v1::config::DaemonConfig& config) {
  auto policy = std::make_shared<QuotaPolicy>();
  std::map<std::string, const airlock::v1::config::GroupConfig*, std::less<>> groups;
  for (const auto& g : config.groups()) groups[g.name()] = &g;
  std::map<std::string, const airlock::v1::config::RoleConfig*, std::less<>> roles;
  for (const auto& r : config.roles()) roles[r.name()] = &r;
  for (int i = 0; i < kLimitCount; ++i) {
    policy->defaults_.Set(static_cast<Limit>(i), NoLimitIfZero(LimitValue(config.quota_defaults(), static_cast<Limit>(i))));
  }
  for (const auto& user : config.users()) {
    std::vector<const ConfigQuota*> group_levels;
    std::set<std::string> role_names(user.roles().begin(), user.roles().end());
    for (const std::string& name : user.groups()) {
      auto g = groups.find(name);
      if (g == groups.end()) continue;  // the configuration is validated before this
      group_levels.push_back(&g->second->quota());
      role_names.insert(g->second->roles().begin(), g->second->roles().end());
    }
    std::vector<const ConfigQuota*> role_levels;
    for (const std::string& name : role_names) {
      auto r = roles.find(name);
      if (r != roles.end()) role_levels.push_back(&r->second->quota());
    }
    QuotaLimits resolved;
    for (int i = 0; i < kLimitCount; ++i) {
      const Limit limit = static_cast<Limit>(i);
      std::optional<uint64_t> v = LimitValue(user.quota(), limit);
      if (!v.has_value()) v = Largest(group_levels, limit);
      if (!v.has_value()) v = Largest(role_levels, limit);
      resolved.Set(limit, v.has_value() ? NoLimitIfZero(v) : policy->defaults_.Get(limit));
    }
    policy->users_[user.name()] = resolved;
  }
  return policy;
}

const QuotaLimits& QuotaPolicy::LimitsOf(std::string_view identity) const {
  auto it = users_.find(identity);
  return it == users_.end() ? defaults_ : it->second;
}

std::string EncodeUsage(const QuotaUsage& u) {
  std::string out;
  out.reserve(kUsageSize);
  out.push_back(static_cast<char>(kUsageVersion));
  for (uint64_t v : {static_cast<uint64_t>(u.minute), u.minute_requests, u.minute_tokens, static_cast<uint64_t>(u.day),
                     u.day_prompt_tokens, u.day_completion_tokens, static_cast<uint64_t>(u.month),
                     u.month_prompt_tokens, u.month_completion_tokens}) {
    AppendU64(out, v);
  }
  return out;
}

absl::StatusOr<QuotaUsage> DecodeUsage(std::string_view bytes) {
  if (bytes.size() != kUsageSize || static_cast<uint8_t>(bytes[0]) != kUsageVersion) {
    return absl::DataLossError(absl::StrCat("quota usage: expected ", kUsageSize, " bytes of version ",
                                            kUsageVersion, ", got ", bytes.size(), " bytes"));
  }
  QuotaUsage u;
  u.minute = static_cast<int64_t>(ReadU64(bytes, 1));
  u.minute_requests = ReadU64(bytes, 9);
  u.minute_tokens = ReadU64(bytes, 17);
  u.day = static_cast<int64_t>(ReadU64(bytes, 25));
  u.day_prompt_tokens = ReadU64(bytes, 33);
  u.day_completion_tokens = ReadU64(bytes, 41);
  u.month = static_cast<int64_t>(ReadU64(bytes, 49));
  u.month_prompt_tokens = ReadU64(bytes, 57);
  u.month_completion_tokens = ReadU64(bytes, 65);
  return u;
}

absl::StatusOr<std::unique_ptr<QuotaLedger>> QuotaLedger::Open(UsageStore* store, Clock clock) {
  std::unique_ptr<QuotaLedger> ledger(new QuotaLedger(store, std::move(clock)));
  AIRLOCK_ASSIGN_OR_RETURN(auto saved, store->LoadAll());
  absl::MutexLock lock(&ledger->mu_);
  for (auto& [identity, value] : saved) {
    absl::StatusOr<QuotaUsage> usage = DecodeUsage(value);
    if (!usage.ok()) {
      return absl::DataLossError(absl::StrCat("quota usage of \"", identity, "\": ", usage.status().message()));
    }
    ledger->usage_[identity] = *usage;
  }
  AIRLOCK_ASSIGN_OR_RETURN(auto overrides, store->LoadOverrides());
  for (auto& [identity, value] : overrides) {
    QuotaOverride o;
    if (!o.ParseFromString(value)) {
      return absl::DataLossError(absl::StrCat("quota override of \"", identity, "\": does not parse"));
    }
    ledger->overrides_[identity] = std::move(o);
  }
  return ledger;
}

// What running requests reserved is carried into each new window: a window's counters always
// include the reservations, so that Settle can release the unused part wherever it lands.
void QuotaLedger::ResetMinute(QuotaUsage& u) {
  u.minute_requests = 0;
  u.minute_tokens = u.reserved_prompt + u.reserved_completion;
}
void QuotaLedger::ResetDay(QuotaUsage& u) {
  u.day_prompt_tokens = u.reserved_prompt;
  u.day_completion_tokens = u.reserved_completion;
}
void QuotaLedger::ResetMonth(QuotaUsage& u) {
  u.month_prompt_tokens = u.reserved_prompt;
  u.month_completion_tokens = u.reserved_completion;
}

void QuotaLedger::Roll(QuotaUsage& u, absl::Time now) {
  if (const int64_t minute = MinuteOf(now); u.minute != minute) {
    u.minute = minute;
    ResetMinute(u);
  }
  if (const int64_t day = DayOf(now); u.day != day) {
    u.day = day;
    ResetDay(u);
  }
  if (const int64_t month = MonthOf(now); u.month != month) {
    u.month = month;
    ResetMonth(u);
  }
}

bool QuotaLedger::Knows(std::string_view identity) const {
  absl::MutexLock lock(&mu_);
  return usage_.contains(identity) || overrides_.contains(identity);
}

std::vector<std::string> QuotaLedger::Identities() const {
  absl::MutexLock lock(&mu_);
  std::set<std::string> names;
  for (const auto& [name, usage] : usage_) names.insert(name);
  for (const auto& [name, o] : overrides_) names.insert(name);
  return std::vector<std::string>(names.begin(), names.end());
}

QuotaOverride QuotaLedger::OverrideOf(std::string_view identity) const {
  absl::MutexLock lock(&mu_);
  auto it = overrides_.find(identity);
  return it == overrides_.end() ? QuotaOverride() : it->second;
}

absl::StatusOr<QuotaOverride> QuotaLedger::UpdateOverride(std::string_view identity, const QuotaOverride& set,
                                                          const std::vector<Limit>& remove, bool clear) {
  absl::MutexLock lock(&mu_);
  auto it = overrides_.find(identity);
  QuotaOverride updated = (clear || it == overrides_.end()) ? QuotaOverride() : it->second;
  for (const Limit limit : remove) SetLimitValue(updated, limit, std::nullopt);
  updated.MergeFrom(set);
  if (const auto broken = QuotaRuleViolations(updated); !broken.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(broken.front().first, ": ", broken.front().second));
  }
  const bool empty = updated.ByteSizeLong() == 0;
  AIRLOCK_RETURN_IF_ERROR(store_->SaveOverride(identity, empty ? std::string() : updated.SerializeAsString()));
  if (empty) {
    if (it != overrides_.end()) overrides_.erase(it);
  } else {
    overrides_[std::string(identity)] = updated;
  }
  return updated;
}

absl::StatusOr<std::pair<QuotaUsage, QuotaUsage>> QuotaLedger::ResetUsage(std::string_view identity, Window window) {
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  QuotaUsage& u = usage_[std::string(identity)];
  Roll(u, now);
  const QuotaUsage before = u;
  if (window == Window::kAll || window == Window::kMinute) ResetMinute(u);
  if (window == Window::kAll || window == Window::kDay) ResetDay(u);
  if (window == Window::kAll || window == Window::kMonth) ResetMonth(u);
  if (absl::Status saved = store_->Save(identity, EncodeUsage(u)); !saved.ok()) {
    u = before;
    return saved;
  }
  return std::make_pair(before, u);
}

QuotaUsage QuotaLedger::UsageOf(std::string_view identity) const {
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  auto it = usage_.find(identity);
  QuotaUsage u = it == usage_.end() ? QuotaUsage{} : it->second;
  Roll(u, now);
  return u;
}

absl::StatusOr<std::unique_ptr<QuotaLedger::Reservation>> QuotaLedger::Reserve(std::string_view identity,
                                                                              const QuotaLimits& configured,
                                                                              uint64_t prompt_tokens,
                                                                              uint64_t max_tokens) {
  const absl::Time now = clock_();
  const uint64_t tokens = prompt_tokens + max_tokens;
  absl::MutexLock lock(&mu_);
  const auto overridden = overrides_.find(identity);
  const QuotaLimits limits =
      overridden == overrides_.end() ? configured : ApplyOverride(configured, overridden->second);
  QuotaUsage& u = usage_[std::string(identity)];
  Roll(u, now);
  const absl::Time next_minute = MinuteStart(u.minute + 1);
  const absl::Time next_day = DayStart(u.day + 1);
  const absl::Time next_month = MonthStart(u.month + 1);

  std::optional<Violation> violation;
  // A budget the request alone exceeds can never be met: say so instead of "try later".
  const auto check = [&](Limit limit, uint64_t used, uint64_t needed, std::string_view what, absl::Time resets) {
    const std::optional<uint64_t> max = limits.Get(limit);
    if (violation.has_value() || !max.has_value() || used + needed <= *max) return;
    if (needed > *max) {
      violation = Violation{absl::StrCat(ToAbsl(what), " of ", *max, " is smaller than this request's ", needed,
                                         " (", ToAbsl(LimitName(limit)), "): ask for fewer tokens"),
                            absl::InfiniteFuture(), limit};
      return;
    }
    violation = Violation{absl::StrCat(ToAbsl(what), " of ", *max, " used (", used, " used or reserved; this request needs ",
                                       needed, "); resets at ", Rfc3339(resets)),
                          resets, limit};
  };
  if (const std::optional<uint64_t> max = limits.Get(Limit::kMaxPromptTokens); max && prompt_tokens > *max) {
    violation = Violation{absl::StrCat("the prompt of ", prompt_tokens, " tokens is longer than the ", *max,
                                       " this identity may send (max_prompt_tokens)"),
                          absl::InfiniteFuture(), Limit::kMaxPromptTokens};
  }
  if (const std::optional<uint64_t> max = limits.Get(Limit::kMaxTokensPerRequest);
      !violation && max && max_tokens > *max) {
    violation = Violation{absl::StrCat("max_tokens of ", max_tokens, " is more than the ", *max,
                                       " this identity may ask for (max_tokens_per_request)"),
                          absl::InfiniteFuture(), Limit::kMaxTokensPerRequest};
  }
  if (const std::optional<uint64_t> max = limits.Get(Limit::kMaxConcurrentRequests);
      !violation && max && u.running + 1 > *max) {
    violation = Violation{absl::StrCat("concurrent request limit of ", *max, " reached (", u.running,
                                       " running or waiting); retry when one ends"),
                          now + absl::Seconds(1), Limit::kMaxConcurrentRequests};
  }
  check(Limit::kRequestsPerMinute, u.minute_requests, 1, "per-minute request limit", next_minute);
  check(Limit::kTokensPerMinute, u.minute_tokens, tokens, "per-minute token budget", next_minute);
  check(Limit::kTokensPerDay, u.day_prompt_tokens + u.day_completion_tokens, tokens, "daily token budget", next_day);
  check(Limit::kPromptTokensPerDay, u.day_prompt_tokens, prompt_tokens, "daily prompt token budget", next_day);
  check(Limit::kCompletionTokensPerDay, u.day_completion_tokens, max_tokens, "daily completion token budget",
        next_day);
  check(Limit::kTokensPerMonth, u.month_prompt_tokens + u.month_completion_tokens, tokens, "monthly token budget",
        next_month);
  check(Limit::kPromptTokensPerMonth, u.month_prompt_tokens, prompt_tokens, "monthly prompt token budget",
        next_month);
  check(Limit::kCompletionTokensPerMonth, u.month_completion_tokens, max_tokens,
        "monthly completion token budget", next_month);
  if (violation.has_value()) return QuotaError(identity, *violation, now);

  const QuotaUsage before = u;
  ++u.running;
  ++u.minute_requests;
  u.reserved_prompt += prompt_tokens;
  u.reserved_completion += max_tokens;
  u.minute_tokens += tokens;
  u.day_prompt_tokens += prompt_tokens;
  u.day_completion_tokens += max_tokens;
  u.month_prompt_tokens += prompt_tokens;
  u.month_completion_tokens += max_tokens;
  // Saved before admitting: a crash from here on leaves the worst case charged, never less.
  if (absl::Status saved = store_->Save(identity, EncodeUsage(u)); !saved.ok()) {
    u = before;
    absl::Status refused = absl::UnavailableError("quota usage cannot be recorded, so the request is refused");
    refused.SetPayload(kQuotaStoreErrorPayloadUrl, absl::Cord(saved.message()));
    return refused;
  }
  return std::unique_ptr<Reservation>(new Reservation(this, std::string(identity), prompt_tokens, max_tokens));
}

absl::Status QuotaLedger::Release(const std::string& identity, uint64_t reserved_prompt,
                                  uint64_t reserved_completion, uint64_t used_prompt, uint64_t used_completion) {
  const absl::Time now = clock_();
  used_prompt = std::min(used_prompt, reserved_prompt);
  used_completion = std::min(used_completion, reserved_completion);
  const uint64_t unused_prompt = reserved_prompt - used_prompt;
  const uint64_t unused_completion = reserved_completion - used_completion;
  absl::MutexLock lock(&mu_);
  QuotaUsage& u = usage_[identity];
  Roll(u, now);
  const auto minus = [](uint64_t& counter, uint64_t amount) { counter -= std::min(counter, amount); };
  --u.running;
  minus(u.reserved_prompt, reserved_prompt);
  minus(u.reserved_completion, reserved_completion);
  minus(u.minute_tokens, unused_prompt + unused_completion);
  minus(u.day_prompt_tokens, unused_prompt);
  minus(u.day_completion_tokens, unused_completion);
  minus(u.month_prompt_tokens, unused_prompt);
  minus(u.month_completion_tokens, unused_completion);
  return store_->Save(identity, EncodeUsage(u));
}

QuotaLedger::Reservation::~Reservation() {
  if (!settled_) Settle(0, 0).IgnoreError();
}

absl::Status QuotaLedger::Reservation::Settle(uint64_t prompt_tokens, uint64_t completion_tokens) {
  if (settled_) return absl::FailedPreconditionError("reservation already settled");
  settled_ = true;
  return ledger_->Release(identity_, prompt_, completion_, prompt_tokens, completion_tokens);
}

}  // namespace airlock::auth

// Per-identity quotas: which limits apply to a user (QuotaPolicy, from the configuration), and the
// ledger that admits requests against them (QuotaLedger): a request reserves its worst case
// before work starts and settles its actual usage when it ends, so concurrent requests can never
// overshoot a limit. Usage is kept through a UsageStore (the daemon's RocksDB state) so that a
// restart or a crash never resets a budget. Precedence, windows and accounting: docs/quotas.md.
//
// Thread-safety: QuotaPolicy is immutable. QuotaLedger and its Reservations may be used from any
// thread (one mutex; every decision is taken under it).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "airlock/v1/config.pb.h"

namespace airlock::auth {

// The limits, in the order (and with field number index + 1) of config QuotaLimits.
enum class Limit : int {
  kRequestsPerMinute = 0,
  kTokensPerMinute,
  kTokensPerDay,
  kPromptTokensPerDay,
  kCompletionTokensPerDay,
  kTokensPerMonth,
  kPromptTokensPerMonth,
  kCompletionTokensPerMonth,
  kMaxConcurrentRequests,
  kMaxTokensPerRequest,
  kMaxPromptTokens,
};
inline constexpr int kLimitCount = 11;

// The configuration key of a limit ("tokens_per_day").
std::string_view LimitName(Limit limit);

// A limit's field in a QuotaLimits message: its value when set (0 stays 0, "no limit"), and
// setting or (with nullopt) clearing it.
std::optional<uint64_t> LimitValue(const airlock::v1::config::QuotaLimits& limits, Limit limit);
void SetLimitValue(airlock::v1::config::QuotaLimits& limits, Limit limit, std::optional<uint64_t> value);

// One user's resolved limits; nullopt means no limit.
struct QuotaLimits {
  std::array<std::optional<uint64_t>, kLimitCount> values;
  std::optional<uint64_t> Get(Limit limit) const { return values[static_cast<int>(limit)]; }
  void Set(Limit limit, std::optional<uint64_t> value) { values[static_cast<int>(limit)] = value; }
  bool operator==(const QuotaLimits&) const = default;
};

class QuotaPolicy {
 public:
  // Resolves every configured user's limits: per limit, the user's own value, else the largest
  // of their groups' values, else the largest of their roles' values (held directly or through
  // a group), else quota_defaults; a value of 0 means "no limit" at that level.
  static std::shared_ptr<const QuotaPolicy> Create(const airlock::v1::config::DaemonConfig& config);

  // The limits of `identity`: quota_defaults for an identity that is not a configured user.
  const QuotaLimits& LimitsOf(std::string_view identity) const;
  bool IsConfiguredUser(std::string_view identity) const { return users_.contains(identity); }
  // Every configured user, sorted.
  std::vector<std::string> Users() const;

 private:
  QuotaLimits defaults_;
  std::map<std::string, QuotaLimits, std::less<>> users_;
};

// The rules every QuotaLimits message obeys, in the configuration and in an override: each value
// at most kMaxQuotaValue, and a narrower window's budget not above a wider one's of the same kind
// (0, "no limit", is never compared). Each broken rule as (field name, what is wrong).
inline constexpr uint64_t kMaxQuotaValue = 1'000'000'000'000;
std::vector<std::pair<std::string, std::string>> QuotaRuleViolations(const airlock::v1::config::QuotaLimits& limits);

// The limit named `name` ("tokens_per_day"); nullopt for an unknown name.
std::optional<Limit> LimitNamed(std::string_view name);

// An administrator's override of an identity's configured limits (SetQuotaOverride): each field
// that is set replaces the configured value (0: no limit); fields not set keep the configuration.
using QuotaOverride = airlock::v1::config::QuotaLimits;
// `configured` with `override` applied.
QuotaLimits ApplyOverride(const QuotaLimits& configured, const QuotaOverride& override_limits);
// A resolved QuotaLimits as the configuration message (a field set for each limit; none for "no
// limit").
airlock::v1::config::QuotaLimits ToConfigLimits(const QuotaLimits& limits);

// Where usage and overrides are kept between restarts: one opaque value per identity each.
class UsageStore {
 public:
  virtual ~UsageStore() = default;
  // Durable against a process crash once this returns OK.
  virtual absl::Status Save(std::string_view identity, std::string_view value) = 0;
  // Every saved (identity, value).
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadAll() const = 0;
  // An override (an administrator's decision): durable against a power loss once this returns
  // OK. An empty value removes the identity's override.
  virtual absl::Status SaveOverride(std::string_view identity, std::string_view value) = 0;
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadOverrides() const = 0;
};

// One identity's usage in its current windows (UTC minute, day and month). Counters include what
// is reserved by requests still running.
struct QuotaUsage {
  int64_t minute = 0;  // minutes since the Unix epoch
  uint64_t minute_requests = 0;
  uint64_t minute_tokens = 0;
  int64_t day = 0;  // days since the Unix epoch
  uint64_t day_prompt_tokens = 0;
  uint64_t day_completion_tokens = 0;
  int64_t month = 0;  // year * 12 + month - 1
  uint64_t month_prompt_tokens = 0;
  uint64_t month_completion_tokens = 0;
  // Not stored (a restart has no running requests; what they reserved stays charged):
  uint32_t running = 0;               // requests admitted and not yet settled
  uint64_t reserved_prompt = 0;       // their reserved prompt tokens...
  uint64_t reserved_completion = 0;   // ...and max_tokens, carried into each new window

  bool operator==(const QuotaUsage&) const = default;
};

// The stored form of a usage (the window counters, reservations included). Exposed for tests.
std::string EncodeUsage(const QuotaUsage& usage);
absl::StatusOr<QuotaUsage> DecodeUsage(std::string_view bytes);

class QuotaLedger {
 public:
  using Clock = std::function<absl::Time()>;

  // Loads the saved usage. DATA_LOSS naming the identity for a value that does not decode;
  // the store's error when it cannot be read. `store` must outlive the ledger.
  static absl::StatusOr<std::unique_ptr<QuotaLedger>> Open(UsageStore* store, Clock clock = absl::Now);

  // A request's admission: holds its reserved worst case until Settle (or destruction, which
  // settles nothing used).
  class Reservation {
   public:
    ~Reservation();
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    // Charges what the request used (at most what it reserved) and releases the rest. Once.
    absl::Status Settle(uint64_t prompt_tokens, uint64_t completion_tokens);

   private:
    friend class QuotaLedger;
    Reservation(QuotaLedger* ledger, std::string identity, uint64_t prompt, uint64_t completion)
        : ledger_(ledger), identity_(std::move(identity)), prompt_(prompt), completion_(completion) {}
    QuotaLedger* ledger_;
    std::string identity_;
    uint64_t prompt_;
    uint64_t completion_;
    bool settled_ = false;
  };

  // Admits a request of `prompt_tokens` that may generate up to `max_tokens` under `limits` (with
  // the identity's override applied over them), reserving prompt_tokens + max_tokens (and the request) in every window. RESOURCE_EXHAUSTED
  // when a limit would be exceeded: the message names the limit, its value, the usage and when
  // it resets, and the status carries a google.rpc.Status payload (QuotaFailure and RetryInfo;
  // see QuotaStatusDetails). UNAVAILABLE when the reservation cannot be saved.
  absl::StatusOr<std::unique_ptr<Reservation>> Reserve(std::string_view identity, const QuotaLimits& limits,
                                                       uint64_t prompt_tokens, uint64_t max_tokens)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The identity's usage, rolled to the current windows.
  QuotaUsage UsageOf(std::string_view identity) const ABSL_LOCKS_EXCLUDED(mu_);

  // Whether the ledger has usage or an override for `identity`.
  bool Knows(std::string_view identity) const ABSL_LOCKS_EXCLUDED(mu_);
  // Every identity with usage or an override, sorted.
  std::vector<std::string> Identities() const ABSL_LOCKS_EXCLUDED(mu_);

  // The identity's override (no field set: none). Reserve applies it over the limits it is given.
  QuotaOverride OverrideOf(std::string_view identity) const ABSL_LOCKS_EXCLUDED(mu_);
  // Changes the override in one step: starts from the current one (or from none when `clear`),
  // drops the limits in `remove`, then sets the fields set in `set`. Saved durably before it
  // applies; returns the new override. INVALID_ARGUMENT when the result breaks a rule of
  // QuotaRuleViolations; the store's error when it cannot be saved (nothing changes).
  absl::StatusOr<QuotaOverride> UpdateOverride(std::string_view identity, const QuotaOverride& set,
                                               const std::vector<Limit>& remove, bool clear)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Starts the identity's current windows afresh, as if each had just begun: the counters keep
  // only what running requests have reserved. Returns the usage before and after.
  enum class Window { kAll, kMinute, kDay, kMonth };
  absl::StatusOr<std::pair<QuotaUsage, QuotaUsage>> ResetUsage(std::string_view identity, Window window)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  QuotaLedger(UsageStore* store, Clock clock) : store_(store), clock_(std::move(clock)) {}
  absl::Status Release(const std::string& identity, uint64_t reserved_prompt, uint64_t reserved_completion,
                       uint64_t used_prompt, uint64_t used_completion) ABSL_LOCKS_EXCLUDED(mu_);
  // Starts new windows where the clock has moved past the usage's.
  static void Roll(QuotaUsage& usage, absl::Time now);
  static void ResetMinute(QuotaUsage& usage);
  static void ResetDay(QuotaUsage& usage);
  static void ResetMonth(QuotaUsage& usage);

  UsageStore* const store_;
  const Clock clock_;
  mutable absl::Mutex mu_;
  std::map<std::string, QuotaUsage, std::less<>> usage_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, QuotaOverride, std::less<>> overrides_ ABSL_GUARDED_BY(mu_);
};

// Where `usage`'s minute, day and month windows begin (UTC), for reports.
absl::Time MinuteStartOf(const QuotaUsage& usage);
absl::Time DayStartOf(const QuotaUsage& usage);
absl::Time MonthStartOf(const QuotaUsage& usage);

// The payload type URL under which a quota refusal's absl::Status carries the serialized
// google.rpc.Status (code, message, QuotaFailure, RetryInfo); ToGrpcStatus sends it as the gRPC
// error details.
inline constexpr char kRpcStatusPayloadUrl[] = "type.googleapis.com/google.rpc.Status";
// ...and under this one the name of the limit that refused (a QuotaLimits key), for metrics.
inline constexpr char kQuotaLimitPayloadUrl[] = "airlock/quota-limit";
// Why usage could not be saved (the store's own words, which may name paths), attached to the
// UNAVAILABLE refusal for the daemon's log; the client's message does not carry it.
inline constexpr char kQuotaStoreErrorPayloadUrl[] = "airlock/quota-store-error";

}  // namespace airlock::auth

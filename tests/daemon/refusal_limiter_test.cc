// Tests for the refusal rate limit: the first N refusals of a caller per window are recorded, the
// rest counted exactly into aggregates that come out when the window closes, when a key must make
// room, or at shutdown; and for the model-name bound checked at admission.
#include "daemon/refusal_limiter.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/request_validation.h"

namespace airlock::daemon {
namespace {

using Aggregate = RefusalLimiter::Aggregate;
using audit::Decision;

CallInfo Caller(const std::string& identity, const std::string& method = "airlock.v1.Inference/Generate") {
  CallInfo call;
  call.identity.name = identity;
  call.method = method;
  call.peer = "ipv4:10.0.0.7:40000";
  return call;
}

uint64_t Sum(const std::vector<Aggregate>& aggregates) {
  uint64_t n = 0;
  for (const Aggregate& a : aggregates) n += a.suppressed;
  return n;
}

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(RefusalLimiterTest, FirstNRecordedTheRestCountedExactlyUntilTheWindowCloses) {
  RefusalLimiter limiter({.records_per_window = 5, .window = absl::Minutes(1), .max_keys = 100});
  std::vector<Aggregate> due;
  int recorded = 0;
  for (int i = 0; i < 500; ++i) {
    recorded += limiter.Admit(Caller("mallory"), Decision::kDeniedByRole, absl::StatusCode::kPermissionDenied,
                              kT0 + absl::Milliseconds(i), &due)
                    ? 1
                    : 0;
  }
  EXPECT_EQ(recorded, 5);
  EXPECT_TRUE(due.empty());  // the window is still open
  EXPECT_TRUE(limiter.TakeClosed(kT0 + absl::Seconds(59)).empty());
  const std::vector<Aggregate> closed = limiter.TakeClosed(kT0 + absl::Minutes(1));
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].suppressed, 495u);
  EXPECT_EQ(closed[0].decision, Decision::kDeniedByRole);
  EXPECT_EQ(closed[0].code, absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(closed[0].call.identity.name, "mallory");
  EXPECT_EQ(closed[0].window_start, kT0);
  EXPECT_EQ(limiter.tracked_keys(), 0u);
  // A new window: recorded again from the start.
  EXPECT_TRUE(limiter.Admit(Caller("mallory"), Decision::kDeniedByRole, absl::StatusCode::kPermissionDenied,
                            kT0 + absl::Minutes(2), &due));
}

TEST(RefusalLimiterTest, OtherCallersAreNotCountedAgainstTheFlooder) {
  RefusalLimiter limiter({.records_per_window = 2, .window = absl::Minutes(1), .max_keys = 100});
  std::vector<Aggregate> due;
  for (int i = 0; i < 10; ++i) {
    limiter.Admit(Caller("mallory"), Decision::kDeniedByRole, absl::StatusCode::kPermissionDenied, kT0, &due);
  }
  EXPECT_TRUE(limiter.Admit(Caller("alice"), Decision::kInvalid, absl::StatusCode::kInvalidArgument, kT0, &due));
  EXPECT_TRUE(limiter.Admit(Caller("alice"), Decision::kInvalid, absl::StatusCode::kInvalidArgument, kT0, &due));
  EXPECT_FALSE(limiter.Admit(Caller("alice"), Decision::kInvalid, absl::StatusCode::kInvalidArgument, kT0, &due));
}

TEST(RefusalLimiterTest, EachKindHasItsOwnAggregateAndTheNextWindowFlushesThePrevious) {
  RefusalLimiter limiter({.records_per_window = 1, .window = absl::Minutes(1), .max_keys = 100});
  std::vector<Aggregate> due;
  limiter.Admit(Caller("bob"), Decision::kDeniedByQuota, absl::StatusCode::kResourceExhausted, kT0, &due);
  for (int i = 0; i < 3; ++i) {
    limiter.Admit(Caller("bob"), Decision::kDeniedByQuota, absl::StatusCode::kResourceExhausted, kT0, &due);
  }
  for (int i = 0; i < 4; ++i) {
    limiter.Admit(Caller("bob", "airlock.v1.Inference/Chat"), Decision::kInvalid, absl::StatusCode::kInvalidArgument,
                  kT0, &due);
  }
  EXPECT_TRUE(due.empty());
  // bob's next refusal, after the window: the previous window's aggregates come out first.
  EXPECT_TRUE(limiter.Admit(Caller("bob"), Decision::kDeniedByQuota, absl::StatusCode::kResourceExhausted,
                            kT0 + absl::Seconds(61), &due));
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].suppressed + due[1].suppressed, 7u);
  EXPECT_EQ(due[0].call.method == "airlock.v1.Inference/Chat" ? due[0].suppressed : due[1].suppressed, 4u);
}

TEST(RefusalLimiterTest, MemoryIsBoundedByEvictingTheOldestWindowWithItsCount) {
  RefusalLimiter limiter({.records_per_window = 1, .window = absl::Minutes(1), .max_keys = 3});
  std::vector<Aggregate> due;
  uint64_t sent_beyond_limit = 0;
  for (int key = 0; key < 50; ++key) {
    for (int i = 0; i < 4; ++i) {
      if (!limiter.Admit(Caller("user" + std::to_string(key)), Decision::kDeniedByRole,
                         absl::StatusCode::kPermissionDenied, kT0 + absl::Seconds(key), &due)) {
        ++sent_beyond_limit;
      }
    }
    EXPECT_LE(limiter.tracked_keys(), 3u);
  }
  EXPECT_EQ(sent_beyond_limit, 150u);
  EXPECT_EQ(due.size(), 47u);                       // one evicted window each
  EXPECT_EQ(due.front().call.identity.name, "user0");  // oldest first
  const std::vector<Aggregate> rest = limiter.TakeAll();  // shutdown: open windows too
  EXPECT_EQ(Sum(due) + Sum(rest), sent_beyond_limit);     // nothing lost
  EXPECT_EQ(limiter.tracked_keys(), 0u);
}

TEST(RefusalLimiterTest, ZeroRecordsEveryRefusal) {
  RefusalLimiter limiter({.records_per_window = 0, .window = absl::Minutes(1), .max_keys = 3});
  std::vector<Aggregate> due;
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(limiter.Admit(Caller("mallory"), Decision::kDeniedByRole, absl::StatusCode::kPermissionDenied, kT0,
                              &due));
  }
  EXPECT_EQ(limiter.tracked_keys(), 0u);
}

TEST(RefusalLimiterTest, KeysWithoutAnIdentityUseTheCertificateOrThePeerWithoutItsPort) {
  CallInfo call;
  call.peer = "ipv4:10.0.0.7:40000";
  EXPECT_EQ(RefusalKey(call), "peer:ipv4:10.0.0.7");
  call.peer = "ipv6:[::1]:40001";
  EXPECT_EQ(RefusalKey(call), "peer:ipv6:[::1]");
  call.identity.fingerprint = "ab12";
  EXPECT_EQ(RefusalKey(call), "cert:ab12");
  call.identity.name = "alice";
  EXPECT_EQ(RefusalKey(call), "identity:alice");
}

TEST(ModelNameBoundTest, LongNamesAreRefusedWithTheirLengthNotEchoed) {
  EXPECT_TRUE(CheckModelName("stories").ok());
  EXPECT_TRUE(CheckModelName(std::string(kMaxModelNameBytes, 'm')).ok());
  const absl::Status refused = CheckModelName(std::string(1000000, 'm'));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.message(), "model: is 1000000 bytes; at most 128");
}

}  // namespace
}  // namespace airlock::daemon

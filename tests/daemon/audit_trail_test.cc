// The daemon's audit trail on a store damaged below its newest checkpoint (which the start-up check
// does not read): the whole-chain verification after the start finds it and the trail fails
// closed — health reports why, and no further record is accepted — instead of serving on.
#include <functional>
#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "audit/audit_record.h"
#include "audit/audit_store.h"
#include "audit/state_db.h"
#include "daemon/audit_trail.h"
#include "daemon/call_admission.h"
#include "daemon/config/daemon_options.h"
#include "daemon/state_store.h"
#include "absl/time/clock.h"
#include "tests/support/test_data.h"

namespace airlock::daemon {
namespace {

using ::testing::HasSubstr;

// Polls `condition` until it holds or `within` has passed; returns its last result.
bool PollUntil(const std::function<bool()>& condition, absl::Duration within) {
  const absl::Time deadline = absl::Now() + within;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

class AuditTrailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = airlock::testing::MakeTempDir();
    options_.state_dir = dir + "/state";
    options_.signing_key_file = dir + "/audit.key";
    options_.hmac_secret_file = dir + "/audit.secret";
    options_.witness_file = dir + "/state.witness";
    options_.checkpoint_every = 4;
    options_.checkpoint_interval = absl::Hours(1);
  }

  absl::Status Record(AuditTrail& trail, int i) {
    CallInfo call;
    call.request_id = absl::StrCat("req-", i);
    call.method = "airlock.v1.Inference/Tokenize";
    call.identity.name = "alice";
    call.start = std::chrono::steady_clock::now();
    return trail.End(call, AuditTrail::Outcome{});
  }

  AuditOptions options_;
};

TEST_F(AuditTrailTest, DamageBelowTheNewestCheckpointFailsTheTrailClosedAfterTheStart) {
  {
    absl::StatusOr<std::unique_ptr<audit::StateDb>> db = OpenStateStore(options_.state_dir);
    ASSERT_TRUE(db.ok()) << db.status();
    absl::StatusOr<std::unique_ptr<AuditTrail>> trail = AuditTrail::Open(options_, db->get());
    ASSERT_TRUE(trail.ok()) << trail.status();
    for (int i = 1; i <= 10; ++i) ASSERT_TRUE(Record(**trail, i).ok());
  }
  {
    // Record 2's identity edited in place (its stored hash kept): only a full verification sees it.
    absl::StatusOr<std::unique_ptr<audit::StateDb>> db = OpenStateStore(options_.state_dir);
    ASSERT_TRUE(db.ok()) << db.status();
    std::string value;
    ASSERT_TRUE((*db)->db()->Get(rocksdb::ReadOptions(), (*db)->audit(), audit::EncodeSequenceKey(2), &value).ok());
    absl::StatusOr<audit::ChainedRecord> record = audit::DecodeStoredRecord(value);
    ASSERT_TRUE(record.ok());
    record->record.identity = "mallory";
    ASSERT_TRUE((*db)->db()->Put(rocksdb::WriteOptions(), (*db)->audit(), audit::EncodeSequenceKey(2),
                                 audit::EncodeStoredRecord(*record)).ok());
  }
  absl::StatusOr<std::unique_ptr<audit::StateDb>> db = OpenStateStore(options_.state_dir);
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<std::unique_ptr<AuditTrail>> trail = AuditTrail::Open(options_, db->get());
  ASSERT_TRUE(trail.ok()) << trail.status();  // the tail after checkpoint 8 is sound
  ASSERT_TRUE(PollUntil([&] { return !(*trail)->health().ok(); }, absl::Seconds(30)))
      << "the damaged chain kept being served";
  EXPECT_EQ((*trail)->health().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT((*trail)->health().message(), HasSubstr("does not verify"));
  EXPECT_THAT((*trail)->health().message(), HasSubstr("first bad sequence 2"));
  const absl::Status refused = Record(**trail, 11);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(audit::ReadChainHead(**db)->sequence, 10u) << "a record was appended to a chain that does not verify";
}

TEST_F(AuditTrailTest, ASoundStoreStaysHealthyAfterItsVerification) {
  absl::StatusOr<std::unique_ptr<audit::StateDb>> db = OpenStateStore(options_.state_dir);
  ASSERT_TRUE(db.ok()) << db.status();
  {
    absl::StatusOr<std::unique_ptr<AuditTrail>> trail = AuditTrail::Open(options_, db->get());
    ASSERT_TRUE(trail.ok()) << trail.status();
    for (int i = 1; i <= 10; ++i) ASSERT_TRUE(Record(**trail, i).ok());
  }
  absl::StatusOr<std::unique_ptr<AuditTrail>> trail = AuditTrail::Open(options_, db->get());
  ASSERT_TRUE(trail.ok()) << trail.status();
  ASSERT_TRUE(PollUntil([&] { return (*trail)->chain_verified(); }, absl::Seconds(30)));
  for (int i = 11; i <= 20; ++i) ASSERT_TRUE(Record(**trail, i).ok());
  EXPECT_TRUE((*trail)->health().ok()) << (*trail)->health();
}

}  // namespace
}  // namespace airlock::daemon

namespace airlock::daemon {
namespace {

TEST(CanonicalResponseFormatTest, NamesTheFormatAndHashesTheSchema) {
  EXPECT_EQ(CanonicalResponseFormat({}), "");
  EXPECT_EQ(CanonicalResponseFormat({inference::ResponseFormat::Type::kJsonObject, ""}), ";response_format=json_object");
  // SHA-256 of "{}" (echo -n '{}' | sha256sum).
  EXPECT_EQ(CanonicalResponseFormat({inference::ResponseFormat::Type::kJsonSchema, "{}"}),
            ";response_format=json_schema;json_schema_sha256="
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
}

}  // namespace
}  // namespace airlock::daemon

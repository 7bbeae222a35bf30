// End-to-end tests of quotas against the real airlockd: a daily token budget admits requests by
// their worst case and refuses the one that would overshoot with RESOURCE_EXHAUSTED, a message a
// person understands and google.rpc QuotaFailure / RetryInfo details; the refusal is audited as
// denied_by_quota; the budget survives a restart and a SIGKILL.
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;

// alice: 60 tokens a day (prompt + completion); bob: no quota.
constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
    quota:
      tokens_per_day: 60
  - name: bob
    roles: [user]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
)";

class QuotaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    dir_ = MakeTempDir();
    pki_ = MakeLabPki(dir_ + "/pki");
    pki_.Issue("alice");
    pki_.Issue("bob");
    StartDaemon();
  }
  void StartDaemon() {
    std::string error;
    daemon_ = DaemonProcess::Start(dir_, BaseConfig(dir_, pki_, StoriesModelYaml(), kAccess), &error);
    ASSERT_NE(daemon_, nullptr) << error;
  }
  // One generation of up to 8 tokens from a 1-token prompt ("Once" is one token in stories260K's
  // vocabulary plus BOS: the test reads the real count from the response).
  grpc::Status Generate(const std::string& user, v1::GenerateResponse* response) {
    v1::GenerateRequest r;
    r.set_model("stories");
    r.set_prompt("Once");
    r.set_max_tokens(8);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    return v1::Inference::NewStub(Connect(daemon_->port(), pki_, user))->Generate(&context, r, response);
  }

  std::string dir_;
  LabPki pki_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(QuotaTest, ADailyBudgetRefusesTheRequestThatCouldOvershootWithDetailsAndSurvivesRestarts) {
  // Each request reserves prompt + 8; admitted while used + reserved + that stays within 60.
  uint64_t used = 0;
  int admitted = 0;
  grpc::Status refused;
  for (int i = 0; i < 20; ++i) {
    v1::GenerateResponse response;
    const grpc::Status s = Generate("alice", &response);
    if (!s.ok()) {
      refused = s;
      break;
    }
    ++admitted;
    used += response.usage().total_tokens();
    ASSERT_LE(used, 60u);
  }
  ASSERT_GT(admitted, 0);
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("daily token budget of 60 used"));
  EXPECT_THAT(refused.error_message(), HasSubstr("resets at "));
  EXPECT_THAT(refused.error_message(), HasSubstr("T00:00:00Z"));
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(refused.error_details()));
  ASSERT_EQ(details.details_size(), 2);
  google::rpc::QuotaFailure failure;
  ASSERT_TRUE(details.details(0).UnpackTo(&failure));
  EXPECT_EQ(failure.violations(0).subject(), "identity:alice");
  google::rpc::RetryInfo retry;
  ASSERT_TRUE(details.details(1).UnpackTo(&retry));
  EXPECT_GT(retry.retry_delay().seconds(), 0);
  EXPECT_LE(retry.retry_delay().seconds(), 86400);
  // bob has no quota.
  v1::GenerateResponse response;
  EXPECT_TRUE(Generate("bob", &response).ok());

  // A clean restart keeps the day's usage...
  daemon_->Signal(SIGTERM);
  ASSERT_EQ(daemon_->WaitExit(absl::Seconds(30)), std::optional<int>(0)) << daemon_->Log();
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  EXPECT_EQ(Generate("alice", &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // ...and so does a SIGKILL.
  daemon_->Signal(SIGKILL);
  ASSERT_TRUE(daemon_->WaitExit(absl::Seconds(10)).has_value());
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  EXPECT_EQ(Generate("alice", &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  daemon_->Signal(SIGTERM);
  ASSERT_EQ(daemon_->WaitExit(absl::Seconds(30)), std::optional<int>(0)) << daemon_->Log();

  // Every refusal is in the audit log as denied_by_quota, RESOURCE_EXHAUSTED.
  int quota_denials = 0;
  for (const nlohmann::json& line : ExportAudit(dir_ + "/state")) {
    if (line["type"] != "record" || line["decision"] != "denied_by_quota") continue;
    EXPECT_EQ(line["identity"], "alice");
    EXPECT_EQ(line["status_code"], 8);
    ++quota_denials;
  }
  EXPECT_EQ(quota_denials, 3);
}

}  // namespace
}  // namespace airlock::testing

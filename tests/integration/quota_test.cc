// End-to-end tests of quotas against the real airlockd: a daily token budget admits requests by
// their worst case and refuses the one that would overshoot with RESOURCE_EXHAUSTED, a message a
// person understands and google.rpc QuotaFailure / RetryInfo details; the refusal is audited as
// denied_by_quota; the budget survives a restart and a SIGKILL. Many parallel clients never get
// more than a limit admits; a flooding identity does not starve a trickle; the Admin quota calls
// through airlockctl (show, list, set, reset) are admin-only, audited and persistent.
#include <signal.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "airlock/v1/admin.grpc.pb.h"
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

// alice: 60 tokens a day (prompt + completion); bob: no quota; carol: 200 tokens a day; dave: 10
// requests a minute; root: the Admin API only.
constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
    quota:
      tokens_per_day: 60
  - name: bob
    roles: [user]
  - name: carol
    roles: [user]
    quota:
      tokens_per_day: 200
  - name: dave
    roles: [user]
    quota:
      requests_per_minute: 10
  - name: root
    roles: [admin]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
  - name: admin
    methods: ["airlock.v1.Admin/*"]
)";

class QuotaTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    SetUpLab(kAccess, {"alice", "bob", "carol", "dave", "root"});
    StartDaemon();
  }
  v1::IdentityQuota Usage(const std::string& identity) {
    v1::GetUsageRequest request;
    request.set_identity(identity);
    v1::GetUsageResponse response;
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    const grpc::Status s = v1::Admin::NewStub(Connect(daemon_->port(), pki_, "root"))->GetUsage(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.quota();
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
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  EXPECT_EQ(Generate("alice", &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // ...and so does a SIGKILL.
  daemon_->Signal(SIGKILL);
  ASSERT_TRUE(daemon_->WaitExit(absl::Seconds(10)).has_value());
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  EXPECT_EQ(Generate("alice", &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_NO_FATAL_FAILURE(StopDaemon());

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

// Generate with `max_tokens` from `prompt` on `model` through `stub`, within 60 s.
grpc::Status GenerateOn(v1::Inference::Stub& stub, const std::string& model, const std::string& prompt, int max_tokens,
                        v1::GenerateResponse* response) {
  v1::GenerateRequest r;
  r.set_model(model);
  r.set_prompt(prompt);
  r.set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(60)));
  return stub.Generate(&context, r, response);
}

TEST_F(QuotaTest, ManyParallelClientsNeverGetMoreThanALimitAdmits) {
  // 12 clients at once: six as carol (200 tokens a day), six as dave (10 requests a minute), each
  // sending 6 requests back to back on its own connection.
  constexpr int kClients = 12;
  constexpr int kRequestsEach = 6;
  std::atomic<uint64_t> carol_tokens{0};
  std::atomic<int> carol_ok{0}, carol_refused{0}, dave_ok{0}, dave_refused{0}, unexpected{0};
  const int64_t first_minute = absl::ToUnixSeconds(absl::Now()) / 60;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      const std::string user = c % 2 == 0 ? "carol" : "dave";
      auto stub = v1::Inference::NewStub(Connect(daemon_->port(), pki_, user));
      for (int i = 0; i < kRequestsEach; ++i) {
        v1::GenerateResponse response;
        const grpc::Status s = GenerateOn(*stub, "stories", "Once", 8, &response);
        if (s.ok()) {
          if (user == "carol") {
            carol_tokens += response.usage().total_tokens();
            ++carol_ok;
          } else {
            ++dave_ok;
          }
        } else if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          ++(user == "carol" ? carol_refused : dave_refused);
        } else {
          ++unexpected;
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  const int64_t minutes = absl::ToUnixSeconds(absl::Now()) / 60 - first_minute + 1;
  EXPECT_EQ(unexpected.load(), 0);
  // carol: what was served never exceeds the day's budget, and the ledger says exactly what was served.
  EXPECT_GT(carol_ok.load(), 0);
  EXPECT_GT(carol_refused.load(), 0);
  EXPECT_LE(carol_tokens.load(), 200u);
  ASSERT_TRUE(PollUntil([&] { return Usage("carol").usage().running() == 0; }, absl::Seconds(10)));
  const v1::QuotaUsage carol = Usage("carol").usage();
  EXPECT_EQ(carol.day_prompt_tokens() + carol.day_completion_tokens(), carol_tokens.load());
  // dave: 10 requests in each minute the test spanned (exactly 10 when it stayed within one).
  EXPECT_LE(dave_ok.load(), 10 * minutes);
  if (minutes == 1) {
    EXPECT_EQ(dave_ok.load(), 10);
  }
  EXPECT_EQ(dave_ok.load() + dave_refused.load(), kClients / 2 * kRequestsEach);
}

TEST_F(QuotaTest, AFloodingIdentityDoesNotStarveATrickle) {
  // A model slow enough that a flood of long requests takes seconds to drain.
  const std::string model_path = dir_ + "/flood.gguf";
  const CommandResult synth = RunCommand({AIRLOCKCTL_PATH, "model", "synth", "--out", model_path, "--layers", "2",
                                          "--embd", "512", "--ff", "1408", "--heads", "8", "--type", "q8_0", "--ctx",
                                          "1024", "--vocab", "320"});
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  // Two sequences at a time, so that most of the flood waits in the queue (with the default of 16
  // the whole flood would run at once and there would be no order of admission to test).
  ASSERT_NO_FATAL_FAILURE(StartDaemon("", absl::StrCat("  - name: flood\n    path: \"", model_path,
                                                       "\"\n    threads: 1\n    context_length: 1024\n",
                                                       "    max_sequences: 2\n")));

  // bob floods: 20 requests of up to 300 tokens at once. They all wait behind the first two.
  constexpr int kFlood = 20;
  std::mutex mu;
  std::vector<absl::Time> flood_done;
  std::atomic<int> flood_failed{0};
  std::vector<std::thread> flood;
  auto bob = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "bob"));
  for (int i = 0; i < kFlood; ++i) {
    flood.emplace_back([&] {
      v1::GenerateResponse response;
      const grpc::Status s = GenerateOn(*bob, "flood", "hello", 300, &response);
      std::lock_guard<std::mutex> lock(mu);
      flood_done.push_back(absl::Now());
      if (!s.ok()) ++flood_failed;
    });
  }
  auto waiting = [&] {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    v1::ListModelsResponse models;
    const grpc::Status s = bob->ListModels(&context, v1::ListModelsRequest(), &models);
    return s.ok() && models.models_size() == 1 ? models.models(0).requests_waiting() : 0u;
  };
  ASSERT_TRUE(PollUntil([&] { return waiting() >= kFlood - 4; }, absl::Seconds(30))) << daemon_->Log();

  // carol trickles: three short requests, one after another. Each waits for a slot of the two jobs
  // running when it arrives and is admitted with at most one of bob's (round-robin), never after
  // bob's whole backlog.
  auto carol = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "carol"));
  std::vector<std::pair<absl::Time, absl::Time>> trickle;
  for (int i = 0; i < 3; ++i) {
    v1::GenerateResponse response;
    const absl::Time start = absl::Now();
    const grpc::Status s = GenerateOn(*carol, "flood", "hi", 4, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    trickle.emplace_back(start, absl::Now());
  }
  for (std::thread& t : flood) t.join();
  EXPECT_EQ(flood_failed.load(), 0);
  ASSERT_EQ(flood_done.size(), static_cast<size_t>(kFlood));
  const auto done_between = [&](absl::Time from, absl::Time to) {
    return std::count_if(flood_done.begin(), flood_done.end(), [&](absl::Time t) { return t > from && t <= to; });
  };
  for (const auto& [start, end] : trickle) {
    // The bound is 2 of bob's jobs (the two running, which end together; the one admitted with
    // carol's is far longer than hers); one more for timing skew between the daemon's completions
    // and this process seeing them.
    EXPECT_LE(done_between(start, end), 3) << "trickle request took " << absl::FormatDuration(end - start);
    std::printf("trickle request: %s while bob's flood waited\n", absl::FormatDuration(end - start).c_str());
  }
  // Not vacuous: most of the flood was still waiting when the trickle was done.
  EXPECT_GE(done_between(trickle.back().second, absl::InfiniteFuture()), kFlood / 2);
}

TEST_F(QuotaTest, AdminsSeeSetAndResetQuotasThroughAirlockctlAndEveryCallIsAudited) {
  v1::GenerateResponse response;
  ASSERT_TRUE(Generate("alice", &response).ok());
  const uint64_t used = response.usage().total_tokens();

  // Only the Admin role may call them.
  CommandResult r = Ctl("alice", {"quota", "show", "alice"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED"));

  r = Ctl("root", {"quota", "show", "alice"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tokens_per_day"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex(absl::StrCat("tokens_per_day +60 +- +60 +", used, "\n")));
  r = Ctl("root", {"quota", "show", "nobody"});
  EXPECT_EQ(r.exit_code, 6) << r.err;
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(r.err, HasSubstr("\"nobody\" is not a configured user"));

  r = Ctl("root", {"quota", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* user : {"alice", "bob", "carol", "dave", "root"}) EXPECT_THAT(r.out, HasSubstr(user));
  EXPECT_THAT(r.out, ::testing::ContainsRegex(absl::StrCat("alice +1 +", used, "/60 ")));

  // An override lifts alice's day budget; it applies at once and survives a restart.
  r = Ctl("root", {"quota", "set", "alice", "tokens_per_day=1000", "max_concurrent_requests=none"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::ContainsRegex("tokens_per_day +60 +1000 +1000 "));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("max_concurrent_requests +none +none +none "));
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(Generate("alice", &response).ok()) << i;  // more than 60 tokens
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  r = Ctl("root", {"quota", "show", "alice", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json shown = nlohmann::json::parse(r.out);
  EXPECT_EQ(shown["admin_override"]["tokens_per_day"], "1000");
  EXPECT_EQ(shown["effective"]["tokens_per_day"], "1000");
  EXPECT_EQ(shown["configured"]["tokens_per_day"], "60");
  const uint64_t day_used = std::stoull(shown["usage"]["day_prompt_tokens"].get<std::string>()) +
                            std::stoull(shown["usage"]["day_completion_tokens"].get<std::string>());
  EXPECT_GT(day_used, 60u);

  // Bad overrides are refused, naming what is wrong.
  r = Ctl("root", {"quota", "set", "alice", "tokens_per_minute=5000"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("tokens_per_minute: 5000 is more than tokens_per_day (1000)"));
  r = Ctl("root", {"quota", "set", "alice", "tokens_per_fortnight=5"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("expected LIMIT=VALUE"));

  // Reset the day: the budget of 1000 is whole again; back to the configuration: 60 applies.
  r = Ctl("root", {"quota", "reset", "alice", "--window", "day"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat(day_used, " tokens today")));
  EXPECT_EQ(Usage("alice").usage().day_prompt_tokens(), 0u);
  EXPECT_GT(Usage("alice").usage().month_prompt_tokens(), 0u);  // only the day was reset
  r = Ctl("root", {"quota", "set", "alice", "--clear"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Usage("alice").admin_override().ByteSizeLong(), 0u);
  EXPECT_EQ(Usage("alice").effective().tokens_per_day(), 60u);
  ASSERT_NO_FATAL_FAILURE(StopDaemon());

  // Each admin call left a record naming the method and its parameters (refused ones too).
  std::map<std::string, int> admin_calls;
  bool override_recorded = false;
  for (const nlohmann::json& line : ExportAudit(dir_ + "/state")) {
    if (line["type"] != "record" || line["phase"] != "admin") continue;
    ++admin_calls[line["method"].get<std::string>()];
    if (line["method"] == "airlock.v1.Admin/SetQuotaOverride" &&
        absl::StrContains(line["sampling"].get<std::string>(), "\"tokens_per_day\":\"1000\"")) {
      EXPECT_EQ(line["identity"], "root");
      override_recorded = true;
    }
  }
  EXPECT_TRUE(override_recorded);
  EXPECT_EQ(admin_calls["airlock.v1.Admin/SetQuotaOverride"], 3);  // set, the refused set, clear
  EXPECT_EQ(admin_calls["airlock.v1.Admin/ResetUsage"], 1);
  EXPECT_EQ(admin_calls["airlock.v1.Admin/ListUsage"], 1);
  EXPECT_GE(admin_calls["airlock.v1.Admin/GetUsage"], 3);
}

}  // namespace
}  // namespace airlock::testing

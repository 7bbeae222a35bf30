// End-to-end tests of what a caller can make the daemon echo and store, probed as an attacker
// would: a 1 MB model name from a non-user and from a user, a huge chat role; each answer, log line
// and audit record stays a few KB. A flood of denied calls is recorded one by one only up to the
// refusal limit, and the rest are counted exactly in aggregate records; other users are served
// meanwhile. A certificate that names no identity still leaves its subject and fingerprint.
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace v1 = ::airlock::v1;

// One record (or log line) of a call may be this big, whatever the call carried.
constexpr size_t kMaxLineBytes = 4096;

size_t Occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

class BoundsTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    // mallory has a certificate of the site CA but is no configured user.
    SetUpLab(kAliceMayCallAnything, {"alice", "mallory"});
  }
  // "stories" with a chat template, so Chat requests reach their validation.
  void Start(const std::string& audit_extra = "", const std::string& extra_yaml = "") {
    StartDaemon(audit_extra, StoriesModelYaml() + "    chat_template: chatml\n", extra_yaml);
  }

  grpc::Status Generate(v1::Inference::Stub& stub, const std::string& model) {
    v1::GenerateRequest r;
    r.set_model(model);
    r.set_prompt("Once upon a time");
    r.set_max_tokens(4);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::GenerateResponse response;
    return stub.Generate(&context, r, &response);
  }
  grpc::Status Chat(v1::Inference::Stub& stub, const std::string& role) {
    v1::ChatRequest r;
    r.set_model("stories");
    v1::ChatMessage* m = r.add_messages();
    m->set_role(role);
    m->set_content("hello");
    r.set_max_tokens(4);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::GenerateResponse response;
    return stub.Chat(&context, r, &response);
  }
  std::vector<nlohmann::json> Records() {
    std::vector<nlohmann::json> records;
    for (nlohmann::json& line : ExportAudit(dir_ + "/state")) {
      if (line["type"] == "record") records.push_back(std::move(line));
    }
    return records;
  }
};

TEST_F(BoundsTest, HugeModelNamesAndRolesAreRefusedAndStayBoundedInAnswersLogsAndRecords) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const size_t log_before = daemon_->Log().size();
  // Just under the default 1 MiB message limit, so the daemon itself has to deal with it.
  const std::string huge_model(1000000, 'M');
  const std::string huge_role(100000, 'R');
  auto mallory = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "mallory"));
  auto alice = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"));
  int calls = 0;
  const auto expect_bounded = [&](const grpc::Status& s, const std::string& message) {
    ++calls;
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message().substr(0, 300);
    EXPECT_EQ(s.error_message(), message);
  };
  for (int i = 0; i < 10; ++i) {
    expect_bounded(Generate(*mallory, huge_model), "model: is 1000000 bytes; at most 128");
    expect_bounded(Generate(*alice, huge_model), "model: is 1000000 bytes; at most 128");
    expect_bounded(Chat(*alice, huge_role), "messages[0].role: is 100000 bytes; at most 32");
  }
  {
    v1::TokenizeRequest r;
    r.set_model(huge_model);
    r.set_text("x");
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::TokenizeResponse response;
    expect_bounded(alice->Tokenize(&context, r, &response), "model: is 1000000 bytes; at most 128");
  }
  // A role within the bound but not a role: echoed, and small.
  const grpc::Status bad_role = Chat(*alice, std::string(32, 'r'));
  EXPECT_EQ(bad_role.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(bad_role.error_message().size(), 200u) << bad_role.error_message();
  ++calls;
  // The daemon still serves.
  EXPECT_TRUE(Generate(*alice, "stories").ok());

  // The log grew by a few KB per call, not by the megabytes sent.
  const std::string log = daemon_->Log().substr(log_before);
  EXPECT_LT(log.size(), static_cast<size_t>(calls + 1) * kMaxLineBytes);
  for (const absl::string_view line : absl::StrSplit(log, '\n')) {
    EXPECT_LT(line.size(), kMaxLineBytes) << line.substr(0, 300);
  }
  ASSERT_NO_FATAL_FAILURE(StopDaemon());

  int huge_model_records = 0;
  int huge_role_records = 0;
  for (const nlohmann::json& record : Records()) {
    const std::string text = record.dump();
    EXPECT_LT(text.size(), kMaxLineBytes) << text.substr(0, 300);
    const std::string model = record.value("model", "");
    if (absl::StartsWith(model, "MMMM")) {
      ++huge_model_records;
      // Cut, and marked with the full length and a digest of the full name.
      EXPECT_LE(model.size(), 128u + 64u);
      EXPECT_THAT(model, HasSubstr("...[1000000 bytes, sha256:"));
      EXPECT_EQ(record["decision"], "invalid");
      EXPECT_EQ(record["status_code"], 3);  // INVALID_ARGUMENT
    }
    if (record["identity"] == "alice" && record["method"] == "airlock.v1.Inference/Chat") ++huge_role_records;
  }
  EXPECT_EQ(huge_model_records, 21);  // 10 + 10 Generate, 1 Tokenize: every refusal is on the record
  EXPECT_EQ(huge_role_records, 11);
}

TEST_F(BoundsTest, AFloodOfDeniedCallsIsCountedExactlyWhileOtherUsersAreServed) {
  ASSERT_NO_FATAL_FAILURE(Start());  // audit.refusal_records_per_minute: the default, 60
  constexpr int kFlood = 500;
  constexpr int kPerMinute = 60;
  auto mallory = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "mallory"));
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kFlood; ++i) {
    // The real status every time, not a rate-limit one.
    const grpc::Status s = Generate(*mallory, "stories");
    ASSERT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << i << ": " << s.error_message();
  }
  const auto minutes = std::chrono::duration_cast<std::chrono::minutes>(std::chrono::steady_clock::now() - start);
  // alice is served, and her own refusal is recorded one by one (she has her own allowance).
  auto alice = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"));
  EXPECT_TRUE(Generate(*alice, "stories").ok());
  EXPECT_EQ(Generate(*alice, "no-such-model").error_code(), grpc::StatusCode::NOT_FOUND);
  const size_t denied_lines = Occurrences(daemon_->Log(), "\"msg\":\"call denied\"");
  ASSERT_NO_FATAL_FAILURE(StopDaemon());  // pending aggregates are written before the log closes

  const int windows = static_cast<int>(minutes.count()) + 1;
  int individual = 0;
  uint64_t counted = 0;
  int aggregates = 0;
  bool alice_not_found = false;
  for (const nlohmann::json& record : Records()) {
    if (record["identity"] == "alice" && record["status_code"] == 5) alice_not_found = true;
    if (record["identity"] != "mallory") continue;
    EXPECT_EQ(record["decision"], "denied_by_role");
    EXPECT_EQ(record["status_code"], 7);
    EXPECT_EQ(record["method"], "airlock.v1.Inference/Generate");
    const std::string sampling = record.value("sampling", "");
    if (absl::StartsWith(sampling, "suppressed=")) {
      ++aggregates;
      counted += std::stoull(sampling.substr(std::string("suppressed=").size()));
      EXPECT_THAT(sampling, HasSubstr(";window_seconds=60"));
    } else {
      ++individual;
    }
  }
  EXPECT_TRUE(alice_not_found);
  EXPECT_LE(individual, kPerMinute * windows);
  if (windows == 1) {
    EXPECT_EQ(individual, kPerMinute);
  }
  EXPECT_GE(aggregates, 1);
  EXPECT_LE(aggregates, windows);
  EXPECT_EQ(individual + counted, static_cast<uint64_t>(kFlood));  // nothing lost
  // The daemon log is spared too: one "call denied" line per individual record.
  EXPECT_LE(denied_lines, static_cast<size_t>(kPerMinute * windows));
}

TEST_F(BoundsTest, RefusalLimitZeroRecordsEveryRefusal) {
  ASSERT_NO_FATAL_FAILURE(Start("  refusal_records_per_minute: 0\n"));
  auto mallory = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "mallory"));
  for (int i = 0; i < 80; ++i) ASSERT_EQ(Generate(*mallory, "stories").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  int individual = 0;
  for (const nlohmann::json& record : Records()) {
    if (record["identity"] == "mallory") {
      EXPECT_THAT(record.value("sampling", ""), ::testing::Not(StartsWith("suppressed=")));
      ++individual;
    }
  }
  EXPECT_EQ(individual, 80);
}

TEST_F(BoundsTest, ACertificateWithoutTheConfiguredNameIsRecordedWithItsSubjectAndFingerprint) {
  // The lab certificates have no DNS SAN: with identity.source SAN_DNS none names an identity.
  ASSERT_NO_FATAL_FAILURE(Start("", "identity:\n  source: SAN_DNS\n"));
  auto alice = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"));
  const grpc::Status s = Generate(*alice, "stories");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(s.error_message(), "client certificate has no DNS subject alternative name");
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  int unauthenticated = 0;
  for (const nlohmann::json& record : Records()) {
    if (record["decision"] != "unauthenticated") continue;
    ++unauthenticated;
    EXPECT_EQ(record.value("identity", ""), "");
    EXPECT_EQ(record.value("subject", ""), "CN=alice");
    EXPECT_EQ(record.value("cert_fingerprint", "").size(), 64u) << record.dump();
  }
  EXPECT_EQ(unauthenticated, 1);
}

}  // namespace
}  // namespace airlock::testing

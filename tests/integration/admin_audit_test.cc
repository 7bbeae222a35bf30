// End-to-end tests of the Admin service and the online `airlockctl audit` commands: only a role
// that names the Admin service may read the log ("*" does not), every admin call is itself
// audited, queries filter and page, online verification and export agree with the offline ones,
// and retention prunes to a signed anchor that keeps the chain verifiable.
#include <signal.h>

#include <algorithm>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "airlock/v1/admin.grpc.pb.h"
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
namespace v1 = ::airlock::v1;

constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
  - name: auditor
    roles: [admin]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
  - name: admin
    methods: ["airlock.v1.Admin/*"]
    models: []
)";

std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    out.push_back(nlohmann::json::parse(std::string(line)));
  }
  return out;
}

class AdminAuditTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    SetUpLab(kAccess, {"alice", "auditor"});
  }
  std::string Generate(const std::string& prompt) {
    v1::GenerateRequest r;
    r.set_model("stories");
    r.set_prompt(prompt);
    r.set_max_tokens(4);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::GenerateResponse response;
    const grpc::Status s =
        v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))->Generate(&context, r, &response);
    return s.ok() ? response.request_id() : "";
  }
  std::unique_ptr<v1::Admin::Stub> Admin(const std::string& user) {
    return v1::Admin::NewStub(Connect(daemon_->port(), pki_, user));
  }
  // Every record a query returns (all pages of one call); the status through *status.
  std::vector<v1::AuditRecord> Query(const std::string& user, const v1::QueryAuditRequest& request,
                                     grpc::Status* status, v1::QueryAuditResponse* last = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    auto reader = Admin(user)->QueryAudit(&context, request);
    std::vector<v1::AuditRecord> records;
    v1::QueryAuditResponse page;
    while (reader->Read(&page)) {
      records.insert(records.end(), page.records().begin(), page.records().end());
      if (last != nullptr) *last = page;
    }
    *status = reader->Finish();
    return records;
  }
  v1::VerifyAuditResponse Verify(grpc::Status* status) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::VerifyAuditResponse response;
    *status = Admin("auditor")->VerifyAudit(&context, v1::VerifyAuditRequest(), &response);
    return response;
  }
  std::string StateDir() const { return dir_ + "/state"; }
  std::string PublicKey() const { return dir_ + "/audit-signing.key.pub"; }

};

TEST_F(AdminAuditTest, OnlyARoleNamingTheAdminServiceMayReadTheLogAndEveryAdminCallIsAudited) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_FALSE(Generate("Once upon a time").empty());
  grpc::Status status;
  // alice holds "*", which does not reach the Admin service.
  Query("alice", v1::QueryAuditRequest(), &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();

  v1::QueryAuditRequest request;
  request.set_identity("alice");
  std::vector<v1::AuditRecord> records = Query("auditor", request, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // Generate's begin and end, then the denied Admin call.
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].phase(), "begin");
  EXPECT_EQ(records[1].phase(), "end");
  EXPECT_EQ(records[1].method(), "airlock.v1.Inference/Generate");
  EXPECT_EQ(records[1].completion_tokens(), 4u);
  EXPECT_EQ(records[2].method(), "airlock.v1.Admin/QueryAudit");
  EXPECT_EQ(records[2].decision(), "denied_by_role");
  EXPECT_EQ(records[2].status_code(), static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  for (size_t i = 1; i < records.size(); ++i) EXPECT_LT(records[i - 1].sequence(), records[i].sequence());

  // The auditor's own query is on the record, with its parameters, before its answer.
  request.Clear();
  request.set_phase("admin");
  records = Query("auditor", request, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].identity(), "auditor");
  EXPECT_EQ(records[0].method(), "airlock.v1.Admin/QueryAudit");
  EXPECT_EQ(records[0].sampling(), R"({"identity":"alice"})");
  EXPECT_EQ(records[1].sampling(), R"({"phase":"admin"})");  // this very query

  // Bad filters are refused, naming the field (and audited as invalid).
  request.Clear();
  request.set_decision("maybe");
  Query("auditor", request, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("decision"));
  request.Clear();
  request.set_limit(100001);
  Query("auditor", request, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("limit"));
  request.Clear();
  request.set_decision("invalid");
  records = Query("auditor", request, &status);
  ASSERT_TRUE(status.ok());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].method(), "airlock.v1.Admin/QueryAudit");
}

TEST_F(AdminAuditTest, QueriesPageWithTheCursorBothWays) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  for (int i = 0; i < 5; ++i) ASSERT_FALSE(Generate(absl::StrCat("tale ", i)).empty());
  // Ten generation records; page through the end records two at a time, oldest first.
  v1::QueryAuditRequest request;
  request.set_method("airlock.v1.Inference/Generate");
  request.set_phase("end");
  request.set_limit(2);
  std::vector<uint64_t> seen;
  grpc::Status status;
  for (int page = 0; page < 10; ++page) {
    v1::QueryAuditResponse last;
    std::vector<v1::AuditRecord> records = Query("auditor", request, &status, &last);
    ASSERT_TRUE(status.ok()) << status.error_message();
    for (const auto& r : records) seen.push_back(r.sequence());
    if (!last.limit_reached()) break;
    request.set_after_sequence(last.next_cursor());
  }
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(std::set<uint64_t>(seen.begin(), seen.end()).size(), 5u);

  // Newest first, the same five in reverse.
  request.set_after_sequence(0);
  request.set_newest_first(true);
  std::vector<uint64_t> reversed;
  for (int page = 0; page < 10; ++page) {
    v1::QueryAuditResponse last;
    std::vector<v1::AuditRecord> records = Query("auditor", request, &status, &last);
    ASSERT_TRUE(status.ok()) << status.error_message();
    for (const auto& r : records) reversed.push_back(r.sequence());
    if (!last.limit_reached()) break;
    request.set_before_sequence(last.next_cursor());
  }
  std::reverse(reversed.begin(), reversed.end());
  EXPECT_EQ(reversed, seen);

  // A time window that ends before the first record matches nothing.
  request.Clear();
  request.set_since_unix_micros(1);
  request.set_until_unix_micros(2);
  EXPECT_TRUE(Query("auditor", request, &status).empty());
  EXPECT_TRUE(status.ok());
}

TEST_F(AdminAuditTest, AirlockctlTailQueryVerifyAndExportOnline) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  const std::string id = Generate("Once upon a time");
  ASSERT_FALSE(id.empty());

  // tail: the newest records, oldest first; the newest is the tail's own admin record.
  CommandResult tail = Ctl("auditor", {"audit", "tail", "-n", "3", "--format", "jsonl"});
  ASSERT_EQ(tail.exit_code, 0) << tail.err;
  std::vector<nlohmann::json> lines = JsonLines(tail.out);
  ASSERT_EQ(lines.size(), 3u) << tail.out;
  EXPECT_EQ(lines[0]["request_id"], id);
  EXPECT_EQ(lines[1]["request_id"], id);
  EXPECT_EQ(lines[1]["phase"], "end");
  EXPECT_EQ(lines[2]["phase"], "admin");
  EXPECT_EQ(lines[2]["method"], "airlock.v1.Admin/QueryAudit");
  EXPECT_EQ(lines[2]["identity"], "auditor");

  CommandResult query = Ctl("auditor", {"audit", "query", "--identity", "alice", "--phase", "end"});
  ASSERT_EQ(query.exit_code, 0) << query.err;
  EXPECT_THAT(query.out, HasSubstr("airlock.v1.Inference/Generate"));
  EXPECT_THAT(query.out, HasSubstr("status=OK"));
  EXPECT_THAT(query.out, HasSubstr(id));
  CommandResult bad = Ctl("auditor", {"audit", "query", "--since", "yesterday-ish"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("--since"));
  // alice may not.
  CommandResult denied = Ctl("alice", {"audit", "tail"});
  EXPECT_EQ(denied.exit_code, 3) << denied.err;
  EXPECT_THAT(denied.err, HasSubstr("PERMISSION_DENIED"));

  // verify, by the daemon and here with the public key over an export stream.
  CommandResult by_daemon = Ctl("auditor", {"audit", "verify", "--json"});
  ASSERT_EQ(by_daemon.exit_code, 0) << by_daemon.out << by_daemon.err;
  EXPECT_TRUE(nlohmann::json::parse(by_daemon.out)["ok"].get<bool>());
  CommandResult here = Ctl("auditor", {"audit", "verify", "--public-key", PublicKey(), "--json"});
  ASSERT_EQ(here.exit_code, 0) << here.out << here.err;
  const nlohmann::json report = nlohmann::json::parse(here.out);
  EXPECT_TRUE(report["ok"].get<bool>());
  EXPECT_GE(report["records_checked"], 7);

  // The online export equals the offline one taken after the daemon stopped.
  CommandResult online = Ctl("auditor", {"audit", "export", "--out", dir_ + "/online.jsonl"});
  ASSERT_EQ(online.exit_code, 0) << online.err;
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  const std::vector<nlohmann::json> offline = ExportAudit(StateDir());
  std::vector<nlohmann::json> online_records;
  for (const nlohmann::json& line : JsonLines(ReadFileOrDie(dir_ + "/online.jsonl"))) {
    if (line["type"] == "record") online_records.push_back(line);
  }
  std::vector<nlohmann::json> offline_records;
  for (const nlohmann::json& line : offline) {
    if (line["type"] == "record") offline_records.push_back(line);
  }
  // Generate's two records, then one each for tail, query, alice's denied tail, the two verifies and
  // this export (a --since the client refused never reached the daemon).
  ASSERT_EQ(online_records.size(), 8u);
  EXPECT_EQ(online_records.back()["method"], "airlock.v1.Admin/ExportAudit");
  // The export's own record was written before its snapshot; nothing came after it.
  ASSERT_EQ(offline_records.size(), online_records.size());
  for (size_t i = 0; i < online_records.size(); ++i) EXPECT_EQ(online_records[i], offline_records[i]) << i;
  CommandResult verify_file = RunCommand({AIRLOCKCTL_PATH, "audit", "verify", "--export", dir_ + "/online.jsonl",
                                          "--public-key", PublicKey()});
  EXPECT_EQ(verify_file.exit_code, 0) << verify_file.out << verify_file.err;
}

TEST_F(AdminAuditTest, AFollowingQueryStreamsNewRecordsAsTheyAreWritten) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  v1::QueryAuditRequest request;
  request.set_identity("alice");
  request.set_phase("end");
  request.set_follow(true);
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(30)));
  auto reader = Admin("auditor")->QueryAudit(&context, request);
  v1::QueryAuditResponse page;
  ASSERT_TRUE(reader->Read(&page));  // the (empty) matches so far
  EXPECT_EQ(page.records_size(), 0);
  const std::string id = Generate("written while an auditor follows");
  ASSERT_FALSE(id.empty());
  std::string seen;
  while (seen.empty() && reader->Read(&page)) {
    for (const auto& r : page.records()) {
      EXPECT_EQ(r.identity(), "alice");
      if (r.request_id() == id) seen = r.phase();
    }
  }
  EXPECT_EQ(seen, "end");
  context.TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // Following newest first makes no sense: refused.
  request.set_newest_first(true);
  grpc::Status status;
  Query("auditor", request, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("follow"));

  // airlockctl audit tail -f prints what is written while it runs, and ends at --timeout.
  CommandResult tail;
  std::thread follower([&] {
    tail = Ctl("auditor", {"audit", "tail", "-f", "--identity", "alice", "--model", "stories", "--phase", "end",
                           "--format", "jsonl", "--timeout", "4"});
  });
  // The tail follows once its following query's admin record is in the log.
  ASSERT_TRUE(PollUntil(
      [&] {
        grpc::Status s;
        v1::QueryAuditRequest admin;
        admin.set_phase("admin");
        for (const auto& r : Query("auditor", admin, &s)) {
          if (absl::StrContains(r.sampling(), R"("model":"stories")") &&
              absl::StrContains(r.sampling(), R"("follow":true)")) {
            return true;
          }
        }
        return false;
      },
      absl::Seconds(10)));
  const std::string later = Generate("written while airlockctl follows");
  follower.join();
  EXPECT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_THAT(tail.out, HasSubstr(id));     // among the newest when it started
  EXPECT_THAT(tail.out, HasSubstr(later));  // streamed while it followed

  // A drain ends a follow at once (UNAVAILABLE), instead of waiting for the drain deadline to
  // cancel it.
  grpc::ClientContext draining;
  draining.set_deadline(DeadlineIn(absl::Seconds(30)));
  request.set_newest_first(false);
  auto follow = Admin("auditor")->QueryAudit(&draining, request);
  ASSERT_TRUE(follow->Read(&page));
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  while (follow->Read(&page)) {
  }
  const grpc::Status ended = follow->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAVAILABLE) << ended.error_message();
  EXPECT_THAT(ended.error_message(), HasSubstr("shutting down"));
}

TEST_F(AdminAuditTest, RetentionPrunesToASignedAnchorAndTheChainStillVerifies) {
  // Every record is checkpointed, so an anchor is always at hand; records older than 1 s go (the
  // pruning thread looks every second). What is pruned when is timing; what is checked is not.
  ASSERT_NO_FATAL_FAILURE(StartDaemon("  checkpoint_every: 1\n  retention: 1s\n"));
  for (int i = 0; i < 3; ++i) ASSERT_FALSE(Generate(absl::StrCat("old tale ", i)).empty());
  grpc::Status status;
  v1::VerifyAuditResponse report;
  ASSERT_TRUE(PollUntil(
      [&] {
        report = Verify(&status);
        return status.ok() && report.anchor_sequence() >= 6;
      },
      absl::Seconds(30)))
      << status.error_message() << " anchor " << report.anchor_sequence();
  EXPECT_TRUE(report.ok()) << report.problem();

  // What was pruned is gone from queries...
  std::vector<v1::AuditRecord> records = Query("auditor", v1::QueryAuditRequest(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(records.empty());
  EXPECT_GT(records.front().sequence(), report.anchor_sequence());
  // ...and pruning is itself on the record (a later prune may remove an earlier prune's record,
  // and writes its own once its deletion is done: wait for one to be there).
  v1::QueryAuditRequest retention;
  retention.set_method("airlockd/retention");
  ASSERT_TRUE(PollUntil(
      [&] {
        records = Query("auditor", retention, &status);
        return status.ok() && !records.empty();
      },
      absl::Seconds(30)));
  EXPECT_EQ(records[0].phase(), "admin");
  EXPECT_EQ(records[0].identity(), "airlockd");
  EXPECT_THAT(records[0].sampling(), HasSubstr("anchor_sequence"));

  // Offline, from the state directory and from an export: verifiable from the anchor.
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  CommandResult verify = RunCommand({AIRLOCKCTL_PATH, "audit", "verify", "--state-dir", StateDir(), "--public-key",
                                     PublicKey(), "--json"});
  ASSERT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  const uint64_t anchor = nlohmann::json::parse(verify.out)["anchor_sequence"].get<uint64_t>();
  EXPECT_GE(anchor, 6u);
  const std::vector<nlohmann::json> exported = ExportAudit(StateDir());
  ASSERT_FALSE(exported.empty());
  EXPECT_EQ(exported[0]["type"], "anchor");
  EXPECT_EQ(exported[0]["sequence"].get<uint64_t>(), anchor);
  for (const nlohmann::json& line : exported) {
    if (line["type"] == "record") {
      EXPECT_GT(line["sequence"].get<uint64_t>(), anchor);
    }
  }
}

}  // namespace
}  // namespace airlock::testing

// End-to-end tests of the audit trail: every call leaves records in the daemon's chain, texts only
// as keyed hashes; the chain verifies offline with the public key alone, survives restarts and
// SIGKILL, and `airlockctl audit verify` finds tampering in an export.
#include <signal.h>

#include <fstream>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "auth/dev_pki.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "audit/audit_record.h"
#include "audit/privacy.h"
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

class AuditLogTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    SetUpLab(kAliceMayCallAnything, {"alice", "mallory"});
    StartDaemon();
  }

  // Generates as `user`; returns the request id (empty on failure).
  std::string Generate(const std::string& user, const std::string& prompt) {
    v1::GenerateRequest r;
    r.set_model("stories");
    r.set_prompt(prompt);
    r.set_max_tokens(6);
    r.mutable_sampling()->set_temperature(0);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::GenerateResponse response;
    const grpc::Status s = v1::Inference::NewStub(Connect(daemon_->port(), pki_, user))->Generate(&context, r, &response);
    last_text_ = response.text();
    return s.ok() ? response.request_id() : "";
  }

  CommandResult Ctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {AIRLOCKCTL_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }
  std::string StateDir() const { return dir_ + "/state"; }
  std::string PublicKey() const { return dir_ + "/audit-signing.key.pub"; }

  std::string last_text_;
};

TEST_F(AuditLogTest, EveryCallIsRecordedAndTheChainVerifiesOffline) {
  const std::string id = Generate("alice", "Once upon a time");
  ASSERT_FALSE(id.empty());
  const std::string output = last_text_;
  EXPECT_TRUE(Generate("mallory", "secret plans").empty());  // denied: not a configured user
  ASSERT_NO_FATAL_FAILURE(StopDaemon());

  const CommandResult verify = Ctl({"audit", "verify", "--state-dir", StateDir(), "--public-key", PublicKey(), "--json"});
  ASSERT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  const nlohmann::json report = nlohmann::json::parse(verify.out);
  EXPECT_TRUE(report["ok"].get<bool>());
  EXPECT_EQ(report["records_checked"], 3);  // begin + end for alice, one for mallory
  EXPECT_GE(report["checkpoints_checked"], 1);  // written at shutdown at the latest

  const std::string secret = ReadFileOrDie(dir_ + "/audit-hmac.secret");
  std::map<std::string, nlohmann::json> by_phase;
  nlohmann::json denied;
  for (const nlohmann::json& line : ExportAudit(StateDir())) {
    if (line["type"] != "record") continue;
    if (line["request_id"] == id) by_phase[line["phase"].get<std::string>()] = line;
    if (line["identity"] == "mallory") denied = line;
  }
  ASSERT_TRUE(by_phase.count("begin") && by_phase.count("end"));
  EXPECT_LT(by_phase["begin"]["sequence"], by_phase["end"]["sequence"]);
  EXPECT_EQ(by_phase["begin"]["identity"], "alice");
  EXPECT_EQ(by_phase["begin"]["method"], "airlock.v1.Inference/Generate");
  EXPECT_EQ(by_phase["begin"]["model"], "stories");
  EXPECT_THAT(by_phase["begin"]["sampling"].get<std::string>(), HasSubstr("temperature=0"));
  // The texts are not stored; their keyed hashes match the known texts.
  EXPECT_EQ(by_phase["begin"]["prompt_hmac"], audit::HexLower(audit::HmacSha256(secret, "Once upon a time")));
  EXPECT_EQ(by_phase["end"]["output_hmac"], audit::HexLower(audit::HmacSha256(secret, output)));
  EXPECT_EQ(by_phase["end"]["completion_tokens"], 6);
  EXPECT_EQ(by_phase["end"]["status_code"], 0);
  EXPECT_EQ(denied["decision"], "denied_by_role");
  EXPECT_EQ(denied["status_code"], 7);  // PERMISSION_DENIED
  const std::string state = ReadFileOrDie(StateDir() + "/" + "CURRENT");  // a real RocksDB store
  EXPECT_FALSE(state.empty());
}

TEST_F(AuditLogTest, OptInSealedTextOpensOnlyWithTheSiteKeyAndItsRequest) {
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  const std::string key(32, '\x5a');
  ASSERT_TRUE(auth::WritePrivateFile(dir_ + "/text.key", key).ok());
  ASSERT_NO_FATAL_FAILURE(StartDaemon(absl::StrCat("  sealed_text_key_file: \"", dir_, "/text.key\"\n")));
  const std::string id = Generate("alice", "Patient history: confidential");
  ASSERT_FALSE(id.empty());
  const std::string output = last_text_;
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  int opened = 0;
  for (const nlohmann::json& line : ExportAudit(StateDir())) {
    if (line["type"] != "record" || line["request_id"] != id) continue;
    std::string sealed;
    ASSERT_TRUE(absl::Base64Unescape(line["sealed_text"].get<std::string>(), &sealed));
    EXPECT_EQ(sealed.find("confidential"), std::string::npos);  // not in clear
    absl::StatusOr<std::string> text = audit::Open(key, sealed, id);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, line["phase"] == "begin" ? std::string("Patient history: confidential") : output);
    EXPECT_FALSE(audit::Open(key, sealed, "another-request").ok());
    ++opened;
  }
  EXPECT_EQ(opened, 2);
  // A key of the wrong size refuses the start.
  ASSERT_TRUE(auth::WritePrivateFile(dir_ + "/text.key", "short").ok());
  std::string error;
  const std::string models = absl::StrCat("  - name: stories\n    path: \"", SharedPath(kStoriesModel), "\"\n");
  auto refused = DaemonProcess::Start(dir_, absl::StrReplaceAll(BaseConfig(dir_, pki_, models, kAliceMayCallAnything),
                                                                {{"audit:\n", absl::StrCat("audit:\n  sealed_text_key_file: \"", dir_, "/text.key\"\n")}}),
                                      &error, absl::Seconds(30));
  EXPECT_EQ(refused, nullptr);
  EXPECT_THAT(error, HasSubstr("exactly 32"));
}

// Modified, deleted, reordered, inserted and truncated records in an export (the same five in a
// real store: tests/audit/store_tamper_test.cc).
TEST_F(AuditLogTest, TamperingWithAnExportIsFoundAtTheFirstBadSequence) {
  for (int i = 0; i < 3; ++i) ASSERT_FALSE(Generate("alice", absl::StrCat("story ", i)).empty());
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  std::vector<nlohmann::json> lines = ExportAudit(StateDir());
  const auto write = [&](const std::vector<nlohmann::json>& content) {
    std::ofstream out(dir_ + "/export.jsonl", std::ios::trunc);
    for (const nlohmann::json& l : content) out << l.dump() << "\n";
  };
  write(lines);
  const std::vector<std::string> verify = {"audit", "verify", "--export", dir_ + "/export.jsonl", "--public-key",
                                           PublicKey(), "--json"};
  CommandResult clean = Ctl(verify);
  ASSERT_EQ(clean.exit_code, 0) << clean.out << clean.err;

  // The line of record `sequence` (checkpoint lines come first in an export).
  const auto line_of = [&](int sequence) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i]["type"] == "record" && lines[i]["sequence"] == sequence) return i;
    }
    ADD_FAILURE() << "no record " << sequence;
    return size_t{0};
  };
  // Record 4's stored bytes edited (one byte of its identity): reported at sequence 4.
  std::vector<nlohmann::json> edited = lines;
  std::string stored;
  ASSERT_TRUE(absl::Base64Unescape(edited[line_of(4)]["stored"].get<std::string>(), &stored));
  const size_t at = stored.find("alice");
  ASSERT_NE(at, std::string::npos);
  stored[at] = 'A';
  edited[line_of(4)]["stored"] = absl::Base64Escape(stored);
  write(edited);
  CommandResult bad = Ctl(verify);
  EXPECT_EQ(bad.exit_code, 3) << bad.out;
  EXPECT_EQ(nlohmann::json::parse(bad.out)["first_bad_sequence"], 4);

  // Record 2 deleted: reported at sequence 2.
  std::vector<nlohmann::json> deleted = lines;
  deleted.erase(deleted.begin() + static_cast<std::ptrdiff_t>(line_of(2)));
  write(deleted);
  bad = Ctl(verify);
  EXPECT_EQ(bad.exit_code, 3) << bad.out;
  EXPECT_EQ(nlohmann::json::parse(bad.out)["first_bad_sequence"], 2);

  // Records 3 and 4 swapped: reported at sequence 3.
  std::vector<nlohmann::json> swapped = lines;
  std::swap(swapped[line_of(3)], swapped[line_of(4)]);
  write(swapped);
  bad = Ctl(verify);
  EXPECT_EQ(bad.exit_code, 3) << bad.out;
  EXPECT_EQ(nlohmann::json::parse(bad.out)["first_bad_sequence"], 3);

  // A copy of record 2 inserted after it: reported at sequence 2 (the earlier of the two claims).
  std::vector<nlohmann::json> inserted = lines;
  inserted.insert(inserted.begin() + static_cast<std::ptrdiff_t>(line_of(2)) + 1, lines[line_of(2)]);
  write(inserted);
  bad = Ctl(verify);
  EXPECT_EQ(bad.exit_code, 3) << bad.out;
  EXPECT_EQ(nlohmann::json::parse(bad.out)["first_bad_sequence"], 2);

  // Records 5 and 6 cut off while the checkpoint written at shutdown signs 6: reported at 5.
  std::vector<nlohmann::json> truncated;
  for (const nlohmann::json& l : lines) {
    if (l["type"] != "record" || l["sequence"].get<int>() < 5) truncated.push_back(l);
  }
  write(truncated);
  bad = Ctl(verify);
  EXPECT_EQ(bad.exit_code, 3) << bad.out;
  EXPECT_EQ(nlohmann::json::parse(bad.out)["first_bad_sequence"], 5);

  // Wrong public key: refused.
  const CommandResult other = Ctl({"audit", "verify", "--export", dir_ + "/export.jsonl", "--public-key",
                                   pki_.dir + "/ca.crt", "--json"});
  EXPECT_NE(other.exit_code, 0);
}

TEST_F(AuditLogTest, AcknowledgedRequestsSurviveSigkillAndTheChainContinues) {
  std::vector<std::string> acknowledged;
  for (int i = 0; i < 5; ++i) {
    acknowledged.push_back(Generate("alice", absl::StrCat("tale ", i)));
    ASSERT_FALSE(acknowledged.back().empty());
  }
  daemon_->Signal(SIGKILL);
  ASSERT_TRUE(daemon_->WaitExit(absl::Seconds(10)).has_value());
  // Restart on the same state: the chain goes on from its head.
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_FALSE(Generate("alice", "after the crash").empty());
  ASSERT_NO_FATAL_FAILURE(StopDaemon());

  const CommandResult verify = Ctl({"audit", "verify", "--state-dir", StateDir(), "--public-key", PublicKey(), "--json"});
  ASSERT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_EQ(nlohmann::json::parse(verify.out)["records_checked"], 12);
  std::map<std::string, int> ends;
  for (const nlohmann::json& line : ExportAudit(StateDir())) {
    if (line["type"] == "record" && line["phase"] == "end") ++ends[line["request_id"].get<std::string>()];
  }
  for (const std::string& id : acknowledged) EXPECT_EQ(ends[id], 1) << id;
}

}  // namespace
}  // namespace airlock::testing

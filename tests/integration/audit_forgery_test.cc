// End to end, the storage administrator's attacks on a stopped daemon's audit state (no signing
// key): records rewritten and rechained with the checkpoints deleted, the witness deleted, a
// flipped byte in the write-ahead log, an export whose readable fields or checkpoint lines were
// edited. Each fails `airlockctl audit verify` and airlockd refuses to start on the state.
#include <dirent.h>
#include <signal.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "audit/audit_record.h"
#include "audit/audit_store.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"
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

class AuditForgeryTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    SetUpLab(kAliceMayCallAnything, {"alice"});
    ASSERT_NO_FATAL_FAILURE(StartDaemon(kAudit));
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(Generate(absl::StrCat("story ", i)));
    ASSERT_NO_FATAL_FAILURE(StopDaemon());
  }

  static constexpr char kAudit[] = "  checkpoint_every: 3\n";

  bool Generate(const std::string& prompt) {
    v1::GenerateRequest r;
    r.set_model("stories");
    r.set_prompt(prompt);
    r.set_max_tokens(4);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::GenerateResponse response;
    return v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))->Generate(&context, r, &response).ok();
  }
  std::string StateDir() const { return dir_ + "/state"; }
  std::string Witness() const { return dir_ + "/state.witness"; }
  CommandResult Verify(const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {AIRLOCKCTL_PATH, "audit", "verify", "--public-key",
                                     dir_ + "/audit-signing.key.pub", "--json"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunCommand(argv);
  }
  // airlockd on the same state: must refuse to start, saying `why`.
  void ExpectStartRefused(const std::string& why) {
    std::string config = ReadFileOrDie(dir_ + "/airlockd.yaml");
    std::string error;
    std::unique_ptr<DaemonProcess> again = DaemonProcess::Start(dir_, config, &error, absl::Seconds(30));
    EXPECT_EQ(again, nullptr) << "airlockd started on forged state";
    EXPECT_THAT(error, HasSubstr("exited with 1 before listening"));
    EXPECT_THAT(error, HasSubstr(why));
  }
};

TEST_F(AuditForgeryTest, RewrittenRecordsWithTheCheckpointsDeletedFailVerificationAndRefuseTheStart) {
  {
    std::unique_ptr<audit::StateDb> db = *audit::StateDb::Open(StateDir());
    absl::StatusOr<std::vector<audit::ChainedRecord>> records = audit::ReadAuditRange(*db, 1, UINT64_MAX);
    ASSERT_TRUE(records.ok());
    ASSERT_GE(records->size(), 12u);
    std::string prev = audit::GenesisHash();
    rocksdb::WriteBatch batch;
    for (audit::ChainedRecord& r : *records) {
      if (r.sequence == 2) r.record.identity = "someone-else";
      if (r.sequence >= 2) {
        r.prev_hash = prev;
        r.hash = audit::ChainHash(r.prev_hash, audit::EncodeRecord(r));
        ASSERT_TRUE(batch.Put(db->audit(), audit::EncodeSequenceKey(r.sequence), audit::EncodeStoredRecord(r)).ok());
      }
      prev = r.hash;
    }
    ASSERT_TRUE(batch.DeleteRange(db->checkpoints(), audit::EncodeSequenceKey(0),
                                  audit::EncodeSequenceKey(UINT64_MAX)).ok());
    ASSERT_TRUE(db->Write(&batch, true).ok());
  }
  // The unsigned tail is longer than the daemon's checkpoint_every permits.
  CommandResult verify = Verify({"--state-dir", StateDir(), "--max-unsigned-tail", "3"});
  EXPECT_EQ(verify.exit_code, 3) << verify.out << verify.err;
  EXPECT_THAT(verify.out, HasSubstr("checkpoints were removed"));
  // With the witness as an external anchor, also without knowing checkpoint_every.
  verify = Verify({"--state-dir", StateDir(), "--anchor", Witness()});
  EXPECT_EQ(verify.exit_code, 3) << verify.out << verify.err;
  ExpectStartRefused("audit store check failed");
  // The refusal signed nothing: still no checkpoint in the store.
  std::unique_ptr<audit::StateDb> db = *audit::StateDb::Open(StateDir());
  absl::StatusOr<std::vector<audit::Checkpoint>> checkpoints = audit::ReadAuditCheckpoints(*db);
  ASSERT_TRUE(checkpoints.ok());
  EXPECT_TRUE(checkpoints->empty());
}

TEST_F(AuditForgeryTest, ADeletedWitnessRefusesTheStartUntilItIsRestoredFromTheLog) {
  // The daemon logged each checkpoint as a witness line a SIEM keeps.
  std::string witness_line;
  std::istringstream log(daemon_->Log());
  for (std::string line; std::getline(log, line);) {
    if (!absl::StrContains(line, "\"audit checkpoint\"")) continue;
    witness_line = nlohmann::json::parse(line)["witness"].get<std::string>();
  }
  ASSERT_FALSE(witness_line.empty()) << daemon_->Log();
  EXPECT_EQ(witness_line + "\n", ReadFileOrDie(Witness()));
  ASSERT_EQ(std::remove(Witness().c_str()), 0);
  ExpectStartRefused("is missing but the store holds");
  std::ofstream(Witness()) << witness_line << "\n";
  ASSERT_EQ(::chmod(Witness().c_str(), 0600), 0);
  ASSERT_NO_FATAL_FAILURE(StartDaemon(kAudit));
  EXPECT_TRUE(Generate("after the restore"));
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
}

TEST_F(AuditForgeryTest, AFlippedByteInTheWriteAheadLogFailsVerificationAndRefusesTheStart) {
  std::string wal;
  DIR* d = ::opendir(StateDir().c_str());
  ASSERT_NE(d, nullptr);
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (absl::EndsWith(name, ".log") && name > wal) wal = name;
  }
  ::closedir(d);
  ASSERT_FALSE(wal.empty());
  wal = StateDir() + "/" + wal;
  std::fstream file(wal, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  ASSERT_GT(size, 2000) << "the records are expected in the WAL (no flush yet)";
  char byte = 0;
  file.seekg(size / 2);
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x01);
  file.seekp(size / 2);
  file.write(&byte, 1);
  file.close();

  const CommandResult verify = Verify({"--state-dir", StateDir()});
  EXPECT_EQ(verify.exit_code, 3) << verify.out << verify.err;
  EXPECT_THAT(verify.err, HasSubstr("corrupt"));
  ExpectStartRefused("corrupt");
}

TEST_F(AuditForgeryTest, AnExportWithEditedFieldsOrDroppedCheckpointsFailsVerification) {
  const std::string exported = dir_ + "/export.jsonl";
  const CommandResult made = RunCommand({AIRLOCKCTL_PATH, "audit", "export", "--state-dir", StateDir(), "--out", exported});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  ASSERT_EQ(Verify({"--export", exported, "--max-unsigned-tail", "3"}).exit_code, 0);

  std::vector<nlohmann::json> lines;
  {
    std::istringstream in(ReadFileOrDie(exported));
    for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  }
  const auto write = [&](const std::string& path, const std::function<bool(nlohmann::json&)>& keep) {
    std::ofstream out(path);
    for (nlohmann::json line : lines) {
      if (keep(line)) out << line.dump() << "\n";
    }
  };
  // The readable identity of one record edited; its stored bytes untouched.
  bool edited = false;
  write(dir_ + "/edited.jsonl", [&](nlohmann::json& line) {
    if (!edited && line["type"] == "record" && line["identity"] == "alice") {
      line["identity"] = "bob";
      edited = true;
    }
    return true;
  });
  CommandResult verify = Verify({"--export", dir_ + "/edited.jsonl"});
  EXPECT_EQ(verify.exit_code, 3) << verify.out << verify.err;
  EXPECT_THAT(verify.out, HasSubstr("\\\"identity\\\" does not match its stored bytes"));
  // A field added that the stored bytes do not have.
  bool added = false;
  write(dir_ + "/added.jsonl", [&](nlohmann::json& line) {
    if (!added && line["type"] == "record") {
      line["approved_by"] = "the board";
      added = true;
    }
    return true;
  });
  EXPECT_EQ(Verify({"--export", dir_ + "/added.jsonl"}).exit_code, 3);
  // Every checkpoint line dropped.
  write(dir_ + "/unsigned.jsonl", [](nlohmann::json& line) { return line["type"] != "checkpoint"; });
  verify = Verify({"--export", dir_ + "/unsigned.jsonl", "--max-unsigned-tail", "3"});
  EXPECT_EQ(verify.exit_code, 3) << verify.out << verify.err;
  EXPECT_THAT(verify.out, HasSubstr("checkpoints were removed"));
}

TEST_F(AuditForgeryTest, AnUntouchedExportVerifiesAlsoWithBytesThatAreNotUtf8) {
  {
    // A record whose identity is Latin-1, appended with the daemon's own key: the export replaces
    // the byte in its readable field; the verifier must read that the same way, not as an edit.
    std::unique_ptr<audit::StateDb> db = *audit::StateDb::Open(StateDir());
    absl::StatusOr<audit::CheckpointSigner> signer =
        audit::CheckpointSigner::FromPrivateKeyPem(ReadFileOrDie(dir_ + "/audit-signing.key"));
    ASSERT_TRUE(signer.ok());
    audit::AuditLogOptions options;
    options.checkpoint_every_records = 3;
    absl::StatusOr<std::unique_ptr<audit::AuditLog>> log = audit::AuditLog::Open(db.get(), *signer, options);
    ASSERT_TRUE(log.ok()) << log.status();
    audit::AuditRecord record;
    record.phase = audit::Phase::kEnd;
    record.identity = "caf\xe9";
    record.method = "airlock.v1.Inference/Tokenize";
    ASSERT_TRUE((*log)->Append(record).ok());
  }
  const std::string exported = dir_ + "/export.jsonl";
  const CommandResult made = RunCommand({AIRLOCKCTL_PATH, "audit", "export", "--state-dir", StateDir(), "--out", exported});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const CommandResult verify = Verify({"--export", exported, "--max-unsigned-tail", "3"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

}  // namespace
}  // namespace airlock::testing

// End-to-end tests of request lifetimes on a deliberately slow model: deadlines, client
// cancellation, a full queue and draining on SIGTERM. Each proves the engine is freed by getting a
// short request through right after (the long one would otherwise hold it for about a minute).
#include <signal.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;

// 4 layers of 1024 wide Q8_0 with a 4096-token context: about 2 ms per token at first and slower
// as the context fills, so 4000 tokens take the better part of a minute.
std::string SlowModel(const std::string& dir) {
  const std::string path = dir + "/slow.gguf";
  const CommandResult r = RunCommand({AIRLOCKCTL_PATH, "model", "synth", "--out", path, "--layers", "4", "--embd",
                                      "1024", "--ff", "2816", "--heads", "16", "--type", "q8_0", "--ctx", "4096",
                                      "--vocab", "320"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return path;
}

constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
limits:
  max_tokens_per_request: 4000
)";

class LifetimeTest : public ::testing::Test {
 protected:
  void Start(const std::string& model_extra, const std::string& limits_extra, const std::string& server_extra = "") {
    dir_ = MakeTempDir();
    pki_ = MakeLabPki(dir_ + "/pki");
    pki_.Issue("alice");
    const std::string models =
        absl::StrCat("  - name: slow\n    path: \"", SlowModel(dir_), "\"\n    threads: 1\n    context_length: 4096\n",
                     model_extra);
    std::string config = BaseConfig(dir_, pki_, models, absl::StrCat(kAccess, limits_extra));
    if (!server_extra.empty()) config = absl::StrReplaceAll(config, {{"  drain_timeout: \"5s\"\n", server_extra}});
    std::string error;
    daemon_ = DaemonProcess::Start(dir_, config, &error);
    ASSERT_NE(daemon_, nullptr) << error;
    stub_ = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"));
  }

  static v1::GenerateRequest Long() {
    v1::GenerateRequest r;
    r.set_model("slow");
    r.set_prompt("hello");
    r.set_max_tokens(4000);
    r.mutable_sampling()->set_temperature(0);
    return r;
  }

  // A short request finishing well inside its deadline proves the model is free.
  void ExpectModelFree() {
    v1::GenerateRequest r = Long();
    r.set_max_tokens(3);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(20)));
    v1::GenerateResponse response;
    const grpc::Status s = stub_->Generate(&context, r, &response);
    EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
    if (!s.ok()) return;
    EXPECT_EQ(response.usage().completion_tokens(), 3u);
  }

  // The model's entry in ListModels: running and waiting requests.
  v1::ModelInfo Status() {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    v1::ListModelsResponse models;
    const grpc::Status s = stub_->ListModels(&context, v1::ListModelsRequest(), &models);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return models.models_size() == 1 ? models.models(0) : v1::ModelInfo();
  }

  bool WaitUntilIdle(absl::Duration within) {
    const absl::Time deadline = absl::Now() + within;
    for (;;) {
      const v1::ModelInfo info = Status();
      if (info.requests_running() == 0 && info.requests_waiting() == 0) return true;
      if (absl::Now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  std::string dir_;
  LabPki pki_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

TEST_F(LifetimeTest, ClientDeadlineStopsGeneration) {
  ASSERT_NO_FATAL_FAILURE(Start("", ""));
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Milliseconds(500)));
  v1::GenerateResponse response;
  const grpc::Status s = stub_->Generate(&context, Long(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ExpectModelFree();
  // The server ended the call itself, not after the whole generation.
  EXPECT_TRUE(daemon_->WaitForLog("\"code\":\"DEADLINE_EXCEEDED\"", absl::Seconds(5)) ||
              daemon_->WaitForLog("\"code\":\"CANCELLED\"", absl::Seconds(1)))
      << daemon_->Log();
}

TEST_F(LifetimeTest, ServerCapsRequestDuration) {
  ASSERT_NO_FATAL_FAILURE(Start("", "  max_request_duration: \"1s\"\n"));
  grpc::ClientContext context;  // no client deadline at all
  v1::GenerateResponse response;
  const absl::Time start = absl::Now();
  const grpc::Status s = stub_->Generate(&context, Long(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("max_request_duration"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  ExpectModelFree();
}

TEST_F(LifetimeTest, ClientCancelStopsGeneration) {
  ASSERT_NO_FATAL_FAILURE(Start("", ""));
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, Long());
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));
  EXPECT_TRUE(message.has_piece());
  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitUntilIdle(absl::Seconds(10)));
  ExpectModelFree();
  EXPECT_TRUE(daemon_->WaitForLog("\"code\":\"CANCELLED\"", absl::Seconds(5))) << daemon_->Log();
}

TEST_F(LifetimeTest, DisconnectMidStreamFreesTheSlot) {
  ASSERT_NO_FATAL_FAILURE(Start("", ""));
  // A client process killed (SIGKILL) while it streams: its connection drops without a goodbye.
  const CommandResult killed = RunCommand(
      {"timeout", "-s", "KILL", "3", AIRLOCKCTL_PATH, "generate", "--model", "slow", "--prompt", "hello",
       "--max-tokens", "4000", "--temperature", "0", "--server", absl::StrCat("127.0.0.1:", daemon_->port()), "--ca",
       pki_.dir + "/ca.crt", "--cert", pki_.cert("alice"), "--key", pki_.key("alice"), "--server-name", "localhost"});
  EXPECT_EQ(killed.exit_code, 128 + 9) << killed.err;
  EXPECT_FALSE(killed.out.empty());  // it was streaming when it died
  EXPECT_TRUE(WaitUntilIdle(absl::Seconds(10))) << daemon_->Log();
  ExpectModelFree();
}

TEST_F(LifetimeTest, FullQueueIsRefused) {
  // One sequence at a time, so that B has to wait in the queue.
  ASSERT_NO_FATAL_FAILURE(Start("    max_queue: 1\n    max_sequences: 1\n", ""));
  // A runs; B waits; C finds the queue full.
  grpc::ClientContext a_context, b_context;
  auto a = stub_->GenerateStream(&a_context, Long());
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(a->Read(&message));  // A is running
  auto b = stub_->GenerateStream(&b_context, Long());
  // C is sent once B is seen waiting (ListModels reports the model's queue): otherwise C could
  // arrive first and take B's place.
  ASSERT_TRUE(PollUntil([&] { return Status().requests_waiting() == 1; }, absl::Seconds(20))) << daemon_->Log();
  grpc::Status c_status;
  {
    grpc::ClientContext c_context;
    c_context.set_deadline(DeadlineIn(absl::Seconds(20)));
    v1::GenerateResponse response;
    v1::GenerateRequest c = Long();
    c.set_max_tokens(1);
    c_status = stub_->Generate(&c_context, c, &response);
  }
  EXPECT_EQ(c_status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << c_status.error_message();
  EXPECT_THAT(c_status.error_message(), HasSubstr("max_queue"));
  a_context.TryCancel();
  b_context.TryCancel();
  while (a->Read(&message)) {
  }
  while (b->Read(&message)) {
  }
  EXPECT_EQ(a->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(b->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The client returns at once; the server ends both calls as soon as it sees the cancellations.
  ASSERT_TRUE(daemon_->WaitForLog("\"code\":\"CANCELLED\"", absl::Seconds(10), 2)) << daemon_->Log();
  ExpectModelFree();

  // Every begin record has its end record, C's refusal included (it was admitted, then found the
  // queue full): an auditor never sees a generation that started and never ended.
  daemon_->Signal(SIGTERM);
  ASSERT_TRUE(daemon_->WaitExit(absl::Seconds(30)).has_value()) << daemon_->Log();
  const AuditIndex audit = IndexAudit(ExportAudit(dir_ + "/state"));
  int full = 0;
  for (const auto& [id, begin] : audit.begins) {
    ASSERT_TRUE(audit.ends.contains(id)) << "no end record for " << begin.dump();
    if (audit.ends.at(id)["status_code"] == static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)) ++full;
  }
  EXPECT_EQ(full, 1);
  EXPECT_GE(audit.begins.size(), 4u);  // A, B, C and the short request
}

TEST_F(LifetimeTest, SigtermCancelsWorkPastTheDrainTimeout) {
  ASSERT_NO_FATAL_FAILURE(Start("", "", "  drain_timeout: \"1s\"\n"));
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, Long());
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));
  const absl::Time start = absl::Now();
  daemon_->Signal(SIGTERM);
  int pieces = 0;
  bool done = false;
  while (reader->Read(&message)) {
    pieces += message.has_piece() ? 1 : 0;
    done = done || message.has_done();
  }
  const grpc::Status s = reader->Finish();
  EXPECT_FALSE(done);
  EXPECT_THAT(s.error_code(), AnyOf(grpc::StatusCode::CANCELLED, grpc::StatusCode::UNAVAILABLE)) << s.error_message();
  EXPECT_GT(pieces, 0);  // it kept streaming during the drain window
  const std::optional<int> code = daemon_->WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.has_value()) << daemon_->Log();
  EXPECT_EQ(*code, 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  // The record says what happened: the drain ended it (UNAVAILABLE), the client did not cancel.
  int ends = 0;
  for (const nlohmann::json& line : ExportAudit(dir_ + "/state")) {
    if (line.value("type", "") != "record" || line.value("phase", "") != "end" ||
        line.value("method", "") != "airlock.v1.Inference/GenerateStream") {
      continue;
    }
    ++ends;
    EXPECT_EQ(line["status_code"], static_cast<int>(grpc::StatusCode::UNAVAILABLE)) << line.dump();
  }
  EXPECT_EQ(ends, 1);
}

TEST_F(LifetimeTest, SigtermLetsShortWorkFinish) {
  ASSERT_NO_FATAL_FAILURE(Start("", "", "  drain_timeout: \"30s\"\n"));
  grpc::ClientContext context;
  v1::GenerateRequest r = Long();
  r.set_max_tokens(300);  // about a second of work
  auto reader = stub_->GenerateStream(&context, r);
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));
  daemon_->Signal(SIGTERM);
  bool done = false;
  while (reader->Read(&message)) done = done || message.has_done();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(done);
  const std::optional<int> code = daemon_->WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace airlock::testing

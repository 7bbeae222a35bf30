// Interoperability: a Python gRPC client (grpcio, stubs generated at run time from proto/) calls every
// public RPC of the real airlockd over mutual TLS; this test asserts on the JSON the script prints.
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;

// Debian's interpreter, which has python3-grpcio; the python3 on PATH may be another one.
constexpr char kPython[] = "/usr/bin/python3";
constexpr int kMissingDependency = 77;  // python_client.py's exit code when grpcio/protobuf/protoc is missing

std::string ScriptPath() {
  // AIRLOCK_PROTO_DIR is <source>/proto.
  return absl::StrCat(AIRLOCK_PROTO_DIR, "/../tests/integration/python_client.py");
}

constexpr char kAccess[] = R"(identity:
  source: SUBJECT_CN
users:
  - name: alice
    roles: [inference-user]
roles:
  - name: inference-user
    methods: ["airlock.v1.Inference/*", "grpc.health.v1.Health/*"]
    models: ["stories", "stories-chat"]
limits:
  max_tokens_per_request: 400
  max_prompt_tokens: 200
  max_request_bytes: 65536
)";

class PythonClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    if (::access(kPython, X_OK) != 0) {
      if (RunningInCi()) GTEST_FAIL() << kPython << " is missing (CI=true)";
      GTEST_SKIP() << kPython << " is missing; install python3, python3-grpcio and python3-grpc-tools";
    }
    dir_ = MakeTempDir();
    pki_ = MakeLabPki(dir_ + "/pki");
    pki_.Issue("alice");
    pki_.Issue("mallory");  // a valid certificate of the same CA whose identity has no roles
    const std::string path = SharedPath(kStoriesModel);
    const std::string models =
        absl::StrCat("  - name: stories\n    path: \"", path, "\"\n    threads: 1\n", "  - name: stories-chat\n    path: \"",
                     path, "\"\n    threads: 1\n    chat_template: chatml\n");
    std::string error;
    daemon_ = DaemonProcess::Start(dir_, BaseConfig(dir_, pki_, models, kAccess), &error);
    ASSERT_NE(daemon_, nullptr) << error;
  }

  std::string dir_;
  LabPki pki_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(PythonClientTest, EveryRpcWorksFromPython) {
  const CommandResult run = RunCommand(
      {kPython, ScriptPath(), "--port", std::to_string(daemon_->port()), "--ca", pki_.dir + "/ca.crt", "--cert",
       pki_.cert("alice"), "--key", pki_.key("alice"), "--denied-cert", pki_.cert("mallory"), "--denied-key",
       pki_.key("mallory"), "--proto-dir", AIRLOCK_PROTO_DIR, "--out-dir", dir_ + "/pystubs"},
      absl::Seconds(300));
  if (run.exit_code == kMissingDependency) {
    if (RunningInCi()) GTEST_FAIL() << "Python gRPC dependencies missing (CI=true): " << run.err;
    GTEST_SKIP() << "Python gRPC dependencies missing (apt-get install python3-grpcio python3-grpc-tools): "
                 << run.err;
  }
  ASSERT_EQ(run.exit_code, 0) << "stdout:\n" << run.out << "\nstderr:\n" << run.err;
  const json r = json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(r.is_discarded()) << "not one JSON object:\n" << run.out << "\nstderr:\n" << run.err;
  ASSERT_TRUE(r.is_object()) << run.out;
  // A check's result; an empty object when the script did not report it (so every lookup is safe).
  const auto get = [&](const char* check) { return r.contains(check) ? r.at(check) : json::object(); };
  const auto ok = [&](const char* check) {
    const json result = get(check);
    EXPECT_EQ(result.value("ok", false), true) << check << ": " << result.dump();
    return result;
  };
  RecordProperty("python_environment", get("environment").dump());

  // ListModels: both granted models, the chat one with its template.
  json models = ok("list_models");
  ASSERT_EQ(models["models"].size(), 2u) << models.dump();
  EXPECT_EQ(models["models"][0]["name"], "stories");
  EXPECT_EQ(models["models"][0]["architecture"], "llama");
  EXPECT_EQ(models["models"][1]["name"], "stories-chat");
  EXPECT_EQ(models["models"][1]["chat_template"], "chatml");

  // Tokenize "Hello world" with BOS.
  json tokenize = ok("tokenize");
  ASSERT_GE(tokenize["token_ids"].size(), 3u);
  EXPECT_EQ(tokenize["token_ids"][0], 1);
  EXPECT_EQ(tokenize["pieces"].size(), tokenize["token_ids"].size());

  // Generate (greedy) and GenerateStream agree: the concatenated pieces are the unary text.
  json generate = ok("generate");
  json stream = ok("generate_stream");
  EXPECT_FALSE(generate.value("text", "").empty());
  EXPECT_EQ(generate.value("request_id", "").size(), 32u);
  EXPECT_EQ(generate["completion_tokens"], generate["token_ids"].size());
  EXPECT_EQ(stream["text"], generate["text"]);
  EXPECT_EQ(stream["done"], true) << "no final Completion message";
  EXPECT_EQ(stream["messages_after_done"], 0);
  EXPECT_GE(stream.value("pieces", 0), 1);
  EXPECT_EQ(stream["completion_tokens"], generate["completion_tokens"]);
  EXPECT_EQ(stream["prompt_tokens"], generate["prompt_tokens"]);
  EXPECT_EQ(stream["stop_reason"], generate["stop_reason"]);
  EXPECT_NE(stream["request_id"], generate["request_id"]);

  // ChatStream on the chatml model: the template wraps the messages (many more prompt tokens than
  // the words), the stream ends with its completion, and it matches unary Chat.
  json chat_stream = ok("chat_stream");
  EXPECT_EQ(chat_stream["done"], true);
  EXPECT_GT(chat_stream.value("prompt_tokens", 0), 15);
  EXPECT_GE(chat_stream.value("completion_tokens", 0), 1);
  EXPECT_LE(chat_stream.value("completion_tokens", 99), 8);
  EXPECT_EQ(chat_stream["text"], ok("chat")["text"]);

  EXPECT_EQ(ok("health")["status"], "SERVING");

  // Refusals carry the documented codes and say why.
  json denied = get("permission_denied");
  EXPECT_EQ(denied["code"], "PERMISSION_DENIED") << denied.dump();
  EXPECT_THAT(denied.value("details", ""), HasSubstr("mallory"));
  json invalid = get("invalid_argument");
  EXPECT_EQ(invalid["code"], "INVALID_ARGUMENT") << invalid.dump();
  EXPECT_THAT(invalid.value("details", ""), StartsWith("max_tokens"));

  // The hand-built encoding is right (a valid prompt succeeds), and with invalid UTF-8 in the prompt
  // the same bytes are refused; the daemon names the field in its log and keeps serving.
  json control = ok("raw_valid_control");
  EXPECT_EQ(control["completion_tokens"], 4);
  json bad = get("raw_invalid_utf8");
  EXPECT_EQ(bad.value("ok", true), false) << "invalid UTF-8 accepted: " << bad.dump();
  EXPECT_TRUE(bad.contains("code")) << bad.dump();
  EXPECT_NE(bad.value("code", "OK"), "OK");
  // gRPC 1.51's callback API answers a request that fails to parse with UNIMPLEMENTED and no message
  // (the protobuf parser refuses invalid UTF-8 in a proto3 string before the daemon's own
  // validation sees it); the daemon's log holds the reason. Recorded so a change shows up.
  RecordProperty("invalid_utf8_status", bad.dump());
  EXPECT_TRUE(daemon_->WaitForLog("GenerateRequest.prompt' contains invalid UTF-8", absl::Seconds(5)))
      << daemon_->Log();
  json after = ok("after_invalid_utf8");
  EXPECT_EQ(after["same_channel_text"], control["text"]);
  EXPECT_EQ(after["fresh_channel_text"], control["text"]);
  EXPECT_EQ(daemon_->WaitExit(absl::ZeroDuration()), std::nullopt) << "the daemon exited";
}

}  // namespace
}  // namespace airlock::testing

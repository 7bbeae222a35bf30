// airlockctl against a real airlockd: every client command, its exit codes, and profiles.
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;


constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
  - name: bob
    roles: [tokenizer]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
  - name: tokenizer
    methods: ["airlock.v1.Inference/Tokenize"]
    models: ["stories"]
)";

class AirlockctlClientTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    SetUpLab(kAccess, {"alice", "bob"});
    StartDaemon("", absl::StrCat("  - name: stories\n    path: \"", SharedPath(kStoriesModel),
                                 "\"\n    threads: 1\n    chat_template: llama2\n"));
  }

  // airlockctl <args> --server ... as `user`.
  CommandResult Ctl(std::vector<std::string> args, const std::string& user = "alice", const std::string& input = "") {
    return RunCtl(daemon_->port(), pki_, user, args, input);
  }

};

TEST_F(AirlockctlClientTest, GenerateStreamsAndJsonAgree) {
  const CommandResult streamed =
      Ctl({"generate", "--model", "stories", "--prompt", "Once upon a time", "--max-tokens", "30", "--temperature", "0"});
  ASSERT_EQ(streamed.exit_code, 0) << streamed.err;
  const CommandResult json = Ctl({"generate", "--model", "stories", "--prompt", "Once upon a time", "--max-tokens", "30",
                                  "--temperature", "0", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const nlohmann::json j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["usage"]["completion_tokens"], 30);
  EXPECT_THAT(streamed.out, HasSubstr(j["text"].get<std::string>()));
  EXPECT_FALSE(j["text"].get<std::string>().empty());
}

TEST_F(AirlockctlClientTest, GenerateAndChatFollowAJsonSchema) {
  const std::string schema = dir_ + "/schema.json";
  {
    std::ofstream out(schema);
    out << R"({"type":"object","properties":{"ok":{"type":"boolean"},"n":{"enum":[1,2,3]}},"required":["ok","n"]})";
  }
  for (const char* command : {"generate", "chat"}) {
    SCOPED_TRACE(command);
    std::vector<std::string> args = {command, "--model", "stories", "--max-tokens", "100", "--temperature", "0",
                                     "--json-schema", schema, "--json"};
    args.push_back(std::string(command) == "chat" ? "--message" : "--prompt");
    args.push_back("Once upon a time");
    const CommandResult r = Ctl(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json reply = nlohmann::json::parse(r.out);
    const nlohmann::json j = nlohmann::json::parse(reply["text"].get<std::string>(), nullptr, false);
    ASSERT_TRUE(j.is_object()) << reply["text"];
    EXPECT_TRUE(j["ok"].is_boolean());
    EXPECT_TRUE(j["n"] == 1 || j["n"] == 2 || j["n"] == 3);
    EXPECT_EQ(reply["stop_reason"], "end_of_generation");
  }
  const CommandResult both = Ctl({"generate", "--model", "stories", "--prompt", "x", "--json-schema", schema,
                                  "--json-object"});
  EXPECT_NE(both.exit_code, 0);
  EXPECT_THAT(both.err, HasSubstr("excludes"));
}

TEST_F(AirlockctlClientTest, PromptFromStdin) {
  const CommandResult r = Ctl({"generate", "--model", "stories", "--max-tokens", "5", "--temperature", "0", "--json"},
                              "alice", "Once upon a time\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["usage"]["completion_tokens"], 5);
}

TEST_F(AirlockctlClientTest, ChatModelsTokenizeHealth) {
  const CommandResult chat = Ctl({"chat", "--model", "stories", "--message", "Hello", "--max-tokens", "5"});
  EXPECT_EQ(chat.exit_code, 0) << chat.err;
  const CommandResult models = Ctl({"models", "--json"});
  ASSERT_EQ(models.exit_code, 0) << models.err;
  EXPECT_THAT(models.out, HasSubstr("\"stories\""));
  EXPECT_THAT(models.out, HasSubstr("llama2"));
  const CommandResult tokens = Ctl({"tokenize", "--model", "stories", "--text", "Hello world", "--json"}, "bob");
  ASSERT_EQ(tokens.exit_code, 0) << tokens.err;
  EXPECT_THAT(tokens.out, HasSubstr("token_ids"));
  const CommandResult health = Ctl({"health"});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_THAT(health.out, HasSubstr("SERVING"));
}

TEST_F(AirlockctlClientTest, ErrorsMapToExitCodes) {
  const CommandResult denied = Ctl({"generate", "--model", "stories", "--prompt", "Hi"}, "bob");
  EXPECT_EQ(denied.exit_code, 3) << denied.err;
  EXPECT_THAT(denied.err, HasSubstr("PERMISSION_DENIED"));
  const CommandResult invalid = Ctl({"generate", "--model", "stories", "--prompt", "Hi", "--top-p", "1.5"});
  EXPECT_EQ(invalid.exit_code, 2) << invalid.err;
  EXPECT_THAT(invalid.err, HasSubstr("top_p"));
  const CommandResult zero = Ctl({"generate", "--model", "stories", "--prompt", "Hi", "-n", "0"});
  EXPECT_EQ(zero.exit_code, 2) << zero.err;
  EXPECT_THAT(zero.err, HasSubstr("max_tokens: must be between 1 and"));
}

TEST_F(AirlockctlClientTest, ProfileFileSuppliesTheConnection) {
  const std::string config_dir = dir_ + "/ctl";
  ASSERT_EQ(RunCommand({"mkdir", "-p", config_dir}).exit_code, 0);
  {
    std::ofstream out(config_dir + "/profiles.yaml");
    out << "default: lab\nprofiles:\n  lab:\n    server: \"127.0.0.1:" << daemon_->port() << "\"\n    ca: \""
        << pki_.dir << "/ca.crt\"\n    cert: \"" << pki_.cert("alice") << "\"\n    key: \"" << pki_.key("alice")
        << "\"\n    server_name: localhost\n";
  }
  const CommandResult r = RunCommand({"env", "AIRLOCK_CONFIG_DIR=" + config_dir, AIRLOCKCTL_PATH, "health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SERVING"));
}

}  // namespace
}  // namespace airlock::testing

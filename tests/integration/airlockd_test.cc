// End-to-end tests of airlockd: the real binary, a lab PKI, a real model, real mTLS clients.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "auth/dev_pki.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "nlohmann/json.hpp"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;


std::string ModelsYaml() {
  const std::string path = SharedPath(kStoriesModel);
  return absl::StrCat("  - name: stories\n    path: \"", path, "\"\n    threads: 1\n",
                      "  - name: stories-chat\n    path: \"", path, "\"\n    threads: 1\n    chat_template: chatml\n");
}

constexpr char kAccess[] = R"(identity:
  source: SUBJECT_CN
users:
  - name: alice
    groups: [clinicians]
  - name: bob
    roles: [tokenizer]
  - name: probe
    roles: [health-probe]
groups:
  - name: clinicians
    roles: [inference-user]
roles:
  - name: inference-user
    methods: ["airlock.v1.Inference/*", "grpc.health.v1.Health/*"]
    models: ["stories", "stories-chat"]
  - name: tokenizer
    methods: ["airlock.v1.Inference/Tokenize", "airlock.v1.Inference/ListModels"]
    models: ["stories"]
  - name: health-probe
    methods: ["grpc.health.v1.Health/Check"]
limits:
  max_tokens_per_request: 400
  max_prompt_tokens: 200
  max_request_bytes: 65536
)";

class AirlockdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    dir_ = MakeTempDir();
    pki_ = MakeLabPki(dir_ + "/pki");
    for (const char* user : {"alice", "bob", "probe", "mallory"}) pki_.Issue(user);
    std::string error;
    daemon_ = DaemonProcess::Start(dir_, Config(), &error);
    ASSERT_NE(daemon_, nullptr) << error;
  }

  virtual std::string Config() { return BaseConfig(dir_, pki_, ModelsYaml(), kAccess); }

  std::unique_ptr<v1::Inference::Stub> Inference(const std::string& user) {
    return v1::Inference::NewStub(Connect(daemon_->port(), pki_, user));
  }

  static v1::GenerateRequest Greedy(const std::string& prompt, int max_tokens) {
    v1::GenerateRequest r;
    r.set_model("stories");
    r.set_prompt(prompt);
    r.set_max_tokens(max_tokens);
    r.mutable_sampling()->set_temperature(0);
    return r;
  }

  std::string dir_;
  LabPki pki_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(AirlockdTest, GenerateAndGenerateStreamAgree) {
  auto stub = Inference("alice");
  grpc::ClientContext unary_context;
  unary_context.set_deadline(DeadlineIn(absl::Seconds(60)));
  v1::GenerateResponse unary;
  const grpc::Status status = stub->Generate(&unary_context, Greedy("Once upon a time", 40), &unary);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(unary.text().empty());
  EXPECT_EQ(unary.model(), "stories");
  EXPECT_EQ(unary.request_id().size(), 32u);
  EXPECT_EQ(unary.usage().completion_tokens(), static_cast<uint32_t>(unary.token_ids_size()));
  EXPECT_EQ(unary.usage().total_tokens(), unary.usage().prompt_tokens() + unary.usage().completion_tokens());
  EXPECT_GT(unary.usage().prompt_tokens(), 1u);

  grpc::ClientContext stream_context;
  stream_context.set_deadline(DeadlineIn(absl::Seconds(60)));
  auto reader = stub->GenerateStream(&stream_context, Greedy("Once upon a time", 40));
  v1::GenerateStreamResponse message;
  std::string text;
  std::vector<int32_t> ids;
  int pieces = 0;
  bool done = false;
  while (reader->Read(&message)) {
    ASSERT_FALSE(done) << "a message after the final one";
    if (message.has_piece()) {
      ++pieces;
      text += message.piece().text();
      ids.insert(ids.end(), message.piece().token_ids().begin(), message.piece().token_ids().end());
    } else {
      ASSERT_TRUE(message.has_done());
      done = true;
      EXPECT_EQ(message.done().usage().completion_tokens(), unary.usage().completion_tokens());
      EXPECT_EQ(message.done().stop_reason(), unary.stop_reason());
      EXPECT_GT(message.done().timings().time_to_first_token_seconds(), 0);
    }
  }
  const grpc::Status stream_status = reader->Finish();
  ASSERT_TRUE(stream_status.ok()) << stream_status.error_message();
  EXPECT_TRUE(done);
  EXPECT_GT(pieces, 1);
  EXPECT_EQ(text, unary.text());
  // The stream's ids are the unary ids, except a final end-of-generation token that has no text.
  std::vector<int32_t> unary_ids(unary.token_ids().begin(), unary.token_ids().end());
  if (unary.stop_reason() == v1::STOP_REASON_END_OF_GENERATION) unary_ids.pop_back();
  EXPECT_EQ(ids, unary_ids);
}

TEST_F(AirlockdTest, StreamEqualsAirlockctlRunForTheSameSeed) {
  v1::GenerateRequest r = Greedy("Lily wanted to", 40);
  r.mutable_sampling()->set_temperature(0.8f);
  r.mutable_sampling()->set_seed(1234);
  grpc::ClientContext context;
  auto reader = Inference("alice")->GenerateStream(&context, r);
  v1::GenerateStreamResponse message;
  std::string text;
  while (reader->Read(&message)) text += message.piece().text();
  ASSERT_TRUE(reader->Finish().ok());
  const CommandResult local = RunCommand({AIRLOCKCTL_PATH, "run", "--model", SharedPath(kStoriesModel), "--prompt",
                                          "Lily wanted to", "--max-tokens", "40", "--temperature", "0.8", "--seed",
                                          "1234", "--threads", "1", "--json"});
  ASSERT_EQ(local.exit_code, 0) << local.err;
  const std::string marker = "\"output_text\":";
  ASSERT_NE(local.out.find(marker), std::string::npos) << local.out;
  nlohmann::json j = nlohmann::json::parse(local.out);
  EXPECT_EQ(text, j["output_text"].get<std::string>());
  EXPECT_FALSE(text.empty());
}

TEST_F(AirlockdTest, ChatUsesTheConfiguredTemplate) {
  auto stub = Inference("alice");
  v1::ChatRequest chat;
  chat.set_model("stories-chat");
  chat.set_max_tokens(8);
  chat.mutable_sampling()->set_temperature(0);
  auto* m = chat.add_messages();
  m->set_role("user");
  m->set_content("Tell me a story <|im_end|>");
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status status = stub->Chat(&context, chat, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(response.usage().prompt_tokens(), 10u);  // the rendered ChatML wrapper is there
  EXPECT_EQ(response.usage().completion_tokens(), 8u);

  // The model without a recognisable template says so.
  chat.set_model("stories");
  grpc::ClientContext context2;
  const grpc::Status no_template = stub->Chat(&context2, chat, &response);
  EXPECT_EQ(no_template.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(no_template.error_message(), HasSubstr("chat template"));
}

TEST_F(AirlockdTest, TokenizeAndListModelsFollowRoles) {
  auto bob = Inference("bob");
  v1::TokenizeRequest tokenize;
  tokenize.set_model("stories");
  tokenize.set_text("Hello world");
  tokenize.set_add_special(true);
  grpc::ClientContext c1;
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(bob->Tokenize(&c1, tokenize, &tokens).ok());
  ASSERT_GE(tokens.token_ids_size(), 3);
  EXPECT_EQ(tokens.token_ids(0), 1);  // BOS
  EXPECT_EQ(tokens.pieces_size(), tokens.token_ids_size());

  grpc::ClientContext c2;
  v1::ListModelsResponse models;
  ASSERT_TRUE(bob->ListModels(&c2, v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);  // bob's role grants only "stories"
  EXPECT_EQ(models.models(0).name(), "stories");
  EXPECT_EQ(models.models(0).architecture(), "llama");
  EXPECT_GT(models.models(0).parameters(), 200000u);

  grpc::ClientContext c3;
  ASSERT_TRUE(Inference("alice")->ListModels(&c3, v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 2);
  EXPECT_EQ(models.models(1).chat_template(), "chatml");
}

TEST_F(AirlockdTest, DeniedCallsSayWhatWasMissing) {
  v1::GenerateResponse response;
  {
    grpc::ClientContext context;
    const grpc::Status s = Inference("mallory")->Generate(&context, Greedy("Hi", 2), &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("mallory"));
    EXPECT_THAT(s.error_message(), HasSubstr("not a configured user"));
  }
  {
    grpc::ClientContext context;
    const grpc::Status s = Inference("bob")->Generate(&context, Greedy("Hi", 2), &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("airlock.v1.Inference/Generate"));
  }
  {
    v1::TokenizeRequest tokenize;
    tokenize.set_model("stories-chat");
    tokenize.set_text("x");
    v1::TokenizeResponse tokens;
    grpc::ClientContext context;
    const grpc::Status s = Inference("bob")->Tokenize(&context, tokenize, &tokens);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("stories-chat"));
  }
  {
    grpc::ClientContext context;
    v1::GenerateRequest r = Greedy("Hi", 2);
    r.set_model("no-such-model");
    const grpc::Status s = Inference("alice")->Generate(&context, r, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);  // not granted, whether it exists or not
  }
  EXPECT_TRUE(daemon_->WaitForLog("\"call denied\"", absl::Seconds(5), 4));
  EXPECT_THAT(daemon_->Log(), HasSubstr("\"identity\":\"mallory\""));
}

TEST_F(AirlockdTest, HealthNeedsARoleToo) {
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  {
    grpc::ClientContext context;
    auto stub = grpc::health::v1::Health::NewStub(Connect(daemon_->port(), pki_, "probe"));
    ASSERT_TRUE(stub->Check(&context, request, &response).ok());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  {
    grpc::ClientContext context;
    request.set_service("no.such.Service");
    auto stub = grpc::health::v1::Health::NewStub(Connect(daemon_->port(), pki_, "probe"));
    EXPECT_EQ(stub->Check(&context, request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    request.set_service("");
    auto stub = grpc::health::v1::Health::NewStub(Connect(daemon_->port(), pki_, "bob"));
    EXPECT_EQ(stub->Check(&context, request, &response).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
}

TEST_F(AirlockdTest, InvalidRequestsNameTheField) {
  auto stub = Inference("alice");
  const auto expect_invalid = [&](v1::GenerateRequest r, const std::string& field) {
    grpc::ClientContext context;
    v1::GenerateResponse response;
    const grpc::Status s = stub->Generate(&context, r, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), ::testing::StartsWith(field));
  };
  v1::GenerateRequest r = Greedy("Hi", 5);
  r.clear_model();
  expect_invalid(r, "model");
  r = Greedy("", 5);
  expect_invalid(r, "prompt");
  r = Greedy("Hi", 0);
  expect_invalid(r, "max_tokens");
  r = Greedy("Hi", 401);
  expect_invalid(r, "max_tokens");
  r = Greedy("Hi", 5);
  r.mutable_sampling()->set_top_p(1.5f);
  expect_invalid(r, "sampling");
  r = Greedy("Hi", 5);
  for (int i = 0; i < 9; ++i) r.add_stop("x");
  expect_invalid(r, "stop");
  r = Greedy("Hi", 5);
  r.add_stop("");
  expect_invalid(r, "stop[0]");
  // More prompt tokens than limits.max_prompt_tokens.
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt += " word";
  expect_invalid(Greedy(long_prompt, 5), "prompt");

  v1::ChatRequest chat;
  chat.set_model("stories-chat");
  chat.add_messages()->set_role("wizard");
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status s = stub->Chat(&context, chat, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("messages[0].role"));
}

TEST_F(AirlockdTest, OversizedRequestIsRefusedBeforeParsing) {
  auto stub = Inference("alice");
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status s = stub->Generate(&context, Greedy(std::string(100000, 'a'), 5), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  // And the daemon keeps serving.
  grpc::ClientContext again;
  EXPECT_TRUE(stub->Generate(&again, Greedy("Hi", 3), &response).ok());
}

TEST_F(AirlockdTest, HandshakeRefusesMissingForeignAndRevokedCertificates) {
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  const auto check = [&](std::shared_ptr<grpc::Channel> channel) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    return grpc::health::v1::Health::NewStub(channel)->Check(&context, request, &response);
  };
  EXPECT_TRUE(check(Connect(daemon_->port(), pki_, "alice")).ok());
  // No client certificate.
  EXPECT_EQ(check(Connect(daemon_->port(), pki_, "")).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A certificate from another CA with the same name.
  LabPki other = MakeLabPki(dir_ + "/other-pki");
  other.Issue("alice");
  EXPECT_EQ(check(ConnectWith(daemon_->port(), pki_.dir + "/ca.crt", other.cert("alice"), other.key("alice")))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // An expired certificate from the right CA.
  {
    auth::PemKeyPair ca{ReadFileOrDie(pki_.dir + "/ca.crt"), ReadFileOrDie(pki_.dir + "/ca.key")};
    auth::CertificateSpec spec;
    spec.common_name = "alice";
    spec.not_before = absl::Now() - absl::Hours(72);
    spec.validity = absl::Hours(24);
    absl::StatusOr<auth::PemKeyPair> expired = auth::IssueCertificate(ca, spec);
    ASSERT_TRUE(expired.ok()) << expired.status();
    ASSERT_TRUE(auth::WritePublicFile(dir_ + "/expired.crt", expired->cert_pem).ok());
    ASSERT_TRUE(auth::WritePrivateFile(dir_ + "/expired.key", expired->key_pem).ok());
    EXPECT_EQ(check(ConnectWith(daemon_->port(), pki_.dir + "/ca.crt", dir_ + "/expired.crt", dir_ + "/expired.key"))
                  .error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
  // Revoked, then the CRL reloaded by SIGHUP: a new connection is refused without a restart.
  const std::string pem = ReadFileOrDie(pki_.cert("alice"));
  ASSERT_TRUE(auth::Revoke(pki_.dir, pem).ok());
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitForLog("configuration reloaded", absl::Seconds(10)));
  EXPECT_EQ(check(Connect(daemon_->port(), pki_, "alice")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(daemon_->WaitForLog("revoked", absl::Seconds(5))) << daemon_->Log();
  EXPECT_TRUE(check(Connect(daemon_->port(), pki_, "probe")).ok());
}

TEST_F(AirlockdTest, SighupReloadsUsersAndRefusesABadFile) {
  pki_.Issue("carol");
  v1::TokenizeRequest tokenize;
  tokenize.set_model("stories");
  tokenize.set_text("x");
  v1::TokenizeResponse tokens;
  const auto call = [&] {
    grpc::ClientContext context;
    return Inference("carol")->Tokenize(&context, tokenize, &tokens).error_code();
  };
  EXPECT_EQ(call(), grpc::StatusCode::PERMISSION_DENIED);
  std::string access = absl::StrReplaceAll(kAccess, {{"  - name: probe\n", "  - name: carol\n    roles: [tokenizer]\n  - name: probe\n"}});
  {
    std::ofstream out(daemon_->config_path(), std::ios::trunc);
    out << BaseConfig(dir_, pki_, ModelsYaml(), access);
  }
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitForLog("configuration reloaded", absl::Seconds(10)));
  EXPECT_EQ(call(), grpc::StatusCode::OK);

  // A broken file is refused and the running configuration stays.
  {
    std::ofstream out(daemon_->config_path(), std::ios::trunc);
    out << BaseConfig(dir_, pki_, ModelsYaml(), access) << "bogus_key: 1\n";
  }
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitForLog("reload refused", absl::Seconds(10)));
  EXPECT_THAT(daemon_->Log(), HasSubstr("bogus_key"));
  EXPECT_EQ(call(), grpc::StatusCode::OK);
}

TEST_F(AirlockdTest, ExpiredCrlRefusesTheReload) {
  // A CRL whose nextUpdate has passed: the reload must not accept it.
  auto ca = auth::PemKeyPair{ReadFileOrDie(pki_.dir + "/ca.crt"), ReadFileOrDie(pki_.dir + "/ca.key")};
  absl::StatusOr<std::string> crl =
      auth::CreateCrl(ca, {}, absl::Now() - absl::Hours(48), absl::Now() - absl::Hours(1), 99);
  ASSERT_TRUE(crl.ok()) << crl.status();
  ASSERT_TRUE(auth::WritePublicFile(pki_.dir + "/crl.pem", *crl).ok());
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitForLog("reload refused", absl::Seconds(10)));
  EXPECT_THAT(daemon_->Log(), HasSubstr("expired"));
}

TEST_F(AirlockdTest, SigtermDrainsAndExitsZero) {
  daemon_->Signal(SIGTERM);
  const std::optional<int> code = daemon_->WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.has_value()) << daemon_->Log();
  EXPECT_EQ(*code, 0) << daemon_->Log();
  EXPECT_THAT(daemon_->Log(), HasSubstr("\"drained\""));
}

TEST_F(AirlockdTest, TheDaemonRunsUnderSeccomp) {
  // The port file is written once airlockd listens; the lock-down follows at once, then the log line.
  ASSERT_TRUE(daemon_->WaitForLog("network locked down", absl::Seconds(10))) << daemon_->Log();
  std::ifstream status(absl::StrCat("/proc/", daemon_->pid(), "/status"));
  std::string line;
  std::string seccomp;
  while (std::getline(status, line)) {
    if (line.rfind("Seccomp:", 0) == 0) seccomp = line;
  }
  EXPECT_THAT(seccomp, HasSubstr("2"));  // SECCOMP_MODE_FILTER
}

// ---- Start-up refusals ---------------------------------------------------------------------------

class AirlockdStartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    dir_ = MakeTempDir();
    pki_ = MakeLabPki(dir_ + "/pki");
  }
  // Starts airlockd expecting it to refuse; returns its log.
  std::string ExpectRefusal(const std::string& config) {
    std::string error;
    auto daemon = DaemonProcess::Start(dir_, config, &error, absl::Seconds(30));
    EXPECT_EQ(daemon, nullptr) << "started on an unsafe configuration";
    return error;
  }
  std::string dir_;
  LabPki pki_;
};

TEST_F(AirlockdStartTest, RefusesWorldReadableKey) {
  ASSERT_EQ(::chmod((pki_.dir + "/server.key").c_str(), 0644), 0);
  const std::string error = ExpectRefusal(BaseConfig(dir_, pki_, ModelsYaml(), kAccess));
  EXPECT_THAT(error, HasSubstr("key_file"));
  EXPECT_THAT(error, HasSubstr("0644"));
}

TEST_F(AirlockdStartTest, RefusesPlaintext) {
  std::string config = BaseConfig(dir_, pki_, ModelsYaml(), kAccess);
  config = absl::StrReplaceAll(config, {{"server:\n", "server:\n  plaintext: true\n"}});
  EXPECT_THAT(ExpectRefusal(config), HasSubstr("plaintext"));
}

TEST_F(AirlockdStartTest, RefusesMissingCa) {
  ASSERT_EQ(::unlink((pki_.dir + "/ca.crt").c_str()), 0);
  EXPECT_THAT(ExpectRefusal(BaseConfig(dir_, pki_, ModelsYaml(), kAccess)), HasSubstr("ca.crt"));
}

TEST_F(AirlockdStartTest, RefusesMissingAndExpiredCrl) {
  ASSERT_EQ(::rename((pki_.dir + "/crl.pem").c_str(), (pki_.dir + "/crl.saved").c_str()), 0);
  EXPECT_THAT(ExpectRefusal(BaseConfig(dir_, pki_, ModelsYaml(), kAccess)), HasSubstr("crl.pem"));
  auto ca = auth::PemKeyPair{ReadFileOrDie(pki_.dir + "/ca.crt"), ReadFileOrDie(pki_.dir + "/ca.key")};
  absl::StatusOr<std::string> crl =
      auth::CreateCrl(ca, {}, absl::Now() - absl::Hours(48), absl::Now() - absl::Hours(1), 7);
  ASSERT_TRUE(crl.ok());
  ASSERT_TRUE(auth::WritePublicFile(pki_.dir + "/crl.pem", *crl).ok());
  EXPECT_THAT(ExpectRefusal(BaseConfig(dir_, pki_, ModelsYaml(), kAccess)), HasSubstr("expired"));
}

TEST_F(AirlockdStartTest, CheckConfigValidatesAndExits) {
  const std::string path = dir_ + "/check.yaml";
  {
    std::ofstream out(path);
    out << BaseConfig(dir_, pki_, ModelsYaml(), kAccess);
  }
  CommandResult ok = RunCommand({AIRLOCKD_PATH, "--check-config", path});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("OK"));
  {
    std::ofstream out(path, std::ios::trunc);
    out << BaseConfig(dir_, pki_, ModelsYaml(), kAccess) << "  max_tokens_per_requets: 5\n";
  }
  CommandResult bad = RunCommand({AIRLOCKD_PATH, "--check-config", path});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("max_tokens_per_requets"));
  EXPECT_THAT(bad.err, ::testing::ContainsRegex("check\\.yaml:[0-9]+:[0-9]+"));
}

TEST_F(AirlockdStartTest, CheckConfigRefusesAModelFileThatIsNotGguf) {
  const std::string junk = dir_ + "/junk.gguf";
  {
    std::ofstream out(junk, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>((i * 7919 + 13) & 0xff));
  }
  const std::string path = dir_ + "/check.yaml";
  {
    std::ofstream out(path);
    out << BaseConfig(dir_, pki_,
                      absl::StrCat("  - name: stories\n    path: \"", junk, "\"\n    threads: 1\n",
                                   "  - name: stories-chat\n    path: \"", SharedPath(kStoriesModel),
                                   "\"\n    threads: 1\n"),
                      kAccess);
  }
  CommandResult bad = RunCommand({AIRLOCKD_PATH, "--check-config", path});
  EXPECT_EQ(bad.exit_code, 2) << bad.out;
  EXPECT_THAT(bad.err, HasSubstr("models[0].path"));
  EXPECT_THAT(bad.err, HasSubstr(junk));
}

}  // namespace
}  // namespace airlock::testing

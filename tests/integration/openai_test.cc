// The OpenAI-compatible HTTPS listener end to end, probed as its users and attackers would: the
// real airlockd with `openai:` configured, clients over mutual TLS (cpp-httplib). The same request
// gives the same text as on gRPC; streams carry what the unary reply carries; refusals come in
// OpenAI's error shape with the matching status (401/403/404/400/413/429 with Retry-After); every
// call is recorded under its route; a client without a certificate gets no HTTP at all.
#include <httplib.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "auth/dev_pki.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_harness.h"
#include "tests/support/run_command.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;

// alice may call everything; bob only the gRPC inference service; carol only the OpenAI routes on
// the model "stories" (not "secret"), and her quota is one request a minute.
constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
  - name: bob
    roles: [grpc-only]
  - name: carol
    roles: [openai]
    quota:
      requests_per_minute: 1
  - name: root
    roles: [admin]
roles:
  - name: admin
    methods: ["airlock.v1.Admin/*"]
  - name: user
    methods: ["*"]
    models: ["*"]
  - name: grpc-only
    methods: ["airlock.v1.Inference/*"]
    models: ["*"]
  - name: openai
    methods: ["openai/v1/*"]
    models: ["stories"]
)";

class OpenAiTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    // A refused handshake closes the socket under the client's write: an error, not a SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    SetUpLab(kAccess, {"alice", "bob", "carol", "root"});
    StartDaemon("",
                StoriesModelYaml() + "    chat_template: chatml\n" +
                    absl::StrCat("  - name: secret\n    path: \"", SharedPath(kStoriesModel), "\"\n    threads: 1\n"),
                absl::StrCat("openai:\n  listen: \"127.0.0.1:0\"\n  port_file: \"", dir_, "/openai-port\"\n",
                             ExtraOpenAiYaml(),
                             "metrics:\n  listen: \"127.0.0.1:0\"\n  plaintext: true\n  port_file: \"", dir_,
                             "/metrics-port\"\n"));
    ASSERT_TRUE(PollUntil([&] { return ReadPort() > 0; }, absl::Seconds(10)));
    port_ = ReadPort();
  }

  // More keys of the openai: section, for fixtures that differ only there.
  virtual std::string ExtraOpenAiYaml() const { return ""; }

  int ReadPort() const {
    std::ifstream in(dir_ + "/openai-port");
    int port = 0;
    in >> port;
    return port;
  }

  std::unique_ptr<httplib::SSLClient> Client(const std::string& user) const {
    auto client = user.empty() ? std::make_unique<httplib::SSLClient>("localhost", port_)
                               : std::make_unique<httplib::SSLClient>("localhost", port_, pki_.cert(user), pki_.key(user));
    client->set_ca_cert_path((pki_.dir + "/ca.crt").c_str());
    client->enable_server_certificate_verification(true);
    client->set_connection_timeout(10);
    client->set_read_timeout(60);
    return client;
  }

  httplib::Result Post(const std::string& user, const std::string& path, const std::string& body) const {
    return Client(user)->Post(path.c_str(), body, "application/json");
  }

  static nlohmann::json Json(const httplib::Result& r) { return nlohmann::json::parse(r->body); }

  // The text of a greedy gRPC Chat, for parity.
  std::string GrpcChat(const std::string& content, int max_tokens) const {
    v1::ChatRequest request;
    request.set_model("stories");
    v1::ChatMessage* m = request.add_messages();
    m->set_role("user");
    m->set_content(content);
    request.set_max_tokens(max_tokens);
    request.mutable_sampling()->set_temperature(0);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(60)));
    v1::GenerateResponse response;
    const grpc::Status s =
        v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))->Chat(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.text();
  }

  // Installs the official client (`openai` from the npm registry) beside its script in the test's
  // folder; `script` stays empty when the test was skipped (no node or npm, not under CI).
  void InstallNodeClient(std::string* script) const {
    if (RunCommand({"node", "--version"}).exit_code != 0 || RunCommand({"npm", "--version"}).exit_code != 0) {
      if (RunningInCi()) GTEST_FAIL() << "node and npm are needed for this test (CI=true)";
      GTEST_SKIP() << "node or npm is missing; this test installs the official openai client with npm";
    }
    const std::string npm_dir = dir_ + "/npm";
    // Pinned: the newest openai release that runs on Debian 12's Node.js 20 (7.x needs Node 22), and
    // undici for the client certificate.
    const CommandResult install =
        RunCommand({"npm", "install", "--prefix", npm_dir, "--no-audit", "--no-fund", "--save-exact", "openai@6.30.1",
                    "undici@6.29.1"},
                   absl::Seconds(300));
    if (install.exit_code != 0) {
      if (RunningInCi()) GTEST_FAIL() << "npm install failed (CI=true):\n" << install.err;
      GTEST_SKIP() << "npm install failed (no registry?):\n" << install.err;
    }
    const std::string path = npm_dir + "/openai_node_client.mjs";
    ASSERT_EQ(RunCommand({"cp", absl::StrCat(AIRLOCK_SOURCE_DIR, "/tests/integration/openai_node_client.mjs"), path})
                  .exit_code,
              0);
    *script = path;
  }

  int port_ = 0;
};

std::string ChatBody(const std::string& content, int max_tokens, const std::string& extra = "") {
  return nlohmann::json{{"model", "stories"},
                        {"messages", {{{"role", "user"}, {"content", content}}}},
                        {"max_tokens", max_tokens},
                        {"temperature", 0}}
             .dump() +
         extra;
}

// `body` with `key` set (or replaced) to `value`.
std::string With(std::string body, const std::string& key, const nlohmann::json& value) {
  nlohmann::json j = nlohmann::json::parse(body);
  j[key] = value;
  return j.dump();
}

void ExpectOpenAiError(const httplib::Result& r, int status, const std::string& message_part) {
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, status) << r->body;
  const nlohmann::json j = nlohmann::json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object() && j.contains("error")) << r->body;
  EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr(message_part));
  EXPECT_TRUE(j["error"].contains("type"));
  EXPECT_LT(r->body.size(), 2048u);  // never an unbounded echo
}

TEST_F(OpenAiTest, ChatCompletionMatchesGrpcAndTheAuditRecordNamesTheRoute) {
  const std::string grpc_text = GrpcChat("Tell me a story", 24);
  httplib::Result r = Post("alice", "/v1/chat/completions", ChatBody("Tell me a story", 24));
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("application/json"));
  const nlohmann::json j = Json(r);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "stories");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], grpc_text);
  EXPECT_FALSE(grpc_text.empty());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 24);
  EXPECT_EQ(j["usage"]["total_tokens"], j["usage"]["prompt_tokens"].get<int>() + 24);
  const std::string id = j["id"];
  ASSERT_TRUE(id.starts_with("chatcmpl-")) << id;
  const std::string request_id = id.substr(9);
  EXPECT_EQ(r->get_header_value("X-Request-Id"), request_id);

  StopDaemon();
  const AuditIndex audit = IndexAudit(ExportAudit(dir_ + "/state"));
  ASSERT_TRUE(audit.begins.contains(request_id));
  ASSERT_TRUE(audit.ends.contains(request_id));
  EXPECT_EQ(audit.ends.at(request_id)["method"], "openai/v1/chat/completions");
  EXPECT_EQ(audit.ends.at(request_id)["identity"], "alice");
  EXPECT_EQ(audit.ends.at(request_id)["completion_tokens"], 24);
  EXPECT_TRUE(audit.repeated.empty());
}

TEST_F(OpenAiTest, StreamCarriesTheUnaryTextThenFinishUsageAndDone) {
  const std::string unary = Json(Post("alice", "/v1/chat/completions", ChatBody("Once", 20)))["choices"][0]["message"]
                                ["content"];
  std::string body = With(ChatBody("Once", 20), "stream", true);
  body = With(body, "stream_options", {{"include_usage", true}});
  std::string raw;
  httplib::Result r = Client("alice")->Post(
      "/v1/chat/completions", httplib::Headers{}, body, "application/json");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/event-stream"));
  raw = r->body;
  std::vector<std::string> events;
  for (size_t at = 0; at < raw.size();) {
    const size_t end = raw.find("\n\n", at);
    ASSERT_NE(end, std::string::npos) << "an event without its blank line: " << raw.substr(at);
    const std::string e = raw.substr(at, end - at);
    ASSERT_TRUE(e.starts_with("data: ")) << e;
    events.push_back(e.substr(6));
    at = end + 2;
  }
  ASSERT_GE(events.size(), 4u) << raw;
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::string finish;
  bool saw_role = false, saw_usage = false;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const nlohmann::json j = nlohmann::json::parse(events[i]);
    EXPECT_EQ(j["object"], "chat.completion.chunk");
    if (j["choices"].empty()) {  // the usage chunk, last before [DONE]
      EXPECT_EQ(i + 2, events.size());
      EXPECT_EQ(j["usage"]["completion_tokens"], 20);
      saw_usage = true;
      continue;
    }
    const nlohmann::json& delta = j["choices"][0]["delta"];
    if (delta.contains("role")) saw_role = true;
    if (delta.contains("content")) text += delta["content"].get<std::string>();
    if (!j["choices"][0]["finish_reason"].is_null()) finish = j["choices"][0]["finish_reason"];
  }
  EXPECT_TRUE(saw_role);
  EXPECT_TRUE(saw_usage);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(text, unary);
}

TEST_F(OpenAiTest, CompletionsAndModels) {
  httplib::Result r = Post("alice", "/v1/completions", R"({"model":"stories","prompt":"Once upon a time","temperature":0})");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  ASSERT_EQ(r->status, 200) << r->body;
  const nlohmann::json j = Json(r);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["usage"]["completion_tokens"], 16);  // OpenAI's default max_tokens for completions
  EXPECT_FALSE(j["choices"][0]["text"].get<std::string>().empty());

  httplib::Result models = Client("alice")->Get("/v1/models");
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200) << models->body;
  EXPECT_EQ(Json(models)["data"].size(), 2u);
  EXPECT_EQ(Json(models)["data"][0]["id"], "stories");
  // carol's roles grant "stories" only: "secret" is neither listed nor confirmed to exist.
  httplib::Result carols = Client("carol")->Get("/v1/models");
  ASSERT_TRUE(carols);
  EXPECT_EQ(Json(carols)["data"].size(), 1u) << carols->body;
  ExpectOpenAiError(Client("carol")->Get("/v1/models/secret"), 404, "model");
  httplib::Result one = Client("carol")->Get("/v1/models/stories");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200) << one->body;
  ExpectOpenAiError(Client("alice")->Get("/v1/models/nope"), 404, "model");
}

TEST_F(OpenAiTest, RefusalsComeInOpenAisShapeWithTheRightStatus) {
  // bob's roles grant gRPC only.
  ExpectOpenAiError(Post("bob", "/v1/chat/completions", ChatBody("hi", 4)), 403, "openai/v1/chat/completions");
  ExpectOpenAiError(Client("bob")->Get("/v1/models"), 403, "openai/v1/models");
  // Bad bodies, after admission.
  ExpectOpenAiError(Post("alice", "/v1/chat/completions", "{not json"), 400, "not valid JSON");
  ExpectOpenAiError(Post("alice", "/v1/chat/completions", std::string(100000, '[')), 400, "");
  ExpectOpenAiError(Post("alice", "/v1/chat/completions", With(ChatBody("hi", 4), std::string(20000, 'x'), 1)), 400,
                    "unrecognized request argument");
  ExpectOpenAiError(Post("alice", "/v1/chat/completions", ChatBody("hi", 1 << 30)), 400, "max_tokens");
  ExpectOpenAiError(Post("alice", "/v1/chat/completions", With(ChatBody("hi", 4), "model", "nope")), 404, "nope");
  // Larger than limits.max_request_bytes (1 MiB by default): refused before it is parsed.
  httplib::Result big = Post("alice", "/v1/chat/completions", ChatBody(std::string(2 << 20, 'a'), 4));
  ASSERT_TRUE(big) << httplib::to_string(big.error());
  EXPECT_EQ(big->status, 413);
  ExpectOpenAiError(Client("alice")->Get("/v1/chat/completions"), 405, "POST");
  ExpectOpenAiError(Client("alice")->Get("/v1/nothing"), 404, "route");
  // A response_format the engine cannot honour names the keyword.
  ExpectOpenAiError(
      Post("alice", "/v1/chat/completions",
           With(ChatBody("hi", 4), "response_format",
                {{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", {{"type", "string"}, {"pattern", "a+"}}}}}})),
      400, "pattern");
  // carol's quota: one request a minute; the second gets 429 with Retry-After.
  httplib::Result first = Post("carol", "/v1/chat/completions", ChatBody("hi", 2));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200) << first->body;
  httplib::Result second = Post("carol", "/v1/chat/completions", ChatBody("hi", 2));
  ExpectOpenAiError(second, 429, "");
  ASSERT_TRUE(second);
  int retry_after = 0;
  EXPECT_TRUE(absl::SimpleAtoi(second->get_header_value("Retry-After"), &retry_after)) << second->get_header_value("Retry-After");
  EXPECT_GE(retry_after, 1);
  EXPECT_LE(retry_after, 60);
}

// The text of a streamed chat completion (the deltas joined), or "" with a test failure.
std::string StreamedText(const httplib::Result& r) {
  EXPECT_TRUE(r) << httplib::to_string(r.error());
  if (!r || r->status != 200) return "";
  std::string text;
  for (size_t at = 0; at < r->body.size();) {
    const size_t end = r->body.find("\n\n", at);
    if (end == std::string::npos) break;
    const std::string data = r->body.substr(at + 6, end - at - 6);
    at = end + 2;
    if (data == "[DONE]") return text;
    const nlohmann::json j = nlohmann::json::parse(data);
    if (!j["choices"].empty() && j["choices"][0]["delta"].contains("content")) {
      text += j["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  ADD_FAILURE() << "no [DONE]: " << r->body;
  return text;
}

// Twelve streams at once on one loop thread: each gives exactly what it gives alone (seeded
// sampling, batched with the others in the engine).
TEST_F(OpenAiTest, TwelveConcurrentStreamsEachGiveTheirSoloText) {
  const auto body = [](int i) {
    std::string b = With(ChatBody(absl::StrCat("Story number ", i), 24 + i), "stream", true);
    b = With(b, "temperature", 0.9);
    return With(b, "seed", 100 + i);
  };
  std::vector<std::string> alone;
  for (int i = 0; i < 12; ++i) alone.push_back(StreamedText(Post("alice", "/v1/chat/completions", body(i))));
  std::vector<std::string> together(12);
  std::vector<std::thread> threads;
  for (int i = 0; i < 12; ++i) {
    threads.emplace_back([&, i] { together[i] = StreamedText(Post("alice", "/v1/chat/completions", body(i))); });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 12; ++i) {
    EXPECT_FALSE(alone[i].empty()) << i;
    EXPECT_EQ(together[i], alone[i]) << i;
  }
  if (HasFailure()) ADD_FAILURE() << daemon_->Log();
}

TEST_F(OpenAiTest, AClientWithoutACertificateGetsNoHttp) {
  httplib::Result r = Client("")->Get("/v1/models");
  EXPECT_FALSE(r && r->status > 0) << "answered without a client certificate";
}

TEST_F(OpenAiTest, JsonSchemaOutputParses) {
  const nlohmann::json schema = {{"type", "object"},
                                 {"properties", {{"mood", {{"enum", {"happy", "sad"}}}}, {"ok", {{"type", "boolean"}}}}},
                                 {"required", {"mood", "ok"}}};
  std::string body = With(ChatBody("Mood?", 200), "response_format",
                          {{"type", "json_schema"}, {"json_schema", {{"name", "m"}, {"schema", schema}, {"strict", true}}}});
  body = With(body, "temperature", 1.0);
  body = With(body, "seed", 7);
  httplib::Result r = Post("alice", "/v1/chat/completions", body);
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  ASSERT_EQ(r->status, 200) << r->body;
  const std::string content = Json(r)["choices"][0]["message"]["content"];
  const nlohmann::json parsed = nlohmann::json::parse(content, nullptr, false);
  ASSERT_TRUE(parsed.is_object()) << content;
  EXPECT_TRUE(parsed["mood"] == "happy" || parsed["mood"] == "sad") << content;
  EXPECT_TRUE(parsed["ok"].is_boolean()) << content;
}

// curl, as a developer would try the endpoint: the raw server-sent events, then what a client
// without a certificate and one whose certificate was revoked get (nothing over HTTP: the
// handshake fails), and what a connection opened before the revocation gets (401).
TEST_F(OpenAiTest, CurlSeesSseFramingAndNoCertificateOrARevokedOneGetsNoHttp) {
  if (RunCommand({"curl", "--version"}).exit_code != 0) {
    if (RunningInCi()) GTEST_FAIL() << "curl is needed for this test (CI=true)";
    GTEST_SKIP() << "curl is missing";
  }
  const std::string url = absl::StrCat("https://localhost:", port_, "/v1/chat/completions");
  const auto curl = [&](const std::string& user, const std::string& body) {
    std::vector<std::string> args = {"curl", "-sS", "-N", "-D", "-", "--max-time", "60", "--cacert", pki_.dir + "/ca.crt",
                                     "-H", "Content-Type: application/json", "-d", body, url};
    if (!user.empty()) {
      for (const std::string& a : {std::string("--cert"), pki_.cert(user), std::string("--key"), pki_.key(user)}) {
        args.insert(args.end() - 1, a);
      }
    }
    return RunCommand(args, absl::Seconds(90));
  };
  const std::string stream = With(ChatBody("Once", 10), "stream", true);
  const CommandResult ok = curl("alice", stream);
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  const size_t head_end = ok.out.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos) << ok.out;
  const std::string head = ok.out.substr(0, head_end);
  const std::string events = ok.out.substr(head_end + 4);
  EXPECT_THAT(head, ::testing::StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(head, HasSubstr("Content-Type: text/event-stream"));
  EXPECT_THAT(head, HasSubstr("Transfer-Encoding: chunked"));
  EXPECT_THAT(head, HasSubstr("X-Request-Id: "));
  // Every event is one "data: " line and a blank line; the last is [DONE].
  EXPECT_TRUE(events.ends_with("data: [DONE]\n\n")) << events;
  size_t count = 0;
  for (size_t at = 0; at < events.size(); ++count) {
    ASSERT_EQ(events.compare(at, 6, "data: "), 0) << events.substr(at);
    const size_t end = events.find("\n\n", at);
    ASSERT_NE(end, std::string::npos);
    EXPECT_EQ(events.substr(at, end - at).find('\n'), std::string::npos);  // one line per event
    at = end + 2;
  }
  EXPECT_GE(count, 3u);

  // No certificate: the handshake fails, no HTTP status comes back.
  const CommandResult none = curl("", ChatBody("hi", 2));
  EXPECT_NE(none.exit_code, 0);
  EXPECT_EQ(none.out.find("HTTP/"), std::string::npos) << none.out;

  // eve has a certificate of the site CA and no roles: 403. Her connection stays open while her
  // certificate is revoked (the CRL file rewritten; tls.watch_interval is 1 s): the next call on it
  // is refused with 401, and a new connection fails its handshake.
  pki_.Issue("eve");
  auto open = Client("eve");
  open->set_keep_alive(true);
  httplib::Result before = open->Post("/v1/chat/completions", ChatBody("hi", 2), "application/json");
  ExpectOpenAiError(before, 403, "eve");
  ASSERT_TRUE(auth::Revoke(pki_.dir, ReadFileOrDie(pki_.cert("eve"))).ok());
  ASSERT_TRUE(PollUntil(
      [&] {
        httplib::Result again = open->Post("/v1/chat/completions", ChatBody("hi", 2), "application/json");
        return again && again->status == 401;
      },
      absl::Seconds(15)))
      << daemon_->Log();
  const CommandResult revoked = curl("eve", ChatBody("hi", 2));
  EXPECT_NE(revoked.exit_code, 0);
  EXPECT_EQ(revoked.out.find("HTTP/"), std::string::npos) << revoked.out;
  EXPECT_TRUE(daemon_->WaitForLog("\"listener\":\"openai\"", absl::Seconds(5))) << daemon_->Log();
}

// A client that goes away mid-stream stops its generation: the end record says CANCELLED, with
// fewer tokens than asked for (the stories model writes the whole 400 in well under a second, so the
// cut is the server noticing the closed connection, not the end of the generation).
TEST_F(OpenAiTest, AClientThatLeavesMidStreamStopsItsGeneration) {
  if (RunCommand({"curl", "--version"}).exit_code != 0) {
    if (RunningInCi()) GTEST_FAIL() << "curl is needed for this test (CI=true)";
    GTEST_SKIP() << "curl is missing";
  }
  std::string body = With(ChatBody("Once", 400), "stream", true);
  body = With(body, "temperature", 1.0);
  // `head` takes the headers and the first events, then exits; curl's next write fails and it
  // closes the connection.
  const CommandResult cut = RunCommand(
      {"sh", "-c",
       absl::StrCat("curl -sS -N -D - --cacert '", pki_.dir, "/ca.crt' --cert '", pki_.cert("alice"), "' --key '",
                    pki_.key("alice"), "' -H 'Content-Type: application/json' -d '", body, "' https://localhost:", port_,
                    "/v1/chat/completions | head -c 700")},
      absl::Seconds(60));
  const size_t at = cut.out.find("X-Request-Id: ");
  ASSERT_NE(at, std::string::npos) << cut.out << cut.err;
  const std::string request_id = cut.out.substr(at + 14, 32);
  ASSERT_TRUE(PollUntil([&] { return daemon_->Log().find(request_id + "\"") != std::string::npos &&
                                     daemon_->Log().find("\"code\":\"CANCELLED\"") != std::string::npos; },
                        absl::Seconds(20)))
      << daemon_->Log();
  StopDaemon();
  const AuditIndex audit = IndexAudit(ExportAudit(dir_ + "/state"));
  ASSERT_TRUE(audit.ends.contains(request_id));
  EXPECT_EQ(audit.ends.at(request_id)["status_code"], 1);  // CANCELLED
  EXPECT_LT(audit.ends.at(request_id)["completion_tokens"].get<int>(), 400);
}

// SIGTERM while a stream runs: the stream finishes within server.drain_timeout (5 s here) with
// its last events, as gRPC calls do, and the daemon then exits cleanly.
TEST_F(OpenAiTest, ADrainLetsARunningStreamFinish) {
  std::string body = With(ChatBody("Once", 480), "stream", true);
  body = With(body, "temperature", 1.0);
  std::atomic<bool> started{false};
  std::string received;
  bool sent = false;
  std::thread stream([&] {
    auto client = Client("alice");
    httplib::Request request;
    request.method = "POST";
    request.path = "/v1/chat/completions";
    request.body = body;
    request.set_header("Content-Type", "application/json");
    request.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
      received.append(data, length);
      started.store(true);
      return true;
    };
    httplib::Response response;
    httplib::Error error = httplib::Error::Success;
    sent = client->send(request, response, error);
  });
  ASSERT_TRUE(PollUntil([&] { return started.load(); }, absl::Seconds(30)));
  daemon_->Signal(SIGTERM);
  stream.join();
  EXPECT_TRUE(sent);
  EXPECT_TRUE(received.ends_with("data: [DONE]\n\n")) << received.substr(received.size() > 600 ? received.size() - 600 : 0);
  EXPECT_EQ(received.find("\"error\""), std::string::npos) << received;
  EXPECT_EQ(daemon_->WaitExit(absl::Seconds(30)), 0) << daemon_->Log();
  // The stream was still running when the drain began (its call line comes after "draining").
  const std::string log = daemon_->Log();
  const size_t draining = log.find("\"msg\":\"draining\"");
  const size_t call = log.find("\"method\":\"openai/v1/chat/completions\"");
  ASSERT_NE(draining, std::string::npos) << log;
  ASSERT_NE(call, std::string::npos) << log;
  EXPECT_LT(draining, call) << log;
}

// The route is the method in the metrics, as in the audit records: a served chat and a refused one
// are counted under openai/v1/chat/completions with their codes.
TEST_F(OpenAiTest, MetricsCountCallsUnderTheRoute) {
  ASSERT_EQ(Post("alice", "/v1/chat/completions", ChatBody("hi", 2))->status, 200);
  ASSERT_EQ(Post("bob", "/v1/chat/completions", ChatBody("hi", 2))->status, 403);
  std::ifstream in(dir_ + "/metrics-port");
  int metrics_port = 0;
  ASSERT_TRUE(in >> metrics_port);
  httplib::Client plain("127.0.0.1", metrics_port);
  httplib::Result scraped = plain.Get("/metrics");
  ASSERT_TRUE(scraped);
  ASSERT_EQ(scraped->status, 200);
  const auto counted = [&](const std::string& code) {
    for (size_t at = 0; at < scraped->body.size();) {
      const size_t end = scraped->body.find('\n', at);
      const std::string line = scraped->body.substr(at, end - at);
      at = end == std::string::npos ? scraped->body.size() : end + 1;
      if (line.starts_with("airlock_requests_total{") &&
          line.find("method=\"openai/v1/chat/completions\"") != std::string::npos &&
          line.find("code=\"" + code + "\"") != std::string::npos) {
        return line.substr(line.rfind(' ') + 1);
      }
    }
    return std::string("absent");
  };
  EXPECT_EQ(counted("OK"), "1") << scraped->body;
  EXPECT_EQ(counted("PERMISSION_DENIED"), "1") << scraped->body;
}

// alice's usage as the Admin API reports it: prompt and completion tokens of the day.
std::pair<uint64_t, uint64_t> DayUsage(const CommandResult& shown) {
  const nlohmann::json j = nlohmann::json::parse(shown.out, nullptr, false);
  if (!j.is_object()) {
    ADD_FAILURE() << shown.out << shown.err;
    return {0, 0};
  }
  return {std::stoull(j["usage"]["day_prompt_tokens"].get<std::string>()),
          std::stoull(j["usage"]["day_completion_tokens"].get<std::string>())};
}

// The same seeded request over HTTP and over gRPC (with OpenAI's sampling defaults spelled out):
// the same text, the same quota charge, and end records that differ only in the route, the
// request id, the peer and the time.
TEST_F(OpenAiTest, TheSameSeededCallOverHttpAndGrpcGivesTheSameTokensRecordAndCharge) {
  const auto usage = [&] { return DayUsage(Ctl("root", {"quota", "show", "alice", "--json"})); };
  const auto before = usage();
  std::string body = With(ChatBody("Tell me a story", 30), "temperature", 0.8);
  body = With(body, "seed", 42);
  httplib::Result r = Post("alice", "/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const nlohmann::json http = Json(r);
  const std::string http_id = http["id"].get<std::string>().substr(9);
  const auto after_http = usage();

  v1::ChatRequest request;
  request.set_model("stories");
  v1::ChatMessage* m = request.add_messages();
  m->set_role("user");
  m->set_content("Tell me a story");
  request.set_max_tokens(30);
  v1::SamplingParameters* sampling = request.mutable_sampling();
  sampling->set_temperature(0.8f);
  sampling->set_seed(42);
  sampling->set_top_p(1);
  sampling->set_top_k(0);
  sampling->set_min_p(0);
  sampling->set_repeat_penalty(1);
  sampling->set_repeat_last_n(-1);
  sampling->set_presence_penalty(0);
  sampling->set_frequency_penalty(0);
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(60)));
  v1::GenerateResponse grpc_response;
  const grpc::Status s =
      v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))->Chat(&context, request, &grpc_response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const auto after_grpc = usage();

  EXPECT_EQ(http["choices"][0]["message"]["content"], grpc_response.text());
  EXPECT_EQ(http["usage"]["completion_tokens"], grpc_response.usage().completion_tokens());
  EXPECT_EQ(http["usage"]["prompt_tokens"], grpc_response.usage().prompt_tokens());
  // The same charge: what each call added to alice's day.
  EXPECT_EQ(after_http.first - before.first, after_grpc.first - after_http.first);
  EXPECT_EQ(after_http.second - before.second, after_grpc.second - after_http.second);
  EXPECT_EQ(after_http.second - before.second, grpc_response.usage().completion_tokens());

  StopDaemon();
  const AuditIndex audit = IndexAudit(ExportAudit(dir_ + "/state"));
  ASSERT_TRUE(audit.ends.contains(http_id));
  ASSERT_TRUE(audit.ends.contains(grpc_response.request_id()));
  for (const auto* phase : {&audit.begins, &audit.ends}) {
    nlohmann::json a = phase->at(http_id), b = phase->at(grpc_response.request_id());
    EXPECT_EQ(a["method"], "openai/v1/chat/completions");
    EXPECT_EQ(b["method"], "airlock.v1.Inference/Chat");
    for (const char* differs : {"method", "request_id", "peer", "time", "sequence", "latency_micros", "prev_hash",
                                "hash", "stored"}) {
      a.erase(differs);
      b.erase(differs);
    }
    EXPECT_EQ(a, b);
  }
}

// The official OpenAI Node.js client (`openai` from the npm registry, installed by the test into its
// own folder), over mutual TLS: listing, chat unary and streamed with usage, completions, a JSON
// schema, and its error types for 404 and 400. Its HTTP stack (undici) keeps connections alive and
// opens new ones that try to resume the TLS session, which once broke every second request.
TEST_F(OpenAiTest, TheOfficialNodeClientWorks) {
  std::string script;
  ASSERT_NO_FATAL_FAILURE(InstallNodeClient(&script));
  if (script.empty()) return;  // skipped
  const CommandResult run =
      RunCommand({"node", script, std::to_string(port_), pki_.dir, "alice"}, absl::Seconds(120));
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const nlohmann::json r = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_TRUE(r.is_object()) << run.out << run.err;
  for (const char* step : {"models", "chat", "stream", "completion", "structured"}) {
    EXPECT_TRUE(r[step].contains("ok")) << step << ": " << r[step].dump();
  }
  EXPECT_EQ(r["models"]["ok"], nlohmann::json::array({"stories", "secret"}));
  const std::string grpc_text = GrpcChat("Tell me a story", 24);
  EXPECT_EQ(r["chat"]["ok"]["text"], grpc_text);
  EXPECT_EQ(r["chat"]["ok"]["finish"], "length");
  EXPECT_EQ(r["chat"]["ok"]["usage"]["completion_tokens"], 24);
  EXPECT_EQ(r["stream"]["ok"]["text"], grpc_text);
  EXPECT_EQ(r["stream"]["ok"]["usage"]["completion_tokens"], 24);
  EXPECT_EQ(r["completion"]["ok"]["usage"]["completion_tokens"], 12);
  const nlohmann::json structured = nlohmann::json::parse(r["structured"].value("ok", ""), nullptr, false);
  EXPECT_TRUE(structured.is_object() && structured.contains("mood") && structured["ok"].is_boolean())
      << r["structured"].dump();
  EXPECT_EQ(r["not_found"]["error"]["status"], 404) << r["not_found"].dump();
  EXPECT_EQ(r["bad_request"]["error"]["status"], 400) << r["bad_request"].dump();
  EXPECT_THAT(r["bad_request"]["error"]["message"].get<std::string>(), HasSubstr("max_tokens"));

  // carol: a model her roles do not grant, then her quota of one request a minute.
  const CommandResult refusals =
      RunCommand({"node", script, std::to_string(port_), pki_.dir, "carol", "refusals"}, absl::Seconds(120));
  ASSERT_EQ(refusals.exit_code, 0) << refusals.out << refusals.err;
  const nlohmann::json f = nlohmann::json::parse(refusals.out, nullptr, false);
  ASSERT_TRUE(f.is_object()) << refusals.out;
  EXPECT_EQ(f["forbidden"]["error"]["status"], 403) << f.dump();
  EXPECT_EQ(f["forbidden"]["error"]["type"], "permission_error") << f.dump();
  EXPECT_TRUE(f["first"].contains("ok")) << f.dump();
  EXPECT_EQ(f["second"]["error"]["status"], 429) << f.dump();
  EXPECT_THAT(f["second"]["error"]["message"].get<std::string>(), HasSubstr("per-minute request limit")) << f.dump();
}

}  // namespace
}  // namespace airlock::testing

namespace airlock::testing {
namespace {

// The same daemon with openai.api_keys on: carol's tool has no certificate, only a key.
class OpenAiApiKeyTest : public OpenAiTest {
 protected:
  std::string ExtraOpenAiYaml() const override { return "  api_keys: true\n"; }

  httplib::Result PostWithKey(const std::string& key, const std::string& body, const std::string& user = "") const {
    auto client = Client(user);
    if (!key.empty()) client->set_bearer_token_auth(key.c_str());
    return client->Post("/v1/chat/completions", body, "application/json");
  }

  // The records of the stopped daemon's store, in order.
  std::vector<nlohmann::json> Records() const {
    std::vector<nlohmann::json> out;
    for (nlohmann::json& line : ExportAudit(dir_ + "/state")) {
      if (line.value("type", "") == "record") out.push_back(std::move(line));
    }
    return out;
  }
};

TEST_F(OpenAiApiKeyTest, AKeyActsAsItsUserWithItsRolesQuotaAndAuditUntilRevoked) {
  // Only an administrator issues keys, for configured users only.
  CommandResult r = Ctl("alice", {"apikey", "create", "--user", "carol"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  r = Ctl("root", {"apikey", "create", "--user", "mallory"});
  EXPECT_EQ(r.exit_code, 6) << r.err;
  EXPECT_THAT(r.err, HasSubstr("\"mallory\" is not a configured user"));
  r = Ctl("root", {"apikey", "create", "--user", "carol", "--expires", "yesterday"});
  EXPECT_EQ(r.exit_code, 1) << r.err;

  r = Ctl("root", {"apikey", "create", "--user", "carol", "--label", "wiki-bot", "--expires", "30d"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string key(absl::StripAsciiWhitespace(r.out));
  ASSERT_TRUE(key.starts_with("alk_")) << r.out;
  const std::string id = key.substr(4, 16);
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat("API key ", id, " for carol, expires ")));

  // No certificate, the key: carol, on the model her role grants. Her second call within the
  // minute meets her quota (one request a minute); "secret" is not hers.
  httplib::Result ok = PostWithKey(key, ChatBody("Once", 8));
  ASSERT_TRUE(ok) << httplib::to_string(ok.error());
  ASSERT_EQ(ok->status, 200) << ok->body;
  const std::string request_id = ok->get_header_value("X-Request-Id");
  httplib::Result second = PostWithKey(key, ChatBody("Once", 8));
  if (second && second->status == 200) second = PostWithKey(key, ChatBody("Once", 8));  // the minute turned
  ExpectOpenAiError(second, 429, "per-minute request limit of 1");
  ExpectOpenAiError(PostWithKey(key, With(ChatBody("Once", 8), "model", "secret")), 403, "carol");

  // No credential, or a wrong one: 401 in OpenAI's shape, nothing of the credential echoed.
  ExpectOpenAiError(PostWithKey("", ChatBody("Once", 8)), 401, "no client certificate and no API key");
  std::string wrong = key;
  wrong[30] = wrong[30] == 'x' ? 'y' : 'x';
  httplib::Result refused = PostWithKey(wrong, ChatBody("Once", 8));
  ExpectOpenAiError(refused, 401, "API key not recognised");
  EXPECT_EQ(refused->body.find(wrong.substr(21)), std::string::npos);
  ExpectOpenAiError(PostWithKey("sk-unused", ChatBody("Once", 8)), 401, "API key malformed");
  // alice's certificate with carol's key: refused; with a bearer that is no key: alice.
  ExpectOpenAiError(PostWithKey(key, ChatBody("Once", 8), "alice"), 401, "another identity");
  httplib::Result alice = PostWithKey("sk-unused", ChatBody("Once", 8), "alice");
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->status, 200) << alice->body;

  // A certificate is optional now, but one that is presented is still verified: carol's good key
  // does not carry a certificate of another CA through the handshake.
  LabPki other = MakeLabPki(dir_ + "/other-pki");
  other.Issue("carol");
  httplib::SSLClient foreign("localhost", port_, other.cert("carol"), other.key("carol"));
  foreign.set_ca_cert_path((pki_.dir + "/ca.crt").c_str());
  foreign.enable_server_certificate_verification(true);
  foreign.set_bearer_token_auth(key.c_str());
  foreign.set_connection_timeout(10);
  foreign.set_read_timeout(30);
  httplib::Result foreign_result = foreign.Get("/v1/models");
  EXPECT_FALSE(foreign_result) << "no HTTP expected, got " << foreign_result->status;

  r = Ctl("root", {"apikey", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::ContainsRegex(absl::StrCat(id, " +carol +.* +root +active +wiki-bot")));
  EXPECT_EQ(r.out.find(key.substr(21)), std::string::npos);  // no secret, ever

  // Revoked: the very next call is refused (curl, as a tool would call).
  r = Ctl("root", {"apikey", "revoke", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("revoked API key ", id, " of carol")));
  if (RunCommand({"curl", "--version"}).exit_code == 0) {
    const CommandResult curl = RunCommand(
        {"curl", "-sS", "-D", "-", "--max-time", "30", "--cacert", pki_.dir + "/ca.crt", "-H",
         "Content-Type: application/json", "-H", "Authorization: Bearer " + key, "-d", ChatBody("Once", 8),
         absl::StrCat("https://localhost:", port_, "/v1/chat/completions")},
        absl::Seconds(60));
    ASSERT_EQ(curl.exit_code, 0) << curl.err;
    EXPECT_THAT(curl.out, ::testing::StartsWith("HTTP/1.1 401"));
    EXPECT_THAT(curl.out, HasSubstr(absl::StrCat("API key ", id, " was revoked")));
  } else if (RunningInCi()) {
    GTEST_FAIL() << "curl is needed for this test (CI=true)";
  }
  ExpectOpenAiError(PostWithKey(key, ChatBody("Once", 8)), 401, "was revoked");
  r = Ctl("root", {"apikey", "list", "--user", "carol", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["revoked_by"], "root");

  // The audit log: the issue names the key; the call and the refusals are carol's, by the key.
  StopDaemon();
  bool issued = false, used = false, revoked_use = false;
  for (const nlohmann::json& record : Records()) {
    if (record["method"] == "airlock.v1.Admin/CreateApiKey" && record["phase"] == "admin" &&
        record["identity"] == "root" &&
        record["sampling"].get<std::string>().find(absl::StrCat("\"api_key_id\":\"", id, "\"")) != std::string::npos) {
      issued = true;
      EXPECT_EQ(record["sampling"].get<std::string>().find("alk_"), std::string::npos);
    }
    if (record["request_id"] == request_id && record["phase"] == "end") {
      used = true;
      EXPECT_EQ(record["identity"], "carol");
      EXPECT_EQ(record["subject"], "API key " + id);
      EXPECT_EQ(record["method"], "openai/v1/chat/completions");
      EXPECT_EQ(record["status_code"], 0);
    }
    if (record["identity"] == "carol" && record["decision"] == "unauthenticated") {
      revoked_use = true;
      EXPECT_EQ(record["subject"], "API key " + id);
    }
  }
  EXPECT_TRUE(issued);
  EXPECT_TRUE(used);
  EXPECT_TRUE(revoked_use);
}

// The official Node client as a tool without a certificate would run it: the key as its apiKey.
TEST_F(OpenAiApiKeyTest, TheOfficialNodeClientWorksWithAKeyAlone) {
  std::string script;
  ASSERT_NO_FATAL_FAILURE(InstallNodeClient(&script));
  if (script.empty()) return;  // skipped
  const CommandResult created = Ctl("root", {"apikey", "create", "--user", "alice", "--expires", "1h"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string key(absl::StripAsciiWhitespace(created.out));
  const CommandResult run = RunCommand({"node", script, std::to_string(port_), pki_.dir, "key=" + key}, absl::Seconds(120));
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const nlohmann::json r = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_TRUE(r.is_object()) << run.out << run.err;
  for (const char* step : {"models", "chat", "stream", "completion", "structured"}) {
    EXPECT_TRUE(r[step].contains("ok")) << step << ": " << r[step].dump();
  }
  const std::string grpc_text = GrpcChat("Tell me a story", 24);
  EXPECT_EQ(r["chat"]["ok"]["text"], grpc_text);
  EXPECT_EQ(r["stream"]["ok"]["text"], grpc_text);

  // A revoked key: the client raises OpenAI's authentication error.
  ASSERT_EQ(Ctl("root", {"apikey", "revoke", key.substr(4, 16)}).exit_code, 0);
  const CommandResult refused =
      RunCommand({"node", script, std::to_string(port_), pki_.dir, "key=" + key, "refusals"}, absl::Seconds(120));
  ASSERT_EQ(refused.exit_code, 0) << refused.out << refused.err;
  const nlohmann::json f = nlohmann::json::parse(refused.out, nullptr, false);
  ASSERT_TRUE(f.is_object()) << refused.out;
  EXPECT_EQ(f["first"]["error"]["status"], 401) << f.dump();
  EXPECT_THAT(f["first"]["error"]["message"].get<std::string>(), HasSubstr("was revoked")) << f.dump();
}

TEST_F(OpenAiTest, WithApiKeysOffTheAdminCallsSaySoAndABearerIsNoCredential) {
  const CommandResult r = Ctl("root", {"apikey", "list"});
  EXPECT_EQ(r.exit_code, 6) << r.err;
  EXPECT_THAT(r.err, HasSubstr("API keys off (openai.api_keys)"));
  // Without a certificate there is no HTTP at all, bearer or not.
  auto client = Client("");
  client->set_bearer_token_auth("alk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
  EXPECT_FALSE(client->Post("/v1/chat/completions", ChatBody("Once", 8), "application/json"));
}

}  // namespace
}  // namespace airlock::testing

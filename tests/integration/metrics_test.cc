// End-to-end tests of the metrics endpoint against the real airlockd: HTTPS that only a client
// certificate from the site's CA can scrape; the counters say what was done; label values stay
// bounded; /healthz and /readyz; plain HTTP on loopback when configured so.
#include <signal.h>

#include <csignal>
#include <fstream>
#include <string>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "auth/dev_pki.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace v1 = ::airlock::v1;

constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
)";

class MetricsTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    // A refused handshake closes the socket under the client: a write must fail with EPIPE,
    // not kill the test process (httplib's client does not ignore SIGPIPE itself).
    std::signal(SIGPIPE, SIG_IGN);
    SetUpLab(kAccess, {"alice", "prometheus"});
  }
  void StartWithMetrics(const std::string& metrics_yaml) {
    ASSERT_NO_FATAL_FAILURE(StartDaemon("", "", metrics_yaml));
    std::ifstream in(dir_ + "/metrics-port");
    ASSERT_TRUE(in >> metrics_port_) << "no metrics port file; log:\n" << daemon_->Log();
  }
  // GET `path` over HTTPS with `cert`/`key` ("" : no client certificate), verifying the server.
  httplib::Result Get(const std::string& path, const std::string& cert, const std::string& key) {
    httplib::SSLClient client("localhost", metrics_port_, cert, key);
    client.set_ca_cert_path((pki_.dir + "/ca.crt").c_str());
    client.enable_server_certificate_verification(true);
    client.set_connection_timeout(10);
    client.set_read_timeout(10);
    return client.Get(path.c_str());
  }
  httplib::Result Scrape(const std::string& path = "/metrics") {
    return Get(path, pki_.cert("prometheus"), pki_.key("prometheus"));
  }
  grpc::Status Generate(const std::string& model, v1::GenerateResponse* response, const std::string& user = "alice") {
    v1::GenerateRequest r;
    r.set_model(model);
    r.set_prompt("Once");
    r.set_max_tokens(4);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    return v1::Inference::NewStub(Connect(daemon_->port(), pki_, user))->Generate(&context, r, response);
  }

  int metrics_port_ = 0;
};

std::string MetricsYaml(const std::string& dir, const std::string& extra = "") {
  return absl::StrCat("metrics:\n  listen: \"127.0.0.1:0\"\n  port_file: \"", dir, "/metrics-port\"\n", extra);
}

TEST_F(MetricsTest, OnlyAClientCertificateFromTheSiteCaCanScrape) {
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(MetricsYaml(dir_)));
  httplib::Result ok = Scrape();
  ASSERT_TRUE(ok) << httplib::to_string(ok.error());
  EXPECT_EQ(ok->status, 200);
  EXPECT_THAT(ok->body, HasSubstr("airlock_build_info{version=\"" AIRLOCK_TEST_VERSION "\"} 1"));
  EXPECT_THAT(ok->get_header_value("Content-Type"), HasSubstr("text/plain; version=0.0.4"));

  // No certificate, a certificate from another CA, plain HTTP: refused before any HTTP is served.
  httplib::Result anonymous = Get("/metrics", "", "");
  EXPECT_FALSE(anonymous && anonymous->status == 200);
  LabPki other = MakeLabPki(dir_ + "/other-pki");
  other.Issue("prometheus");
  httplib::Result foreign = Get("/metrics", other.cert("prometheus"), other.key("prometheus"));
  EXPECT_FALSE(foreign && foreign->status == 200);
  httplib::Client plain("127.0.0.1", metrics_port_);
  plain.set_read_timeout(10);
  httplib::Result http = plain.Get("/metrics");
  EXPECT_FALSE(http && http->status == 200);

  EXPECT_EQ(Scrape("/healthz")->status, 200);
  httplib::Result ready = Scrape("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "ready\n");
  EXPECT_EQ(Scrape("/nothing")->status, 404);
}

TEST_F(MetricsTest, CountersSayWhatWasDoneWithBoundedLabels) {
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(MetricsYaml(dir_)));
  uint64_t prompt = 0, generated = 0;
  for (int i = 0; i < 2; ++i) {
    v1::GenerateResponse response;
    const grpc::Status s = Generate("stories", &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    prompt += response.usage().prompt_tokens();
    generated += response.usage().completion_tokens();
  }
  // A model nobody configured: its name must not become a label value.
  v1::GenerateResponse response;
  EXPECT_FALSE(Generate("no-such-model-7f3a", &response).ok());
  // A certificate of the site CA whose identity is not a configured user: refused at admission.
  EXPECT_EQ(Generate("stories", &response, "prometheus").error_code(), grpc::StatusCode::PERMISSION_DENIED);

  httplib::Result r = Scrape();
  ASSERT_TRUE(r);
  const std::string& text = r->body;
  EXPECT_THAT(text, HasSubstr("airlock_requests_total{code=\"OK\",method=\"airlock.v1.Inference/Generate\","
                              "model=\"stories\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("method=\"airlock.v1.Inference/Generate\",model=\"\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("no-such-model")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("airlock_prompt_tokens_total{model=\"stories\"} ", prompt, "\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("airlock_generation_tokens_total{model=\"stories\"} ", generated, "\n")));
  EXPECT_THAT(text, HasSubstr("airlock_request_duration_seconds_count{method=\"airlock.v1.Inference/Generate\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("airlock_request_queue_seconds_count{model=\"stories\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("airlock_requests_waiting{model=\"stories\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_requests_running{model=\"stories\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_requests_total{code=\"PERMISSION_DENIED\",method=\"airlock.v1.Inference/"
                              "Generate\",model=\"stories\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_auth_failures_total{reason=\"not_permitted\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_auth_failures_total{reason=\"unauthenticated\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_audit_up 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_audit_chain_head_sequence "));
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
}

TEST_F(MetricsTest, ARevokedScraperIsRefusedOnceTheCrlIsReloaded) {
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(MetricsYaml(dir_)));
  ASSERT_EQ(Scrape()->status, 200);
  // The listener checks scrapers with the daemon's revocation checker, which SIGHUP reloads.
  ASSERT_TRUE(auth::Revoke(pki_.dir, ReadFileOrDie(pki_.cert("prometheus"))).ok());
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitForLog("configuration reloaded", absl::Seconds(10))) << daemon_->Log();
  httplib::Result revoked = Scrape();
  EXPECT_FALSE(revoked && revoked->status == 200);
  EXPECT_TRUE(daemon_->WaitForLog("TLS handshake refused", absl::Seconds(5))) << daemon_->Log();
  httplib::Result other = Get("/metrics", pki_.cert("alice"), pki_.key("alice"));
  ASSERT_TRUE(other) << httplib::to_string(other.error());
  EXPECT_THAT(other->body, HasSubstr("airlock_auth_failures_total{reason=\"certificate_refused\"} 1\n"));
}

TEST_F(MetricsTest, PlainHttpOnLoopbackWhenConfigured) {
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(MetricsYaml(dir_, "  plaintext: true\n")));
  httplib::Client plain("127.0.0.1", metrics_port_);
  plain.set_read_timeout(10);
  httplib::Result r = plain.Get("/metrics");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("airlock_build_info"));
  EXPECT_EQ(plain.Get("/readyz")->status, 200);
}

}  // namespace
}  // namespace airlock::testing

// End-to-end tests of the metrics endpoint against the real airlockd: HTTPS that only a client
// certificate from the site's CA can scrape; the counters say what was done; label values stay
// bounded; /healthz and /readyz; plain HTTP on loopback when configured so.
#include <signal.h>

#include <csignal>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <string>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "auth/dev_pki.h"
#include "auth/openssl_util.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "nlohmann/json.hpp"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace v1 = ::airlock::v1;

// alice may generate; bob may only list models; carol's daily budget is smaller than one request.
constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
  - name: bob
    roles: [lister]
  - name: carol
    roles: [user]
    quota:
      tokens_per_day: 3
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
  - name: lister
    methods: ["airlock.v1.Inference/ListModels"]
)";

class MetricsTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    // A refused handshake closes the socket under the client: a write must fail with EPIPE,
    // not kill the test process (httplib's client does not ignore SIGPIPE itself).
    std::signal(SIGPIPE, SIG_IGN);
    SetUpLab(kAccess, {"alice", "bob", "carol", "prometheus", "monitor"});
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
std::string HttpsMetricsYaml(const std::string& dir) {
  return MetricsYaml(dir, "  scrapers: [prometheus, monitor]\n");
}

TEST_F(MetricsTest, OnlyAClientCertificateFromTheSiteCaCanScrape) {
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(HttpsMetricsYaml(dir_)));
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

  // A certificate of the site CA whose identity is not in metrics.scrapers: refused, logged, counted.
  httplib::Result alice = Get("/metrics", pki_.cert("alice"), pki_.key("alice"));
  EXPECT_FALSE(alice && alice->status == 200);
  EXPECT_TRUE(daemon_->WaitForLog("metrics scrape refused", absl::Seconds(5))) << daemon_->Log();
  EXPECT_THAT(Scrape()->body, HasSubstr("airlock_auth_failures_total{reason=\"not_permitted\"} 1\n"));
  // metrics.scrapers is reloaded by SIGHUP.
  {
    std::string config = ReadFileOrDie(daemon_->config_path());
    const std::string from = "scrapers: [prometheus, monitor]";
    ASSERT_NE(config.find(from), std::string::npos) << config;
    config.replace(config.find(from), from.size(), "scrapers: [prometheus, monitor, alice]");
    std::ofstream(daemon_->config_path(), std::ios::trunc) << config;
  }
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitForLog("configuration reloaded", absl::Seconds(10))) << daemon_->Log();
  alice = Get("/metrics", pki_.cert("alice"), pki_.key("alice"));
  ASSERT_TRUE(alice) << httplib::to_string(alice.error());
  EXPECT_EQ(alice->status, 200);

  EXPECT_EQ(Scrape("/healthz")->status, 200);
  httplib::Result ready = Scrape("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "ready\n");
  EXPECT_EQ(Scrape("/nothing")->status, 404);
}

TEST_F(MetricsTest, CountersSayWhatWasDoneWithBoundedLabels) {
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(HttpsMetricsYaml(dir_)));
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
  // Idle now: nothing in the engine, nothing refused for a full queue; loaded, with its load time.
  EXPECT_THAT(text, HasSubstr("airlock_batch_size{model=\"stories\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_batch_tokens{model=\"stories\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_engine_sequences_waiting{model=\"stories\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_usage_ratio{model=\"stories\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_blocks{model=\"stories\",state=\"used\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_block_tokens{model=\"stories\"} 16\n"));
  EXPECT_THAT(text, HasSubstr("airlock_preemptions_total{model=\"stories\"} 0\n"));
  // Two calls of one prompt: the second found the first's prompt blocks cached (after they ended).
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_blocks{model=\"stories\",state=\"total\"} "));
  EXPECT_THAT(text, HasSubstr("airlock_kv_cache_blocks{model=\"stories\",state=\"cached\"} "));
  EXPECT_THAT(text, HasSubstr("airlock_prefix_cache_query_tokens_total{model=\"stories\"} "));
  EXPECT_THAT(text, HasSubstr("airlock_engine_steps_total{model=\"stories\"} "));
  EXPECT_THAT(text, Not(HasSubstr("airlock_engine_steps_total{model=\"stories\"} 0\n")));
  EXPECT_THAT(text, HasSubstr("airlock_queue_refusals_total{model=\"stories\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_model_state{model=\"stories\",state=\"loaded\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_model_state{model=\"stories\",state=\"loading\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_model_load_seconds{model=\"stories\"} "));
  EXPECT_THAT(text, HasSubstr("airlock_time_to_first_token_seconds_count{model=\"stories\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("airlock_audit_write_failures_total 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_requests_total{code=\"PERMISSION_DENIED\",method=\"airlock.v1.Inference/"
                              "Generate\",model=\"stories\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_auth_failures_total{reason=\"not_permitted\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_auth_failures_total{reason=\"unauthenticated\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("airlock_audit_up 1\n"));
  EXPECT_THAT(text, HasSubstr("airlock_audit_chain_head_sequence "));
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
}

TEST_F(MetricsTest, ARevokedScraperIsRefusedOnceTheCrlIsReloaded) {
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(HttpsMetricsYaml(dir_)));
  ASSERT_EQ(Scrape()->status, 200);
  // The listener checks scrapers with the daemon's revocation checker, which SIGHUP reloads.
  ASSERT_TRUE(auth::Revoke(pki_.dir, ReadFileOrDie(pki_.cert("prometheus"))).ok());
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitForLog("configuration reloaded", absl::Seconds(10))) << daemon_->Log();
  httplib::Result revoked = Scrape();
  EXPECT_FALSE(revoked && revoked->status == 200);
  EXPECT_TRUE(daemon_->WaitForLog("TLS handshake refused", absl::Seconds(5))) << daemon_->Log();
  httplib::Result other = Get("/metrics", pki_.cert("monitor"), pki_.key("monitor"));
  ASSERT_TRUE(other) << httplib::to_string(other.error());
  EXPECT_THAT(other->body, HasSubstr("airlock_auth_failures_total{reason=\"certificate_refused\"} 1\n"));
}

// The metrics listener's own certificate is rotated like the gRPC listener's: new files are
// served from the next handshake (here at SIGHUP; also every tls.watch_interval), a set that does
// not load is refused with the reason while the current one stays, and the expiry gauge follows.
TEST_F(MetricsTest, ARotatedMetricsCertificateIsServedAndABrokenOneIsRefused) {
  const std::string cert = dir_ + "/metrics.crt";
  const std::string key = dir_ + "/metrics.key";
  ASSERT_TRUE(auth::WritePublicFile(cert, ReadFileOrDie(pki_.dir + "/server.crt")).ok());
  ASSERT_TRUE(auth::WritePrivateFile(key, ReadFileOrDie(pki_.dir + "/server.key")).ok());
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(
      MetricsYaml(dir_, absl::StrCat("  scrapers: [prometheus]\n  cert_file: \"", cert, "\"\n  key_file: \"", key, "\"\n"))));
  // Only a client that trusts the CA of the certificate being served connects.
  const auto scrape_trusting = [&](const std::string& ca_file) {
    httplib::SSLClient client("localhost", metrics_port_, pki_.cert("prometheus"), pki_.key("prometheus"));
    client.set_ca_cert_path(ca_file.c_str());
    client.enable_server_certificate_verification(true);
    client.set_connection_timeout(10);
    client.set_read_timeout(10);
    return client.Get("/metrics");
  };
  const std::string old_ca = pki_.dir + "/ca.crt";
  ASSERT_TRUE(scrape_trusting(old_ca));

  // The site renews the metrics certificate, from another CA and for 7 days, so both show.
  absl::StatusOr<auth::PemKeyPair> new_ca = auth::CreateCertificateAuthority("Rotation CA", absl::Hours(24 * 30));
  ASSERT_TRUE(new_ca.ok()) << new_ca.status();
  auth::CertificateSpec spec;
  spec.common_name = "airlockd";
  spec.dns_names = {"localhost"};
  spec.ip_addresses = {"127.0.0.1"};
  spec.validity = absl::Hours(24 * 7);
  spec.server = true;
  absl::StatusOr<auth::PemKeyPair> renewed = auth::IssueCertificate(*new_ca, spec);
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  const std::string new_ca_file = dir_ + "/rotation-ca.crt";
  ASSERT_TRUE(auth::WritePublicFile(new_ca_file, new_ca->cert_pem).ok());
  ASSERT_TRUE(auth::WritePrivateFile(key, renewed->key_pem).ok());  // each replaced atomically
  ASSERT_TRUE(auth::WritePublicFile(cert, renewed->cert_pem).ok());
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitForLog("metrics certificate reloaded", absl::Seconds(15))) << daemon_->Log();
  httplib::Result renewed_scrape = scrape_trusting(new_ca_file);
  ASSERT_TRUE(renewed_scrape) << httplib::to_string(renewed_scrape.error()) << "\n" << daemon_->Log();
  EXPECT_FALSE(scrape_trusting(old_ca)) << "the old certificate is still served";
  absl::StatusOr<auth::ossl::X509Ptr> served = auth::ossl::ParseCertificate(renewed->cert_pem, "the renewed");
  ASSERT_TRUE(served.ok());
  absl::StatusOr<absl::Time> not_after = auth::ossl::ToTime(X509_get0_notAfter(served->get()));
  ASSERT_TRUE(not_after.ok());
  EXPECT_THAT(renewed_scrape->body,
              HasSubstr(absl::StrCat("airlock_certificate_expiry_timestamp_seconds{certificate=\"metrics_server\"} ",
                                     absl::ToUnixSeconds(*not_after), "\n")));

  // A key that is not the certificate's: refused, said why, and the renewed set stays in use. (The
  // periodic check may have caught the renewal above half-way and said so once already.)
  const std::string refusal = "is not the key of the certificate in metrics.cert_file";
  const std::string log = daemon_->Log();
  size_t before = 0;
  for (size_t at = log.find(refusal); at != std::string::npos; at = log.find(refusal, at + 1)) ++before;
  absl::StatusOr<auth::PemKeyPair> other = auth::IssueCertificate(*new_ca, spec);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(auth::WritePrivateFile(key, other->key_pem).ok());
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitForLog(refusal, absl::Seconds(15), before + 1)) << daemon_->Log();
  EXPECT_TRUE(scrape_trusting(new_ca_file)) << daemon_->Log();
}

// Debian's prometheus server, run as this user on loopback with the example alert rules, scrapes
// airlockd over mutual TLS. The query API is the check: the target is up, the counters equal what
// the test did (allowed, denied by roles, refused by a quota), and every alert rule evaluates
// without error against the real series.
class RealPrometheus {
 public:
  // Starts prometheus scraping 127.0.0.1:`target_port` every second, as `pki`'s "prometheus".
  void Start(const std::string& dir, const LabPki& pki, int target_port) {
    const std::string config = dir + "/prometheus.yml";
    {
      std::ofstream out(config, std::ios::trunc);
      out << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
          << "rule_files: [\"" AIRLOCK_SOURCE_DIR "/deploy/prometheus/airlock-alerts.yml\"]\n"
          << "scrape_configs:\n"
          << "  - job_name: airlock\n"
          << "    scheme: https\n"
          << "    tls_config: {ca_file: \"" << pki.dir << "/ca.crt\", cert_file: \"" << pki.cert("prometheus")
          << "\", key_file: \"" << pki.key("prometheus") << "\"}\n"
          << "    static_configs: [{targets: [\"127.0.0.1:" << target_port << "\"]}]\n";
    }
    std::string error;
    process_ = ChildProcess::Spawn({"prometheus", "--config.file=" + config, "--storage.tsdb.path=" + dir + "/tsdb",
                                    "--web.listen-address=127.0.0.1:0", "--log.level=info"},
                                   dir + "/prometheus.log", &error);
    ASSERT_NE(process_, nullptr) << error;
    // The port it picked is in its log: msg="Listening on" address=127.0.0.1:NNNNN
    ASSERT_TRUE(process_->WaitForLog("msg=\"Listening on\"", absl::Seconds(60))) << process_->Log();
    std::smatch m;
    const std::string log = process_->Log();
    ASSERT_TRUE(std::regex_search(log, m, std::regex("msg=\"Listening on\" address=127\\.0\\.0\\.1:([0-9]+)")))
        << log;
    port_ = std::stoi(m[1].str());
    // Queries are answered once its storage is open.
    const bool ready = PollUntil(
        [&] {
          httplib::Client client("127.0.0.1", port_);
          httplib::Result r = client.Get("/-/ready");
          return r && r->status == 200;
        },
        absl::Seconds(60));
    ASSERT_TRUE(ready) << process_->Log();
  }

  // GET /api/v1/<path> with `params`; the "data" member of a "success" answer.
  nlohmann::json Api(const std::string& path, const httplib::Params& params = {}) {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(10);
    httplib::Result r = client.Get(("/api/v1/" + path).c_str(), params, httplib::Headers{});
    if (!r || r->status != 200) {
      ADD_FAILURE() << path << ": " << (r ? r->body : httplib::to_string(r.error()));
      return nullptr;
    }
    nlohmann::json answer = nlohmann::json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    EXPECT_EQ(answer.value("status", ""), "success") << r->body;
    return answer.contains("data") ? answer["data"] : nlohmann::json();
  }
  // The value of an instant query that selects one series; nullopt when it selects none.
  std::optional<double> Value(const std::string& query) {
    nlohmann::json data = Api("query", {{"query", query}});
    if (!data.is_object() || !data["result"].is_array() || data["result"].empty()) return std::nullopt;
    EXPECT_EQ(data["result"].size(), 1u) << query << ": " << data.dump();
    return std::stod(data["result"][0]["value"][1].get<std::string>());
  }
  std::string Log() const { return process_ ? process_->Log() : ""; }

 private:
  std::unique_ptr<ChildProcess> process_;
  int port_ = 0;
};

TEST_F(MetricsTest, TheRealPrometheusScrapesOverMutualTlsAndItsCountersMatchWhatWasDone) {
  if (::access("/usr/bin/prometheus", X_OK) != 0) {
    if (RunningInCi()) {
      FAIL() << "/usr/bin/prometheus is missing: install the prometheus package (deploy/build-deps.sh)";
    }
    GTEST_SKIP() << "/usr/bin/prometheus is missing (Debian package prometheus)";
  }
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(HttpsMetricsYaml(dir_)));
  uint64_t generated = 0, intervals = 0;
  for (int i = 0; i < 2; ++i) {
    v1::GenerateResponse response;
    const grpc::Status s = Generate("stories", &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    generated += response.usage().completion_tokens();
    // A streamed token is one piece; an end-of-generation token ends the output unstreamed.
    const uint64_t pieces = response.usage().completion_tokens() -
                            (response.stop_reason() == v1::STOP_REASON_END_OF_GENERATION ? 1 : 0);
    ASSERT_GE(pieces, 1u);
    intervals += pieces - 1;
  }
  v1::GenerateResponse response;
  EXPECT_EQ(Generate("stories", &response, "bob").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Generate("stories", &response, "carol").error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  RealPrometheus prometheus;
  ASSERT_NO_FATAL_FAILURE(prometheus.Start(dir_, pki_, metrics_port_));
  // Its first scrape comes a few seconds after it starts, even at a 1 s interval.
  const bool up = PollUntil([&] { return prometheus.Value("up{job=\"airlock\"}") == 1.0; }, absl::Seconds(60));
  ASSERT_TRUE(up) << "the target never came up; prometheus log:\n"
                  << prometheus.Log() << "\ntargets: " << prometheus.Api("targets").dump();

  const std::string generate = "method=\"airlock.v1.Inference/Generate\",model=\"stories\"";
  EXPECT_EQ(prometheus.Value("airlock_requests_total{" + generate + ",code=\"OK\"}"), 2.0);
  EXPECT_EQ(prometheus.Value("airlock_requests_total{" + generate + ",code=\"PERMISSION_DENIED\"}"), 1.0);
  EXPECT_EQ(prometheus.Value("airlock_requests_total{" + generate + ",code=\"RESOURCE_EXHAUSTED\"}"), 1.0);
  EXPECT_EQ(prometheus.Value("airlock_auth_failures_total{reason=\"not_permitted\"}"), 1.0);
  EXPECT_EQ(prometheus.Value("airlock_quota_refusals_total{limit=\"tokens_per_day\"}"), 1.0);
  EXPECT_EQ(prometheus.Value("airlock_generation_tokens_total{model=\"stories\"}"), static_cast<double>(generated));
  EXPECT_EQ(prometheus.Value("airlock_time_to_first_token_seconds_count{model=\"stories\"}"), 2.0);
  EXPECT_EQ(prometheus.Value("airlock_inter_token_latency_seconds_count{model=\"stories\"}"),
            static_cast<double>(intervals));
  EXPECT_EQ(prometheus.Value("airlock_model_state{model=\"stories\",state=\"loaded\"}"), 1.0);
  EXPECT_EQ(prometheus.Value("airlock_audit_up"), 1.0);
  EXPECT_EQ(prometheus.Value("airlock_audit_write_failures_total"), 0.0);
  // Every call above wrote its records: begin and end for the two generations, one per refusal.
  EXPECT_GE(prometheus.Value("airlock_audit_write_seconds_count").value_or(0), 6.0);
  absl::StatusOr<absl::Time> server_expiry = auth::ossl::EarliestNotAfter("server", pki_.dir + "/server.crt");
  ASSERT_TRUE(server_expiry.ok()) << server_expiry.status();
  EXPECT_EQ(prometheus.Value("airlock_certificate_expiry_timestamp_seconds{certificate=\"server\"}"),
            static_cast<double>(absl::ToUnixSeconds(*server_expiry)));
  EXPECT_GT(prometheus.Value("airlock_crl_next_update_timestamp_seconds - time()").value_or(0), 86400.0);

  // The alert rules load and evaluate against the real series without error.
  const bool evaluated = PollUntil(
      [&] {
        nlohmann::json rules = prometheus.Api("rules");
        if (!rules.is_object() || rules["groups"].empty()) return false;
        for (const nlohmann::json& group : rules["groups"]) {
          for (const nlohmann::json& rule : group["rules"]) {
            if (rule.value("health", "") != "ok") return false;
          }
        }
        return true;
      },
      absl::Seconds(30));
  EXPECT_TRUE(evaluated) << prometheus.Api("rules").dump(2);
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
}

// The value of `series` (name and labels as exposed) in a scrape, or -1 when absent.
double SeriesValue(const std::string& text, const std::string& series) {
  const std::string needle = "\n" + series + " ";
  const size_t at = text.find(needle);
  return at == std::string::npos ? -1 : std::stod(text.substr(at + needle.size()));
}

// The engine's batching figures are real: a second call with the same long prompt shows prefix
// hits; while calls run the pool's blocks are used; once all end, used blocks are back to 0.
TEST_F(MetricsTest, PrefixHitsAndKvBlocksFollowTheEngine) {
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics(MetricsYaml(dir_, "  plaintext: true\n")));
  httplib::Client plain("127.0.0.1", metrics_port_);
  plain.set_read_timeout(10);
  const auto scrape = [&] {
    httplib::Result r = plain.Get("/metrics");
    return r && r->status == 200 ? r->body : std::string();
  };
  const std::string long_prompt =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
      "friends. One day, she saw a big red ball under a tree. She ran to the ball and picked it up.";
  const auto call = [&] {
    v1::GenerateRequest r;
    r.set_model("stories");
    r.set_prompt(long_prompt);
    r.set_max_tokens(4);
    r.mutable_sampling()->set_temperature(0);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::GenerateResponse response;
    const grpc::Status s =
        v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))->Generate(&context, r, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.usage().prompt_tokens();
  };
  const std::string hits = "airlock_prefix_cache_hit_tokens_total{model=\"stories\"}";
  const std::string queries = "airlock_prefix_cache_query_tokens_total{model=\"stories\"}";
  std::string text = scrape();
  EXPECT_EQ(SeriesValue(text, hits), 0);
  EXPECT_EQ(SeriesValue(text, queries), 0);
  const uint32_t prompt_tokens = call();
  ASSERT_GT(prompt_tokens, 32u);
  text = scrape();
  EXPECT_EQ(SeriesValue(text, hits), 0);  // nothing cached yet
  EXPECT_GT(SeriesValue(text, queries), 0);
  EXPECT_GT(SeriesValue(text, "airlock_kv_cache_blocks{model=\"stories\",state=\"cached\"}"), 0);
  call();
  text = scrape();
  // The full blocks of the prompt were found (16 tokens each), not computed again.
  EXPECT_GE(SeriesValue(text, hits), 16 * ((prompt_tokens - 1) / 16) - 16) << text;
  EXPECT_GT(SeriesValue(text, "airlock_kv_cache_blocks{model=\"stories\",state=\"total\"}"), 0);
  EXPECT_GT(SeriesValue(text, "airlock_engine_steps_total{model=\"stories\"}"), 0);
  EXPECT_TRUE(PollUntil(
      [&] {
        const std::string now = scrape();
        return SeriesValue(now, "airlock_kv_cache_blocks{model=\"stories\",state=\"used\"}") == 0 &&
               SeriesValue(now, "airlock_requests_running{model=\"stories\"}") == 0 &&
               SeriesValue(now, "airlock_kv_cache_usage_ratio{model=\"stories\"}") == 0;
      },
      absl::Seconds(10)))
      << scrape();
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

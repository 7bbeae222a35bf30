// End-to-end: a CRL change reaches calls on open connections without SIGHUP, an older CRL is refused, and
// world-writable trust anchors are refused.
#include <sys/stat.h>

#include <csignal>
#include <fstream>
#include <regex>
#include <string>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "auth/dev_pki.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
  - name: bob
    roles: [user]
  - name: prometheus
    roles: [user]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
)";

class RevocationWatchTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    std::signal(SIGPIPE, SIG_IGN);  // httplib against a refused handshake
    SetUpLab(kAccess, {"alice", "bob", "prometheus"});
  }
  void StartWithMetrics() {
    ASSERT_NO_FATAL_FAILURE(StartDaemon("", "",
                                        absl::StrCat("metrics:\n  listen: \"127.0.0.1:0\"\n  port_file: \"", dir_,
                                                     "/metrics-port\"\n  scrapers: [prometheus]\n")));
    std::ifstream in(dir_ + "/metrics-port");
    ASSERT_TRUE(in >> metrics_port_) << daemon_->Log();
  }
  // airlock_auth_failures_total{reason=...} as scraped now (-1 when the scrape fails).
  double AuthFailures(const std::string& reason) {
    httplib::SSLClient client("localhost", metrics_port_, pki_.cert("prometheus"), pki_.key("prometheus"));
    client.set_ca_cert_path((pki_.dir + "/ca.crt").c_str());
    client.enable_server_certificate_verification(true);
    httplib::Result result = client.Get("/metrics");
    if (!result || result->status != 200) return -1;
    std::smatch match;
    const std::regex line("airlock_auth_failures_total\\{reason=\"" + reason + "\"\\} ([0-9.e+]+)");
    return std::regex_search(result->body, match, line) ? std::stod(match[1]) : -1;
  }
  static grpc::StatusCode Check(const std::shared_ptr<grpc::Channel>& channel) {
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    return grpc::health::v1::Health::NewStub(channel)->Check(&context, request, &response).error_code();
  }

  int metrics_port_ = 0;
};

TEST_F(RevocationWatchTest, ARevokedClientIsRefusedOnItsOpenConnectionWithoutSighupAndAnOlderCrlCannotUndoIt) {
  ASSERT_NO_FATAL_FAILURE(StartWithMetrics());
  // alice's connection is open and serving before the revocation.
  const std::shared_ptr<grpc::Channel> open = Connect(daemon_->port(), pki_, "alice");
  ASSERT_EQ(Check(open), grpc::StatusCode::OK);
  const std::string crl_before = ReadFileOrDie(pki_.dir + "/crl.pem");

  // Revoked by rewriting the CRL file only: no SIGHUP. tls.watch_interval is 1 s in BaseConfig.
  ASSERT_TRUE(auth::Revoke(pki_.dir, ReadFileOrDie(pki_.cert("alice"))).ok());
  EXPECT_TRUE(PollUntil([&] { return Check(open) == grpc::StatusCode::UNAUTHENTICATED; }, absl::Seconds(10)))
      << daemon_->Log();
  EXPECT_TRUE(daemon_->WaitForLog("CRLs re-read", absl::Seconds(1)));
  EXPECT_TRUE(daemon_->WaitForLog("refused: certificate serial", absl::Seconds(5))) << daemon_->Log();
  // Counted as a certificate refusal before alice made any new connection: the per-call check.
  EXPECT_GE(AuthFailures("certificate_refused"), 1) << daemon_->Log();
  // A fresh connection is refused at the handshake; bob is not affected.
  EXPECT_EQ(Check(Connect(daemon_->port(), pki_, "alice")), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Check(Connect(daemon_->port(), pki_, "bob")), grpc::StatusCode::OK);

  // The replay: the CA's own, still current, correctly signed CRL from before the revocation.
  ASSERT_TRUE(auth::WritePublicFile(pki_.dir + "/crl.pem", crl_before).ok());
  EXPECT_TRUE(daemon_->WaitForLog("its crlNumber is lower than the CRL in use", absl::Seconds(10))) << daemon_->Log();
  EXPECT_EQ(Check(open), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Check(Connect(daemon_->port(), pki_, "alice")), grpc::StatusCode::UNAVAILABLE);
  // SIGHUP cannot force it in either.
  daemon_->Signal(SIGHUP);
  EXPECT_TRUE(daemon_->WaitForLog("reload refused", absl::Seconds(10))) << daemon_->Log();
  EXPECT_EQ(Check(open), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Check(Connect(daemon_->port(), pki_, "bob")), grpc::StatusCode::OK);
  StopDaemon();

  // Each refused call is in the audit log as unauthenticated, with alice's identity.
  int refused = 0;
  for (const nlohmann::json& record : ExportAudit(dir_ + "/state")) {
    if (record.value("type", "") == "record" && record.value("identity", "") == "alice" &&
        record.value("decision", "") == "unauthenticated") {
      ++refused;
    }
  }
  EXPECT_GE(refused, 1);
}

TEST_F(RevocationWatchTest, AWritableCrlOrCaBundleIsRefusedAtStartWatchAndReload) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  // TLS 1.3 is the default minimum now (BaseConfig sets no min_version).
  EXPECT_TRUE(daemon_->WaitForLog("\"tls_min\":\"1.3\"", absl::Seconds(1))) << daemon_->Log();
  const std::string crl = pki_.dir + "/crl.pem";
  // Another local user could now un-revoke, or (the CA bundle) add a CA of their own.
  ASSERT_EQ(::chmod(crl.c_str(), 0666), 0);
  EXPECT_TRUE(daemon_->WaitForLog("tls.crl_files[0]: CRL file " + crl + " has mode 0666", absl::Seconds(10)))
      << daemon_->Log();
  daemon_->Signal(SIGHUP);
  EXPECT_TRUE(daemon_->WaitForLog("reload refused", absl::Seconds(10))) << daemon_->Log();
  StopDaemon();

  ASSERT_EQ(::chmod(crl.c_str(), 0644), 0);
  ASSERT_EQ(::chmod(pki_.dir.c_str(), 0777), 0);
  ASSERT_EQ(::mkdir((dir_ + "/again").c_str(), 0700), 0);
  std::string error;
  std::unique_ptr<DaemonProcess> refused =
      DaemonProcess::Start(dir_ + "/again", BaseConfig(dir_ + "/again", pki_, StoriesModelYaml(), access_), &error);
  EXPECT_EQ(refused, nullptr);
  EXPECT_THAT(error, HasSubstr("directory " + pki_.dir + " above client CA file " + pki_.dir + "/ca.crt has mode 0777"));
}

TEST_F(RevocationWatchTest, AUserBoundToAnIssuingCaIsNotThatUserInAnotherConfiguredCasCertificate) {
  // Two configured CAs: the lab CA for staff, an admin CA for the auditor. Without the binding, the
  // lab CA's (or whoever runs it) CN=auditor certificate would be the auditor.
  const std::string admin_dir = dir_ + "/admin-pki";
  auth::PkiInitOptions options;
  options.ca_common_name = "Airlock Lab Admin CA";
  ASSERT_TRUE(auth::InitPki(admin_dir, options).ok());
  LabPki admin{admin_dir};
  admin.Issue("auditor");
  pki_.Issue("auditor");
  ASSERT_TRUE(auth::WritePublicFile(dir_ + "/clients-ca.crt",
                                    ReadFileOrDie(pki_.dir + "/ca.crt") + ReadFileOrDie(admin_dir + "/ca.crt"))
                  .ok());
  const std::string access = R"(users:
  - name: auditor
    issuer: "CN=Airlock Lab Admin CA"
    roles: [user]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
)";
  const std::string config = absl::StrReplaceAll(
      BaseConfig(dir_, pki_, StoriesModelYaml(), access),
      {{absl::StrCat("client_ca_file: \"", pki_.dir, "/ca.crt\""), absl::StrCat("client_ca_file: \"", dir_, "/clients-ca.crt\"")},
       {absl::StrCat("crl_files: [\"", pki_.dir, "/crl.pem\"]"),
        absl::StrCat("crl_files: [\"", pki_.dir, "/crl.pem\", \"", admin_dir, "/crl.pem\"]")}});
  std::string error;
  daemon_ = DaemonProcess::Start(dir_, config, &error);
  ASSERT_NE(daemon_, nullptr) << error;

  EXPECT_EQ(Check(ConnectWith(daemon_->port(), pki_.dir + "/ca.crt", admin.cert("auditor"), admin.key("auditor"))),
            grpc::StatusCode::OK);
  EXPECT_EQ(Check(Connect(daemon_->port(), pki_, "auditor")), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(daemon_->WaitForLog("was issued by", absl::Seconds(5))) << daemon_->Log();
  EXPECT_THAT(daemon_->Log(), HasSubstr("so it is not that user"));
}

}  // namespace
}  // namespace airlock::testing

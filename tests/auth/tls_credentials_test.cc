// End-to-end mTLS tests: a real gRPC server on 127.0.0.1 with MakeServerCredentials, gRPC and raw
// OpenSSL clients; revocation, CRL expiry, certificate rotation, TLS versions; and ValidateTlsFiles.
#include "auth/tls_credentials.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "auth/dev_pki.h"
#include "auth/identity.h"
#include "auth/revocation.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/auth/openssl_test_util.h"
#include "tests/support/test_data.h"

namespace airlock::auth {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(20);

// Rejection reasons from the server's log_rejection callback.
class RejectionLog {
 public:
  void Add(const std::string& reason) {
    absl::MutexLock lock(&mu_);
    reasons_.push_back(reason);
  }
  // Waits (bounded) until some reason contains `needle`.
  bool WaitFor(const std::string& needle, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto found = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      for (const std::string& r : reasons_) {
        if (absl::StrContains(r, needle)) return true;
      }
      return false;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&found), timeout);
  }
  std::string All() {
    absl::MutexLock lock(&mu_);
    return absl::StrJoin(reasons_, "\n");
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> reasons_ ABSL_GUARDED_BY(mu_);
};

// Health service that records who called, as the daemon's interceptors will.
class RecordingHealth final : public Health::Service {
 public:
  grpc::Status Check(grpc::ServerContext* context, const HealthCheckRequest* /*request*/,
                     HealthCheckResponse* response) override {
    absl::StatusOr<Identity> identity =
        IdentityFromAuthContext(*context->auth_context(), airlock::v1::config::SUBJECT_CN);
    absl::MutexLock lock(&mu_);
    last_identity_ = identity.ok() ? identity->name : std::string(identity.status().message());
    response->set_status(grpc::health::v1::HealthCheckResponse_ServingStatus_SERVING);
    return grpc::Status::OK;
  }
  std::string last_identity() {
    absl::MutexLock lock(&mu_);
    return last_identity_;
  }

 private:
  absl::Mutex mu_;
  std::string last_identity_ ABSL_GUARDED_BY(mu_);
};

class TestServer {
 public:
  TestServer(const TlsServerSettings& settings, std::shared_ptr<RevocationChecker> checker,
             std::shared_ptr<RejectionLog> log) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(
        "127.0.0.1:0",
        MakeServerCredentials(settings, std::move(checker),
                              [log](const std::string& reason) { log->Add(reason); }),
        &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~TestServer() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  bool ok() const { return server_ != nullptr && port_ > 0; }
  int port() const { return port_; }
  RecordingHealth& service() { return service_; }

 private:
  RecordingHealth service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// One Health/Check over a fresh connection (local subchannel pool: no reuse across calls).
grpc::Status CallCheck(int port, const std::string& root_pem, const PemKeyPair* client) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = root_pem;
  if (client != nullptr) {
    options.pem_private_key = client->key_pem;
    options.pem_cert_chain = client->cert_pem;
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                           grpc::SslCredentials(options), args);
  auto stub = Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  HealthCheckRequest request;
  HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (status.ok() && response.status() != grpc::health::v1::HealthCheckResponse_ServingStatus_SERVING) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "not SERVING");
  }
  return status;
}

struct RawResult {
  bool handshake_ok = false;
  std::string error;
  int version = 0;
  std::string server_serial;
  bool got_h2_settings = false;  // the server accepted the connection and spoke HTTP/2
};

std::string DrainErrors() {
  std::string out;
  unsigned long code;  // NOLINT(runtime/int)
  while ((code = ERR_get_error()) != 0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    absl::StrAppend(&out, out.empty() ? "" : "; ", buffer);
  }
  return out;
}

// A raw OpenSSL client limited to [min_version, max_version], so that the tests can pin the
// protocol and read the server's certificate, which gRPC's client API does not offer.
RawResult RawTlsConnect(int port, int min_version, int max_version, const PemKeyPair* client,
                        bool speak_h2) {
  RawResult result;
  // Writing to a connection the server dropped must be an error here, not a SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    result.error = "connect failed";
    close(fd);
    return result;
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  // OpenSSL 3 refuses to even offer TLS < 1.2 at the default security level; lower it so that
  // the refusal we observe is the server's.
  if (max_version < TLS1_2_VERSION) SSL_CTX_set_security_level(ctx, 0);
  // Only the pinned range counts: drop protocol options that a process-wide OpenSSL
  // configuration (min_tls13, below) may have put on every new context.
  SSL_CTX_clear_options(ctx, SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 |
                                 SSL_OP_NO_TLSv1_2 | SSL_OP_NO_TLSv1_3);
  SSL_CTX_set_min_proto_version(ctx, min_version);
  SSL_CTX_set_max_proto_version(ctx, max_version);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof(kAlpn));
  if (client != nullptr) {
    BIO* cert_bio = BIO_new_mem_buf(client->cert_pem.data(), static_cast<int>(client->cert_pem.size()));
    X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
    BIO* key_bio = BIO_new_mem_buf(client->key_pem.data(), static_cast<int>(client->key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
    SSL_CTX_use_certificate(ctx, cert);
    SSL_CTX_use_PrivateKey(ctx, key);
    X509_free(cert);
    EVP_PKEY_free(key);
    BIO_free(cert_bio);
    BIO_free(key_bio);
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  if (SSL_connect(ssl) == 1) {
    result.handshake_ok = true;
    result.version = SSL_version(ssl);
    if (X509* peer = SSL_get1_peer_certificate(ssl)) {
      BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(peer), nullptr);
      char* hex = BN_bn2hex(bn);
      result.server_serial = hex;
      OPENSSL_free(hex);
      BN_free(bn);
      X509_free(peer);
    }
    if (speak_h2) {
      static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
      static const unsigned char kEmptySettings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
      std::string hello(kPreface, sizeof(kPreface) - 1);
      hello.append(reinterpret_cast<const char*>(kEmptySettings), sizeof(kEmptySettings));
      if (SSL_write(ssl, hello.data(), static_cast<int>(hello.size())) > 0) {
        unsigned char frame[9];
        int got = 0;
        while (got < 9) {
          int n = SSL_read(ssl, frame + got, 9 - got);
          if (n <= 0) break;
          got += n;
        }
        result.got_h2_settings = got == 9 && frame[3] == 4;  // type 4: SETTINGS
      }
    }
  } else {
    result.error = DrainErrors();
  }
  ERR_clear_error();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return result;
}

class TlsCredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = airlock::testing::MakeTempDir();
    dir_ = root_ + "/pki";
    ASSERT_TRUE(InitPki(dir_, PkiInitOptions()).ok());
    CertificateSpec spec;
    spec.common_name = "alice";
    ASSERT_TRUE(IssueClient(dir_, "alice", spec).ok());
    spec.common_name = "bob";
    ASSERT_TRUE(IssueClient(dir_, "bob", spec).ok());
    ca_pem_ = Read("ca.crt");
    alice_ = {Read("alice.crt"), Read("alice.key")};
    bob_ = {Read("bob.crt"), Read("bob.key")};
    settings_.files = {dir_ + "/server.crt", dir_ + "/server.key", dir_ + "/ca.crt",
                       {dir_ + "/crl.pem"}};
    checker_ = std::make_shared<RevocationChecker>(LoadList());
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::string Read(const std::string& name) {
    return airlock::testing::ReadFileOrDie(dir_ + "/" + name);
  }
  std::shared_ptr<const RevocationList> LoadList(absl::Time now = absl::Now()) {
    auto list = RevocationList::Load(settings_.files.client_ca_file, settings_.files.crl_files, now);
    EXPECT_TRUE(list.ok()) << list.status();
    return list.ok() ? *list : nullptr;
  }

  std::string root_;
  std::string dir_;
  std::string ca_pem_;
  PemKeyPair alice_, bob_;
  TlsServerSettings settings_;
  std::shared_ptr<RevocationChecker> checker_;
  std::shared_ptr<RejectionLog> log_ = std::make_shared<RejectionLog>();
};

TEST_F(TlsCredentialsTest, ValidClientIsServedAndIdentified) {
  TestServer server(settings_, checker_, log_);
  ASSERT_TRUE(server.ok());
  grpc::Status status = CallCheck(server.port(), ca_pem_, &alice_);
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(server.service().last_identity(), "alice");
  status = CallCheck(server.port(), ca_pem_, &bob_);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(server.service().last_identity(), "bob");
}

TEST_F(TlsCredentialsTest, ClientWithoutCertificateIsRefused) {
  TestServer server(settings_, checker_, log_);
  ASSERT_TRUE(server.ok());
  grpc::Status status = CallCheck(server.port(), ca_pem_, nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(server.service().last_identity(), "");
}

TEST_F(TlsCredentialsTest, ClientFromAnotherCaIsRefused) {
  absl::StatusOr<PemKeyPair> other_ca = CreateCertificateAuthority("Airlock Dev CA", absl::Hours(1));
  ASSERT_TRUE(other_ca.ok());
  CertificateSpec spec;
  spec.common_name = "alice";  // same name, wrong issuer
  absl::StatusOr<PemKeyPair> impostor = IssueCertificate(*other_ca, spec);
  ASSERT_TRUE(impostor.ok());
  TestServer server(settings_, checker_, log_);
  ASSERT_TRUE(server.ok());
  grpc::Status status = CallCheck(server.port(), ca_pem_, &*impostor);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.service().last_identity(), "");
}

TEST_F(TlsCredentialsTest, RevokedClientIsRefusedAndLogged) {
  ASSERT_TRUE(Revoke(dir_, alice_.cert_pem).ok());
  checker_->Replace(LoadList());
  TestServer server(settings_, checker_, log_);
  ASSERT_TRUE(server.ok());
  const std::string serial = *CertificateSerialHex(alice_.cert_pem);
  grpc::Status status = CallCheck(server.port(), ca_pem_, &alice_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(log_->WaitFor("certificate serial " + serial + " revoked at")) << log_->All();
  EXPECT_TRUE(CallCheck(server.port(), ca_pem_, &bob_).ok());
  EXPECT_EQ(server.service().last_identity(), "bob");
}

TEST_F(TlsCredentialsTest, ACertificateWithTwoCommonNamesIsRefusedInTheHandshake) {
  // Signed by the right CA, not revoked: only the ambiguous subject is wrong.
  PemKeyPair two_names{auth::testing::WithSecondCommonName(alice_.cert_pem, {ca_pem_, Read("ca.key")}, "auditor"),
                       alice_.key_pem};
  TestServer server(settings_, checker_, log_);
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(CallCheck(server.port(), ca_pem_, &two_names).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(log_->WaitFor("has 2 common names (CN); an ambiguous identity is refused")) << log_->All();
  EXPECT_EQ(server.service().last_identity(), "");
  EXPECT_TRUE(CallCheck(server.port(), ca_pem_, &alice_).ok());
}

TEST_F(TlsCredentialsTest, ReplacedCrlAppliesToNewConnectionsWithoutRestart) {
  TestServer server(settings_, checker_, log_);
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE(CallCheck(server.port(), ca_pem_, &alice_).ok());
  ASSERT_TRUE(Revoke(dir_, alice_.cert_pem).ok());
  checker_->Replace(LoadList());
  grpc::Status status = CallCheck(server.port(), ca_pem_, &alice_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(log_->WaitFor(*CertificateSerialHex(alice_.cert_pem))) << log_->All();
  EXPECT_TRUE(CallCheck(server.port(), ca_pem_, &bob_).ok());
}

TEST_F(TlsCredentialsTest, ExpiredCrlRefusesEveryone) {
  const absl::Time now = absl::Now();
  PemKeyPair ca{Read("ca.crt"), Read("ca.key")};
  absl::StatusOr<std::string> crl =
      CreateCrl(ca, {}, now - absl::Hours(2), now - absl::Hours(1), 99);
  ASSERT_TRUE(crl.ok());
  // Built as of a time when the CRL was current; checked at real time on every handshake.
  auto list = RevocationList::Create(ca_pem_, {*crl}, now - absl::Minutes(90));
  ASSERT_TRUE(list.ok()) << list.status();
  checker_->Replace(*list);
  TestServer server(settings_, checker_, log_);
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(CallCheck(server.port(), ca_pem_, &alice_).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(CallCheck(server.port(), ca_pem_, &bob_).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(log_->WaitFor("expired at")) << log_->All();
  EXPECT_EQ(server.service().last_identity(), "");
}

TEST_F(TlsCredentialsTest, RotatedServerCertificateIsServedToNewConnections) {
  settings_.watch_interval = absl::Seconds(1);
  TestServer server(settings_, checker_, log_);
  ASSERT_TRUE(server.ok());
  const std::string old_serial = *CertificateSerialHex(Read("server.crt"));
  RawResult before = RawTlsConnect(server.port(), TLS1_2_VERSION, TLS1_3_VERSION, &alice_, false);
  ASSERT_TRUE(before.handshake_ok) << before.error;
  EXPECT_EQ(before.server_serial, old_serial);

  PemKeyPair ca{Read("ca.crt"), Read("ca.key")};
  CertificateSpec spec;
  spec.common_name = "localhost";
  spec.dns_names = {"localhost"};
  spec.ip_addresses = {"127.0.0.1"};
  spec.server = true;
  absl::StatusOr<PemKeyPair> rotated = IssueCertificate(ca, spec);
  ASSERT_TRUE(rotated.ok());
  const std::string new_serial = *CertificateSerialHex(rotated->cert_pem);
  ASSERT_NE(new_serial, old_serial);
  ASSERT_TRUE(WritePrivateFile(settings_.files.key_file, rotated->key_pem).ok());
  ASSERT_TRUE(WritePublicFile(settings_.files.cert_file, rotated->cert_pem).ok());

  // Poll new connections until the watcher picked the files up (bounded by kWait).
  const absl::Time deadline = absl::Now() + kWait;
  std::string seen;
  while (absl::Now() < deadline) {
    RawResult r = RawTlsConnect(server.port(), TLS1_2_VERSION, TLS1_3_VERSION, &alice_, false);
    if (r.handshake_ok) seen = r.server_serial;
    if (seen == new_serial) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(seen, new_serial);
  // gRPC clients still verify the rotated certificate against the same CA.
  EXPECT_TRUE(CallCheck(server.port(), ca_pem_, &alice_).ok());
}

TEST_F(TlsCredentialsTest, Tls11IsRefusedTls12And13Work) {
  TestServer server(settings_, checker_, log_);
  ASSERT_TRUE(server.ok());
  RawResult tls11 = RawTlsConnect(server.port(), TLS1_VERSION, TLS1_1_VERSION, &alice_, true);
  EXPECT_FALSE(tls11.handshake_ok);
  // The refusal came from the server (an alert, or gRPC closing the socket after its own
  // "unsupported protocol"), not from our own client refusing to offer TLS 1.1.
  EXPECT_THAT(tls11.error, ::testing::AnyOf(HasSubstr("protocol version"),
                                            HasSubstr("unexpected eof")));

  RawResult tls13 = RawTlsConnect(server.port(), TLS1_3_VERSION, TLS1_3_VERSION, &alice_, true);
  ASSERT_TRUE(tls13.handshake_ok) << tls13.error;
  EXPECT_EQ(tls13.version, TLS1_3_VERSION);
  EXPECT_TRUE(tls13.got_h2_settings);

  RawResult tls12 = RawTlsConnect(server.port(), TLS1_2_VERSION, TLS1_2_VERSION, &alice_, true);
  ASSERT_TRUE(tls12.handshake_ok) << tls12.error;
  EXPECT_EQ(tls12.version, TLS1_2_VERSION);
  EXPECT_TRUE(tls12.got_h2_settings);

  // A raw client with a revoked certificate completes TLS but is then dropped by the verifier.
  ASSERT_TRUE(Revoke(dir_, bob_.cert_pem).ok());
  checker_->Replace(LoadList());
  RawResult revoked = RawTlsConnect(server.port(), TLS1_3_VERSION, TLS1_3_VERSION, &bob_, true);
  EXPECT_FALSE(revoked.got_h2_settings);
}

// min_tls13 changes OpenSSL's configuration for the whole process (see tls_credentials.cc), so
// this scenario runs in a fresh copy of the test binary (threadsafe death-test style).
std::string Tls13OnlyScenario(const TlsServerSettings& settings,
                              std::shared_ptr<RevocationChecker> checker, const PemKeyPair& client,
                              const std::string& ca_pem) {
  TlsServerSettings tls13 = settings;
  tls13.min_tls13 = true;
  auto log = std::make_shared<RejectionLog>();
  TestServer server(tls13, std::move(checker), log);
  if (!server.ok()) return "server did not start";
  RawResult tls12 = RawTlsConnect(server.port(), TLS1_2_VERSION, TLS1_2_VERSION, &client, true);
  if (tls12.handshake_ok) return "TLS 1.2 handshake succeeded with min_tls13";
  if (!absl::StrContains(tls12.error, "protocol version") &&
      !absl::StrContains(tls12.error, "unexpected eof")) {
    return "unexpected error: " + tls12.error;
  }
  RawResult tls13r = RawTlsConnect(server.port(), TLS1_3_VERSION, TLS1_3_VERSION, &client, true);
  if (!tls13r.handshake_ok || !tls13r.got_h2_settings) return "TLS 1.3 failed: " + tls13r.error;
  grpc::Status status = CallCheck(server.port(), ca_pem, &client);
  if (!status.ok()) return "gRPC call failed: " + status.error_message();
  return "";
}

TEST_F(TlsCredentialsTest, MinTls13RefusesTls12) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::string error = Tls13OnlyScenario(settings_, checker_, alice_, ca_pem_);
        std::fprintf(stderr, "%s\n", error.empty() ? "TLS13-ONLY-OK" : error.c_str());
        std::fflush(stderr);
        std::filesystem::remove_all(root_);  // _Exit skips TearDown in this child
        std::_Exit(error.empty() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "TLS13-ONLY-OK");
}

// --- ValidateTlsFiles -------------------------------------------------------------------------

TEST_F(TlsCredentialsTest, ValidateAcceptsInitPkiFiles) {
  absl::Status status = ValidateTlsFiles(settings_.files, absl::Now());
  EXPECT_TRUE(status.ok()) << status;
}

TEST_F(TlsCredentialsTest, ValidateRefusesMissingFiles) {
  TlsFiles files = settings_.files;
  files.cert_file = dir_ + "/missing.crt";
  absl::Status status = ValidateTlsFiles(files, absl::Now());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("missing.crt"));
  files = settings_.files;
  files.client_ca_file = dir_ + "/missing-ca.crt";
  EXPECT_THAT(ValidateTlsFiles(files, absl::Now()).message(), HasSubstr("missing-ca.crt"));
}

TEST_F(TlsCredentialsTest, ValidateRefusesReadableKey) {
  ASSERT_EQ(chmod(settings_.files.key_file.c_str(), 0640), 0);
  absl::Status status = ValidateTlsFiles(settings_.files, absl::Now());
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("0640"));
  EXPECT_THAT(status.message(), HasSubstr("chmod 600"));
  EXPECT_THAT(status.message(), HasSubstr(settings_.files.key_file));
}

TEST_F(TlsCredentialsTest, ValidateRefusesMismatchedKey) {
  TlsFiles files = settings_.files;
  files.key_file = dir_ + "/alice.key";
  absl::Status status = ValidateTlsFiles(files, absl::Now());
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("does not match"));
}

TEST_F(TlsCredentialsTest, ValidateRefusesExpiredAndNotYetValid) {
  const absl::Time now = absl::Now();
  absl::Status expired = ValidateTlsFiles(settings_.files, now + absl::Hours(24 * 366));
  EXPECT_EQ(expired.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(expired.message(), HasSubstr("expired at"));
  absl::Status early = ValidateTlsFiles(settings_.files, now - absl::Hours(1));
  EXPECT_EQ(early.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(early.message(), HasSubstr("not valid before"));
}

TEST_F(TlsCredentialsTest, ValidateRefusesCaFileWithoutCa) {
  TlsFiles files = settings_.files;
  files.client_ca_file = dir_ + "/alice.crt";
  absl::Status status = ValidateTlsFiles(files, absl::Now());
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("holds no CA certificate"));
  ASSERT_TRUE(WritePublicFile(dir_ + "/junk.crt", "junk").ok());
  files = settings_.files;
  files.cert_file = dir_ + "/junk.crt";
  EXPECT_THAT(ValidateTlsFiles(files, absl::Now()).message(), HasSubstr("holds no PEM certificate"));
}

}  // namespace
}  // namespace airlock::auth

// End-to-end tests of what a peer without a certificate can do to either listener, probed the way
// an attacker would: exhaust the descriptors with idle TCP connections (gRPC 1.51 then abandons its
// listener, CVE-2023-4785), hold connections open without a handshake or with a trickled one, and
// offer the metrics port TLS settings the gRPC port refuses.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

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

using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;

// A TCP connection to 127.0.0.1:port that sends nothing unless told to; closed when destroyed.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }

  bool connected() const { return fd_ >= 0; }
  bool Send(std::string_view bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }
  // Whether the server closed (EOF or reset) within `within`; anything it sends is skipped.
  bool ClosedByServerWithin(absl::Duration within) {
    const absl::Time deadline = absl::Now() + within;
    for (absl::Time now = absl::Now(); now < deadline; now = absl::Now()) {
      pollfd p{fd_, POLLIN, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(deadline - now)) + 1);
      if (ready <= 0) continue;
      char buffer[512];
      const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
};

// The first bytes of a TLS ClientHello record: a record header announcing 512 bytes, then the
// handshake header. A server waits for the rest.
constexpr char kHalfClientHello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

// The handshake's outcome for a client limited to TLS `max_version` and the given TLS 1.2 suites,
// presenting `stem`'s certificate of `pki`: "" when it completed, else OpenSSL's reason.
std::string TlsHandshake(int port, const LabPki& pki, const std::string& stem, int max_version,
                         const char* tls12_ciphers) {
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
  if (ctx == nullptr) return "SSL_CTX_new failed";
  SSL_CTX_set_max_proto_version(ctx.get(), max_version);
  if (tls12_ciphers != nullptr && SSL_CTX_set_cipher_list(ctx.get(), tls12_ciphers) != 1) return "bad cipher list";
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), pki.cert(stem).c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), pki.key(stem).c_str(), SSL_FILETYPE_PEM) != 1) {
    return "cannot load the client certificate";
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    if (fd >= 0) ::close(fd);
    return "connect failed";
  }
  std::unique_ptr<SSL, void (*)(SSL*)> ssl(SSL_new(ctx.get()), &SSL_free);
  SSL_set_fd(ssl.get(), fd);
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string outcome;
  if (SSL_connect(ssl.get()) != 1) {
    outcome = "handshake failed";
  } else {
    // TLS 1.3 sends the server's verdict on the client certificate after the client's Finished:
    // a request and its answer prove the connection was accepted.
    const std::string request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    char buffer[256];
    if (SSL_write(ssl.get(), request.data(), static_cast<int>(request.size())) <= 0 ||
        SSL_read(ssl.get(), buffer, sizeof(buffer)) <= 0) {
      outcome = "refused after the handshake";
    }
  }
  ::close(fd);
  return outcome;
}

// Completes a TLS handshake as `stem` (ALPN h2, as gRPC clients do), then sends nothing, not even
// the HTTP/2 preface: whether the server closed the connection within `within`.
bool SilentAfterHandshakeIsClosedWithin(int port, const LabPki& pki, const std::string& stem, absl::Duration within) {
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
  static constexpr unsigned char kH2[] = {2, 'h', '2'};
  if (ctx == nullptr || SSL_CTX_set_alpn_protos(ctx.get(), kH2, sizeof(kH2)) != 0 ||
      SSL_CTX_use_certificate_chain_file(ctx.get(), pki.cert(stem).c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), pki.key(stem).c_str(), SSL_FILETYPE_PEM) != 1) {
    ADD_FAILURE() << "client TLS context";
    return false;
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    if (fd >= 0) ::close(fd);
    ADD_FAILURE() << "connect";
    return false;
  }
  timeval timeout{1, 0};  // each read returns within a second, so the deadline below is kept
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::unique_ptr<SSL, void (*)(SSL*)> ssl(SSL_new(ctx.get()), &SSL_free);
  SSL_set_fd(ssl.get(), fd);
  bool closed = false;
  if (SSL_connect(ssl.get()) != 1) {
    ADD_FAILURE() << "the handshake itself failed";
  } else {
    const absl::Time deadline = absl::Now() + within;
    while (!closed && absl::Now() < deadline) {
      char buffer[512];
      if (SSL_read(ssl.get(), buffer, sizeof(buffer)) > 0) continue;  // the server's SETTINGS
      const int error = SSL_get_error(ssl.get(), -1);
      closed = error == SSL_ERROR_ZERO_RETURN ||
               (error == SSL_ERROR_SYSCALL && errno != EAGAIN && errno != EWOULDBLOCK) || error == SSL_ERROR_SSL;
      ERR_clear_error();
    }
  }
  ::close(fd);
  return closed;
}

// CBC suites only (TLS 1.2): what an old or downgraded client offers.
constexpr char kCbcOnly[] =
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA";
constexpr char kEcdheGcm[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";

class UnauthenticatedPeerTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    std::signal(SIGPIPE, SIG_IGN);
    SetUpLab(kAliceMayCallAnything, {"alice", "prometheus"});
  }

  // BaseConfig with server.handshake_timeout set and `extra_yaml` (top-level keys) at the end.
  std::string Config(const std::string& handshake_timeout, const std::string& extra_yaml = "") const {
    return absl::StrReplaceAll(
        BaseConfig(dir_, pki_, StoriesModelYaml(), access_, extra_yaml),
        {{"  drain_timeout: \"5s\"\n", absl::StrCat("  drain_timeout: \"5s\"\n  handshake_timeout: \"",
                                                     handshake_timeout, "\"\n")}});
  }
  void Start(const std::string& config, const std::vector<std::string>& launcher = {}) {
    std::string error;
    daemon_ = DaemonProcess::Start(dir_, config, &error, absl::Seconds(60), launcher);
    ASSERT_NE(daemon_, nullptr) << error;
  }
  // An mTLS call on a new connection, as alice.
  grpc::Status ListModels(absl::Duration within) const {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(within));
    v1::ListModelsRequest request;
    v1::ListModelsResponse response;
    return v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))->ListModels(&context, request, &response);
  }
  int MetricsPort() const {
    int port = 0;
    std::ifstream(dir_ + "/metrics-port") >> port;
    return port;
  }
  std::string MetricsYaml() const {
    return absl::StrCat("metrics:\n  listen: \"127.0.0.1:0\"\n  port_file: \"", dir_,
                        "/metrics-port\"\n  scrapers: [prometheus]\n");
  }
};

TEST_F(UnauthenticatedPeerTest, DescriptorExhaustionEndsInARestartNotADeadListener) {
  // The attacker's connections need descriptors of our own, beyond the daemon's limit.
  constexpr int kConnections = 320;
  rlimit own{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &own), 0);
  if (own.rlim_cur < kConnections + 200) {
    own.rlim_cur = std::min<rlim_t>(own.rlim_max, kConnections + 200);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &own), 0);
  }
  // A hard limit the daemon cannot raise: 256 descriptors, reached by ~220 idle connections. And
  // an environment that tells gRPC to log nothing: the check must see gRPC's error all the same.
  const std::string config = Config("3s");
  const std::vector<std::string> launcher = {"env", "GRPC_VERBOSITY=NONE", "prlimit", "--nofile=256:256", "--"};
  ASSERT_NO_FATAL_FAILURE(Start(config, launcher));
  ASSERT_TRUE(ListModels(absl::Seconds(10)).ok());
  {
    std::vector<std::unique_ptr<RawConnection>> idle;
    for (int i = 0; i < kConnections; ++i) idle.push_back(std::make_unique<RawConnection>(daemon_->port()));
    // gRPC 1.51 says so once accept4 fails with EMFILE (in its own format, or ours once forwarded).
    ASSERT_TRUE(daemon_->WaitForLog("Failed accept4", absl::Seconds(20))) << daemon_->Log();
  }  // all closed: the descriptors are free again

  // Either the listener still serves, or the daemon stopped claiming it and exited for a restart.
  std::optional<int> exit_code;
  const bool recovered = PollUntil(
      [&] {
        exit_code = daemon_->WaitExit(absl::ZeroDuration());
        return exit_code.has_value() || ListModels(absl::Seconds(1)).ok();
      },
      absl::Seconds(20));
  ASSERT_TRUE(recovered) << "the port no longer accepts and airlockd still runs; log:\n" << daemon_->Log();
  if (exit_code.has_value()) {
    EXPECT_EQ(*exit_code, 75) << daemon_->Log();
    EXPECT_THAT(daemon_->Log(), HasSubstr("the gRPC listener stopped accepting connections")) << daemon_->Log();
    EXPECT_THAT(daemon_->Log(), HasSubstr("\"drained\""));
    // gRPC's line reached our JSON log (the check reads it there).
    EXPECT_THAT(daemon_->Log(), HasSubstr("\"component\":\"grpc\""));
    // What systemd does next: start it again, on the same state.
    ASSERT_NO_FATAL_FAILURE(Start(config, launcher));
    const grpc::Status again = ListModels(absl::Seconds(10));
    EXPECT_TRUE(again.ok()) << again.error_message() << "\n" << daemon_->Log();
  }
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
}

TEST_F(UnauthenticatedPeerTest, ADeadListenerFailsReadinessAtOnceAndDrainsInFlightCalls) {
  // A model slow enough that a long generation outlasts the attack: 4 layers of 1024 wide Q8_0,
  // a few ms per token (airlockd_lifetime_test.cc has the same one).
  const std::string model = dir_ + "/slow.gguf";
  const CommandResult synth = RunCommand({AIRLOCKCTL_PATH, "model", "synth", "--out", model, "--layers", "4", "--embd",
                                          "1024", "--ff", "2816", "--heads", "16", "--type", "q8_0", "--ctx", "4096",
                                          "--vocab", "320"});
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  const std::string config = absl::StrReplaceAll(
      BaseConfig(dir_, pki_,
                 absl::StrCat("  - name: slow\n    path: \"", model, "\"\n    threads: 1\n    context_length: 4096\n"),
                 absl::StrCat(access_, "limits:\n  max_tokens_per_request: 4000\n"), MetricsYaml()),
      {{"  drain_timeout: \"5s\"\n", "  drain_timeout: \"10s\"\n  handshake_timeout: \"3s\"\n"}});
  ASSERT_NO_FATAL_FAILURE(Start(config, {"prlimit", "--nofile=256:256", "--"}));

  // A call in flight on its own connection, opened before the attack.
  std::atomic<int> tokens{0};
  grpc::Status finished;
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(60)));
  v1::GenerateRequest request;
  request.set_model("slow");
  request.set_prompt("hello");
  request.set_max_tokens(4000);
  request.mutable_sampling()->set_temperature(0);
  auto reader = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))->GenerateStream(&context, request);
  std::thread streaming([&] {
    v1::GenerateStreamResponse message;
    while (reader->Read(&message)) tokens.fetch_add(1);
    finished = reader->Finish();
  });
  ASSERT_TRUE(PollUntil([&] { return tokens.load() > 0; }, absl::Seconds(30))) << daemon_->Log();

  {
    std::vector<std::unique_ptr<RawConnection>> idle;
    for (int i = 0; i < 320; ++i) idle.push_back(std::make_unique<RawConnection>(daemon_->port()));
    EXPECT_TRUE(daemon_->WaitForLog("Failed accept4", absl::Seconds(20))) << daemon_->Log();
  }
  // Draining now (drain_timeout 10 s): readiness says why, the metric says so.
  httplib::SSLClient client("localhost", MetricsPort(), pki_.cert("prometheus"), pki_.key("prometheus"));
  client.set_ca_cert_path((pki_.dir + "/ca.crt").c_str());
  client.enable_server_certificate_verification(true);
  client.set_connection_timeout(10);
  client.set_read_timeout(10);
  httplib::Result ready = client.Get("/readyz");
  ASSERT_TRUE(ready) << httplib::to_string(ready.error()) << "\n" << daemon_->Log();
  EXPECT_EQ(ready->status, 503);
  EXPECT_THAT(ready->body, HasSubstr("the gRPC listener stopped accepting connections (Failed accept4: Too many open "
                                     "files)"));
  httplib::Result metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("airlock_grpc_listener_up 0\n"));
  // The call on its open connection goes on streaming during the drain.
  const int at_failure = tokens.load();
  EXPECT_TRUE(PollUntil([&] { return tokens.load() > at_failure + 5; }, absl::Seconds(10)));

  EXPECT_EQ(daemon_->WaitExit(absl::Seconds(40)), std::optional<int>(75)) << daemon_->Log();
  streaming.join();
  // It ran until the drain deadline cancelled it, or to its end.
  EXPECT_GT(tokens.load(), at_failure + 5) << finished.error_message();
}

TEST_F(UnauthenticatedPeerTest, IdleConnectionsAreClosedByTheHandshakeTimeout) {
  ASSERT_NO_FATAL_FAILURE(Start(Config("1s", MetricsYaml())));
  // gRPC port: connect, send nothing. gRPC's own default would keep it for 120 s.
  RawConnection silent(daemon_->port());
  ASSERT_TRUE(silent.connected());
  RawConnection half_hello(daemon_->port());
  ASSERT_TRUE(half_hello.connected() && half_hello.Send(std::string_view(kHalfClientHello, sizeof(kHalfClientHello) - 1)));
  EXPECT_TRUE(silent.ClosedByServerWithin(absl::Seconds(8)));
  EXPECT_TRUE(half_hello.ClosedByServerWithin(absl::Seconds(8)));
  // The timeout covers the HTTP/2 preface too (gRPC waits for the client's SETTINGS until it).
  EXPECT_TRUE(SilentAfterHandshakeIsClosedWithin(daemon_->port(), pki_, "alice", absl::Seconds(8)));

  // Metrics port: a ClientHello trickled one byte at a time, each well inside the per-read wait,
  // is cut once the whole handshake has taken longer than the timeout.
  RawConnection trickle(MetricsPort());
  ASSERT_TRUE(trickle.connected());
  const absl::Time start = absl::Now();
  bool closed = false;
  for (size_t i = 0; i + 1 < sizeof(kHalfClientHello) && !closed; ++i) {
    if (!trickle.Send(std::string_view(kHalfClientHello + i, 1))) {
      closed = true;
      break;
    }
    closed = trickle.ClosedByServerWithin(absl::Milliseconds(700));
  }
  if (!closed) closed = trickle.ClosedByServerWithin(absl::Seconds(8) - (absl::Now() - start));
  EXPECT_TRUE(closed) << "a trickled handshake held a metrics worker for " << absl::Now() - start;
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
}

TEST_F(UnauthenticatedPeerTest, ReadyzAnswersWhileIdleAndSlowClientsHoldConnections) {
  ASSERT_NO_FATAL_FAILURE(Start(Config("5s", MetricsYaml())));
  const int port = MetricsPort();
  ASSERT_GT(port, 0);
  // 16 idle connections and two slow-loris clients that sent half a ClientHello.
  std::vector<std::unique_ptr<RawConnection>> attackers;
  for (int i = 0; i < 16; ++i) attackers.push_back(std::make_unique<RawConnection>(port));
  for (int i = 0; i < 2; ++i) {
    attackers.push_back(std::make_unique<RawConnection>(port));
    attackers.back()->Send(std::string_view(kHalfClientHello, sizeof(kHalfClientHello) - 1));
  }
  for (const auto& a : attackers) ASSERT_TRUE(a->connected());
  // Let the listener hand every one of them to a worker.
  absl::SleepFor(absl::Milliseconds(200));

  httplib::SSLClient client("localhost", port, pki_.cert("prometheus"), pki_.key("prometheus"));
  client.set_ca_cert_path((pki_.dir + "/ca.crt").c_str());
  client.enable_server_certificate_verification(true);
  client.set_connection_timeout(10);
  client.set_read_timeout(10);
  const absl::Time start = absl::Now();
  httplib::Result ready = client.Get("/readyz");
  const absl::Duration took = absl::Now() - start;
  // A correctness bound, not a benchmark: with 2 workers the scrape got no answer within 10 s.
  ASSERT_TRUE(ready) << httplib::to_string(ready.error()) << " after " << took;
  EXPECT_EQ(ready->status, 200);
  EXPECT_LT(took, absl::Seconds(3));
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
}

TEST_F(UnauthenticatedPeerTest, MetricsTlsPolicyIsTheGrpcPorts) {
  // tls.min_version TLS_1_2, for old clients: TLS 1.2 with ECDHE and AES-GCM, as gRPC offers, is
  // accepted. CBC only: refused, as on the gRPC port.
  const std::string tls12 = absl::StrReplaceAll(Config("5s", MetricsYaml()),
                                                {{"  watch_interval: \"1s\"\n", "  watch_interval: \"1s\"\n  min_version: TLS_1_2\n"}});
  ASSERT_NE(tls12.find("min_version: TLS_1_2"), std::string::npos);
  ASSERT_NO_FATAL_FAILURE(Start(tls12));
  const int port = MetricsPort();
  EXPECT_EQ(TlsHandshake(port, pki_, "prometheus", TLS1_2_VERSION, kEcdheGcm), "");
  EXPECT_NE(TlsHandshake(port, pki_, "prometheus", TLS1_2_VERSION, kCbcOnly), "");
  EXPECT_NE(TlsHandshake(daemon_->port(), pki_, "alice", TLS1_2_VERSION, kCbcOnly), "") << "the gRPC port's policy";
  ASSERT_NO_FATAL_FAILURE(StopDaemon());

  // The default minimum, TLS 1.3: a TLS-1.2-only client is refused on both ports; TLS 1.3 is served.
  ASSERT_NO_FATAL_FAILURE(Start(Config("5s", MetricsYaml())));
  EXPECT_NE(TlsHandshake(MetricsPort(), pki_, "prometheus", TLS1_2_VERSION, kEcdheGcm), "");
  EXPECT_NE(TlsHandshake(daemon_->port(), pki_, "alice", TLS1_2_VERSION, kEcdheGcm), "") << "the gRPC port's policy";
  EXPECT_EQ(TlsHandshake(MetricsPort(), pki_, "prometheus", TLS1_3_VERSION, nullptr), "");
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
}

}  // namespace
}  // namespace airlock::testing

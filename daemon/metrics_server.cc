// The metrics listener on cpp-httplib: the TLS side on its OpenSSL context (TlsListenerContext),
// the three routes, and a clean stop.
#include "daemon/metrics_server.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <utility>

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/log.h"
#include "inference/base/status.h"

namespace airlock::daemon {
namespace {

// Workers: each connection holds one from accept to close (cpp-httplib). Scrapers need a few; the
// rest absorb idle and slow unauthenticated connections, each for at most about twice the
// handshake timeout, so that a scrape still finds a free worker.
constexpr int kWorkerThreads = 32;
// After a handshake, only verified scrapers remain: a response write and an idle keep-alive may
// take this long.
constexpr time_t kWriteTimeoutSeconds = 5;
constexpr time_t kKeepAliveSeconds = 5;
}  // namespace

absl::Status MetricsServer::ReloadCertificates() {
  return tls_ == nullptr ? absl::OkStatus() : tls_->Reload();  // plain HTTP: nothing to reload
}

absl::Time MetricsServer::certificate_not_after() const {
  return tls_ == nullptr ? absl::InfiniteFuture() : tls_->not_after();
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const MetricsOptions& options,
                                                                    const Policy& policy, ClientCheck check_client,
                                                                    Handlers handlers) {
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->options_ = options;
  s->policy_ = policy;
  s->handlers_ = std::move(handlers);
  if (options.plaintext) {
    s->server_ = std::make_unique<httplib::Server>();
  } else {
    auto tls = std::make_unique<httplib::SSLServer>(options.cert_file.c_str(), options.key_file.c_str(),
                                                    options.client_ca_file.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat("metrics: cannot use the certificate ", options.cert_file,
                                                     ", key ", options.key_file, " or client CA file ",
                                                     options.client_ca_file));
    }
    SSL_CTX* ctx = tls->ssl_context();
    AIRLOCK_ASSIGN_OR_RETURN(
        s->tls_, TlsListenerContext::Attach(ctx,
                                            {options.cert_file, options.key_file, options.client_ca_file,
                                             "metrics.cert_file", "metrics.key_file", "metrics.client_ca_file",
                                             "metrics"},
                                            {policy.watch_interval, policy.min_tls13, policy.handshake_timeout},
                                            std::move(check_client)));
    s->server_ = std::move(tls);
  }
  httplib::Server& server = *s->server_;
  server.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  // Each wait for a client's bytes (the TLS handshake's, a request's) ends after the handshake
  // timeout, whole seconds, at least one; HandshakeClock bounds a handshake's total.
  const time_t wait_seconds =
      std::max<time_t>(1, absl::ToInt64Seconds(absl::Ceil(policy.handshake_timeout, absl::Seconds(1))));
  server.set_read_timeout(wait_seconds);
  server.set_write_timeout(kWriteTimeoutSeconds);
  server.set_keep_alive_timeout(kKeepAliveSeconds);
  MetricsServer* self = s.get();
  server.Get("/metrics", [self](const httplib::Request&, httplib::Response& response) {
    response.set_content(self->handlers_.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain; charset=utf-8");
  });
  server.Get("/readyz", [self](const httplib::Request&, httplib::Response& response) {
    const absl::StatusOr<std::string> ready = self->handlers_.ready();
    response.status = ready.ok() ? 200 : 503;
    response.set_content(!ready.ok()      ? absl::StrCat("not ready: ", ready.status().message(), "\n")
                         : ready->empty() ? std::string("ready\n")
                                          : absl::StrCat("ready; ", *ready, "\n"),
                         "text/plain; charset=utf-8");
  });

  const size_t colon = options.listen.rfind(':');
  std::string host = options.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  if (!absl::SimpleAtoi(options.listen.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("metrics.listen: no port in ", options.listen));
  }
  if (port == 0) {
    port = server.bind_to_any_port(host);
  } else if (!server.bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics.listen: could not listen on ", options.listen,
                                               " (address in use, or not an address of this host?)"));
  }
  s->port_ = port;
  s->listener_ = std::thread([self] {
    self->server_->listen_after_bind();
    self->listen_returned_.store(true);
  });
  if (!options.port_file.empty()) {
    std::ofstream out(options.port_file, std::ios::trunc);
    out << port << "\n";
    if (!out.good()) return absl::PermissionDeniedError(absl::StrCat("metrics.port_file: cannot write ", options.port_file));
  }
  LogInfo("metrics listening", {{"address", options.listen},
                                {"port", port},
                                {"scheme", options.plaintext ? "http" : "https (client certificate required)"}});
  return s;
}

MetricsServer::~MetricsServer() {
  if (!listener_.joinable()) return;
  // A stop() before the listener runs would be lost: wait until it runs (or has given up).
  while (!server_->is_running() && !listen_returned_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_->stop();
  listener_.join();
  // tls_ (its callbacks' context, its file watcher) goes after server_ (members in reverse order).
}

}  // namespace airlock::daemon

// The metrics listener (config `metrics:`, docs/operations.md): its own address, HTTPS that
// requires a client certificate from the configured CAs and lets the daemon check it (revocation,
// metrics.scrapers; see Daemon::CheckScraper), or plain HTTP on a loopback address only. Serves
// GET /metrics (Prometheus text format), /healthz (the process answers) and /readyz (ready to
// serve: 200, or 503 and the reason). Built on cpp-httplib (OpenSSL 3);
// prometheus-cpp's own listener (civetweb) cannot do TLS with OpenSSL 3 on Debian 12.
//
// Certificate rotation: the certificate, key and client CA files are re-read every
// `watch_interval` (and on ReloadCertificates()); a changed, valid set applies to the next
// handshakes, an invalid one is logged and the current set stays.
//
// Unauthenticated peers: cpp-httplib gives each connection a worker thread from accept to close,
// so an idle or slow connection holds one. The pool is sized well above what scrapers need, each
// wait for a client's bytes is bounded by server.handshake_timeout, and a TLS handshake that has
// not finished when that much time has passed is cut at its next read (HandshakeClock): one
// connection holds a worker for at most about twice the handshake timeout before it has a
// verified client certificate. The TLS policy is the gRPC port's: tls.min_version, TLS 1.2 only
// with ECDHE and AEAD suites, no compression, no renegotiation.
//
// Thread-safety: the handlers run on the listener's worker threads; ReloadCertificates and
// certificate_not_after may be called from any thread.
#pragma once

#include <openssl/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "daemon/config/daemon_options.h"
#include "daemon/tls_listener.h"

namespace httplib {
class Server;
}

namespace airlock::daemon {

class MetricsServer {
 public:
  struct Handlers {
    std::function<std::string()> metrics;  // the text exposition
    // Ready: a note for the body ("" or what is degraded); not ready: why not.
    std::function<absl::StatusOr<std::string>()> ready;
  };

  // Who may scrape, given the PEM leaf certificate a client presented (its chain already verified
  // against the client CAs): OK, or why not (the handshake is then refused).
  using ClientCheck = std::function<absl::Status(const std::string& leaf_pem)>;

  // What the listener takes from the daemon's other settings.
  struct Policy {
    absl::Duration watch_interval = absl::Seconds(10);     // tls.watch_interval
    bool min_tls13 = false;                                // tls.min_version is TLS_1_3
    absl::Duration handshake_timeout = absl::Seconds(5);  // server.handshake_timeout
  };

  // Binds options.listen now (before the network sandbox closes socket creation) and serves on
  // threads of its own. With HTTPS, each scraper's certificate goes through `check_client`, and
  // the TLS files are re-read every `policy.watch_interval`. Errors name the metrics.* key at fault.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const MetricsOptions& options, const Policy& policy,
                                                              ClientCheck check_client, Handlers handlers);
  // Stops listening and waits for the listener's threads.
  ~MetricsServer();

  int port() const { return port_; }

  // Re-reads the certificate, key and client CA files now (HTTPS only; OK and nothing to do for
  // plain HTTP or unchanged files). A set that does not load (unreadable, unparsable, a key that
  // does not match the certificate) is refused with the reason, and the current set stays.
  absl::Status ReloadCertificates();
  // The earliest notAfter of the certificate chain in use; InfiniteFuture for plain HTTP.
  absl::Time certificate_not_after() const;

 private:
  MetricsServer() = default;

  MetricsOptions options_;
  Policy policy_;
  std::unique_ptr<TlsListenerContext> tls_;  // null for plain HTTP
  std::unique_ptr<httplib::Server> server_;
  Handlers handlers_;
  std::thread listener_;
  std::atomic<bool> listen_returned_{false};
  int port_ = 0;
};

}  // namespace airlock::daemon

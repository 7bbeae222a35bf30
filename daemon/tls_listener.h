// The TLS side of the daemon's HTTPS listeners (metrics, OpenAI-compatible API), on an OpenSSL
// context each listener owns: the gRPC port's policy (tls.min_version; TLS 1.2 only with ECDHE and
// AEAD suites; no compression, no renegotiation), a client certificate required and verified
// against the configured CAs and then by the daemon's own check (revocation, who may connect),
// the certificate, key and client CAs taken from the current credentials at each handshake and
// re-read from their files every `watch_interval` (a changed, valid set applies to the next
// handshakes; an invalid one is logged and the current set stays), and a bound on how long a
// handshake may take in total, so that a client trickling bytes cannot hold a connection.
//
// Thread-safety: OpenSSL calls the callbacks from the listener's threads; Reload and not_after
// may be called from any thread.
#pragma once

#include <openssl/types.h>

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

namespace airlock::daemon {

class TlsListenerContext {
 public:
  // The files, and the configuration keys that name them (for errors: "metrics.cert_file ...").
  struct Files {
    std::string cert_file, key_file, client_ca_file;
    std::string cert_key, key_key, client_ca_key;
    std::string listener;  // "metrics", "openai": in log lines
  };
  struct Policy {
    absl::Duration watch_interval = absl::Seconds(10);     // tls.watch_interval
    bool min_tls13 = false;                                // tls.min_version is TLS_1_3
    absl::Duration handshake_timeout = absl::Seconds(5);  // server.handshake_timeout
    // A client may connect without a certificate (openai.api_keys); one it presents is still
    // verified. Default: a certificate is required.
    bool client_certificate_optional = false;
  };
  // Who may connect, given the PEM leaf certificate a client presented (its chain already verified
  // against the client CAs): OK, or why not (the handshake is then refused).
  using ClientCheck = std::function<absl::Status(const std::string& leaf_pem)>;

  // Loads the files (errors name the key at fault), applies the policy and the callbacks to `ctx`
  // (which must outlive the returned object's use by OpenSSL; the context is not owned) and starts
  // re-reading the files every policy.watch_interval.
  static absl::StatusOr<std::unique_ptr<TlsListenerContext>> Attach(SSL_CTX* ctx, Files files, Policy policy,
                                                                    ClientCheck check_client);
  // Stops re-reading.
  ~TlsListenerContext();

  // Re-reads the files now (OK and nothing to do when unchanged). A set that does not load is
  // refused with the reason, and the current set stays.
  absl::Status Reload();
  // The earliest notAfter of the certificate chain in use.
  absl::Time not_after() const;

  struct Credentials;  // one loaded set of files (tls_listener.cc)

 private:
  TlsListenerContext() = default;
  static int VerifyClient(int preverify_ok, X509_STORE_CTX* store);
  static int UseCurrentCredentials(SSL* ssl, void* arg);
  static void HandshakeClock(const SSL* ssl, int where, int ret);
  std::shared_ptr<const Credentials> credentials() const;

  Files files_;
  Policy policy_;
  ClientCheck check_client_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const Credentials> credentials_ ABSL_GUARDED_BY(mu_);
  std::string last_refusal_ ABSL_GUARDED_BY(mu_);  // the last reload error logged
  absl::Notification stop_watching_;
  std::thread watcher_;
};

}  // namespace airlock::daemon

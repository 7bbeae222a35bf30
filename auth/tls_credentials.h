// The daemon's TLS: mutual TLS only, TLS 1.2 minimum (1.3 with min_tls13, the daemon's default),
// certificates re-read from disk for rotation, and every client certificate checked against the
// RevocationChecker during the handshake.
//
// Thread-safety: the functions are safe to call from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "auth/revocation.h"
#include "grpcpp/security/server_credentials.h"

namespace airlock::auth {

struct TlsFiles {
  std::string cert_file;       // PEM chain
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // PEM CA bundle
  std::vector<std::string> crl_files;
};

struct TlsServerSettings {
  TlsFiles files;
  // Default: TLS 1.2 minimum. gRPC 1.51 has no TLS version setting for these credentials, so
  // true restricts OpenSSL's default SSL configuration for the whole process (every SSL_CTX
  // created afterwards refuses TLS < 1.3, clients included); it cannot be undone until restart,
  // and the process aborts if OpenSSL refuses the restriction rather than serve TLS 1.2.
  bool min_tls13 = false;
  absl::Duration watch_interval = absl::Seconds(10);  // Default: 10 s
};

// Checks the files before they are used (at start and on reload): each exists and parses; the key
// file is not readable by group/others; the key matches the certificate; the certificate is
// currently valid; the CA bundle holds at least one CA certificate. Errors name the file and the
// problem. (CRLs are checked by RevocationList::Load.)
absl::Status ValidateTlsFiles(const TlsFiles& files, absl::Time now);

// The check every mTLS listener of the daemon (gRPC, metrics) applies to a client certificate
// that verified against its CA: OK, or UNAUTHENTICATED "TLS handshake refused for client
// certificate \"<subject>\" serial <hex>: <why>" (revoked, the CRL expired, no certificate, no
// checker, a subject with more than one CN).
absl::Status CheckClientCertificate(const RevocationChecker* revocation, const std::string& leaf_cert_pem);

// mTLS server credentials: client certificate required and verified against client_ca_file,
// then checked by `revocation` (a revoked client, or any client while the CRL is expired, fails
// the handshake; the reason is logged through `log_rejection`).
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsServerSettings& settings, std::shared_ptr<RevocationChecker> revocation,
    std::function<void(const std::string& reason)> log_rejection);

}  // namespace airlock::auth

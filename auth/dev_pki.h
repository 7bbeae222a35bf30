// A small development PKI on OpenSSL: a CA, server and client certificates, and CRLs. Used by
// `airlockctl pki` (quick start, labs) and by the tests; production sites use their own CA.
//
// Keys are ECDSA P-256; certificates are X.509 v3 signed with SHA-256. Private key files are
// created with mode 0600. Thread-safety: free functions, no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace airlock::auth {

// A certificate and its private key, both PEM.
struct PemKeyPair {
  std::string cert_pem;
  std::string key_pem;
};

struct CertificateSpec {
  std::string common_name;               // subject CN (required)
  std::vector<std::string> dns_names;    // SAN dNSName
  std::vector<std::string> ip_addresses; // SAN iPAddress, textual IPv4/IPv6
  std::vector<std::string> emails;       // SAN rfc822Name
  std::vector<std::string> uris;         // SAN URI (e.g. spiffe://site/ns/x)
  absl::Time not_before = absl::InfinitePast();  // InfinitePast = now - 1 minute
  absl::Duration validity = absl::Hours(24 * 365);
  bool server = false;  // extendedKeyUsage serverAuth (else clientAuth)
};

// A self-signed CA certificate (basicConstraints CA:TRUE, keyCertSign + cRLSign).
absl::StatusOr<PemKeyPair> CreateCertificateAuthority(const std::string& common_name,
                                                      absl::Duration validity);

// A leaf certificate signed by `ca`, with a fresh random 128-bit serial.
absl::StatusOr<PemKeyPair> IssueCertificate(const PemKeyPair& ca, const CertificateSpec& spec);

// Serial of a PEM certificate as uppercase hex without leading zeros (as `openssl x509 -serial`).
absl::StatusOr<std::string> CertificateSerialHex(const std::string& cert_pem);

struct RevokedEntry {
  std::string serial_hex;  // as CertificateSerialHex
  absl::Time revoked_at;
};

// A CRL (v2, with a CRL number) signed by `ca`, listing `revoked`, valid from this_update to
// next_update. A negative crl_number leaves the crlNumber out (as some CAs do; for tests).
absl::StatusOr<std::string> CreateCrl(const PemKeyPair& ca, const std::vector<RevokedEntry>& revoked,
                                      absl::Time this_update, absl::Time next_update,
                                      int64_t crl_number);

// File helpers: WritePrivateFile creates/replaces with mode 0600 (atomically: temp + rename);
// WritePublicFile with mode 0644.
absl::Status WritePrivateFile(const std::string& path, const std::string& contents);
absl::Status WritePublicFile(const std::string& path, const std::string& contents);
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

// The `airlockctl pki` directory layout, on top of the functions above:
//   ca.crt ca.key           the CA
//   crl.pem                 its CRL (re-signed by every Revoke; valid for crl_validity)
//   revoked.txt             "SERIAL_HEX UNIX_SECONDS" per revoked certificate (the CRL's source)
//   crl_number              last CRL number
//   server.crt server.key   from InitPki
//   <name>.crt <name>.key   from IssueClient
struct PkiInitOptions {
  std::string ca_common_name = "Airlock Dev CA";
  std::vector<std::string> server_dns_names = {"localhost"};
  std::vector<std::string> server_ip_addresses = {"127.0.0.1", "::1"};
  absl::Duration ca_validity = absl::Hours(24 * 365 * 5);
  absl::Duration leaf_validity = absl::Hours(24 * 365);
  absl::Duration crl_validity = absl::Hours(24 * 30);
};
// Refuses a directory that already holds ca.key (never overwrites a CA).
absl::Status InitPki(const std::string& dir, const PkiInitOptions& options);
// Issues <dir>/<file_stem>.crt/.key. Refuses to overwrite an existing file.
absl::Status IssueClient(const std::string& dir, const std::string& file_stem,
                         const CertificateSpec& spec);
// Adds the certificate's serial to revoked.txt and re-signs crl.pem. INVALID_ARGUMENT when the
// certificate was not issued by this directory's CA; ALREADY_EXISTS when it is already revoked.
absl::Status Revoke(const std::string& dir, const std::string& cert_pem,
                    absl::Duration crl_validity = absl::Hours(24 * 30));
// Re-signs crl.pem with the current revoked list (refreshes nextUpdate).
absl::Status RefreshCrl(const std::string& dir, absl::Duration crl_validity = absl::Hours(24 * 30));

}  // namespace airlock::auth

// Who is calling: the identity named by the verified client certificate, as configured
// (subject CN, or the first email / DNS / URI subject alternative name).
//
// Thread-safety: free functions, safe from any thread (IdentityFromAuthContext's cache is locked).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "airlock/v1/config.pb.h"
#include "grpcpp/security/auth_context.h"

namespace airlock::auth {

// Longest identity name a certificate may carry (CN or SAN, whichever is configured). Longer is
// not an identity: the call is refused as unauthenticated (no real user name comes near it, and
// the name is echoed into logs and audit records).
inline constexpr size_t kMaxIdentityNameBytes = 256;
// A subject longer than this is kept bounded (auth::BoundedForRecord) in Identity::subject.
inline constexpr size_t kMaxSubjectBytes = 1024;

struct Identity {
  std::string name;         // what users[].name is matched against; at most kMaxIdentityNameBytes
  std::string subject;      // the certificate's subject, RFC 2253 ("CN=alice,O=Clinic"), bounded
  std::string fingerprint;  // SHA-256 of the DER certificate, lowercase hex
  std::string serial_hex;   // uppercase hex
};

// From a PEM certificate. UNAUTHENTICATED naming what is missing (e.g. "client certificate has no
// email subject alternative name") when the configured source is absent or empty, when the
// subject holds more than one CN, or what is too long (more than kMaxIdentityNameBytes; the name
// itself is not echoed).
absl::StatusOr<Identity> IdentityFromCertificate(const std::string& cert_pem,
                                                 airlock::v1::config::IdentitySource source);

// UNAUTHENTICATED when the certificate's subject has more than one common name (IdentityFromCertificate
// refuses such a certificate too, whatever the source; the TLS handshake checks it with this).
absl::Status CheckSubjectUnambiguous(const std::string& cert_pem);

// From the PEM of a connection's verified client certificate, whatever the transport.
// UNAUTHENTICATED when `cert_pem` is empty. Remembers the identities of the last few hundred
// certificates (a process-wide, thread-safe cache keyed by the certificate bytes and the source),
// so a call on a known certificate does not parse it again.
absl::StatusOr<Identity> IdentityFromPeerCertificate(std::string_view cert_pem,
                                                     airlock::v1::config::IdentitySource source);

// The same from a gRPC call's auth context (its x509_pem_cert property).
absl::StatusOr<Identity> IdentityFromAuthContext(const grpc::AuthContext& context,
                                                 airlock::v1::config::IdentitySource source);

// The PEM of a gRPC call's client certificate; empty when it carries none.
std::string PeerCertificatePem(const grpc::AuthContext& context);

// What a call's certificate says when it names no identity (IdentityFromPeerCertificate failed):
// the subject (bounded) and the fingerprint, for the record of the refusal; `name` stays empty.
// All empty when there is no certificate or it cannot be parsed.
Identity CertificateDetails(std::string_view cert_pem);
Identity CertificateDetails(const grpc::AuthContext& context);

}  // namespace airlock::auth

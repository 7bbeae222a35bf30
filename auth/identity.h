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

struct Identity {
  std::string name;         // what users[].name is matched against
  std::string subject;      // the certificate's subject, RFC 2253 ("CN=alice,O=Clinic")
  std::string fingerprint;  // SHA-256 of the DER certificate, lowercase hex
  std::string serial_hex;   // uppercase hex
};

// From a PEM certificate. UNAUTHENTICATED naming what is missing (e.g. "client certificate has no
// email subject alternative name") when the configured source is absent or empty, or when the
// subject holds more than one CN.
absl::StatusOr<Identity> IdentityFromCertificate(const std::string& cert_pem,
                                                 airlock::v1::config::IdentitySource source);

// UNAUTHENTICATED when the certificate's subject has more than one common name (IdentityFromCertificate
// refuses such a certificate too, whatever the source; the TLS handshake checks it with this).
absl::Status CheckSubjectUnambiguous(const std::string& cert_pem);

// From a call's auth context (its x509_pem_cert property). UNAUTHENTICATED when there is none.
// Remembers the identities of the last few hundred certificates (a process-wide, thread-safe
// cache keyed by the certificate bytes and the source), so a call on a known certificate does not
// parse it again.
absl::StatusOr<Identity> IdentityFromAuthContext(const grpc::AuthContext& context,
                                                 airlock::v1::config::IdentitySource source);

}  // namespace airlock::auth

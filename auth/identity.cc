// Client identity from the verified certificate: configured name source, subject, fingerprint, serial.
#include "auth/identity.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "auth/bounded_text.h"
#include "auth/openssl_util.h"
#include "inference/base/status.h"

namespace airlock::auth {
namespace {

using airlock::v1::config::IdentitySource;

using ossl::GeneralNamesPtr;
using ossl::X509Ptr;

// An ASN.1 string as UTF-8. A name with an embedded NUL is refused (empty result): "alice\0x"
// must never match the user "alice".
std::string Utf8(const ASN1_STRING* value) {
  unsigned char* out = nullptr;
  int length = ASN1_STRING_to_UTF8(&out, value);
  if (length < 0) {
    ERR_clear_error();
    return "";
  }
  std::string text(reinterpret_cast<const char*>(out), static_cast<size_t>(length));
  OPENSSL_free(out);
  if (text.find('\0') != std::string::npos) return "";
  return text;
}

std::string CommonName(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) return "";
  return Utf8(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index)));
}

int CommonNameCount(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  int count = 0;
  for (int index = -1; (index = X509_NAME_get_index_by_NID(subject, NID_commonName, index)) >= 0;) ++count;
  return count;
}

// A subject with two CNs names two callers: whichever one a reader picks (the first, in DER order,
// for us; the last for some log tools) the other is a lie. Refused whatever the identity source.
absl::Status RequireOneCommonNameAtMost(X509* cert) {
  if (const int count = CommonNameCount(cert); count > 1) {
    return absl::UnauthenticatedError(absl::StrCat("client certificate subject \"",
                                                   ossl::NameToString(X509_get_subject_name(cert)), "\" has ",
                                                   count, " common names (CN); an ambiguous identity is refused"));
  }
  return absl::OkStatus();
}

std::string FirstSan(X509* cert, int type) {
  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) return "";
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    int name_type = 0;
    void* value = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names.get(), i), &name_type);
    if (name_type == type) return Utf8(static_cast<const ASN1_STRING*>(value));
  }
  return "";
}

}  // namespace

namespace {

// Subject (bounded), fingerprint and serial of a parsed certificate.
absl::StatusOr<Identity> Details(X509* cert) {
  Identity identity;
  identity.subject = BoundedForRecord(ossl::NameToString(X509_get_subject_name(cert)), kMaxSubjectBytes);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  if (X509_digest(cert, EVP_sha256(), digest, &digest_length) != 1) {
    ERR_clear_error();
    return absl::InternalError("cannot hash the client certificate");
  }
  identity.fingerprint = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), digest_length));
  AIRLOCK_ASSIGN_OR_RETURN(identity.serial_hex, ossl::SerialHex(X509_get0_serialNumber(cert)));
  return identity;
}

}  // namespace

absl::StatusOr<Identity> IdentityFromCertificate(const std::string& cert_pem,
                                                 IdentitySource source) {
  absl::StatusOr<X509Ptr> parsed = ossl::ParseCertificate(cert_pem, "the client");
  if (!parsed.ok()) return absl::UnauthenticatedError("cannot parse the client certificate");
  const X509Ptr cert = *std::move(parsed);
  AIRLOCK_RETURN_IF_ERROR(RequireOneCommonNameAtMost(cert.get()));
  std::string name;
  std::string_view what;
  switch (source) {
    case airlock::v1::config::IDENTITY_SOURCE_UNSPECIFIED:
    case airlock::v1::config::SUBJECT_CN:
      name = CommonName(cert.get());
      what = "subject common name";
      break;
    case airlock::v1::config::SAN_EMAIL:
      name = FirstSan(cert.get(), GEN_EMAIL);
      what = "email subject alternative name";
      break;
    case airlock::v1::config::SAN_DNS:
      name = FirstSan(cert.get(), GEN_DNS);
      what = "DNS subject alternative name";
      break;
    case airlock::v1::config::SAN_URI:
      name = FirstSan(cert.get(), GEN_URI);
      what = "URI subject alternative name";
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown identity source ", source));
  }
  if (name.empty()) return absl::UnauthenticatedError(absl::StrCat("client certificate has no ", ToAbsl(what)));
  // Refused, not cut: a cut name could match a configured user it is not.
  if (name.size() > kMaxIdentityNameBytes) {
    return absl::UnauthenticatedError(absl::StrCat("client certificate's ", ToAbsl(what), " is ", name.size(),
                                                   " bytes; an identity is at most ", kMaxIdentityNameBytes));
  }
  AIRLOCK_ASSIGN_OR_RETURN(Identity identity, Details(cert.get()));
  identity.name = std::move(name);
  return identity;
}

namespace {

// Identity is a pure function of the certificate bytes and the configured source, and parsing a
// certificate (OpenSSL 3 decodes its EC key) was over half of a small call's cost: remember the
// last few hundred. Revocation is not affected: it is checked at every handshake.
class IdentityCache {
 public:
  absl::StatusOr<Identity> Get(std::string_view pem, IdentitySource source) {
    std::string key(pem);
    key.push_back(static_cast<char>(source));
    {
      absl::MutexLock lock(&mutex_);
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    absl::StatusOr<Identity> identity = IdentityFromCertificate(std::string(pem), source);
    if (identity.ok()) {
      absl::MutexLock lock(&mutex_);
      if (cache_.size() >= kMaxEntries) cache_.clear();  // simple bound; refills at once
      cache_.emplace(std::move(key), *identity);
    }
    return identity;
  }

 private:
  static constexpr size_t kMaxEntries = 512;
  absl::Mutex mutex_;
  absl::flat_hash_map<std::string, Identity> cache_ ABSL_GUARDED_BY(mutex_);
};

IdentityCache& Identities() {
  static IdentityCache* cache = new IdentityCache();
  return *cache;
}

}  // namespace

absl::Status CheckSubjectUnambiguous(const std::string& cert_pem) {
  absl::StatusOr<X509Ptr> parsed = ossl::ParseCertificate(cert_pem, "the client");
  if (!parsed.ok()) return absl::UnauthenticatedError("cannot parse the client certificate");
  return RequireOneCommonNameAtMost(parsed->get());
}

absl::StatusOr<Identity> IdentityFromPeerCertificate(std::string_view cert_pem, IdentitySource source) {
  if (cert_pem.empty()) return absl::UnauthenticatedError("the connection carries no client certificate");
  return Identities().Get(cert_pem, source);
}

std::string PeerCertificatePem(const grpc::AuthContext& context) {
  std::vector<grpc::string_ref> pems = context.FindPropertyValues("x509_pem_cert");
  if (pems.empty()) return "";
  return std::string(pems[0].data(), pems[0].size());
}

absl::StatusOr<Identity> IdentityFromAuthContext(const grpc::AuthContext& context,
                                                 IdentitySource source) {
  std::vector<grpc::string_ref> pems = context.FindPropertyValues("x509_pem_cert");
  return IdentityFromPeerCertificate(
      pems.empty() ? std::string_view() : std::string_view(pems[0].data(), pems[0].size()), source);
}

Identity CertificateDetails(std::string_view cert_pem) {
  if (cert_pem.empty()) return Identity{};
  absl::StatusOr<X509Ptr> parsed = ossl::ParseCertificate(std::string(cert_pem), "the client");
  if (!parsed.ok()) return Identity{};
  absl::StatusOr<Identity> details = Details(parsed->get());
  return details.ok() ? *std::move(details) : Identity{};
}

Identity CertificateDetails(const grpc::AuthContext& context) { return CertificateDetails(PeerCertificatePem(context)); }

}  // namespace airlock::auth

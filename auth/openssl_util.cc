// Internal OpenSSL plumbing shared by auth/*.cc: one implementation of each helper in openssl_util.h.
#include "auth/openssl_util.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "auth/dev_pki.h"
#include "inference/base/status.h"

namespace airlock::auth::ossl {
namespace {

// Drains the error queue into "error; error; ...", empty when it was empty.
std::string DrainErrors() {
  std::string message;
  unsigned long code;  // NOLINT(runtime/int): OpenSSL's type
  while ((code = ERR_get_error()) != 0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    absl::StrAppend(&message, message.empty() ? "" : "; ", buffer);
  }
  return message;
}

// Reads PEM objects with `read` (PEM_read_bio_X509, PEM_read_bio_X509_CRL) until the input ends.
// `kind` names the object in the error for a malformed block.
template <typename Ptr, typename Read>
absl::StatusOr<std::vector<Ptr>> ParseAllPem(const std::string& pem, Read read,
                                             std::string_view kind) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return absl::InternalError("BIO_new_mem_buf failed");
  std::vector<Ptr> objects;
  while (auto* object = read(bio.get(), nullptr, nullptr, nullptr)) {
    objects.emplace_back(object);
  }
  // The loop ends on "no start line" at the end of input; anything else is a broken PEM block.
  const unsigned long last = ERR_peek_last_error();  // NOLINT(runtime/int): OpenSSL's type
  if (last != 0 &&
      !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot parse ", ToAbsl(kind), ": ", OpenSslErrors()));
  }
  ERR_clear_error();
  return objects;
}

}  // namespace

std::string OpenSslErrors() {
  std::string message = DrainErrors();
  return message.empty() ? "unknown OpenSSL error" : message;
}

absl::Status OpenSslError(std::string_view what) {
  const std::string errors = DrainErrors();
  if (errors.empty()) return absl::InternalError(ToAbsl(what));
  return absl::InternalError(absl::StrCat(ToAbsl(what), ": ", errors));
}

int NoPassword(char* /*buffer*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) { return -1; }

absl::StatusOr<std::string> BioContents(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);  // NOLINT(runtime/int): OpenSSL's type
  if (size < 0) return OpenSslError("BIO_get_mem_data");
  return std::string(data, static_cast<size_t>(size));
}

absl::StatusOr<std::string> CertificatePem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return OpenSslError("PEM_write_bio_X509");
  return BioContents(bio.get());
}

absl::StatusOr<absl::Time> ToTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("unreadable time");
  }
  return absl::FromTimeT(timegm(&tm));
}

std::string TimeText(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

std::string NameToString(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) {
    ERR_clear_error();
    return "";
  }
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  absl::StatusOr<std::string> text = BioContents(bio.get());
  return text.ok() ? *std::move(text) : std::string();
}

absl::StatusOr<std::string> SerialHex(const ASN1_INTEGER* serial) {
  BnPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) return OpenSslError("ASN1_INTEGER_to_BN");
  // BN_bn2hex writes whole octets in uppercase, exactly as `openssl x509 -serial`.
  char* hex = BN_bn2hex(bn.get());
  if (hex == nullptr) return OpenSslError("BN_bn2hex");
  std::string result(hex);
  OPENSSL_free(hex);
  return result;
}

absl::StatusOr<X509Ptr> ParseCertificate(const std::string& pem, std::string_view what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return OpenSslError(absl::StrCat("cannot parse ", ToAbsl(what), " certificate"));
  return cert;
}

absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const std::string& pem) {
  return ParseAllPem<X509Ptr>(pem, PEM_read_bio_X509, "certificate");
}

absl::StatusOr<std::vector<X509CrlPtr>> ParseCrls(const std::string& pem) {
  return ParseAllPem<X509CrlPtr>(pem, PEM_read_bio_X509_CRL, "CRL");
}

absl::StatusOr<std::string> ReadNamedFile(std::string_view what, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(ToAbsl(what), " is not set"));
  absl::StatusOr<std::string> text = ReadTextFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat(ToAbsl(what), " ", path, ": ", text.status().message()));
  }
  return text;
}

absl::StatusOr<absl::Time> EarliestNotAfter(std::string_view what, const std::string& path) {
  AIRLOCK_ASSIGN_OR_RETURN(const std::string pem, ReadNamedFile(what, path));
  absl::StatusOr<std::vector<X509Ptr>> certs = ParseCertificates(pem);
  if (!certs.ok()) {
    return absl::Status(certs.status().code(),
                        absl::StrCat(ToAbsl(what), " ", path, ": ", certs.status().message()));
  }
  if (certs->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(ToAbsl(what), " ", path, ": holds no PEM certificate"));
  }
  absl::Time earliest = absl::InfiniteFuture();
  for (const X509Ptr& cert : *certs) {
    AIRLOCK_ASSIGN_OR_RETURN(const absl::Time not_after, ToTime(X509_get0_notAfter(cert.get())));
    earliest = std::min(earliest, not_after);
  }
  return earliest;
}

}  // namespace airlock::auth::ossl

// mTLS server credentials: file-watched certificates, revocation checked in the handshake, file checks.
#include "auth/tls_credentials.h"

#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "auth/dev_pki.h"
#include "auth/identity.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "inference/base/status.h"

namespace airlock::auth {
namespace {

template <auto kFree>
struct OsslDeleter {
  template <typename T>
  void operator()(T* p) const {
    kFree(p);
  }
};
using BioPtr = std::unique_ptr<BIO, OsslDeleter<BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, OsslDeleter<X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, OsslDeleter<EVP_PKEY_free>>;
using ConfPtr = std::unique_ptr<CONF, OsslDeleter<NCONF_free>>;

std::string OpenSslErrors() {
  std::string message;
  unsigned long code;  // NOLINT(runtime/int): OpenSSL's type
  while ((code = ERR_get_error()) != 0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    absl::StrAppend(&message, message.empty() ? "" : "; ", buffer);
  }
  return message.empty() ? "unknown OpenSSL error" : message;
}

std::string TimeText(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

absl::StatusOr<absl::Time> ToTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("unreadable time");
  }
  return absl::FromTimeT(timegm(&tm));
}

int NoPassword(char*, int, int, void*) { return -1; }

// Reads `path` for the file role `what` ("certificate file"), naming both in every error.
absl::StatusOr<std::string> ReadNamed(std::string_view what, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(ToAbsl(what), " is not set"));
  absl::StatusOr<std::string> text = ReadTextFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat(ToAbsl(what), " ", path, ": ", text.status().message()));
  }
  return text;
}

std::vector<X509Ptr> ParseAll(const std::string& pem) {
  std::vector<X509Ptr> certs;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certs.emplace_back(cert);
  }
  ERR_clear_error();  // the loop ends on "no start line"
  return certs;
}

// gRPC 1.51's TLS credentials have no public TLS version setting (always 1.2..1.3), and gRPC
// sets the minimum itself after creating its SSL_CTX. What it leaves alone are the SSL_OP_NO_*
// protocol options, which OpenSSL applies from the "system_default" SSL configuration at
// SSL_CTX_new. So TLS 1.3-only loads such a configuration into the process: every SSL_CTX
// created afterwards, in this process, refuses TLS 1.2 and older. It cannot be undone without a
// restart, which suits a daemon whose only TLS endpoints are its own listeners.
absl::Status RequireTls13ProcessWide() {
  static absl::Status* result = [] {
    constexpr char kConfig[] =
        "openssl_conf = airlock_openssl_init\n"
        "[airlock_openssl_init]\n"
        "ssl_conf = airlock_ssl_conf\n"
        "[airlock_ssl_conf]\n"
        "system_default = airlock_tls13_only\n"
        "[airlock_tls13_only]\n"
        "Protocol = -ALL, TLSv1.3\n";
    OPENSSL_init_ssl(0, nullptr);
    ConfPtr conf(NCONF_new(nullptr));
    BioPtr bio(BIO_new_mem_buf(kConfig, sizeof(kConfig) - 1));
    long error_line = 0;  // NOLINT(runtime/int): OpenSSL's type
    if (!conf || !bio || NCONF_load_bio(conf.get(), bio.get(), &error_line) <= 0 ||
        CONF_modules_load(conf.get(), nullptr, 0) <= 0) {
      return new absl::Status(absl::InternalError(
          absl::StrCat("cannot restrict TLS to 1.3: ", OpenSslErrors())));
    }
    // Proof that it took: a fresh context must now exclude TLS 1.2.
    std::unique_ptr<SSL_CTX, OsslDeleter<SSL_CTX_free>> probe(SSL_CTX_new(TLS_method()));
    if (!probe || (SSL_CTX_get_options(probe.get()) & SSL_OP_NO_TLSv1_2) == 0) {
      ERR_clear_error();
      return new absl::Status(
          absl::InternalError("cannot restrict TLS to 1.3: OpenSSL ignored the configuration"));
    }
    return new absl::Status();
  }();
  return *result;
}

// Runs after OpenSSL verified the client's chain against client_ca_file: revocation is the last
// word. Synchronous: the check is an in-memory lookup.
class RevocationVerifier final : public grpc::experimental::ExternalCertificateVerifier {
 public:
  RevocationVerifier(std::shared_ptr<RevocationChecker> revocation,
                     std::function<void(const std::string& reason)> log_rejection)
      : revocation_(std::move(revocation)), log_rejection_(std::move(log_rejection)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/,
              grpc::Status* sync_status) override {
    const grpc::string_ref cert = request->peer_cert();
    const std::string pem(cert.data(), cert.size());
    absl::Status status =
        pem.empty() ? absl::UnauthenticatedError("no client certificate")
                    : revocation_ == nullptr
                          ? absl::FailedPreconditionError("no revocation checker configured")
                          : revocation_->Check(pem, absl::Now());
    if (status.ok()) {
      *sync_status = grpc::Status::OK;
      return true;
    }
    std::string who;
    if (absl::StatusOr<Identity> identity =
            IdentityFromCertificate(pem, airlock::v1::config::SUBJECT_CN);
        identity.ok()) {
      who = absl::StrCat(" \"", identity->subject, "\" serial ", identity->serial_hex);
    } else if (absl::StatusOr<std::string> serial = CertificateSerialHex(pem); serial.ok()) {
      who = absl::StrCat(" serial ", *serial);
    }
    const std::string reason =
        absl::StrCat("TLS handshake refused for client certificate", who, ": ", status.message());
    if (log_rejection_) log_rejection_(reason);
    *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, reason);
    return true;
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest* /*request*/) override {}

 private:
  const std::shared_ptr<RevocationChecker> revocation_;
  const std::function<void(const std::string& reason)> log_rejection_;
};

}  // namespace

absl::Status ValidateTlsFiles(const TlsFiles& files, absl::Time now) {
  AIRLOCK_ASSIGN_OR_RETURN(std::string cert_pem, ReadNamed("certificate file", files.cert_file));
  AIRLOCK_ASSIGN_OR_RETURN(std::string key_pem, ReadNamed("key file", files.key_file));
  AIRLOCK_ASSIGN_OR_RETURN(std::string ca_pem,
                           ReadNamed("client CA file", files.client_ca_file));

  struct stat st;
  if (stat(files.key_file.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("key file ", files.key_file, ": ", std::strerror(errno)));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "key file %s has mode %04o: it must not be accessible by group or others (chmod 600 %s)",
        files.key_file, st.st_mode & 07777, files.key_file));
  }

  std::vector<X509Ptr> chain = ParseAll(cert_pem);
  if (chain.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate file ", files.cert_file, " holds no PEM certificate"));
  }
  BioPtr key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  PkeyPtr key(key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassword, nullptr)
                      : nullptr);
  if (!key) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key file ", files.key_file, " holds no usable (unencrypted PEM) private key: ",
        OpenSslErrors()));
  }
  if (X509_check_private_key(chain[0].get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("key file ", files.key_file,
                                                   " does not match the certificate in ",
                                                   files.cert_file));
  }
  AIRLOCK_ASSIGN_OR_RETURN(absl::Time not_before, ToTime(X509_get0_notBefore(chain[0].get())));
  AIRLOCK_ASSIGN_OR_RETURN(absl::Time not_after, ToTime(X509_get0_notAfter(chain[0].get())));
  if (now < not_before) {
    return absl::FailedPreconditionError(absl::StrCat("certificate ", files.cert_file,
                                                      " is not valid before ",
                                                      TimeText(not_before)));
  }
  if (now >= not_after) {
    return absl::FailedPreconditionError(
        absl::StrCat("certificate ", files.cert_file, " expired at ", TimeText(not_after)));
  }

  std::vector<X509Ptr> cas = ParseAll(ca_pem);
  if (std::none_of(cas.begin(), cas.end(),
                   [](const X509Ptr& cert) { return X509_check_ca(cert.get()) != 0; })) {
    return absl::InvalidArgumentError(
        absl::StrCat("client CA file ", files.client_ca_file, " holds no CA certificate"));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsServerSettings& settings, std::shared_ptr<RevocationChecker> revocation,
    std::function<void(const std::string& reason)> log_rejection) {
  if (settings.min_tls13) {
    absl::Status status = RequireTls13ProcessWide();
    // Fail closed: serving TLS 1.2 to a site that asked for 1.3 only is not an option.
    if (!status.ok()) {
      if (log_rejection) log_rejection(std::string(status.message()));
      AIRLOCK_CHECK(status.ok());
    }
  }
  // gRPC re-reads the files every interval and uses new ones for new connections. One second is
  // its floor; a partially written pair (cert and key not matching) is skipped by gRPC.
  const unsigned int interval = static_cast<unsigned int>(
      std::clamp<int64_t>(absl::ToInt64Seconds(settings.watch_interval), 1, 24 * 3600));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      settings.files.key_file, settings.files.cert_file, settings.files.client_ca_file, interval);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  // No set_crl_directory: gRPC's CRL support fails open (see revocation.h).
  options.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<RevocationVerifier>(
          std::move(revocation), std::move(log_rejection)));
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace airlock::auth

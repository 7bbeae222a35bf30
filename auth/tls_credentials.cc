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
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "auth/dev_pki.h"
#include "auth/identity.h"
#include "auth/openssl_util.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "inference/base/status.h"

namespace airlock::auth {
namespace {

using ossl::BioPtr;
using ossl::OpenSslErrors;
using ossl::PkeyPtr;
using ossl::ReadNamedFile;
using ossl::TimeText;
using ossl::ToTime;
using ossl::X509Ptr;

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
    ossl::ConfPtr conf(NCONF_new(nullptr));
    BioPtr bio(BIO_new_mem_buf(kConfig, sizeof(kConfig) - 1));
    long error_line = 0;  // NOLINT(runtime/int): OpenSSL's type
    if (!conf || !bio || NCONF_load_bio(conf.get(), bio.get(), &error_line) <= 0 ||
        CONF_modules_load(conf.get(), nullptr, 0) <= 0) {
      return new absl::Status(absl::InternalError(
          absl::StrCat("cannot restrict TLS to 1.3: ", OpenSslErrors())));
    }
    // Proof that it took: a fresh context must now exclude TLS 1.2.
    ossl::SslCtxPtr probe(SSL_CTX_new(TLS_method()));
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
    const absl::Status status = CheckClientCertificate(revocation_.get(), std::string(cert.data(), cert.size()));
    if (status.ok()) {
      *sync_status = grpc::Status::OK;
      return true;
    }
    if (log_rejection_) log_rejection_(std::string(status.message()));
    *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(status.message()));
    return true;
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest* /*request*/) override {}

 private:
  const std::shared_ptr<RevocationChecker> revocation_;
  const std::function<void(const std::string& reason)> log_rejection_;
};

}  // namespace

absl::Status ValidateTlsFiles(const TlsFiles& files, absl::Time now) {
  AIRLOCK_ASSIGN_OR_RETURN(std::string cert_pem,
                           ReadNamedFile("certificate file", files.cert_file));
  AIRLOCK_ASSIGN_OR_RETURN(std::string key_pem, ReadNamedFile("key file", files.key_file));
  AIRLOCK_ASSIGN_OR_RETURN(std::string ca_pem,
                           ReadNamedFile("client CA file", files.client_ca_file));

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

  absl::StatusOr<std::vector<X509Ptr>> chain = ossl::ParseCertificates(cert_pem);
  if (!chain.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate file ", files.cert_file, ": ", chain.status().message()));
  }
  if (chain->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate file ", files.cert_file, " holds no PEM certificate"));
  }
  X509* const leaf = (*chain)[0].get();
  BioPtr key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  PkeyPtr key(key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, ossl::NoPassword, nullptr)
                      : nullptr);
  if (!key) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key file ", files.key_file, " holds no usable (unencrypted PEM) private key: ",
        OpenSslErrors()));
  }
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("key file ", files.key_file,
                                                   " does not match the certificate in ",
                                                   files.cert_file));
  }
  AIRLOCK_ASSIGN_OR_RETURN(absl::Time not_before, ToTime(X509_get0_notBefore(leaf)));
  AIRLOCK_ASSIGN_OR_RETURN(absl::Time not_after, ToTime(X509_get0_notAfter(leaf)));
  if (now < not_before) {
    return absl::FailedPreconditionError(absl::StrCat("certificate ", files.cert_file,
                                                      " is not valid before ",
                                                      TimeText(not_before)));
  }
  if (now >= not_after) {
    return absl::FailedPreconditionError(
        absl::StrCat("certificate ", files.cert_file, " expired at ", TimeText(not_after)));
  }

  absl::StatusOr<std::vector<X509Ptr>> cas = ossl::ParseCertificates(ca_pem);
  if (!cas.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("client CA file ", files.client_ca_file, ": ", cas.status().message()));
  }
  if (std::none_of(cas->begin(), cas->end(),
                   [](const X509Ptr& cert) { return X509_check_ca(cert.get()) != 0; })) {
    return absl::InvalidArgumentError(
        absl::StrCat("client CA file ", files.client_ca_file, " holds no CA certificate"));
  }
  return absl::OkStatus();
}

absl::Status CheckClientCertificate(const RevocationChecker* revocation, const std::string& pem) {
  absl::Status status = pem.empty()            ? absl::UnauthenticatedError("no client certificate")
                        : revocation == nullptr ? absl::FailedPreconditionError("no revocation checker configured")
                                                : revocation->Check(pem, absl::Now());
  if (status.ok()) status = CheckSubjectUnambiguous(pem);
  if (status.ok()) return status;
  std::string who;
  if (absl::StatusOr<Identity> identity = IdentityFromCertificate(pem, airlock::v1::config::SUBJECT_CN); identity.ok()) {
    who = absl::StrCat(" \"", identity->subject, "\" serial ", identity->serial_hex);
  } else if (absl::StatusOr<std::string> serial = CertificateSerialHex(pem); serial.ok()) {
    who = absl::StrCat(" serial ", *serial);
  }
  return absl::UnauthenticatedError(
      absl::StrCat("TLS handshake refused for client certificate", who, ": ", status.message()));
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

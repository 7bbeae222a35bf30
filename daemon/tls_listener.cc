// The TLS side of the daemon's HTTPS listeners (tls_listener.h).
#include "daemon/tls_listener.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "auth/openssl_util.h"
#include "daemon/log.h"
#include "inference/base/status.h"

namespace airlock::daemon {

namespace ossl = auth::ossl;

struct TlsListenerContext::Credentials {
  // The files' contents, to notice a change.
  std::string cert_pem;
  std::string key_pem;
  std::string ca_pem;
  ossl::X509Ptr leaf;
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> chain{nullptr, nullptr};  // intermediates
  ossl::PkeyPtr key;
  std::unique_ptr<X509_STORE, void (*)(X509_STORE*)> client_cas{nullptr, nullptr};
  std::unique_ptr<STACK_OF(X509_NAME), void (*)(STACK_OF(X509_NAME)*)> client_ca_names{nullptr, nullptr};
  absl::Time not_after = absl::InfiniteFuture();  // the earliest of the chain's
};

namespace {

// TLS 1.2 suites: those gRPC 1.51's credentials offer on the gRPC port (its GRPC_SSL_CIPHER_SUITES
// default), ECDHE and AES-GCM only. TLS 1.3's suites are all AEAD; OpenSSL's defaults stand.
constexpr char kTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES256-GCM-SHA384";

struct Pems {
  std::string cert_pem;
  std::string key_pem;
  std::string ca_pem;
};

absl::StatusOr<Pems> ReadFiles(const TlsListenerContext::Files& options) {
  Pems f;
  AIRLOCK_ASSIGN_OR_RETURN(f.cert_pem, ossl::ReadNamedFile(options.cert_key, options.cert_file));
  AIRLOCK_ASSIGN_OR_RETURN(f.key_pem, ossl::ReadNamedFile(options.key_key, options.key_file));
  AIRLOCK_ASSIGN_OR_RETURN(f.ca_pem, ossl::ReadNamedFile(options.client_ca_key, options.client_ca_file));
  return f;
}

absl::StatusOr<std::vector<ossl::X509Ptr>> Certificates(const char* what, const std::string& path,
                                                        const std::string& pem) {
  absl::StatusOr<std::vector<ossl::X509Ptr>> certs = ossl::ParseCertificates(pem);
  if (!certs.ok()) return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": ", certs.status().message()));
  if (certs->empty()) return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": no PEM certificate in it"));
  return certs;
}

// Parses and checks one set of files: a certificate chain, the private key of its first
// certificate, and at least one client CA certificate.
absl::StatusOr<std::shared_ptr<const TlsListenerContext::Credentials>> LoadCredentials(
    const TlsListenerContext::Files& options, Pems files) {
  auto c = std::make_shared<TlsListenerContext::Credentials>();
  AIRLOCK_ASSIGN_OR_RETURN(std::vector<ossl::X509Ptr> chain,
                           Certificates(options.cert_key.c_str(), options.cert_file, files.cert_pem));
  for (const ossl::X509Ptr& cert : chain) {
    AIRLOCK_ASSIGN_OR_RETURN(absl::Time not_after, ossl::ToTime(X509_get0_notAfter(cert.get())));
    c->not_after = std::min(c->not_after, not_after);
  }
  c->chain = {sk_X509_new_null(), [](STACK_OF(X509)* s) { sk_X509_pop_free(s, X509_free); }};
  for (size_t i = 1; i < chain.size(); ++i) {
    if (c->chain == nullptr || sk_X509_push(c->chain.get(), chain[i].get()) == 0) {
      return ossl::OpenSslError(options.listener + ": certificate chain");
    }
    chain[i].release();  // owned by the stack now
  }
  c->leaf = std::move(chain[0]);

  ossl::BioPtr bio(BIO_new_mem_buf(files.key_pem.data(), static_cast<int>(files.key_pem.size())));
  c->key.reset(bio == nullptr ? nullptr : PEM_read_bio_PrivateKey(bio.get(), nullptr, &ossl::NoPassword, nullptr));
  if (c->key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.key_key, " ", options.key_file, ": cannot parse the private key: ", ossl::OpenSslErrors()));
  }
  if (X509_check_private_key(c->leaf.get(), c->key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(options.key_key, " ", options.key_file, " is not the key of the certificate in ",
                                                   options.cert_key, " ", options.cert_file));
  }

  AIRLOCK_ASSIGN_OR_RETURN(std::vector<ossl::X509Ptr> cas,
                           Certificates(options.client_ca_key.c_str(), options.client_ca_file, files.ca_pem));
  c->client_cas = {X509_STORE_new(), &X509_STORE_free};
  c->client_ca_names = {sk_X509_NAME_new_null(), [](STACK_OF(X509_NAME)* s) { sk_X509_NAME_pop_free(s, X509_NAME_free); }};
  if (c->client_cas == nullptr || c->client_ca_names == nullptr) return ossl::OpenSslError(options.listener + ": client CAs");
  for (const ossl::X509Ptr& ca : cas) {
    X509_NAME* name = X509_NAME_dup(X509_get_subject_name(ca.get()));
    if (X509_STORE_add_cert(c->client_cas.get(), ca.get()) != 1 || name == nullptr ||
        sk_X509_NAME_push(c->client_ca_names.get(), name) == 0) {
      X509_NAME_free(name);
      return ossl::OpenSslError(options.listener + ": client CAs");
    }
  }
  c->cert_pem = std::move(files.cert_pem);
  c->key_pem = std::move(files.key_pem);
  c->ca_pem = std::move(files.ca_pem);
  return std::shared_ptr<const TlsListenerContext::Credentials>(std::move(c));
}

// The SSL_CTX slot that points back at the TlsListenerContext, for the callbacks.
int ServerIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// The SSL slot holding when the connection's handshake started (a heap absl::Time, freed with the SSL).
int HandshakeStartIndex() {
  static const int index = SSL_get_ex_new_index(
      0, nullptr, nullptr, nullptr,
      [](void*, void* start, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<absl::Time*>(start); });
  return index;
}

}  // namespace

void TlsListenerContext::HandshakeClock(const SSL* ssl, int where, int ret) {
  auto* mutable_ssl = const_cast<SSL*>(ssl);  // OpenSSL's callback type is const; ex_data needs SSL*
  if ((where & SSL_CB_HANDSHAKE_START) != 0) {
    if (SSL_get_ex_data(ssl, HandshakeStartIndex()) == nullptr) {
      auto* start = new absl::Time(absl::Now());
      if (SSL_set_ex_data(mutable_ssl, HandshakeStartIndex(), start) != 1) delete start;
    }
    return;
  }
  // SSL_accept is returning to wait for the client's next bytes (the finished case has ret 1).
  const bool accept_exit = (where & SSL_ST_ACCEPT) != 0 && (where & SSL_CB_EXIT) != 0;  // not ACCEPT_LOOP
  if (!accept_exit || ret > 0 || SSL_is_init_finished(ssl)) return;
  const auto* start = static_cast<const absl::Time*>(SSL_get_ex_data(ssl, HandshakeStartIndex()));
  const auto* self = static_cast<const TlsListenerContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ServerIndex()));
  if (start == nullptr || self == nullptr || absl::Now() - *start < self->policy_.handshake_timeout) return;
  // The next wait sees end-of-file at once and the handshake fails; the listener closes the
  // connection. A trickling client cannot reset this clock as it resets each read's.
  if (const int fd = SSL_get_fd(ssl); fd >= 0) ::shutdown(fd, SHUT_RDWR);
}

int TlsListenerContext::VerifyClient(int preverify_ok, X509_STORE_CTX* store) {
  // Chain problems are OpenSSL's to refuse; the leaf then gets the daemon's own check.
  if (preverify_ok != 1 || X509_STORE_CTX_get_error_depth(store) != 0) return preverify_ok;
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* self = static_cast<TlsListenerContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ServerIndex()));
  const std::string pem = ossl::CertificatePem(X509_STORE_CTX_get_current_cert(store)).value_or("");
  return self->check_client_(pem).ok() ? 1 : 0;
}

int TlsListenerContext::UseCurrentCredentials(SSL* ssl, void* arg) {
  const std::shared_ptr<const Credentials> c = static_cast<TlsListenerContext*>(arg)->credentials();
  // Each call takes its own references: the set may be replaced while this connection lives.
  if (SSL_use_cert_and_key(ssl, c->leaf.get(), c->key.get(), c->chain.get(), 1) != 1 ||
      SSL_set1_verify_cert_store(ssl, c->client_cas.get()) != 1) {
    return 0;
  }
  STACK_OF(X509_NAME)* names = SSL_dup_CA_list(c->client_ca_names.get());
  if (names == nullptr) return 0;
  SSL_set_client_CA_list(ssl, names);  // tells clients which CAs are accepted
  return 1;
}

std::shared_ptr<const TlsListenerContext::Credentials> TlsListenerContext::credentials() const {
  absl::MutexLock lock(&mu_);
  return credentials_;
}

absl::Time TlsListenerContext::not_after() const {
  const std::shared_ptr<const Credentials> c = credentials();
  return c == nullptr ? absl::InfiniteFuture() : c->not_after;
}

absl::Status TlsListenerContext::Reload() {
  const std::shared_ptr<const Credentials> current = credentials();
  absl::StatusOr<Pems> files = ReadFiles(files_);
  if (files.ok() && files->cert_pem == current->cert_pem && files->key_pem == current->key_pem &&
      files->ca_pem == current->ca_pem) {
    return absl::OkStatus();
  }
  absl::StatusOr<std::shared_ptr<const Credentials>> next =
      files.ok() ? LoadCredentials(files_, *std::move(files))
                 : absl::StatusOr<std::shared_ptr<const Credentials>>(files.status());
  absl::MutexLock lock(&mu_);
  if (!next.ok()) {
    // Said once per distinct problem (a rotation caught half-way is retried at the next check).
    if (next.status().message() != last_refusal_) {
      last_refusal_ = std::string(next.status().message());
      LogWarning(absl::StrCat(files_.listener, " certificate not reloaded; the current one stays"),
                 {{"error", last_refusal_},
                  {"not_after", ossl::TimeText(current->not_after)}});
    }
    return next.status();
  }
  credentials_ = *std::move(next);
  last_refusal_.clear();
  LogInfo(absl::StrCat(files_.listener, " certificate reloaded"), {{"cert_file", files_.cert_file},
                                            {"not_after", ossl::TimeText(credentials_->not_after)}});
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TlsListenerContext>> TlsListenerContext::Attach(SSL_CTX* ctx, Files files,
                                                                               Policy policy,
                                                                               ClientCheck check_client) {
  std::unique_ptr<TlsListenerContext> t(new TlsListenerContext());
  t->files_ = std::move(files);
  t->policy_ = policy;
  t->check_client_ = std::move(check_client);
  AIRLOCK_ASSIGN_OR_RETURN(Pems pems, ReadFiles(t->files_));
  AIRLOCK_ASSIGN_OR_RETURN(std::shared_ptr<const Credentials> credentials, LoadCredentials(t->files_, std::move(pems)));
  {
    absl::MutexLock lock(&t->mu_);
    t->credentials_ = std::move(credentials);
  }
  // The gRPC port's policy (see kTls12Ciphers); anything looser here would be the weak door.
  if (SSL_CTX_set_min_proto_version(ctx, policy.min_tls13 ? TLS1_3_VERSION : TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) {
    return ossl::OpenSslError(t->files_.listener + ": TLS version and cipher suites");
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_TICKET);
  // No session resumption: every connection is a full handshake, so its client certificate is
  // verified (chain, CRLs, the daemon's check) each time. Resuming a session needs a session id
  // context once peers are verified; without one OpenSSL failed every resumption attempt with an
  // internal_error alert, which clients that resume (Node's undici, the official OpenAI client)
  // saw as a connection error on every second request.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (SSL_CTX_set_num_tickets(ctx, 0) != 1) return ossl::OpenSslError(t->files_.listener + ": session tickets");
  static constexpr unsigned char kSessionContext[] = "airlockd";
  if (SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1) != 1) {
    return ossl::OpenSslError(t->files_.listener + ": session id context");
  }
  SSL_CTX_set_info_callback(ctx, &TlsListenerContext::HandshakeClock);
  SSL_CTX_set_ex_data(ctx, ServerIndex(), t.get());
  // A certificate a client presents is always verified; with client_certificate_optional a client
  // may present none (its calls then need another credential: AdmitCall).
  SSL_CTX_set_verify(ctx,
                     t->policy_.client_certificate_optional ? SSL_VERIFY_PEER
                                                            : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     &TlsListenerContext::VerifyClient);
  // Certificate, key, chain and client CAs come from the current credentials at each handshake.
  SSL_CTX_set_cert_cb(ctx, &TlsListenerContext::UseCurrentCredentials, t.get());
  TlsListenerContext* self = t.get();
  t->watcher_ = std::thread([self] {
    while (!self->stop_watching_.WaitForNotificationWithTimeout(self->policy_.watch_interval)) {
      self->Reload().IgnoreError();  // logged there
    }
  });
  return t;
}

TlsListenerContext::~TlsListenerContext() {
  stop_watching_.Notify();
  if (watcher_.joinable()) watcher_.join();
}

}  // namespace airlock::daemon

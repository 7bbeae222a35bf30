// The metrics listener on cpp-httplib: TLS settings on its OpenSSL context, the three routes, and
// a clean stop.
#include "daemon/metrics_server.h"

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <chrono>
#include <fstream>
#include <utility>

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "auth/openssl_util.h"
#include "daemon/log.h"

namespace airlock::daemon {
namespace {

constexpr int kWorkerThreads = 2;

// The SSL_CTX slot that points back at the MetricsServer, for the verify callback.
int ServerIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

}  // namespace

int MetricsServer::VerifyClient(int preverify_ok, X509_STORE_CTX* store) {
  // Chain problems are OpenSSL's to refuse; the leaf then gets the daemon's own check.
  if (preverify_ok != 1 || X509_STORE_CTX_get_error_depth(store) != 0) return preverify_ok;
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* self = static_cast<MetricsServer*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ServerIndex()));
  std::string pem;
  if (std::unique_ptr<BIO, int (*)(BIO*)> bio(BIO_new(BIO_s_mem()), &BIO_free);
      bio != nullptr && PEM_write_bio_X509(bio.get(), X509_STORE_CTX_get_current_cert(store)) == 1) {
    pem = auth::ossl::BioContents(bio.get()).value_or("");
  }
  return self->check_client_(pem).ok() ? 1 : 0;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const MetricsOptions& options,
                                                                    ClientCheck check_client, Handlers handlers) {
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->handlers_ = std::move(handlers);
  s->check_client_ = std::move(check_client);
  if (options.plaintext) {
    s->server_ = std::make_unique<httplib::Server>();
  } else {
    auto tls = std::make_unique<httplib::SSLServer>(options.cert_file.c_str(), options.key_file.c_str(),
                                                    options.client_ca_file.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat("metrics: cannot use the certificate ", options.cert_file,
                                                     ", key ", options.key_file, " or client CA file ",
                                                     options.client_ca_file));
    }
    SSL_CTX* ctx = tls->ssl_context();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    // Tell clients which CAs are accepted (the library verifies against them but does not say).
    SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(options.client_ca_file.c_str()));
    SSL_CTX_set_ex_data(ctx, ServerIndex(), s.get());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, &MetricsServer::VerifyClient);
    s->server_ = std::move(tls);
  }
  httplib::Server& server = *s->server_;
  server.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  MetricsServer* self = s.get();
  server.Get("/metrics", [self](const httplib::Request&, httplib::Response& response) {
    response.set_content(self->handlers_.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain; charset=utf-8");
  });
  server.Get("/readyz", [self](const httplib::Request&, httplib::Response& response) {
    const absl::Status ready = self->handlers_.ready();
    response.status = ready.ok() ? 200 : 503;
    response.set_content(ready.ok() ? std::string("ready\n") : absl::StrCat("not ready: ", ready.message(), "\n"),
                         "text/plain; charset=utf-8");
  });

  const size_t colon = options.listen.rfind(':');
  std::string host = options.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  if (!absl::SimpleAtoi(options.listen.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("metrics.listen: no port in ", options.listen));
  }
  if (port == 0) {
    port = server.bind_to_any_port(host);
  } else if (!server.bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics.listen: could not listen on ", options.listen,
                                               " (address in use, or not an address of this host?)"));
  }
  s->port_ = port;
  s->listener_ = std::thread([self] {
    self->server_->listen_after_bind();
    self->listen_returned_.store(true);
  });
  if (!options.port_file.empty()) {
    std::ofstream out(options.port_file, std::ios::trunc);
    out << port << "\n";
    if (!out.good()) return absl::PermissionDeniedError(absl::StrCat("metrics.port_file: cannot write ", options.port_file));
  }
  LogInfo("metrics listening", {{"address", options.listen},
                                {"port", port},
                                {"scheme", options.plaintext ? "http" : "https (client certificate required)"}});
  return s;
}

MetricsServer::~MetricsServer() {
  if (!listener_.joinable()) return;
  // A stop() before the listener runs would be lost: wait until it runs (or has given up).
  while (!server_->is_running() && !listen_returned_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_->stop();
  listener_.join();
}

}  // namespace airlock::daemon

// The OpenAI-compatible HTTPS listener (config `openai:`, docs/api.md): GET /v1/models,
// GET /v1/models/{id}, POST /v1/chat/completions and POST /v1/completions, unary or streamed as
// server-sent events, under the identities, roles, quotas, audit log and metrics of the gRPC
// listener: every call goes through the same pipeline (call_admission.h, generation_call.h), with
// the route as its method ("openai/v1/chat/completions").
//
// Built on libevent's evhttp with OpenSSL bufferevents (Debian's libevent 2.1): one event loop
// thread serves every connection (no thread per connection or per stream); the engine's threads
// hand pieces and results to it through the loop's thread-safe queue. TLS is the gRPC port's
// (tls_listener.h: certificate, client CAs, the daemon's revocation check at the handshake and at
// each call, TLS policy, rotation). Bounds: request bodies (limits.max_request_bytes: 413),
// headers (16 KiB), a handshake's total time (server.handshake_timeout) and each wait for a
// client's bytes or for its reading ours (kIoTimeout).
//
// Thread-safety: Start, BeginDrain, AwaitCalls and the destructor from one thread (the daemon's); the rest runs on
// the listener's own thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "daemon/call_admission.h"
#include "daemon/config/daemon_options.h"
#include "daemon/model_registry.h"
#include "daemon/tls_listener.h"

namespace airlock::daemon {

class OpenAiServer {
 public:
  struct Settings {
    TlsListenerContext::Files tls_files;
    TlsListenerContext::Policy tls_policy;
    TlsListenerContext::ClientCheck check_client;  // at the handshake (revocation)
    uint32_t max_request_bytes = 1 << 20;           // limits.max_request_bytes
  };

  // Binds options.listen now (before the network sandbox closes socket creation) and serves on a
  // thread of its own. `models` and `config` must outlive the server. Errors name the key at fault.
  static absl::StatusOr<std::unique_ptr<OpenAiServer>> Start(const OpenAiOptions& options, Settings settings,
                                                             const ModelRegistry& models,
                                                             const RuntimeConfigHolder& config);
  // Stops listening and closes every connection. The models' queues must have ended every job of
  // this listener first (ModelRegistry::Shutdown): a late result is dropped, never delivered.
  ~OpenAiServer();

  int port() const { return port_; }

  // The drain, in two steps. BeginDrain: new connections are refused from now on (and requests on
  // open ones get 503); generations still running at `forced_at` will be recorded as UNAVAILABLE,
  // as on gRPC. AwaitCalls: returns once every generation of this listener has ended, or at
  // `forced_at`, when those still running are cancelled (they end within a step).
  void BeginDrain(absl::Time forced_at);
  void AwaitCalls(absl::Time forced_at);

  absl::Status ReloadCertificates();
  absl::Time certificate_not_after() const;

  struct Impl;  // openai_server.cc

 private:
  OpenAiServer() = default;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace airlock::daemon

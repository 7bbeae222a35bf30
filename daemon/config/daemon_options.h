// airlockd's resolved, immutable options: the validated configuration with every default applied.
//
// The rest of the daemon reads these structs, never the raw DaemonConfig, so each default lives in
// one place (ResolveOptions) and is written next to its field below (RocksDB's options.h habit).
// The defaults are the ones stated in proto/airlock/v1/config.proto.
//
// Thread-safety: plain values; share a const DaemonOptions (e.g. through shared_ptr<const>) freely.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "airlock/v1/config.pb.h"
#include "daemon/config/config_loader.h"

namespace airlock::daemon {

// Which part of the verified client certificate names the caller (the proto enum, so that
// auth::IdentityFromCertificate takes it as is). Never IDENTITY_SOURCE_UNSPECIFIED once resolved.
using IdentitySource = airlock::v1::config::IdentitySource;

struct TlsOptions {
  // PEM server certificate chain. Default: none (required).
  std::string cert_file;
  // PEM private key of cert_file, mode 0600 or stricter. Default: none (required).
  std::string key_file;
  // PEM bundle of the CAs whose client certificates are accepted. Default: none (required).
  std::string client_ca_file;
  // PEM CRLs, at least one per CA in client_ca_file. Default: none (at least one required).
  std::vector<std::string> crl_files;
  // Whether TLS 1.2 is refused. Default: true (min_version TLS_1_3; TLS_1_2 must be asked for).
  bool min_tls13 = true;
  // How often the certificate, key, CA and CRL files are re-read for rotation. Default: 10s.
  absl::Duration watch_interval = absl::Seconds(10);
};

// Which calls share cached prompt prefixes (models[].prefix_cache).
enum class PrefixCacheScope {
  kIdentity,  // only calls of the same identity
  kModel,     // every call to the model
  kOff,       // no prefix cache
};

// EngineOptions::Placement, as configured.
enum class Placement { kReplicas, kLayers };

struct ModelOptions {
  // Name clients use in requests. Default: none (required).
  std::string name;
  // Absolute path of the GGUF file. Default: none (required).
  std::string path;
  // Context window in tokens. Default: 0, meaning min(the model's training context, 4096), which
  // the engine resolves when it has read the model.
  uint32_t context_length = 0;
  // CPU threads for this model. Default: std::thread::hardware_concurrency() (1 if unknown).
  uint32_t threads = 1;
  // Whether the KV cache is kept in F32 rather than F16. Default: false (F16).
  bool kv_f32 = false;
  // Chat template family name (a ChatTemplate::Names() entry). Default: "" (recognised from the
  // GGUF's tokenizer.chat_template).
  std::string chat_template;
  // Requests that may wait for this model before RESOURCE_EXHAUSTED. Default: 64.
  uint32_t max_queue = 64;
  // Sequences generated at once in shared batched steps. Default: 16 (1 to 256).
  uint32_t max_sequences = 16;
  // Per-step token budget over all sequences (EngineOptions::n_batch). Default: 64 (16 to 4096).
  uint32_t step_tokens = 64;
  // KV-cache pool in tokens. Default: 0 = max_sequences x context_length, capped at a quarter of
  // physical memory but never below context_length (the engine resolves it).
  uint32_t kv_cache_tokens = 0;
  // Tokens per KV-cache block. Default: 16 (1 to 256).
  uint32_t kv_block_tokens = 16;
  // Who shares cached prompt prefixes. Default: kIdentity (docs/security.md: the time to first
  // token reveals a cached prefix, so sharing across identities lets one probe another's prompts).
  PrefixCacheScope prefix_cache = PrefixCacheScope::kIdentity;
  // Where the model runs (EngineOptions::device): "cpu" or "vulkan:N" / "vulkan:NAME". Default: "cpu".
  std::string device = "cpu";
  // Two or more GPUs instead of `device` (EngineOptions::devices). Default: none.
  std::vector<std::string> devices;
  // How the model is placed on `devices` (EngineOptions::placement). Default: replicas (the
  // configuration must name it whenever devices is set).
  Placement placement = Placement::kReplicas;

  bool operator==(const ModelOptions&) const = default;
};

struct LimitsOptions {
  // Largest request message accepted, in bytes. Default: 1048576 (1 MiB).
  uint32_t max_request_bytes = 1 << 20;
  // Longest prompt in tokens after chat rendering. Default: 0, meaning the model's context length.
  uint32_t max_prompt_tokens = 0;
  // Largest max_tokens a request may ask for. Default: 2048.
  uint32_t max_tokens_per_request = 2048;
  // Longest a request may run; a shorter client deadline wins. Default: 600s.
  absl::Duration max_request_duration = absl::Seconds(600);
  // Concurrent RPCs per connection. Default: 32.
  uint32_t max_concurrent_streams = 32;
  // A connection older than this is closed (GOAWAY) and must handshake again; its calls in flight
  // get max_request_duration to finish. Default: 1h.
  absl::Duration max_connection_age = absl::Hours(1);
};

struct AuditOptions {
  // Directory of the RocksDB state. Default: none (required).
  std::string state_dir;
  // Ed25519 key signing checkpoints; created when absent. Default: none (required).
  std::string signing_key_file;
  // HMAC secret for prompts and outputs; created when absent. Default: none (required).
  std::string hmac_secret_file;
  // A checkpoint at least every this many records. Default: 1000.
  uint32_t checkpoint_every = 1000;
  // ...and at most this long after a record. Default: 10s.
  absl::Duration checkpoint_interval = absl::Seconds(10);
  // 32-byte AES-256-GCM key sealing the prompt/output texts into the records. Default: "" (no
  // text stored).
  std::string sealed_text_key_file;
  // Records older than this are pruned from the start of the chain. Default: infinite (keep all).
  absl::Duration retention = absl::InfiniteDuration();
  // The newest signed checkpoint, kept outside the store (audit/witness.h). Default:
  // "<state_dir>.witness".
  std::string witness_file;
  // A caller's refused calls recorded one by one per minute; beyond, only counted into aggregate
  // records. 0: every refusal recorded. Default: 60.
  uint32_t refusal_records_per_minute = 60;
};

// The metrics endpoint (config MetricsConfig); `listen` empty: no endpoint.
struct MetricsOptions {
  std::string listen;
  bool plaintext = false;
  // Default to the gRPC listener's tls.cert_file, tls.key_file and tls.client_ca_file.
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;
  std::string port_file;

  bool operator==(const MetricsOptions&) const = default;
};

// The OpenAI-compatible endpoint (config OpenAiConfig); `listen` empty: no endpoint. Its TLS
// settings are the gRPC listener's (`tls`).
struct OpenAiOptions {
  std::string listen;
  std::string port_file;
  bool api_keys = false;  // Default: false

  bool operator==(const OpenAiOptions&) const = default;
};

struct DaemonOptions {
  // host:port of the mTLS gRPC listener; port 0 picks a free port. Default: "127.0.0.1:7443".
  std::string listen = "127.0.0.1:7443";
  // On SIGTERM, in-flight requests may finish for this long, then are cancelled. Default: 30s.
  absl::Duration drain_timeout = absl::Seconds(30);
  // A new connection to either listener that has not finished its TLS handshake (gRPC: and the
  // HTTP/2 preface) within this is closed. Default: 5s (1s to 60s).
  absl::Duration handshake_timeout = absl::Seconds(5);
  // Forbid new sockets and outbound connections with seccomp after binding. Default: true.
  bool sandbox = true;
  // File the bound port is written to once listening. Default: "" (none).
  std::string port_file;
  TlsOptions tls;
  // In configuration order; at least one.
  std::vector<ModelOptions> models;
  // Default: SUBJECT_CN.
  IdentitySource identity_source = airlock::v1::config::SUBJECT_CN;
  LimitsOptions limits;
  AuditOptions audit;
  MetricsOptions metrics;
  OpenAiOptions openai;
  // model_signatures: when true, every model must come from a bundle signed by one of
  // trusted_keys (Ed25519 public key PEM files). Default: false.
  bool require_signed_models = false;
  std::vector<std::string> trusted_publisher_keys;
  // The validated message, for what reads it directly (the access policy: users, groups, roles).
  airlock::v1::config::DaemonConfig config;
};

// Applies the defaults to a configuration that ParseConfig accepted. Must not be given a
// configuration that did not pass ValidateConfig (durations are assumed to parse).
DaemonOptions ResolveOptions(const ParsedConfig& parsed);

}  // namespace airlock::daemon

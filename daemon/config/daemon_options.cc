// Resolving a validated DaemonConfig into DaemonOptions: where every default is applied.
#include "daemon/config/daemon_options.h"

#include <algorithm>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

#include "inference/base/status.h"

namespace airlock::daemon {
namespace {

// A validated duration string, or `fallback` when the key was absent (ValidateConfig has checked
// that a present one parses, so failure here is a caller bug).
absl::Duration DurationOr(const std::string& text, absl::Duration fallback) {
  if (text.empty()) return fallback;
  absl::Duration d;
  AIRLOCK_CHECK(absl::ParseDuration(text, &d));
  return d;
}

uint32_t OnlineCpus() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<uint32_t>(n);
}

}  // namespace

DaemonOptions ResolveOptions(const ParsedConfig& parsed) {
  const airlock::v1::config::DaemonConfig& config = parsed.config();
  DaemonOptions options;

  const auto& server = config.server();
  if (!server.listen().empty()) options.listen = server.listen();
  options.drain_timeout = DurationOr(server.drain_timeout(), options.drain_timeout);
  options.handshake_timeout = DurationOr(server.handshake_timeout(), options.handshake_timeout);
  if (server.has_sandbox()) options.sandbox = server.sandbox();
  options.port_file = server.port_file();

  const auto& tls = config.tls();
  options.tls.cert_file = tls.cert_file();
  options.tls.key_file = tls.key_file();
  options.tls.client_ca_file = tls.client_ca_file();
  options.tls.crl_files.assign(tls.crl_files().begin(), tls.crl_files().end());
  options.tls.min_tls13 = tls.min_version() != airlock::v1::config::TLS_1_2;
  options.tls.watch_interval = DurationOr(tls.watch_interval(), options.tls.watch_interval);

  for (const auto& model : config.models()) {
    ModelOptions& m = options.models.emplace_back();
    m.name = model.name();
    m.path = model.path();
    m.context_length = model.context_length();
    m.threads = model.threads() != 0 ? model.threads() : OnlineCpus();
    m.kv_f32 = model.kv_cache_type() == airlock::v1::config::F32;
    m.chat_template = model.chat_template();
    if (model.max_queue() != 0) m.max_queue = model.max_queue();
    if (model.max_sequences() != 0) m.max_sequences = model.max_sequences();
    // Unset, the budget grows with max_sequences: every decoding sequence needs a token per step.
    m.step_tokens = model.step_tokens() != 0 ? model.step_tokens() : std::max<uint32_t>(m.step_tokens, m.max_sequences);
    m.kv_cache_tokens = model.kv_cache_tokens();
    if (model.kv_block_tokens() != 0) m.kv_block_tokens = model.kv_block_tokens();
    if (model.prefix_cache() == "model") m.prefix_cache = PrefixCacheScope::kModel;
    if (model.prefix_cache() == "off") m.prefix_cache = PrefixCacheScope::kOff;
    if (!model.device().empty()) m.device = model.device();
    m.devices.assign(model.devices().begin(), model.devices().end());
    if (model.placement() == "layers") m.placement = Placement::kLayers;
  }

  if (config.identity().source() != airlock::v1::config::IDENTITY_SOURCE_UNSPECIFIED) {
    options.identity_source = config.identity().source();
  }

  const auto& limits = config.limits();
  LimitsOptions& l = options.limits;
  if (limits.max_request_bytes() != 0) l.max_request_bytes = limits.max_request_bytes();
  l.max_prompt_tokens = limits.max_prompt_tokens();
  if (limits.max_tokens_per_request() != 0) {
    l.max_tokens_per_request = limits.max_tokens_per_request();
  }
  l.max_request_duration = DurationOr(limits.max_request_duration(), l.max_request_duration);
  if (limits.max_concurrent_streams() != 0) {
    l.max_concurrent_streams = limits.max_concurrent_streams();
  }
  l.max_connection_age = DurationOr(limits.max_connection_age(), l.max_connection_age);

  const auto& audit = config.audit();
  AuditOptions& a = options.audit;
  a.state_dir = audit.state_dir();
  a.signing_key_file = audit.signing_key_file();
  a.hmac_secret_file = audit.hmac_secret_file();
  if (audit.checkpoint_every() != 0) a.checkpoint_every = audit.checkpoint_every();
  a.checkpoint_interval = DurationOr(audit.checkpoint_interval(), a.checkpoint_interval);
  a.sealed_text_key_file = audit.sealed_text_key_file();
  a.retention = DurationOr(audit.retention(), a.retention);
  a.witness_file = audit.witness_file().empty() && !a.state_dir.empty()
                       ? absl::StrCat(absl::StripSuffix(a.state_dir, "/"), ".witness")
                       : audit.witness_file();
  if (audit.has_refusal_records_per_minute()) a.refusal_records_per_minute = audit.refusal_records_per_minute();

  const auto& metrics = config.metrics();
  MetricsOptions& m = options.metrics;
  m.listen = metrics.listen();
  m.plaintext = metrics.plaintext();
  m.cert_file = metrics.cert_file().empty() ? options.tls.cert_file : metrics.cert_file();
  m.key_file = metrics.key_file().empty() ? options.tls.key_file : metrics.key_file();
  m.client_ca_file = metrics.client_ca_file().empty() ? options.tls.client_ca_file : metrics.client_ca_file();
  m.port_file = metrics.port_file();
  options.openai.listen = config.openai().listen();
  options.openai.port_file = config.openai().port_file();
  options.openai.api_keys = config.openai().api_keys();

  options.require_signed_models = config.model_signatures().required();
  options.trusted_publisher_keys.assign(config.model_signatures().trusted_keys().begin(),
                                        config.model_signatures().trusted_keys().end());

  options.config = config;
  return options;
}

}  // namespace airlock::daemon

// Tests of the YAML configuration loader: mapping, error positions, the schema's rules.
#include "daemon/config/config_loader.h"

#include <string>
#include <string_view>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "airlock/v1/admin.pb.h"
#include "airlock/v1/inference.pb.h"
#include "auth/access_policy.h"
#include "google/protobuf/descriptor.h"
#include "grpc/health/v1/health.pb.h"
#include "daemon/config/daemon_options.h"

namespace airlock::daemon {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// A configuration using every key. The line numbers matter: tests below assert positions in it.
constexpr std::string_view kFullConfig = R"(server:
  listen: "127.0.0.1:0"
  drain_timeout: 5s
  sandbox: false
  port_file: /run/airlock/port
tls:
  cert_file: /etc/airlock/server.crt
  key_file: /etc/airlock/server.key
  client_ca_file: /etc/airlock/clients-ca.crt
  crl_files:
    - /etc/airlock/clients-ca.crl
  min_version: TLS_1_3
  watch_interval: 30s
models:
  - name: llama-8b
    path: /var/lib/airlock/models/llama-8b.gguf
    context_length: 8192
    threads: 8
    kv_cache_type: F32
    chat_template: llama3
    max_queue: 16
  - name: phi3
    path: /var/lib/airlock/models/phi3.gguf
identity:
  source: SAN_EMAIL
users:
  - name: alice@example.org
    groups: [clinicians]
  - name: probe@example.org
    roles: [health-probe]
groups:
  - name: clinicians
    roles: [inference-user]
roles:
  - name: inference-user
    methods: ["airlock.v1.Inference/*", "grpc.health.v1.Health/*"]
    models: ["*"]
  - name: health-probe
    methods: [grpc.health.v1.Health/Check, grpc.health.v1.Health/Watch]
    models: []
limits:
  max_request_bytes: 2097152
  max_prompt_tokens: 4096
  max_tokens_per_request: 1024
  max_request_duration: 120s
  max_concurrent_streams: 8
  max_connection_age: 30m
audit:
  state_dir: /var/lib/airlock/state
  signing_key_file: /etc/airlock/audit-signing.key
  hmac_secret_file: /etc/airlock/audit-hmac.secret
  checkpoint_every: 500
  checkpoint_interval: 5s
)";

// The smallest configuration that is accepted.
constexpr std::string_view kMinimalConfig = R"(tls:
  cert_file: /etc/airlock/server.crt
  key_file: /etc/airlock/server.key
  client_ca_file: /etc/airlock/ca.crt
  crl_files: [/etc/airlock/ca.crl]
models:
  - name: m
    path: /models/m.gguf
audit: {state_dir: /state, signing_key_file: /etc/a.key, hmac_secret_file: /etc/a.secret}
)";

// `text` with the single occurrence of `from` replaced by `to` (fails the test when `from` does not
// occur exactly once, so that a typo in a test cannot silently test the unmodified config).
std::string Edit(std::string_view text, std::string_view from, std::string_view to) {
  std::string s(text);
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << "not found: " << from;
  if (at == std::string::npos) return s;
  EXPECT_EQ(s.find(from, at + 1), std::string::npos) << "found twice: " << from;
  s.replace(at, from.size(), to);
  return s;
}

// The error message of parsing `yaml` as "cfg.yaml", or "OK".
std::string ErrorOf(std::string_view yaml) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(yaml, "cfg.yaml");
  if (parsed.ok()) return "OK";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

std::string ErrorOfFull(std::string_view from, std::string_view to) {
  return ErrorOf(Edit(kFullConfig, from, to));
}

TEST(ConfigLoaderTest, FullConfigMapsEveryField) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(kFullConfig, "cfg.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& c = parsed->config();
  EXPECT_EQ(c.server().listen(), "127.0.0.1:0");
  EXPECT_EQ(c.server().drain_timeout(), "5s");
  EXPECT_TRUE(c.server().has_sandbox());
  EXPECT_FALSE(c.server().sandbox());
  EXPECT_EQ(c.server().port_file(), "/run/airlock/port");
  EXPECT_EQ(c.tls().cert_file(), "/etc/airlock/server.crt");
  EXPECT_EQ(c.tls().key_file(), "/etc/airlock/server.key");
  EXPECT_EQ(c.tls().client_ca_file(), "/etc/airlock/clients-ca.crt");
  ASSERT_EQ(c.tls().crl_files_size(), 1);
  EXPECT_EQ(c.tls().crl_files(0), "/etc/airlock/clients-ca.crl");
  EXPECT_EQ(c.tls().min_version(), airlock::v1::config::TLS_1_3);
  EXPECT_EQ(c.tls().watch_interval(), "30s");
  ASSERT_EQ(c.models_size(), 2);
  EXPECT_EQ(c.models(0).name(), "llama-8b");
  EXPECT_EQ(c.models(0).path(), "/var/lib/airlock/models/llama-8b.gguf");
  EXPECT_EQ(c.models(0).context_length(), 8192u);
  EXPECT_EQ(c.models(0).threads(), 8u);
  EXPECT_EQ(c.models(0).kv_cache_type(), airlock::v1::config::F32);
  EXPECT_EQ(c.models(0).chat_template(), "llama3");
  EXPECT_EQ(c.models(0).max_queue(), 16u);
  EXPECT_EQ(c.models(1).name(), "phi3");
  EXPECT_EQ(c.identity().source(), airlock::v1::config::SAN_EMAIL);
  ASSERT_EQ(c.users_size(), 2);
  EXPECT_EQ(c.users(0).name(), "alice@example.org");
  EXPECT_THAT(c.users(0).groups(), ::testing::ElementsAre("clinicians"));
  EXPECT_THAT(c.users(1).roles(), ::testing::ElementsAre("health-probe"));
  ASSERT_EQ(c.groups_size(), 1);
  EXPECT_THAT(c.groups(0).roles(), ::testing::ElementsAre("inference-user"));
  ASSERT_EQ(c.roles_size(), 2);
  EXPECT_THAT(c.roles(0).methods(),
              ::testing::ElementsAre("airlock.v1.Inference/*", "grpc.health.v1.Health/*"));
  EXPECT_THAT(c.roles(0).models(), ::testing::ElementsAre("*"));
  EXPECT_TRUE(c.roles(1).models().empty());
  EXPECT_EQ(c.limits().max_request_bytes(), 2097152u);
  EXPECT_EQ(c.limits().max_prompt_tokens(), 4096u);
  EXPECT_EQ(c.limits().max_tokens_per_request(), 1024u);
  EXPECT_EQ(c.limits().max_request_duration(), "120s");
  EXPECT_EQ(c.limits().max_concurrent_streams(), 8u);
}

TEST(ConfigLoaderTest, PositionsOfFields) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(kFullConfig, "cfg.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->file_name(), "cfg.yaml");
  EXPECT_EQ(parsed->source_path(), "");
  EXPECT_EQ(parsed->PositionOf("tls.key_file"), "cfg.yaml:8:13");
  EXPECT_EQ(parsed->PositionOf("tls.crl_files[0]"), "cfg.yaml:11:7");
  EXPECT_EQ(parsed->PositionOf("models[1]"), "cfg.yaml:22:5");
  EXPECT_EQ(parsed->PositionOf("models[1].path"), "cfg.yaml:23:11");
  EXPECT_EQ(parsed->PositionOf("roles[0].models[0]"), "cfg.yaml:37:14");
  // Absent fields: the key of the nearest present ancestor, else the file alone.
  EXPECT_EQ(parsed->PositionOf("models[1].threads"), "cfg.yaml:22:5");
  EXPECT_EQ(parsed->PositionOf("server.nothing.deeper"), "cfg.yaml:1:1");
  EXPECT_EQ(parsed->PositionOf("tls"), "cfg.yaml:7:3");
  EXPECT_TRUE(parsed->Has("models[0].threads"));
  EXPECT_FALSE(parsed->Has("models[1].threads"));
  EXPECT_EQ(parsed->Describe("tls.key_file", "does not match tls.cert_file"),
            "cfg.yaml:8:13: tls.key_file: does not match tls.cert_file");

  absl::StatusOr<ParsedConfig> minimal = ParseConfig(kMinimalConfig, "min.yaml");
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  EXPECT_EQ(minimal->PositionOf("limits.max_request_bytes"), "min.yaml");
  EXPECT_EQ(minimal->Describe("server", "x"), "min.yaml: server: x");
}

TEST(ConfigLoaderTest, ResolveOptionsUsesConfiguredValues) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(kFullConfig, "cfg.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const DaemonOptions o = ResolveOptions(*parsed);
  EXPECT_EQ(o.listen, "127.0.0.1:0");
  EXPECT_EQ(o.drain_timeout, absl::Seconds(5));
  EXPECT_FALSE(o.sandbox);
  EXPECT_EQ(o.port_file, "/run/airlock/port");
  EXPECT_EQ(o.tls.cert_file, "/etc/airlock/server.crt");
  EXPECT_EQ(o.tls.key_file, "/etc/airlock/server.key");
  EXPECT_EQ(o.tls.client_ca_file, "/etc/airlock/clients-ca.crt");
  EXPECT_THAT(o.tls.crl_files, ::testing::ElementsAre("/etc/airlock/clients-ca.crl"));
  EXPECT_TRUE(o.tls.min_tls13);
  EXPECT_EQ(o.tls.watch_interval, absl::Seconds(30));
  ASSERT_EQ(o.models.size(), 2u);
  EXPECT_EQ(o.models[0].name, "llama-8b");
  EXPECT_EQ(o.models[0].path, "/var/lib/airlock/models/llama-8b.gguf");
  EXPECT_EQ(o.models[0].context_length, 8192u);
  EXPECT_EQ(o.models[0].threads, 8u);
  EXPECT_TRUE(o.models[0].kv_f32);
  EXPECT_EQ(o.models[0].chat_template, "llama3");
  EXPECT_EQ(o.models[0].max_queue, 16u);
  EXPECT_FALSE(o.models[1].kv_f32);
  EXPECT_EQ(o.identity_source, airlock::v1::config::SAN_EMAIL);
  EXPECT_EQ(o.limits.max_request_bytes, 2097152u);
  EXPECT_EQ(o.limits.max_prompt_tokens, 4096u);
  EXPECT_EQ(o.limits.max_tokens_per_request, 1024u);
  EXPECT_EQ(o.limits.max_request_duration, absl::Seconds(120));
  EXPECT_EQ(o.limits.max_concurrent_streams, 8u);
  EXPECT_EQ(o.limits.max_connection_age, absl::Minutes(30));
  EXPECT_EQ(o.config.SerializeAsString(), parsed->config().SerializeAsString());
}

TEST(ConfigLoaderTest, ResolveOptionsAppliesDefaults) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(kMinimalConfig, "min.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const DaemonOptions o = ResolveOptions(*parsed);
  EXPECT_EQ(o.listen, "127.0.0.1:7443");
  EXPECT_EQ(o.drain_timeout, absl::Seconds(30));
  EXPECT_EQ(o.handshake_timeout, absl::Seconds(5));
  EXPECT_TRUE(o.sandbox);
  EXPECT_EQ(o.port_file, "");
  // TLS 1.3 unless TLS_1_2 is asked for.
  EXPECT_TRUE(o.tls.min_tls13);
  EXPECT_EQ(o.tls.watch_interval, absl::Seconds(10));
  ASSERT_EQ(o.models.size(), 1u);
  const unsigned cpus = std::thread::hardware_concurrency();
  EXPECT_EQ(o.models[0].threads, cpus == 0 ? 1u : cpus);
  EXPECT_EQ(o.models[0].context_length, 0u);
  EXPECT_FALSE(o.models[0].kv_f32);
  EXPECT_EQ(o.models[0].chat_template, "");
  EXPECT_EQ(o.models[0].max_queue, 64u);
  EXPECT_EQ(o.models[0].max_sequences, 16u);
  EXPECT_EQ(o.models[0].step_tokens, 64u);
  EXPECT_EQ(o.models[0].kv_cache_tokens, 0u);
  EXPECT_EQ(o.models[0].kv_block_tokens, 16u);
  EXPECT_EQ(o.models[0].prefix_cache, PrefixCacheScope::kIdentity);
  EXPECT_EQ(o.identity_source, airlock::v1::config::SUBJECT_CN);
  EXPECT_EQ(o.limits.max_request_bytes, 1048576u);
  EXPECT_EQ(o.limits.max_prompt_tokens, 0u);
  EXPECT_EQ(o.limits.max_tokens_per_request, 2048u);
  EXPECT_EQ(o.limits.max_request_duration, absl::Seconds(600));
  EXPECT_EQ(o.limits.max_concurrent_streams, 32u);
  EXPECT_EQ(o.limits.max_connection_age, absl::Hours(1));
}

TEST(ConfigLoaderTest, AUsersIssuerMustBeADnOrASha256Fingerprint) {
  const auto with_issuer = [](const std::string& issuer) {
    return ErrorOfFull("  - name: alice@example.org\n", "  - name: alice@example.org\n    issuer: \"" + issuer + "\"\n");
  };
  EXPECT_EQ(with_issuer("CN=Airlock Lab Admin CA"), "OK");
  EXPECT_EQ(with_issuer("sha256:" + std::string(64, 'f')), "OK");
  EXPECT_THAT(with_issuer("Airlock Lab Admin CA"), ::testing::HasSubstr("users[0].issuer"));
  EXPECT_THAT(with_issuer("sha256:" + std::string(63, 'f')), ::testing::HasSubstr("is neither a CA subject"));
  EXPECT_THAT(with_issuer("sha256:" + std::string(64, 'F')), ::testing::HasSubstr("users[0].issuer"));
}

TEST(ConfigLoaderTest, MaxConnectionAgeOutOfRangeIsRefused) {
  // A connection that never ages keeps a revoked or dropped CA's client on its old handshake.
  EXPECT_THAT(ErrorOfFull("  max_connection_age: 30m\n", "  max_connection_age: 30s\n"),
              ::testing::HasSubstr("limits.max_connection_age"));
  EXPECT_THAT(ErrorOfFull("  max_connection_age: 30m\n", "  max_connection_age: 48h\n"),
              ::testing::HasSubstr("limits.max_connection_age"));
}

TEST(ConfigLoaderTest, ExplicitSandboxTrueAndFlowStyle) {
  const std::string yaml =
      "{tls: {cert_file: /c, key_file: /k, client_ca_file: /ca, crl_files: [/crl]},"
      " models: [{name: m, path: /m.gguf}], server: {sandbox: true},"
      " audit: {state_dir: /s, signing_key_file: /k2, hmac_secret_file: /h}}";
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(yaml, "cfg.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(ResolveOptions(*parsed).sandbox);
  EXPECT_EQ(parsed->PositionOf("models[0].path"), "cfg.yaml:1:103");
}

TEST(ConfigLoaderTest, RefusalRecordsPerMinuteDefaultsTo60AndZeroMeansEveryRefusal) {
  const auto resolve = [](const std::string& audit_extra) {
    const std::string yaml =
        "{tls: {cert_file: /c, key_file: /k, client_ca_file: /ca, crl_files: [/crl]},"
        " models: [{name: m, path: /m.gguf}],"
        " audit: {state_dir: /s, signing_key_file: /k2, hmac_secret_file: /h" + audit_extra + "}}";
    absl::StatusOr<ParsedConfig> parsed = ParseConfig(yaml, "cfg.yaml");
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(ValidateConfig(*parsed).ok()) << ValidateConfig(*parsed);
    return ResolveOptions(*parsed).audit.refusal_records_per_minute;
  };
  EXPECT_EQ(resolve(""), 60u);
  EXPECT_EQ(resolve(", refusal_records_per_minute: 0"), 0u);
  EXPECT_EQ(resolve(", refusal_records_per_minute: 5"), 5u);
  EXPECT_THAT(ErrorOf(Edit(kMinimalConfig, "hmac_secret_file: /etc/a.secret}",
                           "hmac_secret_file: /etc/a.secret, refusal_records_per_minute: 1000001}")),
              HasSubstr("audit.refusal_records_per_minute: 1000001 is out of range (0 to 1000000"));
}

// ----- Structural errors -----------------------------------------------------------------------

TEST(ConfigLoaderTest, UnknownKeyAtTopLevel) {
  EXPECT_EQ(ErrorOfFull("identity:\n", "identiy:\n"),
            "cfg.yaml:24:1: identiy: unknown key (known top-level keys: server, tls, models, "
            "identity, users, groups, roles, limits, audit, quota_defaults, metrics, model_signatures, openai); "
            "did you mean \"identity\"?");
}

TEST(ConfigLoaderTest, UnknownKeyInNestedMessage) {
  EXPECT_EQ(ErrorOfFull("  min_version: TLS_1_3\n", "  min_versoin: TLS_1_3\n"),
            "cfg.yaml:12:3: tls.min_versoin: unknown key (known keys of tls: cert_file, key_file, "
            "client_ca_file, crl_files, min_version, watch_interval); did you mean "
            "\"min_version\"?");
}

TEST(ConfigLoaderTest, UnknownKeyInRepeatedMessage) {
  EXPECT_EQ(ErrorOfFull("    path: /var/lib/airlock/models/phi3.gguf\n",
                        "    path: /var/lib/airlock/models/phi3.gguf\n    gpu_layers: 33\n"),
            "cfg.yaml:24:5: models[1].gpu_layers: unknown key (known keys of models[1]: name, "
            "path, context_length, threads, kv_cache_type, chat_template, max_queue, max_sequences, "
            "step_tokens, kv_cache_tokens, kv_block_tokens, prefix_cache, device, devices, placement)");
  EXPECT_THAT(ErrorOfFull("    models: [\"*\"]\n", "    model: [\"*\"]\n"),
              StartsWith("cfg.yaml:37:5: roles[0].model: unknown key (known keys of roles[0]: "
                         "name, methods, models, quota); did you mean \"models\"?"));
}

TEST(ConfigLoaderTest, OddKeysAreQuotedInThePath) {
  EXPECT_THAT(ErrorOfFull("server:\n", "\"a b\": 1\nserver:\n"),
              StartsWith("cfg.yaml:1:1: \"a b\": unknown key"));
  EXPECT_THAT(ErrorOfFull("server:\n", "? [a]\n: 1\nserver:\n"),
              StartsWith("cfg.yaml:1:3: (top level): keys must be plain names, got a sequence"));
}

TEST(ConfigLoaderTest, WrongNodeKinds) {
  EXPECT_EQ(ErrorOf(Edit(kMinimalConfig, "tls:\n", "tls: yes\nx:\n")),
            "cfg.yaml:1:6: tls: expected a mapping, got \"yes\"\n"
            "cfg.yaml:2:1: x: unknown key (known top-level keys: server, tls, models, identity, "
            "users, groups, roles, limits, audit, quota_defaults, metrics, model_signatures, openai)");
  EXPECT_EQ(ErrorOfFull("  cert_file: /etc/airlock/server.crt\n",
                        "  cert_file: [/etc/airlock/server.crt]\n"),
            "cfg.yaml:7:14: tls.cert_file: expected a string, got a sequence");
  EXPECT_EQ(ErrorOfFull("    threads: 8\n", "    threads: {n: 8}\n"),
            "cfg.yaml:18:14: models[0].threads: expected an unsigned integer, got a mapping");
  EXPECT_EQ(ErrorOfFull("    groups: [clinicians]\n", "    groups: clinicians\n"),
            "cfg.yaml:28:13: users[0].groups: expected a sequence (a list of entries written "
            "\"- ...\" or [...]), got \"clinicians\"");
  EXPECT_EQ(ErrorOfFull("    groups: [clinicians]\n", "    groups: [[clinicians]]\n"),
            "cfg.yaml:28:14: users[0].groups[0]: expected a string, got a sequence");
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n    path: /var/lib/airlock/models/phi3.gguf\n", "  - phi3\n"),
            "cfg.yaml:22:5: models[1]: expected a mapping, got \"phi3\"");
  EXPECT_EQ(ErrorOfFull("  port_file: /run/airlock/port\n", "  port_file:\n"),
            "cfg.yaml:5:3: server.port_file: expected a string, got an empty value");
  EXPECT_THAT(ErrorOfFull("identity:\n  source: SAN_EMAIL\n", "identity:\n"),
              StartsWith("cfg.yaml:24:1: identity: expected a mapping, got an empty value"));
}

TEST(ConfigLoaderTest, WrongScalarValues) {
  EXPECT_EQ(ErrorOfFull("    threads: 8\n", "    threads: many\n"),
            "cfg.yaml:18:14: models[0].threads: expected an unsigned integer, got \"many\"");
  EXPECT_EQ(ErrorOfFull("    threads: 8\n", "    threads: -8\n"),
            "cfg.yaml:18:14: models[0].threads: expected an unsigned integer, got \"-8\"");
  EXPECT_EQ(ErrorOfFull("    threads: 8\n", "    threads: 8.5\n"),
            "cfg.yaml:18:14: models[0].threads: expected an unsigned integer, got \"8.5\"");
  // YAML 1.1 reads 010 as octal; refusing leading zeros avoids guessing.
  EXPECT_EQ(ErrorOfFull("    threads: 8\n", "    threads: 010\n"),
            "cfg.yaml:18:14: models[0].threads: expected an unsigned integer, got \"010\"");
  EXPECT_EQ(ErrorOfFull("  sandbox: false\n", "  sandbox: no\n"),
            "cfg.yaml:4:12: server.sandbox: expected true or false, got \"no\"");
  // Quoting does not change how a value is read.
  EXPECT_EQ(ErrorOfFull("    threads: 8\n", "    threads: \"8\"\n"), "OK");
  EXPECT_EQ(ErrorOfFull("  sandbox: false\n", "  sandbox: False\n"), "OK");
}

TEST(ConfigLoaderTest, NumbersOutOfRangeAreRefusedNotTruncated) {
  EXPECT_EQ(ErrorOfFull("    context_length: 8192\n", "    context_length: 70000000000\n"),
            "cfg.yaml:17:21: models[0].context_length: \"70000000000\" is out of range for an "
            "unsigned 32-bit integer (0 to 4294967295)");
  EXPECT_EQ(ErrorOfFull("    context_length: 8192\n", "    context_length: 4294967296\n"),
            "cfg.yaml:17:21: models[0].context_length: \"4294967296\" is out of range for an "
            "unsigned 32-bit integer (0 to 4294967295)");
  EXPECT_EQ(ErrorOfFull("    context_length: 8192\n",
                        "    context_length: 99999999999999999999999999\n"),
            "cfg.yaml:17:21: models[0].context_length: \"99999999999999999999999999\" is out of "
            "range for an unsigned 32-bit integer (0 to 4294967295)");
  EXPECT_EQ(ErrorOfFull("    context_length: 8192\n", "    context_length: 4294967295\n"), "OK");
}

TEST(ConfigLoaderTest, UnknownEnumValue) {
  EXPECT_EQ(ErrorOfFull("  min_version: TLS_1_3\n", "  min_version: TLS_1_4\n"),
            "cfg.yaml:12:16: tls.min_version: unknown value \"TLS_1_4\" (expected one of TLS_1_2, "
            "TLS_1_3)");
  // The zero value means "absent": leave the key out instead.
  EXPECT_EQ(ErrorOfFull("  min_version: TLS_1_3\n", "  min_version: TLS_VERSION_UNSPECIFIED\n"),
            "cfg.yaml:12:16: tls.min_version: unknown value \"TLS_VERSION_UNSPECIFIED\" (expected "
            "one of TLS_1_2, TLS_1_3)");
  EXPECT_EQ(ErrorOfFull("  source: SAN_EMAIL\n", "  source: 2\n"),
            "cfg.yaml:25:11: identity.source: unknown value \"2\" (expected one of SUBJECT_CN, "
            "SAN_EMAIL, SAN_DNS, SAN_URI)");
  EXPECT_EQ(ErrorOfFull("    kv_cache_type: F32\n", "    kv_cache_type: f32\n"),
            "cfg.yaml:19:20: models[0].kv_cache_type: unknown value \"f32\" (expected one of F16, "
            "F32)");
}

TEST(ConfigLoaderTest, DuplicateKeys) {
  EXPECT_EQ(ErrorOfFull("  sandbox: false\n", "  sandbox: false\n  sandbox: true\n"),
            "cfg.yaml:5:3: server.sandbox: duplicate key (first written at line 4, column 3)");
  EXPECT_EQ(ErrorOfFull("identity:\n", "tls: {}\nidentity:\n"),
            "cfg.yaml:24:1: tls: duplicate key (first written at line 6, column 1)");
  EXPECT_EQ(ErrorOfFull("    path: /var/lib/airlock/models/phi3.gguf\n",
                        "    path: /var/lib/airlock/models/phi3.gguf\n    name: phi4\n"),
            "cfg.yaml:24:5: models[1].name: duplicate key (first written at line 22, column 5)");
}

TEST(ConfigLoaderTest, AnchorsAliasesAndTagsAreRefused) {
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n", "  - &m\n    name: phi3\n"),
            "cfg.yaml:22:5: YAML anchors are not supported; write each value out in full");
  // An alias needs an anchor, which is refused first; an undefined one is a YAML error.
  EXPECT_EQ(ErrorOfFull("  sandbox: false\n", "  sandbox: *x\n"),
            "cfg.yaml:4:12: invalid YAML: the referenced anchor is not defined");
  EXPECT_EQ(ErrorOfFull("limits:\n", "base: &b {}\nlimits:\n  <<: *b\n"),
            "cfg.yaml:41:7: YAML anchors are not supported; write each value out in full");
  EXPECT_THAT(ErrorOfFull("  cert_file: /etc/airlock/server.crt\n",
                          "  cert_file: !!binary aGVsbG8=\n"),
              StartsWith("cfg.yaml:7:14: YAML tags are not supported"));
}

TEST(ConfigLoaderTest, InvalidYamlSyntaxHasAPosition) {
  EXPECT_THAT(ErrorOfFull("    groups: [clinicians]\n", "    groups: [clinicians\n"),
              StartsWith("cfg.yaml:"));
  EXPECT_EQ(ErrorOfFull("    groups: [clinicians]\n", "    groups: [clinicians\n")
                .find("invalid YAML: "),
            ErrorOfFull("    groups: [clinicians]\n", "    groups: [clinicians\n").find(": ") + 2);
  EXPECT_THAT(ErrorOf("tls:\n  cert_file: a\n   key_file: b\n"),
              StartsWith("cfg.yaml:3:"));
  EXPECT_THAT(ErrorOf("tls: \"unterminated\n"), StartsWith("cfg.yaml:"));
}

TEST(ConfigLoaderTest, DocumentShape) {
  EXPECT_EQ(ErrorOf(""), "cfg.yaml: the configuration is empty (at least the keys tls and models "
                         "are needed)");
  EXPECT_EQ(ErrorOf("# only a comment\n\n"),
            "cfg.yaml: the configuration is empty (at least the keys tls and models are needed)");
  EXPECT_EQ(ErrorOf("---\n"),
            "cfg.yaml: the configuration is empty (at least the keys tls and models are needed)");
  EXPECT_EQ(ErrorOf(std::string(kMinimalConfig) + "---\n" + std::string(kMinimalConfig)),
            "cfg.yaml:10:1: a second YAML document; the configuration is a single document");
  EXPECT_EQ(ErrorOf("- tls\n- models\n"),
            "cfg.yaml:1:1: the top level must be a mapping of keys (server, tls, models, ...), "
            "got a sequence");
  EXPECT_EQ(ErrorOf("server: " + std::string(100, '[') + std::string(100, ']') + "\n"),
            "cfg.yaml:1:40: YAML nested deeper than 32 levels");
  EXPECT_EQ(ErrorOf("hello\n"),
            "cfg.yaml:1:1: the top level must be a mapping of keys (server, tls, models, ...), "
            "got \"hello\"");
}

TEST(ConfigLoaderTest, NonUtf8AndNulAreRefusedWithTheirPosition) {
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n", "  - name: phi\xff\n"),
            "cfg.yaml:22:14: the file is not valid UTF-8 text (byte 0xff)");
  // Overlong encoding of '/' and a UTF-16 surrogate.
  EXPECT_THAT(ErrorOfFull("  - name: phi3\n", "  - name: \xc0\xaf\n"),
              StartsWith("cfg.yaml:22:11: the file is not valid UTF-8"));
  EXPECT_THAT(ErrorOfFull("  - name: phi3\n", "  - name: \xed\xa0\x80\n"),
              StartsWith("cfg.yaml:22:11: the file is not valid UTF-8"));
  EXPECT_EQ(ErrorOf(Edit(kMinimalConfig, "name: m", std::string("name: m\0", 8))),
            "cfg.yaml:7:12: the file is not valid UTF-8 text (byte 0x00)");
  // Valid multi-byte UTF-8 is fine (and then refused by the model-name rule, with the text intact).
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n", "  - name: phï3\n"),
            "cfg.yaml:22:11: models[1].name: \"phï3\" is not a valid model name (1 to 64 characters "
            "of A-Z a-z 0-9 . _ -)");
}

TEST(ConfigLoaderTest, SeveralErrorsAreReportedTogether) {
  const std::string yaml = Edit(Edit(kFullConfig, "    threads: 8\n", "    threads: x\n"),
                                "  sandbox: false\n", "  sandbx: false\n");
  const std::vector<std::string> lines = absl::StrSplit(ErrorOf(yaml), '\n');
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], StartsWith("cfg.yaml:4:3: server.sandbx: unknown key"));
  EXPECT_THAT(lines[1], StartsWith("cfg.yaml:18:14: models[0].threads: expected"));
}

// ----- The schema's rules ----------------------------------------------------------------------

TEST(ConfigRulesTest, AtLeastOneModel) {
  EXPECT_EQ(ErrorOf("tls: {cert_file: /c, key_file: /k, client_ca_file: /ca, crl_files: [/r]}\n"
                    "audit: {state_dir: /s, signing_key_file: /k2, hmac_secret_file: /h}\n"),
            "cfg.yaml: models: at least one model is required");
  EXPECT_EQ(ErrorOf("tls: {cert_file: /c, key_file: /k, client_ca_file: /ca, crl_files: [/r]}\n"
                    "models: []\n"
                    "audit: {state_dir: /s, signing_key_file: /k2, hmac_secret_file: /h}\n"),
            "cfg.yaml:2:9: models: at least one model is required");
}

TEST(ConfigRulesTest, AuditSectionIsRequiredWithAbsolutePaths) {
  EXPECT_THAT(ErrorOf(Edit(kMinimalConfig, "audit: {state_dir: /state, ", "audit: {state_dir: state, ")),
              HasSubstr("audit.state_dir: must be an absolute path"));
  const std::string without = Edit(kMinimalConfig, "audit: {state_dir: /state, signing_key_file: /etc/a.key, hmac_secret_file: /etc/a.secret}\n", "");
  EXPECT_THAT(ErrorOf(without), HasSubstr("audit.state_dir: is required"));
  EXPECT_THAT(ErrorOf(without), HasSubstr("audit.hmac_secret_file: is required"));
  EXPECT_THAT(ErrorOf(Edit(kMinimalConfig, "hmac_secret_file: /etc/a.secret}", "hmac_secret_file: /etc/a.secret, checkpoint_every: 0}")),
              HasSubstr("audit.checkpoint_every"));
  EXPECT_THAT(ErrorOf(Edit(kMinimalConfig, "hmac_secret_file: /etc/a.secret}", "hmac_secret_file: /etc/a.secret, retention: 0s}")),
              HasSubstr("audit.retention: \"0s\" must be positive"));
  EXPECT_THAT(ErrorOf(Edit(kMinimalConfig, "hmac_secret_file: /etc/a.secret}", "hmac_secret_file: /etc/a.secret, retention: 90d}")),
              HasSubstr("audit.retention: expected a duration"));
  EXPECT_EQ(ErrorOf(Edit(kMinimalConfig, "hmac_secret_file: /etc/a.secret}", "hmac_secret_file: /etc/a.secret, retention: 2160h}")),
            "OK");
}

TEST(ConfigRulesTest, TheAuditWitnessLivesOutsideTheStateDirectory) {
  const auto with = [](const std::string& witness) {
    return Edit(kMinimalConfig, "hmac_secret_file: /etc/a.secret}",
                "hmac_secret_file: /etc/a.secret, witness_file: " + witness + "}");
  };
  EXPECT_THAT(ErrorOf(with("/state/witness")),
              HasSubstr("audit.witness_file: must be outside audit.state_dir"));
  EXPECT_THAT(ErrorOf(with("witness")), HasSubstr("audit.witness_file: must be an absolute path"));
  EXPECT_EQ(ErrorOf(with("/state.witness")), "OK");
  EXPECT_EQ(ErrorOf(with("/var/witness/airlock")), "OK");
  // The default: beside the state directory, not in it.
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(kMinimalConfig, "min.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(ResolveOptions(*parsed).audit.witness_file, "/state.witness");
  parsed = ParseConfig(with("/w/airlock.witness"), "w.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(ResolveOptions(*parsed).audit.witness_file, "/w/airlock.witness");
}

TEST(ConfigRulesTest, QuotaRulesNameTheirPosition) {
  const auto with = [](std::string_view quota_yaml) {
    return std::string(kMinimalConfig) + std::string(quota_yaml);
  };
  EXPECT_EQ(ErrorOf(with("quota_defaults: {tokens_per_day: 1000, tokens_per_month: 30000}\n"
                         "users:\n  - name: u\n    quota:\n      requests_per_minute: 60\n")),
            "OK");
  EXPECT_EQ(ErrorOf(with("quota_defaults: {tokens_per_day: 1000, tokens_per_month: 500}\n")),
            "cfg.yaml:10:34: quota_defaults.tokens_per_day: 1000 is more than tokens_per_month (500)");
  EXPECT_EQ(ErrorOf(with("users:\n  - name: u\n    quota:\n      max_prompt_tokens: 2000000000000\n")),
            "cfg.yaml:13:26: users[0].quota.max_prompt_tokens: 2000000000000 is more than the maximum of "
            "1000000000000");
  EXPECT_THAT(ErrorOf(with("roles:\n  - name: r\n    quota: {tokens_per_dya: 5}\n")),
              HasSubstr("tokens_per_dya: unknown key"));
  EXPECT_THAT(ErrorOf(with("quota_defaults: {tokens_per_day: -5}\n")), HasSubstr("quota_defaults.tokens_per_day"));
  // 0 ("no limit") is never compared.
  EXPECT_EQ(ErrorOf(with("quota_defaults: {tokens_per_day: 1000, tokens_per_month: 0}\n")), "OK");
}

TEST(ConfigRulesTest, ModelNames) {
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n", "  - name: llama-8b\n"),
            "cfg.yaml:22:11: models[1].name: duplicate model name \"llama-8b\" (first at "
            "models[0].name, cfg.yaml:15:11)");
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n", "  - name: \"phi 3\"\n"),
            "cfg.yaml:22:11: models[1].name: \"phi 3\" is not a valid model name (1 to 64 "
            "characters of A-Z a-z 0-9 . _ -)");
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n", "  - name: \"*\"\n"),
            "cfg.yaml:22:11: models[1].name: \"*\" is not a valid model name (1 to 64 characters of "
            "A-Z a-z 0-9 . _ -)");
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n", absl::StrCat("  - name: ", std::string(64, 'a'), "\n")),
            "OK");
  EXPECT_THAT(ErrorOfFull("  - name: phi3\n", absl::StrCat("  - name: ", std::string(65, 'a'), "\n")),
              HasSubstr("is not a valid model name"));
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n", "  - name: \"\"\n"),
            "cfg.yaml:22:11: models[1].name: must not be empty (the model's name)");
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n    path", "  - path"),
            "cfg.yaml:22:5: models[1].name: is required (the model's name)");
}

TEST(ConfigRulesTest, ModelPathsAndRanges) {
  EXPECT_EQ(ErrorOfFull("    path: /var/lib/airlock/models/phi3.gguf\n", "    path: phi3.gguf\n"),
            "cfg.yaml:23:11: models[1].path: must be an absolute path, got \"phi3.gguf\"");
  EXPECT_EQ(ErrorOfFull("  - name: phi3\n    path: /var/lib/airlock/models/phi3.gguf\n",
                        "  - name: phi3\n"),
            "cfg.yaml:22:5: models[1].path: is required (absolute path of the GGUF file)");
  EXPECT_EQ(ErrorOfFull("    threads: 8\n", "    threads: 0\n"),
            "cfg.yaml:18:14: models[0].threads: 0 is out of range (1 to 1024; leave the key out "
            "for the default)");
  EXPECT_EQ(ErrorOfFull("    threads: 8\n", "    threads: 1025\n"),
            "cfg.yaml:18:14: models[0].threads: 1025 is out of range (1 to 1024; leave the key out "
            "for the default)");
  EXPECT_EQ(ErrorOfFull("    threads: 8\n", "    threads: 1024\n"), "OK");
  EXPECT_EQ(ErrorOfFull("    max_queue: 16\n", "    max_queue: 0\n"),
            "cfg.yaml:21:16: models[0].max_queue: 0 is out of range (1 to 100000; leave the key "
            "out for the default)");
  EXPECT_EQ(ErrorOfFull("    max_queue: 16\n", "    max_queue: 100001\n"),
            "cfg.yaml:21:16: models[0].max_queue: 100001 is out of range (1 to 100000; leave the "
            "key out for the default)");
  EXPECT_EQ(ErrorOfFull("    chat_template: llama3\n", "    chat_template: \"\"\n"),
            "cfg.yaml:20:20: models[0].chat_template: must not be empty (leave the key out to "
            "recognise the template from the model)");
  EXPECT_THAT(ErrorOfFull("    chat_template: llama3\n", "    chat_template: llama4\n"),
              StartsWith("cfg.yaml:20:20: models[0].chat_template: \"llama4\" is not a known chat "
                         "template (chatml, llama2, "));
  EXPECT_EQ(ErrorOfFull("    chat_template: llama3\n", "    chat_template: chatml\n"), "OK");
}

// models[].device: cpu by default, a Vulkan device by index or by part of its name; anything else
// refused with its position, and a long value not echoed whole.
TEST(ConfigRulesTest, ModelDevice) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(
      Edit(kFullConfig, "    max_queue: 16\n", "    max_queue: 16\n    device: \"vulkan:NVIDIA H100 (PCIe)\"\n"), "cfg.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const DaemonOptions o = ResolveOptions(*parsed);
  EXPECT_EQ(o.models[0].device, "vulkan:NVIDIA H100 (PCIe)");
  EXPECT_EQ(o.models[1].device, "cpu");
  const auto with = [](const std::string& value) {
    return ErrorOfFull("    max_queue: 16\n", absl::StrCat("    max_queue: 16\n    device: ", value, "\n"));
  };
  EXPECT_EQ(with("cpu"), "OK");
  EXPECT_EQ(with("\"vulkan:0\""), "OK");
  EXPECT_EQ(with("\"vulkan:llvmpipe\""), "OK");
  EXPECT_EQ(with("gpu0"),
            "cfg.yaml:22:13: models[0].device: \"gpu0\" is not a device (expected cpu, vulkan:N for the Nth Vulkan "
            "device, or vulkan:NAME for the device whose name contains NAME)");
  EXPECT_THAT(with("\"vulkan:\""), HasSubstr("is not a device"));
  EXPECT_THAT(with("\"vulkan:a/b\""), HasSubstr("is not a device"));
  EXPECT_THAT(with("\"vulkan:x\\ny\""), HasSubstr("is not a device"));
  EXPECT_THAT(with("CPU"), HasSubstr("is not a device"));
  const std::string long_name = "\"vulkan:" + std::string(500, 'a') + "\"";
  const std::string error = with(long_name);
  EXPECT_THAT(error, HasSubstr("is not a device"));
  EXPECT_LT(error.size(), 300u) << error;
}

// models[].devices and placement: two or more GPUs, each once, never the CPU, never beside
// device, and always with a placement (and a placement only with devices).
TEST(ConfigRulesTest, ModelDevicesAndPlacement) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(
      Edit(kFullConfig, "    max_queue: 16\n",
           "    max_queue: 16\n    devices: [\"vulkan:0\", \"vulkan:1\"]\n    placement: layers\n"),
      "cfg.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const DaemonOptions o = ResolveOptions(*parsed);
  EXPECT_EQ(o.models[0].devices, (std::vector<std::string>{"vulkan:0", "vulkan:1"}));
  EXPECT_EQ(o.models[0].placement, Placement::kLayers);
  EXPECT_TRUE(o.models[1].devices.empty());
  const auto with = [](const std::string& keys) {
    return ErrorOfFull("    max_queue: 16\n", absl::StrCat("    max_queue: 16\n", keys));
  };
  EXPECT_EQ(with("    devices: [\"vulkan:0\", \"vulkan:H100\"]\n    placement: replicas\n"), "OK");
  EXPECT_THAT(with("    devices: [\"vulkan:0\", \"vulkan:1\"]\n"),
              HasSubstr("models[0].devices: needs placement: replicas"));
  EXPECT_THAT(with("    devices: [\"vulkan:0\"]\n    placement: replicas\n"),
              HasSubstr("models[0].devices: lists one device: use device for one"));
  EXPECT_THAT(with("    devices: [\"vulkan:0\", \"vulkan:0\"]\n    placement: replicas\n"),
              HasSubstr("models[0].devices[1]: \"vulkan:0\" is listed twice"));
  EXPECT_THAT(with("    devices: [\"vulkan:0\", cpu]\n    placement: replicas\n"),
              HasSubstr("models[0].devices[1]: \"cpu\" is not a GPU"));
  EXPECT_THAT(with("    devices: [\"vulkan:0\", \"gpu/1\"]\n    placement: replicas\n"),
              HasSubstr("models[0].devices[1]: \"gpu/1\" is not a GPU"));
  EXPECT_THAT(with("    device: \"vulkan:0\"\n    devices: [\"vulkan:0\", \"vulkan:1\"]\n    placement: layers\n"),
              HasSubstr("models[0].devices: give either device (one) or devices (several), not both"));
  EXPECT_THAT(with("    devices: [\"vulkan:0\", \"vulkan:1\"]\n    placement: sharded\n"),
              HasSubstr("models[0].placement: unknown value \"sharded\" (expected replicas or layers)"));
  EXPECT_THAT(with("    placement: layers\n"),
              HasSubstr("models[0].placement: applies only to a model with devices"));
}

// The batching keys: each mapped, and each refused out of range with its name and position.
TEST(ConfigRulesTest, ModelBatchingKeys) {
  const std::string batching =
      "    max_queue: 16\n    max_sequences: 8\n    step_tokens: 512\n    kv_cache_tokens: 32768\n"
      "    kv_block_tokens: 32\n    prefix_cache: model\n";
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(Edit(kFullConfig, "    max_queue: 16\n", batching), "cfg.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const DaemonOptions o = ResolveOptions(*parsed);
  EXPECT_EQ(o.models[0].max_sequences, 8u);
  EXPECT_EQ(o.models[0].step_tokens, 512u);
  EXPECT_EQ(o.models[0].kv_cache_tokens, 32768u);
  EXPECT_EQ(o.models[0].kv_block_tokens, 32u);
  EXPECT_EQ(o.models[0].prefix_cache, PrefixCacheScope::kModel);
  // The other model keeps the defaults: identity-scoped prefix sharing.
  EXPECT_EQ(o.models[1].max_sequences, 16u);
  EXPECT_EQ(o.models[1].prefix_cache, PrefixCacheScope::kIdentity);

  const auto with = [](const std::string& key_and_value) {
    return ErrorOfFull("    max_queue: 16\n", absl::StrCat("    max_queue: 16\n    ", key_and_value, "\n"));
  };
  EXPECT_EQ(with("max_sequences: 0"),
            "cfg.yaml:22:20: models[0].max_sequences: 0 is out of range (1 to 256; leave the key out for the "
            "default)");
  EXPECT_EQ(with("max_sequences: 257"),
            "cfg.yaml:22:20: models[0].max_sequences: 257 is out of range (1 to 256; leave the key out for the "
            "default)");
  EXPECT_EQ(with("max_sequences: 1"), "OK");
  EXPECT_EQ(with("max_sequences: 256"), "OK");  // step_tokens left out follows it up
  {
    absl::StatusOr<ParsedConfig> many =
        ParseConfig(Edit(kFullConfig, "    max_queue: 16\n", "    max_queue: 16\n    max_sequences: 200\n"), "cfg.yaml");
    ASSERT_TRUE(many.ok()) << many.status();
    EXPECT_EQ(ResolveOptions(*many).models[0].step_tokens, 200u);
  }
  EXPECT_EQ(with("step_tokens: 0"),
            "cfg.yaml:22:18: models[0].step_tokens: 0 is out of range (1 to 4096; leave the key out for the "
            "default)");
  EXPECT_EQ(with("step_tokens: 4097"),
            "cfg.yaml:22:18: models[0].step_tokens: 4097 is out of range (1 to 4096; leave the key out for the "
            "default)");
  EXPECT_EQ(with("step_tokens: 16"), "OK");
  EXPECT_EQ(with("step_tokens: 15"),
            "cfg.yaml:22:18: models[0].step_tokens: step_tokens (15) must be at least max_sequences (16): every "
            "decoding sequence advances by one token in each step");
  // The latency setting of docs/performance.md: 7 streams and 5 prompt tokens per step.
  EXPECT_EQ(ErrorOfFull("    max_queue: 16\n", "    max_queue: 16\n    max_sequences: 7\n    step_tokens: 12\n"),
            "OK");
  // A step must hold one token of every decoding sequence.
  EXPECT_EQ(ErrorOfFull("    max_queue: 16\n", "    max_queue: 16\n    max_sequences: 64\n    step_tokens: 32\n"),
            "cfg.yaml:23:18: models[0].step_tokens: step_tokens (32) must be at least max_sequences (64): every "
            "decoding sequence advances by one token in each step");
  EXPECT_EQ(with("max_sequences: 257").find("step_tokens ("), std::string::npos);
  EXPECT_THAT(with("max_sequences: 512"), Not(HasSubstr("must be at least max_sequences")));
  EXPECT_EQ(with("kv_block_tokens: 0"),
            "cfg.yaml:22:22: models[0].kv_block_tokens: 0 is out of range (1 to 256; leave the key out for the "
            "default)");
  EXPECT_EQ(with("kv_block_tokens: 257"),
            "cfg.yaml:22:22: models[0].kv_block_tokens: 257 is out of range (1 to 256; leave the key out for the "
            "default)");
  EXPECT_EQ(with("kv_cache_tokens: 0"), "OK");  // auto
  EXPECT_EQ(with("kv_cache_tokens: 16"), "OK");
  EXPECT_THAT(with("kv_cache_tokens: 15"),
              StartsWith("cfg.yaml:22:22: models[0].kv_cache_tokens: 15 is too small (at least 16 tokens"));
  // A pool smaller than one block holds nothing at all.
  EXPECT_THAT(ErrorOfFull("    max_queue: 16\n", "    max_queue: 16\n    kv_block_tokens: 64\n    kv_cache_tokens: 32\n"),
              StartsWith("cfg.yaml:23:22: models[0].kv_cache_tokens: 32 is too small (at least 64 tokens"));
  EXPECT_THAT(with("kv_cache_tokens: -1"), HasSubstr("models[0].kv_cache_tokens"));
  for (const char* scope : {"identity", "model", "off"}) {
    EXPECT_EQ(with(absl::StrCat("prefix_cache: ", scope)), "OK") << scope;
  }
  // Not guessed at: a typo, YAML 1.1's "false", an empty value or another case are refused.
  for (const char* bad : {"users", "false", "\"\"", "Identity", "shared"}) {
    EXPECT_THAT(with(absl::StrCat("prefix_cache: ", bad)),
                StartsWith("cfg.yaml:22:19: models[0].prefix_cache: unknown value "))
        << bad;
  }
  EXPECT_THAT(with("prefix_cache: everyone"), HasSubstr("(expected identity, model or off;"));
}

TEST(ConfigRulesTest, ServerRules) {
  EXPECT_EQ(ErrorOfFull("  sandbox: false\n", "  plaintext: true\n"),
            "cfg.yaml:4:14: server.plaintext: Airlock has no plaintext listener; every client "
            "authenticates with a certificate over mutual TLS (configure tls: and remove this "
            "key)");
  EXPECT_EQ(ErrorOfFull("  sandbox: false\n", "  plaintext: false\n"), "OK");
  for (const char* bad : {"7443", ":7443", "localhost", "localhost:", "localhost:65536",
                          "::1:7443", "[]:1", "host:port", ""}) {
    EXPECT_THAT(ErrorOfFull("  listen: \"127.0.0.1:0\"\n", absl::StrCat("  listen: \"", bad, "\"\n")),
                StartsWith("cfg.yaml:2:11: server.listen: expected host:port"))
        << bad;
  }
  for (const char* good : {"0.0.0.0:7443", "[::1]:7443", "[::]:0", "airlock.internal:65535"}) {
    EXPECT_EQ(ErrorOfFull("  listen: \"127.0.0.1:0\"\n", absl::StrCat("  listen: \"", good, "\"\n")),
              "OK")
        << good;
  }
  EXPECT_EQ(ErrorOfFull("  drain_timeout: 5s\n", "  drain_timeout: 5\n"),
            "cfg.yaml:3:18: server.drain_timeout: expected a duration such as \"30s\", \"500ms\" "
            "or \"5m\", got \"5\"");
  EXPECT_EQ(ErrorOfFull("  drain_timeout: 5s\n", "  drain_timeout: 0s\n"),
            "cfg.yaml:3:18: server.drain_timeout: \"0s\" must be positive");
  EXPECT_EQ(ErrorOfFull("  drain_timeout: 5s\n", "  drain_timeout: -3s\n"),
            "cfg.yaml:3:18: server.drain_timeout: \"-3s\" must be positive");
  EXPECT_THAT(ErrorOfFull("  drain_timeout: 5s\n", "  drain_timeout: inf\n"),
              StartsWith("cfg.yaml:3:18: server.drain_timeout: expected a duration"));
  EXPECT_EQ(ErrorOfFull("  drain_timeout: 5s\n", "  drain_timeout: 1m30s\n"), "OK");
  // handshake_timeout: 1s to 60s (idle unauthenticated connections are closed after it).
  const auto handshake = [](const char* value) {
    return ErrorOfFull("  drain_timeout: 5s\n", absl::StrCat("  drain_timeout: 5s\n  handshake_timeout: ", value, "\n"));
  };
  EXPECT_EQ(handshake("3s"), "OK");
  EXPECT_EQ(handshake("500ms"), "cfg.yaml:4:22: server.handshake_timeout: \"500ms\" is out of range (1s to 1m)");
  EXPECT_EQ(handshake("2m"), "cfg.yaml:4:22: server.handshake_timeout: \"2m\" is out of range (1s to 1m)");
  EXPECT_THAT(handshake("soon"), StartsWith("cfg.yaml:4:22: server.handshake_timeout: expected a duration"));
}

TEST(ConfigRulesTest, TlsRules) {
  EXPECT_EQ(ErrorOfFull("  cert_file: /etc/airlock/server.crt\n", ""),
            "cfg.yaml:6:1: tls.cert_file: is required (PEM server certificate chain)");
  EXPECT_EQ(ErrorOfFull("  key_file: /etc/airlock/server.key\n", "  key_file: \"\"\n"),
            "cfg.yaml:8:13: tls.key_file: must not be empty (PEM private key of tls.cert_file)");
  EXPECT_EQ(ErrorOfFull("  client_ca_file: /etc/airlock/clients-ca.crt\n", ""),
            "cfg.yaml:6:1: tls.client_ca_file: is required (PEM bundle of the CAs whose client "
            "certificates are accepted)");
  EXPECT_EQ(ErrorOfFull("  crl_files:\n    - /etc/airlock/clients-ca.crl\n", ""),
            "cfg.yaml:6:1: tls.crl_files: at least one CRL is required (one per CA in "
            "client_ca_file): revocation must fail closed, so airlockd does not start without the "
            "CAs' revocation lists");
  EXPECT_EQ(ErrorOfFull("  crl_files:\n    - /etc/airlock/clients-ca.crl\n", "  crl_files: []\n"),
            "cfg.yaml:10:14: tls.crl_files: at least one CRL is required (one per CA in "
            "client_ca_file): revocation must fail closed, so airlockd does not start without the "
            "CAs' revocation lists");
  EXPECT_EQ(ErrorOfFull("    - /etc/airlock/clients-ca.crl\n", "    - \"\"\n"),
            "cfg.yaml:11:7: tls.crl_files[0]: must not be empty (a PEM CRL file)");
  EXPECT_EQ(ErrorOfFull("  watch_interval: 30s\n", "  watch_interval: 500ms\n"),
            "cfg.yaml:13:19: tls.watch_interval: \"500ms\" is out of range (1s to 1h)");
  EXPECT_EQ(ErrorOfFull("  watch_interval: 30s\n", "  watch_interval: 61m\n"),
            "cfg.yaml:13:19: tls.watch_interval: \"61m\" is out of range (1s to 1h)");
  EXPECT_EQ(ErrorOfFull("  watch_interval: 30s\n", "  watch_interval: 1h\n"), "OK");
  EXPECT_EQ(ErrorOfFull("  watch_interval: 30s\n", "  watch_interval: 1s\n"), "OK");
  // No tls section at all: each required key is named, without a position.
  const std::string no_tls = ErrorOf("models: [{name: m, path: /m}]\n");
  EXPECT_THAT(no_tls, HasSubstr("cfg.yaml: tls.cert_file: is required"));
  EXPECT_THAT(no_tls, HasSubstr("cfg.yaml: tls.key_file: is required"));
  EXPECT_THAT(no_tls, HasSubstr("cfg.yaml: tls.client_ca_file: is required"));
  EXPECT_THAT(no_tls, HasSubstr("cfg.yaml: tls.crl_files: at least one CRL is required"));
}

TEST(ConfigRulesTest, UniqueAccessNames) {
  EXPECT_EQ(ErrorOfFull("  - name: probe@example.org\n", "  - name: alice@example.org\n"),
            "cfg.yaml:29:11: users[1].name: duplicate user name \"alice@example.org\" (first at "
            "users[0].name, cfg.yaml:27:11)");
  // (followed by an error for users[1], whose role health-probe is now gone)
  EXPECT_THAT(ErrorOfFull("  - name: health-probe\n", "  - name: inference-user\n"),
              StartsWith("cfg.yaml:38:11: roles[1].name: duplicate role name \"inference-user\" "
                         "(first at roles[0].name, cfg.yaml:35:11)\n"));
  EXPECT_EQ(ErrorOfFull("    roles: [inference-user]\n",
                        "    roles: [inference-user]\n  - name: clinicians\n"),
            "cfg.yaml:34:11: groups[1].name: duplicate group name \"clinicians\" (first at "
            "groups[0].name, cfg.yaml:32:11)");
  EXPECT_EQ(ErrorOfFull("  - name: alice@example.org\n", "  - name: \"\"\n"),
            "cfg.yaml:27:11: users[0].name: must not be empty (the user's name)");
  EXPECT_EQ(ErrorOfFull("  - name: clinicians\n", "  - roles: [health-probe]\n"),
            "cfg.yaml:33:5: groups[0].roles: duplicate key (first written at line 32, column 5)");
}

TEST(ConfigRulesTest, References) {
  EXPECT_EQ(ErrorOfFull("    groups: [clinicians]\n", "    groups: [clinician]\n"),
            "cfg.yaml:28:14: users[0].groups[0]: \"clinician\" is not a configured group "
            "(configured: clinicians)");
  EXPECT_EQ(ErrorOfFull("    roles: [health-probe]\n", "    roles: [health-probe, admin]\n"),
            "cfg.yaml:30:27: users[1].roles[1]: \"admin\" is not a configured role (configured: "
            "health-probe, inference-user)");
  EXPECT_EQ(ErrorOfFull("    roles: [inference-user]\n", "    roles: [inference]\n"),
            "cfg.yaml:33:13: groups[0].roles[0]: \"inference\" is not a configured role "
            "(configured: health-probe, inference-user)");
  EXPECT_EQ(ErrorOfFull("    models: [\"*\"]\n", "    models: [llama-8b, llama-70b]\n"),
            "cfg.yaml:37:24: roles[0].models[1]: \"llama-70b\" is not a configured model "
            "(configured: llama-8b, phi3; \"*\" grants all)");
  EXPECT_EQ(ErrorOfFull("    models: [\"*\"]\n", "    models: [llama-8b, phi3]\n"), "OK");
  // Group names are not role names.
  EXPECT_THAT(ErrorOfFull("    roles: [health-probe]\n", "    roles: [clinicians]\n"),
              StartsWith("cfg.yaml:30:13: users[1].roles[0]: \"clinicians\" is not a configured "
                         "role"));
  EXPECT_EQ(ErrorOf(Edit(kMinimalConfig, "models:", "users: [{name: u, groups: [g]}]\nmodels:")),
            "cfg.yaml:6:28: users[0].groups[0]: \"g\" is not a configured group (none is "
            "configured)");
}

TEST(ConfigRulesTest, RoleMethods) {
  const std::string served[] = {
      "airlock.v1.Inference/Generate", "airlock.v1.Inference/GenerateStream",
      "airlock.v1.Inference/Chat",     "airlock.v1.Inference/ChatStream",
      "airlock.v1.Inference/Tokenize", "airlock.v1.Inference/ListModels",
      "grpc.health.v1.Health/Check",   "grpc.health.v1.Health/Watch",
      "airlock.v1.Admin/QueryAudit",   "airlock.v1.Admin/VerifyAudit",
      "airlock.v1.Admin/ExportAudit",  "airlock.v1.Admin/GetUsage",
      "airlock.v1.Admin/ListUsage",    "airlock.v1.Admin/SetQuotaOverride",
      "airlock.v1.Admin/ResetUsage",   "airlock.v1.Admin/CreateApiKey",
      "airlock.v1.Admin/ListApiKeys",  "airlock.v1.Admin/RevokeApiKey",
      "airlock.v1.Inference/*",
      "grpc.health.v1.Health/*",       "airlock.v1.Admin/*",
      "openai/v1/chat/completions",    "openai/v1/completions",
      "openai/v1/models",              "openai/v1/*",
      "*"};
  for (const std::string& method : served) {
    EXPECT_EQ(ErrorOfFull("    methods: [grpc.health.v1.Health/Check, grpc.health.v1.Health/Watch]\n",
                          absl::StrCat("    methods: [\"", method, "\"]\n")),
              "OK")
        << method;
  }
  EXPECT_THAT(ConfigurableMethods(), ::testing::UnorderedElementsAreArray(served));
  EXPECT_THAT(
      ErrorOfFull("    methods: [grpc.health.v1.Health/Check, grpc.health.v1.Health/Watch]\n",
                  "    methods: [grpc.health.v1.Health/Check, airlock.v1.Inference/Generat]\n"),
      StartsWith("cfg.yaml:39:44: roles[1].methods[1]: \"airlock.v1.Inference/Generat\" is not a "
                 "method airlockd serves (expected one of airlock.v1.Inference/Generate, "));
  for (const char* bad : {"/airlock.v1.Inference/Generate", "airlock.v1.Inference/", "Generate",
                          "airlock.v1.*", "grpc.health.v1.Health/check"}) {
    EXPECT_THAT(
        ErrorOfFull("    methods: [grpc.health.v1.Health/Check, grpc.health.v1.Health/Watch]\n",
                    absl::StrCat("    methods: [\"", bad, "\"]\n")),
        StartsWith("cfg.yaml:39:15: roles[1].methods[0]: "))
        << bad;
  }
}

// The loader's methods are the policy's plus the wildcards, and the policy's are every method of
// the services airlockd serves (a new RPC that nobody could be granted would be caught here); what
// the loader accepts the policy accepts.
TEST(ConfigRulesTest, AgreesWithTheAccessPolicy) {
  std::vector<std::string> exact;
  for (const std::string& method : ConfigurableMethods()) {
    if (method.find('*') == std::string::npos) exact.push_back(method);
  }
  EXPECT_THAT(exact, ::testing::UnorderedElementsAreArray(auth::ServedMethods()));
  std::vector<std::string> declared;
  for (const google::protobuf::FileDescriptor* file :
       {airlock::v1::GenerateRequest::descriptor()->file(), airlock::v1::GetUsageRequest::descriptor()->file(),
        grpc::health::v1::HealthCheckRequest::descriptor()->file()}) {
    ASSERT_EQ(file->service_count(), 1) << file->name();
    const google::protobuf::ServiceDescriptor* service = file->service(0);
    for (int i = 0; i < service->method_count(); ++i) {
      declared.push_back(absl::StrCat(service->full_name(), "/", service->method(i)->name()));
    }
  }
  // The OpenAI-compatible listener's routes are methods too (no proto service declares them).
  for (const char* route : {"openai/v1/chat/completions", "openai/v1/completions", "openai/v1/models"}) {
    declared.push_back(route);
  }
  EXPECT_THAT(declared, ::testing::UnorderedElementsAreArray(auth::ServedMethods()));
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(kFullConfig, "cfg.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(auth::AccessPolicy::Create(parsed->config()).ok());
}

TEST(ConfigRulesTest, MetricsEndpoint) {
  const auto with = [](const std::string& metrics) {
    return ErrorOfFull("  port_file: /run/airlock/port\n",
                       absl::StrCat("  port_file: /run/airlock/port\nmetrics:\n", metrics));
  };
  EXPECT_EQ(with("  listen: \"10.0.0.5:9464\"\n  scrapers: [prometheus]\n"), "OK");
  EXPECT_EQ(with("  listen: \"127.0.0.1:9464\"\n  plaintext: true\n"), "OK");
  // HTTPS names who may scrape; plain HTTP has no certificate to name anyone by.
  EXPECT_EQ(with("  listen: \"10.0.0.5:9464\"\n"),
            "cfg.yaml:6:1: metrics.scrapers: required with HTTPS: the identities allowed to scrape, from their "
            "client certificates (e.g. [prometheus]); no other certificate may read the metrics");
  EXPECT_THAT(with("  listen: \"10.0.0.5:9464\"\n  scrapers: [\"\"]\n"),
              HasSubstr("metrics.scrapers[0]: must not be empty"));
  EXPECT_THAT(with("  listen: \"127.0.0.1:9464\"\n  plaintext: true\n  scrapers: [prometheus]\n"),
              HasSubstr("metrics.scrapers: metrics.plaintext serves plain HTTP"));
  EXPECT_THAT(with("  scrapers: [prometheus]\n"), HasSubstr("metrics.scrapers: set metrics.listen too"));
  EXPECT_EQ(with("  listen: \"[::1]:9464\"\n  plaintext: true\n"), "OK");
  EXPECT_THAT(with("  listen: \"0.0.0.0:9464\"\n  plaintext: true\n"),
              StartsWith("cfg.yaml:8:14: metrics.plaintext: plain HTTP is allowed only on a loopback address"));
  EXPECT_THAT(with("  listen: \"127.example.com:9464\"\n  plaintext: true\n"),
              HasSubstr("metrics.plaintext: plain HTTP is allowed only on a loopback address"));
  EXPECT_THAT(with("  listen: \"9464\"\n"), StartsWith("cfg.yaml:7:11: metrics.listen: expected host:port"));
  EXPECT_THAT(with("  cert_file: /etc/airlock/metrics.crt\n"),
              HasSubstr("metrics.cert_file: set metrics.listen too"));
  EXPECT_THAT(with("  listen: \"127.0.0.1:9464\"\n  plaintext: true\n  client_ca_file: /etc/ca.crt\n"),
              HasSubstr("metrics.client_ca_file: metrics.plaintext serves plain HTTP"));
}

TEST(ConfigRulesTest, OpenAiEndpoint) {
  const auto with = [](const std::string& yaml) {
    return ErrorOfFull("  port_file: /run/airlock/port\n", absl::StrCat("  port_file: /run/airlock/port\n", yaml));
  };
  EXPECT_EQ(with("openai:\n  listen: \"0.0.0.0:8443\"\n  port_file: /run/airlock/openai-port\n"), "OK");
  EXPECT_THAT(with("openai:\n  listen: \"8443\"\n"), HasSubstr("openai.listen: expected host:port"));
  // A listener of its own: not the gRPC port, not the metrics port.
  EXPECT_THAT(ErrorOf(Edit(Edit(kFullConfig, "  listen: \"127.0.0.1:0\"\n", "  listen: \"127.0.0.1:7443\"\n"),
                           "  port_file: /run/airlock/port\n",
                           "  port_file: /run/airlock/port\nopenai:\n  listen: \"127.0.0.1:7443\"\n")),
              HasSubstr("openai.listen: must differ from server.listen and metrics.listen"));
  EXPECT_THAT(with("metrics:\n  listen: \"127.0.0.1:9464\"\n  plaintext: true\nopenai:\n  listen: \"127.0.0.1:9464\"\n"),
              HasSubstr("openai.listen: must differ from server.listen and metrics.listen"));
  EXPECT_THAT(with("openai:\n  port_file: /run/airlock/openai-port\n"),
              HasSubstr("openai.port_file: set openai.listen too"));
  EXPECT_THAT(with("openai:\n  listen: \"0.0.0.0:8443\"\n  plaintext: true\n"), HasSubstr("openai.plaintext"));
  EXPECT_EQ(with("openai:\n  listen: \"0.0.0.0:8443\"\n  api_keys: true\n"), "OK");
  EXPECT_THAT(with("openai:\n  api_keys: true\n"), HasSubstr("openai.api_keys: set openai.listen too"));
  EXPECT_THAT(with("openai:\n  listen: \"0.0.0.0:8443\"\n  api_keys: maybe\n"), HasSubstr("openai.api_keys"));
}

TEST(ConfigRulesTest, ModelSignatures) {
  const auto with = [](const std::string& yaml) {
    return ErrorOfFull("  port_file: /run/airlock/port\n", absl::StrCat("  port_file: /run/airlock/port\n", yaml));
  };
  EXPECT_EQ(with("model_signatures:\n  required: true\n  trusted_keys: [/etc/airlock/publishers/acme.pub]\n"), "OK");
  EXPECT_THAT(with("model_signatures:\n  required: true\n"),
              HasSubstr("model_signatures.trusted_keys: required when model_signatures.required is true"));
  EXPECT_THAT(with("model_signatures:\n  trusted_keys: [/etc/airlock/acme.pub]\n"),
              HasSubstr("model_signatures.trusted_keys: only used with model_signatures.required: true"));
  EXPECT_THAT(with("model_signatures:\n  required: true\n  trusted_keys: [acme.pub]\n"),
              HasSubstr("model_signatures.trusted_keys[0]: must be an absolute path, got \"acme.pub\""));
}

TEST(ConfigRulesTest, Limits) {
  EXPECT_EQ(ErrorOfFull("  max_request_bytes: 2097152\n", "  max_request_bytes: 1023\n"),
            "cfg.yaml:42:22: limits.max_request_bytes: 1023 is out of range (1024 to 67108864; "
            "leave the key out for the default)");
  EXPECT_EQ(ErrorOfFull("  max_request_bytes: 2097152\n", "  max_request_bytes: 67108865\n"),
            "cfg.yaml:42:22: limits.max_request_bytes: 67108865 is out of range (1024 to 67108864; "
            "leave the key out for the default)");
  EXPECT_EQ(ErrorOfFull("  max_request_bytes: 2097152\n", "  max_request_bytes: 1024\n"), "OK");
  EXPECT_EQ(ErrorOfFull("  max_request_bytes: 2097152\n", "  max_request_bytes: 67108864\n"), "OK");
  EXPECT_EQ(ErrorOfFull("  max_prompt_tokens: 4096\n", "  max_prompt_tokens: 0\n"), "OK");
  EXPECT_EQ(ErrorOfFull("  max_tokens_per_request: 1024\n", "  max_tokens_per_request: 0\n"),
            "cfg.yaml:44:27: limits.max_tokens_per_request: 0 is out of range (at least 1; leave "
            "the key out for the default)");
  EXPECT_EQ(ErrorOfFull("  max_concurrent_streams: 8\n", "  max_concurrent_streams: 0\n"),
            "cfg.yaml:46:27: limits.max_concurrent_streams: 0 is out of range (at least 1; leave "
            "the key out for the default)");
  EXPECT_EQ(ErrorOfFull("  max_request_duration: 120s\n", "  max_request_duration: 0s\n"),
            "cfg.yaml:45:25: limits.max_request_duration: \"0s\" must be positive");
  EXPECT_EQ(ErrorOfFull("  max_request_duration: 120s\n", "  max_request_duration: ten minutes\n"),
            "cfg.yaml:45:25: limits.max_request_duration: expected a duration such as \"30s\", "
            "\"500ms\" or \"5m\", got \"ten minutes\"");
}

}  // namespace
}  // namespace airlock::daemon

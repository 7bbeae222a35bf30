// Feeds the configuration loader thousands of random mutations of a valid file (fixed seed): it
// must never crash, and every rejection must be reported in the FILE[:LINE:COL]: format.
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/config/config_loader.h"
#include "daemon/config/daemon_options.h"

namespace airlock::daemon {
namespace {

constexpr std::string_view kSeedConfig = R"(server:
  listen: "127.0.0.1:0"
  drain_timeout: 5s
  sandbox: false
tls:
  cert_file: /etc/airlock/server.crt
  key_file: /etc/airlock/server.key
  client_ca_file: /etc/airlock/ca.crt
  crl_files: [/etc/airlock/ca.crl]
  min_version: TLS_1_3
  watch_interval: 30s
models:
  - name: llama-8b
    path: /var/lib/airlock/models/llama-8b.gguf
    threads: 8
    kv_cache_type: F32
    max_queue: 16
identity: {source: SAN_EMAIL}
users:
  - name: alice
    groups: [staff]
    roles: [probe]
groups:
  - {name: staff, roles: [user]}
roles:
  - name: user
    methods: ["airlock.v1.Inference/*", "grpc.health.v1.Health/*"]
    models: ["*", llama-8b]
  - name: probe
    methods: [grpc.health.v1.Health/Check]
limits:
  max_request_bytes: 2097152
  max_request_duration: 120s
audit: {state_dir: /state, signing_key_file: /etc/a.key, hmac_secret_file: /etc/a.secret}
)";

// Characters that mean something to YAML, plus a few bytes that are not UTF-8 on their own.
constexpr std::string_view kSpecial = ":-[]{},#&*!|>'\"%@` \t\n?\\0123456789\xff\xc3\x80";

std::string Mutate(std::string text, std::mt19937& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t at = text.empty() ? 0 : rng() % (text.size() + 1);
    switch (rng() % 7) {
      case 0:  // flip a byte
        if (!text.empty() && at < text.size()) text[at] = static_cast<char>(rng() % 256);
        break;
      case 1:  // delete a run
        if (at < text.size()) text.erase(at, 1 + rng() % 8);
        break;
      case 2:  // insert a YAML-significant character
        text.insert(at, 1, kSpecial[rng() % kSpecial.size()]);
        break;
      case 3: {  // duplicate a line elsewhere (duplicate keys, misplaced entries)
        std::vector<std::string> lines = absl::StrSplit(text, '\n');
        if (lines.size() > 1) {
          const std::string line = lines[rng() % lines.size()];
          lines.insert(lines.begin() + static_cast<long>(rng() % lines.size()), line);
          text = absl::StrJoin(lines, "\n");
        }
        break;
      }
      case 4: {  // swap two lines (changes nesting)
        std::vector<std::string> lines = absl::StrSplit(text, '\n');
        if (lines.size() > 1) {
          std::swap(lines[rng() % lines.size()], lines[rng() % lines.size()]);
          text = absl::StrJoin(lines, "\n");
        }
        break;
      }
      case 5:  // replace a run with a big number
        if (at < text.size()) text.replace(at, 1 + rng() % 4, "99999999999999999999");
        break;
      case 6:  // truncate
        text.resize(at);
        break;
    }
  }
  return text;
}

TEST(ConfigMutationTest, RandomMutationsNeverCrashAndAlwaysNameTheFile) {
  std::mt19937 rng(20240611);
  int accepted = 0;
  for (int i = 0; i < 5000; ++i) {
    const std::string text = Mutate(std::string(kSeedConfig), rng);
    absl::StatusOr<ParsedConfig> parsed = ParseConfig(text, "fuzz.yaml");
    if (parsed.ok()) {
      ++accepted;
      // Whatever was accepted must resolve (durations parse, etc.).
      const DaemonOptions options = ResolveOptions(*parsed);
      EXPECT_FALSE(options.models.empty());
      continue;
    }
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    for (absl::string_view line : absl::StrSplit(parsed.status().message(), '\n')) {
      ASSERT_TRUE(absl::StartsWith(line, "fuzz.yaml:"))
          << "mutation " << i << " gave an unformatted error: " << line << "\n--- input ---\n"
          << text;
    }
  }
  // Some mutations (e.g. a changed digit or name) must still be accepted, or the test would only
  // exercise the error paths.
  EXPECT_GT(accepted, 50);
}

}  // namespace
}  // namespace airlock::daemon

// Loading airlockd's YAML configuration onto the DaemonConfig protobuf, with every error reported
// as FILE:LINE:COLUMN: field.path: message.
//
// The YAML is mapped field by field onto airlock.v1.config.DaemonConfig by protobuf reflection, so
// the schema has one source of truth (proto/airlock/v1/config.proto). The mapping is strict:
// unknown keys, duplicate keys, wrong node kinds, out-of-range numbers, unknown enum names,
// anchors/aliases, tags, several documents and non-UTF-8 text are all refused. Then every rule
// written in the schema's comments is checked (ValidateConfig). File-system checks (files exist,
// the private key is not readable by others) are separate (CheckConfigFiles) so that a config can
// be validated on a machine other than the one it is for.
//
// Error format. Each problem is one line
//   airlockd.yaml:12:5: tls.min_versoin: unknown key (known keys of tls: cert_file, ...)
//   airlockd.yaml: models: at least one model is required
// (the second form when the field is absent from the file, so there is no position). A status can
// carry several such lines separated by '\n'; the code is INVALID_ARGUMENT for a bad
// configuration, FAILED_PRECONDITION for CheckConfigFiles' findings, and NOT_FOUND /
// PERMISSION_DENIED when LoadConfigFile cannot open the file.
//
// Thread-safety: free functions without shared state; ParsedConfig is an immutable value.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "airlock/v1/config.pb.h"

namespace airlock::daemon {

// Largest configuration file LoadConfigFile accepts: a real one is a few KiB, and the cap keeps a
// mistaken path (a model file, /dev/zero) from being read into memory.
inline constexpr size_t kMaxConfigFileBytes = 1 << 20;

// The methods roles may name: everything airlockd serves, then the wildcards. Kept here rather
// than taken from auth::ServedMethods() so that the config layer does not depend on the access
// policy's implementation; a test in the auth suite can compare the two.
const std::vector<std::string>& ConfigurableMethods();

// 1-based position in the configuration file.
struct FilePosition {
  int line = 0;
  int column = 0;
};

// A configuration as read from a file: the message plus where each field was written.
class ParsedConfig {
 public:
  // Where each present field path was written. `value` is where its value starts; `key` is where
  // its key is (absent for sequence elements, which have no key).
  struct FieldPositions {
    std::optional<FilePosition> key;
    FilePosition value;
  };
  using PositionMap = std::map<std::string, FieldPositions, std::less<>>;

  ParsedConfig(std::string file_name, std::string source_path,
               airlock::v1::config::DaemonConfig config, PositionMap positions);

  const airlock::v1::config::DaemonConfig& config() const { return config_; }
  // The name used in messages (as given to ParseConfig).
  const std::string& file_name() const { return file_name_; }
  // The path the file was read from; empty when the text did not come from LoadConfigFile.
  const std::string& source_path() const { return source_path_; }

  // Whether `field_path` ("tls.key_file", "models[1]", "roles[0].models[2]") was written in the
  // file. Distinguishes an explicit `threads: 0` from an absent key, which proto3 cannot.
  bool Has(std::string_view field_path) const;

  // "file:line:col" of the value of `field_path`. For an absent field, the position of the key of
  // its nearest present ancestor (so "tls.cert_file" missing points at "tls:"); the file name alone
  // when no ancestor is present either.
  std::string PositionOf(std::string_view field_path) const;

  // "POSITION: field_path: message" — the one format every configuration error uses, including
  // those found later by other code (e.g. a TLS key that does not match its certificate).
  std::string Describe(std::string_view field_path, std::string_view message) const;

 private:
  std::string file_name_;
  std::string source_path_;
  airlock::v1::config::DaemonConfig config_;
  PositionMap positions_;
};

// Parses YAML text (file_name is used in messages only) and validates it: the structural mapping,
// then ValidateConfig. INVALID_ARGUMENT listing every problem found (structural problems first;
// the semantic rules are only checked once the structure is sound, to avoid follow-on errors).
absl::StatusOr<ParsedConfig> ParseConfig(std::string_view yaml_text, std::string_view file_name);

// The rules written in config.proto's comments (names, references, ranges, durations, required TLS
// files, ...). ParseConfig already calls it; exposed for tests and for code that builds a
// ParsedConfig itself.
absl::Status ValidateConfig(const ParsedConfig& parsed);

// Reads `path` (NOT_FOUND / PERMISSION_DENIED naming it; files over kMaxConfigFileBytes and
// non-regular files are refused) and parses it with ParseConfig(text, path).
absl::StatusOr<ParsedConfig> LoadConfigFile(const std::string& path);

// Checks the files the configuration names, on this machine: each model path and TLS file exists,
// is a regular file and is readable; tls.key_file is owned by the current user and not accessible
// by group or others; the configuration file itself (when read by LoadConfigFile) is not
// world-writable. Every problem found is reported, each with the position of its field.
absl::Status CheckConfigFiles(const ParsedConfig& parsed);

// The files that decide whom airlockd trusts, as (key path, file): tls.cert_file,
// tls.client_ca_file, each tls.crl_files entry, and metrics.cert_file / metrics.client_ca_file when
// set. CheckConfigFiles (start, SIGHUP) and the daemon's tls.watch_interval re-read check each with
// auth::CheckTrustedFile: not writable by group/others or a user other than root or airlockd's,
// nor any directory above it.
std::vector<std::pair<std::string, std::string>> TrustAnchorFiles(const airlock::v1::config::DaemonConfig& config);
// What a TrustAnchorFiles key names, for messages: "CRL file", "client CA file", "certificate file".
std::string TrustAnchorWhat(std::string_view field);

}  // namespace airlock::daemon

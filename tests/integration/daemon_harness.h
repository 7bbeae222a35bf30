// Test harness for end-to-end tests: a lab PKI, the real airlockd started as a child process with a
// generated configuration, and mTLS gRPC channels to it as any user of the PKI.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "grpcpp/channel.h"
#include "nlohmann/json.hpp"
#include "tests/support/run_command.h"  // RunCommand: used here and by every test that includes this

namespace airlock::testing {

// A PKI made with auth::InitPki in `dir`, plus client certificates issued on demand.
struct LabPki {
  std::string dir;
  // Issues <dir>/<stem>.crt/.key with CN = stem (once per stem).
  void Issue(const std::string& stem);
  std::string cert(const std::string& stem) const { return dir + "/" + stem + ".crt"; }
  std::string key(const std::string& stem) const { return dir + "/" + stem + ".key"; }
};
LabPki MakeLabPki(const std::string& dir);

// A child process with its stderr in a log file, killed (SIGKILL) when destroyed if still running.
class ChildProcess {
 public:
  // Starts `args` (args[0] looked up in PATH) with stdout to /dev/null and stderr appended to
  // `log_path`; nullptr with `error` set when it cannot be started.
  static std::unique_ptr<ChildProcess> Spawn(const std::vector<std::string>& args, const std::string& log_path,
                                             std::string* error);
  virtual ~ChildProcess();

  pid_t pid() const { return pid_; }
  std::string Log() const;
  // Polls the log until it contains `text` or the deadline passes.
  bool WaitForLog(const std::string& text, absl::Duration within, size_t occurrences = 1) const;
  void Signal(int signal_number) const;
  // Exit code (or 128+signal) once the process ended, nullopt if still running at the deadline.
  std::optional<int> WaitExit(absl::Duration within);

 protected:
  ChildProcess() = default;
  // As Spawn, into this object.
  bool SpawnInto(const std::vector<std::string>& args, const std::string& log_path, std::string* error);

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

class DaemonProcess : public ChildProcess {
 public:
  // Writes `config_yaml` to <dir>/airlockd.yaml and starts airlockd on it, stderr to
  // <dir>/airlockd.log. Waits (up to `ready_within`) for the port file the config names
  // (server.port_file must be <dir>/port) or for the process to exit; nullptr on either failure,
  // with `error` saying which and holding the log. `launcher`, when given, is a command prefix
  // that ends by exec'ing its trailing arguments (airlockd's argv) in the same process — e.g.
  // `unshare` into new namespaces — so pid() is airlockd's once it listens.
  static std::unique_ptr<DaemonProcess> Start(const std::string& dir, const std::string& config_yaml,
                                              std::string* error,
                                              absl::Duration ready_within = absl::Seconds(60),
                                              const std::vector<std::string>& launcher = {});

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  std::string config_path() const { return dir_ + "/airlockd.yaml"; }

 private:
  std::string dir_;
  int port_ = 0;
};

// An mTLS channel to 127.0.0.1:port as `stem` of `pki` (no client certificate when stem is "").
std::shared_ptr<grpc::Channel> Connect(int port, const LabPki& pki, const std::string& stem);
// The same with explicit PEM files (e.g. a certificate from another CA).
std::shared_ptr<grpc::Channel> ConnectWith(int port, const std::string& ca_file, const std::string& cert_file,
                                           const std::string& key_file);

// `airlockctl <args>` against 127.0.0.1:port as `user` of `pki` (connection flags appended), with
// no profile of the machine it runs on (AIRLOCK_CONFIG_DIR points at <pki.dir>/no-profiles).
CommandResult RunCtl(int port, const LabPki& pki, const std::string& user, const std::vector<std::string>& args,
                     const std::string& input = "");

// A deadline `within` from now, for ClientContext::set_deadline.
std::chrono::system_clock::time_point DeadlineIn(absl::Duration within);

// Polls `condition` (briefly pausing between tries) until it returns true or `within` has passed;
// returns its last result. For conditions that have no notification.
bool PollUntil(const std::function<bool()>& condition, absl::Duration within);

// A stopped daemon's audit log (audit.state_dir) exported with `airlockctl audit export`: the
// anchor (when pruned) and checkpoints, then the records, one JSON object each. Adds a test failure when the export fails.
std::vector<nlohmann::json> ExportAudit(const std::string& state_dir);
// `airlockctl audit verify --json` on a stopped daemon's state directory (exit 0: intact).
CommandResult VerifyAudit(const std::string& state_dir, const std::string& public_key_file);

// The records of an export, indexed for the checks of crash and fault tests.
struct AuditIndex {
  size_t records = 0;
  std::map<std::string, nlohmann::json> begins;  // request id -> its begin record
  std::map<std::string, nlohmann::json> ends;    // request id -> its end record
  // End records with status_code 0, per (identity, method): the calls that succeeded.
  std::map<std::pair<std::string, std::string>, int> ok_ends;
  // Request ids that have more than one record of the same phase (never expected).
  std::vector<std::string> repeated;
};
AuditIndex IndexAudit(const std::vector<nlohmann::json>& export_lines);

// The path of the tiny model the end-to-end tests serve, under the shared test data.
inline constexpr char kStoriesModel[] = "models/stories260K-f32.gguf";
// Access for SetUpLab where only "alice" calls, and may call anything on any model.
inline constexpr char kAliceMayCallAnything[] = R"(users:
  - name: alice
    roles: [user]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
)";
// A `models:` list item serving it as "stories" with one thread (YAML, indented by two spaces).
std::string StoriesModelYaml();

// The base configuration the tests start from: the lab PKI, port 0 with <dir>/port, the given
// models block (YAML list items, already indented by two spaces) and the access block.
std::string BaseConfig(const std::string& dir, const LabPki& pki, const std::string& models_yaml,
                       const std::string& access_yaml, const std::string& extra_yaml = "");

// The fixture of the end-to-end tests: a temporary directory, a lab PKI with certificates for the
// test's users, and airlockd started on BaseConfig with the test's access block.
class LabDaemonTest : public ::testing::Test {
 protected:
  // Call in SetUp (after AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel)), which must be
  // in SetUp itself to skip the test): makes dir_ and pki_, issues `users`, keeps `access_yaml`
  // for StartDaemon.
  void SetUpLab(std::string access_yaml, const std::vector<std::string>& users);
  // Starts airlockd serving `models_yaml` ("" : StoriesModelYaml()), with `audit_extra` lines
  // (indented by two spaces) added to its audit: block and `extra_yaml` (top-level keys) at the end.
  void StartDaemon(const std::string& audit_extra = "", const std::string& models_yaml = "",
                   const std::string& extra_yaml = "");
  // SIGTERM; expects a clean exit (0) within 30 s.
  void StopDaemon();
  // `airlockctl <args>` against the daemon as `user` (RunCtl).
  CommandResult Ctl(const std::string& user, const std::vector<std::string>& args) {
    return RunCtl(daemon_->port(), pki_, user, args);
  }

  std::string dir_;
  LabPki pki_;
  std::string access_;
  std::unique_ptr<DaemonProcess> daemon_;
};

}  // namespace airlock::testing

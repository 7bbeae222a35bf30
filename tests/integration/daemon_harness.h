// Test harness for end-to-end tests: a lab PKI, the real airlockd started as a child process with a
// generated configuration, and mTLS gRPC channels to it as any user of the PKI.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/channel.h"

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

class DaemonProcess {
 public:
  // Writes `config_yaml` to <dir>/airlockd.yaml and starts airlockd on it, stderr to
  // <dir>/airlockd.log. Waits (up to `ready_within`) for the port file the config names
  // (server.port_file must be <dir>/port) or for the process to exit; nullptr on either failure,
  // with `error` saying which and holding the log.
  static std::unique_ptr<DaemonProcess> Start(const std::string& dir, const std::string& config_yaml,
                                              std::string* error,
                                              absl::Duration ready_within = absl::Seconds(60));
  ~DaemonProcess();  // SIGKILL if still running

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  std::string config_path() const { return dir_ + "/airlockd.yaml"; }
  std::string Log() const;
  // Polls the log until it contains `text` or the deadline passes.
  bool WaitForLog(const std::string& text, absl::Duration within, size_t occurrences = 1) const;
  void Signal(int signal_number) const;
  // Exit code (or 128+signal) once the process ended, nullopt if still running at the deadline.
  std::optional<int> WaitExit(absl::Duration within);

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool reaped_ = false;
};

// Runs argv to completion with a deadline; stdout and stderr captured.
struct CommandResult {
  int exit_code = -1;  // 128+signal when killed; -1 when it could not start
  std::string out;
  std::string err;
};
CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration within = absl::Seconds(120),
                         const std::string& stdin_text = "");

// An mTLS channel to 127.0.0.1:port as `stem` of `pki` (no client certificate when stem is "").
std::shared_ptr<grpc::Channel> Connect(int port, const LabPki& pki, const std::string& stem);
// The same with explicit PEM files (e.g. a certificate from another CA).
std::shared_ptr<grpc::Channel> ConnectWith(int port, const std::string& ca_file, const std::string& cert_file,
                                           const std::string& key_file);

// A deadline `within` from now, for ClientContext::set_deadline.
std::chrono::system_clock::time_point DeadlineIn(absl::Duration within);

// The base configuration the tests start from: the lab PKI, port 0 with <dir>/port, the given
// models block (YAML list items, already indented by two spaces) and the access block.
std::string BaseConfig(const std::string& dir, const LabPki& pki, const std::string& models_yaml,
                       const std::string& access_yaml, const std::string& extra_yaml = "");

}  // namespace airlock::testing

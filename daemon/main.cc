// airlockd: the Airlock daemon. Reads its configuration, loads its models, serves the mTLS gRPC API
// and locks itself out of the network; SIGHUP reloads, SIGTERM/SIGINT drain and exit 0. A gRPC
// listener that stops accepting (grpc_log.h) drains and exits kExitListenerFailed.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "daemon/config/config_loader.h"
#include "daemon/config/daemon_options.h"
#include "daemon/grpc_log.h"
#include "daemon/log.h"
#include "daemon/sandbox.h"
#include "daemon/server.h"
#include "inference/gguf/gguf_file.h"

namespace {

using namespace airlock::daemon;

constexpr char kVersion[] = AIRLOCK_VERSION;
// The exit status when the gRPC listener died (EX_TEMPFAIL: a restart fixes it). The systemd unit
// restarts on it (Restart=on-failure); docs/operations.md has the runbook.
constexpr int kExitListenerFailed = 75;

// Loads, validates and resolves the configuration; errors name the file position.
absl::StatusOr<DaemonOptions> ReadConfig(const std::string& path) {
  absl::StatusOr<ParsedConfig> parsed = LoadConfigFile(path);
  if (!parsed.ok()) return parsed.status();
  if (absl::Status files = CheckConfigFiles(*parsed); !files.ok()) return files;
  return ResolveOptions(*parsed);
}

// Blocks the lifecycle signals in every thread (threads inherit the mask), so that only
// WaitForSignals sees them, synchronously, and no handler ever runs in a gRPC or engine thread.
sigset_t BlockLifecycleSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that vanishes must not kill the daemon
  return set;
}

// Each connection, accepted or half-open in a handshake, holds a descriptor: the soft limit
// (1024 by default) is what an unauthenticated peer must exhaust to kill gRPC's listener. The hard
// limit is the administrator's (systemd: LimitNOFILE=, which sets both); a failure is logged and
// the start goes on with the soft limit.
void RaiseDescriptorLimit() {
  struct rlimit limit {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    LogWarning("getrlimit(RLIMIT_NOFILE) failed", {{"error", strerror(errno)}});
    return;
  }
  const rlim_t soft = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      LogWarning("could not raise the open-file limit to its hard limit",
                 {{"error", strerror(errno)}, {"soft", soft}, {"hard", limit.rlim_max}});
      limit.rlim_cur = soft;
    }
  }
  LogInfo("open-file limit", {{"soft", limit.rlim_cur}, {"hard", limit.rlim_max}, {"soft_at_start", soft}});
}

// SIGHUP: reload (errors keep the running configuration). SIGTERM/SIGINT: return to drain.
void WaitForSignals(const sigset_t& set, Daemon& daemon) {
  for (;;) {
    int signal_number = 0;
    if (sigwait(&set, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      LogInfo("SIGHUP: reloading");
      (void)daemon.Reload();  // logged either way
      continue;
    }
    if (std::string failure = GrpcListenerFailure(); !failure.empty()) {
      LogError("the gRPC listener stopped accepting connections; draining, then exiting for a restart",
               {{"grpc_error", failure}, {"exit_status", kExitListenerFailed}});
    } else {
      LogInfo("shutdown requested", {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
    }
    return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"airlockd: the Airlock inference daemon (mTLS gRPC, roles, offline)"};
  std::string config_path;
  std::string check_path;
  bool version = false;
  std::string log_level = "info";
  app.add_option("--config,-c", config_path, "Configuration file (YAML)")->check(CLI::ExistingFile);
  app.add_option("--check-config", check_path, "Validate this configuration file and exit");
  app.add_flag("--version", version, "Print the version and exit");
  app.add_option("--log-level", log_level, "debug | info | warning | error")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  CLI11_PARSE(app, argc, argv);
  if (version) {
    std::cout << "airlockd " << kVersion << "\n";
    return 0;
  }
  SetLogLevel(log_level == "debug" ? LogLevel::kDebug
              : log_level == "warning" ? LogLevel::kWarning
              : log_level == "error" ? LogLevel::kError
                                     : LogLevel::kInfo);
  // Before any gRPC object: its lines in our log format, and its errors always (grpc_log.h).
  ForwardGrpcLogs(log_level == "debug" ? LogLevel::kDebug : LogLevel::kInfo);

  // --check-config: the same checks as a start, without loading models or listening.
  if (!check_path.empty()) {
    absl::StatusOr<DaemonOptions> options = ReadConfig(check_path);
    if (!options.ok()) {
      std::cerr << "airlockd: " << options.status().message() << "\n";
      return 2;
    }
    // Each model's GGUF header and tensor table (mapped, not loaded): a file that is not a model
    // must not pass a check that a start would fail.
    for (size_t i = 0; i < options->models.size(); ++i) {
      const ModelOptions& model = options->models[i];
      if (absl::StatusOr<std::unique_ptr<airlock::inference::GgufFile>> gguf =
              airlock::inference::GgufFile::Open(model.path);
          !gguf.ok()) {
        std::cerr << "airlockd: models[" << i << "].path " << model.path << ": " << gguf.status().message() << "\n";
        return 2;
      }
    }
    std::cout << check_path << ": OK (" << options->models.size() << " models, " << options->config.users_size()
              << " users, " << options->config.roles_size() << " roles)\n";
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << "airlockd: --config FILE is required (or --check-config FILE)\n";
    return 2;
  }

  // Before any thread exists, so that every thread inherits the blocked mask.
  const sigset_t signals = BlockLifecycleSignals();
  // A dead gRPC listener wakes WaitForSignals like SIGTERM (the hook may not call into gRPC).
  OnGrpcListenerFailure([](std::string_view) { kill(getpid(), SIGTERM); });

  // Configuration: an unsafe or invalid file refuses the start, naming the line.
  absl::StatusOr<DaemonOptions> options = ReadConfig(config_path);
  if (!options.ok()) {
    LogError("invalid configuration; not starting", {{"error", std::string(options.status().message())}});
    return 2;
  }

  // Before anything opens a descriptor in numbers: connections are what exhaust them.
  RaiseDescriptorLimit();

  // TLS files, CRLs, models, listener.
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(config_path, *options);
  if (!daemon.ok()) {
    LogError("could not start", {{"error", std::string(daemon.status().message())}});
    return 1;
  }

  // Listening: from now on the process needs no new sockets and makes no connections.
  if (options->sandbox) {
    if (absl::Status locked = LockDownNetwork(); !locked.ok()) {
      LogError("network lock-down failed; not serving", {{"error", std::string(locked.message())}});
      (*daemon)->Drain();
      return 1;
    }
    LogInfo("network locked down (seccomp): no new sockets, no outbound connections");
  } else {
    LogWarning("server.sandbox is false: the network lock-down is off");
  }

  // Serve until SIGTERM/SIGINT; SIGHUP reloads.
  WaitForSignals(signals, **daemon);

  // Drain in-flight work, then exit 0, or kExitListenerFailed for the service manager to restart us.
  const bool listener_failed = !GrpcListenerFailure().empty();
  (*daemon)->Drain();
  return listener_failed ? kExitListenerFailed : 0;
}

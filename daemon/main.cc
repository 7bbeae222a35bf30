// airlockd: the Airlock daemon. Reads its configuration, loads its models, serves the mTLS gRPC API
// and locks itself out of the network; SIGHUP reloads, SIGTERM/SIGINT drain and exit 0.
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "daemon/config/config_loader.h"
#include "daemon/config/daemon_options.h"
#include "daemon/log.h"
#include "daemon/sandbox.h"
#include "daemon/server.h"
#include "inference/gguf/gguf_file.h"

namespace {

using namespace airlock::daemon;

constexpr char kVersion[] = AIRLOCK_VERSION;

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
    LogInfo("shutdown requested", {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
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

  // Configuration: an unsafe or invalid file refuses the start, naming the line.
  absl::StatusOr<DaemonOptions> options = ReadConfig(config_path);
  if (!options.ok()) {
    LogError("invalid configuration; not starting", {{"error", std::string(options.status().message())}});
    return 2;
  }

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

  // Drain in-flight work, then exit 0.
  (*daemon)->Drain();
  return 0;
}

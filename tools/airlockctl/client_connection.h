// How airlockctl reaches airlockd: connection flags and profiles, the mutual-TLS channel, and the
// mapping of gRPC errors to messages and exit codes shared by every client command.
//
// Settings come from a profile ($AIRLOCK_CONFIG_DIR/profiles.yaml, else
// ~/.config/airlock/profiles.yaml) chosen by --profile, $AIRLOCK_PROFILE or the file's `default`,
// and flags override the profile field by field. There is deliberately no plaintext option.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace airlock::ctl {

// Exit codes of the client commands (docs/airlockctl.md lists them).
inline constexpr int kExitOk = 0;
inline constexpr int kExitLocalError = 1;        // usage, files, profiles
inline constexpr int kExitInvalidArgument = 2;   // INVALID_ARGUMENT from the daemon
inline constexpr int kExitPermission = 3;        // PERMISSION_DENIED, UNAUTHENTICATED
inline constexpr int kExitUnavailable = 4;       // UNAVAILABLE, DEADLINE_EXCEEDED; health not SERVING
inline constexpr int kExitResourceExhausted = 5; // RESOURCE_EXHAUSTED (quotas, queue full)
inline constexpr int kExitOtherRpcError = 6;     // any other gRPC status
inline constexpr int kExitInterrupted = 130;     // Ctrl-C (128 + SIGINT, as shells report it)

// The connection flags as given on the command line; empty / <= 0 means "not given".
struct ConnectionFlags {
  std::string server;       // host:port
  std::string ca;           // CA bundle that signed the server's certificate
  std::string cert;         // client certificate chain
  std::string key;          // client private key
  std::string server_name;  // TLS name to verify; default: the host part of `server`
  std::string profile;      // profile name
  double timeout_seconds = 0;
};

// Adds --server --ca --cert --key --server-name --timeout --profile to `cmd`.
void AddConnectionFlags(CLI::App& cmd, ConnectionFlags& flags);

// Resolved settings: every path absolute or relative to the working directory.
struct ConnectionSettings {
  std::string server;
  std::string ca;
  std::string cert;
  std::string key;
  std::string server_name;  // never empty
  std::string profile;      // the profile used, "" when none
  std::string profile_file; // the file it came from
};

// Default location of the profile file: $AIRLOCK_CONFIG_DIR/profiles.yaml, else
// $HOME/.config/airlock/profiles.yaml.
std::string DefaultProfileFile();

// Merges the profile (if any: --profile, then $AIRLOCK_PROFILE, then the file's `default`) with
// the flags. Errors: a named profile or its file missing, a malformed file, no server/ca/cert/key.
absl::StatusOr<ConnectionSettings> ResolveConnection(const ConnectionFlags& flags);

// The host part of "host:port", "[v6]:port" or "host".
std::string HostOfTarget(const std::string& target);

// Reads the three PEM files (refusing a key readable by group or others, as ssh does) and opens
// a mutual-TLS channel. The channel connects lazily: errors reaching the server surface on the
// first call.
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const ConnectionSettings& settings);

// Both steps above, printing the error (prefixed "airlockctl: ") and returning null on failure.
// Also installs the Ctrl-C handler. `server` receives the address, for error hints.
std::shared_ptr<grpc::Channel> ConnectOrReport(const ConnectionFlags& flags, std::string* server);

// Deadline for one call: --timeout when given, else `default_seconds`.
std::chrono::system_clock::time_point CallDeadline(const ConnectionFlags& flags, double default_seconds);
inline constexpr double kGenerationTimeoutSeconds = 600;
inline constexpr double kShortTimeoutSeconds = 10;

// "INVALID_ARGUMENT", "UNAVAILABLE", ...
const char* StatusCodeName(grpc::StatusCode code);
int ExitCodeForRpc(grpc::StatusCode code);
// Prints "airlockctl: <method>: <CODE_NAME>: <message>" (plus a hint for connection failures)
// and returns the exit code for it.
int ReportRpcError(const std::string& method, const grpc::Status& status, const std::string& server);

// Ctrl-C handling for calls: the first call blocks SIGINT in every thread (gRPC's included, so
// call it before creating a channel) and starts a thread that waits for it. While a context is
// registered, SIGINT cancels that call; otherwise it exits with 130 at once.
void InstallInterruptHandler();
class ScopedCancelOnInterrupt {
 public:
  explicit ScopedCancelOnInterrupt(grpc::ClientContext* context);
  ~ScopedCancelOnInterrupt();
  ScopedCancelOnInterrupt(const ScopedCancelOnInterrupt&) = delete;
  ScopedCancelOnInterrupt& operator=(const ScopedCancelOnInterrupt&) = delete;
};
// True once SIGINT cancelled a call.
bool Interrupted();

}  // namespace airlock::ctl

// airlockctl's connection to airlockd: flags and profiles, the mutual-TLS channel, gRPC error
// reporting and Ctrl-C cancellation (see client_connection.h).
#include "tools/airlockctl/client_connection.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <grpc/support/log.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "inference/base/status.h"

namespace airlock::ctl {
namespace {

namespace fs = std::filesystem;

std::string GetEnv(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

// A profile path: "~/" is the home directory, a relative path is relative to the profile file's
// directory (so a profile can sit next to its certificates).
std::string ResolveProfilePath(const std::string& value, const fs::path& profile_dir) {
  if (value.empty()) return value;
  if (value == "~" || value.rfind("~/", 0) == 0) {
    const std::string home = GetEnv("HOME");
    if (!home.empty()) return home + value.substr(1);
  }
  fs::path p(value);
  if (p.is_absolute()) return value;
  return (profile_dir / p).lexically_normal().string();
}

struct ProfileValues {
  std::string server, ca, cert, key, server_name;
};

// Loads profile `name` from `file`; `name` empty means the file's `default` (none: no profile).
absl::StatusOr<ProfileValues> LoadProfile(const std::string& file, std::string* name) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(file);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("profile file ", file, ": ", e.what()));
  }
  if (!root.IsMap() && !root.IsNull()) {
    return absl::InvalidArgumentError(
        absl::StrCat("profile file ", file, ": expected a mapping with `default` and `profiles`"));
  }
  try {
    for (const auto& kv : root) {
      const std::string k = kv.first.as<std::string>();
      if (k != "default" && k != "profiles") {
        return absl::InvalidArgumentError(
            absl::StrCat("profile file ", file, ": unknown key '", k, "' (known: default, profiles)"));
      }
    }
    if (name->empty()) {
      if (root["default"]) *name = root["default"].as<std::string>();
      if (name->empty()) return ProfileValues{};
    }
    const YAML::Node profiles = root["profiles"];
    if (!profiles || !profiles.IsMap()) {
      return absl::NotFoundError(absl::StrCat("profile '", *name, "': ", file, " has no `profiles` mapping"));
    }
    const YAML::Node p = profiles[*name];
    if (!p) {
      std::vector<std::string> names;
      for (const auto& kv : profiles) names.push_back(kv.first.as<std::string>());
      return absl::NotFoundError(absl::StrCat("no profile '", *name, "' in ", file, " (profiles: ",
                                              names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
    }
    if (!p.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat("profile '", *name, "' in ", file, ": expected a mapping"));
    }
    ProfileValues v;
    const fs::path dir = fs::absolute(fs::path(file)).parent_path();
    for (const auto& kv : p) {
      const std::string k = kv.first.as<std::string>();
      const std::string value = kv.second.as<std::string>();
      if (k == "server") {
        v.server = value;
      } else if (k == "ca") {
        v.ca = ResolveProfilePath(value, dir);
      } else if (k == "cert") {
        v.cert = ResolveProfilePath(value, dir);
      } else if (k == "key") {
        v.key = ResolveProfilePath(value, dir);
      } else if (k == "server_name") {
        v.server_name = value;
      } else {
        // A typo would otherwise silently fall back to a flag default; refuse it instead.
        return absl::InvalidArgumentError(absl::StrCat("profile '", *name, "' in ", file, ": unknown key '", k,
                                                       "' (known: server, ca, cert, key, server_name)"));
      }
    }
    return v;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("profile file ", file, ": ", e.what()));
  }
}

absl::StatusOr<std::string> ReadFileFor(const std::string& what, const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(what, " ", path, ": no such file"));
  }
  if (!fs::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": not a regular file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A key that others can read is as good as leaked; refuse it the way ssh refuses such identities.
absl::Status CheckKeyMode(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("client key ", path, ": ", std::strerror(errno)));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return absl::PermissionDeniedError(absl::StrCat("client key ", path, " is accessible by group or others (mode ",
                                                    mode, "); fix it with: chmod 600 ", path));
  }
  return absl::OkStatus();
}

// Parses the PEM files locally so that a wrong file gets a message naming it instead of an
// opaque TLS handshake failure later.
absl::Status CheckPem(const std::string& ca_path, const std::string& ca_pem, const std::string& cert_path,
                      const std::string& cert_pem, const std::string& key_path, const std::string& key_pem) {
  auto bio = [](const std::string& pem) { return BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())); };
  {
    BIO* b = bio(ca_pem);
    X509* ca = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    if (ca == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("CA file ", ca_path, ": no PEM certificate in it"));
    }
    X509_free(ca);
  }
  BIO* cb = bio(cert_pem);
  X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  BIO_free(cb);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("client certificate ", cert_path, ": no PEM certificate in it"));
  }
  BIO* kb = bio(key_pem);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  absl::Status status;
  if (key == nullptr) {
    status = absl::InvalidArgumentError(absl::StrCat("client key ", key_path,
                                                     ": no unencrypted PEM private key in it"));
  } else if (X509_check_private_key(cert, key) != 1) {
    status = absl::InvalidArgumentError(
        absl::StrCat("client key ", key_path, " does not belong to the certificate ", cert_path));
  } else if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
    status = absl::FailedPreconditionError(absl::StrCat("client certificate ", cert_path, " has expired"));
  }
  EVP_PKEY_free(key);
  X509_free(cert);
  return status;
}

// gRPC's own log lines (handshake failures and the like) duplicate the status we print; keep
// them unless the user asked for them with GRPC_VERBOSITY / GRPC_TRACE.
void QuietGrpcLogs() {
  if (!GetEnv("GRPC_VERBOSITY").empty() || !GetEnv("GRPC_TRACE").empty()) return;
  gpr_set_log_function([](gpr_log_func_args*) {});
}

// Ctrl-C state: the call to cancel, and whether one was.
std::mutex g_interrupt_mu;
grpc::ClientContext* g_interrupt_context = nullptr;  // guarded by g_interrupt_mu
std::atomic<bool> g_interrupted{false};

}  // namespace

void AddConnectionFlags(CLI::App& cmd, ConnectionFlags& flags) {
  const char* group = "Connection";
  cmd.add_option("--server", flags.server, "airlockd address, host:port")->group(group);
  cmd.add_option("--ca", flags.ca, "CA bundle (PEM) that signed the server's certificate")->group(group);
  cmd.add_option("--cert", flags.cert, "Client certificate (PEM)")->group(group);
  cmd.add_option("--key", flags.key, "Client private key (PEM, mode 0600)")->group(group);
  cmd.add_option("--server-name", flags.server_name, "TLS name to verify (default: host part of --server)")
      ->group(group);
  cmd.add_option("--timeout", flags.timeout_seconds,
                 "Deadline per call in seconds (default: 600 for generate/chat, 10 for others)")
      ->check(CLI::PositiveNumber)
      ->group(group);
  cmd.add_option("--profile", flags.profile,
                 "Profile from profiles.yaml (default: $AIRLOCK_PROFILE, else the file's `default`)")
      ->group(group);
}

std::string DefaultProfileFile() {
  const std::string dir = GetEnv("AIRLOCK_CONFIG_DIR");
  if (!dir.empty()) return dir + "/profiles.yaml";
  const std::string home = GetEnv("HOME");
  if (home.empty()) return "";
  return home + "/.config/airlock/profiles.yaml";
}

std::string HostOfTarget(const std::string& target) {
  if (!target.empty() && target[0] == '[') {
    const size_t close = target.find(']');
    return close == std::string::npos ? target : target.substr(1, close - 1);
  }
  const size_t colon = target.rfind(':');
  // More than one colon without brackets: a bare IPv6 address with no port.
  if (colon == std::string::npos || target.find(':') != colon) return target;
  return target.substr(0, colon);
}

absl::StatusOr<ConnectionSettings> ResolveConnection(const ConnectionFlags& flags) {
  ConnectionSettings s;
  std::string name = flags.profile;
  const char* name_source = "--profile";
  if (name.empty()) {
    name = GetEnv("AIRLOCK_PROFILE");
    name_source = "AIRLOCK_PROFILE";
  }
  const std::string file = DefaultProfileFile();
  std::error_code ec;
  const bool file_exists = !file.empty() && fs::exists(file, ec);
  ProfileValues profile;
  if (file_exists) {
    AIRLOCK_ASSIGN_OR_RETURN(profile, LoadProfile(file, &name));
    if (!name.empty()) {
      s.profile = name;
      s.profile_file = file;
    }
  } else if (!name.empty()) {
    return absl::NotFoundError(absl::StrCat("profile '", name, "' (from ", name_source, "): profile file ",
                                            file.empty() ? "(no $HOME or $AIRLOCK_CONFIG_DIR)" : file,
                                            " does not exist"));
  }
  auto pick = [](const std::string& flag, const std::string& from_profile) {
    return flag.empty() ? from_profile : flag;
  };
  s.server = pick(flags.server, profile.server);
  s.ca = pick(flags.ca, profile.ca);
  s.cert = pick(flags.cert, profile.cert);
  s.key = pick(flags.key, profile.key);
  s.server_name = pick(flags.server_name, profile.server_name);
  const std::string where =
      s.profile.empty() ? absl::StrCat("no profile in use; see docs/airlockctl.md")
                        : absl::StrCat("profile '", s.profile, "' in ", s.profile_file, " does not set it either");
  std::vector<std::string> missing;
  if (s.server.empty()) missing.push_back("--server");
  if (s.ca.empty()) missing.push_back("--ca");
  if (s.cert.empty()) missing.push_back("--cert");
  if (s.key.empty()) missing.push_back("--key");
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("missing ", absl::StrJoin(missing, ", "), " (", where, ")"));
  }
  if (s.server_name.empty()) s.server_name = HostOfTarget(s.server);
  return s;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const ConnectionSettings& s) {
  AIRLOCK_ASSIGN_OR_RETURN(std::string ca, ReadFileFor("CA file", s.ca));
  AIRLOCK_ASSIGN_OR_RETURN(std::string cert, ReadFileFor("client certificate", s.cert));
  AIRLOCK_RETURN_IF_ERROR(CheckKeyMode(s.key));
  AIRLOCK_ASSIGN_OR_RETURN(std::string key, ReadFileFor("client key", s.key));
  AIRLOCK_RETURN_IF_ERROR(CheckPem(s.ca, ca, s.cert, cert, s.key, key));
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = std::move(ca);
  options.pem_private_key = std::move(key);
  options.pem_cert_chain = std::move(cert);
  grpc::ChannelArguments args;
  // The server's certificate is checked against this name rather than the dialled host, so a
  // daemon reached by IP or through a tunnel can still be verified.
  args.SetSslTargetNameOverride(s.server_name);
  args.SetString(GRPC_ARG_PRIMARY_USER_AGENT_STRING, "airlockctl");
  // Audit exports carry records with sealed texts of up to the daemon's request size (64 MiB at
  // most) in one message; gRPC's default receive limit is 4 MiB.
  args.SetMaxReceiveMessageSize(128 << 20);
  return grpc::CreateCustomChannel(s.server, grpc::SslCredentials(options), args);
}

std::shared_ptr<grpc::Channel> ConnectOrReport(const ConnectionFlags& flags, std::string* server) {
  InstallInterruptHandler();
  QuietGrpcLogs();
  absl::StatusOr<ConnectionSettings> settings = ResolveConnection(flags);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      settings.ok() ? OpenChannel(*settings) : absl::StatusOr<std::shared_ptr<grpc::Channel>>(settings.status());
  if (!channel.ok()) {
    std::fprintf(stderr, "airlockctl: %s\n", std::string(channel.status().message()).c_str());
    return nullptr;
  }
  *server = settings->server;
  return *channel;
}

std::chrono::system_clock::time_point CallDeadline(const ConnectionFlags& flags, double default_seconds) {
  const double seconds = flags.timeout_seconds > 0 ? flags.timeout_seconds : default_seconds;
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds));
}

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN_CODE";
  }
}

int ExitCodeForRpc(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return kExitOk;
    case grpc::StatusCode::INVALID_ARGUMENT: return kExitInvalidArgument;
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED: return kExitPermission;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED: return kExitUnavailable;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return kExitResourceExhausted;
    default: return kExitOtherRpcError;
  }
}

int ReportRpcError(const std::string& method, const grpc::Status& status, const std::string& server) {
  if (status.error_code() == grpc::StatusCode::CANCELLED && Interrupted()) {
    std::fprintf(stderr, "airlockctl: %s: interrupted\n", method.c_str());
    return kExitInterrupted;
  }
  std::fprintf(stderr, "airlockctl: %s: %s: %s\n", method.c_str(), StatusCodeName(status.error_code()),
               status.error_message().c_str());
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::fprintf(stderr,
                 "airlockctl: could not use airlockd at %s: is it running there, does its certificate name "
                 "match --server-name, and was it signed by --ca (and yours by its client CA)?\n",
                 server.c_str());
  } else if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    std::fprintf(stderr, "airlockctl: no answer from %s within the deadline (raise it with --timeout)\n",
                 server.c_str());
  }
  return ExitCodeForRpc(status.error_code());
}

void InstallInterruptHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Blocking SIGINT before any other thread exists makes every later thread (gRPC's too)
    // inherit the mask, so only the waiter below ever sees it and it may take locks and call
    // TryCancel, which a signal handler could not.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([set] {
      for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        std::lock_guard<std::mutex> lock(g_interrupt_mu);
        if (g_interrupt_context == nullptr) {
          std::fflush(stdout);
          std::fputs("\n", stderr);
          std::_Exit(kExitInterrupted);
        }
        g_interrupted = true;
        g_interrupt_context->TryCancel();
      }
    }).detach();
  });
}

ScopedCancelOnInterrupt::ScopedCancelOnInterrupt(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(g_interrupt_mu);
  g_interrupt_context = context;
}

ScopedCancelOnInterrupt::~ScopedCancelOnInterrupt() {
  std::lock_guard<std::mutex> lock(g_interrupt_mu);
  g_interrupt_context = nullptr;
}

bool Interrupted() { return g_interrupted; }

}  // namespace airlock::ctl

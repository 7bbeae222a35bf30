// The end-to-end harness: lab PKI, airlockd child process, mTLS channels.
#include "tests/integration/daemon_harness.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "auth/dev_pki.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/support/test_data.h"

extern char** environ;

namespace airlock::testing {
namespace {

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Short polling interval for conditions that have no notification (a file appearing, a child
// exiting); every wait has a deadline.
void PollPause() { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }

}  // namespace

LabPki MakeLabPki(const std::string& dir) {
  LabPki pki{dir};
  const absl::Status status = auth::InitPki(dir, auth::PkiInitOptions());
  EXPECT_TRUE(status.ok()) << status;
  return pki;
}

void LabPki::Issue(const std::string& stem) {
  if (::access(cert(stem).c_str(), F_OK) == 0) return;
  auth::CertificateSpec spec;
  spec.common_name = stem;
  spec.emails = {stem + "@example.org"};
  const absl::Status status = auth::IssueClient(dir, stem, spec);
  ASSERT_TRUE(status.ok()) << status;
}

std::unique_ptr<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& args, const std::string& log_path,
                                                  std::string* error) {
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  if (!child->SpawnInto(args, log_path, error)) return nullptr;
  return child;
}

bool ChildProcess::SpawnInto(const std::vector<std::string>& args, const std::string& log_path, std::string* error) {
  log_path_ = log_path;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    *error = absl::StrCat("posix_spawn ", args[0], ": ", strerror(rc));
    pid_ = -1;
    return false;
  }
  return true;
}

std::unique_ptr<DaemonProcess> DaemonProcess::Start(const std::string& dir, const std::string& config_yaml,
                                                    std::string* error, absl::Duration ready_within,
                                                    const std::vector<std::string>& launcher) {
  auto d = std::unique_ptr<DaemonProcess>(new DaemonProcess());
  d->dir_ = dir;
  {
    std::ofstream out(d->config_path(), std::ios::trunc);
    out << config_yaml;
  }
  ::chmod(d->config_path().c_str(), 0600);
  ::unlink((dir + "/port").c_str());
  std::vector<std::string> args = launcher;
  args.insert(args.end(), {AIRLOCKD_PATH, "--config", d->config_path()});
  if (!d->SpawnInto(args, dir + "/airlockd.log", error)) return nullptr;
  const absl::Time deadline = absl::Now() + ready_within;
  while (absl::Now() < deadline) {
    const std::string port = ReadWhole(dir + "/port");
    if (!port.empty() && port.back() == '\n') {
      d->port_ = std::stoi(port);
      return d;
    }
    if (std::optional<int> code = d->WaitExit(absl::ZeroDuration())) {
      *error = absl::StrCat("airlockd exited with ", *code, " before listening; log:\n", d->Log());
      return nullptr;
    }
    PollPause();
  }
  *error = absl::StrCat("airlockd did not listen within ", absl::FormatDuration(ready_within), "; log:\n", d->Log());
  return nullptr;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::string ChildProcess::Log() const { return ReadWhole(log_path_); }

bool ChildProcess::WaitForLog(const std::string& text, absl::Duration within, size_t occurrences) const {
  const absl::Time deadline = absl::Now() + within;
  for (;;) {
    const std::string log = Log();
    size_t found = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++found;
    if (found >= occurrences) return true;
    if (absl::Now() >= deadline) return false;
    PollPause();
  }
}

void ChildProcess::Signal(int signal_number) const {
  if (pid_ > 0 && !reaped_) ::kill(pid_, signal_number);
}

std::optional<int> ChildProcess::WaitExit(absl::Duration within) {
  if (reaped_ || pid_ <= 0) return std::nullopt;
  const absl::Time deadline = absl::Now() + within;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (absl::Now() >= deadline) return std::nullopt;
    PollPause();
  }
}

std::shared_ptr<grpc::Channel> ConnectWith(int port, const std::string& ca_file, const std::string& cert_file,
                                           const std::string& key_file) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadWhole(ca_file);
  if (!cert_file.empty()) {
    ssl.pem_cert_chain = ReadWhole(cert_file);
    ssl.pem_private_key = ReadWhole(key_file);
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  // Each test channel gets its own connection (no sharing between channels of one process), so a
  // revoked certificate is checked on a fresh handshake.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port), grpc::SslCredentials(ssl), args);
}

std::shared_ptr<grpc::Channel> Connect(int port, const LabPki& pki, const std::string& stem) {
  if (stem.empty()) return ConnectWith(port, pki.dir + "/ca.crt", "", "");
  return ConnectWith(port, pki.dir + "/ca.crt", pki.cert(stem), pki.key(stem));
}

CommandResult RunCtl(int port, const LabPki& pki, const std::string& user, const std::vector<std::string>& args,
                     const std::string& input) {
  std::vector<std::string> argv = {"env", "-u", "AIRLOCK_PROFILE", "AIRLOCK_CONFIG_DIR=" + pki.dir + "/no-profiles",
                                   AIRLOCKCTL_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  for (const std::string& a : {std::string("--server"), absl::StrCat("127.0.0.1:", port), std::string("--ca"),
                               pki.dir + "/ca.crt", std::string("--cert"), pki.cert(user), std::string("--key"),
                               pki.key(user), std::string("--server-name"), std::string("localhost")}) {
    argv.push_back(a);
  }
  return RunCommand(argv, absl::Seconds(60), input);
}

std::chrono::system_clock::time_point DeadlineIn(absl::Duration within) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(within);
}

bool PollUntil(const std::function<bool()>& condition, absl::Duration within) {
  const absl::Time deadline = absl::Now() + within;
  for (;;) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    PollPause();
  }
}

std::vector<nlohmann::json> ExportAudit(const std::string& state_dir) {
  const CommandResult r = RunCommand({AIRLOCKCTL_PATH, "audit", "export", "--state-dir", state_dir});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<nlohmann::json> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

CommandResult VerifyAudit(const std::string& state_dir, const std::string& public_key_file) {
  return RunCommand(
      {AIRLOCKCTL_PATH, "audit", "verify", "--state-dir", state_dir, "--public-key", public_key_file, "--json"});
}

AuditIndex IndexAudit(const std::vector<nlohmann::json>& export_lines) {
  AuditIndex index;
  for (const nlohmann::json& line : export_lines) {
    if (line.value("type", "") != "record") continue;
    ++index.records;
    const std::string id = line.value("request_id", "");
    std::map<std::string, nlohmann::json>& by_id = line.value("phase", "") == "begin" ? index.begins : index.ends;
    if (!by_id.emplace(id, line).second) index.repeated.push_back(id);
    if (line.value("phase", "") == "end" && line.value("status_code", -1) == 0) {
      ++index.ok_ends[{line.value("identity", ""), line.value("method", "")}];
    }
  }
  return index;
}

std::string StoriesModelYaml() {
  return absl::StrCat("  - name: stories\n    path: \"", SharedPath(kStoriesModel), "\"\n    threads: 1\n");
}

std::string BaseConfig(const std::string& dir, const LabPki& pki, const std::string& models_yaml,
                       const std::string& access_yaml, const std::string& extra_yaml) {
  return absl::StrCat("server:\n  listen: \"127.0.0.1:0\"\n  port_file: \"", dir, "/port\"\n  drain_timeout: \"5s\"\n",
                      "tls:\n  cert_file: \"", pki.dir, "/server.crt\"\n  key_file: \"", pki.dir,
                      "/server.key\"\n  client_ca_file: \"", pki.dir, "/ca.crt\"\n  crl_files: [\"", pki.dir,
                      "/crl.pem\"]\n  watch_interval: \"1s\"\n", "audit:\n  state_dir: \"", dir,
                      "/state\"\n  signing_key_file: \"", dir, "/audit-signing.key\"\n  hmac_secret_file: \"", dir,
                      "/audit-hmac.secret\"\n", "models:\n", models_yaml, access_yaml, extra_yaml);
}

void LabDaemonTest::SetUpLab(std::string access_yaml, const std::vector<std::string>& users) {
  dir_ = MakeTempDir();
  pki_ = MakeLabPki(dir_ + "/pki");
  for (const std::string& user : users) pki_.Issue(user);
  access_ = std::move(access_yaml);
}

void LabDaemonTest::StartDaemon(const std::string& audit_extra, const std::string& models_yaml,
                                const std::string& extra_yaml) {
  std::string config =
      BaseConfig(dir_, pki_, models_yaml.empty() ? StoriesModelYaml() : models_yaml, access_, extra_yaml);
  if (!audit_extra.empty()) config = absl::StrReplaceAll(config, {{"audit:\n", "audit:\n" + audit_extra}});
  std::string error;
  daemon_ = DaemonProcess::Start(dir_, config, &error);
  ASSERT_NE(daemon_, nullptr) << error;
}

void LabDaemonTest::StopDaemon() {
  daemon_->Signal(SIGTERM);
  ASSERT_EQ(daemon_->WaitExit(absl::Seconds(30)), std::optional<int>(0)) << daemon_->Log();
}

}  // namespace airlock::testing

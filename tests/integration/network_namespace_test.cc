// Proves airlockd needs no network beyond loopback and never connects out: a full request cycle in
// a network namespace that has only `lo`, and the same under strace with no outbound connect().
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

extern char** environ;

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;


constexpr char kAccess[] = R"(identity:
  source: SUBJECT_CN
users:
  - name: alice
    roles: [inference-user]
roles:
  - name: inference-user
    methods: ["airlock.v1.Inference/*", "grpc.health.v1.Health/*"]
    models: ["stories"]
)";

std::string ModelsYaml() {
  return StoriesModelYaml();
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  {
    std::ofstream out(path, std::ios::trunc);
    out << text;
  }
  ::chmod(path.c_str(), mode);
}

// Skips the test, or fails it under CI=true, with `why`.
#define SKIP_OR_FAIL_IN_CI(why)                       \
  do {                                                \
    if (RunningInCi()) GTEST_FAIL() << (why);         \
    GTEST_SKIP() << (why);                            \
  } while (0)

// ---- A full request cycle inside a network namespace that has only loopback ---------------------

// Runs inside the namespace. Arguments: airlockd, airlockctl, the test directory. Prints key=value
// lines for the test to check; every wait has a deadline.
constexpr char kNamespaceScript[] = R"SH(#!/bin/sh
# Runs airlockd and airlockctl in an isolated network namespace (only lo).
set -u
AIRLOCKD=$1 CTL=$2 DIR=$3
# Whether process $1 is running (a zombie is not: kill -0 would still succeed on one).
alive() { s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
ip link set lo up 2>/dev/null || true
echo "interfaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
echo "lo_flags=$(cat /sys/class/net/lo/flags)"
rm -f "$DIR/port"
"$AIRLOCKD" --config "$DIR/airlockd.yaml" 2>>"$DIR/airlockd.log" >/dev/null &
pid=$!
trap 'kill -9 $pid 2>/dev/null' EXIT
deadline=$(( $(date +%s) + 60 ))
# The port file is complete once it ends with a newline.
until [ -s "$DIR/port" ] && [ "$(tail -c 1 "$DIR/port" | od -An -c | tr -d ' ')" = '\n' ]; do
  if ! alive $pid; then wait $pid; echo "daemon_exit_early=$?"; exit 10; fi
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "port_timeout=1"; exit 11; fi
  sleep 0.05
done
port=$(cat "$DIR/port")
echo "port=$port"
set -- --server "127.0.0.1:$port" --ca "$DIR/pki/ca.crt" --cert "$DIR/pki/alice.crt" --key "$DIR/pki/alice.key"
"$CTL" health "$@" --timeout 20 >"$DIR/health.out" 2>"$DIR/health.err"
echo "health_rc=$?"
echo "health_out=$(cat "$DIR/health.out")"
"$CTL" generate "$@" --model stories --prompt "Once upon a time" --max-tokens 8 --temperature 0 --json \
    --timeout 60 >"$DIR/generate.out" 2>"$DIR/generate.err"
echo "generate_rc=$?"
kill -TERM $pid
deadline=$(( $(date +%s) + 30 ))
while alive $pid; do
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "exit_timeout=1"; exit 12; fi
  sleep 0.05
done
wait $pid
echo "daemon_exit=$?"
)SH";

// The command prefix that runs a program in a new network namespace, or nullopt when neither
// unshare nor bwrap can make one here.
std::optional<std::vector<std::string>> NetnsLauncher(std::string* why) {
  const std::vector<std::vector<std::string>> candidates = {
      {"unshare", "--net", "--"},
      {"bwrap", "--unshare-net", "--dev-bind", "/", "/", "--"},
  };
  for (const auto& prefix : candidates) {
    std::vector<std::string> probe = prefix;
    probe.insert(probe.end(), {"/bin/sh", "-c", "test \"$(tail -n +3 /proc/net/dev | wc -l)\" -eq 1"});
    const CommandResult r = RunCommand(probe, absl::Seconds(20));
    if (r.exit_code == 0) return prefix;
    absl::StrAppend(why, prefix[0], ": exit ", r.exit_code, " ", r.err, "; ");
  }
  return std::nullopt;
}

std::map<std::string, std::string> KeyValues(const std::string& text) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const size_t eq = line.find('=');
    if (eq != absl::string_view::npos) out[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  return out;
}

TEST(NetworkNamespaceTest, ServesAFullCycleWithOnlyLoopback) {
  AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
  std::string why;
  const std::optional<std::vector<std::string>> launcher = NetnsLauncher(&why);
  if (!launcher) SKIP_OR_FAIL_IN_CI("cannot create a network namespace here (" + why + ")");

  // Everything is written outside the namespace; inside, only the script runs.
  const std::string dir = MakeTempDir();
  LabPki pki = MakeLabPki(dir + "/pki");
  pki.Issue("alice");
  WriteFile(dir + "/airlockd.yaml", BaseConfig(dir, pki, ModelsYaml(), kAccess), 0600);
  WriteFile(dir + "/netns.sh", kNamespaceScript, 0700);

  std::vector<std::string> argv = *launcher;
  argv.insert(argv.end(), {"/bin/sh", dir + "/netns.sh", AIRLOCKD_PATH, AIRLOCKCTL_PATH, dir});
  const CommandResult run = RunCommand(argv, absl::Seconds(240));
  const std::string log = ReadFileOrDie(dir + "/airlockd.log");
  const std::string context = absl::StrCat("launcher: ", (*launcher)[0], "\nstdout:\n", run.out, "\nstderr:\n",
                                           run.err, "\ndaemon log:\n", log);
  ASSERT_EQ(run.exit_code, 0) << context;
  std::map<std::string, std::string> kv = KeyValues(run.out);

  // The namespace really was isolated: loopback is its only interface, and it was up.
  EXPECT_EQ(kv["interfaces"], "lo ") << context;
  int64_t lo_flags = 0;
  ASSERT_TRUE(absl::SimpleHexAtoi(kv["lo_flags"], &lo_flags)) << context;
  EXPECT_NE(lo_flags & 0x1, 0) << "lo is not up (IFF_UP)";

  EXPECT_EQ(kv["health_rc"], "0") << context << ReadFileOrDie(dir + "/health.err");
  EXPECT_EQ(kv["health_out"], "SERVING") << context;
  ASSERT_EQ(kv["generate_rc"], "0") << context << ReadFileOrDie(dir + "/generate.err");
  const nlohmann::json generated =
      nlohmann::json::parse(ReadFileOrDie(dir + "/generate.out"), nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(generated.is_object()) << ReadFileOrDie(dir + "/generate.out");
  EXPECT_FALSE(generated.value("text", "").empty());
  EXPECT_EQ(generated["usage"].value("completion_tokens", 0), 8);
  EXPECT_EQ(kv["daemon_exit"], "0") << context;
  EXPECT_THAT(log, HasSubstr("network locked down"));
  EXPECT_THAT(log, HasSubstr("\"drained\""));
}

// ---- The daemon under strace: no connect() to an internet address ------------------------------

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Pids whose parent is `parent` (from /proc/*/stat).
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    const std::string stat = ReadWhole(entry.path().string() + "/stat");
    // "pid (comm) state ppid ..."; comm may hold spaces, so parse after the last ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(stat.substr(close + 2), ' ');
    int ppid = 0;
    if (fields.size() > 1 && absl::SimpleAtoi(fields[1], &ppid) && ppid == parent) out.push_back(pid);
  }
  return out;
}

class StraceTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (strace_pid_ > 0) {
      ::kill(strace_pid_, SIGKILL);
      if (daemon_pid_ > 0) ::kill(daemon_pid_, SIGKILL);
      ::waitpid(strace_pid_, nullptr, 0);
    }
  }

  // Exit code of strace (which is the traced daemon's), nullopt at the deadline.
  std::optional<int> WaitStrace(absl::Duration within) {
    const absl::Time deadline = absl::Now() + within;
    for (;;) {
      int status = 0;
      if (::waitpid(strace_pid_, &status, WNOHANG) == strace_pid_) {
        strace_pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (absl::Now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling interval under the deadline
    }
  }

  pid_t strace_pid_ = -1;
  pid_t daemon_pid_ = -1;
};

TEST_F(StraceTest, TheDaemonNeverConnectsOut) {
  AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
  const CommandResult probe = RunCommand({"strace", "-f", "-o", "/dev/null", "/bin/true"}, absl::Seconds(20));
  if (probe.exit_code != 0) {
    GTEST_SKIP() << "strace cannot trace here (exit " << probe.exit_code << "): " << probe.err;
  }

  const std::string dir = MakeTempDir();
  LabPki pki = MakeLabPki(dir + "/pki");
  pki.Issue("alice");
  const std::string config = dir + "/airlockd.yaml";
  WriteFile(config, BaseConfig(dir, pki, ModelsYaml(), kAccess), 0600);
  const std::string trace = dir + "/strace.txt";
  const std::string log_path = dir + "/airlockd.log";

  // strace -f follows every thread; seccomp is traced too so the trace shows where the lock-down
  // happened.
  std::vector<std::string> args = {"strace", "-f", "-e", "trace=connect,socket,seccomp", "-o", trace, "--",
                                   AIRLOCKD_PATH, "--config", config};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  const int rc = posix_spawnp(&strace_pid_, "strace", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ASSERT_EQ(rc, 0) << strerror(rc);

  // Wait for the port file (complete with its newline), with a deadline.
  int port = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  while (port == 0) {
    const std::string text = ReadWhole(dir + "/port");
    if (!text.empty() && text.back() == '\n') {
      ASSERT_TRUE(absl::SimpleAtoi(absl::StripTrailingAsciiWhitespace(text), &port)) << text;
      break;
    }
    const std::optional<int> exited = WaitStrace(absl::ZeroDuration());
    ASSERT_FALSE(exited.has_value()) << "strace/airlockd exited with " << *exited << "\n" << ReadWhole(log_path);
    ASSERT_LT(absl::Now(), deadline) << "airlockd did not listen under strace\n" << ReadWhole(log_path);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const std::vector<pid_t> children = ChildrenOf(strace_pid_);
  ASSERT_EQ(children.size(), 1u) << "expected airlockd as strace's only child";
  daemon_pid_ = children[0];

  // A full request cycle: health, unary and streamed generation, tokenize, list, a denied call.
  auto channel = Connect(port, pki, "alice");
  auto stub = v1::Inference::NewStub(channel);
  {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status s =
        grpc::health::v1::Health::NewStub(channel)->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  v1::GenerateRequest request;
  request.set_model("stories");
  request.set_prompt("Once upon a time");
  request.set_max_tokens(8);
  request.mutable_sampling()->set_temperature(0);
  {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(60)));
    v1::GenerateResponse response;
    const grpc::Status s = stub->Generate(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.usage().completion_tokens(), 8u);
  }
  {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(60)));
    auto reader = stub->GenerateStream(&context, request);
    v1::GenerateStreamResponse message;
    bool done = false;
    while (reader->Read(&message)) done = done || message.has_done();
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_TRUE(done);
  }
  {
    grpc::ClientContext context;
    v1::TokenizeRequest tokenize;
    tokenize.set_model("stories");
    tokenize.set_text("Hello");
    v1::TokenizeResponse tokens;
    EXPECT_TRUE(stub->Tokenize(&context, tokenize, &tokens).ok());
  }
  {
    grpc::ClientContext context;
    v1::GenerateResponse response;
    request.set_model("not-granted");
    EXPECT_EQ(stub->Generate(&context, request, &response).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }

  ASSERT_EQ(::kill(daemon_pid_, SIGTERM), 0);
  const std::optional<int> code = WaitStrace(absl::Seconds(60));
  ASSERT_TRUE(code.has_value()) << "airlockd did not exit after SIGTERM\n" << ReadWhole(log_path);
  EXPECT_EQ(*code, 0) << ReadWhole(log_path);
  const std::string log = ReadWhole(log_path);
  EXPECT_THAT(log, HasSubstr("network locked down"));

  const std::string traced = ReadWhole(trace);
  if (traced.empty()) SKIP_OR_FAIL_IN_CI("strace ran but wrote an empty trace to " + trace);
  RecordProperty("strace_lines", std::to_string(std::count(traced.begin(), traced.end(), '\n')));

  // The trace is real: it holds the listener's socket() and the lock-down's seccomp().
  bool saw_listener_socket = false;
  bool locked = false;
  std::vector<std::string> outbound, network_sockets_after_lockdown;
  std::map<std::string, std::string> unfinished;  // pid -> the first half of an interrupted socket() line
  for (absl::string_view raw : absl::StrSplit(traced, '\n', absl::SkipEmpty())) {
    std::string line(raw);
    const std::string pid = line.substr(0, line.find(' '));
    // strace -f splits a call that another thread interrupts into "... <unfinished ...>" and
    // "PID <... socket resumed>) = RESULT"; join them so the family and the result are on one line.
    if (absl::StrContains(line, "socket(") && absl::StrContains(line, "<unfinished ...>")) {
      unfinished[pid] = line;
      continue;
    }
    if (absl::StrContains(line, "<... socket resumed>")) {
      line = unfinished[pid] + line;
      unfinished.erase(pid);
    }
    if (absl::StrContains(line, "socket(AF_INET") && !locked) saw_listener_socket = true;
    // The filter that took effect (libseccomp's feature probes before it pass NULL and fail).
    if (absl::StrContains(line, "seccomp(SECCOMP_SET_MODE_FILTER") && absl::StrContains(line, "filter=") &&
        absl::EndsWith(line, " = 0")) {
      locked = true;
    }
    // connect() to AF_INET or AF_INET6 (AF_UNIX connects, if any, are not network).
    if (absl::StrContains(line, "connect(") && absl::StrContains(line, "AF_INET")) outbound.push_back(line);
    // Any socket() for a non-AF_UNIX family after the lock-down must have been refused.
    if (locked && absl::StrContains(line, "socket(") && !absl::StrContains(line, "socket(AF_UNIX") &&
        !absl::StrContains(line, "EACCES")) {
      network_sockets_after_lockdown.push_back(line);
    }
  }
  EXPECT_TRUE(saw_listener_socket) << "no socket(AF_INET...) for the listener in the trace:\n" << traced;
  EXPECT_TRUE(locked) << "no seccomp(SECCOMP_SET_MODE_FILTER) in the trace:\n" << traced;
  EXPECT_THAT(outbound, ::testing::IsEmpty()) << "outbound connect() calls:\n" << traced;
  EXPECT_THAT(network_sockets_after_lockdown, ::testing::IsEmpty()) << traced;
}

}  // namespace
}  // namespace airlock::testing

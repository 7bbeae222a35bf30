// Fault test of the daemon's audit log on a full filesystem: airlockd's state directory lives on a
// small tmpfs of its own; once the test fills it, calls are refused (fail closed) and health says
// so, and when the test frees the space service resumes by itself. Afterwards the chain verifies
// and holds exactly the calls that succeeded: nothing half-written, nothing refused.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "audit/audit_record.h"
#include "audit/privacy.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;

constexpr char kRefusal[] = "the audit log cannot be written";
// The state store does not preallocate (audit/state_db.cc), so every record needs fresh blocks
// and the first write after the filler fails. RocksDB clears a disk-full error only once the free
// space reaches its reserve (the largest write buffer, 4 MiB): freeing the filler gives it that.
constexpr int64_t kTmpfsBytes = 16 << 20;
constexpr long kTmpfsMagic = 0x01021994;  // TMPFS_MAGIC

// The command prefix that mounts a `kTmpfsBytes` tmpfs on its first argument in a new user and
// mount namespace, then execs the rest (airlockd) in that namespace: the size limit is real, and
// nothing outside the namespace sees the mount.
std::vector<std::string> TmpfsLauncher(const std::string& mount_point) {
  return {"unshare", "-rm", "--propagation", "private", "sh", "-c",
          absl::StrCat("mount -t tmpfs -o size=", kTmpfsBytes, ",mode=0700 tmpfs \"$0\" && exec \"$@\""), mount_point};
}

// An open directory on the daemon's tmpfs. Held open, it keeps that filesystem reachable (as
// /proc/<test pid>/fd/<fd>, also for airlockctl) after the daemon — and with it the namespace that
// mounted it — has exited.
class HeldDirectory {
 public:
  explicit HeldDirectory(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {}
  ~HeldDirectory() {
    if (fd_ >= 0) ::close(fd_);
  }
  HeldDirectory(const HeldDirectory&) = delete;
  HeldDirectory& operator=(const HeldDirectory&) = delete;
  bool ok() const { return fd_ >= 0; }
  std::string path() const { return absl::StrCat("/proc/", ::getpid(), "/fd/", fd_); }

 private:
  int fd_;
};

class AuditDiskFullTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    SetUpLab(kAliceMayCallAnything, {"alice"});
    ASSERT_EQ(::mkdir((dir_ + "/disk").c_str(), 0700), 0) << strerror(errno);
  }

  v1::Inference::Stub& Inference() {
    if (inference_ == nullptr) inference_ = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"));
    return *inference_;
  }

  // A short generation of a prompt never used before; the prompt goes to `acknowledged` (by
  // request id) or to `refused_prompts_`.
  grpc::Status Generate() {
    const std::string prompt = absl::StrCat("Once upon a time, story ", ++calls_);
    v1::GenerateRequest request;
    request.set_model("stories");
    request.set_prompt(prompt);
    request.set_max_tokens(3);
    request.mutable_sampling()->set_temperature(0);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    v1::GenerateResponse response;
    const grpc::Status s = Inference().Generate(&context, request, &response);
    if (s.ok()) {
      acknowledged_[response.request_id()] = prompt;
    } else {
      refused_prompts_.insert(prompt);
    }
    return s;
  }

  grpc::Status Tokenize() {
    v1::TokenizeRequest request;
    request.set_model("stories");
    request.set_text("Once upon a time");
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    v1::TokenizeResponse response;
    const grpc::Status s = Inference().Tokenize(&context, request, &response);
    if (s.ok()) ++tokenized_;
    return s;
  }

  // The health check's answer: "SERVING", "NOT_SERVING", or the error the call failed with.
  std::string Health() {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status s = grpc::health::v1::Health::NewStub(Connect(daemon_->port(), pki_, "alice"))
                               ->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
    if (!s.ok()) return absl::StrCat("error ", s.error_code(), ": ", s.error_message());
    return HealthCheckResponse::ServingStatus_Name(response.status());
  }

  std::unique_ptr<v1::Inference::Stub> inference_;
  int calls_ = 0;
  std::map<std::string, std::string> acknowledged_;  // request id -> prompt
  std::set<std::string> refused_prompts_;
  int tokenized_ = 0;
};

// A Health/Watch stream read on its own thread: the statuses it received, in order.
class HealthWatch {
 public:
  explicit HealthWatch(std::shared_ptr<grpc::Channel> channel)
      : stub_(grpc::health::v1::Health::NewStub(std::move(channel))),
        reader_(stub_->Watch(&context_, grpc::health::v1::HealthCheckRequest())),
        thread_([this] {
          HealthCheckResponse response;
          while (reader_->Read(&response)) {
            absl::MutexLock lock(&mutex_);
            seen_.push_back(HealthCheckResponse::ServingStatus_Name(response.status()));
          }
        }) {}
  ~HealthWatch() {
    context_.TryCancel();
    thread_.join();
    reader_->Finish();
  }
  std::string Last() {
    absl::MutexLock lock(&mutex_);
    return seen_.empty() ? "" : seen_.back();
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::health::v1::Health::Stub> stub_;
  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> reader_;
  absl::Mutex mutex_;
  std::vector<std::string> seen_;
  std::thread thread_;
};

TEST_F(AuditDiskFullTest, FullDiskRefusesCallsLeavesNothingHalfWrittenAndServiceResumes) {
  const CommandResult probe = RunCommand({"unshare", "-rm", "--propagation", "private", "sh", "-c",
                                          "mount -t tmpfs -o size=1m tmpfs \"$0\"", dir_ + "/disk"},
                                         absl::Seconds(20));
  if (probe.exit_code != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs in a new user and mount namespace here (unshare -rm, mount -t tmpfs): exit "
                 << probe.exit_code << " " << probe.err;
  }
  const std::string models = StoriesModelYaml();
  const std::string config = absl::StrReplaceAll(BaseConfig(dir_, pki_, models, kAliceMayCallAnything),
                                                 {{dir_ + "/state\"", dir_ + "/disk/state\""}});
  ASSERT_THAT(config, HasSubstr(dir_ + "/disk/state\""));
  std::string error;
  daemon_ = DaemonProcess::Start(dir_, config, &error, absl::Seconds(60), TmpfsLauncher(dir_ + "/disk"));
  ASSERT_NE(daemon_, nullptr) << error;
  const HeldDirectory disk(absl::StrCat("/proc/", daemon_->pid(), "/root", dir_, "/disk"));
  ASSERT_TRUE(disk.ok()) << strerror(errno);
  // The state really is on the daemon's small tmpfs (not on the test's own filesystem).
  struct statfs fs {};
  ASSERT_EQ(::statfs((disk.path() + "/state").c_str(), &fs), 0) << strerror(errno);
  EXPECT_EQ(static_cast<long>(fs.f_type), kTmpfsMagic);
  EXPECT_EQ(static_cast<int64_t>(fs.f_blocks) * fs.f_bsize, kTmpfsBytes);

  // With space: calls succeed.
  ASSERT_TRUE(Generate().ok());
  ASSERT_TRUE(Tokenize().ok());
  ASSERT_EQ(Health(), "SERVING");
  HealthWatch watch(Connect(daemon_->port(), pki_, "alice"));
  ASSERT_TRUE(PollUntil([&] { return watch.Last() == "SERVING"; }, absl::Seconds(10)));

  // Full: a filler file takes every free block.
  const std::string filler = disk.path() + "/filler";
  {
    const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << strerror(errno);
    const std::string block(1 << 16, 'x');
    int64_t written = 0;
    int write_errno = 0;
    while (written <= kTmpfsBytes) {
      const ssize_t n = ::write(fd, block.data(), block.size());
      if (n < 0) {
        write_errno = errno;
        break;
      }
      written += n;
    }
    ::close(fd);
    ASSERT_EQ(write_errno, ENOSPC) << "after " << written << " bytes: " << strerror(write_errno);
  }
  // The next write the store needs fails (a few records may still fit into pages its files already
  // hold): from then on calls are refused with UNAVAILABLE, saying why.
  grpc::Status refused;
  ASSERT_TRUE(PollUntil(
      [&] {
        refused = Generate();
        return !refused.ok();
      },
      absl::Seconds(20)))
      << "generations still succeed on a full disk";
  if (refused.error_message().find(kRefusal) == std::string::npos) {
    const std::optional<int> exit_code = daemon_->WaitExit(absl::Seconds(5));
    ASSERT_FALSE(exit_code.has_value()) << "airlockd died on the full disk (exit " << exit_code.value_or(0)
                                        << ") instead of refusing the call; log:\n" << daemon_->Log();
  }
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  ASSERT_THAT(refused.error_message(), HasSubstr(kRefusal));
  // The client learns that the log cannot be written, not where it lives or what RocksDB said:
  // that stays in the daemon's log.
  EXPECT_EQ(refused.error_message(), "the audit log cannot be written, so the request is refused");
  EXPECT_TRUE(daemon_->WaitForLog("No space left on device", absl::Seconds(5))) << daemon_->Log();
  for (int i = 0; i < 3; ++i) {
    const grpc::Status generate = Generate();
    EXPECT_EQ(generate.error_code(), grpc::StatusCode::UNAVAILABLE) << generate.error_message();
    EXPECT_THAT(generate.error_message(), HasSubstr(kRefusal));
    const grpc::Status tokenize = Tokenize();
    EXPECT_EQ(tokenize.error_code(), grpc::StatusCode::UNAVAILABLE) << tokenize.error_message();
    EXPECT_THAT(tokenize.error_message(), HasSubstr(kRefusal));
  }
  // Not serving (the check's own record cannot be written either; it is answered all the same).
  EXPECT_EQ(Health(), "NOT_SERVING");
  EXPECT_TRUE(PollUntil([&] { return watch.Last() == "NOT_SERVING"; }, absl::Seconds(10))) << watch.Last();
  EXPECT_TRUE(daemon_->WaitForLog(kRefusal, absl::Seconds(5))) << daemon_->Log();
  // RocksDB's own diagnostics reach the daemon's log (its LOG file is not on the full disk).
  EXPECT_TRUE(daemon_->WaitForLog("\"msg\":\"rocksdb\"", absl::Seconds(5))) << daemon_->Log();

  // Space returns (the filler goes): service resumes by itself.
  ASSERT_EQ(::unlink(filler.c_str()), 0) << strerror(errno);
  ASSERT_TRUE(PollUntil([&] { return Generate().ok(); }, absl::Seconds(30)))
      << "no generation succeeded within 30 s of freeing the space\n" << daemon_->Log();
  EXPECT_TRUE(Tokenize().ok());
  EXPECT_EQ(Health(), "SERVING");
  EXPECT_TRUE(PollUntil([&] { return watch.Last() == "SERVING"; }, absl::Seconds(10))) << watch.Last();

  daemon_->Signal(SIGTERM);
  ASSERT_EQ(daemon_->WaitExit(absl::Seconds(30)), std::optional<int>(0)) << daemon_->Log();

  // Offline, on the tmpfs the test still holds: the chain verifies...
  const std::string state = disk.path() + "/state";
  const CommandResult verify = VerifyAudit(state, dir_ + "/audit-signing.key.pub");
  ASSERT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  const nlohmann::json report = nlohmann::json::parse(verify.out);
  EXPECT_TRUE(report["ok"].get<bool>()) << verify.out;
  const AuditIndex log = IndexAudit(ExportAudit(state));
  EXPECT_EQ(report["records_checked"], log.records);
  EXPECT_TRUE(log.repeated.empty()) << "request ids with two records of one phase, e.g. " << log.repeated[0];

  // ...every acknowledged generation is in it, whole...
  const std::string secret = ReadFileOrDie(dir_ + "/audit-hmac.secret");
  for (const auto& [id, prompt] : acknowledged_) {
    const auto begin = log.begins.find(id);
    const auto end = log.ends.find(id);
    ASSERT_TRUE(begin != log.begins.end()) << id;
    ASSERT_TRUE(end != log.ends.end()) << id;
    EXPECT_EQ(begin->second["prompt_hmac"], audit::HexLower(audit::HmacSha256(secret, prompt))) << id;
    EXPECT_EQ(end->second["status_code"], 0) << id;
  }
  // ...and nothing else succeeded in it: no refused call left a successful end record (the
  // generations and Tokenize calls that succeeded in the log are exactly the acknowledged ones).
  std::set<std::string> refused_hmacs;
  for (const std::string& prompt : refused_prompts_) {
    refused_hmacs.insert(audit::HexLower(audit::HmacSha256(secret, prompt)));
  }
  for (const auto& [id, begin] : log.begins) {
    if (!refused_hmacs.count(begin.value("prompt_hmac", ""))) continue;
    const auto end = log.ends.find(id);
    EXPECT_TRUE(end == log.ends.end() || end->second["status_code"] != 0) << "refused generation " << id << " ended OK";
  }
  const auto ok_count = [&](const std::string& method) {
    const auto found = log.ok_ends.find({"alice", method});
    return found == log.ok_ends.end() ? 0 : found->second;
  };
  EXPECT_EQ(ok_count("airlock.v1.Inference/Generate"), static_cast<int>(acknowledged_.size()));
  EXPECT_EQ(ok_count("airlock.v1.Inference/Tokenize"), tokenized_);
  EXPECT_GE(refused_prompts_.size(), 4u);  // the fault did refuse generations
}

}  // namespace
}  // namespace airlock::testing

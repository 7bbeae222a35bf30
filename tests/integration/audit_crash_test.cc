// Crash test of the daemon's audit log under concurrent load: airlockd is SIGKILLed repeatedly
// while several clients call it; after each kill every call a client saw succeed is in the log,
// the chain verifies offline, and the daemon restarted on the same state serves again.
#include <signal.h>

#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "audit/audit_record.h"
#include "audit/privacy.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

namespace v1 = ::airlock::v1;

constexpr int kClients = 5;
constexpr int kRounds = 4;
constexpr char kGenerate[] = "airlock.v1.Inference/Generate";
constexpr char kGenerateStream[] = "airlock.v1.Inference/GenerateStream";
constexpr char kTokenize[] = "airlock.v1.Inference/Tokenize";
constexpr char kListModels[] = "airlock.v1.Inference/ListModels";

std::string ClientName(int client) { return absl::StrCat("client", client); }

// Every client and "alice" (the serving check after each restart) may call everything.
std::string AccessYaml() {
  std::string users = "users:\n  - name: alice\n    roles: [user]\n";
  for (int c = 0; c < kClients; ++c) absl::StrAppend(&users, "  - name: ", ClientName(c), "\n    roles: [user]\n");
  return users + "roles:\n  - name: user\n    methods: [\"*\"]\n    models: [\"*\"]\n";
}

v1::GenerateRequest ShortGeneration(const std::string& prompt) {
  v1::GenerateRequest r;
  r.set_model("stories");
  r.set_prompt(prompt);
  r.set_max_tokens(3);
  r.mutable_sampling()->set_temperature(0);
  return r;
}

// What the clients were told succeeded, over all rounds. Generations carry their request id
// (GenerateResponse.request_id, Completion.request_id); Tokenize and ListModels responses carry
// none, so those are counted per client identity, which the records name.
class Acknowledged {
 public:
  struct Generation {
    std::string method;
    std::string prompt;
  };

  void AddGeneration(const std::string& request_id, const std::string& method, const std::string& prompt) {
    absl::MutexLock lock(&mu_);
    generations_[request_id] = {method, prompt};
    ++total_;
  }
  void AddSingle(const std::string& identity, const std::string& method) {
    absl::MutexLock lock(&mu_);
    ++singles_[{identity, method}];
    ++total_;
  }
  int total() const {
    absl::MutexLock lock(&mu_);
    return total_;
  }
  // True once `target` calls were acknowledged in all, false if `within` passed first.
  bool AwaitTotal(int target, absl::Duration within) const {
    absl::MutexLock lock(&mu_);
    auto reached = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return total_ >= target; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), within);
  }
  std::map<std::string, Generation> generations() const {
    absl::MutexLock lock(&mu_);
    return generations_;
  }
  std::map<std::pair<std::string, std::string>, int> singles() const {
    absl::MutexLock lock(&mu_);
    return singles_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, Generation> generations_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, int> singles_ ABSL_GUARDED_BY(mu_);
  int total_ ABSL_GUARDED_BY(mu_) = 0;
};

// One client's loop until `stop`: a mix of Generate, GenerateStream, Tokenize and ListModels, each
// prompt unique. Failures (the daemon killed under it) are expected and only end nothing: the
// loop goes on until the test stops it.
void RunClient(int client, int round, int port, const LabPki& pki, const std::atomic<bool>& stop,
               Acknowledged* acknowledged) {
  const std::string identity = ClientName(client);
  const std::unique_ptr<v1::Inference::Stub> stub = v1::Inference::NewStub(Connect(port, pki, identity));
  for (int k = 0; !stop.load(); ++k) {
    const std::string prompt = absl::StrCat("Once upon a time ", identity, " round ", round, " call ", k);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    switch ((client + k) % 6) {
      case 0:
      case 1:
      case 2: {
        v1::GenerateResponse response;
        if (stub->Generate(&context, ShortGeneration(prompt), &response).ok()) {
          acknowledged->AddGeneration(response.request_id(), kGenerate, prompt);
        }
        break;
      }
      case 3: {
        std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader =
            stub->GenerateStream(&context, ShortGeneration(prompt));
        v1::GenerateStreamResponse message;
        std::string request_id;
        while (reader->Read(&message)) {
          if (message.has_done()) request_id = message.done().request_id();
        }
        if (reader->Finish().ok() && !request_id.empty()) {
          acknowledged->AddGeneration(request_id, kGenerateStream, prompt);
        }
        break;
      }
      case 4: {
        v1::TokenizeRequest request;
        request.set_model("stories");
        request.set_text(prompt);
        v1::TokenizeResponse response;
        if (stub->Tokenize(&context, request, &response).ok()) acknowledged->AddSingle(identity, kTokenize);
        break;
      }
      default: {
        v1::ListModelsResponse response;
        if (stub->ListModels(&context, v1::ListModelsRequest(), &response).ok()) {
          acknowledged->AddSingle(identity, kListModels);
        }
        break;
      }
    }
  }
}

class AuditCrashTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    std::vector<std::string> users = {"alice"};
    for (int c = 0; c < kClients; ++c) users.push_back(ClientName(c));
    SetUpLab(AccessYaml(), users);
  }

  // The daemon serves: a generation as alice succeeds (and is acknowledged like any other).
  void ExpectServes(Acknowledged* acknowledged) {
    const std::string prompt = absl::StrCat("Once upon a time alice after start ", ++starts_);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::GenerateResponse response;
    const grpc::Status s = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))
                               ->Generate(&context, ShortGeneration(prompt), &response);
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << daemon_->Log();
    acknowledged->AddGeneration(response.request_id(), kGenerate, prompt);
  }

  // With the daemon stopped: the chain verifies, and every acknowledged call so far is in it.
  void ExpectEveryAcknowledgedCallInAVerifiedChain(const Acknowledged& acknowledged) {
    const CommandResult verify = VerifyAudit(dir_ + "/state", dir_ + "/audit-signing.key.pub");
    ASSERT_EQ(verify.exit_code, 0) << verify.out << verify.err;
    const nlohmann::json report = nlohmann::json::parse(verify.out);
    EXPECT_TRUE(report["ok"].get<bool>()) << verify.out;

    log_ = IndexAudit(ExportAudit(dir_ + "/state"));
    const AuditIndex& log = log_;
    EXPECT_EQ(report["records_checked"], log.records);
    EXPECT_TRUE(log.repeated.empty()) << "request ids with two records of one phase, e.g. " << log.repeated[0];
    const std::string secret = ReadFileOrDie(dir_ + "/audit-hmac.secret");
    for (const auto& [id, call] : acknowledged.generations()) {
      const auto begin = log.begins.find(id);
      const auto end = log.ends.find(id);
      ASSERT_TRUE(begin != log.begins.end()) << "no begin record for acknowledged " << call.method << " " << id;
      ASSERT_TRUE(end != log.ends.end()) << "no end record for acknowledged " << call.method << " " << id;
      EXPECT_EQ(begin->second["method"], call.method) << id;
      EXPECT_EQ(begin->second["prompt_hmac"], audit::HexLower(audit::HmacSha256(secret, call.prompt))) << id;
      EXPECT_EQ(end->second["status_code"], 0) << id;
      EXPECT_LT(begin->second["sequence"], end->second["sequence"]) << id;
    }
    // A call may be recorded and then killed before its response left: at least, not exactly.
    for (const auto& [who, count] : acknowledged.singles()) {
      const auto found = log.ok_ends.find(who);
      EXPECT_GE(found == log.ok_ends.end() ? 0 : found->second, count) << who.first << " " << who.second;
    }
  }

  int starts_ = 0;
  AuditIndex log_;  // as last read
};

TEST_F(AuditCrashTest, AcknowledgedCallsSurviveRepeatedSigkillUnderConcurrentLoad) {
  const unsigned seed = std::random_device()();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937 random(seed);
  // How many more acknowledged calls each round waits for before the kill: the moment varies, and
  // the clients always have calls in flight when it comes.
  std::uniform_int_distribution<int> calls_before_kill(20, 100);
  Acknowledged acknowledged;

  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    ASSERT_NO_FATAL_FAILURE(StartDaemon());
    ASSERT_NO_FATAL_FAILURE(ExpectServes(&acknowledged));

    const int target = acknowledged.total() + calls_before_kill(random);
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back(RunClient, c, round, daemon_->port(), std::cref(pki_), std::cref(stop), &acknowledged);
    }
    const bool reached = acknowledged.AwaitTotal(target, absl::Seconds(20));
    daemon_->Signal(SIGKILL);
    const std::optional<int> exit_code = daemon_->WaitExit(absl::Seconds(10));
    stop = true;
    for (std::thread& t : clients) t.join();
    ASSERT_TRUE(reached) << "only " << acknowledged.total() << " of " << target << " calls acknowledged in 20 s\n"
                         << daemon_->Log();
    ASSERT_EQ(exit_code, std::optional<int>(128 + SIGKILL));

    ASSERT_NO_FATAL_FAILURE(ExpectEveryAcknowledgedCallInAVerifiedChain(acknowledged));
  }

  // After the last kill: the daemon serves again, stops cleanly, and the whole chain verifies.
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(ExpectServes(&acknowledged));
  daemon_->Signal(SIGTERM);
  ASSERT_EQ(daemon_->WaitExit(absl::Seconds(30)), std::optional<int>(0)) << daemon_->Log();
  ASSERT_NO_FATAL_FAILURE(ExpectEveryAcknowledgedCallInAVerifiedChain(acknowledged));
  EXPECT_GT(acknowledged.generations().size(), static_cast<size_t>(kRounds));  // the load generated too
  // The kills did land on running generations: begin records whose end never came.
  int interrupted = 0;
  for (const auto& [id, begin] : log_.begins) interrupted += log_.ends.count(id) == 0 ? 1 : 0;
  EXPECT_GT(interrupted, 0);
}

}  // namespace
}  // namespace airlock::testing

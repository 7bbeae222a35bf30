// End-to-end tests of batched generation through airlockd: many concurrent calls give each the
// tokens it gets alone (batch invariance, greedy and seeded, unary and streamed, two models); a
// request that can never fit the KV pool is refused at once rather than left waiting; a pool too
// small for all at once still finishes everyone; the prefix cache is shared only within its scope.
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;

constexpr char kAccess[] = R"(users:
  - name: alice
    roles: [user]
  - name: bob
    roles: [user]
roles:
  - name: user
    methods: ["*"]
    models: ["*"]
)";

constexpr char kSynthModel[] = "models/synth-llama-2L-256d-q4_0.gguf";

// A prompt of well over ten KV blocks of the stories model's vocabulary.
constexpr char kLongPrompt[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
    "friends. One day, she saw a big red ball under a tree. She ran to the ball and picked it up. Her mom said "
    "she could keep the ball if she shared it with her brother. Lily was happy and they played all day long.";

// One call of the mixed load: which model, how, and what it returned.
struct Call {
  std::string model;
  std::string prompt;
  int32_t max_tokens = 0;
  bool stream = false;
  float temperature = 0;  // 0: greedy
  uint64_t seed = 0;
  std::string user;
  // Results.
  grpc::Status status;
  std::vector<int32_t> token_ids;
  std::string text;
  v1::StopReason stop_reason = v1::STOP_REASON_UNSPECIFIED;
};

// A greedy unary call.
Call Greedy(const std::string& model, const std::string& prompt, int32_t max_tokens, const std::string& user) {
  Call c;
  c.model = model;
  c.prompt = prompt;
  c.max_tokens = max_tokens;
  c.user = user;
  return c;
}

class BatchingTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kSynthModel));
    SetUpLab(kAccess, {"alice", "bob"});
  }
  // airlockd serving `models_yaml`, with a plain-HTTP metrics listener on loopback.
  void Start(const std::string& models_yaml) {
    ASSERT_NO_FATAL_FAILURE(StartDaemon(
        "", models_yaml,
        absl::StrCat("metrics:\n  listen: \"127.0.0.1:0\"\n  port_file: \"", dir_, "/metrics-port\"\n  plaintext: true\n")));
    std::ifstream in(dir_ + "/metrics-port");
    ASSERT_TRUE(in >> metrics_port_) << daemon_->Log();
  }
  static std::string Model(const std::string& name, const std::string& path, const std::string& extra = "") {
    return absl::StrCat("  - name: ", name, "\n    path: \"", SharedPath(path), "\"\n    threads: 1\n", extra);
  }
  std::unique_ptr<v1::Inference::Stub> Stub(const std::string& user) {
    return v1::Inference::NewStub(Connect(daemon_->port(), pki_, user));
  }

  // Runs `call` to its end on `stub` (a new connection as call.user when null), filling its results.
  void Run(Call& call, v1::Inference::Stub* stub = nullptr) {
    v1::GenerateRequest r;
    r.set_model(call.model);
    r.set_prompt(call.prompt);
    r.set_max_tokens(call.max_tokens);
    r.mutable_sampling()->set_temperature(call.temperature);
    if (call.temperature > 0) r.mutable_sampling()->set_seed(call.seed);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(60)));
    std::unique_ptr<v1::Inference::Stub> own;
    if (stub == nullptr) {
      own = Stub(call.user);
      stub = own.get();
    }
    call.token_ids.clear();
    call.text.clear();
    if (!call.stream) {
      v1::GenerateResponse response;
      call.status = stub->Generate(&context, r, &response);
      call.token_ids.assign(response.token_ids().begin(), response.token_ids().end());
      call.text = response.text();
      call.stop_reason = response.stop_reason();
      return;
    }
    auto reader = stub->GenerateStream(&context, r);
    v1::GenerateStreamResponse message;
    while (reader->Read(&message)) {
      if (message.has_piece()) {
        call.text += message.piece().text();
        call.token_ids.insert(call.token_ids.end(), message.piece().token_ids().begin(),
                              message.piece().token_ids().end());
      } else if (message.has_done()) {
        call.stop_reason = message.done().stop_reason();
      }
    }
    call.status = reader->Finish();
  }

  // The scraped value of `series` (name and labels exactly as exposed), or -1 when absent.
  double Metric(const std::string& series) {
    httplib::Client client("127.0.0.1", metrics_port_);
    client.set_read_timeout(10);
    httplib::Result r = client.Get("/metrics");
    if (!r || r->status != 200) return -1;
    const std::string needle = "\n" + series + " ";
    const size_t at = r->body.find(needle);
    if (at == std::string::npos) return -1;
    return std::stod(r->body.substr(at + needle.size()));
  }

  int metrics_port_ = 0;
};

// Issue 16, "Done when": at least 12 concurrent requests with mixed prompts, lengths, greedy and
// seeded sampling produce exactly the tokens each produces alone, through airlockd.
TEST_F(BatchingTest, ConcurrentCallsGetExactlyTheTokensTheyGetAlone) {
  ASSERT_NO_FATAL_FAILURE(Start(Model("stories", kStoriesModel) + Model("synth", kSynthModel)));
  const std::vector<std::string> prompts = {"Once upon a time", "Lily wanted to", "The big dog",
                                            kLongPrompt, "One day, a little bird", "Tom and Sue went to the"};
  std::vector<Call> calls;
  for (int i = 0; i < 14; ++i) {
    Call c;
    c.model = i % 4 == 3 ? "synth" : "stories";
    c.prompt = prompts[i % prompts.size()];
    // 64 to 256 tokens: long enough that the calls overlap although each call's begin audit
    // record is made durable (a sync) before it is queued.
    c.max_tokens = 64 + (i * 37) % 193;
    c.stream = i % 2 == 1;
    c.temperature = i % 3 == 0 ? 0.0f : 0.9f;       // greedy and seeded
    c.seed = 1000 + static_cast<uint64_t>(i) * 17;  // the same prompt with different seeds differs
    c.user = i % 5 == 0 ? "bob" : "alice";
    calls.push_back(c);
  }
  // Alone, one after another.
  const double steps_before = Metric("airlock_engine_steps_total{model=\"stories\"}");
  ASSERT_GE(steps_before, 0);
  std::vector<Call> alone = calls;
  for (Call& c : alone) {
    Run(c);
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
    ASSERT_FALSE(c.token_ids.empty());
  }
  const double steps_alone = Metric("airlock_engine_steps_total{model=\"stories\"}") - steps_before;

  // All at once, each on a connection opened beforehand (a TLS handshake takes longer than a call).
  std::vector<Call> together = calls;
  std::vector<std::unique_ptr<v1::Inference::Stub>> stubs;
  for (const Call& c : together) {
    std::shared_ptr<grpc::Channel> channel = Connect(daemon_->port(), pki_, c.user);
    ASSERT_TRUE(channel->WaitForConnected(DeadlineIn(absl::Seconds(10))));
    stubs.push_back(v1::Inference::NewStub(channel));
  }
  absl::Notification go;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < together.size(); ++i) {
    threads.emplace_back([&go, &together, &stubs, i, this] {
      go.WaitForNotification();
      Run(together[i], stubs[i].get());
    });
  }
  go.Notify();
  for (std::thread& t : threads) t.join();
  const double steps_together =
      Metric("airlock_engine_steps_total{model=\"stories\"}") - steps_before - steps_alone;

  for (size_t i = 0; i < calls.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("call ", i, " (", calls[i].model, ", ", calls[i].stream ? "stream" : "unary",
                              calls[i].temperature > 0 ? ", seeded" : ", greedy", ", ", calls[i].max_tokens,
                              " tokens): ", calls[i].prompt.substr(0, 30)));
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].token_ids, alone[i].token_ids);
    EXPECT_EQ(together[i].text, alone[i].text);
    EXPECT_EQ(together[i].stop_reason, alone[i].stop_reason);
  }
  // Seeded sampling did sample: two calls of one prompt and length but other seeds differ somewhere.
  bool any_differs = false;
  for (size_t i = 0; i < calls.size(); ++i) {
    for (size_t j = i + 1; j < calls.size(); ++j) {
      if (calls[i].model == calls[j].model && calls[i].prompt == calls[j].prompt && calls[i].temperature > 0 &&
          calls[j].temperature > 0 && alone[i].token_ids != alone[j].token_ids) {
        any_differs = true;
      }
    }
  }
  EXPECT_TRUE(any_differs);
  // They did share steps: far fewer forward steps than one after another.
  std::printf("stories model: %.0f forward steps one after another, %.0f all at once\n", steps_alone, steps_together);
  EXPECT_GT(steps_alone, 0);
  EXPECT_LT(steps_together, steps_alone * 0.6) << steps_together << " steps together, " << steps_alone << " alone";
  // Everything released once all have ended.
  EXPECT_TRUE(PollUntil([&] { return Metric("airlock_kv_cache_blocks{model=\"stories\",state=\"used\"}") == 0 &&
                                     Metric("airlock_kv_cache_blocks{model=\"synth\",state=\"used\"}") == 0 &&
                                     Metric("airlock_requests_running{model=\"stories\"}") == 0; },
                        absl::Seconds(10)));
}

// A client that cancels its stream mid-batch ends only its own sequence: its blocks come back, and
// the streams batched with it still get exactly their tokens.
TEST_F(BatchingTest, CancellingOneStreamMidBatchFreesItsBlocksAndLeavesTheOthersIntact) {
  ASSERT_NO_FATAL_FAILURE(Start(Model("stories", kStoriesModel)));
  std::vector<Call> calls;
  for (const char* prompt : {"Once upon a time", "Lily wanted to", "The big dog"}) {
    Call c = Greedy("stories", prompt, 200, "alice");
    c.stream = true;
    calls.push_back(c);
  }
  std::vector<Call> alone = calls;
  for (Call& c : alone) {
    Run(c);
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  }
  // The victim: a long stream read until its first piece, then cancelled by its client.
  grpc::ClientContext victim_context;
  v1::GenerateRequest victim;
  victim.set_model("stories");
  victim.set_prompt(kLongPrompt);
  victim.set_max_tokens(300);
  victim.mutable_sampling()->set_temperature(0);
  auto victim_stub = Stub("bob");
  auto reader = victim_stub->GenerateStream(&victim_context, victim);
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));
  std::vector<std::thread> threads;
  for (Call& c : calls) threads.emplace_back([&c, this] { Run(c); });
  victim_context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < calls.size(); ++i) {
    ASSERT_TRUE(calls[i].status.ok()) << i << ": " << calls[i].status.error_message();
    EXPECT_EQ(calls[i].token_ids, alone[i].token_ids) << i;
  }
  EXPECT_TRUE(PollUntil([&] { return Metric("airlock_kv_cache_blocks{model=\"stories\",state=\"used\"}") == 0 &&
                                     Metric("airlock_requests_running{model=\"stories\"}") == 0; },
                        absl::Seconds(10)));
  EXPECT_TRUE(daemon_->WaitForLog("\"code\":\"CANCELLED\"", absl::Seconds(5))) << daemon_->Log();
}

// A request that needs more KV-cache positions than the whole pool could never run: it is refused
// at once with the reason (not left waiting for blocks that can never free up). Requests that fit
// one at a time but not all together all finish, with the tokens they get alone.
TEST_F(BatchingTest, ATinyKvPoolRefusesWhatCanNeverFitAndFinishesTheRest) {
  ASSERT_NO_FATAL_FAILURE(
      Start(Model("stories", kStoriesModel, "    kv_cache_tokens: 64\n    kv_block_tokens: 16\n    max_sequences: 4\n")));
  Call big = Greedy("stories", "Once upon a time", 100, "alice");
  const auto started = absl::Now();
  Run(big);
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << big.status.error_message();
  // Refused by the daemon before it is queued (the message names the setting), not after a wait.
  EXPECT_THAT(big.status.error_message(), HasSubstr("KV pool holds 64 (models[].kv_cache_tokens)"));
  EXPECT_LT(absl::Now() - started, absl::Seconds(10));
  Call big_stream = big;
  big_stream.stream = true;
  Run(big_stream);
  EXPECT_EQ(big_stream.status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << big_stream.status.error_message();

  // Four calls of up to ~40 positions each: one at a time they fit, all four need 160 of 64.
  std::vector<Call> calls;
  for (const char* prompt : {"Once upon a time", "Lily wanted to", "The big dog", "One day"}) {
    calls.push_back(Greedy("stories", prompt, 32, "alice"));
  }
  std::vector<Call> alone = calls;
  for (Call& c : alone) {
    Run(c);
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  }
  std::vector<std::thread> threads;
  for (Call& c : calls) threads.emplace_back([&c, this] { Run(c); });
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < calls.size(); ++i) {
    ASSERT_TRUE(calls[i].status.ok()) << i << ": " << calls[i].status.error_message();
    EXPECT_EQ(calls[i].token_ids, alone[i].token_ids) << i;
  }
  EXPECT_EQ(Metric("airlock_kv_cache_blocks{model=\"stories\",state=\"total\"}"), 4);
  EXPECT_TRUE(PollUntil([&] { return Metric("airlock_kv_cache_blocks{model=\"stories\",state=\"used\"}") == 0; },
                        absl::Seconds(10)));
}

// models[].prefix_cache: identity (the default). The time to first token shows whether a prefix
// was cached, so bob must not reuse (and thereby detect) alice's prompt; alice reuses her own.
TEST_F(BatchingTest, ThePrefixCacheIsSharedOnlyWithinOneIdentityByDefault) {
  ASSERT_NO_FATAL_FAILURE(Start(Model("stories", kStoriesModel)));
  const std::string hits = "airlock_prefix_cache_hit_tokens_total{model=\"stories\"}";
  Call first = Greedy("stories", kLongPrompt, 4, "alice");
  Run(first);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const double after_alice = Metric(hits);
  ASSERT_GE(after_alice, 0);
  // The attacker sends the victim's exact prompt: nothing of it is found cached.
  Call probe = first;
  probe.user = "bob";
  Run(probe);
  ASSERT_TRUE(probe.status.ok()) << probe.status.error_message();
  EXPECT_EQ(Metric(hits), after_alice) << "bob's call reused alice's cached prompt";
  EXPECT_EQ(probe.token_ids, first.token_ids);
  // Alice's second call reuses her blocks.
  Call again = first;
  Run(again);
  ASSERT_TRUE(again.status.ok());
  EXPECT_GE(Metric(hits) - after_alice, 32) << "no prefix hit for the same identity";
  EXPECT_EQ(again.token_ids, first.token_ids);
}

// prefix_cache: model shares across identities (one system prompt for all); off caches nothing.
TEST_F(BatchingTest, PrefixCacheModelSharesAcrossIdentitiesAndOffCachesNothing) {
  ASSERT_NO_FATAL_FAILURE(Start(Model("shared", kStoriesModel, "    prefix_cache: model\n") +
                                Model("uncached", kStoriesModel, "    prefix_cache: off\n")));
  Call first = Greedy("shared", kLongPrompt, 4, "alice");
  Run(first);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const double after_alice = Metric("airlock_prefix_cache_hit_tokens_total{model=\"shared\"}");
  Call other = first;
  other.user = "bob";
  Run(other);
  ASSERT_TRUE(other.status.ok());
  EXPECT_GE(Metric("airlock_prefix_cache_hit_tokens_total{model=\"shared\"}") - after_alice, 32);
  EXPECT_EQ(other.token_ids, first.token_ids);

  Call off = Greedy("uncached", kLongPrompt, 4, "alice");
  Run(off);
  Run(off);
  ASSERT_TRUE(off.status.ok());
  EXPECT_EQ(off.token_ids, first.token_ids);
  EXPECT_EQ(Metric("airlock_prefix_cache_hit_tokens_total{model=\"uncached\"}"), 0);
}

}  // namespace
}  // namespace airlock::testing

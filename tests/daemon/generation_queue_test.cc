// Tests of the model queue's fairness: waiting jobs are admitted into the engine round-robin across
// owners, so one owner's flood does not delay another owner's single request by more than one job;
// a full queue makes the largest holder give up its newest waiting job instead of refusing a
// newcomer; up to max_sequences jobs run at once, and on_done runs off the engine's step thread.
#include "daemon/generation_queue.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "inference/engine.h"
#include "tests/support/test_data.h"

namespace airlock::daemon {
namespace {

using ::testing::ElementsAre;

class GenerationQueueTest : public ::testing::Test {
 protected:
  // One sequence at a time unless a test asks for more: the order in which jobs end is then the
  // order in which the queue admitted them.
  void SetUp() override { LoadEngine(1); }
  void LoadEngine(int32_t max_sequences) {
    const std::string path = airlock::testing::SharedPath("models/stories260K-f32.gguf");
    AIRLOCK_REQUIRE_SHARED_FILE(path);
    inference::EngineOptions options;
    options.max_sequences = max_sequences;
    auto engine = inference::Engine::Load(path, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }
  // Polls `condition` until it holds or 30 s pass.
  static bool Eventually(const std::function<bool()>& condition) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!condition()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }

  // A short greedy job named `tag`; its result is recorded in finish order.
  std::unique_ptr<GenerationJob> Job(const std::string& owner, const std::string& tag) {
    auto job = std::make_unique<GenerationJob>();
    job->owner = owner;
    job->request.prompt = "Once";
    job->request.max_tokens = 2;
    job->request.sampling.temperature = 0;
    job->on_piece = [](const inference::GeneratedPiece&) { return true; };
    job->on_done = [this, tag](absl::StatusOr<inference::GenerateResult> result, double) {
      absl::MutexLock lock(&mu_);
      finished_.push_back(result.ok() ? tag : absl::StrCat(tag, ":", absl::StatusCodeToString(result.status().code())));
    };
    return job;
  }
  // A job that holds the worker until `release_` is notified (after `started_`).
  std::unique_ptr<GenerationJob> Blocker(const std::string& owner) {
    auto job = Job(owner, "blocker");
    job->on_piece = [this](const inference::GeneratedPiece&) {
      if (!started_.HasBeenNotified()) started_.Notify();
      release_.WaitForNotification();
      return true;
    };
    return job;
  }
  std::vector<std::string> WaitFinished(size_t count) {
    absl::MutexLock lock(&mu_);
    const auto all = [&] { return finished_.size() >= count; };
    EXPECT_TRUE(mu_.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(60))) << finished_.size();
    return finished_;
  }

  std::unique_ptr<inference::Engine> engine_;
  absl::Notification started_;
  absl::Notification release_;
  absl::Mutex mu_;
  std::vector<std::string> finished_;
};

TEST_F(GenerationQueueTest, WaitingJobsAreServedRoundRobinAcrossOwners) {
  GenerationQueue queue(*engine_, 64);
  ASSERT_TRUE(queue.Submit(Blocker("flood")).ok());
  started_.WaitForNotification();
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(queue.Submit(Job("flood", absl::StrCat("f", i))).ok());
  ASSERT_TRUE(queue.Submit(Job("trickle", "t0")).ok());
  ASSERT_TRUE(queue.Submit(Job("other", "o0")).ok());
  EXPECT_EQ(queue.waiting(), 8u);
  release_.Notify();
  // The trickle's one request waits for the running job and one flood job only.
  EXPECT_THAT(WaitFinished(9), ElementsAre("blocker", "f0", "t0", "o0", "f1", "f2", "f3", "f4", "f5"));
}

TEST_F(GenerationQueueTest, AFullQueueTakesTheNewestJobOfTheLargestHolder) {
  GenerationQueue queue(*engine_, 4);
  ASSERT_TRUE(queue.Submit(Blocker("flood")).ok());
  started_.WaitForNotification();
  // The engine's gauges while the blocker holds its first token: one sequence, its prompt cached.
  EXPECT_EQ(engine_->stats().running, 1);
  EXPECT_GE(engine_->stats().kv_blocks_used, 1);  // BOS + "Once"
  EXPECT_EQ(queue.running(), 1u);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(queue.Submit(Job("flood", absl::StrCat("f", i))).ok());
  // Full. The flooder itself is refused...
  const absl::Status refused = queue.Submit(Job("flood", "f4"));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), ::testing::HasSubstr("4 of them yours"));
  // ...but another identity gets a place: the flooder's newest waiting job gives it up.
  ASSERT_TRUE(queue.Submit(Job("trickle", "t0")).ok());
  ASSERT_TRUE(queue.Submit(Job("trickle", "t1")).ok());  // 2 < 3: f2 gives way too
  // Now 2 and 2: equal holders are not displaced.
  EXPECT_EQ(queue.Submit(Job("trickle", "t2")).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(queue.waiting(), 4u);
  // Two refused at Submit, two displaced.
  EXPECT_EQ(queue.refused_full(), 4u);
  release_.Notify();
  EXPECT_THAT(WaitFinished(7), ElementsAre("f3:RESOURCE_EXHAUSTED", "f2:RESOURCE_EXHAUSTED", "blocker", "f0", "t0",
                                           "f1", "t1"));
  // Every sequence released: the gauges are back to zero.
  EXPECT_TRUE(Eventually([&] { return engine_->stats().running == 0 && engine_->stats().kv_blocks_used == 0; }));
  EXPECT_TRUE(Eventually([&] { return queue.running() == 0; }));
}

TEST_F(GenerationQueueTest, RunsUpToMaxSequencesAtOnceAndAdmitsRoundRobin) {
  LoadEngine(2);
  GenerationQueue queue(*engine_, 64);
  ASSERT_TRUE(queue.Submit(Blocker("flood")).ok());
  started_.WaitForNotification();
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(queue.Submit(Job("flood", absl::StrCat("f", i))).ok());
  ASSERT_TRUE(queue.Submit(Job("trickle", "t0")).ok());
  // The second slot went to f0 at once, although the blocker holds the engine's step thread.
  EXPECT_TRUE(Eventually([&] { return queue.running() == 2 && queue.waiting() == 6; }))
      << queue.running() << " running, " << queue.waiting() << " waiting";
  release_.Notify();
  const std::vector<std::string> finished = WaitFinished(8);
  ASSERT_EQ(finished.size(), 8u);
  // The trickle is admitted with f1 when the first two end: it ends before f2, which needs a slot
  // that f1 or t0 frees.
  const auto at = [&](const std::string& tag) { return std::find(finished.begin(), finished.end(), tag) - finished.begin(); };
  EXPECT_LT(at("t0"), at("f2")) << ::testing::PrintToString(finished);
  EXPECT_LT(at("t0"), 8);
  EXPECT_TRUE(Eventually([&] { return queue.running() == 0 && engine_->stats().kv_blocks_used == 0; }));
}

TEST_F(GenerationQueueTest, OnDoneRunsOffTheEngineStepThread) {
  GenerationQueue queue(*engine_, 4);
  absl::Notification done;
  std::thread::id piece_thread;
  std::thread::id done_thread;
  auto job = Job("alice", "a");
  job->on_piece = [&](const inference::GeneratedPiece&) {
    piece_thread = std::this_thread::get_id();
    return true;
  };
  job->on_done = [&](absl::StatusOr<inference::GenerateResult> result, double) {
    EXPECT_TRUE(result.ok()) << result.status();
    done_thread = std::this_thread::get_id();
    done.Notify();
  };
  ASSERT_TRUE(queue.Submit(std::move(job)).ok());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  // The audit write in on_done must not stall every sequence of the batch.
  EXPECT_NE(piece_thread, std::thread::id());
  EXPECT_NE(done_thread, piece_thread);
}

TEST_F(GenerationQueueTest, AJobTheEngineRefusesEndsWithTheEnginesError) {
  GenerationQueue queue(*engine_, 4);
  auto job = Job("alice", "bad");
  job->request.max_tokens = -1;  // refused by Engine::Start, which then never calls back
  ASSERT_TRUE(queue.Submit(std::move(job)).ok());
  EXPECT_THAT(WaitFinished(1), ElementsAre(::testing::StartsWith("bad:")));
  EXPECT_TRUE(Eventually([&] { return queue.running() == 0; }));
  // The refused job gave its slot back: the next one runs.
  ASSERT_TRUE(queue.Submit(Job("alice", "good")).ok());
  EXPECT_THAT(WaitFinished(2), ElementsAre(::testing::StartsWith("bad:"), "good"));
}

TEST_F(GenerationQueueTest, ShutdownEndsWaitingJobsAndWaitsForRunningOnes) {
  auto queue = std::make_unique<GenerationQueue>(*engine_, 8);
  ASSERT_TRUE(queue->Submit(Blocker("flood")).ok());
  started_.WaitForNotification();
  ASSERT_TRUE(queue->Submit(Job("trickle", "t0")).ok());
  std::thread releaser([&] {
    // Shutdown has ended the waiting job before the running one is released.
    WaitFinished(1);
    release_.Notify();
  });
  queue->Shutdown();
  releaser.join();
  EXPECT_THAT(WaitFinished(2), ElementsAre("t0:UNAVAILABLE", "blocker"));
  EXPECT_EQ(queue->running(), 0u);
  EXPECT_EQ(queue->Submit(Job("late", "l0")).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace airlock::daemon

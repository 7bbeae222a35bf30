// Tests of the model queue's fairness: waiting jobs are served round-robin across owners, so one
// owner's flood does not delay another owner's single request by more than one job; and a full
// queue makes the largest holder give up its newest waiting job instead of refusing a newcomer.
#include "daemon/generation_queue.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
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
  void SetUp() override {
    const std::string path = airlock::testing::SharedPath("models/stories260K-f32.gguf");
    AIRLOCK_REQUIRE_SHARED_FILE(path);
    auto engine = inference::Engine::Load(path, inference::EngineOptions{});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
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
  // Every sequence released: the gauges are back to zero (cleared before on_done runs).
  EXPECT_EQ(engine_->stats().running, 0);
  EXPECT_EQ(engine_->stats().kv_blocks_used, 0);
}

}  // namespace
}  // namespace airlock::daemon

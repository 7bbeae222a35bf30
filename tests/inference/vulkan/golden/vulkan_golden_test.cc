// The Vulkan executor against llama.cpp's recorded outputs (../shared/golden), with the same
// tolerances as the CPU backend: every golden file whose weight types the Vulkan backend runs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "inference/backend/vulkan/vulkan_backend.h"
#include "inference/model/model.h"
#include "tests/inference/golden_check.h"
#include "tests/inference/vulkan/vulkan_test_util.h"
#include "tests/support/test_data.h"

namespace airlock::inference {
namespace {

using testing::GoldenCase;

// Every golden file of an architecture the Vulkan backend runs (all but gemma2 and the mixtures of
// experts, which it refuses: VulkanGemma2Test below): it multiplies all their weight types (F32, F16, Q4_0, Q8_0, Q4_K,
// Q6_K).
std::vector<GoldenCase> VulkanCases() {
  std::vector<GoldenCase> cases;
  for (GoldenCase& c : testing::GoldenCases()) {
    if (c.model.find("gemma2") == std::string::npos && c.model.find("e4k2") == std::string::npos) {
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

class VulkanGoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(VulkanGoldenTest, TeacherForcedLogitsWithinTolerance) {
  std::unique_ptr<vulkan::Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  device.reset();
  const GoldenCase& gc = GetParam();
  const std::string golden = testing::SharedPath(gc.GoldenPath());
  AIRLOCK_REQUIRE_SHARED_FILE(golden);
  const std::string path = testing::SharedPath(gc.ModelPath());
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  ExecutorOptions o;
  o.n_ctx = std::min((*model)->config().n_ctx_train, 2048);  // as the golden config
  o.kv_type = gc.kv == "kv-f32" ? KvCacheType::kF32 : KvCacheType::kF16;
  auto ex = CreateVulkanBackend(vulkan::TestDeviceSelector())->CreateExecutor(**model, o);
  ASSERT_TRUE(ex.ok()) << ex.status();
  testing::CheckTeacherForcedGolden(**ex, golden, gc.tolerance, "vulkan " + gc.kv + "/" + gc.model);
}

// gemma2's ops have no shaders yet: the backend says so when the executor is created, naming the
// architecture and what to do, rather than computing something else.
TEST(VulkanGemma2Test, RefusedWithAClearError) {
  std::unique_ptr<vulkan::Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  device.reset();
  const std::string path = testing::SharedPath("models/arch/synth-gemma2-26L-64d-f32.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(path);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  ExecutorOptions o;
  o.n_ctx = 512;
  auto ex = CreateVulkanBackend(vulkan::TestDeviceSelector())->CreateExecutor(**model, o);
  ASSERT_FALSE(ex.ok());
  EXPECT_EQ(ex.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(ex.status().message()), ::testing::HasSubstr("does not run gemma2 models yet"));
}

INSTANTIATE_TEST_SUITE_P(LlamaCpp, VulkanGoldenTest, ::testing::ValuesIn(VulkanCases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) { return testing::GoldenCaseName(info.param); });

}  // namespace
}  // namespace airlock::inference

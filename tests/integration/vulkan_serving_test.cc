// airlockd serving a model on a Vulkan device (lavapipe in CI): the same greedy text as the CPU
// serves, the device named in the start-up log, and a model configured on a device that is not
// there stops the start with an error naming both, never falling back to the CPU.
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_harness.h"
#include "tests/support/run_command.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;

// The Vulkan device `airlockctl devices` reports for lavapipe ("vulkan:N"), or "" when none.
std::string LavapipeDevice(std::string* listing) {
  const CommandResult r = RunCommand({AIRLOCKCTL_PATH, "devices", "--json"});
  *listing = r.out + r.err;
  if (r.exit_code != 0) return "";
  const nlohmann::json listed = nlohmann::json::parse(r.out);
  for (const nlohmann::json& d : listed["devices"]) {
    if (d["name"].get<std::string>().find("llvmpipe") != std::string::npos && d["usable"].get<bool>()) {
      return d["id"].get<std::string>();
    }
  }
  return "";
}

std::string ModelYaml(const std::string& name, const std::string& device) {
  return absl::StrCat("  - name: ", name, "\n    path: \"", SharedPath(kStoriesModel),
                      "\"\n    threads: 1\n    kv_cache_type: F32\n    device: \"", device, "\"\n");
}

class VulkanServingTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    device_ = LavapipeDevice(&devices_);
    if (device_.empty()) {
      if (RunningInCi()) FAIL() << "no lavapipe Vulkan device (CI=true installs mesa-vulkan-drivers): " << devices_;
      GTEST_SKIP() << "no lavapipe Vulkan device: " << devices_;
    }
    SetUpLab(kAliceMayCallAnything, {"alice"});
  }
  std::string device_;
  std::string devices_;  // what airlockctl devices printed
};

TEST_F(VulkanServingTest, AModelOnTheDeviceGeneratesWhatTheCpuGenerates) {
  StartDaemon("", ModelYaml("stories-cpu", "cpu") + ModelYaml("stories-gpu", device_));
  auto generate = [&](const std::string& model) {
    const CommandResult r = Ctl("alice", {"generate", "--model", model, "--prompt", "Once upon a time", "--max-tokens",
                                          "40", "--temperature", "0", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out)["text"].get<std::string>() : std::string();
  };
  const std::string cpu = generate("stories-cpu");
  EXPECT_FALSE(cpu.empty());
  EXPECT_EQ(generate("stories-gpu"), cpu);
  StopDaemon();
  EXPECT_THAT(ReadFileOrDie(daemon_->dir() + "/airlockd.log"), HasSubstr(device_));
}

TEST_F(VulkanServingTest, AModelOnAMissingDeviceStopsTheStart) {
  std::string error;
  const std::string config =
      BaseConfig(dir_, pki_, ModelYaml("stories", "cpu") + ModelYaml("stories-gpu", "vulkan:99"), access_);
  auto daemon = DaemonProcess::Start(dir_, config, &error, absl::Seconds(60));
  EXPECT_EQ(daemon, nullptr) << "started without the configured device";
  EXPECT_THAT(error, HasSubstr("stories-gpu"));
  EXPECT_THAT(error, HasSubstr("vulkan:99"));
  EXPECT_THAT(error, HasSubstr("does not exist"));
}

}  // namespace
}  // namespace airlock::testing

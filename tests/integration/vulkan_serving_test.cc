// airlockd serving a model on a Vulkan device (lavapipe in CI): the same greedy text as the CPU
// serves, the device named in the start-up log, and a model configured on a device that is not
// there stops the start with an error naming both, never falling back to the CPU.
#include <csignal>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include <httplib.h>
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

// A model on two logical devices of the one lavapipe device: by index and by name, two spellings
// the configuration accepts as two GPUs.
std::string PlacedModelYaml(const std::string& name, const std::string& device, const std::string& placement) {
  return absl::StrCat("  - name: ", name, "\n    path: \"", SharedPath(kStoriesModel),
                      "\"\n    threads: 1\n    kv_cache_type: F32\n    devices: [\"", device,
                      "\", \"vulkan:llvmpipe\"]\n    placement: ", placement, "\n");
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
    std::signal(SIGPIPE, SIG_IGN);  // httplib's client does not ignore it itself
    SetUpLab(kAliceMayCallAnything, {"alice", "prometheus"});
  }
  // The metrics listener (mTLS; the prometheus identity scrapes).
  std::string MetricsYaml() const {
    return absl::StrCat("metrics:\n  listen: \"127.0.0.1:0\"\n  port_file: \"", dir_,
                        "/metrics-port\"\n  scrapers: [prometheus]\n");
  }
  // GET `path` from the metrics listener as the prometheus scraper.
  httplib::Result Scrape(const std::string& path) {
    int metrics_port = 0;
    std::ifstream(dir_ + "/metrics-port") >> metrics_port;
    EXPECT_GT(metrics_port, 0) << daemon_->Log();
    httplib::SSLClient client("localhost", metrics_port, pki_.cert("prometheus"), pki_.key("prometheus"));
    client.set_ca_cert_path((pki_.dir + "/ca.crt").c_str());
    client.enable_server_certificate_verification(true);
    client.set_connection_timeout(10);
    client.set_read_timeout(10);
    return client.Get(path);
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

// The GPU is lost in the middle of a request (injected at the device's fourth step): that request
// ends with UNAVAILABLE naming the device, the model then refuses at once, airlockctl models,
// /readyz and airlock_model_state say it is unavailable, and the CPU model beside it keeps serving.
// The device's memory and busy-time metrics show what the GPU model held and ran.
TEST_F(VulkanServingTest, ALostDeviceEndsItsRequestsAndLeavesTheOtherModelsServing) {
  std::string error;
  const std::string config =
      BaseConfig(dir_, pki_, ModelYaml("stories-cpu", "cpu") + ModelYaml("stories-gpu", device_), access_,
                 MetricsYaml());
  daemon_ = DaemonProcess::Start(dir_, config, &error, absl::Seconds(60),
                                 {"/usr/bin/env", "AIRLOCK_TEST_VULKAN_LOST_AT_STEP=4"});
  ASSERT_NE(daemon_, nullptr) << error;
  EXPECT_THAT(daemon_->Log(), HasSubstr("test fault: lost at step 4"));
  const auto generate = [&](const std::string& model) {
    return Ctl("alice", {"generate", "--model", model, "--prompt", "Once upon a time", "--max-tokens", "40",
                         "--temperature", "0", "--json"});
  };
  const CommandResult lost = generate("stories-gpu");
  EXPECT_NE(lost.exit_code, 0) << lost.out;
  EXPECT_THAT(lost.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(lost.err, HasSubstr("was lost"));
  const CommandResult again = generate("stories-gpu");
  EXPECT_NE(again.exit_code, 0) << again.out;
  EXPECT_THAT(again.err, HasSubstr("until airlockd restarts"));
  const CommandResult cpu = generate("stories-cpu");
  EXPECT_EQ(cpu.exit_code, 0) << cpu.err;

  const CommandResult models = Ctl("alice", {"models", "--json"});
  ASSERT_EQ(models.exit_code, 0) << models.err;
  for (const nlohmann::json& m : nlohmann::json::parse(models.out)["models"]) {
    if (m["name"] == "stories-gpu") {
      EXPECT_THAT(m["unavailable"].get<std::string>(), HasSubstr("was lost"));
    } else {
      EXPECT_EQ(m["unavailable"], "");
    }
  }

  httplib::Result ready = Scrape("/readyz");
  ASSERT_TRUE(ready) << httplib::to_string(ready.error());
  EXPECT_EQ(ready->status, 200) << ready->body;  // the CPU model still serves
  EXPECT_THAT(ready->body, HasSubstr("unavailable: stories-gpu"));
  httplib::Result metrics = Scrape("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  EXPECT_THAT(metrics->body, HasSubstr("airlock_model_state{model=\"stories-gpu\",state=\"unavailable\"} 1"));
  EXPECT_THAT(metrics->body, HasSubstr("airlock_model_state{model=\"stories-cpu\",state=\"loaded\"} 1"));
  // The device's own figures: the GPU model's buffers within the device's memory, and busy time
  // from the steps it ran before the loss (one device, so one series each).
  const auto value_of = [&](const std::string& prefix, const std::string& also) {
    for (const absl::string_view line : absl::StrSplit(metrics->body, '\n')) {
      if (absl::StartsWith(line, prefix) && absl::StrContains(line, also)) {
        return std::stod(std::string(line.substr(line.rfind(' ') + 1)));
      }
    }
    ADD_FAILURE() << "no " << prefix << " ... " << also << " in\n" << metrics->body;
    return -1.0;
  };
  const std::string memory = "airlock_device_memory_bytes{device=\"" + device_ + " (";
  const double used = value_of(memory, "state=\"used\"");
  EXPECT_GT(used, 0);
  const double total = value_of(memory, "state=\"total\"");
  if (total > 0) {
    EXPECT_LE(used, total);
  }
  EXPECT_GT(value_of("airlock_device_busy_seconds_total{device=\"" + device_ + " (", ""), 0);
  EXPECT_THAT(metrics->body, ::testing::Not(HasSubstr("airlock_device_memory_bytes{device=\"cpu")));
  StopDaemon();
}

// The same model placed as replicas and as layers over two devices serves the text the CPU serves;
// the start-up log names the placement.
TEST_F(VulkanServingTest, ReplicasAndLayersServeWhatTheCpuServes) {
  StartDaemon("", ModelYaml("stories-cpu", "cpu") + PlacedModelYaml("stories-replicas", device_, "replicas") +
                      PlacedModelYaml("stories-layers", device_, "layers"));
  auto generate = [&](const std::string& model) {
    const CommandResult r = Ctl("alice", {"generate", "--model", model, "--prompt", "Once upon a time", "--max-tokens",
                                          "40", "--temperature", "0", "--json"});
    EXPECT_EQ(r.exit_code, 0) << model << ": " << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out)["text"].get<std::string>() : std::string();
  };
  const std::string cpu = generate("stories-cpu");
  EXPECT_FALSE(cpu.empty());
  EXPECT_EQ(generate("stories-replicas"), cpu);
  EXPECT_EQ(generate("stories-layers"), cpu);
  const CommandResult models = Ctl("alice", {"models", "--json"});
  ASSERT_EQ(models.exit_code, 0) << models.err;
  for (const nlohmann::json& m : nlohmann::json::parse(models.out)["models"]) {
    if (m["name"] == "stories-replicas") {
      EXPECT_THAT(m["device"].get<std::string>(), HasSubstr("replicas: vulkan:"));
    } else if (m["name"] == "stories-layers") {
      EXPECT_THAT(m["device"].get<std::string>(), HasSubstr(" layers 0-"));
    }
  }
  StopDaemon();
  const std::string log = ReadFileOrDie(daemon_->dir() + "/airlockd.log");
  EXPECT_THAT(log, HasSubstr("replicas: vulkan:"));
  EXPECT_THAT(log, HasSubstr("and the output"));
}

// The GPU of the first of two replicas is lost in the middle of a request: that request ends with
// UNAVAILABLE naming the device, the next goes to the other replica and is served, /readyz stays
// 200 naming the lost replica, and airlock_model_state says "degraded".
TEST_F(VulkanServingTest, ALostReplicaLeavesTheModelServingDegraded) {
  std::string error;
  const std::string config =
      BaseConfig(dir_, pki_, ModelYaml("stories-cpu", "cpu") + PlacedModelYaml("stories-2gpu", device_, "replicas"),
                 access_,
                 MetricsYaml());
  daemon_ = DaemonProcess::Start(dir_, config, &error, absl::Seconds(60),
                                 {"/usr/bin/env", "AIRLOCK_TEST_VULKAN_LOST_AT_STEP=4:0"});
  ASSERT_NE(daemon_, nullptr) << error;
  const auto generate = [&](const std::string& model) {
    return Ctl("alice", {"generate", "--model", model, "--prompt", "Once upon a time", "--max-tokens", "40",
                         "--temperature", "0", "--json"});
  };
  // Idle replicas take requests first to last: the first request runs on the replica that is lost.
  const CommandResult lost = generate("stories-2gpu");
  EXPECT_NE(lost.exit_code, 0) << lost.out;
  EXPECT_THAT(lost.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(lost.err, HasSubstr("was lost"));
  const CommandResult cpu = generate("stories-cpu");
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  const CommandResult served = generate("stories-2gpu");
  ASSERT_EQ(served.exit_code, 0) << served.err;
  EXPECT_EQ(nlohmann::json::parse(served.out)["text"], nlohmann::json::parse(cpu.out)["text"]);

  httplib::Result ready = Scrape("/readyz");
  ASSERT_TRUE(ready) << httplib::to_string(ready.error());
  EXPECT_EQ(ready->status, 200) << ready->body;
  EXPECT_THAT(ready->body, HasSubstr("degraded: stories-2gpu ("));
  EXPECT_THAT(ready->body, HasSubstr("was lost"));
  httplib::Result metrics = Scrape("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  EXPECT_THAT(metrics->body, HasSubstr("airlock_model_state{model=\"stories-2gpu\",state=\"degraded\"} 1"));
  EXPECT_THAT(metrics->body, HasSubstr("airlock_model_state{model=\"stories-cpu\",state=\"loaded\"} 1"));
  StopDaemon();
}

}  // namespace
}  // namespace airlock::testing

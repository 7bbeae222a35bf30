// The Vulkan test device: $AIRLOCK_TEST_VULKAN_DEVICE, else lavapipe ("vulkan:llvmpipe"). Tests
// skip without it, and fail under CI=true, where lavapipe is installed.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "inference/backend/vulkan/vulkan_device.h"
#include "tests/support/test_data.h"

namespace airlock::inference::vulkan {

inline std::string TestDeviceSelector() {
  const char* env = std::getenv("AIRLOCK_TEST_VULKAN_DEVICE");
  return env != nullptr && env[0] != '\0' ? env : "vulkan:llvmpipe";
}

}  // namespace airlock::inference::vulkan

// Opens the test device into `device` (a std::unique_ptr<Device>), or skips / fails the test.
#define AIRLOCK_OPEN_TEST_DEVICE(device)                                                              \
  do {                                                                                                \
    absl::StatusOr<std::unique_ptr<::airlock::inference::vulkan::Device>> opened =                    \
        ::airlock::inference::vulkan::Device::Open(::airlock::inference::vulkan::TestDeviceSelector()); \
    if (!opened.ok()) {                                                                               \
      if (::airlock::testing::RunningInCi()) FAIL() << "no Vulkan test device (CI=true): " << opened.status(); \
      GTEST_SKIP() << "no Vulkan test device: " << opened.status();                                   \
    }                                                                                                 \
    device = *std::move(opened);                                                                      \
  } while (0)

// The Vulkan test device: $AIRLOCK_TEST_VULKAN_DEVICE, else lavapipe ("vulkan:llvmpipe"). Tests
// skip without it, and fail under CI=true, where lavapipe is installed.
#pragma once

#include <dlfcn.h>

#include <cstdlib>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "inference/backend/vulkan/vulkan_device.h"
#include "tests/support/test_data.h"

namespace airlock::inference::vulkan {

// LeakSanitizer and the Vulkan loader: the loader unloads the driver (dlclose) when a process's
// last instance is destroyed, and what the driver keeps in its own globals then looks leaked from
// "<unknown module>" at exit (lavapipe of Mesa 22.3.6-1+deb12u2 keeps 128 bytes so per device: a
// bare vkCreateInstance/vkCreateDevice/destroy program reports it, and not when the driver stays
// mapped). Test processes keep lavapipe mapped (RTLD_NODELETE), as any process holding an instance
// does, so the sanitizer sees that memory reachable and still reports every leak of ours.
inline const bool kLavapipeKeptMapped = [] {
  dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE);  // absent: nothing to keep
  return true;
}();

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

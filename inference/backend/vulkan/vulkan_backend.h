// The Vulkan backend: a ModelExecutor whose forward step runs on one Vulkan device (weights
// uploaded at creation, the paged KV cache in device memory, each step recorded as one submission
// of the architecture recipe's ops).
//
// So far: F32, F16, Q4_0, Q8_0, Q4_K and Q6_K weights (so Q4_K_M files), an F32 or F16 KV cache, the llama and qwen2 recipes' ops (qwen2's Q/K/V biases included), at most 4,096
// positions per sequence. Anything else is refused at CreateExecutor with an error that names it,
// never silently run on the CPU.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "inference/backend/backend.h"

namespace airlock::inference {

// A backend on the device `selector` names ("vulkan:0", "vulkan:llvmpipe"; see
// vulkan::ResolveDevice). The device is opened by each CreateExecutor.
std::unique_ptr<Backend> CreateVulkanBackend(std::string_view selector);

}  // namespace airlock::inference

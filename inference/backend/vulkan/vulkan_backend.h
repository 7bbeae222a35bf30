// The Vulkan backend: a ModelExecutor whose forward step runs on a Vulkan device (weights
// uploaded at creation, the paged KV cache in device memory, each step recorded as one submission
// of the architecture recipe's ops), or on several in turn, each holding consecutive layers.
//
// So far: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights (every type
// the CPU backend runs), an F32 or F16 KV cache, the llama and qwen2 recipes' ops (qwen2's Q/K/V
// biases included), any context (beyond 4,096 positions attention is split into chunks). Anything
// else is refused at CreateExecutor with an error that names it, never silently run on the CPU.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "inference/backend/backend.h"

namespace airlock::inference {

// A backend on the device `selector` names ("vulkan:0", "vulkan:llvmpipe"; see
// vulkan::ResolveDevice). The device is opened by each CreateExecutor.
std::unique_ptr<Backend> CreateVulkanBackend(std::string_view selector);

// Placement `layers`: a backend whose executors hold consecutive layers on each device in turn
// (the last also the output), handing the hidden state from one to the next through the host
// each step, for a model too large for one device. Each device holds its layers' part of every
// KV block. The memory of every device is planned before anything is uploaded: a part that does
// not fit is refused with the numbers. The same device named twice gives two logical devices on
// it (the tests' way to exercise placement on one lavapipe device).
std::unique_ptr<Backend> CreateVulkanLayersBackend(std::vector<std::string> selectors);

// How placement `layers` splits a model: the first layer of each device and, last, the number of
// layers (device_memory.size() + 1 entries). Each device gets consecutive layers whose bytes are
// near its share of the devices' memory (equal shares when any is 0, unknown), at least one each;
// needs at least as many layers as devices.
std::vector<int32_t> SplitLayers(std::span<const uint64_t> layer_bytes, std::span<const uint64_t> device_memory);

}  // namespace airlock::inference

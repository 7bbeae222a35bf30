// A Vulkan compute device: device discovery and selection, buffers (device-local with staging, or
// host-visible), compute pipelines from SPIR-V embedded in the binary, and submission with a
// bounded wait. Every Vulkan call is checked; a lost device turns every later call into
// UNAVAILABLE instead of a crash.
//
// Thread-safety: a Device and what it creates are used by one thread at a time (the executor that
// owns them). ListDevices may be called from any thread.
#pragma once

#include <vulkan/vulkan.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace airlock::inference::vulkan {

// What the backend needs to know about a physical device before choosing it.
struct DeviceInfo {
  int index = 0;             // position in the loader's enumeration: "vulkan:<index>"
  std::string name;          // VkPhysicalDeviceProperties::deviceName
  std::string type;          // "discrete", "integrated", "virtual", "cpu" or "other"
  uint32_t api_version = 0;  // VK_MAKE_API_VERSION
  std::string driver;        // driver name and info (VkPhysicalDeviceDriverProperties)
  uint64_t device_local_bytes = 0;  // the largest DEVICE_LOCAL heap
  uint64_t max_buffer_bytes = 0;    // maxStorageBufferRange: the most one bound buffer may hold
  uint32_t subgroup_size = 0;
  bool compute = false;          // has a compute queue family
  bool shader_float16 = false;   // shaderFloat16
  bool shader_int8 = false;      // shaderInt8
  bool storage_16bit = false;    // storageBuffer16BitAccess
  bool storage_8bit = false;     // storageBuffer8BitAccess
  bool nv_cooperative_matrix = false;  // VK_NV_cooperative_matrix (tensor cores)
};

// Every physical device the Vulkan loader reports, in its order. An empty list is not an error
// (no driver installed, or none with a device); a loader that cannot create an instance is
// UNAVAILABLE with its VkResult named.
absl::StatusOr<std::vector<DeviceInfo>> ListDevices();

// The index of the device a selector names: "vulkan:N" (N the enumeration index) or a substring
// of a device's name ("vulkan:llvmpipe", "H100"); NOT_FOUND names what is there when none matches,
// INVALID_ARGUMENT when the selector is empty or malformed; a name that matches several devices
// is INVALID_ARGUMENT (pick one by index).
absl::StatusOr<int> ResolveDevice(std::string_view selector, const std::vector<DeviceInfo>& devices);

class Device;

// Device memory of a fixed size. Host-visible buffers are mapped for their whole life.
class Buffer {
 public:
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  size_t size() const { return size_; }
  bool host_visible() const { return mapped_ != nullptr; }

 private:
  friend class Device;
  Buffer(VkDevice device, VkBuffer buffer, VkDeviceMemory memory, size_t size, void* mapped,
         std::atomic<uint64_t>* charged_to, uint64_t charged)
      : device_(device), buffer_(buffer), memory_(memory), size_(size), mapped_(mapped), charged_to_(charged_to),
        charged_(charged) {}
  VkDevice device_;
  VkBuffer buffer_;
  VkDeviceMemory memory_;
  size_t size_;
  void* mapped_;
  std::atomic<uint64_t>* charged_to_;  // the device's count of device-local bytes
  uint64_t charged_;
};

// A compute shader bound to `n_buffers` storage buffers (bindings 0 .. n_buffers - 1) and a push
// constant block of `push_bytes`.
class Pipeline {
 public:
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
  int n_buffers() const { return n_buffers_; }
  uint32_t push_bytes() const { return push_bytes_; }

 private:
  friend class Device;
  Pipeline(VkDevice device, int n_buffers, uint32_t push_bytes) : device_(device), n_buffers_(n_buffers), push_bytes_(push_bytes) {}
  VkDevice device_;
  int n_buffers_;
  uint32_t push_bytes_;
  VkShaderModule module_ = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
};

// One compute dispatch: a pipeline, its buffers in binding order, its push constants, and the
// number of workgroups. Dispatches of one Run execute in order, each seeing the writes of the
// ones before it.
struct Dispatch {
  const Pipeline* pipeline = nullptr;
  std::vector<const Buffer*> buffers;
  std::vector<uint8_t> push;
  uint32_t groups_x = 1, groups_y = 1, groups_z = 1;
};

enum class Memory { kDeviceLocal, kHostVisible };

class Device {
 public:
  // Opens the device `selector` names (see ResolveDevice) with one compute queue.
  // FAILED_PRECONDITION when it lacks what the shaders need (compute queue, 16-bit storage).
  static absl::StatusOr<std::unique_ptr<Device>> Open(std::string_view selector);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  const DeviceInfo& info() const { return info_; }
  // "vulkan:N (name)", for errors and logs.
  std::string label() const;

  // A buffer of `bytes` (> 0). kDeviceLocal prefers memory the host cannot see (filled through a
  // staging copy); kHostVisible must be mappable. RESOURCE_EXHAUSTED names the size when the
  // device has no room.
  absl::StatusOr<std::unique_ptr<Buffer>> CreateBuffer(size_t bytes, Memory memory);
  // Copies host bytes into / out of a buffer at `offset`; OUT_OF_RANGE when they do not fit.
  absl::Status Upload(Buffer& buffer, const void* data, size_t bytes, size_t offset = 0);
  absl::Status Download(const Buffer& buffer, void* data, size_t bytes, size_t offset = 0);
  // Copies bytes between two buffers on the device (and waits); OUT_OF_RANGE when they do not fit.
  absl::Status Copy(const Buffer& src, size_t src_offset, Buffer& dst, size_t dst_offset, size_t bytes);

  // A pipeline from SPIR-V words (the shader's entry point is "main").
  absl::StatusOr<std::unique_ptr<Pipeline>> CreatePipeline(std::span<const uint32_t> spirv, int n_buffers,
                                                           uint32_t push_bytes);

  // Records the dispatches into one command buffer, submits it and waits at most `timeout`.
  // INVALID_ARGUMENT for a dispatch that does not match its pipeline, DEADLINE_EXCEEDED when the
  // device does not finish in time, UNAVAILABLE once the device is lost.
  absl::Status Run(std::span<const Dispatch> dispatches,
                   std::chrono::milliseconds timeout = std::chrono::seconds(60));

  // Device-local memory this Device's buffers hold now (what vkAllocateMemory gave them), and the
  // seconds Run spent on submitted work (submission to fence). Any thread may read them.
  uint64_t device_local_bytes_used() const { return device_local_used_.load(std::memory_order_relaxed); }
  double busy_seconds() const { return static_cast<double>(busy_ns_.load(std::memory_order_relaxed)) * 1e-9; }

  // For tests of the failure path: every later call fails as after VK_ERROR_DEVICE_LOST.
  void SimulateLossForTesting() { lost_.store(true); }
  bool lost() const { return lost_.load(); }

 private:
  Device() = default;
  absl::Status Check(VkResult result, std::string_view what);
  absl::StatusOr<uint32_t> FindMemoryType(uint32_t type_bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid);
  absl::Status SubmitAndWait(VkCommandBuffer cmd, std::chrono::milliseconds timeout);
  absl::Status CopyBuffer(VkBuffer src, size_t src_offset, VkBuffer dst, size_t dst_offset, size_t bytes);

  DeviceInfo info_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkCommandPool command_pool_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  VkPhysicalDeviceMemoryProperties memory_{};
  std::atomic<bool> lost_{false};
  std::atomic<uint64_t> device_local_used_{0};
  std::atomic<uint64_t> busy_ns_{0};
};

}  // namespace airlock::inference::vulkan

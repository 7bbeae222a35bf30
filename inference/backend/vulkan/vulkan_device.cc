// Vulkan device discovery, buffers, pipelines and submission (vulkan_device.h).
#include "inference/backend/vulkan/vulkan_device.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "inference/base/status.h"

namespace airlock::inference::vulkan {
namespace {

const char* ResultName(VkResult r) {
  switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_ERROR_INVALID_SHADER_NV: return "VK_ERROR_INVALID_SHADER_NV";
    default: return "VkResult";
  }
}

const char* TypeName(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
  }
}

// An instance for compute only: no layers, no window-system extensions.
absl::StatusOr<VkInstance> CreateInstance() {
  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "airlockd";
  app.pEngineName = "airlock";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo create{};
  create.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  create.pApplicationInfo = &app;
  VkInstance instance = VK_NULL_HANDLE;
  const VkResult r = vkCreateInstance(&create, nullptr, &instance);
  if (r != VK_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("Vulkan: cannot create an instance (", ResultName(r), " ", r,
                                               "); is a Vulkan driver installed?"));
  }
  return instance;
}

absl::StatusOr<std::vector<VkPhysicalDevice>> PhysicalDevices(VkInstance instance) {
  uint32_t count = 0;
  VkResult r = vkEnumeratePhysicalDevices(instance, &count, nullptr);
  if (r != VK_SUCCESS) return absl::UnavailableError(absl::StrCat("Vulkan: cannot list devices (", ResultName(r), ")"));
  std::vector<VkPhysicalDevice> devices(count);
  r = vkEnumeratePhysicalDevices(instance, &count, devices.data());
  if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
    return absl::UnavailableError(absl::StrCat("Vulkan: cannot list devices (", ResultName(r), ")"));
  }
  devices.resize(count);
  return devices;
}

bool HasExtension(VkPhysicalDevice device, const char* name) {
  uint32_t count = 0;
  if (vkEnumerateDeviceExtensionProperties(device, nullptr, &count, nullptr) != VK_SUCCESS) return false;
  std::vector<VkExtensionProperties> extensions(count);
  if (vkEnumerateDeviceExtensionProperties(device, nullptr, &count, extensions.data()) != VK_SUCCESS) return false;
  return std::any_of(extensions.begin(), extensions.begin() + count,
                     [&](const VkExtensionProperties& e) { return std::strcmp(e.extensionName, name) == 0; });
}

int ComputeQueueFamily(VkPhysicalDevice device) {
  uint32_t count = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(device, &count, nullptr);
  std::vector<VkQueueFamilyProperties> families(count);
  vkGetPhysicalDeviceQueueFamilyProperties(device, &count, families.data());
  // Prefer a compute queue without graphics (a dedicated compute engine), else any compute queue.
  int any = -1;
  for (uint32_t i = 0; i < count; ++i) {
    if ((families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) == 0) continue;
    if ((families[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) == 0) return static_cast<int>(i);
    if (any < 0) any = static_cast<int>(i);
  }
  return any;
}

DeviceInfo Describe(VkPhysicalDevice device, int index) {
  VkPhysicalDeviceDriverProperties driver{};
  driver.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
  VkPhysicalDeviceSubgroupProperties subgroup{};
  subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
  subgroup.pNext = &driver;
  VkPhysicalDeviceProperties2 props{};
  props.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
  props.pNext = &subgroup;
  vkGetPhysicalDeviceProperties2(device, &props);

  VkPhysicalDeviceVulkan11Features f11{};
  f11.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES;
  VkPhysicalDeviceVulkan12Features f12{};
  f12.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES;
  f12.pNext = &f11;
  VkPhysicalDeviceFeatures2 features{};
  features.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
  features.pNext = &f12;
  vkGetPhysicalDeviceFeatures2(device, &features);

  VkPhysicalDeviceMemoryProperties memory{};
  vkGetPhysicalDeviceMemoryProperties(device, &memory);

  DeviceInfo info;
  info.index = index;
  info.name = props.properties.deviceName;
  info.type = TypeName(props.properties.deviceType);
  info.api_version = props.properties.apiVersion;
  info.driver = absl::StrCat(driver.driverName, driver.driverInfo[0] != '\0' ? " " : "", driver.driverInfo);
  for (uint32_t h = 0; h < memory.memoryHeapCount; ++h) {
    if ((memory.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0) {
      info.device_local_bytes = std::max<uint64_t>(info.device_local_bytes, memory.memoryHeaps[h].size);
    }
  }
  info.max_buffer_bytes = props.properties.limits.maxStorageBufferRange;
  info.subgroup_size = subgroup.subgroupSize;
  info.compute = ComputeQueueFamily(device) >= 0;
  info.shader_float16 = f12.shaderFloat16 == VK_TRUE;
  info.shader_int8 = f12.shaderInt8 == VK_TRUE;
  info.storage_16bit = f11.storageBuffer16BitAccess == VK_TRUE;
  info.storage_8bit = f12.storageBuffer8BitAccess == VK_TRUE;
  info.nv_cooperative_matrix = HasExtension(device, "VK_NV_cooperative_matrix");
  return info;
}

std::string Available(const std::vector<DeviceInfo>& devices) {
  if (devices.empty()) {
    return "no Vulkan device is present (is the vendor's Vulkan driver installed, and may this process open the "
           "GPU's device nodes? The packaged systemd unit allows none until the GPU drop-in is installed: "
           "docs/deploy.md, \"GPUs\")";
  }
  std::vector<std::string> names;
  for (const DeviceInfo& d : devices) names.push_back(absl::StrCat("vulkan:", d.index, " (", d.name, ")"));
  return absl::StrCat("present: ", absl::StrJoin(names, ", "));
}

}  // namespace

absl::StatusOr<std::vector<DeviceInfo>> ListDevices() {
  AIRLOCK_ASSIGN_OR_RETURN(VkInstance instance, CreateInstance());
  absl::StatusOr<std::vector<VkPhysicalDevice>> physical = PhysicalDevices(instance);
  std::vector<DeviceInfo> out;
  if (physical.ok()) {
    for (size_t i = 0; i < physical->size(); ++i) out.push_back(Describe((*physical)[i], static_cast<int>(i)));
  }
  vkDestroyInstance(instance, nullptr);
  if (!physical.ok()) return physical.status();
  return out;
}

absl::StatusOr<int> ResolveDevice(std::string_view selector, const std::vector<DeviceInfo>& devices) {
  std::string_view rest = selector;
  if (rest.starts_with("vulkan:")) rest.remove_prefix(7);
  if (rest.empty()) return absl::InvalidArgumentError("Vulkan device selector is empty: use vulkan:N or a device name");
  if (rest.size() > 256) return absl::InvalidArgumentError("Vulkan device selector is longer than 256 characters");
  const std::string wanted(rest);
  if (std::all_of(wanted.begin(), wanted.end(), [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); })) {
    int index = 0;
    if (!absl::SimpleAtoi(wanted, &index) || index < 0 || static_cast<size_t>(index) >= devices.size()) {
      return absl::NotFoundError(absl::StrCat("Vulkan device ", wanted.size() > 10 ? "index" : wanted,
                                              " does not exist; ", Available(devices)));
    }
    return index;
  }
  const std::string lower = absl::AsciiStrToLower(wanted);
  int found = -1;
  for (const DeviceInfo& d : devices) {
    if (absl::AsciiStrToLower(d.name).find(lower) != std::string::npos) {
      if (found >= 0) {
        return absl::InvalidArgumentError(absl::StrCat("Vulkan device name '", wanted, "' matches more than one device (",
                                                       Available(devices), "); select one by index"));
      }
      found = d.index;
    }
  }
  if (found < 0) {
    return absl::NotFoundError(absl::StrCat("no Vulkan device's name contains '", wanted, "'; ", Available(devices)));
  }
  return found;
}

// ---- Buffer / Pipeline ----------------------------------------------------------------------

Buffer::~Buffer() {
  if (mapped_ != nullptr) vkUnmapMemory(device_, memory_);
  vkDestroyBuffer(device_, buffer_, nullptr);
  vkFreeMemory(device_, memory_, nullptr);
  charged_to_->fetch_sub(charged_, std::memory_order_relaxed);
}

Pipeline::~Pipeline() {
  vkDestroyPipeline(device_, pipeline_, nullptr);
  vkDestroyPipelineLayout(device_, layout_, nullptr);
  vkDestroyDescriptorSetLayout(device_, set_layout_, nullptr);
  vkDestroyShaderModule(device_, module_, nullptr);
}

// ---- Device -----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Device>> Device::Open(std::string_view selector) {
  AIRLOCK_ASSIGN_OR_RETURN(std::vector<DeviceInfo> devices, ListDevices());
  AIRLOCK_ASSIGN_OR_RETURN(int index, ResolveDevice(selector, devices));
  std::unique_ptr<Device> d(new Device());
  d->info_ = devices[static_cast<size_t>(index)];
  if (!d->info_.compute) return absl::FailedPreconditionError(absl::StrCat(d->label(), " has no compute queue"));
  if (!d->info_.storage_16bit) {
    return absl::FailedPreconditionError(absl::StrCat(d->label(), " lacks storageBuffer16BitAccess, which the shaders need"));
  }
  AIRLOCK_ASSIGN_OR_RETURN(d->instance_, CreateInstance());
  AIRLOCK_ASSIGN_OR_RETURN(std::vector<VkPhysicalDevice> physical, PhysicalDevices(d->instance_));
  if (static_cast<size_t>(index) >= physical.size()) {
    return absl::UnavailableError(absl::StrCat(d->label(), " disappeared while it was being opened"));
  }
  d->physical_ = physical[static_cast<size_t>(index)];
  d->queue_family_ = static_cast<uint32_t>(ComputeQueueFamily(d->physical_));
  vkGetPhysicalDeviceMemoryProperties(d->physical_, &d->memory_);

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queue{};
  queue.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
  queue.queueFamilyIndex = d->queue_family_;
  queue.queueCount = 1;
  queue.pQueuePriorities = &priority;
  VkPhysicalDeviceVulkan11Features f11{};
  f11.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES;
  f11.storageBuffer16BitAccess = VK_TRUE;
  VkPhysicalDeviceFeatures2 features{};
  features.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
  features.pNext = &f11;
  VkDeviceCreateInfo create{};
  create.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  create.pNext = &features;
  create.queueCreateInfoCount = 1;
  create.pQueueCreateInfos = &queue;
  AIRLOCK_RETURN_IF_ERROR(d->Check(vkCreateDevice(d->physical_, &create, nullptr, &d->device_), "vkCreateDevice"));
  vkGetDeviceQueue(d->device_, d->queue_family_, 0, &d->queue_);

  VkCommandPoolCreateInfo pool{};
  pool.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  pool.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT | VK_COMMAND_POOL_CREATE_TRANSIENT_BIT;
  pool.queueFamilyIndex = d->queue_family_;
  AIRLOCK_RETURN_IF_ERROR(d->Check(vkCreateCommandPool(d->device_, &pool, nullptr, &d->command_pool_), "vkCreateCommandPool"));
  VkFenceCreateInfo fence{};
  fence.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  AIRLOCK_RETURN_IF_ERROR(d->Check(vkCreateFence(d->device_, &fence, nullptr, &d->fence_), "vkCreateFence"));
  return d;
}

Device::~Device() {
  if (device_ != VK_NULL_HANDLE) {
    // Nothing may still run on the device when its objects go; a lost device returns at once.
    vkDeviceWaitIdle(device_);
    vkDestroyFence(device_, fence_, nullptr);
    vkDestroyCommandPool(device_, command_pool_, nullptr);
    vkDestroyDevice(device_, nullptr);
  }
  if (instance_ != VK_NULL_HANDLE) vkDestroyInstance(instance_, nullptr);
}

std::string Device::label() const { return absl::StrCat("vulkan:", info_.index, " (", info_.name, ")"); }

absl::Status Device::Check(VkResult result, std::string_view what_view) {
  const std::string what(what_view);
  if (result == VK_SUCCESS) return absl::OkStatus();
  if (result == VK_ERROR_DEVICE_LOST) {
    lost_ = true;
    return absl::UnavailableError(absl::StrCat(label(), " was lost (", what, ": VK_ERROR_DEVICE_LOST)"));
  }
  if (result == VK_ERROR_OUT_OF_DEVICE_MEMORY || result == VK_ERROR_OUT_OF_HOST_MEMORY) {
    return absl::ResourceExhaustedError(absl::StrCat(label(), ": ", what, " failed: ", ResultName(result)));
  }
  return absl::InternalError(absl::StrCat(label(), ": ", what, " failed: ", ResultName(result), " (", result, ")"));
}

absl::StatusOr<uint32_t> Device::FindMemoryType(uint32_t type_bits, VkMemoryPropertyFlags want,
                                                VkMemoryPropertyFlags avoid) {
  // First a type with everything wanted and nothing avoided, then one with what is wanted.
  for (bool strict : {true, false}) {
    for (uint32_t i = 0; i < memory_.memoryTypeCount; ++i) {
      const VkMemoryPropertyFlags f = memory_.memoryTypes[i].propertyFlags;
      if ((type_bits & (1u << i)) == 0 || (f & want) != want) continue;
      if (strict && (f & avoid) != 0) continue;
      return i;
    }
  }
  return absl::FailedPreconditionError(absl::StrCat(label(), " has no memory type with the properties a buffer needs"));
}

absl::StatusOr<std::unique_ptr<Buffer>> Device::CreateBuffer(size_t bytes, Memory memory) {
  if (lost_) return absl::UnavailableError(absl::StrCat(label(), " was lost"));
  if (bytes == 0) return absl::InvalidArgumentError("a Vulkan buffer of 0 bytes");
  VkBufferCreateInfo create{};
  create.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  create.size = bytes;
  create.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  create.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VkBuffer buffer = VK_NULL_HANDLE;
  AIRLOCK_RETURN_IF_ERROR(Check(vkCreateBuffer(device_, &create, nullptr, &buffer), "vkCreateBuffer"));
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(device_, buffer, &req);
  const bool host = memory == Memory::kHostVisible;
  absl::StatusOr<uint32_t> type =
      host ? FindMemoryType(req.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, 0)
           : FindMemoryType(req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT);
  if (!type.ok()) {
    vkDestroyBuffer(device_, buffer, nullptr);
    return type.status();
  }
  VkMemoryAllocateInfo alloc{};
  alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  alloc.allocationSize = req.size;
  alloc.memoryTypeIndex = *type;
  VkDeviceMemory mem = VK_NULL_HANDLE;
  const VkResult r = vkAllocateMemory(device_, &alloc, nullptr, &mem);
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(device_, buffer, nullptr);
    return Check(r, absl::StrCat("allocating ", bytes, " bytes of ", host ? "host-visible" : "device-local", " memory"));
  }
  void* mapped = nullptr;
  const bool mappable = (memory_.memoryTypes[*type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) != 0;
  VkResult bound = vkBindBufferMemory(device_, buffer, mem, 0);
  if (bound == VK_SUCCESS && mappable) bound = vkMapMemory(device_, mem, 0, VK_WHOLE_SIZE, 0, &mapped);
  if (bound != VK_SUCCESS) {
    vkDestroyBuffer(device_, buffer, nullptr);
    vkFreeMemory(device_, mem, nullptr);
    return Check(bound, "binding buffer memory");
  }
  const uint64_t charged = host ? 0 : req.size;
  device_local_used_.fetch_add(charged, std::memory_order_relaxed);
  return std::unique_ptr<Buffer>(new Buffer(device_, buffer, mem, bytes, mapped, &device_local_used_, charged));
}

absl::Status Device::SubmitAndWait(VkCommandBuffer cmd, std::chrono::milliseconds timeout) {
  VkSubmitInfo submit{};
  submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd;
  AIRLOCK_RETURN_IF_ERROR(Check(vkResetFences(device_, 1, &fence_), "vkResetFences"));
  AIRLOCK_RETURN_IF_ERROR(Check(vkQueueSubmit(queue_, 1, &submit, fence_), "vkQueueSubmit"));
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  const VkResult r = vkWaitForFences(device_, 1, &fence_, VK_TRUE, static_cast<uint64_t>(ns));
  if (r == VK_TIMEOUT) {
    // The work may still be running: the device cannot be trusted with new work after this.
    lost_ = true;
    return absl::DeadlineExceededError(absl::StrCat(label(), " did not finish a submission within ", timeout.count(),
                                                    " ms; the device is taken out of service"));
  }
  return Check(r, "vkWaitForFences");
}

namespace {
// A one-time command buffer, freed on every path.
class OneTimeCommands {
 public:
  OneTimeCommands(VkDevice device, VkCommandPool pool) : device_(device), pool_(pool) {}
  ~OneTimeCommands() {
    if (cmd_ != VK_NULL_HANDLE) vkFreeCommandBuffers(device_, pool_, 1, &cmd_);
  }
  VkResult Begin() {
    VkCommandBufferAllocateInfo alloc{};
    alloc.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
    alloc.commandPool = pool_;
    alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    alloc.commandBufferCount = 1;
    VkResult r = vkAllocateCommandBuffers(device_, &alloc, &cmd_);
    if (r != VK_SUCCESS) {
      cmd_ = VK_NULL_HANDLE;
      return r;
    }
    VkCommandBufferBeginInfo begin{};
    begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
    begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    return vkBeginCommandBuffer(cmd_, &begin);
  }
  VkCommandBuffer get() const { return cmd_; }

 private:
  VkDevice device_;
  VkCommandPool pool_;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
};

// What the device wrote becomes visible to the host's reads of mapped memory after the fence.
void HostReadBarrier(VkCommandBuffer cmd, VkPipelineStageFlags stage, VkAccessFlags access) {
  VkMemoryBarrier barrier{};
  barrier.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  barrier.srcAccessMask = access;
  barrier.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(cmd, stage, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &barrier, 0, nullptr, 0, nullptr);
}
}  // namespace

absl::Status Device::CopyBuffer(VkBuffer src, size_t src_offset, VkBuffer dst, size_t dst_offset, size_t bytes) {
  OneTimeCommands cmd(device_, command_pool_);
  AIRLOCK_RETURN_IF_ERROR(Check(cmd.Begin(), "vkBeginCommandBuffer"));
  VkBufferCopy region{};
  region.srcOffset = src_offset;
  region.dstOffset = dst_offset;
  region.size = bytes;
  vkCmdCopyBuffer(cmd.get(), src, dst, 1, &region);
  HostReadBarrier(cmd.get(), VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);
  AIRLOCK_RETURN_IF_ERROR(Check(vkEndCommandBuffer(cmd.get()), "vkEndCommandBuffer"));
  return SubmitAndWait(cmd.get(), std::chrono::seconds(60));
}

absl::Status Device::Upload(Buffer& buffer, const void* data, size_t bytes, size_t offset) {
  if (lost_) return absl::UnavailableError(absl::StrCat(label(), " was lost"));
  if (offset > buffer.size() || bytes > buffer.size() - offset) {
    return absl::OutOfRangeError(absl::StrCat("upload of ", bytes, " bytes at ", offset, " into a buffer of ", buffer.size()));
  }
  if (bytes == 0) return absl::OkStatus();
  if (buffer.mapped_ != nullptr) {
    std::memcpy(static_cast<uint8_t*>(buffer.mapped_) + offset, data, bytes);
    return absl::OkStatus();
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> staging, CreateBuffer(bytes, Memory::kHostVisible));
  std::memcpy(staging->mapped_, data, bytes);
  return CopyBuffer(staging->buffer_, 0, buffer.buffer_, offset, bytes);
}

absl::Status Device::Download(const Buffer& buffer, void* data, size_t bytes, size_t offset) {
  if (lost_) return absl::UnavailableError(absl::StrCat(label(), " was lost"));
  if (offset > buffer.size() || bytes > buffer.size() - offset) {
    return absl::OutOfRangeError(absl::StrCat("download of ", bytes, " bytes at ", offset, " from a buffer of ", buffer.size()));
  }
  if (bytes == 0) return absl::OkStatus();
  if (buffer.mapped_ != nullptr) {
    std::memcpy(data, static_cast<const uint8_t*>(buffer.mapped_) + offset, bytes);
    return absl::OkStatus();
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> staging, CreateBuffer(bytes, Memory::kHostVisible));
  AIRLOCK_RETURN_IF_ERROR(CopyBuffer(buffer.buffer_, offset, staging->buffer_, 0, bytes));
  std::memcpy(data, staging->mapped_, bytes);
  return absl::OkStatus();
}

absl::Status Device::Copy(const Buffer& src, size_t src_offset, Buffer& dst, size_t dst_offset, size_t bytes) {
  if (lost_) return absl::UnavailableError(absl::StrCat(label(), " was lost"));
  if (src_offset > src.size() || bytes > src.size() - src_offset || dst_offset > dst.size() ||
      bytes > dst.size() - dst_offset) {
    return absl::OutOfRangeError(absl::StrCat("copy of ", bytes, " bytes between buffers of ", src.size(), " and ", dst.size()));
  }
  if (bytes == 0) return absl::OkStatus();
  return CopyBuffer(src.buffer_, src_offset, dst.buffer_, dst_offset, bytes);
}

absl::StatusOr<std::unique_ptr<Pipeline>> Device::CreatePipeline(std::span<const uint32_t> spirv, int n_buffers,
                                                                 uint32_t push_bytes) {
  if (lost_) return absl::UnavailableError(absl::StrCat(label(), " was lost"));
  if (spirv.empty() || spirv[0] != 0x07230203u) return absl::InvalidArgumentError("not a SPIR-V module (magic number)");
  if (n_buffers < 1 || n_buffers > 16) return absl::InvalidArgumentError("a pipeline binds 1 to 16 buffers");
  if (push_bytes > 128 || push_bytes % 4 != 0) {
    return absl::InvalidArgumentError("push constants must be a multiple of 4 bytes, at most 128");
  }
  std::unique_ptr<Pipeline> p(new Pipeline(device_, n_buffers, push_bytes));
  VkShaderModuleCreateInfo module{};
  module.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
  module.codeSize = spirv.size() * sizeof(uint32_t);
  module.pCode = spirv.data();
  AIRLOCK_RETURN_IF_ERROR(Check(vkCreateShaderModule(device_, &module, nullptr, &p->module_), "vkCreateShaderModule"));

  std::vector<VkDescriptorSetLayoutBinding> bindings(static_cast<size_t>(n_buffers));
  for (int i = 0; i < n_buffers; ++i) {
    bindings[i].binding = static_cast<uint32_t>(i);
    bindings[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    bindings[i].descriptorCount = 1;
    bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo set{};
  set.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
  set.bindingCount = static_cast<uint32_t>(bindings.size());
  set.pBindings = bindings.data();
  AIRLOCK_RETURN_IF_ERROR(Check(vkCreateDescriptorSetLayout(device_, &set, nullptr, &p->set_layout_),
                                "vkCreateDescriptorSetLayout"));
  VkPushConstantRange range{};
  range.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  range.size = push_bytes;
  VkPipelineLayoutCreateInfo layout{};
  layout.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
  layout.setLayoutCount = 1;
  layout.pSetLayouts = &p->set_layout_;
  layout.pushConstantRangeCount = push_bytes > 0 ? 1 : 0;
  layout.pPushConstantRanges = push_bytes > 0 ? &range : nullptr;
  AIRLOCK_RETURN_IF_ERROR(Check(vkCreatePipelineLayout(device_, &layout, nullptr, &p->layout_), "vkCreatePipelineLayout"));
  VkComputePipelineCreateInfo create{};
  create.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
  create.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  create.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  create.stage.module = p->module_;
  create.stage.pName = "main";
  create.layout = p->layout_;
  AIRLOCK_RETURN_IF_ERROR(
      Check(vkCreateComputePipelines(device_, VK_NULL_HANDLE, 1, &create, nullptr, &p->pipeline_), "vkCreateComputePipelines"));
  return p;
}

absl::Status Device::Run(std::span<const Dispatch> dispatches, std::chrono::milliseconds timeout) {
  if (lost_) return absl::UnavailableError(absl::StrCat(label(), " was lost"));
  uint32_t n_descriptors = 0;
  for (size_t i = 0; i < dispatches.size(); ++i) {
    const Dispatch& d = dispatches[i];
    if (d.pipeline == nullptr || static_cast<int>(d.buffers.size()) != d.pipeline->n_buffers() ||
        d.push.size() != d.pipeline->push_bytes() ||
        std::any_of(d.buffers.begin(), d.buffers.end(), [](const Buffer* b) { return b == nullptr; })) {
      return absl::InvalidArgumentError(absl::StrCat("dispatch ", i, " does not match its pipeline (buffers or push constants)"));
    }
    if (d.groups_x == 0 || d.groups_y == 0 || d.groups_z == 0) {
      return absl::InvalidArgumentError(absl::StrCat("dispatch ", i, " has no workgroups"));
    }
    n_descriptors += static_cast<uint32_t>(d.buffers.size());
  }
  if (dispatches.empty()) return absl::OkStatus();

  // One descriptor pool per Run, destroyed with it (sets are small and runs are per step).
  VkDescriptorPoolSize size{};
  size.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
  size.descriptorCount = n_descriptors;
  VkDescriptorPoolCreateInfo pool_info{};
  pool_info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
  pool_info.maxSets = static_cast<uint32_t>(dispatches.size());
  pool_info.poolSizeCount = 1;
  pool_info.pPoolSizes = &size;
  VkDescriptorPool pool = VK_NULL_HANDLE;
  AIRLOCK_RETURN_IF_ERROR(Check(vkCreateDescriptorPool(device_, &pool_info, nullptr, &pool), "vkCreateDescriptorPool"));
  struct PoolGuard {
    VkDevice device;
    VkDescriptorPool pool;
    ~PoolGuard() { vkDestroyDescriptorPool(device, pool, nullptr); }
  } guard{device_, pool};

  OneTimeCommands cmd(device_, command_pool_);
  AIRLOCK_RETURN_IF_ERROR(Check(cmd.Begin(), "vkBeginCommandBuffer"));
  for (size_t i = 0; i < dispatches.size(); ++i) {
    const Dispatch& d = dispatches[i];
    VkDescriptorSetAllocateInfo alloc{};
    alloc.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
    alloc.descriptorPool = pool;
    alloc.descriptorSetCount = 1;
    alloc.pSetLayouts = &d.pipeline->set_layout_;
    VkDescriptorSet set = VK_NULL_HANDLE;
    AIRLOCK_RETURN_IF_ERROR(Check(vkAllocateDescriptorSets(device_, &alloc, &set), "vkAllocateDescriptorSets"));
    std::vector<VkDescriptorBufferInfo> infos(d.buffers.size());
    std::vector<VkWriteDescriptorSet> writes(d.buffers.size());
    for (size_t b = 0; b < d.buffers.size(); ++b) {
      infos[b].buffer = d.buffers[b]->buffer_;
      infos[b].range = VK_WHOLE_SIZE;
      writes[b].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
      writes[b].dstSet = set;
      writes[b].dstBinding = static_cast<uint32_t>(b);
      writes[b].descriptorCount = 1;
      writes[b].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[b].pBufferInfo = &infos[b];
    }
    vkUpdateDescriptorSets(device_, static_cast<uint32_t>(writes.size()), writes.data(), 0, nullptr);
    if (i > 0) {
      // Each dispatch sees the writes of the ones before it.
      VkMemoryBarrier barrier{};
      barrier.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
      barrier.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
      barrier.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
      vkCmdPipelineBarrier(cmd.get(), VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1,
                           &barrier, 0, nullptr, 0, nullptr);
    }
    vkCmdBindPipeline(cmd.get(), VK_PIPELINE_BIND_POINT_COMPUTE, d.pipeline->pipeline_);
    vkCmdBindDescriptorSets(cmd.get(), VK_PIPELINE_BIND_POINT_COMPUTE, d.pipeline->layout_, 0, 1, &set, 0, nullptr);
    if (!d.push.empty()) {
      vkCmdPushConstants(cmd.get(), d.pipeline->layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                         static_cast<uint32_t>(d.push.size()), d.push.data());
    }
    vkCmdDispatch(cmd.get(), d.groups_x, d.groups_y, d.groups_z);
  }
  HostReadBarrier(cmd.get(), VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT);
  AIRLOCK_RETURN_IF_ERROR(Check(vkEndCommandBuffer(cmd.get()), "vkEndCommandBuffer"));
  const auto start = std::chrono::steady_clock::now();
  const absl::Status done = SubmitAndWait(cmd.get(), timeout);
  busy_ns_.fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                               std::chrono::steady_clock::now() - start)
                                               .count()),
                     std::memory_order_relaxed);
  return done;
}

}  // namespace airlock::inference::vulkan

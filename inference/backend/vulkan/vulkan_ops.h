// The compute shaders of the Vulkan backend as dispatches: each op checks its shapes against the
// buffers it is given and returns a Dispatch for Device::Run, so a step records many ops into one
// submission. The SPIR-V is compiled from shaders/*.comp by glslc at build time and embedded.
//
// Thread-safety: as the Device the ops were created on.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "inference/backend/vulkan/vulkan_device.h"

namespace airlock::inference::vulkan {

class Ops {
 public:
  // Creates every pipeline on `device` (which must outlive the Ops).
  static absl::StatusOr<std::unique_ptr<Ops>> Create(Device& device);

  // y[r] = RMSNorm(x[r]) * w for `rows` rows of n floats (as cpu::RmsNorm).
  absl::StatusOr<Dispatch> RmsNorm(const Buffer& x, const Buffer& w, const Buffer& y, uint32_t rows, uint32_t n,
                                   float eps) const;

  // y[t * rows + r] = VecDot(weight row r, activation row t) for Q8_0 weights (rows x cols) and
  // m activation rows quantised to Q8_0 (kernels::QuantizeActivationRow), cols a multiple of 32.
  absl::StatusOr<Dispatch> MatMulQ8_0(const Buffer& w, const Buffer& a, const Buffer& y, uint32_t rows, uint32_t cols,
                                      uint32_t m) const;

 private:
  Ops() = default;
  std::unique_ptr<Pipeline> rms_norm_, matmul_q8_0_;
  uint32_t max_groups_ = 65535;  // maxComputeWorkGroupCount per dimension (at least 65535)
};

}  // namespace airlock::inference::vulkan

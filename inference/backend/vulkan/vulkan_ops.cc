// Vulkan ops: embedded SPIR-V, pipelines and shape-checked dispatches (vulkan_ops.h).
#include "inference/backend/vulkan/vulkan_ops.h"

#include <cstring>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference::vulkan {
namespace {

// glslc -mfmt=num: the module as comma-separated 32-bit words.
constexpr uint32_t kRmsNormSpirv[] = {
#include "rms_norm.spv.inc"
};
constexpr uint32_t kMatMulQ8_0Spirv[] = {
#include "matmul_q8_0.spv.inc"
};

template <typename T>
std::vector<uint8_t> PushBytes(const T& push) {
  std::vector<uint8_t> bytes(sizeof(T));
  std::memcpy(bytes.data(), &push, sizeof(T));
  return bytes;
}

absl::Status CheckBytes(const Buffer& b, uint64_t bytes, const char* what) {
  if (bytes > b.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " needs ", bytes, " bytes; its buffer has ", b.size()));
  }
  return absl::OkStatus();
}

constexpr uint64_t kQ8_0BlockBytes = 34;

}  // namespace

absl::StatusOr<std::unique_ptr<Ops>> Ops::Create(Device& device) {
  std::unique_ptr<Ops> ops(new Ops());
  AIRLOCK_ASSIGN_OR_RETURN(ops->rms_norm_, device.CreatePipeline(kRmsNormSpirv, 3, 12));
  AIRLOCK_ASSIGN_OR_RETURN(ops->matmul_q8_0_, device.CreatePipeline(kMatMulQ8_0Spirv, 3, 12));
  return ops;
}

absl::StatusOr<Dispatch> Ops::RmsNorm(const Buffer& x, const Buffer& w, const Buffer& y, uint32_t rows, uint32_t n,
                                      float eps) const {
  if (rows == 0 || n == 0) return absl::InvalidArgumentError("RmsNorm of an empty matrix");
  const uint64_t bytes = uint64_t{rows} * n * sizeof(float);
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(x, bytes, "RmsNorm input"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(w, uint64_t{n} * sizeof(float), "RmsNorm weight"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(y, bytes, "RmsNorm output"));
  struct {
    uint32_t n, rows;
    float eps;
  } push{n, rows, eps};
  Dispatch d;
  d.pipeline = rms_norm_.get();
  d.buffers = {&x, &w, &y};
  d.push = PushBytes(push);
  // Rows beyond one dimension's limit go to the second (the shader folds y into the row index).
  d.groups_x = rows < max_groups_ ? rows : max_groups_;
  d.groups_y = (rows + d.groups_x - 1) / d.groups_x;
  return d;
}

absl::StatusOr<Dispatch> Ops::MatMulQ8_0(const Buffer& w, const Buffer& a, const Buffer& y, uint32_t rows,
                                         uint32_t cols, uint32_t m) const {
  if (rows == 0 || cols == 0 || m == 0) return absl::InvalidArgumentError("MatMulQ8_0 of an empty matrix");
  if (cols % 32 != 0) return absl::InvalidArgumentError(absl::StrCat("Q8_0 rows need a multiple of 32 columns, not ", cols));
  if (rows > max_groups_ || m > max_groups_) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulQ8_0 takes at most ", max_groups_, " rows and activation rows"));
  }
  const uint32_t blocks = cols / 32;
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(w, uint64_t{rows} * blocks * kQ8_0BlockBytes, "Q8_0 weights"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(a, uint64_t{m} * blocks * kQ8_0BlockBytes, "Q8_0 activations"));
  AIRLOCK_RETURN_IF_ERROR(CheckBytes(y, uint64_t{m} * rows * sizeof(float), "MatMulQ8_0 output"));
  struct {
    uint32_t blocks, rows, m;
  } push{blocks, rows, m};
  Dispatch d;
  d.pipeline = matmul_q8_0_.get();
  d.buffers = {&w, &a, &y};
  d.push = PushBytes(push);
  d.groups_x = rows;
  d.groups_y = m;
  return d;
}

}  // namespace airlock::inference::vulkan

// Reader for GGUF v2/v3 model files: metadata key/values and the tensor directory, validated
// against the file before anything is used. Tensor data stays in the read-only mapping.
//
// Thread-safety: immutable after Open(); any thread may read concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/base/mapped_file.h"
#include "inference/base/tensor_type.h"

namespace airlock::inference {

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

const char* GgufValueTypeName(GgufValueType type);

// One metadata value. Strings and array payloads point into the file mapping (valid while the
// GgufFile lives).
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  // Scalars: integers widen into `integer` (signed types) or `unsigned_integer`; floats into `real`.
  int64_t integer = 0;
  uint64_t unsigned_integer = 0;
  double real = 0;
  bool boolean = false;
  std::string_view string;
  // Arrays.
  GgufValueType element_type = GgufValueType::kUint8;
  uint64_t count = 0;
  const uint8_t* raw_elements = nullptr;   // fixed-size scalar elements, little-endian, unaligned
  std::vector<std::string_view> strings;   // element_type == kString
  std::vector<GgufValue> arrays;           // element_type == kArray (nested arrays)
};

struct GgufTensorInfo {
  std::string name;
  TensorType type = TensorType::kF32;
  std::vector<int64_t> shape;  // ggml order: shape[0] = ne0 = elements per row (contiguous)
  int64_t n_elements = 0;
  uint64_t offset = 0;         // relative to the start of the data section
  const uint8_t* data = nullptr;
  size_t bytes = 0;

  int64_t ne(size_t i) const { return i < shape.size() ? shape[i] : 1; }
};

class GgufFile {
 public:
  // Maps and validates the file. Every error names the field and the byte offset where it failed.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an in-memory image (the caller keeps `data` alive). Used by the fuzzer and tests.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Parse(const uint8_t* data, size_t size);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& path() const { return path_; }
  size_t file_size() const { return size_; }
  // The whole file as mapped (what the model's weights are read from): for verifying its digest.
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* Find(std::string_view key) const;
  bool Has(std::string_view key) const { return Find(key) != nullptr; }

  // Typed getters: NotFound when the key is absent, InvalidArgument (naming the key, the expected
  // and the actual type) when it has another type or the value does not fit.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<uint32_t> GetU32(std::string_view key) const;  // any integer type that fits
  absl::StatusOr<uint64_t> GetU64(std::string_view key) const;
  absl::StatusOr<int64_t> GetI64(std::string_view key) const;
  absl::StatusOr<float> GetF32(std::string_view key) const;     // float32/float64
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string_view>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetF32Array(std::string_view key) const;
  absl::StatusOr<std::vector<int32_t>> GetI32Array(std::string_view key) const;  // any int type that fits

  // Defaults for optional keys: absent -> `fallback`; present with a wrong type -> error.
  absl::StatusOr<uint32_t> GetU32Or(std::string_view key, uint32_t fallback) const;
  absl::StatusOr<float> GetF32Or(std::string_view key, float fallback) const;
  absl::StatusOr<bool> GetBoolOr(std::string_view key, bool fallback) const;
  absl::StatusOr<std::string> GetStringOr(std::string_view key, std::string fallback) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(std::string_view name) const;

 private:
  GgufFile() = default;
  absl::Status ParseAll();

  std::unique_ptr<MappedFile> mapping_;  // null when parsing a caller-owned buffer
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// The tensor type holding the most bytes, uppercase ("Q4_K" for a Q4_K_M file, "F16"), and the
// total element count of the tensors: what a model's quantisation and size are called.
std::string DominantWeightType(const GgufFile& file);
uint64_t ParameterCount(const GgufFile& file);

}  // namespace airlock::inference

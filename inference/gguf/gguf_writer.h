// Writes GGUF v3 files: metadata, tensor directory and aligned tensor data. Used by
// `airlockctl model synth`, by tests that need hand-made (and deliberately broken) files.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "inference/base/tensor_type.h"
#include "inference/gguf/gguf_file.h"

namespace airlock::inference {

// Not thread-safe; build on one thread, then Serialize()/WriteFile().
class GgufWriter {
 public:
  // Fills `out` (already sized to the tensor's byte size) with the tensor's data.
  using TensorFiller = std::function<void(uint8_t* out, size_t bytes)>;

  explicit GgufWriter(uint64_t alignment = 32) : alignment_(alignment) {}

  void SetString(const std::string& key, const std::string& value);
  void SetU32(const std::string& key, uint32_t value);
  void SetI32(const std::string& key, int32_t value);
  void SetU64(const std::string& key, uint64_t value);
  void SetF32(const std::string& key, float value);
  void SetBool(const std::string& key, bool value);
  void SetStringArray(const std::string& key, const std::vector<std::string>& values);
  void SetF32Array(const std::string& key, const std::vector<float>& values);
  void SetI32Array(const std::string& key, const std::vector<int32_t>& values);
  // Appends a key with an arbitrary raw encoded value (type id + payload), for hostile-file tests.
  void SetRaw(const std::string& key, uint32_t type_id, const std::string& payload);

  // `shape` in ggml order (shape[0] = row length). Data must be exactly the tensor's byte size.
  absl::Status AddTensor(const std::string& name, TensorType type, std::vector<int64_t> shape,
                         std::vector<uint8_t> data);
  // As above, with data produced at write time (keeps multi-GB synthetic models out of memory).
  absl::Status AddTensor(const std::string& name, TensorType type, std::vector<int64_t> shape,
                         TensorFiller filler);

  // The whole file image (small files: tests).
  std::string Serialize() const;
  // Streams the file to `path` (written to a temporary name, then renamed).
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    TensorType type;
    std::vector<int64_t> shape;
    size_t bytes;
    uint64_t offset;
    std::vector<uint8_t> data;
    TensorFiller filler;
  };
  void AddKey(const std::string& key, uint32_t type_id, const std::string& payload);
  absl::Status AddTensorImpl(PendingTensor t);
  std::string Header() const;

  uint64_t alignment_;
  uint64_t n_kv_ = 0;
  std::string kv_bytes_;
  std::vector<PendingTensor> tensors_;
  uint64_t data_size_ = 0;
};

}  // namespace airlock::inference

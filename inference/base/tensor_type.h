// The tensor element types a GGUF file can name (ggml's numbering), their block layout, and which
// of them our kernels can compute with.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace airlock::inference {

// Values are the on-disk ids (ggml_type). Gaps are ids ggml retired; they are rejected.
enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
};

struct TensorTypeTraits {
  const char* name;      // as llama.cpp prints it: "f32", "q4_K", ...
  int64_t block_size;    // elements per block (1 for plain types)
  size_t block_bytes;    // bytes per block
  bool computable;       // our kernels can dequantize it and use it as a weight
};

// Traits for a type id read from a file; nullopt for ids that name no type.
std::optional<TensorTypeTraits> GetTensorTypeTraits(uint32_t type_id);
// Traits for a valid enum value (never fails).
const TensorTypeTraits& Traits(TensorType type);
const char* TensorTypeName(TensorType type);

// Bytes of one row of `n` elements; nullopt when n is not a whole number of blocks.
std::optional<size_t> RowBytes(TensorType type, int64_t n);

// Parses a name as printed by TensorTypeName ("q4_K", "f16"; case-insensitive).
std::optional<TensorType> ParseTensorType(const std::string& name);

}  // namespace airlock::inference

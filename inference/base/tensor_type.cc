// Block layouts of ggml tensor types (bytes per block from ggml's block_* structs).
#include "inference/base/tensor_type.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace airlock::inference {
namespace {

struct Entry {
  uint32_t id;
  TensorTypeTraits traits;
};

// clang-format off
constexpr std::array<Entry, 31> kTypes = {{
    {0,  {"f32",     1,   4,   true}},
    {1,  {"f16",     1,   2,   true}},
    {2,  {"q4_0",    32,  18,  true}},
    {3,  {"q4_1",    32,  20,  true}},
    {6,  {"q5_0",    32,  22,  true}},
    {7,  {"q5_1",    32,  24,  true}},
    {8,  {"q8_0",    32,  34,  true}},
    {9,  {"q8_1",    32,  36,  false}},
    {10, {"q2_K",    256, 84,  false}},
    {11, {"q3_K",    256, 110, false}},
    {12, {"q4_K",    256, 144, true}},
    {13, {"q5_K",    256, 176, true}},
    {14, {"q6_K",    256, 210, true}},
    {15, {"q8_K",    256, 292, false}},
    {16, {"iq2_xxs", 256, 66,  false}},
    {17, {"iq2_xs",  256, 74,  false}},
    {18, {"iq3_xxs", 256, 98,  false}},
    {19, {"iq1_s",   256, 50,  false}},
    {20, {"iq4_nl",  32,  18,  false}},
    {21, {"iq3_s",   256, 110, false}},
    {22, {"iq2_s",   256, 82,  false}},
    {23, {"iq4_xs",  256, 136, false}},
    {24, {"i8",      1,   1,   false}},
    {25, {"i16",     1,   2,   false}},
    {26, {"i32",     1,   4,   false}},
    {27, {"i64",     1,   8,   false}},
    {28, {"f64",     1,   8,   false}},
    {29, {"iq1_m",   256, 56,  false}},
    {30, {"bf16",    1,   2,   true}},
    {34, {"tq1_0",   256, 54,  false}},
    {35, {"tq2_0",   256, 66,  false}},
}};
// clang-format on

}  // namespace

std::optional<TensorTypeTraits> GetTensorTypeTraits(uint32_t type_id) {
  for (const Entry& e : kTypes) {
    if (e.id == type_id) return e.traits;
  }
  return std::nullopt;
}

const TensorTypeTraits& Traits(TensorType type) {
  for (const Entry& e : kTypes) {
    if (e.id == static_cast<uint32_t>(type)) return e.traits;
  }
  static const TensorTypeTraits kInvalid = {"invalid", 1, 0, false};
  return kInvalid;  // unreachable for enum values declared in the header
}

const char* TensorTypeName(TensorType type) { return Traits(type).name; }

std::optional<size_t> RowBytes(TensorType type, int64_t n) {
  const TensorTypeTraits& t = Traits(type);
  if (n < 0 || t.block_bytes == 0 || n % t.block_size != 0) return std::nullopt;
  return static_cast<size_t>(n / t.block_size) * t.block_bytes;
}

std::optional<TensorType> ParseTensorType(const std::string& name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const Entry& e : kTypes) {
    std::string candidate(e.traits.name);
    std::transform(candidate.begin(), candidate.end(), candidate.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (candidate == lower) return static_cast<TensorType>(e.id);
  }
  return std::nullopt;
}

}  // namespace airlock::inference

// libFuzzer target: the GGUF reader on arbitrary bytes. Parsing must succeed or fail cleanly, and
// whatever it accepts must only point inside the input.
#include <cstddef>
#include <cstdint>

#include "inference/gguf/gguf_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = airlock::inference::GgufFile::Parse(data, size);
  if (!file.ok()) return 0;
  uint64_t sink = 0;
  for (const auto& t : (*file)->tensors()) {
    if (t.data < data || t.data + t.bytes > data + size) __builtin_trap();
    if (t.bytes > 0) sink += t.data[0] + t.data[t.bytes - 1];
  }
  for (const auto& [key, value] : (*file)->metadata()) {
    sink += key.size() + value.strings.size() + value.arrays.size();
    (void)(*file)->GetU32(key);
    (void)(*file)->GetStringArray(key);
    (void)(*file)->GetI32Array(key);
    (void)(*file)->GetF32Array(key);
  }
  return static_cast<int>(sink & 0);
}

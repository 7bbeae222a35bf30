// A compact open-addressing map from byte strings to int32 values (token text -> id, merge -> rank).
// Keys are copied into one arena, so lookups by string_view never allocate.
//
// Thread-safety: build on one thread; afterwards Find() may be called from any number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace airlock::inference {

class StringIdMap {
 public:
  static constexpr int32_t kNotFound = -1;

  // Sizes the table for `n` keys so that inserting them never rehashes.
  void Reserve(size_t n);
  // Adds `key` -> `value`. Returns false (and keeps the old value) when `key` is already present.
  bool Insert(std::string_view key, int32_t value);
  // The value stored for `key`, or kNotFound.
  int32_t Find(std::string_view key) const;
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t offset = 0;  // into arena_
    uint32_t length = 0;
    uint32_t tag = 0;     // high bits of the key's hash: skips most byte comparisons
    int32_t value = kNotFound;  // kNotFound marks an empty slot
  };
  static uint64_t Hash(std::string_view key);
  void Rehash(size_t capacity);
  size_t Probe(std::string_view key, uint64_t hash) const;  // slot holding `key`, or the empty one

  std::string arena_;
  std::vector<Slot> slots_;  // capacity is a power of two, at most half full
  size_t size_ = 0;
};

}  // namespace airlock::inference

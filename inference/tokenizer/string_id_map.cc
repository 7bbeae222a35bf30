// Open addressing with linear probing; the table stays at most half full so probes stay short.
#include "inference/tokenizer/string_id_map.h"

#include <cstring>
#include <functional>

#include "inference/base/status.h"

namespace airlock::inference {

uint64_t StringIdMap::Hash(std::string_view key) { return std::hash<std::string_view>{}(key); }

void StringIdMap::Reserve(size_t n) {
  size_t capacity = 16;
  while (capacity < 2 * n) capacity *= 2;
  if (capacity > slots_.size()) Rehash(capacity);
}

size_t StringIdMap::Probe(std::string_view key, uint64_t hash) const {
  const size_t mask = slots_.size() - 1;
  size_t i = static_cast<size_t>(hash) & mask;
  const uint32_t tag = static_cast<uint32_t>(hash >> 32);
  while (true) {
    const Slot& s = slots_[i];
    if (s.value == kNotFound) return i;
    if (s.tag == tag && s.length == key.size() &&
        std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0) {
      return i;
    }
    i = (i + 1) & mask;
  }
}

void StringIdMap::Rehash(size_t capacity) {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(capacity, Slot{});
  for (const Slot& s : old) {
    if (s.value == kNotFound) continue;
    const std::string_view key(arena_.data() + s.offset, s.length);
    slots_[Probe(key, Hash(key))] = s;
  }
}

bool StringIdMap::Insert(std::string_view key, int32_t value) {
  AIRLOCK_CHECK(value != kNotFound);
  AIRLOCK_CHECK(key.size() <= UINT32_MAX);
  if (2 * (size_ + 1) > slots_.size()) Rehash(slots_.empty() ? 16 : 2 * slots_.size());
  const uint64_t hash = Hash(key);
  const size_t i = Probe(key, hash);
  if (slots_[i].value != kNotFound) return false;
  slots_[i] = Slot{arena_.size(), static_cast<uint32_t>(key.size()), static_cast<uint32_t>(hash >> 32), value};
  arena_.append(key);
  ++size_;
  return true;
}

int32_t StringIdMap::Find(std::string_view key) const {
  if (slots_.empty()) return kNotFound;
  return slots_[Probe(key, Hash(key))].value;
}

}  // namespace airlock::inference

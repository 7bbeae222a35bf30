// GGUF v3 serialisation (little-endian), mirroring what GgufFile accepts.
#include "inference/gguf/gguf_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {
namespace {

template <typename T>
void Put(std::string& out, T value) {
  char buf[sizeof(T)];
  std::memcpy(buf, &value, sizeof(T));
  out.append(buf, sizeof(T));
}

void PutString(std::string& out, const std::string& s) {
  Put<uint64_t>(out, s.size());
  out.append(s);
}

}  // namespace

void GgufWriter::AddKey(const std::string& key, uint32_t type_id, const std::string& payload) {
  PutString(kv_bytes_, key);
  Put<uint32_t>(kv_bytes_, type_id);
  kv_bytes_.append(payload);
  ++n_kv_;
}

void GgufWriter::SetRaw(const std::string& key, uint32_t type_id, const std::string& payload) {
  AddKey(key, type_id, payload);
}

void GgufWriter::SetString(const std::string& key, const std::string& value) {
  std::string p;
  PutString(p, value);
  AddKey(key, static_cast<uint32_t>(GgufValueType::kString), p);
}

void GgufWriter::SetU32(const std::string& key, uint32_t value) {
  std::string p;
  Put(p, value);
  AddKey(key, static_cast<uint32_t>(GgufValueType::kUint32), p);
}

void GgufWriter::SetI32(const std::string& key, int32_t value) {
  std::string p;
  Put(p, value);
  AddKey(key, static_cast<uint32_t>(GgufValueType::kInt32), p);
}

void GgufWriter::SetU64(const std::string& key, uint64_t value) {
  std::string p;
  Put(p, value);
  AddKey(key, static_cast<uint32_t>(GgufValueType::kUint64), p);
}

void GgufWriter::SetF32(const std::string& key, float value) {
  std::string p;
  Put(p, value);
  AddKey(key, static_cast<uint32_t>(GgufValueType::kFloat32), p);
}

void GgufWriter::SetBool(const std::string& key, bool value) {
  std::string p;
  Put<uint8_t>(p, value ? 1 : 0);
  AddKey(key, static_cast<uint32_t>(GgufValueType::kBool), p);
}

void GgufWriter::SetStringArray(const std::string& key, const std::vector<std::string>& values) {
  std::string p;
  Put<uint32_t>(p, static_cast<uint32_t>(GgufValueType::kString));
  Put<uint64_t>(p, values.size());
  for (const std::string& v : values) PutString(p, v);
  AddKey(key, static_cast<uint32_t>(GgufValueType::kArray), p);
}

void GgufWriter::SetF32Array(const std::string& key, const std::vector<float>& values) {
  std::string p;
  Put<uint32_t>(p, static_cast<uint32_t>(GgufValueType::kFloat32));
  Put<uint64_t>(p, values.size());
  for (float v : values) Put(p, v);
  AddKey(key, static_cast<uint32_t>(GgufValueType::kArray), p);
}

void GgufWriter::SetI32Array(const std::string& key, const std::vector<int32_t>& values) {
  std::string p;
  Put<uint32_t>(p, static_cast<uint32_t>(GgufValueType::kInt32));
  Put<uint64_t>(p, values.size());
  for (int32_t v : values) Put(p, v);
  AddKey(key, static_cast<uint32_t>(GgufValueType::kArray), p);
}

absl::Status GgufWriter::AddTensorImpl(PendingTensor t) {
  if (t.shape.empty() || t.shape.size() > 4) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': 1 to 4 dimensions"));
  }
  int64_t n = 1;
  for (int64_t d : t.shape) {
    if (d <= 0) return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': bad shape"));
    n *= d;
  }
  const std::optional<size_t> row = RowBytes(t.type, t.shape[0]);
  if (!row) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': row of ", t.shape[0],
                                                   " is not a whole number of ",
                                                   TensorTypeName(t.type), " blocks"));
  }
  t.bytes = *row * static_cast<size_t>(n / t.shape[0]);
  if (!t.filler && t.data.size() != t.bytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': ", t.data.size(),
                                                   " data bytes, expected ", t.bytes));
  }
  t.offset = data_size_;
  data_size_ += (t.bytes + alignment_ - 1) / alignment_ * alignment_;
  tensors_.push_back(std::move(t));
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(const std::string& name, TensorType type,
                                   std::vector<int64_t> shape, std::vector<uint8_t> data) {
  return AddTensorImpl({name, type, std::move(shape), 0, 0, std::move(data), nullptr});
}

absl::Status GgufWriter::AddTensor(const std::string& name, TensorType type,
                                   std::vector<int64_t> shape, TensorFiller filler) {
  return AddTensorImpl({name, type, std::move(shape), 0, 0, {}, std::move(filler)});
}

std::string GgufWriter::Header() const {
  std::string out;
  out.append("GGUF", 4);
  Put<uint32_t>(out, 3);
  Put<uint64_t>(out, tensors_.size());
  Put<uint64_t>(out, n_kv_);
  out.append(kv_bytes_);
  for (const PendingTensor& t : tensors_) {
    PutString(out, t.name);
    Put<uint32_t>(out, static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) Put<uint64_t>(out, static_cast<uint64_t>(d));
    Put<uint32_t>(out, static_cast<uint32_t>(t.type));
    Put<uint64_t>(out, t.offset);
  }
  out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
  return out;
}

std::string GgufWriter::Serialize() const {
  std::string out = Header();
  const size_t data_start = out.size();
  out.resize(data_start + data_size_, '\0');
  for (const PendingTensor& t : tensors_) {
    uint8_t* dst = reinterpret_cast<uint8_t*>(out.data()) + data_start + t.offset;
    if (t.filler) {
      t.filler(dst, t.bytes);
    } else {
      std::memcpy(dst, t.data.data(), t.bytes);
    }
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create '", tmp, "': ", std::strerror(errno)));
  }
  auto fail = [&](const std::string& what) {
    const int err = errno;
    std::fclose(f);
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("writing '", tmp, "' failed (", what, "): ", std::strerror(err)));
  };
  const std::string header = Header();
  if (std::fwrite(header.data(), 1, header.size(), f) != header.size()) return fail("header");
  std::vector<uint8_t> buffer;
  uint64_t written = 0;
  for (const PendingTensor& t : tensors_) {
    if (t.offset > written) {
      const std::string pad(t.offset - written, '\0');
      if (std::fwrite(pad.data(), 1, pad.size(), f) != pad.size()) return fail("padding");
      written = t.offset;
    }
    const uint8_t* src = t.data.data();
    if (t.filler) {
      buffer.assign(t.bytes, 0);
      t.filler(buffer.data(), t.bytes);
      src = buffer.data();
    }
    if (std::fwrite(src, 1, t.bytes, f) != t.bytes) return fail(t.name);
    written += t.bytes;
  }
  if (data_size_ > written) {
    const std::string pad(data_size_ - written, '\0');
    if (std::fwrite(pad.data(), 1, pad.size(), f) != pad.size()) return fail("padding");
  }
  if (std::fflush(f) != 0) return fail("flush");
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("closing '", tmp, "' failed: ", std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("renaming to '", path, "' failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace airlock::inference

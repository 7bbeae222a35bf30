// GGUF parsing with every length, count and offset checked against the bytes that remain.
#include "inference/gguf/gguf_file.h"

#include <cctype>
#include <cstring>
#include <map>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr size_t kMaxDims = 4;           // ggml tensors have at most 4 dimensions
constexpr size_t kMaxTensorName = 63;    // ggml's GGML_MAX_NAME (64) including the NUL
constexpr int kMaxArrayDepth = 8;        // nested arrays beyond this are refused (stack safety)
constexpr uint64_t kMaxAlignment = 1u << 20;

size_t ScalarSize(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

bool IsValidValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// A bounds-checked little-endian cursor over the file image. Every read names what it reads so
// that errors say which field failed and where.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(what, sizeof(T));
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  absl::StatusOr<std::string_view> ReadString(std::string_view what) {
    const size_t at = pos_;
    AIRLOCK_ASSIGN_OR_RETURN(uint64_t length, Read<uint64_t>(what));
    if (length > remaining()) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF: ", ToAbsl(what), " at offset ", at, " has length ", length, " but only ",
                       remaining(), " bytes remain in the file"));
    }
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(length));
    pos_ += static_cast<size_t>(length);
    return s;
  }

  // Reserves `bytes` for a raw array payload and returns its start.
  absl::StatusOr<const uint8_t*> Take(uint64_t bytes, std::string_view what) {
    if (bytes > remaining()) return Truncated(what, bytes);
    const uint8_t* p = data_ + pos_;
    pos_ += static_cast<size_t>(bytes);
    return p;
  }

 private:
  absl::Status Truncated(std::string_view what, uint64_t need) const {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: file truncated reading ", ToAbsl(what),
                                                   " at offset ", pos_, ": need ", need,
                                                   " bytes, ", remaining(), " remain"));
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

absl::Status ReadValue(Cursor& cur, GgufValueType type, const std::string& what, int depth,
                       GgufValue& out);

absl::Status ReadArray(Cursor& cur, const std::string& what, int depth, GgufValue& out) {
  if (depth >= kMaxArrayDepth) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: ", ToAbsl(what), " at offset ", cur.offset(),
                                                   ": arrays nested deeper than ", kMaxArrayDepth));
  }
  const size_t at = cur.offset();
  AIRLOCK_ASSIGN_OR_RETURN(uint32_t elem_type, cur.Read<uint32_t>(what + " element type"));
  if (!IsValidValueType(elem_type)) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: ", ToAbsl(what), " at offset ", at,
                                                   ": unknown array element type ", elem_type));
  }
  AIRLOCK_ASSIGN_OR_RETURN(uint64_t count, cur.Read<uint64_t>(what + " element count"));
  out.element_type = static_cast<GgufValueType>(elem_type);
  out.count = count;
  const size_t scalar = ScalarSize(out.element_type);
  if (scalar != 0) {
    if (count > cur.remaining() / scalar) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF: ", ToAbsl(what), " at offset ", at, " claims ", count, " elements of ", scalar,
          " bytes but only ", cur.remaining(), " bytes remain in the file"));
    }
    AIRLOCK_ASSIGN_OR_RETURN(out.raw_elements, cur.Take(count * scalar, what));
    if (out.element_type == GgufValueType::kBool) {
      for (uint64_t i = 0; i < count; ++i) {
        if (out.raw_elements[i] > 1) {
          return absl::InvalidArgumentError(absl::StrCat("GGUF: ", ToAbsl(what), " element ", i,
                                                         " is not a valid bool (", out.raw_elements[i], ")"));
        }
      }
    }
    return absl::OkStatus();
  }
  // Strings take at least 8 bytes each and nested arrays at least 12: bound the count by the file
  // before reserving anything.
  const uint64_t min_size = out.element_type == GgufValueType::kString ? 8 : 12;
  if (count > cur.remaining() / min_size) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: ", ToAbsl(what), " at offset ", at, " claims ",
                                                   count, " elements but only ", cur.remaining(),
                                                   " bytes remain in the file"));
  }
  if (out.element_type == GgufValueType::kString) {
    out.strings.reserve(static_cast<size_t>(count));
    for (uint64_t i = 0; i < count; ++i) {
      AIRLOCK_ASSIGN_OR_RETURN(std::string_view s,
                               cur.ReadString(absl::StrCat(what, " element ", i)));
      out.strings.push_back(s);
    }
    return absl::OkStatus();
  }
  out.arrays.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    GgufValue inner;
    AIRLOCK_RETURN_IF_ERROR(ReadValue(cur, GgufValueType::kArray, absl::StrCat(what, "[", i, "]"),
                                      depth + 1, inner));
    out.arrays.push_back(std::move(inner));
  }
  return absl::OkStatus();
}

absl::Status ReadValue(Cursor& cur, GgufValueType type, const std::string& what, int depth,
                       GgufValue& out) {
  out.type = type;
  switch (type) {
    case GgufValueType::kUint8: {
      AIRLOCK_ASSIGN_OR_RETURN(uint8_t v, cur.Read<uint8_t>(what));
      out.unsigned_integer = v;
      out.integer = v;
      return absl::OkStatus();
    }
    case GgufValueType::kInt8: {
      AIRLOCK_ASSIGN_OR_RETURN(int8_t v, cur.Read<int8_t>(what));
      out.integer = v;
      return absl::OkStatus();
    }
    case GgufValueType::kUint16: {
      AIRLOCK_ASSIGN_OR_RETURN(uint16_t v, cur.Read<uint16_t>(what));
      out.unsigned_integer = v;
      out.integer = v;
      return absl::OkStatus();
    }
    case GgufValueType::kInt16: {
      AIRLOCK_ASSIGN_OR_RETURN(int16_t v, cur.Read<int16_t>(what));
      out.integer = v;
      return absl::OkStatus();
    }
    case GgufValueType::kUint32: {
      AIRLOCK_ASSIGN_OR_RETURN(uint32_t v, cur.Read<uint32_t>(what));
      out.unsigned_integer = v;
      out.integer = v;
      return absl::OkStatus();
    }
    case GgufValueType::kInt32: {
      AIRLOCK_ASSIGN_OR_RETURN(int32_t v, cur.Read<int32_t>(what));
      out.integer = v;
      return absl::OkStatus();
    }
    case GgufValueType::kUint64: {
      AIRLOCK_ASSIGN_OR_RETURN(uint64_t v, cur.Read<uint64_t>(what));
      out.unsigned_integer = v;
      out.integer = static_cast<int64_t>(v);  // only meaningful when it fits; getters check
      return absl::OkStatus();
    }
    case GgufValueType::kInt64: {
      AIRLOCK_ASSIGN_OR_RETURN(int64_t v, cur.Read<int64_t>(what));
      out.integer = v;
      return absl::OkStatus();
    }
    case GgufValueType::kFloat32: {
      AIRLOCK_ASSIGN_OR_RETURN(float v, cur.Read<float>(what));
      out.real = v;
      return absl::OkStatus();
    }
    case GgufValueType::kFloat64: {
      AIRLOCK_ASSIGN_OR_RETURN(double v, cur.Read<double>(what));
      out.real = v;
      return absl::OkStatus();
    }
    case GgufValueType::kBool: {
      const size_t at = cur.offset();
      AIRLOCK_ASSIGN_OR_RETURN(uint8_t v, cur.Read<uint8_t>(what));
      if (v > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("GGUF: ", ToAbsl(what), " at offset ", at, " is not a valid bool (", v, ")"));
      }
      out.boolean = v != 0;
      return absl::OkStatus();
    }
    case GgufValueType::kString: {
      AIRLOCK_ASSIGN_OR_RETURN(out.string, cur.ReadString(what));
      return absl::OkStatus();
    }
    case GgufValueType::kArray:
      return ReadArray(cur, what, depth, out);
  }
  return absl::InvalidArgumentError(absl::StrCat("GGUF: ", ToAbsl(what), ": unknown value type"));
}

bool IsSignedInt(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}
bool IsUnsignedInt(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 ||
         t == GgufValueType::kUint32 || t == GgufValueType::kUint64;
}

absl::Status WrongType(std::string_view key, std::string_view expected, GgufValueType actual) {
  return absl::InvalidArgumentError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' should be ",
                                                 ToAbsl(expected), " but is ", GgufValueTypeName(actual)));
}

// Reads one integer element (of any integer type) from a raw array payload.
bool ReadIntElement(const GgufValue& v, uint64_t i, int64_t* out_signed, uint64_t* out_unsigned) {
  const uint8_t* p = v.raw_elements + i * ScalarSize(v.element_type);
  switch (v.element_type) {
    case GgufValueType::kUint8: *out_unsigned = *p; *out_signed = *p; return true;
    case GgufValueType::kInt8: { int8_t x; std::memcpy(&x, p, 1); *out_signed = x; return true; }
    case GgufValueType::kUint16: { uint16_t x; std::memcpy(&x, p, 2); *out_unsigned = x; *out_signed = x; return true; }
    case GgufValueType::kInt16: { int16_t x; std::memcpy(&x, p, 2); *out_signed = x; return true; }
    case GgufValueType::kUint32: { uint32_t x; std::memcpy(&x, p, 4); *out_unsigned = x; *out_signed = x; return true; }
    case GgufValueType::kInt32: { int32_t x; std::memcpy(&x, p, 4); *out_signed = x; return true; }
    case GgufValueType::kUint64: { uint64_t x; std::memcpy(&x, p, 8); *out_unsigned = x; *out_signed = static_cast<int64_t>(x); return x <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()); }
    case GgufValueType::kInt64: { int64_t x; std::memcpy(&x, p, 8); *out_signed = x; return true; }
    default: return false;
  }
}

}  // namespace

const char* GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapping, MappedFile::Open(path));
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->data_ = mapping->data();
  file->size_ = mapping->size();
  file->path_ = path;
  file->mapping_ = std::move(mapping);
  absl::Status status = file->ParseAll();
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
  }
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(const uint8_t* data, size_t size) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->data_ = data;
  file->size_ = size;
  file->path_ = "<memory>";
  AIRLOCK_RETURN_IF_ERROR(file->ParseAll());
  return file;
}

absl::Status GgufFile::ParseAll() {
  if (data_ == nullptr || size_ == 0) return absl::InvalidArgumentError("GGUF: file is empty");
  Cursor cur(data_, size_);
  AIRLOCK_ASSIGN_OR_RETURN(uint32_t magic, cur.Read<uint32_t>("magic"));
  if (magic != kMagic) {
    return absl::InvalidArgumentError("GGUF: bad magic at offset 0 (not a GGUF file)");
  }
  AIRLOCK_ASSIGN_OR_RETURN(version_, cur.Read<uint32_t>("version"));
  if (version_ == 1) {
    return absl::InvalidArgumentError("GGUF: version 1 at offset 4 is not supported (only 2 and 3)");
  }
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xffff) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF: version field at offset 4 reads ", version_, ": big-endian files are not supported"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF: unsupported version ", version_, " at offset 4 (only 2 and 3)"));
  }
  AIRLOCK_ASSIGN_OR_RETURN(uint64_t n_tensors, cur.Read<uint64_t>("tensor count"));
  AIRLOCK_ASSIGN_OR_RETURN(uint64_t n_kv, cur.Read<uint64_t>("metadata count"));
  // Each key/value takes at least 12 bytes and each tensor info at least 24: reject absurd counts
  // before looping or reserving.
  if (n_kv > cur.remaining() / 12) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: metadata count ", n_kv,
                                                   " at offset 16 is larger than the file allows"));
  }
  if (n_tensors > cur.remaining() / 24) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor count ", n_tensors,
                                                   " at offset 8 is larger than the file allows"));
  }

  metadata_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    const size_t key_at = cur.offset();
    AIRLOCK_ASSIGN_OR_RETURN(std::string_view key,
                             cur.ReadString(absl::StrCat("metadata key #", i)));
    if (key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF: metadata key #", i, " at offset ", key_at, " is empty"));
    }
    const std::string key_str(key);
    const std::string what = absl::StrCat("metadata '", key_str, "'");
    if (metadata_index_.count(key_str) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF: duplicate ", what, " at offset ", key_at));
    }
    const size_t type_at = cur.offset();
    AIRLOCK_ASSIGN_OR_RETURN(uint32_t type, cur.Read<uint32_t>(what + " type"));
    if (!IsValidValueType(type)) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF: ", ToAbsl(what), " at offset ", type_at, " has unknown type ", type));
    }
    GgufValue value;
    AIRLOCK_RETURN_IF_ERROR(ReadValue(cur, static_cast<GgufValueType>(type), what, 0, value));
    metadata_index_.emplace(key_str, metadata_.size());
    metadata_.emplace_back(key_str, std::move(value));
  }

  if (const GgufValue* align = Find("general.alignment")) {
    if (align->type != GgufValueType::kUint32) {
      return WrongType("general.alignment", "uint32", align->type);
    }
    const uint64_t a = align->unsigned_integer;
    if (a == 0 || (a & (a - 1)) != 0 || a > kMaxAlignment) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF: general.alignment ", a, " must be a power of two no larger than ", kMaxAlignment));
    }
    alignment_ = a;
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const size_t info_at = cur.offset();
    GgufTensorInfo info;
    AIRLOCK_ASSIGN_OR_RETURN(std::string_view name,
                             cur.ReadString(absl::StrCat("tensor #", i, " name")));
    info.name = std::string(name);
    const std::string what = absl::StrCat("tensor '", info.name, "' (#", i, ", info at offset ",
                                          info_at, ")");
    if (info.name.empty() || info.name.size() > kMaxTensorName) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: ", ToAbsl(what), ": name length ",
                                                     info.name.size(), " not in 1..", kMaxTensorName));
    }
    if (tensor_index_.count(info.name) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: duplicate ", what));
    }
    AIRLOCK_ASSIGN_OR_RETURN(uint32_t n_dims, cur.Read<uint32_t>(what + " dimension count"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF: ", ToAbsl(what), ": dimension count ", n_dims, " not in 1..", kMaxDims));
    }
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      AIRLOCK_ASSIGN_OR_RETURN(uint64_t dim, cur.Read<uint64_t>(what + " dimension"));
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError(
            absl::StrCat("GGUF: ", ToAbsl(what), ": dimension ", d, " has invalid size ", dim));
      }
      const int64_t sdim = static_cast<int64_t>(dim);
      if (n_elements > std::numeric_limits<int64_t>::max() / sdim) {
        return absl::InvalidArgumentError(
            absl::StrCat("GGUF: ", ToAbsl(what), ": element count overflows"));
      }
      n_elements *= sdim;
      info.shape.push_back(sdim);
    }
    info.n_elements = n_elements;
    AIRLOCK_ASSIGN_OR_RETURN(uint32_t type_id, cur.Read<uint32_t>(what + " type"));
    const std::optional<TensorTypeTraits> traits = GetTensorTypeTraits(type_id);
    if (!traits) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF: ", ToAbsl(what), ": unknown tensor type id ", type_id));
    }
    info.type = static_cast<TensorType>(type_id);
    if (info.shape[0] % traits->block_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF: ", ToAbsl(what), ": row length ", info.shape[0], " is not a multiple of the ",
          traits->name, " block size ", traits->block_size));
    }
    const uint64_t blocks = static_cast<uint64_t>(n_elements / traits->block_size);
    if (blocks > std::numeric_limits<uint64_t>::max() / traits->block_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: ", ToAbsl(what), ": byte size overflows"));
    }
    info.bytes = static_cast<size_t>(blocks * traits->block_bytes);
    AIRLOCK_ASSIGN_OR_RETURN(info.offset, cur.Read<uint64_t>(what + " data offset"));
    if (info.offset % alignment_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: ", ToAbsl(what), ": data offset ", info.offset,
                                                     " is not a multiple of the alignment ",
                                                     alignment_));
    }
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }

  // The data section starts at the next multiple of the alignment after the header.
  const uint64_t header_end = cur.offset();
  const uint64_t data_start = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (!tensors_.empty() && data_start > size_) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: data section would start at offset ",
                                                   data_start, ", past the end of the file (",
                                                   size_, " bytes)"));
  }
  const uint64_t data_size = data_start <= size_ ? size_ - data_start : 0;
  for (GgufTensorInfo& t : tensors_) {
    if (t.offset > data_size || t.bytes > data_size - t.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF: tensor '", t.name, "' data [", data_start + t.offset, ", +", t.bytes,
          ") runs past the end of the file (", size_, " bytes)"));
    }
    t.data = data_ + data_start + t.offset;
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(std::string(key));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is missing"));
  if (v->type != GgufValueType::kString) return WrongType(key, "a string", v->type);
  return std::string(v->string);
}

absl::StatusOr<uint64_t> GgufFile::GetU64(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is missing"));
  if (IsUnsignedInt(v->type)) return v->unsigned_integer;
  if (IsSignedInt(v->type)) {
    if (v->integer < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is negative (", v->integer, ")"));
    }
    return static_cast<uint64_t>(v->integer);
  }
  return WrongType(key, "an integer", v->type);
}

absl::StatusOr<uint32_t> GgufFile::GetU32(std::string_view key) const {
  AIRLOCK_ASSIGN_OR_RETURN(uint64_t v, GetU64(key));
  if (v > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' value ", v, " does not fit in 32 bits"));
  }
  return static_cast<uint32_t>(v);
}

absl::StatusOr<int64_t> GgufFile::GetI64(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is missing"));
  if (IsSignedInt(v->type)) return v->integer;
  if (IsUnsignedInt(v->type)) {
    if (v->unsigned_integer > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is too large"));
    }
    return static_cast<int64_t>(v->unsigned_integer);
  }
  return WrongType(key, "an integer", v->type);
}

absl::StatusOr<float> GgufFile::GetF32(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is missing"));
  if (v->type != GgufValueType::kFloat32 && v->type != GgufValueType::kFloat64) {
    return WrongType(key, "a float", v->type);
  }
  return static_cast<float>(v->real);
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is missing"));
  if (v->type != GgufValueType::kBool) return WrongType(key, "a bool", v->type);
  return v->boolean;
}

absl::StatusOr<std::vector<std::string_view>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is missing"));
  if (v->type != GgufValueType::kArray || v->element_type != GgufValueType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' should be an array of strings"));
  }
  return v->strings;
}

absl::StatusOr<std::vector<float>> GgufFile::GetF32Array(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is missing"));
  if (v->type != GgufValueType::kArray ||
      (v->element_type != GgufValueType::kFloat32 && v->element_type != GgufValueType::kFloat64)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' should be an array of floats"));
  }
  std::vector<float> out(static_cast<size_t>(v->count));
  for (uint64_t i = 0; i < v->count; ++i) {
    if (v->element_type == GgufValueType::kFloat32) {
      std::memcpy(&out[i], v->raw_elements + 4 * i, 4);
    } else {
      double d;
      std::memcpy(&d, v->raw_elements + 8 * i, 8);
      out[i] = static_cast<float>(d);
    }
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> GgufFile::GetI32Array(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' is missing"));
  if (v->type != GgufValueType::kArray ||
      !(IsSignedInt(v->element_type) || IsUnsignedInt(v->element_type))) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' should be an array of integers"));
  }
  std::vector<int32_t> out(static_cast<size_t>(v->count));
  for (uint64_t i = 0; i < v->count; ++i) {
    int64_t s = 0;
    uint64_t u = 0;
    if (!ReadIntElement(*v, i, &s, &u) || s < std::numeric_limits<int32_t>::min() ||
        s > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: metadata key '", ToAbsl(key), "' element ", i,
                                                     " does not fit in 32 bits"));
    }
    out[i] = static_cast<int32_t>(s);
  }
  return out;
}

absl::StatusOr<uint32_t> GgufFile::GetU32Or(std::string_view key, uint32_t fallback) const {
  if (!Has(key)) return fallback;
  return GetU32(key);
}

absl::StatusOr<float> GgufFile::GetF32Or(std::string_view key, float fallback) const {
  if (!Has(key)) return fallback;
  return GetF32(key);
}

absl::StatusOr<bool> GgufFile::GetBoolOr(std::string_view key, bool fallback) const {
  if (!Has(key)) return fallback;
  return GetBool(key);
}

absl::StatusOr<std::string> GgufFile::GetStringOr(std::string_view key, std::string fallback) const {
  if (!Has(key)) return fallback;
  return GetString(key);
}

std::string DominantWeightType(const GgufFile& file) {
  std::map<TensorType, uint64_t> bytes_by_type;
  for (const GgufTensorInfo& t : file.tensors()) bytes_by_type[t.type] += t.bytes;
  TensorType dominant = TensorType::kF32;
  uint64_t most = 0;
  for (const auto& [type, bytes] : bytes_by_type) {
    if (bytes > most) {
      most = bytes;
      dominant = type;
    }
  }
  std::string name = TensorTypeName(dominant);
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

uint64_t ParameterCount(const GgufFile& file) {
  uint64_t parameters = 0;
  for (const GgufTensorInfo& t : file.tensors()) parameters += static_cast<uint64_t>(t.n_elements);
  return parameters;
}

}  // namespace airlock::inference

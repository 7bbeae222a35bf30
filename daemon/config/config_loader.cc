// YAML -> DaemonConfig by protobuf reflection, the schema's rules, and the file-system checks.
//
// The YAML is first turned into a small tree of our own (YamlNode) from yaml-cpp's parser events
// rather than through YAML::Node, because YAML::Node silently keeps duplicate keys, resolves
// aliases and merge keys, and forgets whether a scalar was quoted; the event stream shows all of
// that with a position for every node.
#include "daemon/config/config_loader.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "auth/access_policy.h"
#include "auth/file_trust.h"
#include "auth/quota.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/reflection.h"
#include "inference/base/status.h"
#include "inference/chat/chat_template.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/exceptions.h"
#include "yaml-cpp/mark.h"
#include "yaml-cpp/parser.h"

namespace airlock::daemon {
namespace {

// models[].device: "cpu", or "vulkan:" and a device index or a part of a device name.
bool ValidDevice(const std::string& device) {
  if (device == "cpu") return true;
  if (!device.starts_with("vulkan:")) return false;
  const std::string_view rest = std::string_view(device).substr(7);
  if (rest.empty() || rest.size() > 128) return false;
  return std::all_of(rest.begin(), rest.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == ' ' || c == '.' || c == '_' || c == '-' ||
           c == '(' || c == ')';
  });
}


namespace pb = ::google::protobuf;
using ::airlock::v1::config::DaemonConfig;

// More errors than this are cut short: past a few dozen the file is probably not a config at all.
constexpr size_t kMaxReportedErrors = 50;
// Our schema nests three levels; anything much deeper is not a configuration.
constexpr int kMaxYamlDepth = 32;
// Values quoted in messages are shortened to this many bytes.
constexpr size_t kMaxQuotedValue = 80;

std::string FormatPosition(std::string_view file_name, const std::optional<FilePosition>& pos) {
  if (!pos.has_value()) return std::string(file_name);
  return absl::StrCat(ToAbsl(file_name), ":", pos->line, ":", pos->column);
}

// `value` in double quotes with control characters, quotes and backslashes escaped (the text is
// already known to be UTF-8), shortened when long: safe to print on a terminal or in a log line.
std::string Quote(std::string_view value) {
  std::string out = "\"";
  size_t n = std::min(value.size(), kMaxQuotedValue);
  // Do not cut a UTF-8 sequence in half.
  while (n < value.size() && n > 0 && (static_cast<unsigned char>(value[n]) & 0xC0) == 0x80) --n;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          absl::StrAppendFormat(&out, "\\x%02x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += "\"";
  if (n < value.size()) out += "...";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Text checks that come before YAML parsing.

// The position of byte `offset` of `text`, 1-based, columns in bytes (as yaml-cpp counts them).
FilePosition PositionAtOffset(std::string_view text, size_t offset) {
  FilePosition pos{1, 1};
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++pos.line;
      pos.column = 1;
    } else {
      ++pos.column;
    }
  }
  return pos;
}

// Offset of the first byte that is not part of well-formed UTF-8 (RFC 3629: no overlongs, no
// surrogates, nothing above U+10FFFF), or of a NUL byte; npos when the text is clean. NUL is
// refused because the text ends up in C strings (paths) and yaml-cpp does not expect it.
size_t FindInvalidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c == 0) return i;
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

// ---------------------------------------------------------------------------------------------
// The YAML tree.

struct YamlNode {
  enum class Kind { kNull, kScalar, kSequence, kMap };
  Kind kind = Kind::kNull;
  FilePosition pos;
  std::string scalar;  // kScalar
  // kSequence: the elements. kMap: keys and values alternating (key 0, value 0, key 1, ...).
  std::vector<YamlNode> children;
};

const char* KindName(const YamlNode& node) {
  switch (node.kind) {
    case YamlNode::Kind::kNull: return "an empty value";
    case YamlNode::Kind::kScalar: return "a scalar";
    case YamlNode::Kind::kSequence: return "a sequence";
    case YamlNode::Kind::kMap: return "a mapping";
  }
  return "?";
}

// What a node is, for "expected X, got Y": the scalar itself, or its kind.
std::string Describe(const YamlNode& node) {
  if (node.kind == YamlNode::Kind::kScalar) return Quote(node.scalar);
  return std::string(KindName(node));
}

// Thrown by TreeBuilder for YAML it refuses; caught in BuildTree.
struct RefusedYaml {
  FilePosition pos;
  std::string message;
};

FilePosition ToPosition(const YAML::Mark& mark) {
  if (mark.is_null()) return FilePosition{0, 0};
  return FilePosition{mark.line + 1, mark.column + 1};
}

// Builds a YamlNode tree from parser events, refusing what a configuration has no use for.
class TreeBuilder : public YAML::EventHandler {
 public:
  int documents() const { return documents_; }
  YamlNode& root() { return root_; }

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ > 1) {
      throw RefusedYaml{ToPosition(mark),
                        "a second YAML document; the configuration is a single document"};
    }
  }
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    CheckAnchor(mark, anchor);
    Add(YamlNode{YamlNode::Kind::kNull, ToPosition(mark), {}, {}});
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    throw RefusedYaml{ToPosition(mark),
                      "YAML aliases are not supported; write the value out in full"};
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    CheckAnchor(mark, anchor);
    CheckTag(mark, tag);
    Add(YamlNode{YamlNode::Kind::kScalar, ToPosition(mark), value, {}});
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Open(mark, tag, anchor, YamlNode::Kind::kSequence);
  }
  void OnSequenceEnd() override { stack_.pop_back(); }
  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    Open(mark, tag, anchor, YamlNode::Kind::kMap);
  }
  void OnMapEnd() override { stack_.pop_back(); }
  void OnAnchor(const YAML::Mark& mark, const std::string&) override { CheckAnchor(mark, 1); }

 private:
  static void CheckAnchor(const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (anchor != YAML::NullAnchor) {
      throw RefusedYaml{ToPosition(mark),
                        "YAML anchors are not supported; write each value out in full"};
    }
  }
  // "?" is an untagged plain node and "!" an untagged quoted one; anything else is an explicit tag
  // (!!str, !!binary, !custom), which would change how a value is read.
  static void CheckTag(const YAML::Mark& mark, const std::string& tag) {
    if (!tag.empty() && tag != "?" && tag != "!") {
      throw RefusedYaml{ToPosition(mark),
                        absl::StrCat("YAML tags are not supported (found ", Quote(tag), ")")};
    }
  }

  void Open(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
            YamlNode::Kind kind) {
    CheckAnchor(mark, anchor);
    CheckTag(mark, tag);
    if (static_cast<int>(stack_.size()) >= kMaxYamlDepth) {
      throw RefusedYaml{ToPosition(mark), absl::StrCat("YAML nested deeper than ", kMaxYamlDepth,
                                                       " levels")};
    }
    YamlNode* node = Add(YamlNode{kind, ToPosition(mark), {}, {}});
    stack_.push_back(node);
  }

  // Appends to the innermost open collection. Only that collection's vector grows, so the pointers
  // on the stack (to it and its ancestors) stay valid.
  YamlNode* Add(YamlNode node) {
    if (stack_.empty()) {
      root_ = std::move(node);
      return &root_;
    }
    stack_.back()->children.push_back(std::move(node));
    return &stack_.back()->children.back();
  }

  int documents_ = 0;
  YamlNode root_;
  std::vector<YamlNode*> stack_;
};

// Parses `text` into a tree; the error is a full "FILE:LINE:COL: message" line.
absl::StatusOr<YamlNode> BuildTree(std::string_view text, std::string_view file_name) {
  if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(FormatPosition(file_name, PositionAtOffset(text, bad)),
                     ": the file is not valid UTF-8 text (byte ",
                     absl::StrFormat("0x%02x", static_cast<unsigned char>(text[bad])), ")"));
  }
  std::istringstream in{std::string(text)};
  TreeBuilder builder;
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(builder)) {
    }
  } catch (const RefusedYaml& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(FormatPosition(file_name, e.pos), ": ", e.message));
  } catch (const YAML::Exception& e) {
    std::optional<FilePosition> pos;
    if (!e.mark.is_null()) pos = ToPosition(e.mark);
    return absl::InvalidArgumentError(
        absl::StrCat(FormatPosition(file_name, pos), ": invalid YAML: ", e.msg));
  } catch (const std::exception& e) {
    // yaml-cpp can also throw standard exceptions (e.g. bad_alloc, out_of_range on odd input).
    return absl::InvalidArgumentError(
        absl::StrCat(ToAbsl(file_name), ": invalid YAML: ", e.what()));
  }
  if (builder.documents() == 0 || builder.root().kind == YamlNode::Kind::kNull) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToAbsl(file_name), ": the configuration is empty (at least the keys tls "
                                        "and models are needed)"));
  }
  if (builder.root().kind != YamlNode::Kind::kMap) {
    return absl::InvalidArgumentError(
        absl::StrCat(FormatPosition(file_name, builder.root().pos),
                     ": the top level must be a mapping of keys (server, tls, models, ...), got ",
                     Describe(builder.root())));
  }
  return std::move(builder.root());
}

// ---------------------------------------------------------------------------------------------
// Scalars.

// Decimal digits with an optional leading '-', no leading zeros (YAML 1.1 reads "010" as octal 8
// and YAML 1.2 as 10: refusing it avoids guessing). Returns false when `text` is not of that form;
// otherwise sets *negative and *magnitude, with *overflow when it does not fit in 64 bits.
bool ParseDecimal(std::string_view text, bool* negative, uint64_t* magnitude, bool* overflow) {
  *negative = false;
  *magnitude = 0;
  *overflow = false;
  if (!text.empty() && text[0] == '-') {
    *negative = true;
    text.remove_prefix(1);
  }
  if (text.empty() || (text.size() > 1 && text[0] == '0')) return false;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (*magnitude > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      *overflow = true;
    } else {
      *magnitude = *magnitude * 10 + digit;
    }
  }
  return true;
}

// Reads a signed integer into [min, max], or returns the error message.
std::optional<std::string> ParseSigned(std::string_view text, int64_t min, int64_t max,
                                       std::string_view type_name, int64_t* out) {
  bool negative, overflow;
  uint64_t magnitude;
  if (!ParseDecimal(text, &negative, &magnitude, &overflow)) {
    return absl::StrCat("expected an integer, got ", Quote(text));
  }
  const uint64_t limit =
      negative ? static_cast<uint64_t>(-(min + 1)) + 1 : static_cast<uint64_t>(max);
  if (overflow || magnitude > limit) {
    return absl::StrCat(Quote(text), " is out of range for ", ToAbsl(type_name), " (", min, " to ",
                        max, ")");
  }
  *out = negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude);
  return std::nullopt;
}

std::optional<std::string> ParseUnsigned(std::string_view text, uint64_t max,
                                         std::string_view type_name, uint64_t* out) {
  bool negative, overflow;
  uint64_t magnitude;
  if (!ParseDecimal(text, &negative, &magnitude, &overflow) || negative) {
    return absl::StrCat("expected an unsigned integer, got ", Quote(text));
  }
  if (overflow || magnitude > max) {
    return absl::StrCat(Quote(text), " is out of range for ", ToAbsl(type_name), " (0 to ", max,
                        ")");
  }
  *out = magnitude;
  return std::nullopt;
}

std::optional<std::string> ParseFloating(std::string_view text, double max, double* out) {
  // Plain decimal notation only: SimpleAtod would also take "inf", "nan" and hex floats.
  const bool shape_ok = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E';
  });
  double value = 0;
  if (!shape_ok || !absl::SimpleAtod(ToAbsl(text), &value) || !std::isfinite(value)) {
    return absl::StrCat("expected a number, got ", Quote(text));
  }
  if (std::fabs(value) > max) return absl::StrCat(Quote(text), " is out of range");
  *out = value;
  return std::nullopt;
}

// YAML 1.2's core-schema booleans. "yes"/"no"/"on"/"off" (YAML 1.1) are refused rather than
// guessed at.
std::optional<bool> ParseBool(std::string_view text) {
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  return std::nullopt;
}

// The enum's names a file may use: all but the zero "..._UNSPECIFIED" value, which means "absent".
std::vector<std::string> EnumNames(const pb::EnumDescriptor& type) {
  std::vector<std::string> names;
  for (int i = 0; i < type.value_count(); ++i) {
    if (type.value(i)->number() != 0) names.push_back(type.value(i)->name());
  }
  return names;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// A key as it appears in a field path: itself when it is a plain identifier, else quoted.
std::string PathKey(std::string_view key) {
  const bool plain = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  return plain ? std::string(key) : Quote(key);
}

std::string JoinPath(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return absl::StrCat(ToAbsl(parent), ".", ToAbsl(key));
}

// ---------------------------------------------------------------------------------------------
// YAML tree -> message.

class Mapper {
 public:
  Mapper(std::string_view file_name, ParsedConfig::PositionMap* positions)
      : file_name_(file_name), positions_(positions) {}

  const std::vector<std::string>& errors() const { return errors_; }

  // `node` must be a mapping whose keys are `message`'s field names.
  void MapMessage(const YamlNode& node, const std::string& path, pb::Message* message) {
    if (node.kind != YamlNode::Kind::kMap) {
      Error(node.pos, path, absl::StrCat("expected a mapping, got ", Describe(node)));
      return;
    }
    const pb::Descriptor& type = *message->GetDescriptor();
    std::map<std::string, FilePosition, std::less<>> seen;
    for (size_t i = 0; i + 1 < node.children.size(); i += 2) {
      const YamlNode& key = node.children[i];
      const YamlNode& value = node.children[i + 1];
      if (key.kind != YamlNode::Kind::kScalar) {
        Error(key.pos, path.empty() ? "(top level)" : path,
              absl::StrCat("keys must be plain names, got ", KindName(key)));
        continue;
      }
      const std::string field_path = JoinPath(path, PathKey(key.scalar));
      if (auto [it, inserted] = seen.emplace(key.scalar, key.pos); !inserted) {
        Error(key.pos, field_path,
              absl::StrFormat("duplicate key (first written at line %d, column %d)",
                              it->second.line, it->second.column));
        continue;
      }
      const pb::FieldDescriptor* field = type.FindFieldByName(key.scalar);
      if (field == nullptr) {
        Error(key.pos, field_path, UnknownKeyMessage(type, path, key.scalar));
        continue;
      }
      if (value.kind == YamlNode::Kind::kNull) {
        // yaml-cpp marks an empty value where the next token starts (often the next line); the
        // key is where the reader should look.
        const YamlNode empty{YamlNode::Kind::kNull, key.pos, {}, {}};
        (*positions_)[field_path] = ParsedConfig::FieldPositions{key.pos, key.pos};
        MapField(empty, field_path, message, field);
        continue;
      }
      (*positions_)[field_path] = ParsedConfig::FieldPositions{key.pos, value.pos};
      MapField(value, field_path, message, field);
    }
  }

 private:
  void Error(const FilePosition& pos, std::string_view path, std::string_view message) {
    if (errors_.size() == kMaxReportedErrors) {
      errors_.push_back(absl::StrCat(ToAbsl(file_name_), ": too many errors; stopping here"));
    }
    if (errors_.size() > kMaxReportedErrors) return;
    errors_.push_back(absl::StrCat(FormatPosition(file_name_, pos), ": ", ToAbsl(path), ": ",
                                   ToAbsl(message)));
  }

  static std::string UnknownKeyMessage(const pb::Descriptor& type, std::string_view path,
                                       std::string_view key) {
    std::vector<std::string> known;
    std::string suggestion;
    size_t best = 3;  // suggest only names within two edits
    for (int i = 0; i < type.field_count(); ++i) {
      const std::string& name = type.field(i)->name();
      known.push_back(name);
      const size_t distance = EditDistance(absl::AsciiStrToLower(ToAbsl(key)), name);
      if (distance < best) {
        best = distance;
        suggestion = name;
      }
    }
    std::string message =
        path.empty()
            ? absl::StrCat("unknown key (known top-level keys: ", absl::StrJoin(known, ", "), ")")
            : absl::StrCat("unknown key (known keys of ", ToAbsl(path), ": ",
                           absl::StrJoin(known, ", "), ")");
    if (!suggestion.empty()) absl::StrAppend(&message, "; did you mean ", Quote(suggestion), "?");
    return message;
  }

  void MapField(const YamlNode& value, const std::string& path, pb::Message* message,
                const pb::FieldDescriptor* field) {
    const pb::Reflection& reflection = *message->GetReflection();
    if (field->is_map()) {
      // The schema has no map fields; refuse rather than half-support them.
      Error(value.pos, path, "map fields are not supported by the configuration loader");
      return;
    }
    if (const pb::OneofDescriptor* oneof = field->real_containing_oneof();
        oneof != nullptr && reflection.HasOneof(*message, oneof)) {
      Error(value.pos, path,
            absl::StrCat("only one of the fields of ", oneof->name(), " may be set"));
      return;
    }
    if (!field->is_repeated()) {
      if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        MapMessage(value, path, reflection.MutableMessage(message, field));
      } else {
        SetScalar(value, path, message, field, /*add=*/false);
      }
      return;
    }
    if (value.kind != YamlNode::Kind::kSequence) {
      Error(value.pos, path,
            absl::StrCat("expected a sequence (a list of entries written \"- ...\" or [...]), got ",
                         Describe(value)));
      return;
    }
    for (size_t i = 0; i < value.children.size(); ++i) {
      const YamlNode& element = value.children[i];
      const std::string element_path = absl::StrCat(path, "[", i, "]");
      (*positions_)[element_path] = ParsedConfig::FieldPositions{std::nullopt, element.pos};
      if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        MapMessage(element, element_path, reflection.AddMessage(message, field));
      } else {
        SetScalar(element, element_path, message, field, /*add=*/true);
      }
    }
  }

  // Sets (or, for a repeated field, appends) one scalar value.
  void SetScalar(const YamlNode& node, const std::string& path, pb::Message* message,
                 const pb::FieldDescriptor* field, bool add) {
    const pb::Reflection& r = *message->GetReflection();
    const std::string expected = ExpectedScalar(field);
    if (node.kind != YamlNode::Kind::kScalar) {
      Error(node.pos, path, absl::StrCat("expected ", expected, ", got ", Describe(node)));
      return;
    }
    const std::string& text = node.scalar;
    std::optional<std::string> error;
    switch (field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32: {
        int64_t v = 0;
        error = ParseSigned(text, std::numeric_limits<int32_t>::min(),
                            std::numeric_limits<int32_t>::max(), "a 32-bit integer", &v);
        if (!error) add ? r.AddInt32(message, field, static_cast<int32_t>(v))
                        : r.SetInt32(message, field, static_cast<int32_t>(v));
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_INT64: {
        int64_t v = 0;
        error = ParseSigned(text, std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max(), "a 64-bit integer", &v);
        if (!error) add ? r.AddInt64(message, field, v) : r.SetInt64(message, field, v);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_UINT32: {
        uint64_t v = 0;
        error = ParseUnsigned(text, std::numeric_limits<uint32_t>::max(),
                              "an unsigned 32-bit integer", &v);
        if (!error) add ? r.AddUInt32(message, field, static_cast<uint32_t>(v))
                        : r.SetUInt32(message, field, static_cast<uint32_t>(v));
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t v = 0;
        error = ParseUnsigned(text, std::numeric_limits<uint64_t>::max(),
                              "an unsigned 64-bit integer", &v);
        if (!error) add ? r.AddUInt64(message, field, v) : r.SetUInt64(message, field, v);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
        double v = 0;
        error = ParseFloating(text, std::numeric_limits<double>::max(), &v);
        if (!error) add ? r.AddDouble(message, field, v) : r.SetDouble(message, field, v);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_FLOAT: {
        double v = 0;
        error = ParseFloating(text, std::numeric_limits<float>::max(), &v);
        if (!error) add ? r.AddFloat(message, field, static_cast<float>(v))
                        : r.SetFloat(message, field, static_cast<float>(v));
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_BOOL: {
        const std::optional<bool> v = ParseBool(text);
        if (!v) {
          error = absl::StrCat("expected true or false, got ", Quote(text));
        } else {
          add ? r.AddBool(message, field, *v) : r.SetBool(message, field, *v);
        }
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_STRING:
        add ? r.AddString(message, field, text) : r.SetString(message, field, text);
        break;
      case pb::FieldDescriptor::CPPTYPE_ENUM: {
        const pb::EnumValueDescriptor* v = field->enum_type()->FindValueByName(text);
        if (v == nullptr || v->number() == 0) {
          error = absl::StrCat("unknown value ", Quote(text), " (expected one of ",
                               absl::StrJoin(EnumNames(*field->enum_type()), ", "), ")");
        } else {
          add ? r.AddEnum(message, field, v) : r.SetEnum(message, field, v);
        }
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        AIRLOCK_CHECK(false);  // MapField handles messages
    }
    if (error) Error(node.pos, path, *error);
  }

  static std::string ExpectedScalar(const pb::FieldDescriptor* field) {
    switch (field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32:
      case pb::FieldDescriptor::CPPTYPE_INT64: return "an integer";
      case pb::FieldDescriptor::CPPTYPE_UINT32:
      case pb::FieldDescriptor::CPPTYPE_UINT64: return "an unsigned integer";
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      case pb::FieldDescriptor::CPPTYPE_FLOAT: return "a number";
      case pb::FieldDescriptor::CPPTYPE_BOOL: return "true or false";
      case pb::FieldDescriptor::CPPTYPE_STRING: return "a string";
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        return absl::StrCat("one of ", absl::StrJoin(EnumNames(*field->enum_type()), ", "));
      case pb::FieldDescriptor::CPPTYPE_MESSAGE: return "a mapping";
    }
    return "a value";
  }

  std::string file_name_;
  ParsedConfig::PositionMap* positions_;
  std::vector<std::string> errors_;
};

absl::Status JoinErrors(absl::StatusCode code, const std::vector<std::string>& errors) {
  if (errors.empty()) return absl::OkStatus();
  return absl::Status(code, absl::StrJoin(errors, "\n"));
}

// ---------------------------------------------------------------------------------------------
// The schema's rules.

// Collects "POSITION: path: message" lines for one ParsedConfig.
class RuleChecker {
 public:
  explicit RuleChecker(const ParsedConfig& parsed) : parsed_(parsed) {}
  const std::vector<std::string>& errors() const { return errors_; }

  void Error(std::string_view path, std::string_view message) {
    errors_.push_back(parsed_.Describe(path, message));
  }

  // A duration key: absent is fine (the default applies); present must parse, be finite and lie in
  // [min, max].
  void CheckDuration(std::string_view path, const std::string& text, absl::Duration min,
                     absl::Duration max) {
    if (!parsed_.Has(path)) return;
    absl::Duration d;
    if (!absl::ParseDuration(text, &d) || d == absl::InfiniteDuration() ||
        d == -absl::InfiniteDuration()) {
      Error(path, absl::StrCat("expected a duration such as \"30s\", \"500ms\" or \"5m\", got ",
                               Quote(text)));
      return;
    }
    if (d < min || d > max) {
      if (max == absl::InfiniteDuration()) {
        Error(path, absl::StrCat(Quote(text), " must be positive"));
      } else {
        Error(path, absl::StrCat(Quote(text), " is out of range (", absl::FormatDuration(min),
                                 " to ", absl::FormatDuration(max), ")"));
      }
    }
  }

  // A number key whose zero means "default": when written, it must lie in [min, max].
  void CheckRange(std::string_view path, uint64_t value, uint64_t min, uint64_t max) {
    if (!parsed_.Has(path)) return;
    if (value < min || value > max) {
      if (max == std::numeric_limits<uint32_t>::max()) {
        Error(path, absl::StrCat(value, " is out of range (at least ", min,
                                 "; leave the key out for the default)"));
      } else {
        Error(path, absl::StrCat(value, " is out of range (", min, " to ", max,
                                 "; leave the key out for the default)"));
      }
    }
  }

  // `path` must be written with a non-empty value.
  bool CheckRequired(std::string_view path, const std::string& value, std::string_view what) {
    if (!value.empty()) return true;
    Error(path, parsed_.Has(path) ? absl::StrCat("must not be empty (", ToAbsl(what), ")")
                                  : absl::StrCat("is required (", ToAbsl(what), ")"));
    return false;
  }

 private:
  const ParsedConfig& parsed_;
  std::vector<std::string> errors_;
};

bool IsModelName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// "host:port", "[v6]:port"; port 0..65535.
bool IsListenAddress(std::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view host = address.substr(0, colon);
  const std::string_view port = address.substr(colon + 1);
  uint32_t port_number = 0;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(ToAbsl(port), &port_number) || port_number > 65535) {
    return false;
  }
  if (host.front() == '[') {
    return host.size() > 2 && host.back() == ']';
  }
  // An unbracketed IPv6 address is ambiguous with the port.
  return host.find_first_of(":[] \t/") == std::string_view::npos;
}

// A listen address whose host is a loopback address: 127.0.0.0/8, [::1] or localhost.
bool IsLoopbackListen(std::string_view address) {
  if (!IsListenAddress(address)) return false;
  const std::string host(address.substr(0, address.rfind(':')));
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  return host == "localhost" || host == "[::1]";
}

// Names that must be unique within one list (models, users, groups, roles): reports duplicates and
// returns the set of names.
template <typename Entries>
std::set<std::string, std::less<>> UniqueNames(const Entries& entries, std::string_view list,
                                               std::string_view noun, RuleChecker* checker,
                                               const ParsedConfig& parsed) {
  std::map<std::string, int, std::less<>> first_index;
  for (int i = 0; i < entries.size(); ++i) {
    const std::string& name = entries.Get(i).name();
    const std::string path = absl::StrCat(ToAbsl(list), "[", i, "].name");
    if (!checker->CheckRequired(path, name, absl::StrCat("the ", ToAbsl(noun), "'s name"))) {
      continue;
    }
    auto [it, inserted] = first_index.emplace(name, i);
    if (!inserted) {
      const std::string first = absl::StrCat(ToAbsl(list), "[", it->second, "].name");
      checker->Error(path, absl::StrCat("duplicate ", ToAbsl(noun), " name ", Quote(name),
                                        " (first at ", first, ", ", parsed.PositionOf(first), ")"));
    }
  }
  std::set<std::string, std::less<>> names;
  for (const auto& [name, index] : first_index) names.insert(name);
  return names;
}

// Each entry of a repeated reference field must be one of `known` (or `wildcard` when given).
void CheckReferences(const google::protobuf::RepeatedPtrField<std::string>& references,
                     std::string_view path, const std::set<std::string, std::less<>>& known,
                     std::string_view noun, std::string_view wildcard, RuleChecker* checker) {
  for (int i = 0; i < references.size(); ++i) {
    const std::string& reference = references.Get(i);
    if (!wildcard.empty() && reference == wildcard) continue;
    if (known.count(reference) != 0) continue;
    std::vector<std::string> listed(known.begin(), known.end());
    std::string hint = listed.empty() ? absl::StrCat("none is configured")
                                      : absl::StrCat("configured: ", absl::StrJoin(listed, ", "));
    if (!wildcard.empty()) absl::StrAppend(&hint, "; ", Quote(wildcard), " grants all");
    checker->Error(absl::StrCat(ToAbsl(path), "[", i, "]"),
                   absl::StrCat(Quote(reference), " is not a configured ", ToAbsl(noun), " (", hint,
                                ")"));
  }
}

std::string Mode(mode_t mode) { return absl::StrFormat("%04o", mode & 07777); }

// Opens `path` read-only and stats it. Non-blocking so that a FIFO named by mistake does not hang
// the check; the descriptor is closed again.
std::optional<std::string> StatReadableFile(const std::string& path, struct stat* st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    return absl::StrCat("cannot open ", Quote(path), ": ", std::strerror(errno));
  }
  const int rc = ::fstat(fd, st);
  const int saved_errno = errno;
  ::close(fd);
  if (rc != 0) return absl::StrCat("cannot stat ", Quote(path), ": ", std::strerror(saved_errno));
  if (!S_ISREG(st->st_mode)) return absl::StrCat(Quote(path), " is not a regular file");
  return std::nullopt;
}

}  // namespace

// -----------------------------------------------------------------------------------------------

namespace {

// The rules of one QuotaLimits (auth::QuotaRuleViolations), reported at `path`.
void CheckQuotaLimits(const airlock::v1::config::QuotaLimits& limits, const std::string& path, RuleChecker& check) {
  for (const auto& [field, problem] : auth::QuotaRuleViolations(limits)) {
    check.Error(absl::StrCat(path, ".", field), problem);
  }
}

}  // namespace

const std::vector<std::string>& ConfigurableMethods() {
  static const std::vector<std::string>* const kMethods = [] {
    auto* methods = new std::vector<std::string>(auth::ServedMethods());
    for (const char* wildcard : {"airlock.v1.Inference/*", "grpc.health.v1.Health/*", "airlock.v1.Admin/*",
                                 "openai/v1/*", "*"}) {  // "*": every method except the Admin service's, which must be named
      methods->emplace_back(wildcard);
    }
    return methods;
  }();
  return *kMethods;
}

ParsedConfig::ParsedConfig(std::string file_name, std::string source_path, DaemonConfig config,
                           PositionMap positions)
    : file_name_(std::move(file_name)),
      source_path_(std::move(source_path)),
      config_(std::move(config)),
      positions_(std::move(positions)) {}

bool ParsedConfig::Has(std::string_view field_path) const {
  return positions_.find(field_path) != positions_.end();
}

std::string ParsedConfig::PositionOf(std::string_view field_path) const {
  if (auto it = positions_.find(field_path); it != positions_.end()) {
    return FormatPosition(file_name_, it->second.value);
  }
  // Walk up "a.b[2].c" -> "a.b[2]" -> "a.b" -> "a".
  std::string_view path = field_path;
  while (true) {
    const size_t cut = path.find_last_of(".[");
    if (cut == std::string_view::npos || cut == 0) return file_name_;
    path = path.substr(0, cut);
    if (auto it = positions_.find(path); it != positions_.end()) {
      return FormatPosition(file_name_, it->second.key.has_value() ? it->second.key
                                                                   : it->second.value);
    }
  }
}

std::string ParsedConfig::Describe(std::string_view field_path, std::string_view message) const {
  return absl::StrCat(PositionOf(field_path), ": ", ToAbsl(field_path), ": ", ToAbsl(message));
}

absl::Status ValidateConfig(const ParsedConfig& parsed) {
  const DaemonConfig& config = parsed.config();
  RuleChecker check(parsed);
  const absl::Duration kForever = absl::InfiniteDuration();
  const absl::Duration kTick = absl::Nanoseconds(1);

  // server
  const auto& server = config.server();
  if (parsed.Has("server.listen") && !IsListenAddress(server.listen())) {
    check.Error("server.listen",
                absl::StrCat("expected host:port (e.g. \"127.0.0.1:7443\" or \"[::1]:7443\"; port "
                             "0 picks a free one), got ",
                             Quote(server.listen())));
  }
  if (server.plaintext()) {
    check.Error("server.plaintext",
                "Airlock has no plaintext listener; every client authenticates with a certificate "
                "over mutual TLS (configure tls: and remove this key)");
  }
  check.CheckDuration("server.drain_timeout", server.drain_timeout(), kTick, kForever);
  // Under a second refuses slow but honest clients on a busy link; over a minute lets idle
  // unauthenticated connections pile up (descriptors, metrics workers).
  check.CheckDuration("server.handshake_timeout", server.handshake_timeout(), absl::Seconds(1), absl::Seconds(60));

  // metrics
  const auto& metrics = config.metrics();
  if (parsed.Has("metrics.listen")) {
    if (!IsListenAddress(metrics.listen())) {
      check.Error("metrics.listen",
                  absl::StrCat("expected host:port (e.g. \"127.0.0.1:9464\"; port 0 picks a free one), got ",
                               Quote(metrics.listen())));
    } else if (metrics.listen() == (server.listen().empty() ? "127.0.0.1:7443" : server.listen()) &&
               !absl::EndsWith(metrics.listen(), ":0")) {
      check.Error("metrics.listen", "must differ from server.listen: the metrics endpoint is a listener of its own");
    }
  }
  if (metrics.plaintext() && !IsLoopbackListen(metrics.listen())) {
    check.Error("metrics.plaintext",
                absl::StrCat("plain HTTP is allowed only on a loopback address (127.0.0.1, [::1], localhost), "
                             "so that no other host can scrape without a certificate; metrics.listen is ",
                             Quote(metrics.listen())));
  }
  if (parsed.Has("metrics.listen") && !metrics.plaintext() && metrics.scrapers().empty()) {
    check.Error("metrics.scrapers",
                "required with HTTPS: the identities allowed to scrape, from their client certificates "
                "(e.g. [prometheus]); no other certificate may read the metrics");
  }
  for (int i = 0; i < metrics.scrapers_size(); ++i) {
    if (metrics.scrapers(i).empty()) check.Error(absl::StrCat("metrics.scrapers[", i, "]"), "must not be empty");
  }
  for (const char* key : {"metrics.cert_file", "metrics.key_file", "metrics.client_ca_file", "metrics.scrapers"}) {
    if (parsed.Has(key) && metrics.plaintext()) {
      check.Error(key, "metrics.plaintext serves plain HTTP: no certificate is used (remove one or the other)");
    }
  }
  for (const char* key :
       {"metrics.cert_file", "metrics.key_file", "metrics.client_ca_file", "metrics.port_file", "metrics.scrapers"}) {
    if (parsed.Has(key) && !parsed.Has("metrics.listen")) {
      check.Error(key, "set metrics.listen too (without it there is no metrics endpoint)");
    }
  }

  // openai
  const auto& openai = config.openai();
  if (parsed.Has("openai.listen")) {
    if (!IsListenAddress(openai.listen())) {
      check.Error("openai.listen",
                  absl::StrCat("expected host:port (e.g. \"0.0.0.0:8443\"; port 0 picks a free one), got ",
                               Quote(openai.listen())));
    } else if (!absl::EndsWith(openai.listen(), ":0") &&
               (openai.listen() == (server.listen().empty() ? "127.0.0.1:7443" : server.listen()) ||
                openai.listen() == metrics.listen())) {
      check.Error("openai.listen",
                  "must differ from server.listen and metrics.listen: the OpenAI endpoint is a listener of its own");
    }
  }
  for (const char* key : {"openai.port_file", "openai.api_keys"}) {
    if (parsed.Has(key) && !parsed.Has("openai.listen")) {
      check.Error(key, "set openai.listen too (without it there is no OpenAI endpoint)");
    }
  }

  // model_signatures
  const auto& signatures = config.model_signatures();
  if (signatures.required() && signatures.trusted_keys().empty()) {
    check.Error("model_signatures.trusted_keys",
                "required when model_signatures.required is true: the Ed25519 public keys of the publishers "
                "whose bundles this site accepts (airlockctl model keygen writes one)");
  }
  if (!signatures.required() && !signatures.trusted_keys().empty()) {
    check.Error("model_signatures.trusted_keys",
                "only used with model_signatures.required: true (set it, or remove the keys)");
  }
  for (int i = 0; i < signatures.trusted_keys_size(); ++i) {
    if (!signatures.trusted_keys(i).empty() && signatures.trusted_keys(i).front() != '/') {
      check.Error(absl::StrCat("model_signatures.trusted_keys[", i, "]"),
                  absl::StrCat("must be an absolute path, got ", Quote(signatures.trusted_keys(i))));
    }
  }

  // tls
  const auto& tls = config.tls();
  check.CheckRequired("tls.cert_file", tls.cert_file(), "PEM server certificate chain");
  check.CheckRequired("tls.key_file", tls.key_file(), "PEM private key of tls.cert_file");
  check.CheckRequired("tls.client_ca_file", tls.client_ca_file(),
                      "PEM bundle of the CAs whose client certificates are accepted");
  if (tls.crl_files_size() == 0) {
    check.Error("tls.crl_files",
                "at least one CRL is required (one per CA in client_ca_file): revocation must fail "
                "closed, so airlockd does not start without the CAs' revocation lists");
  }
  for (int i = 0; i < tls.crl_files_size(); ++i) {
    check.CheckRequired(absl::StrCat("tls.crl_files[", i, "]"), tls.crl_files(i), "a PEM CRL file");
  }
  check.CheckDuration("tls.watch_interval", tls.watch_interval(), absl::Seconds(1), absl::Hours(1));

  // audit
  const auto& audit = config.audit();
  const auto absolute = [&](std::string_view path, const std::string& value, std::string_view what) {
    if (check.CheckRequired(path, value, what) && value.front() != '/') {
      check.Error(path, absl::StrCat("must be an absolute path, got ", Quote(value)));
    }
  };
  absolute("audit.state_dir", audit.state_dir(), "directory of the daemon's state (the audit log)");
  absolute("audit.signing_key_file", audit.signing_key_file(),
           "PEM Ed25519 key signing audit checkpoints (created when absent)");
  absolute("audit.hmac_secret_file", audit.hmac_secret_file(),
           "secret keying the HMAC of prompts and outputs (created when absent)");
  check.CheckRange("audit.checkpoint_every", audit.checkpoint_every(), 1, 1000000);
  check.CheckDuration("audit.checkpoint_interval", audit.checkpoint_interval(), absl::Seconds(1), absl::Hours(1));
  check.CheckDuration("audit.retention", audit.retention(), absl::Seconds(1), kForever);
  if (parsed.Has("audit.witness_file")) {
    absolute("audit.witness_file", audit.witness_file(), "file keeping the newest signed checkpoint");
    const std::string& dir = audit.state_dir();
    if (!dir.empty() && absl::StartsWith(audit.witness_file(), absl::StrCat(absl::StripSuffix(dir, "/"), "/"))) {
      check.Error("audit.witness_file", "must be outside audit.state_dir: the witness guards the state directory");
    }
  }
  check.CheckRange("audit.refusal_records_per_minute", audit.refusal_records_per_minute(), 0, 1000000);
  if (parsed.Has("audit.sealed_text_key_file")) {
    absolute("audit.sealed_text_key_file", audit.sealed_text_key_file(),
             "32-byte AES-256 key file (leave the key out to store no text)");
  }

  // models
  if (config.models_size() == 0) {
    check.Error("models", "at least one model is required");
  }
  for (int i = 0; i < config.models_size(); ++i) {
    const auto& model = config.models(i);
    const std::string prefix = absl::StrCat("models[", i, "]");
    if (!model.name().empty() && !IsModelName(model.name())) {
      check.Error(prefix + ".name",
                  absl::StrCat(Quote(model.name()),
                               " is not a valid model name (1 to 64 characters of A-Z a-z 0-9 . _ "
                               "-)"));
    }
    if (check.CheckRequired(prefix + ".path", model.path(), "absolute path of the GGUF file") &&
        model.path().front() != '/') {
      check.Error(prefix + ".path",
                  absl::StrCat("must be an absolute path, got ", Quote(model.path())));
    }
    check.CheckRange(prefix + ".threads", model.threads(), 1, 1024);
    check.CheckRange(prefix + ".max_queue", model.max_queue(), 1, 100000);
    check.CheckRange(prefix + ".max_sequences", model.max_sequences(), 1, 256);
    check.CheckRange(prefix + ".step_tokens", model.step_tokens(), 1, 4096);
    check.CheckRange(prefix + ".kv_block_tokens", model.kv_block_tokens(), 1, 256);
    {
      // Every decoding sequence advances by one token each step, so a step must hold one token of each.
      const uint32_t sequences = model.max_sequences() != 0 ? model.max_sequences() : 16;
      // Unset, step_tokens follows max_sequences above its default (daemon_options.cc).
      const uint32_t step = model.step_tokens() != 0 ? model.step_tokens() : std::max<uint32_t>(64, sequences);
      if (sequences >= 1 && sequences <= 256 && step >= 1 && step <= 4096 && step < sequences) {
        check.Error(parsed.Has(prefix + ".step_tokens") ? prefix + ".step_tokens" : prefix + ".max_sequences",
                    absl::StrCat("step_tokens (", step, ") must be at least max_sequences (", sequences,
                                 "): every decoding sequence advances by one token in each step"));
      }
    }
    if (parsed.Has(prefix + ".kv_cache_tokens") && model.kv_cache_tokens() != 0) {
      const uint32_t block = model.kv_block_tokens() != 0 ? model.kv_block_tokens() : 16;
      if (model.kv_cache_tokens() < std::max<uint32_t>(16, block)) {
        check.Error(prefix + ".kv_cache_tokens",
                    absl::StrCat(model.kv_cache_tokens(), " is too small (at least ", std::max<uint32_t>(16, block),
                                 " tokens: one KV block of kv_block_tokens, and no fewer than 16; 0 or leave the "
                                 "key out for the default, sized from max_sequences and context_length)"));
      }
    }
    if (parsed.Has(prefix + ".device") && !ValidDevice(model.device())) {
      check.Error(prefix + ".device",
                  absl::StrCat(Quote(model.device().substr(0, 64)), " is not a device (expected cpu, vulkan:N for the "
                               "Nth Vulkan device, or vulkan:NAME for the device whose name contains NAME)"));
    }
    if (model.devices_size() > 0) {
      const std::string key = prefix + ".devices";
      if (parsed.Has(prefix + ".device")) {
        check.Error(key, "give either device (one) or devices (several), not both");
      } else if (model.devices_size() < 2) {
        check.Error(key, "lists one device: use device for one, devices for two or more");
      }
      std::set<std::string> seen;
      for (int d = 0; d < model.devices_size(); ++d) {
        const std::string& device = model.devices(d);
        if (!ValidDevice(device) || device == "cpu") {
          check.Error(absl::StrCat(key, "[", d, "]"),
                      absl::StrCat(Quote(device.substr(0, 64)), " is not a GPU (expected vulkan:N for the Nth "
                                   "Vulkan device, or vulkan:NAME for the device whose name contains NAME)"));
        } else if (!seen.insert(device).second) {
          check.Error(absl::StrCat(key, "[", d, "]"), absl::StrCat(Quote(device), " is listed twice"));
        }
      }
      if (!parsed.Has(prefix + ".placement")) {
        check.Error(key, "needs placement: replicas (a copy of the model per device) or layers (the layers "
                         "split over the devices)");
      }
    }
    if (parsed.Has(prefix + ".placement")) {
      if (model.devices_size() == 0) {
        check.Error(prefix + ".placement", "applies only to a model with devices (two or more GPUs)");
      } else if (model.placement() != "replicas" && model.placement() != "layers") {
        check.Error(prefix + ".placement",
                    absl::StrCat("unknown value ", Quote(model.placement().substr(0, 64)), " (expected replicas or layers)"));
      }
    }
    if (parsed.Has(prefix + ".prefix_cache") && model.prefix_cache() != "identity" &&
        model.prefix_cache() != "model" && model.prefix_cache() != "off") {
      check.Error(prefix + ".prefix_cache",
                  absl::StrCat("unknown value ", Quote(model.prefix_cache()),
                               " (expected identity, model or off; identity, the default, shares cached prompt "
                               "prefixes only between calls of the same identity)"));
    }
    if (parsed.Has(prefix + ".chat_template") &&
        check.CheckRequired(prefix + ".chat_template", model.chat_template(),
                            "leave the key out to recognise the template from the model")) {
      // Checked here rather than when the model loads, so that --check-config catches it.
      const std::vector<std::string>& families = inference::ChatTemplate::Names();
      if (std::find(families.begin(), families.end(), model.chat_template()) == families.end()) {
        check.Error(prefix + ".chat_template",
                    absl::StrCat(Quote(model.chat_template()), " is not a known chat template (",
                                 absl::StrJoin(families, ", "), ")"));
      }
    }
  }
  const auto model_names = UniqueNames(config.models(), "models", "model", &check, parsed);

  // access control
  const auto role_names = UniqueNames(config.roles(), "roles", "role", &check, parsed);
  const auto group_names = UniqueNames(config.groups(), "groups", "group", &check, parsed);
  UniqueNames(config.users(), "users", "user", &check, parsed);
  for (int i = 0; i < config.users_size(); ++i) {
    const std::string prefix = absl::StrCat("users[", i, "]");
    CheckReferences(config.users(i).groups(), prefix + ".groups", group_names, "group", "", &check);
    CheckReferences(config.users(i).roles(), prefix + ".roles", role_names, "role", "", &check);
    if (const std::string& issuer = config.users(i).issuer(); !issuer.empty()) {
      const bool fingerprint = issuer.rfind("sha256:", 0) == 0;
      const std::string hex = fingerprint ? issuer.substr(7) : "";
      if (fingerprint ? hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos
                      : issuer.find('=') == std::string::npos) {
        check.Error(prefix + ".issuer",
                    absl::StrCat(Quote(issuer),
                                 " is neither a CA subject (e.g. \"CN=Airlock Lab Admin CA\") nor sha256: and the "
                                 "64 lowercase hex digits of the CA certificate's SHA-256"));
      }
    }
  }
  for (int i = 0; i < config.groups_size(); ++i) {
    CheckReferences(config.groups(i).roles(), absl::StrCat("groups[", i, "].roles"), role_names,
                    "role", "", &check);
  }
  const std::vector<std::string>& methods = ConfigurableMethods();
  for (int i = 0; i < config.roles_size(); ++i) {
    const auto& role = config.roles(i);
    for (int j = 0; j < role.methods_size(); ++j) {
      if (std::find(methods.begin(), methods.end(), role.methods(j)) == methods.end()) {
        check.Error(absl::StrCat("roles[", i, "].methods[", j, "]"),
                    absl::StrCat(Quote(role.methods(j)),
                                 " is not a method airlockd serves (expected one of ",
                                 absl::StrJoin(methods, ", "), ")"));
      }
    }
    CheckReferences(role.models(), absl::StrCat("roles[", i, "].models"), model_names, "model", "*",
                    &check);
  }

  // quotas
  CheckQuotaLimits(config.quota_defaults(), "quota_defaults", check);
  for (int i = 0; i < config.users_size(); ++i) {
    CheckQuotaLimits(config.users(i).quota(), absl::StrCat("users[", i, "].quota"), check);
  }
  for (int i = 0; i < config.groups_size(); ++i) {
    CheckQuotaLimits(config.groups(i).quota(), absl::StrCat("groups[", i, "].quota"), check);
  }
  for (int i = 0; i < config.roles_size(); ++i) {
    CheckQuotaLimits(config.roles(i).quota(), absl::StrCat("roles[", i, "].quota"), check);
  }

  // limits
  const auto& limits = config.limits();
  check.CheckRange("limits.max_request_bytes", limits.max_request_bytes(), 1024, 64 << 20);
  check.CheckRange("limits.max_tokens_per_request", limits.max_tokens_per_request(), 1,
                   std::numeric_limits<uint32_t>::max());
  check.CheckRange("limits.max_concurrent_streams", limits.max_concurrent_streams(), 1,
                   std::numeric_limits<uint32_t>::max());
  check.CheckDuration("limits.max_request_duration", limits.max_request_duration(), kTick,
                      kForever);
  check.CheckDuration("limits.max_connection_age", limits.max_connection_age(), absl::Minutes(1), absl::Hours(24));

  return JoinErrors(absl::StatusCode::kInvalidArgument, check.errors());
}

namespace {

absl::StatusOr<ParsedConfig> ParseConfigText(std::string_view yaml_text,
                                             std::string_view file_name,
                                             const std::string& source_path) {
  AIRLOCK_ASSIGN_OR_RETURN(const YamlNode root, BuildTree(yaml_text, file_name));
  DaemonConfig config;
  ParsedConfig::PositionMap positions;
  Mapper mapper(file_name, &positions);
  mapper.MapMessage(root, "", &config);
  AIRLOCK_RETURN_IF_ERROR(JoinErrors(absl::StatusCode::kInvalidArgument, mapper.errors()));
  ParsedConfig parsed(std::string(file_name), source_path, std::move(config), std::move(positions));
  AIRLOCK_RETURN_IF_ERROR(ValidateConfig(parsed));
  return parsed;
}

}  // namespace

absl::StatusOr<ParsedConfig> ParseConfig(std::string_view yaml_text, std::string_view file_name) {
  return ParseConfigText(yaml_text, file_name, "");
}

absl::StatusOr<ParsedConfig> LoadConfigFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    const std::string message = absl::StrCat(path, ": cannot open: ", std::strerror(e));
    if (e == ENOENT) return absl::NotFoundError(message);
    if (e == EACCES || e == EPERM) return absl::PermissionDeniedError(message);
    return absl::FailedPreconditionError(message);
  }
  struct stat st {};
  std::string text;
  absl::Status status;
  if (::fstat(fd, &st) != 0) {
    status = absl::FailedPreconditionError(
        absl::StrCat(path, ": cannot stat: ", std::strerror(errno)));
  } else if (!S_ISREG(st.st_mode)) {
    status = absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
  } else {
    // Read up to one byte past the limit rather than trusting st_size, which /proc-like files and
    // a file being rewritten do not report faithfully.
    char buffer[16384];
    while (status.ok()) {
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n < 0) {
        if (errno == EINTR) continue;
        status = absl::FailedPreconditionError(
            absl::StrCat(path, ": cannot read: ", std::strerror(errno)));
      } else if (n == 0) {
        break;
      } else {
        text.append(buffer, static_cast<size_t>(n));
        if (text.size() > kMaxConfigFileBytes) {
          status = absl::InvalidArgumentError(absl::StrCat(
              path, ": larger than ", kMaxConfigFileBytes,
              " bytes; a configuration file is a few KiB (is this the right file?)"));
        }
      }
    }
  }
  ::close(fd);
  AIRLOCK_RETURN_IF_ERROR(status);
  // The path is kept for CheckConfigFiles' check of the file's own mode.
  return ParseConfigText(text, path, path);
}

std::vector<std::pair<std::string, std::string>> TrustAnchorFiles(const DaemonConfig& config) {
  std::vector<std::pair<std::string, std::string>> files = {{"tls.cert_file", config.tls().cert_file()},
                                                            {"tls.client_ca_file", config.tls().client_ca_file()}};
  for (int i = 0; i < config.tls().crl_files_size(); ++i) {
    files.emplace_back(absl::StrCat("tls.crl_files[", i, "]"), config.tls().crl_files(i));
  }
  if (!config.metrics().listen().empty()) {
    if (!config.metrics().cert_file().empty()) files.emplace_back("metrics.cert_file", config.metrics().cert_file());
    if (!config.metrics().client_ca_file().empty()) {
      files.emplace_back("metrics.client_ca_file", config.metrics().client_ca_file());
    }
  }
  std::erase_if(files, [](const auto& file) { return file.second.empty(); });
  return files;
}

std::string TrustAnchorWhat(std::string_view field) {
  if (field.find("crl_files") != std::string_view::npos) return "CRL file";
  if (field.find("client_ca_file") != std::string_view::npos) return "client CA file";
  return "certificate file";
}

absl::Status CheckConfigFiles(const ParsedConfig& parsed) {
  const DaemonConfig& config = parsed.config();
  std::vector<std::string> errors;
  // Checks one file; returns its stat when it is a readable regular file.
  auto check_file = [&](const std::string& field_path,
                        const std::string& file) -> std::optional<struct stat> {
    if (file.empty()) return std::nullopt;  // ValidateConfig reports missing values
    struct stat st {};
    if (std::optional<std::string> error = StatReadableFile(file, &st)) {
      errors.push_back(parsed.Describe(field_path, *error));
      return std::nullopt;
    }
    return st;
  };

  for (int i = 0; i < config.models_size(); ++i) {
    check_file(absl::StrCat("models[", i, "].path"), config.models(i).path());
  }
  const auto& tls = config.tls();
  check_file("tls.cert_file", tls.cert_file());
  for (const auto& [field, file] : {std::pair<std::string, std::string>{"metrics.cert_file", config.metrics().cert_file()},
                                    {"metrics.client_ca_file", config.metrics().client_ca_file()}}) {
    if (!file.empty()) check_file(field, file);
  }
  check_file("tls.client_ca_file", tls.client_ca_file());
  for (int i = 0; i < config.model_signatures().trusted_keys_size(); ++i) {
    check_file(absl::StrCat("model_signatures.trusted_keys[", i, "]"), config.model_signatures().trusted_keys(i));
  }
  for (int i = 0; i < tls.crl_files_size(); ++i) {
    check_file(absl::StrCat("tls.crl_files[", i, "]"), tls.crl_files(i));
  }
  // Trust anchors: whoever can write them decides who is trusted (a CA of their own, an older CRL).
  for (const auto& [field, file] : TrustAnchorFiles(config)) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) continue;  // reported by check_file above
    if (absl::Status trusted = auth::CheckTrustedFile(TrustAnchorWhat(field), file); !trusted.ok()) {
      errors.push_back(parsed.Describe(field, std::string(trusted.message())));
    }
  }
  // A TLS private key: private to the user airlockd runs as.
  auto check_private_key = [&](const std::string& field_path, const std::string& file) {
    std::optional<struct stat> st = check_file(field_path, file);
    if (!st) return;
    if ((st->st_mode & 077) != 0) {
      errors.push_back(parsed.Describe(
          field_path, absl::StrCat("private key ", Quote(file), " is accessible by group or others (mode ",
                                   Mode(st->st_mode), "); run chmod 600 ", file)));
    }
    if (st->st_uid != ::geteuid()) {
      errors.push_back(parsed.Describe(
          field_path, absl::StrCat("private key ", Quote(file), " is owned by uid ", st->st_uid, ", not by uid ",
                                   ::geteuid(), " that airlockd runs as; chown it to that user")));
    }
  };
  check_private_key("tls.key_file", tls.key_file());
  if (!config.metrics().key_file().empty()) check_private_key("metrics.key_file", config.metrics().key_file());

  // Audit secrets: created by the daemon when absent; an existing one must be private.
  const auto& audit = config.audit();
  if (!audit.sealed_text_key_file().empty()) {
    check_file("audit.sealed_text_key_file", audit.sealed_text_key_file());
  }
  for (const auto& [field, file] : {std::pair<std::string, std::string>{"audit.signing_key_file", audit.signing_key_file()},
                                    {"audit.hmac_secret_file", audit.hmac_secret_file()},
                                    {"audit.sealed_text_key_file", audit.sealed_text_key_file()}}) {
    struct stat st {};
    if (file.empty() || ::stat(file.c_str(), &st) != 0) continue;
    if ((st.st_mode & 077) != 0) {
      errors.push_back(parsed.Describe(
          field, absl::StrCat(Quote(file), " is accessible by group or others (mode ", Mode(st.st_mode),
                              "); run chmod 600 ", file)));
    }
  }

  if (!parsed.source_path().empty()) {
    struct stat st {};
    if (::stat(parsed.source_path().c_str(), &st) != 0) {
      errors.push_back(absl::StrCat(parsed.file_name(), ": cannot stat: ", std::strerror(errno)));
    } else if ((st.st_mode & S_IWOTH) != 0) {
      errors.push_back(absl::StrCat(parsed.file_name(),
                                    ": the configuration file is writable by anyone (mode ",
                                    Mode(st.st_mode), "); run chmod o-w ", parsed.source_path()));
    }
  }
  return JoinErrors(absl::StatusCode::kFailedPrecondition, errors);
}

}  // namespace airlock::daemon

// JSON Schema compiler: walks the schema once, writing each subschema as automaton fragments
// between two nodes of a GrammarBuilder (inline, so that anyOf branches and optional members are
// told apart by the determinised automaton rather than by parallel parses); $defs, array items and
// "any value" become rules of their own, which is what allows recursion.
#include "inference/sampling/json_schema.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {
namespace {

using Json = nlohmann::ordered_json;

// Keywords that only describe: accepted anywhere and without effect on the output.
bool IsAnnotation(std::string_view key) {
  static const std::set<std::string_view> kAnnotations = {"title",      "description", "$schema",
                                                          "$comment",   "default",     "examples",
                                                          "deprecated", "readOnly",    "writeOnly"};
  return kAnnotations.count(key) != 0;
}

// Keywords allowed at the root only.
bool IsRootOnly(std::string_view key) {
  return key == "$defs" || key == "definitions" || key == "$id";
}

bool IsSupported(std::string_view key) {
  static const std::set<std::string_view> kSupported = {
      "type",  "properties", "required", "additionalProperties",
      "items", "minItems",   "maxItems", "enum",
      "const", "anyOf",      "oneOf",    "$ref"};
  return kSupported.count(key) != 0;
}

// One reference token of a JSON pointer (RFC 6901: "~" -> "~0", "/" -> "~1").
std::string PointerToken(std::string_view key) {
  std::string out;
  for (const char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Child(const std::string& pointer, std::string_view key) {
  return absl::StrCat(pointer, "/", PointerToken(key));
}

// Where a pointer is shown: the empty pointer (the root) reads better as "/".
std::string Where(const std::string& pointer) { return pointer.empty() ? "/" : pointer; }

// Pointers and messages quote the schema's own names, which a caller chooses: each is cut to this
// many bytes (at a UTF-8 boundary) with its full length noted, so an error stays small.
constexpr size_t kMaxQuotedBytes = 160;

std::string Bounded(std::string_view text) {
  if (text.size() <= kMaxQuotedBytes) return std::string(text);
  size_t cut = kMaxQuotedBytes;
  while (cut > 0 && (static_cast<uint8_t>(text[cut]) & 0xC0) == 0x80) --cut;  // not inside a character
  return absl::StrCat(ToAbsl(text.substr(0, cut)), "...[", text.size(), " bytes]");
}

absl::Status Refuse(const std::string& pointer, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("JSON schema at ", Bounded(Where(pointer)), ": ", Bounded(what)));
}

}  // namespace

bool JsonNestsDeeperThan(std::string_view text, int32_t max_depth) {
  int32_t depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

namespace {

// Nesting of arrays and objects in the JSON text, checked before parsing so that neither the
// parser nor anything walking its result recurses deeper than the limit.
absl::Status CheckTextDepth(std::string_view text, int32_t max_depth) {
  if (!JsonNestsDeeperThan(text, max_depth)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("JSON schema nested more than ", max_depth, " levels deep (limit max_depth)"));
}

// The JSON type names of `type`, or an error.
absl::StatusOr<std::set<std::string>> TypeSet(const Json& type, const std::string& pointer) {
  static const std::set<std::string> kNames = {"object",  "array",   "string", "number",
                                               "integer", "boolean", "null"};
  std::set<std::string> names;
  auto add = [&](const Json& name) -> absl::Status {
    if (!name.is_string() || kNames.count(name.get<std::string>()) == 0) {
      return Refuse(pointer, absl::StrCat("unknown type ", name.dump()));
    }
    names.insert(name.get<std::string>());
    return absl::OkStatus();
  };
  if (type.is_array()) {
    if (type.empty()) return Refuse(pointer, "an empty type list has no instance");
    for (const Json& name : type) AIRLOCK_RETURN_IF_ERROR(add(name));
  } else {
    AIRLOCK_RETURN_IF_ERROR(add(type));
  }
  return names;
}

bool HasType(const Json& value, const std::set<std::string>& types) {
  if (value.is_object()) return types.count("object") != 0;
  if (value.is_array()) return types.count("array") != 0;
  if (value.is_string()) return types.count("string") != 0;
  if (value.is_boolean()) return types.count("boolean") != 0;
  if (value.is_null()) return types.count("null") != 0;
  if (types.count("number")) return true;
  if (!types.count("integer")) return false;
  if (value.is_number_integer()) return true;
  const double d = value.get<double>();
  return std::isfinite(d) && std::trunc(d) == d;
}

absl::StatusOr<int64_t> ItemCount(const Json& schema, const char* key, const std::string& pointer,
                                  int64_t limit) {
  const Json& v = schema.at(key);
  const std::string at = Child(pointer, key);
  if (!v.is_number_integer() || v.get<int64_t>() < 0) {
    return Refuse(at, absl::StrCat(key, " must be a non-negative integer"));
  }
  if (v.get<int64_t>() > limit) {
    return Refuse(at, absl::StrCat(key, " ", v.get<int64_t>(), " is above the limit of ", limit,
                                   " (limit max_array_items)"));
  }
  return v.get<int64_t>();
}

class SchemaCompiler {
 public:
  SchemaCompiler(const Json& root, const JsonSchemaLimits& limits)
      : root_(root), limits_(limits), b_(limits.grammar) {}

  absl::StatusOr<std::shared_ptr<const Grammar>> Compile() {
    const int32_t root_rule = b_.AddRule("#");
    rules_.emplace("", root_rule);
    if (root_.is_object()) {
      for (const char* defs_key : {"$defs", "definitions"}) {
        if (!root_.contains(defs_key)) continue;
        const Json& defs = root_.at(defs_key);
        const std::string at = Child("", defs_key);
        if (!defs.is_object()) return Refuse(at, "must be an object");
        if (static_cast<int64_t>(defs.size()) > limits_.max_definitions) {
          return Refuse(at, absl::StrCat("more than ", limits_.max_definitions,
                                         " definitions (limit max_definitions)"));
        }
        for (const auto& [name, def] : defs.items()) {
          const std::string pointer = Child(at, name);
          const int32_t rule = b_.AddRule("#" + pointer);
          rules_.emplace(pointer, rule);
          pending_.push_back({&def, pointer, rule});
        }
      }
    }
    AIRLOCK_RETURN_IF_ERROR(Emit(root_, "", 0, b_.RuleStart(root_rule), b_.RuleEnd(root_rule)));
    for (size_t i = 0; i < pending_.size(); ++i) {
      const Pending p = pending_[i];
      AIRLOCK_RETURN_IF_ERROR(
          Emit(*p.schema, p.pointer, 0, b_.RuleStart(p.rule), b_.RuleEnd(p.rule)));
    }
    absl::StatusOr<std::shared_ptr<const Grammar>> grammar = std::move(b_).Build(root_rule);
    if (!grammar.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("JSON schema: ", std::string(grammar.status().message())));
    }
    return grammar;
  }

  // The "any JSON object" grammar's body: an object with values of any kind.
  absl::StatusOr<std::shared_ptr<const Grammar>> CompileAnyObject() {
    const int32_t rule = b_.AddRule("json_object");
    AnyObject(b_.RuleStart(rule), b_.RuleEnd(rule));
    return std::move(b_).Build(rule);
  }

 private:
  struct Pending {
    const Json* schema;
    std::string pointer;
    int32_t rule;
  };

  int32_t Node(int32_t near) { return b_.AddNode(b_.NodeRule(near)); }

  void Byte(int32_t from, char c, int32_t to) {
    b_.AddBytes(from, static_cast<uint8_t>(c), static_cast<uint8_t>(c), to);
  }

  // Bounded whitespace: nothing, one space, or a newline and up to kMaxIndent spaces/tabs.
  void Whitespace(int32_t from, int32_t to) {
    b_.AddEpsilon(from, to);
    Byte(from, ' ', to);
    int32_t at = Node(from);
    Byte(from, '\n', at);
    b_.AddEpsilon(at, to);
    for (int i = 0; i < kMaxIndent; ++i) {
      const int32_t next = Node(from);
      Byte(at, ' ', next);
      Byte(at, '\t', next);
      b_.AddEpsilon(next, to);
      at = next;
    }
  }

  // `c` surrounded by optional whitespace.
  void Punctuation(int32_t from, char c, int32_t to) {
    const int32_t before = Node(from);
    const int32_t after = Node(from);
    Whitespace(from, before);
    Byte(before, c, after);
    Whitespace(after, to);
  }

  void Hex(int32_t from, int32_t to) {
    b_.AddBytes(from, '0', '9', to);
    b_.AddBytes(from, 'A', 'F', to);
    b_.AddBytes(from, 'a', 'f', to);
  }
  void HexRun(int32_t from, int count, int32_t to) {
    int32_t at = from;
    for (int i = 0; i < count; ++i) {
      const int32_t next = i + 1 == count ? to : Node(from);
      Hex(at, next);
      at = next;
    }
  }

  // A JSON string: UTF-8 validated byte by byte (RFC 3629: no overlong forms, no surrogates,
  // nothing past U+10FFFF), escapes with surrogates only as high-low pairs.
  void String(int32_t from, int32_t to) {
    const int32_t body = Node(from);
    Byte(from, '"', body);
    Byte(body, '"', to);
    b_.AddBytes(body, 0x20, 0x21, body);
    b_.AddBytes(body, 0x23, 0x5B, body);
    b_.AddBytes(body, 0x5D, 0x7F, body);
    const int32_t escape = Node(from);
    Byte(body, '\\', escape);
    for (const char c : std::string_view("\"\\/bfnrt")) Byte(escape, c, body);
    const int32_t unit = Node(from);
    Byte(escape, 'u', unit);
    // \uXXXX outside D800-DFFF.
    const int32_t three = Node(from);
    b_.AddBytes(unit, '0', '9', three);
    b_.AddBytes(unit, 'A', 'C', three);
    b_.AddBytes(unit, 'a', 'c', three);
    b_.AddBytes(unit, 'E', 'F', three);
    b_.AddBytes(unit, 'e', 'f', three);
    HexRun(three, 3, body);
    const int32_t d = Node(from);
    Byte(unit, 'D', d);
    Byte(unit, 'd', d);
    const int32_t two = Node(from);
    b_.AddBytes(d, '0', '7', two);
    HexRun(two, 2, body);
    // A high surrogate \uD800-\uDBFF, then its low surrogate \uDC00-\uDFFF.
    const int32_t high = Node(from);
    b_.AddBytes(d, '8', '9', high);
    b_.AddBytes(d, 'A', 'B', high);
    b_.AddBytes(d, 'a', 'b', high);
    const int32_t high_done = Node(from);
    HexRun(high, 2, high_done);
    int32_t at = b_.AddLiteral(high_done, "\\u");
    const int32_t low = Node(from);
    Byte(at, 'D', low);
    Byte(at, 'd', low);
    const int32_t low_two = Node(from);
    b_.AddBytes(low, 'C', 'F', low_two);
    b_.AddBytes(low, 'c', 'f', low_two);
    HexRun(low_two, 2, body);
    // Multi-byte characters: `need[k]` expects k more continuation bytes.
    int32_t need[4];
    need[0] = body;
    for (int k = 1; k < 4; ++k) {
      need[k] = Node(from);
      b_.AddBytes(need[k], 0x80, 0xBF, need[k - 1]);
    }
    b_.AddBytes(body, 0xC2, 0xDF, need[1]);
    const int32_t e0 = Node(from);
    b_.AddBytes(body, 0xE0, 0xE0, e0);
    b_.AddBytes(e0, 0xA0, 0xBF, need[1]);
    b_.AddBytes(body, 0xE1, 0xEC, need[2]);
    const int32_t ed = Node(from);
    b_.AddBytes(body, 0xED, 0xED, ed);
    b_.AddBytes(ed, 0x80, 0x9F, need[1]);
    b_.AddBytes(body, 0xEE, 0xEF, need[2]);
    const int32_t f0 = Node(from);
    b_.AddBytes(body, 0xF0, 0xF0, f0);
    b_.AddBytes(f0, 0x90, 0xBF, need[2]);
    b_.AddBytes(body, 0xF1, 0xF3, need[3]);
    const int32_t f4 = Node(from);
    b_.AddBytes(body, 0xF4, 0xF4, f4);
    b_.AddBytes(f4, 0x80, 0x8F, need[2]);
  }

  // `count` nodes in a chain of [0-9] after `from` (the first may be narrower: [lo-9]), each
  // joined to `to` by an epsilon edge: between 1 and `count` digits.
  void Digits(int32_t from, char lo, int count, int32_t to) {
    int32_t at = from;
    for (int i = 0; i < count; ++i) {
      const int32_t next = Node(from);
      b_.AddBytes(at, static_cast<uint8_t>(i == 0 ? lo : '0'), '9', next);
      b_.AddEpsilon(next, to);
      at = next;
    }
  }

  void Number(int32_t from, int32_t to, bool integer) {
    const int32_t sign = Node(from);
    Byte(from, '-', sign);
    b_.AddEpsilon(from, sign);
    const int32_t whole = Node(from);  // after the integer part
    Byte(sign, '0', whole);
    Digits(sign, '1', kMaxIntegerDigits, whole);
    b_.AddEpsilon(whole, to);
    if (integer) return;
    const int32_t point = Node(from);
    Byte(whole, '.', point);
    const int32_t fraction = Node(from);
    Digits(point, '0', kMaxFractionDigits, fraction);
    b_.AddEpsilon(fraction, to);
    const int32_t e = Node(from);
    Byte(whole, 'e', e);
    Byte(whole, 'E', e);
    Byte(fraction, 'e', e);
    Byte(fraction, 'E', e);
    const int32_t exponent_sign = Node(from);
    b_.AddEpsilon(e, exponent_sign);
    Byte(e, '+', exponent_sign);
    Byte(e, '-', exponent_sign);
    Digits(exponent_sign, '0', kMaxExponentDigits, to);
  }

  void Literal(int32_t from, std::string_view text, int32_t to) {
    b_.AddEpsilon(b_.AddLiteral(from, text), to);
  }

  // The rule for any JSON value, made on first use.
  int32_t AnyValueRule() {
    if (any_value_rule_ >= 0) return any_value_rule_;
    any_value_rule_ = b_.AddRule("any JSON value");
    const int32_t from = b_.RuleStart(any_value_rule_);
    const int32_t to = b_.RuleEnd(any_value_rule_);
    String(from, to);
    Number(from, to, /*integer=*/false);
    Literal(from, "true", to);
    Literal(from, "false", to);
    Literal(from, "null", to);
    AnyObject(from, to);
    // [ ws (value (ws , ws value)* ws)? ]
    const int32_t open = Node(from);
    const int32_t first = Node(from);
    Byte(from, '[', open);
    Whitespace(open, first);
    Byte(first, ']', to);
    const int32_t item = Node(from);
    b_.AddCall(first, any_value_rule_, item);
    const int32_t next = Node(from);
    Punctuation(item, ',', next);
    b_.AddCall(next, any_value_rule_, item);
    const int32_t close = Node(from);
    Whitespace(item, close);
    Byte(close, ']', to);
    return any_value_rule_;
  }

  // { ws (string ws : ws value (ws , ws string ws : ws value)* ws)? }
  void AnyObject(int32_t from, int32_t to) {
    const int32_t value_rule = AnyValueRule();
    const int32_t open = Node(from);
    const int32_t first = Node(from);
    Byte(from, '{', open);
    Whitespace(open, first);
    Byte(first, '}', to);
    const int32_t key = Node(from);
    b_.AddEpsilon(first, key);
    const int32_t key_end = Node(from);
    String(key, key_end);
    const int32_t value = Node(from);
    Punctuation(key_end, ':', value);
    const int32_t member = Node(from);
    b_.AddCall(value, value_rule, member);
    Punctuation(member, ',', key);
    const int32_t close = Node(from);
    Whitespace(member, close);
    Byte(close, '}', to);
  }

  absl::Status CheckKeywords(const Json& schema, const std::string& pointer) {
    for (const auto& [key, value] : schema.items()) {
      if (IsAnnotation(key) || IsSupported(key)) continue;
      if (IsRootOnly(key)) {
        if (pointer.empty()) continue;
        return Refuse(Child(pointer, key),
                      absl::StrCat("keyword '", key, "' is only supported at the root"));
      }
      return Refuse(Child(pointer, key), absl::StrCat("unsupported keyword '", key, "'"));
    }
    return absl::OkStatus();
  }

  // Refuses any keyword beside `main` other than annotations (and `allowed`).
  absl::Status OnlyBeside(const Json& schema, const std::string& pointer, std::string_view main,
                          std::string_view allowed = {}) {
    for (const auto& [key, value] : schema.items()) {
      if (key == main || IsAnnotation(key) || (pointer.empty() && IsRootOnly(key)) ||
          (!allowed.empty() && key == allowed)) {
        continue;
      }
      return Refuse(Child(pointer, key), absl::StrCat("keyword '", key, "' beside '", ToAbsl(main),
                                                      "' is not supported"));
    }
    return absl::OkStatus();
  }

  absl::Status Emit(const Json& schema, const std::string& pointer, int32_t depth, int32_t from,
                    int32_t to) {
    if (depth > limits_.max_depth) {
      return Refuse(pointer, absl::StrCat("subschemas nested more than ", limits_.max_depth,
                                          " deep (limit max_depth)"));
    }
    AIRLOCK_RETURN_IF_ERROR(b_.status());
    if (schema.is_boolean()) {
      if (!schema.get<bool>())
        return Refuse(pointer, "the schema false (no instance) is not supported");
      b_.AddCall(from, AnyValueRule(), to);
      return absl::OkStatus();
    }
    if (!schema.is_object()) return Refuse(pointer, "a schema must be an object or a boolean");
    AIRLOCK_RETURN_IF_ERROR(CheckKeywords(schema, pointer));

    if (schema.contains("$ref")) {
      AIRLOCK_RETURN_IF_ERROR(OnlyBeside(schema, pointer, "$ref"));
      return Ref(schema.at("$ref"), Child(pointer, "$ref"), from, to);
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (!schema.contains(key)) continue;
      AIRLOCK_RETURN_IF_ERROR(OnlyBeside(schema, pointer, key));
      const Json& branches = schema.at(key);
      const std::string at = Child(pointer, key);
      if (!branches.is_array() || branches.empty()) return Refuse(at, "must be a non-empty array");
      if (static_cast<int64_t>(branches.size()) > limits_.max_any_of) {
        return Refuse(
            at, absl::StrCat("more than ", limits_.max_any_of, " branches (limit max_any_of)"));
      }
      for (size_t i = 0; i < branches.size(); ++i) {
        AIRLOCK_RETURN_IF_ERROR(
            Branch(branches[i], Child(at, std::to_string(i)), depth + 1, from, to));
      }
      return absl::OkStatus();
    }

    std::set<std::string> types;
    bool typed = schema.contains("type");
    if (typed) {
      AIRLOCK_ASSIGN_OR_RETURN(types, TypeSet(schema.at("type"), Child(pointer, "type")));
    }
    if (schema.contains("enum") || schema.contains("const")) {
      if (schema.contains("enum") && schema.contains("const")) {
        return Refuse(Child(pointer, "const"), "keyword 'const' beside 'enum' is not supported");
      }
      const char* key = schema.contains("enum") ? "enum" : "const";
      AIRLOCK_RETURN_IF_ERROR(OnlyBeside(schema, pointer, key, "type"));
      return Values(schema.at(key), key, Child(pointer, key), typed ? &types : nullptr, from, to);
    }

    if (!typed) {
      const bool object_keywords = schema.contains("properties") || schema.contains("required") ||
                                   schema.contains("additionalProperties");
      const bool array_keywords =
          schema.contains("items") || schema.contains("minItems") || schema.contains("maxItems");
      if (object_keywords) types.insert("object");
      if (array_keywords) types.insert("array");
      if (types.empty()) {  // no constraint at all
        b_.AddCall(from, AnyValueRule(), to);
        return absl::OkStatus();
      }
    }
    for (const std::string& type : types) {
      const int32_t branch_from = Node(from);
      const int32_t branch_to = Node(from);
      b_.AddEpsilon(from, branch_from);
      b_.AddEpsilon(branch_to, to);
      if (type == "object") {
        AIRLOCK_RETURN_IF_ERROR(Object(schema, pointer, depth, branch_from, branch_to));
      } else if (type == "array") {
        AIRLOCK_RETURN_IF_ERROR(Array(schema, pointer, depth, branch_from, branch_to));
      } else if (type == "string") {
        String(branch_from, branch_to);
      } else if (type == "number" || type == "integer") {
        Number(branch_from, branch_to, type == "integer");
      } else if (type == "boolean") {
        Literal(branch_from, "true", branch_to);
        Literal(branch_from, "false", branch_to);
      } else {
        Literal(branch_from, "null", branch_to);
      }
    }
    return b_.status();
  }

  // An alternative between fresh nodes, so that no branch can loop back into another.
  absl::Status Branch(const Json& schema, const std::string& pointer, int32_t depth, int32_t from,
                      int32_t to) {
    const int32_t branch_from = Node(from);
    const int32_t branch_to = Node(from);
    b_.AddEpsilon(from, branch_from);
    b_.AddEpsilon(branch_to, to);
    return Emit(schema, pointer, depth, branch_from, branch_to);
  }

  absl::Status Ref(const Json& ref, const std::string& pointer, int32_t from, int32_t to) {
    if (!ref.is_string()) return Refuse(pointer, "$ref must be a string");
    const std::string target = ref.get<std::string>();
    std::string key;
    if (target == "#") {
      key = "";
    } else if (target.rfind("#/$defs/", 0) == 0 || target.rfind("#/definitions/", 0) == 0) {
      key = target.substr(1);
      const size_t name_at = key.find('/', 1) + 1;
      if (key.find('/', name_at) != std::string::npos) {
        return Refuse(pointer, absl::StrCat("$ref '", target,
                                            "': only #, #/$defs/NAME and #/definitions/NAME are "
                                            "supported"));
      }
    } else {
      return Refuse(pointer, absl::StrCat("$ref '", target,
                                          "': only #, #/$defs/NAME and #/definitions/NAME are "
                                          "supported"));
    }
    auto it = rules_.find(key);
    if (it == rules_.end()) {
      return Refuse(pointer, absl::StrCat("$ref '", target, "' does not resolve"));
    }
    b_.AddCall(from, it->second, to);
    return absl::OkStatus();
  }

  absl::Status Values(const Json& values, const char* key, const std::string& pointer,
                      const std::set<std::string>* types, int32_t from, int32_t to) {
    std::vector<const Json*> list;
    if (std::string_view(key) == "enum") {
      if (!values.is_array() || values.empty())
        return Refuse(pointer, "enum must be a non-empty array");
      if (static_cast<int64_t>(values.size()) > limits_.max_enum_values) {
        return Refuse(pointer, absl::StrCat("more than ", limits_.max_enum_values,
                                            " enum values (limit max_enum_values)"));
      }
      for (const Json& v : values) list.push_back(&v);
    } else {
      list.push_back(&values);
    }
    bool any = false;
    for (const Json* v : list) {
      if (types != nullptr && !HasType(*v, *types)) continue;
      Literal(from, v->dump(), to);
      any = true;
    }
    if (!any) return Refuse(pointer, "no value matches 'type': the schema has no instance");
    return b_.status();
  }

  absl::Status Object(const Json& schema, const std::string& pointer, int32_t depth, int32_t from,
                      int32_t to) {
    static const Json kEmpty = Json::object();
    const Json& properties = schema.contains("properties") ? schema.at("properties") : kEmpty;
    const std::string properties_at = Child(pointer, "properties");
    if (!properties.is_object()) return Refuse(properties_at, "must be an object");
    if (static_cast<int64_t>(properties.size()) > limits_.max_properties) {
      return Refuse(properties_at, absl::StrCat("more than ", limits_.max_properties,
                                                " properties (limit max_properties)"));
    }
    std::set<std::string> required;
    if (schema.contains("required")) {
      const Json& list = schema.at("required");
      const std::string at = Child(pointer, "required");
      if (!list.is_array()) return Refuse(at, "must be an array of property names");
      for (size_t i = 0; i < list.size(); ++i) {
        if (!list[i].is_string()) return Refuse(Child(at, std::to_string(i)), "must be a string");
        const std::string name = list[i].get<std::string>();
        if (!properties.contains(name)) {
          return Refuse(Child(at, std::to_string(i)),
                        absl::StrCat("required property '", name,
                                     "' is not in 'properties' (additional properties are not "
                                     "allowed, so no instance could have it)"));
        }
        required.insert(name);
      }
    }
    if (schema.contains("additionalProperties")) {
      const Json& additional = schema.at("additionalProperties");
      const std::string at = Child(pointer, "additionalProperties");
      if (additional.is_boolean() && additional.get<bool>()) {
        if (!properties.empty() || !required.empty()) {
          return Refuse(at, "additionalProperties true beside 'properties' is not supported");
        }
        AnyObject(from, to);
        return b_.status();
      }
      if (!additional.is_boolean()) {
        return Refuse(at,
                      "only additionalProperties false (or true without properties) is "
                      "supported");
      }
    }
    // { ws, then the members in declaration order. first[i]: no member written yet, the next
    // one is member i or a later one (a required member cannot be skipped); next[i]: after
    // "ws , ws", the same choice; done[i]: members before i written, the last one's value just
    // ended. From done[i] one shared "ws" leads to } (when no required member is left) or to
    // ", ws" and next[i]: whitespace is written once per position, not once per candidate key,
    // which keeps the determinised states small for objects with many optional members.
    const size_t n = properties.size();
    std::vector<int32_t> first(n + 1), next(n + 1), key(n);
    for (size_t i = 0; i <= n; ++i) {
      first[i] = Node(from);
      next[i] = Node(from);
    }
    const int32_t open = Node(from);
    Byte(from, '{', open);
    Whitespace(open, first[0]);
    Byte(first[n], '}', to);
    size_t i = 0;
    std::vector<char> required_after(n + 1, 0);  // a required member at index >= i
    for (const auto& [name, subschema] : properties.items()) {
      key[i] = Node(from);
      b_.AddEpsilon(first[i], key[i]);
      b_.AddEpsilon(next[i], key[i]);
      if (required.count(name) == 0) {
        b_.AddEpsilon(first[i], first[i + 1]);
        b_.AddEpsilon(next[i], next[i + 1]);
      } else {
        for (size_t j = 0; j <= i; ++j) required_after[j] = 1;
      }
      ++i;
    }
    i = 0;
    for (const auto& [name, subschema] : properties.items()) {
      const int32_t key_end = b_.AddLiteral(key[i], Json(name).dump());
      const int32_t value = Node(from);
      Punctuation(key_end, ':', value);
      const int32_t done = Node(from);
      AIRLOCK_RETURN_IF_ERROR(Emit(subschema, Child(properties_at, name), depth + 1, value, done));
      const int32_t after = Node(from);
      Whitespace(done, after);
      if (!required_after[i + 1]) Byte(after, '}', to);
      if (i + 1 < n) {
        const int32_t comma = Node(from);
        Byte(after, ',', comma);
        Whitespace(comma, next[i + 1]);
      }
      ++i;
    }
    return b_.status();
  }

  absl::Status Array(const Json& schema, const std::string& pointer, int32_t depth, int32_t from,
                     int32_t to) {
    int64_t min_items = 0;
    int64_t max_items = -1;  // unbounded
    if (schema.contains("minItems")) {
      AIRLOCK_ASSIGN_OR_RETURN(min_items,
                               ItemCount(schema, "minItems", pointer, limits_.max_array_items));
    }
    if (schema.contains("maxItems")) {
      AIRLOCK_ASSIGN_OR_RETURN(max_items,
                               ItemCount(schema, "maxItems", pointer, limits_.max_array_items));
      if (max_items < min_items) {
        return Refuse(Child(pointer, "maxItems"), "maxItems below minItems: no instance");
      }
    }
    int32_t item_rule = -1;
    if (schema.contains("items")) {
      const Json& items = schema.at("items");
      const std::string at = Child(pointer, "items");
      if (items.is_array()) return Refuse(at, "items as an array (tuple form) is not supported");
      item_rule = b_.AddRule("#" + at);
      AIRLOCK_RETURN_IF_ERROR(
          Emit(items, at, depth + 1, b_.RuleStart(item_rule), b_.RuleEnd(item_rule)));
    } else {
      item_rule = AnyValueRule();
    }
    // [ ws, then after[k] = after k items; up to max (or the larger of min and 1, looping).
    const int64_t last = max_items >= 0 ? max_items : std::max<int64_t>(min_items, 1);
    std::vector<int32_t> after(static_cast<size_t>(last) + 1);
    for (int32_t& node : after) node = Node(from);
    const int32_t open = Node(from);
    Byte(from, '[', open);
    Whitespace(open, after[0]);
    if (min_items == 0) Byte(after[0], ']', to);
    for (int64_t k = 0; k < last; ++k) {
      const auto here = static_cast<size_t>(k);
      if (k == 0) {
        b_.AddCall(after[0], item_rule, after[1]);
      } else {
        const int32_t next = Node(from);
        Punctuation(after[here], ',', next);
        b_.AddCall(next, item_rule, after[here + 1]);
      }
      if (k + 1 >= min_items) {
        const int32_t close = Node(from);
        Whitespace(after[here + 1], close);
        Byte(close, ']', to);
      }
    }
    if (max_items < 0) {
      const int32_t next = Node(from);
      Punctuation(after[static_cast<size_t>(last)], ',', next);
      b_.AddCall(next, item_rule, after[static_cast<size_t>(last)]);
    }
    return b_.status();
  }

  const Json& root_;
  const JsonSchemaLimits& limits_;
  GrammarBuilder b_;
  std::map<std::string, int32_t> rules_;  // pointer ("" for the root) -> rule, for $ref
  std::vector<Pending> pending_;
  int32_t any_value_rule_ = -1;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Grammar>> CompileJsonSchema(std::string_view schema_json,
                                                                 const JsonSchemaLimits& limits) {
  if (schema_json.size() > limits.max_schema_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON schema of ", schema_json.size(), " bytes is above the limit of ",
                     limits.max_schema_bytes, " (limit max_schema_bytes)"));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckTextDepth(schema_json, limits.max_depth));
  Json schema;
  try {
    schema = Json::parse(schema_json.begin(), schema_json.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("JSON schema is not valid JSON: ", e.what()));
  }
  SchemaCompiler compiler(schema, limits);
  return compiler.Compile();
}

std::shared_ptr<const Grammar> AnyJsonObjectGrammar() {
  static const std::shared_ptr<const Grammar>* grammar = [] {
    const Json unused;
    const JsonSchemaLimits limits;
    SchemaCompiler compiler(unused, limits);
    absl::StatusOr<std::shared_ptr<const Grammar>> built = compiler.CompileAnyObject();
    AIRLOCK_CHECK(built.ok());
    return new std::shared_ptr<const Grammar>(std::move(built).value());
  }();
  return *grammar;
}

}  // namespace airlock::inference

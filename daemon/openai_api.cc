// OpenAI API translation: request bodies -> ChatRequest/GenerateRequest, results -> response bodies.
#include "daemon/openai_api.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "auth/quota.h"
#include "daemon/request_validation.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "inference/base/status.h"
#include "inference/sampling/json_schema.h"
#include "inference/tokenizer/utf8.h"

namespace airlock::daemon::openai {
namespace {

// Ordered: a JSON schema's members keep the client's order, which is the order the structured
// output generates them in (docs/api.md); responses list their members in OpenAI's order.
using Json = nlohmann::ordered_json;
using airlock::v1::SamplingParameters;
using airlock::v1::StopReason;

absl::Status Invalid(std::string_view param, std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(ToAbsl(param), ": ", ToAbsl(problem)));
}

// `text` when it has at most `max_bytes` bytes, else its first at most `max_bytes` bytes cut at a
// UTF-8 character boundary followed by "…".
std::string Truncated(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t end = max_bytes;
  while (end > 0 && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat(ToAbsl(text.substr(0, end)), "\xE2\x80\xA6");
}

// A request-supplied name as an error may quote it.
std::string Quoted(std::string_view name) { return Truncated(name, kMaxQuotedNameBytes); }

std::string Dump(const Json& json) { return json.dump(-1, ' ', false, Json::error_handler_t::replace); }

// ---- The body as JSON ----

// INVALID_ARGUMENT when arrays and objects nest deeper than kMaxBodyDepth, so no recursive code
// (dump(), the schema compiler) ever sees a deeper value.
absl::Status CheckNesting(std::string_view body) {
  if (!inference::JsonNestsDeeperThan(body, kMaxBodyDepth)) return absl::OkStatus();
  return Invalid("request body", absl::StrCat("nested more than ", kMaxBodyDepth, " levels deep"));
}

// Builds the document from nlohmann's SAX events. nlohmann's own builder inserts each member of an
// ordered_json object after a linear search for its key: quadratic in the member count (18 s for
// one object of 150,000 members, 1.7 MB). This one appends, and refuses an object that names a key
// twice (parsers disagree on which one wins, so a proxy in front of us could read the other).
class BodyBuilder {
 public:
  bool null() { return Add(Json(nullptr)); }
  bool boolean(bool value) { return Add(Json(value)); }
  bool number_integer(Json::number_integer_t value) { return Add(Json(value)); }
  bool number_unsigned(Json::number_unsigned_t value) { return Add(Json(value)); }
  bool number_float(Json::number_float_t value, const Json::string_t&) { return Add(Json(value)); }
  bool string(Json::string_t& value) { return Add(Json(std::move(value))); }
  bool binary(Json::binary_t&) { return false; }  // JSON text has none
  bool start_object(std::size_t) { return Open(Json::object()); }
  bool key(Json::string_t& key) {
    open_.back().key = std::move(key);
    return true;
  }
  bool end_object() { return FindDuplicate(open_.back().value) && Close(); }
  bool start_array(std::size_t) { return Open(Json::array()); }
  bool end_array() { return Close(); }
  bool parse_error(std::size_t position, const std::string&, const Json::exception&) {
    error_byte_ = position;  // nlohmann's message quotes the input: never passed on
    return false;
  }

  Json& root() { return root_; }
  const std::optional<std::string>& duplicate_key() const { return duplicate_key_; }
  std::optional<size_t> error_byte() const { return error_byte_; }

 private:
  struct OpenValue {
    Json value;
    std::string key;  // of the next member, in an object
  };

  bool Open(Json value) {
    open_.push_back({std::move(value), {}});
    return true;
  }
  bool Close() {
    Json value = std::move(open_.back().value);
    open_.pop_back();
    return Add(std::move(value));
  }
  bool Add(Json value) {
    if (open_.empty()) {
      root_ = std::move(value);
    } else if (OpenValue& parent = open_.back(); parent.value.is_array()) {
      parent.value.get_ref<Json::array_t&>().push_back(std::move(value));
    } else {
      // ordered_map is a vector: emplace_back appends without ordered_map::emplace's search.
      parent.value.get_ref<Json::object_t&>().emplace_back(std::move(parent.key), std::move(value));
    }
    return true;
  }
  // False (and the key noted) when `object` holds a key twice; O(n log n).
  bool FindDuplicate(const Json& object) {
    std::vector<std::string_view> keys;
    keys.reserve(object.size());
    for (const auto& member : object.get_ref<const Json::object_t&>()) keys.push_back(member.first);
    std::sort(keys.begin(), keys.end());
    const auto twice = std::adjacent_find(keys.begin(), keys.end());
    if (twice == keys.end()) return true;
    duplicate_key_ = std::string(*twice);
    return false;
  }

  Json root_;
  std::vector<OpenValue> open_;
  std::optional<std::string> duplicate_key_;
  std::optional<size_t> error_byte_;
};

// The body as a JSON object: valid UTF-8, nested at most kMaxBodyDepth deep, one value and nothing
// after it, no key twice in one object. Errors give a byte offset, never the parser's message.
absl::StatusOr<Json> ParseBody(std::string_view body) {
  if (!inference::utf8::IsValid(body)) return Invalid("request body", "not valid UTF-8");
  AIRLOCK_RETURN_IF_ERROR(CheckNesting(body));
  // nlohmann's lexer takes a NUL byte for the end of the input and ignores whatever follows it;
  // JSON allows none anywhere (in a string it must be escaped).
  if (const size_t nul = body.find('\0'); nul != std::string_view::npos) {
    return Invalid("request body", absl::StrCat("not valid JSON (at byte ", nul + 1, ")"));
  }
  BodyBuilder builder;
  if (!Json::sax_parse(body.begin(), body.end(), &builder)) {
    if (builder.duplicate_key().has_value()) {
      return Invalid("request body", absl::StrCat("key \"", Quoted(*builder.duplicate_key()),
                                                  "\" appears twice in one object"));
    }
    return Invalid("request body", absl::StrCat("not valid JSON (at byte ", builder.error_byte().value_or(0), ")"));
  }
  if (!builder.root().is_object()) return Invalid("request body", "must be a JSON object");
  return std::move(builder.root());
}

// ---- Typed values ----

absl::StatusOr<std::string> StringOf(std::string_view name, const Json& value) {
  if (!value.is_string()) return Invalid(name, "must be a string");
  return value.get<std::string>();
}

absl::StatusOr<bool> BoolOf(std::string_view name, const Json& value) {
  if (!value.is_boolean()) return Invalid(name, "must be a boolean");
  return value.get<bool>();
}

// A float parameter; the range is checked by validation, but a double beyond float's range cannot
// be converted (undefined behaviour), so it is refused here.
absl::StatusOr<float> FloatOf(std::string_view name, const Json& value) {
  if (!value.is_number()) return Invalid(name, "must be a number");
  const double d = value.get<double>();
  if (std::abs(d) > std::numeric_limits<float>::max()) return Invalid(name, "out of range");
  return static_cast<float>(d);
}

// A JSON number with no fractional part (3, 3.0 and 3e0 alike), within int32.
absl::StatusOr<int32_t> Int32Of(std::string_view name, const Json& value) {
  constexpr int64_t kMin = std::numeric_limits<int32_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  const auto out_of_range = [name] { return Invalid(name, "out of range for a 32-bit integer"); };
  if (value.is_number_unsigned()) {
    if (value.get<uint64_t>() > static_cast<uint64_t>(kMax)) return out_of_range();
    return static_cast<int32_t>(value.get<uint64_t>());
  }
  if (value.is_number_integer()) {
    const int64_t i = value.get<int64_t>();
    if (i < kMin || i > kMax) return out_of_range();
    return static_cast<int32_t>(i);
  }
  if (!value.is_number_float() || value.get<double>() != std::trunc(value.get<double>())) {
    return Invalid(name, "must be an integer");
  }
  const double d = value.get<double>();
  if (d < static_cast<double>(kMin) || d > static_cast<double>(kMax)) return out_of_range();
  return static_cast<int32_t>(d);
}

// seed: a non-negative integer up to 2^64 - 1.
absl::StatusOr<uint64_t> SeedOf(std::string_view name, const Json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) {
    if (value.get<int64_t>() < 0) return Invalid(name, "must be >= 0");
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  if (!value.is_number_float() || value.get<double>() != std::trunc(value.get<double>())) {
    return Invalid(name, "must be an integer");
  }
  const double d = value.get<double>();
  if (d < 0) return Invalid(name, "must be >= 0");
  if (d >= 18446744073709551616.0) return Invalid(name, "out of range for a 64-bit unsigned integer");
  return static_cast<uint64_t>(d);
}

// Refuses any member of `object` not in `known`, naming it "<field>.<key>".
absl::Status CheckMembers(std::string_view field, const Json& object, std::span<const std::string_view> known) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) == known.end()) {
      return Invalid(absl::StrCat(ToAbsl(field), ".", Quoted(it.key())), "unrecognized field");
    }
  }
  return absl::OkStatus();
}

// The member `key` of `object`, or nullptr when it is absent or null (null means unset).
const Json* MemberOf(const Json& object, std::string_view key) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

// ---- Parameters ----

// A call being parsed, with what is checked once every parameter is read.
template <typename Call>
struct Draft {
  Call call;
  std::optional<int32_t> max_tokens;
  std::optional<int32_t> max_completion_tokens;
  bool has_stream_options = false;
};

// One top-level parameter: its name and how its (non-null) value is read into the draft.
template <typename Call>
struct Parameter {
  std::string_view name;
  absl::Status (*read)(std::string_view name, const Json& value, Draft<Call>& draft);
};

// Parameters OpenAI defines that we do not implement: refused unless null.
template <typename Call>
absl::Status NotSupported(std::string_view name, const Json&, Draft<Call>&) {
  return Invalid(name, "not supported");
}

// store, echo and chat's logprobs: accepted when false.
template <typename Call>
absl::Status OnlyFalse(std::string_view name, const Json& value, Draft<Call>&) {
  AIRLOCK_ASSIGN_OR_RETURN(const bool set, BoolOf(name, value));
  return set ? Invalid(name, "not supported") : absl::OkStatus();
}

// n and best_of: one choice per call.
template <typename Call>
absl::Status OnlyOne(std::string_view name, const Json& value, Draft<Call>&) {
  AIRLOCK_ASSIGN_OR_RETURN(const int32_t n, Int32Of(name, value));
  return n == 1 ? absl::OkStatus() : Invalid(name, "only 1 is supported");
}

// logit_bias: an empty object only.
template <typename Call>
absl::Status NoLogitBias(std::string_view name, const Json& value, Draft<Call>&) {
  if (!value.is_object()) return Invalid(name, "must be an object");
  return value.empty() ? absl::OkStatus() : Invalid(name, "not supported");
}

// user, service_tier: accepted and ignored once they are strings.
template <typename Call>
absl::Status IgnoredString(std::string_view name, const Json& value, Draft<Call>&) {
  return StringOf(name, value).status();
}

// metadata: accepted and ignored once it is an object.
template <typename Call>
absl::Status IgnoredObject(std::string_view name, const Json& value, Draft<Call>&) {
  return value.is_object() ? absl::OkStatus() : Invalid(name, "must be an object");
}

template <typename Call>
absl::Status ReadModel(std::string_view name, const Json& value, Draft<Call>& draft) {
  AIRLOCK_ASSIGN_OR_RETURN(std::string model, StringOf(name, value));
  draft.call.request.set_model(std::move(model));
  return absl::OkStatus();
}

template <typename Call>
absl::Status ReadMaxTokens(std::string_view name, const Json& value, Draft<Call>& draft) {
  AIRLOCK_ASSIGN_OR_RETURN(draft.max_tokens, Int32Of(name, value));
  return absl::OkStatus();
}

template <typename Call>
absl::Status ReadMaxCompletionTokens(std::string_view name, const Json& value, Draft<Call>& draft) {
  AIRLOCK_ASSIGN_OR_RETURN(draft.max_completion_tokens, Int32Of(name, value));
  return absl::OkStatus();
}

// temperature, top_p and the penalties, each into its SamplingParameters field.
template <typename Call, void (SamplingParameters::*kSet)(float)>
absl::Status ReadSamplingFloat(std::string_view name, const Json& value, Draft<Call>& draft) {
  AIRLOCK_ASSIGN_OR_RETURN(const float f, FloatOf(name, value));
  (draft.call.request.mutable_sampling()->*kSet)(f);
  return absl::OkStatus();
}

template <typename Call>
absl::Status ReadSeed(std::string_view name, const Json& value, Draft<Call>& draft) {
  AIRLOCK_ASSIGN_OR_RETURN(const uint64_t seed, SeedOf(name, value));
  draft.call.request.mutable_sampling()->set_seed(seed);
  return absl::OkStatus();
}

// stop: one string or an array of at most kMaxOpenAiStopStrings strings.
template <typename Call>
absl::Status ReadStop(std::string_view name, const Json& value, Draft<Call>& draft) {
  auto& stop = *draft.call.request.mutable_stop();
  if (value.is_string()) {
    stop.Add(value.get<std::string>());
    return absl::OkStatus();
  }
  if (!value.is_array()) return Invalid(name, "must be a string or an array of strings");
  if (value.size() > static_cast<size_t>(kMaxOpenAiStopStrings)) {
    return Invalid(name, absl::StrCat("at most ", kMaxOpenAiStopStrings, " stop strings, got ", value.size()));
  }
  for (size_t i = 0; i < value.size(); ++i) {
    AIRLOCK_ASSIGN_OR_RETURN(std::string text, StringOf(absl::StrCat(ToAbsl(name), "[", i, "]"), value[i]));
    stop.Add(std::move(text));
  }
  return absl::OkStatus();
}

template <typename Call>
absl::Status ReadStream(std::string_view name, const Json& value, Draft<Call>& draft) {
  AIRLOCK_ASSIGN_OR_RETURN(draft.call.stream, BoolOf(name, value));
  return absl::OkStatus();
}

// stream_options: {"include_usage": bool}; only with stream true (checked in FinishDraft).
template <typename Call>
absl::Status ReadStreamOptions(std::string_view name, const Json& value, Draft<Call>& draft) {
  if (!value.is_object()) return Invalid(name, "must be an object");
  static constexpr std::string_view kKnown[] = {"include_usage"};
  AIRLOCK_RETURN_IF_ERROR(CheckMembers(name, value, kKnown));
  draft.has_stream_options = true;
  if (const Json* include_usage = MemberOf(value, "include_usage")) {
    AIRLOCK_ASSIGN_OR_RETURN(draft.call.include_usage, BoolOf("stream_options.include_usage", *include_usage));
  }
  return absl::OkStatus();
}

// The parameters chat completions and completions share.
template <typename Call>
constexpr Parameter<Call> kSharedParameters[] = {
    {"model", &ReadModel<Call>},
    {"max_tokens", &ReadMaxTokens<Call>},
    {"temperature", &ReadSamplingFloat<Call, &SamplingParameters::set_temperature>},
    {"top_p", &ReadSamplingFloat<Call, &SamplingParameters::set_top_p>},
    {"presence_penalty", &ReadSamplingFloat<Call, &SamplingParameters::set_presence_penalty>},
    {"frequency_penalty", &ReadSamplingFloat<Call, &SamplingParameters::set_frequency_penalty>},
    {"seed", &ReadSeed<Call>},
    {"stop", &ReadStop<Call>},
    {"n", &OnlyOne<Call>},
    {"stream", &ReadStream<Call>},
    {"stream_options", &ReadStreamOptions<Call>},
    {"logit_bias", &NoLogitBias<Call>},
    {"user", &IgnoredString<Call>},
};

// ---- Chat messages and response_format ----

// "system" for system and developer messages, "user", "assistant"; tool and function refused.
absl::StatusOr<std::string> RoleOf(std::string_view field, const Json& role) {
  if (!role.is_string()) return Invalid(field, "must be a string");
  const std::string& name = role.get_ref<const std::string&>();
  if (name == "system" || name == "developer") return std::string("system");
  if (name == "user" || name == "assistant") return name;
  if (name == "tool" || name == "function") return Invalid(field, "tool and function messages are not supported");
  return Invalid(field, absl::StrCat("unknown role \"", Quoted(name), "\"; one of system, developer, user, assistant"));
}

// The text of one content part: {"type": "text", "text": STRING}.
absl::StatusOr<std::string> PartText(std::string_view field, const Json& part) {
  if (!part.is_object()) return Invalid(field, "must be an object");
  // The type first: an image part is refused for being one, not for its "image_url" member.
  const std::string type_field = absl::StrCat(ToAbsl(field), ".type");
  const Json* type = MemberOf(part, "type");
  if (type == nullptr) return Invalid(type_field, "required");
  if (!type->is_string() || type->get_ref<const std::string&>() != "text") {
    return Invalid(type_field, "only text parts are supported");
  }
  static constexpr std::string_view kKnown[] = {"type", "text"};
  AIRLOCK_RETURN_IF_ERROR(CheckMembers(field, part, kKnown));
  const std::string text_field = absl::StrCat(ToAbsl(field), ".text");
  const Json* text = MemberOf(part, "text");
  if (text == nullptr) return Invalid(text_field, "required");
  return StringOf(text_field, *text);
}

// A message's content: a string, or an array of text parts whose texts are concatenated.
absl::StatusOr<std::string> ContentText(std::string_view field, const Json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return Invalid(field, "must be a string or an array of text parts");
  std::string text;
  for (size_t j = 0; j < content.size(); ++j) {
    AIRLOCK_ASSIGN_OR_RETURN(const std::string part, PartText(absl::StrCat(ToAbsl(field), "[", j, "]"), content[j]));
    text += part;
  }
  return text;
}

// One message: role and content required, name ignored, tool calls refused.
absl::Status ReadMessage(std::string_view field, const Json& message, airlock::v1::ChatMessage& out) {
  if (!message.is_object()) return Invalid(field, "must be an object");
  // The role first: a tool message is refused for its role, not for its tool_call_id member.
  const std::string role_field = absl::StrCat(ToAbsl(field), ".role");
  const Json* role = MemberOf(message, "role");
  if (role == nullptr) return Invalid(role_field, "required");
  AIRLOCK_ASSIGN_OR_RETURN(*out.mutable_role(), RoleOf(role_field, *role));
  // An assistant message as OpenAI's SDKs send it back (the reply's message object) carries
  // `refusal: null`, `annotations: []` and sometimes `tool_calls: []`: accepted while they say nothing.
  static constexpr std::string_view kKnown[] = {"role",          "content", "name",       "tool_calls",
                                                "function_call", "refusal", "annotations", "audio"};
  AIRLOCK_RETURN_IF_ERROR(CheckMembers(field, message, kKnown));
  for (const std::string_view unsupported : {"tool_calls", "function_call", "refusal", "annotations", "audio"}) {
    const Json* member = MemberOf(message, unsupported);
    if (member != nullptr && !(member->is_array() && member->empty())) {
      return Invalid(absl::StrCat(ToAbsl(field), ".", ToAbsl(unsupported)), "not supported");
    }
  }
  if (const Json* name = MemberOf(message, "name"); name != nullptr && !name->is_string()) {
    return Invalid(absl::StrCat(ToAbsl(field), ".name"), "must be a string");
  }
  const std::string content_field = absl::StrCat(ToAbsl(field), ".content");
  const Json* content = MemberOf(message, "content");
  if (content == nullptr) return Invalid(content_field, "required");
  AIRLOCK_ASSIGN_OR_RETURN(*out.mutable_content(), ContentText(content_field, *content));
  return absl::OkStatus();
}

absl::Status ReadMessages(std::string_view name, const Json& value, Draft<ChatCompletionCall>& draft) {
  if (!value.is_array()) return Invalid(name, "must be an array of messages");
  if (value.empty()) return Invalid(name, "must not be empty");
  for (size_t i = 0; i < value.size(); ++i) {
    AIRLOCK_RETURN_IF_ERROR(
        ReadMessage(absl::StrCat(ToAbsl(name), "[", i, "]"), value[i], *draft.call.request.add_messages()));
  }
  return absl::OkStatus();
}

// response_format.json_schema: {"name", "description", "strict", "schema"} -> the schema as text.
absl::StatusOr<std::string> JsonSchemaText(const Json* json_schema) {
  constexpr std::string_view kField = "response_format.json_schema";
  if (json_schema == nullptr) return Invalid(kField, "required with type json_schema");
  if (!json_schema->is_object()) return Invalid(kField, "must be an object");
  static constexpr std::string_view kKnown[] = {"name", "description", "strict", "schema"};
  AIRLOCK_RETURN_IF_ERROR(CheckMembers(kField, *json_schema, kKnown));
  for (const std::string_view text : {"name", "description"}) {
    if (const Json* v = MemberOf(*json_schema, text); v != nullptr && !v->is_string()) {
      return Invalid(absl::StrCat(ToAbsl(kField), ".", ToAbsl(text)), "must be a string");
    }
  }
  // strict: our structured output is always strict, so either value is accepted.
  if (const Json* strict = MemberOf(*json_schema, "strict"); strict != nullptr && !strict->is_boolean()) {
    return Invalid("response_format.json_schema.strict", "must be a boolean");
  }
  const Json* schema = MemberOf(*json_schema, "schema");
  if (schema == nullptr) return Invalid("response_format.json_schema.schema", "required");
  if (!schema->is_object()) return Invalid("response_format.json_schema.schema", "must be an object");
  std::string text = Dump(*schema);
  if (text.size() > kMaxJsonSchemaBytes) {
    return Invalid("response_format.json_schema.schema",
                   absl::StrCat("is ", text.size(), " bytes; at most ", kMaxJsonSchemaBytes));
  }
  return text;
}

absl::Status ReadResponseFormat(std::string_view name, const Json& value, Draft<ChatCompletionCall>& draft) {
  using airlock::v1::ResponseFormat;
  if (!value.is_object()) return Invalid(name, "must be an object");
  static constexpr std::string_view kKnown[] = {"type", "json_schema"};
  AIRLOCK_RETURN_IF_ERROR(CheckMembers(name, value, kKnown));
  const Json* type = MemberOf(value, "type");
  if (type == nullptr) return Invalid("response_format.type", "required");
  const std::string kind = type->is_string() ? type->get<std::string>() : "";
  const Json* json_schema = MemberOf(value, "json_schema");
  ResponseFormat& format = *draft.call.request.mutable_response_format();
  if (kind == "json_schema") {
    AIRLOCK_ASSIGN_OR_RETURN(*format.mutable_json_schema(), JsonSchemaText(json_schema));
    format.set_type(ResponseFormat::TYPE_JSON_SCHEMA);
    return absl::OkStatus();
  }
  if (kind != "text" && kind != "json_object") {
    return Invalid("response_format.type", "must be text, json_object or json_schema");
  }
  if (json_schema != nullptr) return Invalid("response_format.json_schema", "only allowed with type json_schema");
  format.set_type(kind == "text" ? ResponseFormat::TYPE_TEXT : ResponseFormat::TYPE_JSON_OBJECT);
  return absl::OkStatus();
}

constexpr Parameter<ChatCompletionCall> kChatParameters[] = {
    {"messages", &ReadMessages},
    {"max_completion_tokens", &ReadMaxCompletionTokens<ChatCompletionCall>},
    {"response_format", &ReadResponseFormat},
    {"logprobs", &OnlyFalse<ChatCompletionCall>},
    {"top_logprobs", &NotSupported<ChatCompletionCall>},
    {"store", &OnlyFalse<ChatCompletionCall>},
    {"metadata", &IgnoredObject<ChatCompletionCall>},
    {"service_tier", &IgnoredString<ChatCompletionCall>},
    {"tools", &NotSupported<ChatCompletionCall>},
    {"tool_choice", &NotSupported<ChatCompletionCall>},
    {"functions", &NotSupported<ChatCompletionCall>},
    {"function_call", &NotSupported<ChatCompletionCall>},
    {"parallel_tool_calls", &NotSupported<ChatCompletionCall>},
    {"audio", &NotSupported<ChatCompletionCall>},
    {"modalities", &NotSupported<ChatCompletionCall>},
    {"prediction", &NotSupported<ChatCompletionCall>},
    {"reasoning_effort", &NotSupported<ChatCompletionCall>},
    {"web_search_options", &NotSupported<ChatCompletionCall>},
};

// ---- Completions ----

// prompt: a string, or an array of exactly one string.
absl::Status ReadPrompt(std::string_view name, const Json& value, Draft<CompletionCall>& draft) {
  const Json* prompt = &value;
  if (value.is_array() && value.size() == 1) prompt = &value[0];
  if (!prompt->is_string()) return Invalid(name, "only one text prompt is supported");
  draft.call.request.set_prompt(prompt->get<std::string>());
  return absl::OkStatus();
}

constexpr Parameter<CompletionCall> kCompletionParameters[] = {
    {"prompt", &ReadPrompt},
    {"logprobs", &NotSupported<CompletionCall>},
    {"echo", &OnlyFalse<CompletionCall>},
    {"suffix", &NotSupported<CompletionCall>},
    {"best_of", &OnlyOne<CompletionCall>},
};

// ---- Whole calls ----

template <typename Call>
const Parameter<Call>* Find(std::span<const Parameter<Call>> table, std::string_view name) {
  for (const Parameter<Call>& parameter : table) {
    if (parameter.name == name) return &parameter;
  }
  return nullptr;
}

// Reads every top-level parameter: unknown ones refused as OpenAI does, null ones left unset.
template <typename Call>
absl::Status ReadParameters(const Json& root, std::span<const Parameter<Call>> own, Draft<Call>& draft) {
  for (auto it = root.begin(); it != root.end(); ++it) {
    const Parameter<Call>* parameter = Find(own, it.key());
    if (parameter == nullptr) parameter = Find(std::span<const Parameter<Call>>(kSharedParameters<Call>), it.key());
    if (parameter == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unrecognized request argument: ", Quoted(it.key())));
    }
    if (it.value().is_null()) continue;
    AIRLOCK_RETURN_IF_ERROR(parameter->read(parameter->name, it.value(), draft));
  }
  return absl::OkStatus();
}

// OpenAI's sampling: temperature and top_p 1 unless given; no top-k, min-p or repetition penalty
// (OpenAI has none), and the presence/frequency penalties over the whole context.
void ApplyOpenAiSampling(SamplingParameters& sampling) {
  if (!sampling.has_temperature()) sampling.set_temperature(1.0f);
  if (!sampling.has_top_p()) sampling.set_top_p(1.0f);
  sampling.set_top_k(0);
  sampling.set_min_p(0.0f);
  sampling.set_repeat_penalty(1.0f);
  sampling.set_repeat_last_n(-1);
}

// The checks across parameters, once all are read, and the defaults.
template <typename Call>
absl::Status FinishDraft(Draft<Call>& draft, std::optional<int32_t> default_max_tokens) {
  if (draft.max_tokens.has_value() && draft.max_completion_tokens.has_value() &&
      *draft.max_tokens != *draft.max_completion_tokens) {
    return Invalid("max_completion_tokens", "differs from max_tokens; set only one of them");
  }
  const std::optional<int32_t> max_tokens =
      draft.max_completion_tokens.has_value() ? draft.max_completion_tokens
                                              : (draft.max_tokens.has_value() ? draft.max_tokens : default_max_tokens);
  if (max_tokens.has_value()) draft.call.request.set_max_tokens(*max_tokens);
  if (draft.has_stream_options && !draft.call.stream) {
    return Invalid("stream_options", "only allowed when stream is true");
  }
  ApplyOpenAiSampling(*draft.call.request.mutable_sampling());
  return absl::OkStatus();
}

template <typename Call>
absl::StatusOr<Call> ParseCall(std::string_view body, std::span<const Parameter<Call>> own,
                               std::span<const std::string_view> required, std::optional<int32_t> default_max_tokens) {
  // Every value's type is checked before it is read, so nothing below should throw; this is the
  // backstop that keeps any exception (bad_alloc included) from leaving the parser.
  try {
    AIRLOCK_ASSIGN_OR_RETURN(const Json root, ParseBody(body));
    Draft<Call> draft;
    AIRLOCK_RETURN_IF_ERROR(ReadParameters(root, own, draft));
    for (const std::string_view name : required) {
      if (MemberOf(root, name) == nullptr) return Invalid(name, "required");
    }
    AIRLOCK_RETURN_IF_ERROR(FinishDraft(draft, default_max_tokens));
    return std::move(draft.call);
  } catch (...) {
    return absl::InternalError("request body: could not be read");
  }
}

// ---- Rendering ----

Json FinishJson(std::optional<StopReason> finish) {
  return finish.has_value() ? Json(FinishReason(*finish)) : Json(nullptr);
}

Json UsageJson(UsageCounts usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", static_cast<uint64_t>(usage.prompt_tokens) + usage.completion_tokens}};
}

// The members every response object starts with.
Json Envelope(std::string_view id, std::string_view object, int64_t created, std::string_view model) {
  return {{"id", std::string(id)}, {"object", std::string(object)}, {"created", created}, {"model", std::string(model)}};
}

// ---- Errors ----

struct ErrorKind {
  int status;
  std::string_view type;
  std::optional<std::string_view> code;
};

ErrorKind KindOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return {400, "invalid_request_error", std::nullopt};
    case absl::StatusCode::kUnauthenticated:
      return {401, "authentication_error", std::nullopt};
    case absl::StatusCode::kPermissionDenied:
      return {403, "permission_error", std::nullopt};
    case absl::StatusCode::kNotFound:
      if (absl::StartsWith(status.message(), "model:")) return {404, "invalid_request_error", "model_not_found"};
      return {404, "invalid_request_error", std::nullopt};
    case absl::StatusCode::kResourceExhausted:
      return {429, "rate_limit_error", "rate_limit_exceeded"};
    case absl::StatusCode::kUnavailable:
      return {503, "server_error", "unavailable"};
    case absl::StatusCode::kDeadlineExceeded:
      return {504, "server_error", "timeout"};
    case absl::StatusCode::kCancelled:
      return {499, "server_error", std::nullopt};  // nginx's "client closed request"
    default:
      return {500, "server_error", std::nullopt};
  }
}

// The RetryInfo delay of the google.rpc.Status payload (auth::QuotaLedger's refusals carry one),
// rounded up to whole seconds and at least 1.
std::optional<int64_t> RetryAfterSeconds(const absl::Status& status) {
  const auto payload = status.GetPayload(auth::kRpcStatusPayloadUrl);
  google::rpc::Status rpc;
  if (!payload.has_value() || !rpc.ParseFromString(std::string(*payload))) return std::nullopt;
  for (const google::protobuf::Any& detail : rpc.details()) {
    google::rpc::RetryInfo retry;
    if (!detail.Is<google::rpc::RetryInfo>() || !detail.UnpackTo(&retry)) continue;
    int64_t seconds = std::max<int64_t>(retry.retry_delay().seconds(), 0);
    if (retry.retry_delay().nanos() > 0 && seconds < std::numeric_limits<int64_t>::max()) ++seconds;
    return std::max<int64_t>(seconds, 1);
  }
  return std::nullopt;
}

std::string ErrorBody(std::string_view message, std::string_view type, std::optional<std::string_view> code) {
  const Json error = {{"message", Truncated(message, kMaxErrorMessageBytes)},
                      {"type", std::string(type)},
                      {"param", nullptr},
                      {"code", code.has_value() ? Json(std::string(*code)) : Json(nullptr)}};
  return Dump(Json{{"error", error}});
}

}  // namespace

absl::StatusOr<ChatCompletionCall> ParseChatCompletion(std::string_view body) {
  static constexpr std::string_view kRequired[] = {"model", "messages"};
  return ParseCall<ChatCompletionCall>(body, kChatParameters, kRequired, std::nullopt);
}

absl::StatusOr<CompletionCall> ParseCompletion(std::string_view body) {
  static constexpr std::string_view kRequired[] = {"model", "prompt"};
  return ParseCall<CompletionCall>(body, kCompletionParameters, kRequired, kCompletionDefaultMaxTokens);
}

std::string FinishReason(StopReason reason) {
  switch (reason) {
    case airlock::v1::STOP_REASON_MAX_TOKENS:
    case airlock::v1::STOP_REASON_CONTEXT_FULL:
      return "length";
    default:
      return "stop";
  }
}

std::string ChatCompletionBody(std::string_view id, int64_t created, std::string_view model, std::string_view text,
                               StopReason reason, UsageCounts usage) {
  Json body = Envelope(id, "chat.completion", created, model);
  const Json message = {{"role", "assistant"}, {"content", std::string(text)}};
  body["choices"] = Json::array(
      {{{"index", 0}, {"message", message}, {"logprobs", nullptr}, {"finish_reason", FinishReason(reason)}}});
  body["usage"] = UsageJson(usage);
  body["system_fingerprint"] = nullptr;
  return Dump(body);
}

std::string ChatCompletionChunk(std::string_view id, int64_t created, std::string_view model,
                                std::optional<std::string_view> role, std::string_view delta_text,
                                std::optional<StopReason> finish) {
  Json delta = Json::object();
  if (role.has_value()) delta["role"] = std::string(*role);
  if (!delta_text.empty() || role.has_value()) delta["content"] = std::string(delta_text);
  Json body = Envelope(id, "chat.completion.chunk", created, model);
  body["system_fingerprint"] = nullptr;
  body["choices"] =
      Json::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", FinishJson(finish)}}});
  return Dump(body);
}

std::string ChatUsageChunk(std::string_view id, int64_t created, std::string_view model, UsageCounts usage) {
  Json body = Envelope(id, "chat.completion.chunk", created, model);
  body["system_fingerprint"] = nullptr;
  body["choices"] = Json::array();
  body["usage"] = UsageJson(usage);
  return Dump(body);
}

std::string CompletionBody(std::string_view id, int64_t created, std::string_view model, std::string_view text,
                           StopReason reason, UsageCounts usage) {
  Json body = Envelope(id, "text_completion", created, model);
  body["choices"] = Json::array(
      {{{"text", std::string(text)}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", FinishReason(reason)}}});
  body["usage"] = UsageJson(usage);
  return Dump(body);
}

std::string CompletionChunk(std::string_view id, int64_t created, std::string_view model, std::string_view text,
                            std::optional<StopReason> finish) {
  Json body = Envelope(id, "text_completion", created, model);
  body["choices"] = Json::array(
      {{{"text", std::string(text)}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", FinishJson(finish)}}});
  return Dump(body);
}

std::string CompletionUsageChunk(std::string_view id, int64_t created, std::string_view model, UsageCounts usage) {
  Json body = Envelope(id, "text_completion", created, model);
  body["choices"] = Json::array();
  body["usage"] = UsageJson(usage);
  return Dump(body);
}

namespace {
Json ModelJson(std::string_view name, int64_t created) {
  return {{"id", std::string(name)}, {"object", "model"}, {"created", created}, {"owned_by", "airlock"}};
}
}  // namespace

std::string ModelsBody(const std::vector<std::string>& model_names, int64_t created) {
  Json data = Json::array();
  for (const std::string& name : model_names) data.push_back(ModelJson(name, created));
  return Dump(Json{{"object", "list"}, {"data", std::move(data)}});
}

std::string ModelBody(std::string_view name, int64_t created) { return Dump(ModelJson(name, created)); }

std::string SseEvent(std::string_view json) { return absl::StrCat("data: ", ToAbsl(json), "\n\n"); }

HttpError ErrorResponse(const absl::Status& status) {
  const ErrorKind kind = KindOf(status);
  return HttpError{.status = kind.status,
                   .body = ErrorBody(std::string_view(status.message().data(), status.message().size()), kind.type,
                                     kind.code),
                   .retry_after_seconds = RetryAfterSeconds(status)};
}

HttpError PayloadTooLarge(size_t limit) {
  return HttpError{
      .status = 413,
      .body = ErrorBody(absl::StrCat("request body: larger than ", limit, " bytes (limits.max_request_bytes)"),
                        "invalid_request_error", std::nullopt),
      .retry_after_seconds = std::nullopt};
}

}  // namespace airlock::daemon::openai

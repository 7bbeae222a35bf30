// Request validation: API messages -> engine requests, every rule checked and named.
#include "daemon/request_validation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "auth/bounded_text.h"
#include "inference/base/status.h"
#include "inference/tokenizer/utf8.h"

namespace airlock::daemon {
namespace {

absl::Status Invalid(std::string_view field, std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(ToAbsl(field), ": ", ToAbsl(problem)));
}

absl::Status CheckText(std::string_view field, const std::string& text, bool allow_empty) {
  if (!allow_empty && text.empty()) return Invalid(field, "must not be empty");
  if (!inference::utf8::IsValid(text)) return Invalid(field, "is not valid UTF-8");
  return absl::OkStatus();
}

// max_tokens and stop strings, shared by Generate and Chat.
absl::Status ApplyCommon(bool has_max_tokens, int32_t max_tokens, const airlock::v1::SamplingParameters& sampling,
                         const google::protobuf::RepeatedPtrField<std::string>& stop, const RequestLimits& limits,
                         inference::GenerateRequest& out) {
  if (has_max_tokens) {
    if (max_tokens < 1 || static_cast<uint32_t>(max_tokens) > limits.max_tokens_per_request) {
      return Invalid("max_tokens", absl::StrCat("must be between 1 and ", limits.max_tokens_per_request,
                                                " (limits.max_tokens_per_request), got ", max_tokens));
    }
    out.max_tokens = max_tokens;
  } else {
    out.max_tokens = static_cast<int32_t>(std::min(limits.default_max_tokens, limits.max_tokens_per_request));
  }
  AIRLOCK_ASSIGN_OR_RETURN(out.sampling, ToSamplingParams(sampling));
  if (stop.size() > kMaxStopStrings) {
    return Invalid("stop", absl::StrCat("at most ", kMaxStopStrings, " stop strings, got ", stop.size()));
  }
  for (int i = 0; i < stop.size(); ++i) {
    const std::string field = absl::StrCat("stop[", i, "]");
    AIRLOCK_RETURN_IF_ERROR(CheckText(field, stop[i], false));
    if (stop[i].size() > kMaxStopStringBytes) {
      return Invalid(field, absl::StrCat("at most ", kMaxStopStringBytes, " bytes, got ", stop[i].size()));
    }
    out.stop.push_back(stop[i]);
  }
  return absl::OkStatus();
}

// response_format: its type and schema checked, then compiled for the model (so that a schema the
// engine cannot honour is refused before the request is queued, charged or recorded as started).
absl::Status ApplyResponseFormat(const airlock::v1::ResponseFormat& format, const inference::Engine& engine,
                                 inference::GenerateRequest& out) {
  using Type = airlock::v1::ResponseFormat;
  inference::ResponseFormat f;
  switch (format.type()) {
    case Type::TYPE_UNSPECIFIED:
    case Type::TYPE_TEXT: f.type = inference::ResponseFormat::Type::kText; break;
    case Type::TYPE_JSON_OBJECT: f.type = inference::ResponseFormat::Type::kJsonObject; break;
    case Type::TYPE_JSON_SCHEMA: f.type = inference::ResponseFormat::Type::kJsonSchema; break;
    default:
      return Invalid("response_format.type", absl::StrCat("unknown value ", static_cast<int>(format.type())));
  }
  if (f.type == inference::ResponseFormat::Type::kJsonSchema) {
    AIRLOCK_RETURN_IF_ERROR(CheckText("response_format.json_schema", format.json_schema(), false));
    if (format.json_schema().size() > kMaxJsonSchemaBytes) {
      return Invalid("response_format.json_schema",
                     absl::StrCat("is ", format.json_schema().size(), " bytes; at most ", kMaxJsonSchemaBytes));
    }
    f.json_schema = format.json_schema();
  } else if (!format.json_schema().empty()) {
    return Invalid("response_format.json_schema", "must be empty unless type is TYPE_JSON_SCHEMA");
  }
  absl::StatusOr<std::shared_ptr<inference::TokenMaskCache>> masks = engine.PrepareConstraint(f);
  if (!masks.ok()) {
    // The compiler names the keyword and where it is, both the caller's text: bounded here too.
    return absl::Status(masks.status().code(),
                        absl::StrCat("response_format.json_schema: ",
                                     ToAbsl(auth::BoundedForRecord(std::string(masks.status().message()), kMaxSchemaErrorBytes))));
  }
  out.response_format = std::move(f);
  out.constraint = std::move(*masks);
  return absl::OkStatus();
}

// The prompt must fit the limit and leave room for at least one generated token.
absl::Status CheckPromptLength(std::string_view field, size_t n_tokens, const inference::Engine& engine,
                               const RequestLimits& limits) {
  const uint32_t context = static_cast<uint32_t>(engine.context_length());
  const uint32_t limit = limits.max_prompt_tokens == 0 ? context : std::min(limits.max_prompt_tokens, context);
  if (n_tokens > limit) {
    return Invalid(field, absl::StrCat("is ", n_tokens, " tokens; the limit is ", limit,
                                       limits.max_prompt_tokens != 0 && limits.max_prompt_tokens < context
                                           ? " (limits.max_prompt_tokens)"
                                           : " (the model's context length)"));
  }
  if (n_tokens >= context) {
    return Invalid(field, absl::StrCat("is ", n_tokens, " tokens and leaves no room in the model's context of ",
                                       context, " tokens"));
  }
  return absl::OkStatus();
}

// The prompt plus max_tokens (up to the context) must fit the model's whole KV pool: such a request
// could never run. The engine refuses it too (Engine::Start); refused here it takes no place in the
// queue, no quota and no wait, and the message names the setting.
absl::Status CheckKvPool(size_t n_prompt, int32_t max_tokens, const inference::Engine& engine) {
  const inference::EngineStats stats = engine.stats();
  if (stats.kv_block_tokens <= 0) return absl::OkStatus();  // no pool figures: leave it to the engine
  const int64_t positions =
      std::min<int64_t>(static_cast<int64_t>(n_prompt) + max_tokens, engine.context_length());
  const int64_t pool = stats.kv_blocks_total * stats.kv_block_tokens;
  const int64_t blocks = (positions + stats.kv_block_tokens - 1) / stats.kv_block_tokens;
  if (blocks <= stats.kv_blocks_total) return absl::OkStatus();
  return absl::OutOfRangeError(absl::StrCat(
      "max_tokens: the prompt (", n_prompt, " tokens) plus max_tokens (", max_tokens, ") needs up to ", positions,
      " KV-cache positions, but the model's whole KV pool holds ", pool,
      " (models[].kv_cache_tokens): ask for fewer tokens or a shorter prompt"));
}

}  // namespace

absl::Status CheckModelName(std::string_view model) {
  if (model.size() > kMaxModelNameBytes) {
    return Invalid("model", absl::StrCat("is ", model.size(), " bytes; at most ", kMaxModelNameBytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<inference::SamplingParams> ToSamplingParams(const airlock::v1::SamplingParameters& sampling) {
  inference::SamplingParams p;
  if (sampling.has_temperature()) p.temperature = sampling.temperature();
  if (sampling.has_top_k()) p.top_k = sampling.top_k();
  if (sampling.has_top_p()) p.top_p = sampling.top_p();
  if (sampling.has_min_p()) p.min_p = sampling.min_p();
  if (sampling.has_repeat_penalty()) p.repeat_penalty = sampling.repeat_penalty();
  if (sampling.has_repeat_last_n()) {
    if (sampling.repeat_last_n() > (1 << 20)) {
      return Invalid("sampling.repeat_last_n", absl::StrCat("must be between -1 and 1048576, got ",
                                                            sampling.repeat_last_n()));
    }
    p.repeat_last_n = sampling.repeat_last_n();
  }
  if (sampling.has_frequency_penalty()) p.frequency_penalty = sampling.frequency_penalty();
  if (sampling.has_presence_penalty()) p.presence_penalty = sampling.presence_penalty();
  if (sampling.has_seed()) {
    p.seed = sampling.seed();
  } else {
    // A fresh seed per request unless the caller asks for reproducibility.
    static thread_local uint64_t state = 0x9E3779B97F4A7C15ull ^ reinterpret_cast<uintptr_t>(&state);
    state += 0x9E3779B97F4A7C15ull;
    uint64_t z = state ^ static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    p.seed = z ^ (z >> 31);
  }
  const absl::Status valid = inference::ValidateSamplingParams(p);
  if (!valid.ok()) return Invalid("sampling", std::string(valid.message()));
  return p;
}

absl::StatusOr<inference::GenerateRequest> PrepareGenerate(const airlock::v1::GenerateRequest& request,
                                                           const inference::Engine& engine,
                                                           const RequestLimits& limits) {
  inference::GenerateRequest out;
  AIRLOCK_RETURN_IF_ERROR(CheckText("prompt", request.prompt(), false));
  AIRLOCK_RETURN_IF_ERROR(ApplyCommon(request.has_max_tokens(), request.max_tokens(), request.sampling(),
                                      request.stop(), limits, out));
  // Control tokens typed into a raw prompt stay text: only the chat template may emit them.
  out.prompt_tokens = engine.tokenizer().Encode(request.prompt(), /*add_special=*/true, /*parse_special=*/false);
  AIRLOCK_RETURN_IF_ERROR(CheckPromptLength("prompt", out.prompt_tokens.size(), engine, limits));
  AIRLOCK_RETURN_IF_ERROR(CheckKvPool(out.prompt_tokens.size(), out.max_tokens, engine));
  AIRLOCK_RETURN_IF_ERROR(ApplyResponseFormat(request.response_format(), engine, out));
  return out;
}

absl::StatusOr<inference::GenerateRequest> PrepareChat(const airlock::v1::ChatRequest& request,
                                                       const inference::Engine& engine,
                                                       const inference::ChatTemplate& chat_template,
                                                       const RequestLimits& limits) {
  inference::GenerateRequest out;
  if (request.messages().empty()) return Invalid("messages", "must hold at least one message");
  if (request.messages_size() > kMaxChatMessages) {
    return Invalid("messages", absl::StrCat("at most ", kMaxChatMessages, " messages, got ", request.messages_size()));
  }
  std::vector<inference::ChatMessage> messages;
  messages.reserve(static_cast<size_t>(request.messages_size()));
  for (int i = 0; i < request.messages_size(); ++i) {
    const airlock::v1::ChatMessage& m = request.messages(i);
    const std::string field = absl::StrCat("messages[", i, "]");
    // Length first: the error below echoes the role.
    if (m.role().size() > kMaxChatRoleBytes) {
      return Invalid(field + ".role", absl::StrCat("is ", m.role().size(), " bytes; at most ", kMaxChatRoleBytes));
    }
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant") {
      return Invalid(field + ".role", absl::StrCat("must be \"system\", \"user\" or \"assistant\", got \"",
                                                   inference::utf8::Sanitize(m.role()), "\""));
    }
    if (m.role() == "system" && i != 0) return Invalid(field + ".role", "\"system\" is allowed only as the first message");
    AIRLOCK_RETURN_IF_ERROR(CheckText(field + ".content", m.content(), true));
    messages.push_back(inference::ChatMessage{m.role(), m.content()});
  }
  if (messages.back().role == "assistant") {
    return Invalid(absl::StrCat("messages[", request.messages_size() - 1, "].role"),
                   "the last message must not be \"assistant\" (continuing a reply is not supported)");
  }
  AIRLOCK_RETURN_IF_ERROR(ApplyCommon(request.has_max_tokens(), request.max_tokens(), request.sampling(),
                                      request.stop(), limits, out));
  absl::StatusOr<inference::RenderedChat> rendered = chat_template.Render(messages);
  if (!rendered.ok()) return Invalid("messages", std::string(rendered.status().message()));
  std::vector<inference::TextSegment> segments;
  segments.reserve(rendered->segments.size());
  for (const inference::ChatSegment& s : rendered->segments) {
    segments.push_back(inference::TextSegment{s.text, s.special});
  }
  out.prompt_tokens = engine.tokenizer().EncodeSegments(segments, /*add_special=*/true);
  AIRLOCK_RETURN_IF_ERROR(CheckPromptLength("messages", out.prompt_tokens.size(), engine, limits));
  AIRLOCK_RETURN_IF_ERROR(CheckKvPool(out.prompt_tokens.size(), out.max_tokens, engine));
  AIRLOCK_RETURN_IF_ERROR(ApplyResponseFormat(request.response_format(), engine, out));
  return out;
}

}  // namespace airlock::daemon

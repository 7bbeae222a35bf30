// OpenAI's HTTP JSON API (/v1/chat/completions, /v1/completions, /v1/models) translated to and from
// our protobuf requests: request bodies in, response bodies, stream chunks and error bodies out.
// No networking here; the HTTP handler reads and writes the bytes.
//
// Parsing checks the shape and types of a body and maps it; the ranges are checked afterwards by
// PrepareChat/PrepareGenerate (daemon/request_validation.h), as for a gRPC call. Errors are
// INVALID_ARGUMENT and start with the OpenAI parameter's name ("messages[2].content: ..."); a
// request-supplied name they quote (an unknown parameter, a role) is cut to 64 bytes and no value
// is ever quoted.
//
// Thread-safety: pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "airlock/v1/inference.pb.h"

namespace airlock::daemon::openai {

// Deepest nesting of arrays and objects a request body may have (checked before it is parsed).
inline constexpr int kMaxBodyDepth = 64;
// Longest part of a request-supplied name quoted in an error; longer ones end in "…".
inline constexpr size_t kMaxQuotedNameBytes = 64;
// OpenAI's own limit on stop strings (ours, kMaxStopStrings, is larger).
inline constexpr int kMaxOpenAiStopStrings = 4;
// OpenAI's default max_tokens for /v1/completions (chat leaves it to our default).
inline constexpr int32_t kCompletionDefaultMaxTokens = 16;
// Longest error message sent back (a backstop: our messages are already bounded).
inline constexpr size_t kMaxErrorMessageBytes = 1024;

// ---- Request bodies ----

// POST /v1/chat/completions. Sampling parameters OpenAI defines differently from us are always
// set: temperature and top_p 1 when the body leaves them unset; top_k 0, min_p 0,
// repeat_penalty 1 and repeat_last_n -1 (presence/frequency penalties over the whole context).
struct ChatCompletionCall {
  airlock::v1::ChatRequest request;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
};
absl::StatusOr<ChatCompletionCall> ParseChatCompletion(std::string_view body);

// POST /v1/completions (legacy): one text prompt; max_tokens defaults to 16 as OpenAI's does.
// Sampling defaults as ParseChatCompletion.
struct CompletionCall {
  airlock::v1::GenerateRequest request;
  bool stream = false;
  bool include_usage = false;
};
absl::StatusOr<CompletionCall> ParseCompletion(std::string_view body);

// ---- Response bodies (compact JSON) ----

// "length" for MAX_TOKENS and CONTEXT_FULL, "stop" otherwise.
std::string FinishReason(airlock::v1::StopReason reason);

struct UsageCounts {
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
};

// A whole chat completion ("chat.completion").
std::string ChatCompletionBody(std::string_view id, int64_t created, std::string_view model, std::string_view text,
                               airlock::v1::StopReason reason, UsageCounts usage);
// One streamed chunk ("chat.completion.chunk"): the delta carries `role` when given and the content
// when it is non-empty or a role is given; finish_reason is null until `finish` is given.
std::string ChatCompletionChunk(std::string_view id, int64_t created, std::string_view model,
                                std::optional<std::string_view> role, std::string_view delta_text,
                                std::optional<airlock::v1::StopReason> finish);
// The last chunk of a stream with stream_options.include_usage: no choices, the usage.
std::string ChatUsageChunk(std::string_view id, int64_t created, std::string_view model, UsageCounts usage);

// The same for /v1/completions ("text_completion").
std::string CompletionBody(std::string_view id, int64_t created, std::string_view model, std::string_view text,
                           airlock::v1::StopReason reason, UsageCounts usage);
std::string CompletionChunk(std::string_view id, int64_t created, std::string_view model, std::string_view text,
                            std::optional<airlock::v1::StopReason> finish);
std::string CompletionUsageChunk(std::string_view id, int64_t created, std::string_view model, UsageCounts usage);

// GET /v1/models and GET /v1/models/{id}; owned_by is "airlock".
std::string ModelsBody(const std::vector<std::string>& model_names, int64_t created);
std::string ModelBody(std::string_view name, int64_t created);

// One server-sent event carrying `json`, and the event that ends a stream.
std::string SseEvent(std::string_view json);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// ---- Errors ----

struct HttpError {
  int status = 500;
  std::string body;  // {"error":{"message","type","param":null,"code"}}
  // For a Retry-After header: the status's google.rpc.RetryInfo (a quota refusal carries one),
  // rounded up to whole seconds, at least 1.
  std::optional<int64_t> retry_after_seconds;
};

// The HTTP status and OpenAI error body of a failed call: 400 for INVALID_ARGUMENT, OUT_OF_RANGE
// and FAILED_PRECONDITION, 401, 403, 404 (code "model_not_found" when the message starts with
// "model:"), 429 for RESOURCE_EXHAUSTED, 499 for CANCELLED, 503, 504, else 500. The message is the
// status's own, cut to kMaxErrorMessageBytes.
HttpError ErrorResponse(const absl::Status& status);

// 413 for a body over limits.max_request_bytes.
HttpError PayloadTooLarge(size_t limit);

}  // namespace airlock::daemon::openai

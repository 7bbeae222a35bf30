// Turns API requests into engine requests, checking every field against the rules written in
// proto/airlock/v1/inference.proto. Errors are INVALID_ARGUMENT and start with the field's name
// ("sampling.top_p: must be in (0, 1], got 1.5"), so a client developer knows what to fix.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "airlock/v1/inference.pb.h"
#include "inference/chat/chat_template.h"
#include "inference/engine.h"

namespace airlock::daemon {

// The limits that apply to one request (from the config's `limits`, resolved for the model).
struct RequestLimits {
  uint32_t max_prompt_tokens = 0;       // 0 = the model's context length
  uint32_t max_tokens_per_request = 2048;
  uint32_t default_max_tokens = 256;    // when the request leaves max_tokens unset
};

inline constexpr int kMaxStopStrings = 8;
inline constexpr size_t kMaxStopStringBytes = 256;
inline constexpr int kMaxChatMessages = 256;
// Longest model name a request may carry, and longest chat role ("system", "user", "assistant"
// are the only roles; the bound keeps a refusal's echo small). Checked before a name is echoed
// anywhere (docs/security.md, "Bounds on what a caller sends").
inline constexpr size_t kMaxModelNameBytes = 128;
inline constexpr size_t kMaxChatRoleBytes = 32;
// Longest JSON schema a response_format may carry.
inline constexpr size_t kMaxJsonSchemaBytes = 65536;
// Longest part of a schema error (which quotes keywords and pointers of the schema) echoed back.
inline constexpr size_t kMaxSchemaErrorBytes = 512;

// INVALID_ARGUMENT "model: is N bytes; at most 128" for a longer model name (an empty one is
// left to the method, which may not need a model). Called when the call is admitted, before the
// name is used, logged or recorded.
absl::Status CheckModelName(std::string_view model);

// Sampling parameters with defaults for unset fields; INVALID_ARGUMENT "sampling.<field>: ...".
absl::StatusOr<inference::SamplingParams> ToSamplingParams(const airlock::v1::SamplingParameters& sampling);

// Checks model/prompt/max_tokens/sampling/stop of a Generate request and tokenizes the prompt
// (control tokens in it stay text). The prompt is checked against the limits and the context.
absl::StatusOr<inference::GenerateRequest> PrepareGenerate(const airlock::v1::GenerateRequest& request,
                                                           const inference::Engine& engine,
                                                           const RequestLimits& limits);

// As PrepareGenerate for a Chat request: messages are rendered with `chat_template` and tokenized
// so that message content can never spell a control token.
absl::StatusOr<inference::GenerateRequest> PrepareChat(const airlock::v1::ChatRequest& request,
                                                       const inference::Engine& engine,
                                                       const inference::ChatTemplate& chat_template,
                                                       const RequestLimits& limits);

}  // namespace airlock::daemon

// Chat templates: renders role-tagged messages into a model's prompt format without running Jinja.
//
// Like llama.cpp (llm_chat_detect_template / llm_chat_apply_template in src/llama-chat.cpp), the
// family is recognised from distinctive substrings of the GGUF `tokenizer.chat_template` text and
// each family is rendered by hand-written code. The rendered text is byte-for-byte what llama.cpp's
// non-Jinja path produces for the same family, so prompts (and therefore outputs) match it. A Jinja
// interpreter would be a large attack surface for a file that comes with an untrusted model; the
// price is that templates of an unknown shape are refused and must be named in the configuration.
//
// The result keeps template text and message content apart (ChatSegment::special), so the caller
// can let only the template's own markers become control tokens.
//
// Thread-safety: ChatTemplate is an immutable value; any thread may call Render concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace airlock::inference {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
};

// One piece of a rendered prompt. Template text (role markers, control tokens like "<|im_start|>")
// has special=true: the tokenizer may turn it into control tokens. Message content has
// special=false: it is always tokenized as plain text, so a user who types "<|im_end|>" cannot
// forge a turn boundary. Adjacent segments of the same kind are merged and none is empty.
struct ChatSegment {
  std::string text;
  bool special = false;

  bool operator==(const ChatSegment& other) const = default;
};

struct RenderedChat {
  std::vector<ChatSegment> segments;

  // The whole prompt: all segments concatenated.
  std::string Text() const;
};

class ChatTemplate {
 public:
  // The template families (one per llama.cpp LLM_CHAT_TEMPLATE_* value).
  enum class Family : uint8_t {
    kChatMl,
    kLlama2,
    kLlama2Sys,
    kLlama2SysBos,
    kLlama2SysStrip,
    kMistralV1,
    kMistralV3,
    kMistralV3Tekken,
    kMistralV7,
    kPhi3,
    kPhi4,
    kFalcon3,
    kZephyr,
    kMonarch,
    kGemma,
    kOrion,
    kOpenChat,
    kVicuna,
    kVicunaOrca,
    kDeepSeek,
    kDeepSeek2,
    kDeepSeek3,
    kCommandR,
    kLlama3,
    kChatGlm3,
    kChatGlm4,
    kGlmEdge,
    kMiniCpm,
    kExaone3,
    kRwkvWorld,
    kGranite,
    kGigaChat,
    kMegrez,
  };

  // Recognises the family from a GGUF `tokenizer.chat_template` (Jinja source), with llama.cpp's
  // rules and precedence. As in llama.cpp, a text that is exactly one of Names() is that family,
  // and one that starts with "mistral" is the pre-v1 Mistral format ("llama2"). NOT_FOUND when the
  // text is empty or matches no family; the message quotes the start of the template (escaped) and
  // lists the names models[].chat_template accepts instead.
  static absl::StatusOr<ChatTemplate> FromJinja(std::string_view jinja);

  // By family name (the configuration override), e.g. "llama2-sys", "chatml", "mistral-v7".
  // INVALID_ARGUMENT listing the valid names when `name` is not one of Names().
  static absl::StatusOr<ChatTemplate> FromName(std::string_view name);

  // Every family name, in a fixed order (the same names as llama.cpp's built-in templates).
  static const std::vector<std::string>& Names();

  Family family() const { return family_; }
  std::string_view name() const;

  // Renders the conversation. Roles must be "system", "user" or "assistant" (INVALID_ARGUMENT
  // naming the index, e.g. "messages[2].role: ..."); an empty conversation is INVALID_ARGUMENT.
  // With add_generation_prompt the opening of an assistant turn is appended, for the families whose
  // format has one; the Llama 2 and Mistral families, Orion, MiniCPM and RWKV end every user turn
  // with it already and ignore the flag, as llama.cpp does.
  absl::StatusOr<RenderedChat> Render(const std::vector<ChatMessage>& messages,
                                      bool add_generation_prompt = true) const;

  bool operator==(const ChatTemplate& other) const = default;

 private:
  explicit ChatTemplate(Family family) : family_(family) {}

  Family family_;
};

}  // namespace airlock::inference

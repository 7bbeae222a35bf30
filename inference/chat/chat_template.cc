// Chat template recognition and rendering: one hand-written renderer per template family, output
// identical to llama.cpp's llm_chat_apply_template (see chat_template.h for why there is no Jinja).
#include "inference/chat/chat_template.h"

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "inference/base/status.h"

namespace airlock::inference {
namespace {

using Family = ChatTemplate::Family;

struct FamilyName {
  Family family;
  const char* name;
};

// The configuration names are llama.cpp's built-in template names, so a model card's advice
// ("use --chat-template llama2-sys") carries over unchanged.
constexpr std::array<FamilyName, 33> kFamilyNames = {{
    {Family::kChatMl, "chatml"},
    {Family::kLlama2, "llama2"},
    {Family::kLlama2Sys, "llama2-sys"},
    {Family::kLlama2SysBos, "llama2-sys-bos"},
    {Family::kLlama2SysStrip, "llama2-sys-strip"},
    {Family::kMistralV1, "mistral-v1"},
    {Family::kMistralV3, "mistral-v3"},
    {Family::kMistralV3Tekken, "mistral-v3-tekken"},
    {Family::kMistralV7, "mistral-v7"},
    {Family::kPhi3, "phi3"},
    {Family::kPhi4, "phi4"},
    {Family::kFalcon3, "falcon3"},
    {Family::kZephyr, "zephyr"},
    {Family::kMonarch, "monarch"},
    {Family::kGemma, "gemma"},
    {Family::kOrion, "orion"},
    {Family::kOpenChat, "openchat"},
    {Family::kVicuna, "vicuna"},
    {Family::kVicunaOrca, "vicuna-orca"},
    {Family::kDeepSeek, "deepseek"},
    {Family::kDeepSeek2, "deepseek2"},
    {Family::kDeepSeek3, "deepseek3"},
    {Family::kCommandR, "command-r"},
    {Family::kLlama3, "llama3"},
    {Family::kChatGlm3, "chatglm3"},
    {Family::kChatGlm4, "chatglm4"},
    {Family::kGlmEdge, "glmedge"},
    {Family::kMiniCpm, "minicpm"},
    {Family::kExaone3, "exaone3"},
    {Family::kRwkvWorld, "rwkv-world"},
    {Family::kGranite, "granite"},
    {Family::kGigaChat, "gigachat"},
    {Family::kMegrez, "megrez"},
}};

std::string NameList() { return absl::StrJoin(ChatTemplate::Names(), ", "); }

// Recognises the family from substrings of the Jinja source. The order of the checks matters (a
// Phi-4 template also contains "<|im_start|>", a Mistral one may contain "<<SYS>>", ...) and is
// llama.cpp's, so that a model is rendered the way llama.cpp renders it.
std::optional<Family> DetectFamily(std::string_view t) {
  const auto has = [t](std::string_view needle) { return t.find(needle) != std::string_view::npos; };
  Family f;
  if (has("<|im_start|>")) {
    f = has("<|im_sep|>") ? Family::kPhi4 : Family::kChatMl;
  } else if (t.starts_with("mistral") || has("[INST]")) {
    if (has("[SYSTEM_PROMPT]")) {
      f = Family::kMistralV7;
    } else if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
      // Mistral's official v1 / v3 / v3-tekken templates differ only in the spaces around [INST].
      if (has(" [INST]")) {
        f = Family::kMistralV1;
      } else if (has("\"[INST]\"")) {
        f = Family::kMistralV3Tekken;
      } else {
        f = Family::kMistralV3;
      }
    } else if (has("content.strip()")) {
      f = Family::kLlama2SysStrip;
    } else if (has("bos_token + '[INST]")) {
      f = Family::kLlama2SysBos;
    } else if (has("<<SYS>>")) {
      f = Family::kLlama2Sys;
    } else {
      f = Family::kLlama2;  // no system block: the system text is folded into the first turn
    }
  } else if (has("<|assistant|>") && has("<|end|>")) {
    f = Family::kPhi3;
  } else if (has("<|assistant|>") && has("<|user|>")) {
    f = has("</s>") ? Family::kFalcon3 : Family::kGlmEdge;
  } else if (has("<|user|>") && has("<|endoftext|>")) {
    f = Family::kZephyr;
  } else if (has("bos_token + message['role']")) {
    f = Family::kMonarch;
  } else if (has("<start_of_turn>")) {
    f = Family::kGemma;
  } else if (has("'\\n\\nAssistant: ' + eos_token")) {
    f = Family::kOrion;
  } else if (has("GPT4 Correct ")) {
    f = Family::kOpenChat;
  } else if (has("USER: ") && has("ASSISTANT: ")) {
    f = has("SYSTEM: ") ? Family::kVicunaOrca : Family::kVicuna;
  } else if (has("### Instruction:") && has("<|EOT|>")) {
    f = Family::kDeepSeek;  // deepseek-coder-*-instruct
  } else if (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")) {
    f = Family::kCommandR;
  } else if (has("<|start_header_id|>") && has("<|end_header_id|>")) {
    f = Family::kLlama3;
  } else if (has("[gMASK]sop")) {
    f = Family::kChatGlm3;
  } else if (has("[gMASK]<sop>")) {
    f = Family::kChatGlm4;
  } else if (has("<用户>")) {
    f = Family::kMiniCpm;
  } else if (has("'Assistant: ' + message['content'] + eos_token")) {
    f = Family::kDeepSeek2;  // DeepSeek-V2 and deepseek-llm-*-chat share this format
  } else if (has("<｜Assistant｜>") && has("<｜User｜>") && has("<｜end▁of▁sentence｜>")) {
    f = Family::kDeepSeek3;  // note the full-width bars (U+FF5C) and U+2581
  } else if (has("[|system|]") && has("[|assistant|]") && has("[|endofturn|]")) {
    f = Family::kExaone3;
  } else if (has("rwkv-world")) {
    f = Family::kRwkvWorld;
  } else if (has("<|start_of_role|>")) {
    f = Family::kGranite;
  } else if (has("message['role'] + additional_special_tokens[0] + message['content'] + "
                 "additional_special_tokens[1]")) {
    f = Family::kGigaChat;
  } else if (has("<|role_start|>")) {
    f = Family::kMegrez;
  } else {
    return std::nullopt;
  }
  return f;
}

enum class Role : uint8_t { kSystem, kUser, kAssistant };

struct Turn {
  Role role;
  std::string_view role_name;  // the validated role string, for formats that print it
  std::string_view content;
};

// Strips the characters C's isspace() accepts in the "C" locale, as llama.cpp's trim() does.
std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\v\f\r";
  const size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(kSpace) - begin + 1);
}

// Accumulates the prompt as alternating template / content segments.
class PromptBuilder {
 public:
  // Template text: markers and control tokens.
  void Markup(std::string_view text) { Append(text, true); }
  // Conversation text: never parsed for special tokens.
  void Content(std::string_view text) { Append(text, false); }

  RenderedChat Finish() && { return RenderedChat{std::move(segments_)}; }

 private:
  void Append(std::string_view text, bool special) {
    if (text.empty()) return;
    if (!segments_.empty() && segments_.back().special == special) {
      segments_.back().text.append(text);
    } else {
      segments_.push_back(ChatSegment{std::string(text), special});
    }
  }

  std::vector<ChatSegment> segments_;
};

// Formats of the shape <open(role)> content <close>, optionally trimmed, plus a generation prompt.
struct SimpleFormat {
  std::string_view open_prefix;
  std::string_view open_suffix;  // the role name goes between prefix and suffix
  std::string_view close;
  std::string_view generation_prompt;
  bool trim = false;
};

void RenderSimple(const SimpleFormat& format, const std::vector<Turn>& turns, bool add_gen,
                  PromptBuilder& out) {
  for (const Turn& turn : turns) {
    out.Markup(format.open_prefix);
    out.Markup(turn.role_name);
    out.Markup(format.open_suffix);
    out.Content(format.trim ? Trim(turn.content) : turn.content);
    out.Markup(format.close);
  }
  if (add_gen) out.Markup(format.generation_prompt);
}

// Formats with fixed text per role (the role name is not printed as such).
struct PerRoleFormat {
  std::array<std::string_view, 3> open;   // indexed by Role
  std::array<std::string_view, 3> close;  // indexed by Role
  std::string_view generation_prompt;
  bool trim = false;
};

void RenderPerRole(const PerRoleFormat& format, const std::vector<Turn>& turns, bool add_gen,
                   PromptBuilder& out) {
  for (const Turn& turn : turns) {
    const auto r = static_cast<size_t>(turn.role);
    out.Markup(format.open[r]);
    out.Content(format.trim ? Trim(turn.content) : turn.content);
    out.Markup(format.close[r]);
  }
  if (add_gen) out.Markup(format.generation_prompt);
}

// Llama 2 and its variants. The prompt opens inside the first [INST] (BOS comes from the
// tokenizer); a system message is wrapped in <<SYS>> where the variant knows it, else it is plain
// text ahead of the first user message. Later turns reopen [INST], with a BOS in the text for
// the "-bos" variant.
void RenderLlama2(Family family, const std::vector<Turn>& turns, PromptBuilder& out) {
  const bool system_block = family != Family::kLlama2;
  const bool bos_between_turns = family == Family::kLlama2SysBos;
  const bool strip = family == Family::kLlama2SysStrip;
  bool in_turn = true;
  out.Markup("[INST] ");
  for (const Turn& turn : turns) {
    const std::string_view content = strip ? Trim(turn.content) : turn.content;
    if (!in_turn) {
      out.Markup(bos_between_turns ? "<s>[INST] " : "[INST] ");
      in_turn = true;
    }
    switch (turn.role) {
      case Role::kSystem:
        if (system_block) {
          out.Markup("<<SYS>>\n");
          out.Content(content);
          out.Markup("\n<</SYS>>\n\n");
        } else {
          out.Content(content);
          out.Markup("\n");
        }
        break;
      case Role::kUser:
        out.Content(content);
        out.Markup(" [/INST]");
        break;
      case Role::kAssistant:
        out.Content(content);
        out.Markup("</s>");
        in_turn = false;
        break;
    }
  }
}

// Mistral's official v1, v3 and v3-tekken formats: the same layout with different spacing around
// [INST]/[/INST]; v3 also trims assistant replies. A system message opens the first [INST] block.
void RenderMistral(Family family, const std::vector<Turn>& turns, PromptBuilder& out) {
  const std::string_view lead = family == Family::kMistralV1 ? " " : "";
  const std::string_view trail = family == Family::kMistralV3Tekken ? "" : " ";
  const bool trim_reply = family == Family::kMistralV3;
  bool in_turn = false;
  for (const Turn& turn : turns) {
    if (!in_turn) {
      out.Markup(lead);
      out.Markup("[INST]");
      out.Markup(trail);
      in_turn = true;
    }
    switch (turn.role) {
      case Role::kSystem:
        out.Content(turn.content);
        out.Markup("\n\n");
        break;
      case Role::kUser:
        out.Content(turn.content);
        out.Markup(lead);
        out.Markup("[/INST]");
        break;
      case Role::kAssistant:
        out.Markup(trail);
        out.Content(trim_reply ? Trim(turn.content) : turn.content);
        out.Markup("</s>");
        in_turn = false;
        break;
    }
  }
}

// Gemma has no system role: the (trimmed) system text is prepended to the next user turn.
void RenderGemma(const std::vector<Turn>& turns, bool add_gen, PromptBuilder& out) {
  std::string_view pending_system;
  for (const Turn& turn : turns) {
    if (turn.role == Role::kSystem) {
      pending_system = Trim(turn.content);
      continue;
    }
    const bool is_model = turn.role == Role::kAssistant;
    out.Markup(is_model ? "<start_of_turn>model\n" : "<start_of_turn>user\n");
    if (!pending_system.empty() && !is_model) {
      out.Content(pending_system);
      out.Markup("\n\n");
      pending_system = {};
    }
    out.Content(Trim(turn.content));
    out.Markup("<end_of_turn>\n");
  }
  if (add_gen) out.Markup("<start_of_turn>model\n");
}

// Orion-14B-Chat: no system role (merged into the next user turn); each user turn ends with the
// assistant prompt followed by an EOS, exactly as llama.cpp writes it.
void RenderOrion(const std::vector<Turn>& turns, PromptBuilder& out) {
  std::string_view pending_system;
  for (const Turn& turn : turns) {
    switch (turn.role) {
      case Role::kSystem:
        pending_system = turn.content;
        break;
      case Role::kUser:
        out.Markup("Human: ");
        if (!pending_system.empty()) {
          out.Content(pending_system);
          out.Markup("\n\n");
          pending_system = {};
        }
        out.Content(turn.content);
        out.Markup("\n\nAssistant: </s>");
        break;
      case Role::kAssistant:
        out.Content(turn.content);
        out.Markup("</s>");
        break;
    }
  }
}

// Alpha-Monarch: every turn but the first starts with a BOS written in the text.
void RenderMonarch(const std::vector<Turn>& turns, bool add_gen, PromptBuilder& out) {
  for (size_t i = 0; i < turns.size(); ++i) {
    if (i > 0) out.Markup("<s>");
    out.Markup(turns[i].role_name);
    out.Markup("\n");
    out.Content(turns[i].content);
    out.Markup("</s>\n");
  }
  if (add_gen) out.Markup("<s>assistant\n");
}

// ChatGLM3/4 and GLM-Edge: "<|role|>\n" then the content, with no closing marker.
void RenderGlm(std::string_view preamble, std::string_view after_role, const std::vector<Turn>& turns,
               bool add_gen, PromptBuilder& out) {
  out.Markup(preamble);
  for (const Turn& turn : turns) {
    out.Markup("<|");
    out.Markup(turn.role_name);
    out.Markup("|>");
    out.Markup(after_role);
    out.Content(turn.content);
  }
  if (add_gen) out.Markup("<|assistant|>");
}

// MiniCPM: only user turns are marked; everything is trimmed; no generation prompt of its own.
void RenderMiniCpm(const std::vector<Turn>& turns, PromptBuilder& out) {
  for (const Turn& turn : turns) {
    if (turn.role == Role::kUser) {
      out.Markup("<用户>");
      out.Content(Trim(turn.content));
      out.Markup("<AI>");
    } else {
      out.Content(Trim(turn.content));
    }
  }
}

// RWKV World: needs "\n\n" as the model's end-of-turn; the assistant prompt follows every user turn.
void RenderRwkvWorld(const std::vector<Turn>& turns, PromptBuilder& out) {
  for (const Turn& turn : turns) {
    if (turn.role == Role::kUser) {
      out.Markup("User: ");
      out.Content(turn.content);
      out.Markup("\n\nAssistant:");
    } else {
      out.Content(turn.content);
      out.Markup("\n\n");
    }
  }
}

// GigaChat: a leading BOS (in the text, as llama.cpp writes it), the first message as system text
// when it is one; later system messages are dropped, as in llama.cpp.
void RenderGigaChat(const std::vector<Turn>& turns, bool add_gen, PromptBuilder& out) {
  const bool has_system = turns.front().role == Role::kSystem;
  out.Markup("<s>");
  if (has_system) {
    out.Content(turns.front().content);
    out.Markup("<|message_sep|>");
  }
  for (size_t i = has_system ? 1 : 0; i < turns.size(); ++i) {
    const Turn& turn = turns[i];
    if (turn.role == Role::kUser) {
      out.Markup("user<|role_sep|>");
      out.Content(turn.content);
      out.Markup("<|message_sep|>available functions<|role_sep|>[]<|message_sep|>");
    } else if (turn.role == Role::kAssistant) {
      out.Markup("assistant<|role_sep|>");
      out.Content(turn.content);
      out.Markup("<|message_sep|>");
    }
  }
  if (add_gen) out.Markup("assistant<|role_sep|>");
}

void RenderFamily(Family family, const std::vector<Turn>& turns, bool add_gen, PromptBuilder& out) {
  switch (family) {
    case Family::kChatMl:
      return RenderSimple({"<|im_start|>", "\n", "<|im_end|>\n", "<|im_start|>assistant\n"}, turns, add_gen,
                          out);
    case Family::kLlama2:
    case Family::kLlama2Sys:
    case Family::kLlama2SysBos:
    case Family::kLlama2SysStrip:
      return RenderLlama2(family, turns, out);
    case Family::kMistralV1:
    case Family::kMistralV3:
    case Family::kMistralV3Tekken:
      return RenderMistral(family, turns, out);
    case Family::kMistralV7:
      return RenderPerRole(
          {{"[SYSTEM_PROMPT] ", "[INST] ", " "}, {"[/SYSTEM_PROMPT]", "[/INST]", "</s>"}, ""}, turns,
          /*add_gen=*/false, out);
    case Family::kPhi3:
      return RenderSimple({"<|", "|>\n", "<|end|>\n", "<|assistant|>\n"}, turns, add_gen, out);
    case Family::kPhi4:
      return RenderSimple({"<|im_start|>", "<|im_sep|>", "<|im_end|>", "<|im_start|>assistant<|im_sep|>"},
                          turns, add_gen, out);
    case Family::kFalcon3:
      return RenderSimple({"<|", "|>\n", "\n", "<|assistant|>\n"}, turns, add_gen, out);
    case Family::kZephyr:
      return RenderSimple({"<|", "|>\n", "<|endoftext|>\n", "<|assistant|>\n"}, turns, add_gen, out);
    case Family::kMonarch:
      return RenderMonarch(turns, add_gen, out);
    case Family::kGemma:
      return RenderGemma(turns, add_gen, out);
    case Family::kOrion:
      return RenderOrion(turns, out);
    case Family::kOpenChat:
      return RenderPerRole({{"", "GPT4 Correct User: ", "GPT4 Correct Assistant: "},
                            {"<|end_of_turn|>", "<|end_of_turn|>", "<|end_of_turn|>"},
                            "GPT4 Correct Assistant:"},
                           turns, add_gen, out);
    case Family::kVicuna:
      return RenderPerRole({{"", "USER: ", "ASSISTANT: "}, {"\n\n", "\n", "</s>\n"}, "ASSISTANT:"}, turns,
                           add_gen, out);
    case Family::kVicunaOrca:
      return RenderPerRole({{"SYSTEM: ", "USER: ", "ASSISTANT: "}, {"\n", "\n", "</s>\n"}, "ASSISTANT:"},
                           turns, add_gen, out);
    case Family::kDeepSeek:
      return RenderPerRole(
          {{"", "### Instruction:\n", "### Response:\n"}, {"", "\n", "\n<|EOT|>\n"}, "### Response:\n"},
          turns, add_gen, out);
    case Family::kDeepSeek2:
      return RenderPerRole(
          {{"", "User: ", "Assistant: "}, {"\n\n", "\n\n", "<｜end▁of▁sentence｜>"}, "Assistant:"}, turns,
          add_gen, out);
    case Family::kDeepSeek3:
      return RenderPerRole(
          {{"", "<｜User｜>", "<｜Assistant｜>"}, {"\n\n", "", "<｜end▁of▁sentence｜>"}, "<｜Assistant｜>"},
          turns, add_gen, out);
    case Family::kCommandR:
      return RenderPerRole(
          {{"<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>", "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>",
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"},
           {"<|END_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>"},
           "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
           /*trim=*/true},
          turns, add_gen, out);
    case Family::kLlama3:
      return RenderSimple({"<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>",
                           "<|start_header_id|>assistant<|end_header_id|>\n\n", /*trim=*/true},
                          turns, add_gen, out);
    case Family::kChatGlm3:
      return RenderGlm("[gMASK]sop", "\n ", turns, add_gen, out);
    case Family::kChatGlm4:
      return RenderGlm("[gMASK]<sop>", "\n", turns, add_gen, out);
    case Family::kGlmEdge:
      return RenderGlm("", "\n", turns, add_gen, out);
    case Family::kMiniCpm:
      return RenderMiniCpm(turns, out);
    case Family::kExaone3:
      return RenderPerRole({{"[|system|]", "[|user|]", "[|assistant|]"},
                            {"[|endofturn|]\n", "\n", "[|endofturn|]\n"},
                            "[|assistant|]",
                            /*trim=*/true},
                           turns, add_gen, out);
    case Family::kRwkvWorld:
      return RenderRwkvWorld(turns, out);
    case Family::kGranite:
      return RenderSimple({"<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>\n",
                           "<|start_of_role|>assistant<|end_of_role|>\n"},
                          turns, add_gen, out);
    case Family::kGigaChat:
      return RenderGigaChat(turns, add_gen, out);
    case Family::kMegrez:
      return RenderSimple(
          {"<|role_start|>", "<|role_end|>", "<|turn_end|>", "<|role_start|>assistant<|role_end|>"}, turns,
          add_gen, out);
  }
  AIRLOCK_CHECK(false);  // every enumerator is handled above
}

}  // namespace

std::string RenderedChat::Text() const {
  std::string text;
  for (const ChatSegment& segment : segments) text += segment.text;
  return text;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromJinja(std::string_view jinja) {
  if (jinja.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "the model's chat template (tokenizer.chat_template) is empty; set models[].chat_template to "
        "one of: ",
        NameList()));
  }
  // llama.cpp also takes a template text that is exactly a family name as that family.
  if (absl::StatusOr<ChatTemplate> named = FromName(jinja); named.ok()) return named;
  if (const std::optional<Family> family = DetectFamily(jinja)) return ChatTemplate(*family);
  // Quote only the start: the template can be kilobytes, and it comes from an untrusted file.
  constexpr size_t kQuoteBytes = 60;
  const std::string_view head = jinja.substr(0, kQuoteBytes);
  return absl::NotFoundError(absl::StrCat("unrecognised chat template (tokenizer.chat_template, ",
                                          jinja.size(), " bytes) starting \"", absl::CEscape(ToAbsl(head)),
                                          jinja.size() > kQuoteBytes ? "...\"" : "\"",
                                          "; set models[].chat_template to one of: ", NameList()));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromName(std::string_view name) {
  for (const FamilyName& entry : kFamilyNames) {
    if (name == entry.name) return ChatTemplate(entry.family);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown chat template name \"",
                                                 absl::CEscape(ToAbsl(name.substr(0, 60))),
                                                 "\"; valid names: ", NameList()));
}

const std::vector<std::string>& ChatTemplate::Names() {
  static const auto* names = [] {
    auto* list = new std::vector<std::string>();
    for (const FamilyName& entry : kFamilyNames) list->emplace_back(entry.name);
    return list;
  }();
  return *names;
}

std::string_view ChatTemplate::name() const {
  for (const FamilyName& entry : kFamilyNames) {
    if (entry.family == family_) return entry.name;
  }
  AIRLOCK_CHECK(false);  // kFamilyNames lists every family
  return {};
}

absl::StatusOr<RenderedChat> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                  bool add_generation_prompt) const {
  if (messages.empty()) return absl::InvalidArgumentError("messages: must not be empty");
  std::vector<Turn> turns;
  turns.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    Role r;
    if (role == "system") {
      r = Role::kSystem;
    } else if (role == "user") {
      r = Role::kUser;
    } else if (role == "assistant") {
      r = Role::kAssistant;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "].role: \"", absl::CEscape(ToAbsl(std::string_view(role).substr(0, 60))),
          "\" is not one of \"system\", \"user\", \"assistant\""));
    }
    turns.push_back(Turn{r, role, messages[i].content});
  }
  PromptBuilder out;
  RenderFamily(family_, turns, add_generation_prompt, out);
  return std::move(out).Finish();
}

}  // namespace airlock::inference

// Vocabulary loading: validation, llama.cpp's defaults, special-token detection and caches.
#include "inference/tokenizer/vocabulary.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "inference/base/status.h"
#include "inference/tokenizer/utf8.h"

namespace airlock::inference {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 '▁', SentencePiece's space

struct RoleKey {
  SpecialRole role;
  const char* key;
};

// In llama.cpp's order: the deprecated prefix/suffix/middle keys come last and win.
constexpr RoleKey kRoleKeys[] = {
    {SpecialRole::kBos, "tokenizer.ggml.bos_token_id"},
    {SpecialRole::kEos, "tokenizer.ggml.eos_token_id"},
    {SpecialRole::kEot, "tokenizer.ggml.eot_token_id"},
    {SpecialRole::kEom, "tokenizer.ggml.eom_token_id"},
    {SpecialRole::kUnk, "tokenizer.ggml.unknown_token_id"},
    {SpecialRole::kSep, "tokenizer.ggml.seperator_token_id"},  // sic: llama.cpp's spelling
    {SpecialRole::kPad, "tokenizer.ggml.padding_token_id"},
    {SpecialRole::kMask, "tokenizer.ggml.mask_token_id"},
    {SpecialRole::kFimPre, "tokenizer.ggml.fim_pre_token_id"},
    {SpecialRole::kFimSuf, "tokenizer.ggml.fim_suf_token_id"},
    {SpecialRole::kFimMid, "tokenizer.ggml.fim_mid_token_id"},
    {SpecialRole::kFimPad, "tokenizer.ggml.fim_pad_token_id"},
    {SpecialRole::kFimRep, "tokenizer.ggml.fim_rep_token_id"},
    {SpecialRole::kFimSep, "tokenizer.ggml.fim_sep_token_id"},
    {SpecialRole::kFimPre, "tokenizer.ggml.prefix_token_id"},
    {SpecialRole::kFimSuf, "tokenizer.ggml.suffix_token_id"},
    {SpecialRole::kFimMid, "tokenizer.ggml.middle_token_id"},
};

size_t Index(SpecialRole role) { return static_cast<size_t>(role); }

// A short printable rendering of a token for error messages.
std::string Quote(std::string_view s) {
  std::string out = utf8::Sanitize(s.substr(0, 40));
  if (s.size() > 40) out += "...";
  return absl::StrCat("'", out, "'");
}

uint32_t AttrFromType(int32_t type) {
  switch (static_cast<GgufTokenType>(type)) {
    case GgufTokenType::kUnknown: return kTokenAttrUnknown;
    case GgufTokenType::kUnused: return kTokenAttrUnused;
    case GgufTokenType::kNormal: return kTokenAttrNormal;
    case GgufTokenType::kControl: return kTokenAttrControl;
    case GgufTokenType::kUserDefined: return kTokenAttrUserDefined;
    case GgufTokenType::kByte: return kTokenAttrByte;
    case GgufTokenType::kUndefined: return kTokenAttrUndefined;
  }
  return kTokenAttrUndefined;  // unknown type values: llama.cpp treats them as undefined
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte a `<0xNN>` token stands for. Like llama.cpp's strtol on text[3..5): parses up to two hex
// digits after "<0x" and yields 0 when there are none.
uint8_t ByteTokenValue(std::string_view text) {
  int value = 0;
  for (size_t i = 3; i < 5 && i < text.size(); ++i) {
    const int d = HexValue(text[i]);
    if (d < 0) break;
    value = value * 16 + d;
  }
  return static_cast<uint8_t>(value);
}

absl::StatusOr<std::optional<int64_t>> ReadIdKey(const GgufFile& file, const char* key) {
  const GgufValue* v = file.Find(key);
  if (v == nullptr) return std::optional<int64_t>();
  switch (v->type) {
    case GgufValueType::kUint8:
    case GgufValueType::kUint16:
    case GgufValueType::kUint32:
    case GgufValueType::kUint64:
      return std::optional<int64_t>(v->unsigned_integer > static_cast<uint64_t>(INT64_MAX)
                                        ? INT64_MAX
                                        : static_cast<int64_t>(v->unsigned_integer));
    case GgufValueType::kInt8:
    case GgufValueType::kInt16:
    case GgufValueType::kInt32:
    case GgufValueType::kInt64:
      return std::optional<int64_t>(v->integer);
    default:
      return absl::InvalidArgumentError(absl::StrCat(key, " should be an integer token id, but is a ",
                                                     GgufValueTypeName(v->type)));
  }
}

absl::StatusOr<std::optional<bool>> ReadBoolKey(const GgufFile& file, const char* key) {
  if (!file.Has(key)) return std::optional<bool>();
  AIRLOCK_ASSIGN_OR_RETURN(bool value, file.GetBool(key));
  return std::optional<bool>(value);
}

}  // namespace

absl::StatusOr<VocabularySpec> ReadVocabularySpec(const GgufFile& file) {
  VocabularySpec spec;
  if (!file.Has("tokenizer.ggml.model")) {
    return absl::InvalidArgumentError("tokenizer.ggml.model is missing: the file has no tokenizer");
  }
  AIRLOCK_ASSIGN_OR_RETURN(spec.model, file.GetString("tokenizer.ggml.model"));
  if (file.Has("tokenizer.ggml.pre")) {
    AIRLOCK_ASSIGN_OR_RETURN(spec.pre, file.GetString("tokenizer.ggml.pre"));
  }
  if (!file.Has("tokenizer.ggml.tokens")) {
    return absl::InvalidArgumentError("tokenizer.ggml.tokens is missing: the file has no vocabulary");
  }
  AIRLOCK_ASSIGN_OR_RETURN(spec.tokens, file.GetStringArray("tokenizer.ggml.tokens"));
  if (file.Has("tokenizer.ggml.scores")) {
    AIRLOCK_ASSIGN_OR_RETURN(spec.scores, file.GetF32Array("tokenizer.ggml.scores"));
  }
  if (file.Has("tokenizer.ggml.token_type")) {
    AIRLOCK_ASSIGN_OR_RETURN(spec.token_types, file.GetI32Array("tokenizer.ggml.token_type"));
  }
  if (file.Has("tokenizer.ggml.merges")) {
    AIRLOCK_ASSIGN_OR_RETURN(spec.merges, file.GetStringArray("tokenizer.ggml.merges"));
  }
  for (const RoleKey& rk : kRoleKeys) {
    AIRLOCK_ASSIGN_OR_RETURN(std::optional<int64_t> id, ReadIdKey(file, rk.key));
    if (id.has_value()) spec.special_id(rk.role) = id;
  }
  AIRLOCK_ASSIGN_OR_RETURN(spec.add_bos, ReadBoolKey(file, "tokenizer.ggml.add_bos_token"));
  AIRLOCK_ASSIGN_OR_RETURN(spec.add_eos, ReadBoolKey(file, "tokenizer.ggml.add_eos_token"));
  AIRLOCK_ASSIGN_OR_RETURN(spec.add_space_prefix, ReadBoolKey(file, "tokenizer.ggml.add_space_prefix"));
  // Informational strings: a wrong type is not worth refusing the model over.
  if (auto name = file.GetString("general.name"); name.ok()) spec.general_name = *name;
  if (auto tmpl = file.GetString("tokenizer.chat_template"); tmpl.ok()) spec.chat_template = *tmpl;
  return spec;
}

absl::StatusOr<Vocabulary> Vocabulary::Build(const VocabularySpec& spec) {
  Vocabulary v;
  v.model_ = spec.model;
  if (spec.model == "llama") {
    v.type_ = VocabType::kSpm;
    v.pre_ = spec.pre.value_or("default");
    v.pre_config_.name = "default";
    v.add_space_prefix_ = true;
    v.add_bos_ = true;
    v.clean_spaces_ = false;
  } else if (spec.model == "gpt2") {
    v.type_ = VocabType::kBpe;
    v.pre_ = spec.pre.value_or("default");
    auto config = LookupPreTokenizer(spec.pre.value_or(""));
    if (!config.ok()) return absl::InvalidArgumentError(config.status().message());
    v.pre_config_ = std::move(*config);
    v.add_space_prefix_ = false;
    v.add_bos_ = v.pre_config_.add_bos;
    v.clean_spaces_ = v.pre_config_.clean_spaces;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported tokenizer model (tokenizer.ggml.model): '", spec.model,
        "'; supported are 'llama' (SentencePiece) and 'gpt2' (byte-level BPE)"));
  }
  v.add_eos_ = false;
  if (spec.add_space_prefix.has_value()) v.add_space_prefix_ = *spec.add_space_prefix;
  v.chat_template_ = spec.chat_template;

  AIRLOCK_RETURN_IF_ERROR(v.LoadTokens(spec));
  if (v.type_ == VocabType::kBpe) AIRLOCK_RETURN_IF_ERROR(v.LoadMerges(spec));
  AIRLOCK_RETURN_IF_ERROR(v.LoadSpecialIds(spec));
  if (spec.add_bos.has_value()) v.add_bos_ = *spec.add_bos;
  if (spec.add_eos.has_value()) v.add_eos_ = *spec.add_eos;
  if (v.add_bos_ && v.special(SpecialRole::kBos) == kNoToken) {
    return absl::InvalidArgumentError("the vocabulary asks for a BOS token (add_bos_token) but has none");
  }
  if (v.add_eos_ && v.special(SpecialRole::kEos) == kNoToken) {
    return absl::InvalidArgumentError("the vocabulary asks for an EOS token (add_eos_token) but has none");
  }
  v.DetectSpecialTokensByText();
  v.BuildCaches();

  // Per-token strip flags that llama.cpp sets by model name (they are not in GGUF files).
  auto set_flag = [&v](std::string_view text, uint32_t flag, bool on) {
    const int32_t id = v.Find(text);
    if (id == kNoToken) return;
    v.attrs_[id] = on ? (v.attrs_[id] | flag) : (v.attrs_[id] & ~flag);
  };
  std::string name = spec.general_name;
  std::transform(name.begin(), name.end(), name.begin(),
                 [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  const std::string& pre = v.pre_;
  if (pre.find("jina-v2-de") != std::string::npos || pre.find("jina-v2-es") != std::string::npos ||
      pre.find("jina-v2-code") != std::string::npos) {
    set_flag("<mask>", kTokenAttrLstrip, true);
  } else if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    for (const int32_t id : v.special_tokens_) v.attrs_[id] |= kTokenAttrRstrip;
    set_flag("</s>", kTokenAttrRstrip, true);
    for (std::string_view t : {"<unk>", "<s>", "<|endoftext|>"}) set_flag(t, kTokenAttrRstrip, false);
  }
  return v;
}

absl::Status Vocabulary::LoadTokens(const VocabularySpec& spec) {
  const size_t n = spec.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(INT32_MAX) - 1) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.tokens has ", n, " entries; at most ",
                                                   INT32_MAX - 1, " are supported"));
  }
  if (spec.scores.has_value() && spec.scores->size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.scores has ", spec.scores->size(),
                                                   " entries but tokenizer.ggml.tokens has ", n));
  }
  if (spec.token_types.has_value() && spec.token_types->size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.token_type has ", spec.token_types->size(),
                                                   " entries but tokenizer.ggml.tokens has ", n));
  }
  text_offsets_.reserve(n + 1);
  scores_.resize(n, 0.0f);
  attrs_.resize(n, kTokenAttrNormal);
  token_to_id_.Reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = static_cast<int32_t>(i);
    std::string_view word = spec.tokens[i];
    std::string renamed;
    if (word.empty()) {
      // llama.cpp keeps empty tokens under a placeholder name so that they can never match.
      renamed = absl::StrCat("[EMPTY_", i, "]");
      word = renamed;
    }
    if (word.size() > kMaxTokenBytes) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.tokens[", i, "] is ", word.size(),
                                                     " bytes long; at most ", kMaxTokenBytes, " are allowed"));
    }
    if (!token_to_id_.Insert(word, id)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.tokens[", i, "] ", Quote(word),
                                                     " duplicates token ", token_to_id_.Find(word)));
    }
    text_offsets_.push_back(texts_.size());
    texts_.append(word);
    if (spec.scores.has_value()) {
      const float s = (*spec.scores)[i];
      if (std::isnan(s)) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.scores[", i, "] is NaN"));
      }
      scores_[i] = s;
    }
    if (spec.token_types.has_value()) attrs_[i] = AttrFromType((*spec.token_types)[i]);
  }
  text_offsets_.push_back(texts_.size());

  merge_barrier_.fill(true);
  for (int32_t id = 0; id < n_tokens(); ++id) {
    const std::string_view t = text(id);
    if (t.size() < 2) continue;
    for (const char c : t) merge_barrier_[static_cast<uint8_t>(c)] = false;
  }

  byte_tokens_.fill(kNoToken);
  if (type_ == VocabType::kSpm) {
    for (int b = 0; b < 256; ++b) {
      int32_t id = Find(absl::StrFormat("<0x%02X>", b));
      if (id == kNoToken) id = Find(std::string(1, static_cast<char>(b)));
      byte_tokens_[b] = id;
    }
  }
  return absl::OkStatus();
}

absl::Status Vocabulary::LoadMerges(const VocabularySpec& spec) {
  if (!spec.merges.has_value()) {
    return absl::InvalidArgumentError("tokenizer.ggml.merges is missing; byte-level BPE ('gpt2') needs it");
  }
  const std::vector<std::string_view>& merges = *spec.merges;
  if (merges.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.merges has ", merges.size(), " entries"));
  }
  merge_ranks_.Reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string_view m = merges[i];
    // As llama.cpp: the parts are split at the first space after the first byte.
    const size_t space = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
    if (space == std::string_view::npos || space + 1 >= m.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.merges[", i, "] ", Quote(m),
                                                     " is not of the form 'left right'"));
    }
    if (m.size() > kMaxTokenBytes) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.merges[", i, "] is ", m.size(),
                                                     " bytes long; at most ", kMaxTokenBytes, " are allowed"));
    }
    // A repeated merge keeps its first (best) rank, as upstream's map emplace does.
    merge_ranks_.Insert(m, static_cast<int32_t>(i));
  }
  return absl::OkStatus();
}

int32_t Vocabulary::MergeRank(std::string_view left, std::string_view right, std::string& scratch) const {
  // Symbols never contain a raw space (byte-level text spells it U+0120), so "left right" is
  // unambiguous against merges split at their first space.
  scratch.assign(left);
  scratch.push_back(' ');
  scratch.append(right);
  return merge_ranks_.Find(scratch);
}

absl::Status Vocabulary::LoadSpecialIds(const VocabularySpec& spec) {
  special_ids_.fill(kNoToken);
  if (type_ == VocabType::kSpm) {
    special_ids_[Index(SpecialRole::kBos)] = 1;
    special_ids_[Index(SpecialRole::kEos)] = 2;
    special_ids_[Index(SpecialRole::kUnk)] = 0;
  } else {
    special_ids_[Index(SpecialRole::kBos)] = pre_config_.no_bos ? kNoToken : 11;
    special_ids_[Index(SpecialRole::kEos)] = 11;
  }
  const int64_t n = n_tokens();
  for (const RoleKey& rk : kRoleKeys) {
    const std::optional<int64_t>& value = spec.special_ids[Index(rk.role)];
    if (!value.has_value()) continue;
    if (*value >= 0 && *value < n) {
      special_ids_[Index(rk.role)] = static_cast<int32_t>(*value);
      continue;
    }
    // Negative and 0xFFFFFFFF mean "none" in converted files (stories260K has them); llama.cpp
    // keeps its default then, as it does for other out-of-range values of roles it rarely uses.
    // An out-of-range BOS/EOS/EOT/EOM would change what the model is fed or when it stops: refuse it.
    const bool sentinel = *value < 0 || *value == 0xFFFFFFFFll;
    const bool essential = rk.role == SpecialRole::kBos || rk.role == SpecialRole::kEos ||
                           rk.role == SpecialRole::kEot || rk.role == SpecialRole::kEom;
    if (essential && !sentinel) {
      return absl::InvalidArgumentError(absl::StrCat(rk.key, " = ", *value, " is out of range: the vocabulary has ",
                                                     n, " tokens"));
    }
  }
  for (int32_t& id : special_ids_) {
    if (id >= n) id = kNoToken;  // a default that this (small) vocabulary does not have
  }
  return absl::OkStatus();
}

void Vocabulary::DetectSpecialTokensByText() {
  // llama.cpp finds these roles by token text when the file does not name them, and forces the
  // tokens it finds to be control tokens. With several candidates upstream takes whichever its hash
  // map yields first; we take the lowest id so that the choice is deterministic.
  struct Detection {
    SpecialRole role;
    std::initializer_list<std::string_view> texts;
  };
  const Detection detections[] = {
      {SpecialRole::kEot,
       {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
        "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"}},
      {SpecialRole::kEom, {"<|eom_id|>"}},
      {SpecialRole::kFimPre,
       {"<|fim_prefix|>", "<fim-prefix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>"}},
      {SpecialRole::kFimSuf,
       {"<|fim_suffix|>", "<fim-suffix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole\xEF\xBD\x9C>", "<SUF>"}},
      {SpecialRole::kFimMid,
       {"<|fim_middle|>", "<fim-middle>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>"}},
      {SpecialRole::kFimPad, {"<|fim_pad|>", "<fim-pad>", "<PAD>"}},
      {SpecialRole::kFimRep, {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"}},
      {SpecialRole::kFimSep, {"<|file_sep|>"}},
  };
  for (const Detection& d : detections) {
    if (special_ids_[Index(d.role)] != kNoToken) continue;
    int32_t best = kNoToken;
    for (std::string_view text : d.texts) {
      const int32_t id = Find(text);
      if (id != kNoToken && (best == kNoToken || id < best)) best = id;
    }
    if (best == kNoToken) continue;
    special_ids_[Index(d.role)] = best;
    attrs_[best] = kTokenAttrControl;
  }

  // End-of-generation tokens: FIM pad/repo/separator, the usual end-of-turn texts, EOS, EOT, EOM.
  eog_.assign(static_cast<size_t>(n_tokens()), 0);
  auto mark = [this](int32_t id) {
    if (id != kNoToken) eog_[id] = 1;
  };
  mark(special(SpecialRole::kFimPad));
  mark(special(SpecialRole::kFimRep));
  mark(special(SpecialRole::kFimSep));
  for (std::string_view text :
       {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>"}) {
    const int32_t id = Find(text);
    if (id == kNoToken) continue;
    mark(id);
    attrs_[id] = kTokenAttrControl;
  }
  mark(special(SpecialRole::kEos));
  mark(special(SpecialRole::kEot));
  mark(special(SpecialRole::kEom));
  eog_tokens_.clear();
  for (int32_t id = 0; id < n_tokens(); ++id) {
    if (eog_[id]) eog_tokens_.push_back(id);
  }
}

void Vocabulary::BuildCaches() {
  special_tokens_.clear();
  for (int32_t id = 0; id < n_tokens(); ++id) {
    if (attrs_[id] & (kTokenAttrControl | kTokenAttrUserDefined | kTokenAttrUnknown)) special_tokens_.push_back(id);
  }
  // Longest first (upstream sorts by length only; equal lengths keep id order here).
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(),
                   [this](int32_t a, int32_t b) { return text(a).size() > text(b).size(); });

  piece_offsets_.clear();
  piece_offsets_.reserve(static_cast<size_t>(n_tokens()) + 1);
  pieces_.clear();
  pieces_.reserve(texts_.size());
  for (int32_t id = 0; id < n_tokens(); ++id) {
    piece_offsets_.push_back(pieces_.size());
    pieces_ += ComputePiece(id);
  }
  piece_offsets_.push_back(pieces_.size());
}

std::string Vocabulary::ComputePiece(int32_t id) const {
  const std::string_view t = text(id);
  const uint32_t a = attrs_[id];
  if (a & (kTokenAttrUnknown | kTokenAttrControl | kTokenAttrUserDefined)) return std::string(t);
  if (type_ == VocabType::kSpm) {
    if (a & kTokenAttrNormal) {
      std::string out;
      out.reserve(t.size());
      for (size_t i = 0; i < t.size();) {
        if (t.substr(i, kSpmSpace.size()) == kSpmSpace) {
          out.push_back(' ');
          i += kSpmSpace.size();
        } else {
          out.push_back(t[i++]);
        }
      }
      return out;
    }
    if (a & kTokenAttrByte) return std::string(1, static_cast<char>(ByteTokenValue(t)));
    return std::string();  // unused / undefined tokens render as nothing
  }
  if (a & kTokenAttrNormal) {
    // Byte-level text back to bytes. Characters outside the 256-entry table are shown the way
    // llama.cpp's llama_decode_text shows them.
    std::vector<uint32_t> cps;
    utf8::DecodeLenient(t, cps);
    std::string out;
    for (const uint32_t cp : cps) {
      const int byte = utf8::UnicodeToByte(cp);
      if (byte >= 0) {
        out.push_back(static_cast<char>(byte));
        continue;
      }
      std::string spelled;
      utf8::AppendCodePoint(cp, spelled);
      out += "[UNK_BYTE_0x";
      for (const char c : spelled) out += absl::StrFormat("%02x", static_cast<uint8_t>(c));
      out += t;
      out += "]";
    }
    return out;
  }
  return std::string();
}

}  // namespace airlock::inference

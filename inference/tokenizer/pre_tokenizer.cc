// PCRE2 implementation of llama.cpp's unicode_regex_split().
//
// llama.cpp runs each regex over every piece left by the previous one and keeps both the matches
// and the unmatched gaps as pieces. It matches on a copy of the text in which every non-ASCII
// whitespace character has been replaced by U+000B (so that std::regex's ASCII-only `\s` sees it),
// and its hand-written GPT-2 / Llama-3 splitters agree with the regexes on that copy. We build the
// same copy, so PCRE2's `\s` and every explicit character range see exactly what upstream sees,
// while Unicode letters, numbers and punctuation come from PCRE2's own tables (`\p{L}` etc.).
#include "inference/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/base/status.h"
#include "inference/tokenizer/utf8.h"

namespace airlock::inference {
namespace {

// GPT-2's pattern plus a final `\s+`: a lone whitespace character before a non-space is left
// unmatched by GPT-2's regex and becomes a piece of its own either way; llama.cpp's hand-written
// splitter spells it this way.
constexpr char kGpt2[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Llama 3's pattern with the case-insensitive contractions spelled out.
constexpr char kLlama3[] =
    R"('[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Qwen2: as Llama 3 but digits are split one by one.
constexpr char kQwen2[] =
    R"('[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// DeepSeek's explicit letter ranges (from its tokenizer.json), written as code points.
constexpr char kDeepseekLlmLetters[] =
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293})"
    R"(\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C})"
    R"(\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5})"
    R"(\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B})"
    R"(\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45})"
    R"(\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4})"
    R"(\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB})"
    R"(\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115})"
    R"(\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139})"
    R"(\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4})"
    R"(\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F})"
    R"(\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17})"
    R"(\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB})"
    R"(\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";

// CJK ideographs, the block below them, and Hangul syllables.
constexpr char kDeepseekCjk[] = R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";

// True for the non-ASCII code points in llama.cpp's whitespace set (Unicode White_Space).
bool IsNonAsciiWhitespace(uint32_t cp) {
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// The code point the regexes see for `cp` (see the file comment). Surrogates, which llama.cpp's
// lenient decoder lets through but PCRE2 cannot take, become a private-use character: both are
// "other" (neither letter, number, punctuation nor space) in llama.cpp's tables.
uint32_t SubjectCodePoint(uint32_t cp) {
  if (cp < 0x80) return cp;
  if (IsNonAsciiWhitespace(cp)) return 0x0B;
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0xE000;
  return cp;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

}  // namespace

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

absl::StatusOr<PreTokenizerConfig> LookupPreTokenizer(std::string_view pre) {
  PreTokenizerConfig c;
  auto is_any = [&](std::initializer_list<std::string_view> names) {
    for (std::string_view n : names) {
      if (pre == n) return true;
    }
    return false;
  };
  if (pre.empty() || pre == "default") {
    c.name = "default";
    c.patterns = {R"([\p{P}$+<=>^~|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"};
  } else if (is_any({"llama3", "llama-v3", "llama-bpe", "falcon3"})) {
    c.name = "llama3";
    c.patterns = {kLlama3};
    c.ignore_merges = true;
    c.add_bos = true;
  } else if (is_any({"dbrx", "smaug-bpe"})) {
    c.name = std::string(pre);
    c.patterns = {kLlama3};
  } else if (pre == "chatglm-bpe") {
    c.name = "chatglm4";
    c.patterns = {kLlama3};
    c.no_bos = true;
  } else if (pre == "deepseek-llm") {
    c.name = "deepseek-llm";
    c.patterns = {"[\r\n]", kDeepseekLlmLetters,
                  R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)",
                  // Upstream's `\s+$`; the look-behind only skips start positions inside a run of
                  // spaces (which cannot begin the leftmost match) and keeps the scan linear.
                  R"((?<!\s)\s+$)", kDeepseekCjk, R"(\p{N}+)"};
    c.clean_spaces = false;
  } else if (pre == "deepseek-coder") {
    c.name = "deepseek-coder";
    c.patterns = {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"};
    c.clean_spaces = false;
  } else if (pre == "falcon") {
    c.name = "falcon";
    c.patterns = {R"([\p{P}$+<=>^~|`]+)", kGpt2, "[0-9][0-9][0-9]"};
  } else if (is_any({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"})) {
    c.name = std::string(pre);
    c.patterns = {R"(\p{N})", kGpt2};
    c.clean_spaces = !is_any({"command-r", "smollm"});
  } else if (is_any({"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es",
                     "jina-v2-de", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais"})) {
    c.name = "gpt2";
    c.patterns = {kGpt2};
  } else if (is_any({"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"})) {
    c.name = "qwen2";
    c.patterns = {kQwen2};
    c.clean_spaces = !is_any({"qwen2", "deepseek-r1-qwen"});
  } else {
    return absl::NotFoundError(absl::StrCat("unknown or unsupported pre-tokenizer type (tokenizer.ggml.pre): '",
                                            ToAbsl(pre), "'"));
  }
  return c;
}

PreTokenizer::PreTokenizer(std::vector<std::unique_ptr<Regex>> regexes) : regexes_(std::move(regexes)) {}

PreTokenizer::~PreTokenizer() = default;

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(const std::vector<std::string>& patterns) {
  std::vector<std::unique_ptr<Regex>> regexes;
  for (const std::string& pattern : patterns) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    auto regex = std::make_unique<Regex>();
    // DOLLAR_ENDONLY: `$` means the end of the piece, as in std::regex, not "before a final \n".
    regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_NEVER_BACKSLASH_C, &error,
                                &error_offset, nullptr);
    if (regex->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InternalError(absl::StrCat("pre-tokenizer regex '", pattern, "' does not compile at offset ",
                                              error_offset, ": ", reinterpret_cast<const char*>(message)));
    }
    // Without JIT (e.g. no executable memory) pcre2_match falls back to the interpreter.
    (void)pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE);
    regexes.push_back(std::move(regex));
  }
  return std::unique_ptr<PreTokenizer>(new PreTokenizer(std::move(regexes)));
}

void PreTokenizer::Split(std::string_view text, std::string& words, std::vector<size_t>& word_ends) const {
  std::vector<uint32_t> cps;
  utf8::DecodeLenient(text, cps);
  const size_t n = cps.size();
  if (n == 0) return;

  // The subject the regexes run on, and the byte offset of every code point in it.
  std::string subject;
  subject.reserve(text.size() + 8);
  std::vector<size_t> cp_byte(n + 1);
  for (size_t i = 0; i < n; ++i) {
    cp_byte[i] = subject.size();
    if (cps[i] < 0x80) {
      subject.push_back(static_cast<char>(cps[i]));
    } else {
      utf8::AppendCodePoint(SubjectCodePoint(cps[i]), subject);
    }
  }
  cp_byte[n] = subject.size();

  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(pcre2_match_data_create(1, nullptr));
  AIRLOCK_CHECK(md != nullptr);

  // Pieces as their end code-point indices; each regex splits every piece further.
  std::vector<size_t> ends = {n};
  std::vector<size_t> next;
  for (const auto& regex : regexes_) {
    next.clear();
    size_t start = 0;
    for (const size_t end : ends) {
      // The subject is the piece alone, so look-arounds and `$` stop at its edges like upstream's.
      const auto* base = reinterpret_cast<PCRE2_SPTR>(subject.data() + cp_byte[start]);
      const size_t length = cp_byte[end] - cp_byte[start];
      size_t offset = 0;      // byte offset in the piece where the next search starts
      size_t cursor = start;  // code point index, advanced monotonically to map offsets back
      size_t emitted = start;
      auto cp_at = [&](size_t byte) {
        while (cp_byte[cursor] - cp_byte[start] < byte) ++cursor;
        return cursor;
      };
      while (offset < length) {
        int rc = pcre2_match(regex->code, base, length, offset, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
          // The interpreter keeps its backtracking state on the heap instead of the JIT stack.
          rc = pcre2_match(regex->code, base, length, offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md.get(),
                           nullptr);
        }
        // No match, or a resource limit on pathological input: the rest stays one unmatched piece.
        if (rc < 0) break;
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        const size_t match_begin = ov[0];
        const size_t match_end = ov[1];
        if (match_end <= match_begin) {
          // None of our patterns can match empty; step over one character if one ever does.
          if (match_begin >= length) break;
          offset = cp_byte[cp_at(match_begin) + 1] - cp_byte[start];
          continue;
        }
        const size_t first = cp_at(match_begin);
        const size_t last = cp_at(match_end);
        if (first > emitted) next.push_back(first);  // the unmatched gap before the match
        next.push_back(last);
        emitted = last;
        offset = match_end;
      }
      if (emitted < end) next.push_back(end);
      start = end;
    }
    ends.swap(next);
  }

  words.reserve(words.size() + text.size() + n);
  size_t start = 0;
  for (const size_t end : ends) {
    for (size_t i = start; i < end; ++i) {
      if (cps[i] < 0x80) {
        words.push_back(static_cast<char>(cps[i]));
      } else {
        utf8::AppendCodePoint(cps[i], words);
      }
    }
    word_ends.push_back(words.size());
    start = end;
  }
}

}  // namespace airlock::inference

// libFuzzer target: the JSON-schema compiler and the token constraint on arbitrary schemas. The
// compiler must accept or refuse cleanly; for what it accepts, a walk that always picks an allowed
// token (chosen by the remaining input) must only ever produce text that is a prefix of valid
// JSON, Accept() must agree with the mask, and whenever the end of generation is allowed the text
// must parse as JSON.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "inference/sampling/json_schema.h"
#include "inference/sampling/token_constraint.h"

namespace {

using airlock::inference::TokenConstraint;
using airlock::inference::TokenMaskCache;
using airlock::inference::TokenVocabulary;

// Every single byte, a few multi-byte tokens that cross JSON's structure, and an end token.
const std::shared_ptr<const TokenVocabulary>& Vocabulary() {
  static const std::shared_ptr<const TokenVocabulary> vocabulary = [] {
    std::vector<std::string> bytes;
    for (int b = 0; b < 256; ++b) bytes.push_back(std::string(1, static_cast<char>(b)));
    for (const char* t : {"{\"", "\":", "\",", "true", "false", "null", "\"}", "]}", ", \"", "\xC3\xA9", "\xE2\x82",
                          "12", "-0.5e+7", "\\u00e9", "\n  "}) {
      bytes.push_back(t);
    }
    const int32_t eog = static_cast<int32_t>(bytes.size());
    bytes.push_back("");
    const std::vector<int32_t> end = {eog};
    auto v = TokenVocabulary::Create(std::move(bytes), end, {});
    if (!v.ok()) __builtin_trap();
    return *v;
  }();
  return vocabulary;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first byte chooses the walk; the rest is the schema.
  if (size < 1) return 0;
  const uint8_t choice = data[0];
  const std::string_view schema(reinterpret_cast<const char*>(data + 1), size - 1);
  auto grammar = airlock::inference::CompileJsonSchema(schema);
  if (!grammar.ok()) return 0;
  const auto& vocabulary = Vocabulary();
  const int32_t n = vocabulary->n_vocab();
  const int32_t eog = n - 1;
  auto masks = std::make_shared<TokenMaskCache>(*grammar, vocabulary);
  TokenConstraint constraint(masks);
  std::string text;
  std::vector<float> logits(static_cast<size_t>(n));
  uint32_t state = choice * 2654435761u + static_cast<uint32_t>(size);
  for (int step = 0; step < 96; ++step) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    constraint.Apply(logits.data(), n);
    std::vector<int32_t> allowed;
    for (int32_t id = 0; id < n; ++id) {
      if (!std::isinf(logits[static_cast<size_t>(id)])) allowed.push_back(id);
    }
    if (allowed.empty()) __builtin_trap();  // a constraint must always leave a way on or out
    const bool can_end = !std::isinf(logits[static_cast<size_t>(eog)]);
    if (can_end) {
      // Complete: the text so far is a JSON value.
      if (nlohmann::json::parse(text, nullptr, false).is_discarded()) __builtin_trap();
      if (step > 0 && (state & 3) == 0) break;
    }
    // A refused token must be refused by Accept too (leaving the state unchanged).
    for (int32_t id = 0; id < n; ++id) {
      if (std::isinf(logits[static_cast<size_t>(id)])) {
        if (constraint.Accept(id).ok()) __builtin_trap();
        break;
      }
    }
    state = state * 1103515245u + 12345u;
    const int32_t token = allowed[(state >> 8) % allowed.size()];
    if (!constraint.Accept(token).ok()) __builtin_trap();
    if (token == eog) break;
    text += std::string(vocabulary->bytes(token));
  }
  return 0;
}

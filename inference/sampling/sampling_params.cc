// Range checks for SamplingParams; each error names the field, its accepted range and the value.
#include "inference/sampling/sampling_params.h"

#include <cmath>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {
namespace {

absl::Status OutOfRange(std::string_view field, std::string_view range, float value) {
  return absl::InvalidArgumentError(
      absl::StrCat(ToAbsl(field), " must be in ", ToAbsl(range), ", got ", value));
}

// Closed interval [lo, hi]; NaN fails both comparisons and infinities fail one.
absl::Status CheckClosed(std::string_view field, std::string_view range, float value, float lo,
                         float hi) {
  if (!(value >= lo && value <= hi)) return OutOfRange(field, range, value);
  return absl::OkStatus();
}

// Half-open interval (lo, hi].
absl::Status CheckLeftOpen(std::string_view field, std::string_view range, float value, float lo,
                           float hi) {
  if (!(value > lo && value <= hi)) return OutOfRange(field, range, value);
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  AIRLOCK_RETURN_IF_ERROR(
      CheckClosed("temperature", "[0, 100]", params.temperature, 0.0f, kMaxTemperature));
  // top_k has no invalid value: <= 0 disables it and values past the vocabulary keep everything.
  AIRLOCK_RETURN_IF_ERROR(CheckLeftOpen("top_p", "(0, 1]", params.top_p, 0.0f, 1.0f));
  AIRLOCK_RETURN_IF_ERROR(CheckClosed("min_p", "[0, 1]", params.min_p, 0.0f, 1.0f));
  AIRLOCK_RETURN_IF_ERROR(
      CheckLeftOpen("repeat_penalty", "(0, 100]", params.repeat_penalty, 0.0f, kMaxRepeatPenalty));
  if (params.repeat_last_n < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repeat_last_n must be >= -1 (-1 = whole context, 0 = off), got ", params.repeat_last_n));
  }
  AIRLOCK_RETURN_IF_ERROR(CheckClosed("frequency_penalty", "[-2, 2]", params.frequency_penalty,
                                      -kMaxAbsFrequencyPenalty, kMaxAbsFrequencyPenalty));
  AIRLOCK_RETURN_IF_ERROR(CheckClosed("presence_penalty", "[-2, 2]", params.presence_penalty,
                                      -kMaxAbsPresencePenalty, kMaxAbsPresencePenalty));
  // Every seed is valid.
  return absl::OkStatus();
}

}  // namespace airlock::inference

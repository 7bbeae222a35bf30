// The sampling flags (--temperature ... --seed) shared by `airlockctl run` (local engine) and the
// daemon clients `generate` and `chat`, so both spell and document them the same way.
#pragma once

#include <CLI/CLI.hpp>

#include "airlock/v1/inference.pb.h"
#include "inference/sampling/sampling_params.h"

namespace airlock::ctl {

// The CLI11 options bound by AddSamplingFlags; a client sends only the ones given on the command
// line, so the daemon's own defaults (and its fresh random seed) apply to the rest.
struct SamplingOptions {
  CLI::Option* temperature = nullptr;
  CLI::Option* top_k = nullptr;
  CLI::Option* top_p = nullptr;
  CLI::Option* min_p = nullptr;
  CLI::Option* repeat_penalty = nullptr;
  CLI::Option* repeat_last_n = nullptr;
  CLI::Option* frequency_penalty = nullptr;
  CLI::Option* presence_penalty = nullptr;
  CLI::Option* seed = nullptr;
};

// How the defaults are shown in --help: the local engine's values, or "the daemon's default".
enum class SamplingDefaults { kLocal, kDaemon };

// Binds the sampling flags of `cmd` straight onto `params` (which must outlive the parse).
SamplingOptions AddSamplingFlags(CLI::App& cmd, inference::SamplingParams& params,
                                 SamplingDefaults defaults);

// Copies into `out` the fields whose flag was given on the command line (after parsing).
void SamplingToProto(const SamplingOptions& options, const inference::SamplingParams& params,
                     v1::SamplingParameters* out);

}  // namespace airlock::ctl

// The sampling flags shared by `airlockctl run`, `generate` and `chat` (see sampling_flags.h).
#include "tools/airlockctl/sampling_flags.h"

#include <string>

namespace airlock::ctl {

SamplingOptions AddSamplingFlags(CLI::App& cmd, inference::SamplingParams& params,
                                 SamplingDefaults defaults) {
  const bool local = defaults == SamplingDefaults::kLocal;
  // The daemon documents the same defaults as the engine except the seed (fresh per request), so
  // the values are shown either way and only the seed's help text differs.
  auto add = [&cmd](const std::string& name, auto& value, const std::string& help) {
    return cmd.add_option(name, value, help)->capture_default_str();
  };
  SamplingOptions o;
  o.temperature = add("--temperature,-t", params.temperature, "Sampling temperature; 0 = greedy");
  o.top_k = add("--top-k", params.top_k, "Top-k filter (<= 0 disables)");
  o.top_p = add("--top-p", params.top_p, "Top-p (nucleus) filter (1 disables)");
  o.min_p = add("--min-p", params.min_p, "Min-p filter (0 disables)");
  o.repeat_penalty = add("--repeat-penalty", params.repeat_penalty, "Repetition penalty (1 disables)");
  o.repeat_last_n = add("--repeat-last-n", params.repeat_last_n, "Tokens the penalties look back over (-1: all)");
  o.frequency_penalty = add("--frequency-penalty", params.frequency_penalty, "Frequency penalty");
  o.presence_penalty = add("--presence-penalty", params.presence_penalty, "Presence penalty");
  if (local) {
    o.seed = add("--seed", params.seed, "Random seed (same seed, same output)");
  } else {
    o.seed = cmd.add_option("--seed", params.seed,
                            "Random seed (same seed, same output; default: fresh per request)");
  }
  return o;
}

void SamplingToProto(const SamplingOptions& o, const inference::SamplingParams& p,
                     v1::SamplingParameters* out) {
  if (o.temperature->count() > 0) out->set_temperature(p.temperature);
  if (o.top_k->count() > 0) out->set_top_k(p.top_k);
  if (o.top_p->count() > 0) out->set_top_p(p.top_p);
  if (o.min_p->count() > 0) out->set_min_p(p.min_p);
  if (o.repeat_penalty->count() > 0) out->set_repeat_penalty(p.repeat_penalty);
  if (o.repeat_last_n->count() > 0) out->set_repeat_last_n(p.repeat_last_n);
  if (o.frequency_penalty->count() > 0) out->set_frequency_penalty(p.frequency_penalty);
  if (o.presence_penalty->count() > 0) out->set_presence_penalty(p.presence_penalty);
  if (o.seed->count() > 0) out->set_seed(p.seed);
}

}  // namespace airlock::ctl

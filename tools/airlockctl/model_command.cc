// `airlockctl model inspect` (what is in a GGUF file) and `airlockctl model synth` (write a
// synthetic model for benchmarks and tests).
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "inference/gguf/gguf_file.h"
#include "inference/model/model_config.h"
#include "inference/model/synthetic_model.h"
#include "inference/tokenizer/tokenizer.h"
#include "tools/airlockctl/commands.h"

namespace airlock::ctl {
namespace {

std::string Shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int Inspect(const std::string& path) {
  auto file = inference::GgufFile::Open(path);
  if (!file.ok()) {
    std::fprintf(stderr, "airlockctl model inspect: %s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  const inference::GgufFile& f = **file;
  std::printf("file:          %s (%zu bytes, GGUF v%u, alignment %lu)\n", path.c_str(), f.file_size(), f.version(),
              static_cast<unsigned long>(f.alignment()));
  auto config = inference::ReadModelConfig(f);
  if (config.ok()) {
    const inference::ModelConfig& c = *config;
    std::printf("architecture:  %s%s\n", c.arch_name.c_str(), c.name.empty() ? "" : (" (" + c.name + ")").c_str());
    std::printf("layers:        %d\n", c.n_layer);
    std::printf("embedding:     %d\n", c.n_embd);
    std::printf("heads:         %d (kv %d, head dim %d)\n", c.n_head, c.n_head_kv, c.head_dim);
    std::printf("feed-forward:  %d\n", c.n_ff);
    std::printf("vocabulary:    %d\n", c.n_vocab);
    std::printf("context:       %d\n", c.n_ctx_train);
    std::printf("rope:          dims %d, base %g, scale %g%s%s\n", c.n_rot, c.rope_freq_base, c.rope_freq_scale,
                c.rope_neox ? ", neox" : "", c.has_rope_freqs ? ", rope_freqs" : "");
    std::printf("rms epsilon:   %g\n", c.rms_eps);
    std::printf("embeddings:    %s\n", c.tied_embeddings ? "tied (output = token_embd)" : "separate output");
  } else {
    std::printf("architecture:  not runnable here: %s\n", std::string(config.status().message()).c_str());
  }
  auto tok = inference::Tokenizer::FromGguf(f);
  if (tok.ok()) {
    const inference::Tokenizer& t = **tok;
    std::printf("tokenizer:     %s / %s, %d tokens, bos %d, eos %d, eot %d, add_bos %s\n", t.model().c_str(),
                t.pre().c_str(), t.n_vocab(), t.bos(), t.eos(), t.eot(), t.add_bos() ? "true" : "false");
  } else if (f.Has("tokenizer.ggml.model")) {
    std::printf("tokenizer:     unsupported: %s\n", std::string(tok.status().message()).c_str());
  } else {
    std::printf("tokenizer:     none\n");
  }
  std::printf("metadata:      %zu keys\n", f.metadata().size());
  std::printf("tensors:       %zu\n\n", f.tensors().size());
  if (!f.tensors().empty()) {
    std::printf("%-32s %-8s %-22s %14s\n", "name", "type", "shape", "bytes");
    size_t total = 0;
    for (const inference::GgufTensorInfo& t : f.tensors()) {
      std::printf("%-32s %-8s %-22s %14zu\n", t.name.c_str(), inference::TensorTypeName(t.type), Shape(t.shape).c_str(),
                  t.bytes);
      total += t.bytes;
    }
    std::printf("%-32s %-8s %-22s %14zu\n", "total", "", "", total);
  }
  return 0;
}

}  // namespace

void AddModelCommands(CLI::App& app) {
  CLI::App* model = app.add_subcommand("model", "Inspect and build model files; sign, verify and import bundles");
  model->require_subcommand(1);
  AddModelBundleCommands(*model);

  auto inspect_path = std::make_shared<std::string>();
  CLI::App* inspect = model->add_subcommand("inspect", "Print a GGUF file's architecture, tokenizer and tensors");
  inspect->add_option("file", *inspect_path, "GGUF file")->required()->check(CLI::ExistingFile);
  inspect->callback([inspect_path] { SetExitCode(Inspect(*inspect_path)); });

  auto spec = std::make_shared<inference::SyntheticModelSpec>();
  auto out = std::make_shared<std::string>();
  CLI::App* synth = model->add_subcommand("synth", "Write a synthetic model with deterministic random weights");
  synth->add_option("--out,-o", *out, "Output GGUF path")->required();
  synth->add_option("--arch", spec->arch, "llama, qwen2, qwen3, phi3 or gemma2")->capture_default_str();
  synth->add_option("--layers", spec->n_layer, "Transformer blocks")->capture_default_str();
  synth->add_option("--embd", spec->n_embd, "Embedding width")->capture_default_str();
  synth->add_option("--heads", spec->n_head, "Attention heads")->capture_default_str();
  synth->add_option("--kv-heads", spec->n_head_kv, "Key/value heads (GQA)")->capture_default_str();
  synth->add_option("--ff", spec->n_ff, "Feed-forward width")->capture_default_str();
  synth->add_option("--vocab", spec->n_vocab, "Vocabulary size (byte-level SPM vocabulary)")->capture_default_str();
  synth->add_option("--vocab-from", spec->vocab_from, "Copy the tokenizer from this GGUF instead");
  synth->add_option("--ctx", spec->n_ctx, "Training context length")->capture_default_str();
  synth->add_option("--rope-base", spec->rope_freq_base, "RoPE frequency base")->capture_default_str();
  synth->add_option("--type", spec->weight_type, "Weight type: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_K q5_K q6_K q4_K_M q5_K_M")
      ->capture_default_str();
  synth->add_flag("--tied", spec->tied_embeddings, "Tie the output projection to token_embd");
  synth->add_option("--seed", spec->seed, "Random seed")->capture_default_str();
  synth->callback([spec, out] {
    absl::Status s = inference::WriteSyntheticModel(*spec, *out);
    if (!s.ok()) {
      std::fprintf(stderr, "airlockctl model synth: %s\n", std::string(s.message()).c_str());
      SetExitCode(1);
      return;
    }
    std::printf("wrote %s\n", out->c_str());
  });
}

}  // namespace airlock::ctl

// `airlockctl run`: generate text with the engine in-process, streamed to stdout or as one JSON object.
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth/dev_pki.h"
#include "inference/engine.h"
#include "tools/airlockctl/commands.h"
#include "tools/airlockctl/sampling_flags.h"

namespace airlock::ctl {
namespace {

int g_exit_code = 0;

struct RunFlags {
  std::string model;
  std::string prompt;
  int32_t max_tokens = 128;
  inference::SamplingParams sampling;  // defaults as llama.cpp's (temperature 0.8, top-k 40, ...)
  int32_t threads = 0;
  int32_t ctx = 0;
  std::string kv_type = "f16";
  std::string device = "cpu";
  std::string placement;
  std::vector<std::string> stop;
  bool json = false;
  std::string json_schema_file;  // structured output: a JSON schema
  bool json_object = false;      // structured output: any JSON object
};

int Run(const RunFlags& f) {
  inference::EngineOptions options;
  options.n_threads = f.threads > 0 ? f.threads : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  options.n_ctx = f.ctx;
  if (absl::Status s = inference::SetDevicesFromFlags(f.device, f.placement, &options); !s.ok()) {
    std::fprintf(stderr, "airlockctl run: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (f.kv_type == "f16") {
    options.kv_type = inference::KvCacheType::kF16;
  } else if (f.kv_type == "f32") {
    options.kv_type = inference::KvCacheType::kF32;
  } else {
    std::fprintf(stderr, "airlockctl run: --kv-type must be f16 or f32, got '%s'\n", f.kv_type.c_str());
    return 2;
  }
  auto engine = inference::Engine::Load(f.model, options);
  if (!engine.ok()) {
    std::fprintf(stderr, "airlockctl run: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  inference::GenerateRequest req;
  req.prompt = f.prompt;
  req.max_tokens = f.max_tokens;
  req.stop = f.stop;
  req.sampling = f.sampling;
  if (f.json_object) req.response_format.type = inference::ResponseFormat::Type::kJsonObject;
  if (!f.json_schema_file.empty()) {
    absl::StatusOr<std::string> schema = auth::ReadTextFile(f.json_schema_file);
    if (!schema.ok()) {
      std::fprintf(stderr, "airlockctl run: --json-schema: %s\n", std::string(schema.status().message()).c_str());
      return 2;
    }
    req.response_format.type = inference::ResponseFormat::Type::kJsonSchema;
    req.response_format.json_schema = *std::move(schema);
  }
  auto stream = [&](const inference::GeneratedPiece& piece) {
    if (!f.json) {
      std::fwrite(piece.text.data(), 1, piece.text.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  auto result = (*engine)->Generate(req, stream);
  if (!result.ok()) {
    std::fprintf(stderr, "airlockctl run: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  if (f.json) {
    nlohmann::json j;
    j["prompt_tokens"] = result->prompt_tokens;
    j["output_tokens"] = result->output_tokens;
    j["output_text"] = result->text;
    j["stop_reason"] = inference::StopReasonName(result->stop_reason);
    j["prompt_seconds"] = result->prompt_seconds;
    j["generation_seconds"] = result->generation_seconds;
    // Generated text is valid UTF-8 by construction; replace rather than throw if it ever is not.
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::fputc('\n', stdout);
  }
  return 0;
}

// `airlockctl devices`: where a model can run, one line per device (or one JSON document).
int Devices(bool json) {
  std::string vulkan_error;
  const std::vector<inference::DeviceDescription> devices = inference::ListDevices(&vulkan_error);
  if (json) {
    nlohmann::json j;
    j["devices"] = nlohmann::json::array();
    for (const auto& d : devices) {
      j["devices"].push_back({{"id", d.id}, {"name", d.name}, {"type", d.type}, {"driver", d.driver},
                              {"memory_bytes", d.memory_bytes}, {"usable", d.unusable.empty()},
                              {"unusable", d.unusable}});
    }
    if (!vulkan_error.empty()) j["vulkan_error"] = vulkan_error;
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    return 0;
  }
  for (const auto& d : devices) {
    std::printf("%-10s %-12s %s", d.id.c_str(), d.type.c_str(), d.name.c_str());
    if (d.memory_bytes > 0) std::printf(", %.1f GiB", static_cast<double>(d.memory_bytes) / (1u << 30));
    if (!d.driver.empty()) std::printf(", %s", d.driver.c_str());
    if (!d.unusable.empty()) std::printf(" (not usable: %s)", d.unusable.c_str());
    std::printf("\n");
  }
  if (!vulkan_error.empty()) std::printf("no Vulkan devices: %s\n", vulkan_error.c_str());
  return 0;
}

}  // namespace

int ExitCode() { return g_exit_code; }
void SetExitCode(int code) { g_exit_code = code; }

void AddRunCommand(CLI::App& app) {
  auto flags = std::make_shared<RunFlags>();
  CLI::App* run = app.add_subcommand("run", "Generate text with a local model file (no daemon)");
  run->add_option("--model,-m", flags->model, "GGUF model file")->required()->check(CLI::ExistingFile);
  run->add_option("--prompt,-p", flags->prompt, "Prompt text")->required();
  run->add_option("--max-tokens,-n", flags->max_tokens, "Maximum tokens to generate")->capture_default_str();
  AddSamplingFlags(*run, flags->sampling, SamplingDefaults::kLocal);
  run->add_option("--threads", flags->threads, "CPU threads (default: all cores)");
  run->add_option("--ctx", flags->ctx, "Context size in tokens (default: model's, at most 4096)");
  run->add_option("--kv-type", flags->kv_type, "KV cache type: f16 or f32")->capture_default_str();
  run->add_option("--device", flags->device,
                  "cpu, or a Vulkan device: vulkan:N or vulkan:NAME (see airlockctl devices); several, comma-separated, "
                  "with --placement")
      ->capture_default_str();
  run->add_option("--placement", flags->placement,
                  "with several devices: replicas (a copy of the model on each) or layers (its layers split over them)");
  run->add_option("--stop", flags->stop, "Stop string (repeatable)");
  run->add_flag("--json", flags->json, "Print one JSON object instead of streaming text");
  CLI::Option* schema = run->add_option("--json-schema", flags->json_schema_file,
                                        "Structured output: the text is an instance of the JSON schema in this file")
                            ->check(CLI::ExistingFile);
  run->add_flag("--json-object", flags->json_object, "Structured output: the text is a JSON object")->excludes(schema);
  run->callback([flags] { SetExitCode(Run(*flags)); });

  auto devices_json = std::make_shared<bool>(false);
  CLI::App* devices = app.add_subcommand("devices", "List the devices a model can run on (the CPU and Vulkan devices)");
  devices->add_flag("--json", *devices_json, "Print one JSON document");
  devices->callback([devices_json] { SetExitCode(Devices(*devices_json)); });
}

}  // namespace airlock::ctl

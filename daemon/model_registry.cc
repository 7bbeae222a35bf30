// ModelRegistry: configured GGUF files -> engines, chat templates, descriptions and queues.
#include "daemon/model_registry.h"

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"
#include "inference/base/tensor_type.h"

namespace airlock::daemon {

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Load(
    const std::vector<ModelSpec>& specs, const std::function<void(const ServedModel&)>& on_loaded) {
  auto registry = std::make_unique<ModelRegistry>();
  for (const ModelSpec& spec : specs) {
    auto served = std::make_unique<ServedModel>();
    served->name = spec.name;
    const auto start = std::chrono::steady_clock::now();
    inference::EngineOptions options;
    options.n_threads = static_cast<int32_t>(std::max<uint32_t>(1, spec.threads));
    options.n_ctx = static_cast<int32_t>(spec.context_length);
    options.kv_type = spec.kv_f32 ? inference::KvCacheType::kF32 : inference::KvCacheType::kF16;
    options.max_sequences = static_cast<int32_t>(spec.max_sequences);
    options.n_batch = static_cast<int32_t>(spec.step_tokens);
    options.kv_pool_tokens = spec.kv_cache_tokens;
    options.kv_block_tokens = static_cast<int32_t>(spec.kv_block_tokens);
    options.prefix_cache = spec.prefix_cache != PrefixCacheScope::kOff;
    options.device = spec.device;
    options.devices = spec.devices;
    options.placement = spec.placement == Placement::kLayers ? inference::EngineOptions::Placement::kLayers
                                                             : inference::EngineOptions::Placement::kReplicas;
    served->prefix_cache = spec.prefix_cache;
    // A signed bundle's manifest is checked before the weights are read at all.
    absl::StatusOr<auth::VerifiedManifest> verified = absl::FailedPreconditionError("unsigned");
    if (spec.publishers != nullptr) {
      const std::filesystem::path path(spec.path);
      verified = auth::VerifyManifest(path.parent_path().string(), *spec.publishers);
      if (!verified.ok()) {
        return absl::Status(verified.status().code(), absl::StrCat("model \"", spec.name, "\" (", spec.path,
                                                                   "): ", verified.status().message()));
      }
      if (verified->manifest.Find(path.filename().string()) == nullptr) {
        return absl::PermissionDeniedError(absl::StrCat(
            "model \"", spec.name, "\" (", spec.path, "): ", path.filename().string(), " is not listed in ",
            path.parent_path().string(), "/manifest.json (signed by ", verified->key_id,
            "), so it is not part of the signed bundle"));
      }
    }
    absl::StatusOr<std::unique_ptr<inference::Engine>> engine = inference::Engine::Load(spec.path, options);
    if (!engine.ok()) {
      return absl::Status(engine.status().code(),
                          absl::StrCat("model \"", spec.name, "\" (", spec.path, "): ", engine.status().message()));
    }
    served->engine = std::move(*engine);
    if (spec.publishers != nullptr) {
      // The digest is taken over the bytes the engine has mapped: what is verified is what runs.
      const std::filesystem::path path(spec.path);
      const auth::BundleFile* entry = verified->manifest.Find(path.filename().string());
      absl::Status checked = auth::CheckFileBytes(*entry, served->engine->model().file().bytes());
      if (!checked.ok()) {
        return absl::Status(checked.code(), absl::StrCat("model \"", spec.name, "\": model bundle ",
                                                         path.parent_path().string(), ": ", checked.message()));
      }
      served->bundle = *std::move(verified);
    }
    served->load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    const inference::GgufFile& file = served->engine->model().file();
    absl::StatusOr<inference::ChatTemplate> chat_template = absl::NotFoundError("");
    if (!spec.chat_template.empty()) {
      // An explicit override that names no family is a configuration error, not a missing feature.
      chat_template = inference::ChatTemplate::FromName(spec.chat_template);
      if (!chat_template.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("model \"", spec.name, "\": chat_template: ",
                                                       chat_template.status().message()));
      }
    } else if (absl::StatusOr<std::string> jinja = file.GetString("tokenizer.chat_template"); jinja.ok()) {
      chat_template = inference::ChatTemplate::FromJinja(*jinja);
    } else {
      chat_template = absl::NotFoundError(
          "the model file has no tokenizer.chat_template; set models[].chat_template to use Chat");
    }
    if (chat_template.ok()) {
      served->chat_template = std::move(*chat_template);
    } else {
      served->chat_template_error = std::string(chat_template.status().message());
    }

    airlock::v1::ModelInfo& info = served->info;
    info.set_name(spec.name);
    info.set_architecture(served->engine->model().config().arch_name);
    info.set_context_length(static_cast<uint32_t>(served->engine->context_length()));
    info.set_vocabulary_size(static_cast<uint32_t>(served->engine->tokenizer().n_vocab()));
    if (served->chat_template) info.set_chat_template(std::string(served->chat_template->name()));
    info.set_parameters(inference::ParameterCount(file));
    info.set_weight_type(inference::DominantWeightType(file));
    served->device = served->engine->device_name();
    info.set_device(served->device);

    served->queue = std::make_unique<GenerationQueue>(*served->engine, std::max<uint32_t>(1, spec.max_queue));
    if (on_loaded) on_loaded(*served);
    registry->models_.push_back(std::move(served));
  }
  return registry;
}

const ServedModel* ModelRegistry::Find(std::string_view name) const {
  for (const auto& m : models_) {
    if (m->name == name) return m.get();
  }
  return nullptr;
}

void ModelRegistry::Shutdown() {
  for (const auto& m : models_) m->queue->Shutdown();
}

}  // namespace airlock::daemon

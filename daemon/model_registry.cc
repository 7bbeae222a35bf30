// ModelRegistry: configured GGUF files -> engines, chat templates, descriptions and queues.
#include "daemon/model_registry.h"

#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"
#include "inference/base/tensor_type.h"

namespace airlock::daemon {
namespace {

// Parameter count and the weight type holding the most bytes ("Q4_K" for a Q4_K_M file).
void DescribeWeights(const inference::GgufFile& file, airlock::v1::ModelInfo& info) {
  uint64_t parameters = 0;
  std::map<inference::TensorType, uint64_t> bytes_by_type;
  for (const inference::GgufTensorInfo& t : file.tensors()) {
    parameters += static_cast<uint64_t>(t.n_elements);
    bytes_by_type[t.type] += t.bytes;
  }
  info.set_parameters(parameters);
  inference::TensorType dominant = inference::TensorType::kF32;
  uint64_t most = 0;
  for (const auto& [type, bytes] : bytes_by_type) {
    if (bytes > most) {
      most = bytes;
      dominant = type;
    }
  }
  std::string name = inference::TensorTypeName(dominant);
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  info.set_weight_type(name);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Load(const std::vector<ModelSpec>& specs) {
  auto registry = std::make_unique<ModelRegistry>();
  for (const ModelSpec& spec : specs) {
    auto served = std::make_unique<ServedModel>();
    served->name = spec.name;
    const auto start = std::chrono::steady_clock::now();
    inference::EngineOptions options;
    options.n_threads = static_cast<int32_t>(std::max<uint32_t>(1, spec.threads));
    options.n_ctx = static_cast<int32_t>(spec.context_length);
    options.kv_type = spec.kv_f32 ? inference::KvCacheType::kF32 : inference::KvCacheType::kF16;
    absl::StatusOr<std::unique_ptr<inference::Engine>> engine = inference::Engine::Load(spec.path, options);
    if (!engine.ok()) {
      return absl::Status(engine.status().code(),
                          absl::StrCat("model \"", spec.name, "\" (", spec.path, "): ", engine.status().message()));
    }
    served->engine = std::move(*engine);
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
    DescribeWeights(file, info);

    served->queue = std::make_unique<GenerationQueue>(*served->engine, std::max<uint32_t>(1, spec.max_queue));
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

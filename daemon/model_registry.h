// The models this daemon serves: each configured GGUF loaded into an Engine, its chat template
// recognised, its public description, and its generation queue.
//
// Thread-safety: the set of models is fixed after Load(); Find() and models() may be called from
// any thread. Shutdown() once, from the thread that drains the server.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "airlock/v1/inference.pb.h"
#include "auth/model_bundle.h"
#include "daemon/config/daemon_options.h"
#include "daemon/generation_queue.h"
#include "inference/chat/chat_template.h"
#include "inference/engine.h"

namespace airlock::daemon {

struct ModelSpec {
  std::string name;
  std::string path;
  uint32_t context_length = 0;  // 0 = min(model's training context, 4096)
  uint32_t threads = 1;
  bool kv_f32 = false;
  std::string chat_template;    // family name override; "" = recognise from the GGUF
  uint32_t max_queue = 64;
  // The engine's batching (ModelOptions has the meaning and defaults of each).
  uint32_t max_sequences = 16;
  uint32_t step_tokens = 64;
  uint32_t kv_cache_tokens = 0;
  uint32_t kv_block_tokens = 16;
  PrefixCacheScope prefix_cache = PrefixCacheScope::kIdentity;
  std::string device = "cpu";  // EngineOptions::device
  std::vector<std::string> devices;  // EngineOptions::devices
  Placement placement = Placement::kReplicas;  // EngineOptions::placement
  // Not null: the model must come from a bundle signed by one of these (model_signatures).
  std::shared_ptr<const auth::TrustedPublishers> publishers;
};

struct ServedModel {
  std::string name;
  std::unique_ptr<inference::Engine> engine;
  // Absent when the GGUF has no template we recognise; Chat then fails with chat_template_error.
  std::optional<inference::ChatTemplate> chat_template;
  std::string chat_template_error;
  // Which calls share cached prompt prefixes; the caller sets each request's cache_scope from it.
  PrefixCacheScope prefix_cache = PrefixCacheScope::kIdentity;
  // Where it runs: "cpu", or the Vulkan device as configured plus its name ("vulkan:0 (NVIDIA H100 ...)").
  std::string device;
  airlock::v1::ModelInfo info;
  double load_seconds = 0;
  // The signed manifest it was verified against (absent when signatures are not required).
  std::optional<auth::VerifiedManifest> bundle;
  std::unique_ptr<GenerationQueue> queue;
};

class ModelRegistry {
 public:
  // Loads every model, in order, calling `on_loaded` (when set) after each; the first failure is
  // returned with the model's name and path.
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Load(
      const std::vector<ModelSpec>& specs, const std::function<void(const ServedModel&)>& on_loaded = nullptr);

  // nullptr when no model has that name.
  const ServedModel* Find(std::string_view name) const;
  const std::vector<std::unique_ptr<ServedModel>>& models() const { return models_; }

  // Stops every queue (see GenerationQueue::Shutdown).
  void Shutdown();

 private:
  std::vector<std::unique_ptr<ServedModel>> models_;
};

}  // namespace airlock::daemon

// Engine: validates and tokenizes a request, then hands it to the scheduler (inference/scheduler.h).
#include "inference/engine.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <future>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"
#include "inference/scheduler.h"
#ifdef AIRLOCK_HAVE_VULKAN
#include "inference/backend/vulkan/vulkan_backend.h"
#include "inference/backend/vulkan/vulkan_device.h"
#endif

namespace airlock::inference {

absl::StatusOr<std::unique_ptr<Backend>> CreateDeviceBackend(const std::string& device) {
  if (device == "cpu") return CreateCpuBackend();
  if (device.starts_with("vulkan:") && device.size() > 7 && device.size() <= 256) {
#ifdef AIRLOCK_HAVE_VULKAN
    return CreateVulkanBackend(device);
#else
    return absl::UnimplementedError(absl::StrCat("device ", device, ": this build has no Vulkan backend"));
#endif
  }
  return absl::InvalidArgumentError(absl::StrCat("device must be \"cpu\" or \"vulkan:N\" (or vulkan:NAME), got \"",
                                                 device.substr(0, 64), device.size() > 64 ? "...\"" : "\""));
}

std::vector<DeviceDescription> ListDevices(std::string* vulkan_error) {
  std::vector<DeviceDescription> out;
  DeviceDescription cpu;
  cpu.id = "cpu";
  cpu.name = "CPU";
  cpu.type = "cpu";
  out.push_back(cpu);
#ifdef AIRLOCK_HAVE_VULKAN
  absl::StatusOr<std::vector<vulkan::DeviceInfo>> devices = vulkan::ListDevices();
  if (!devices.ok()) {
    if (vulkan_error != nullptr) *vulkan_error = std::string(devices.status().message());
    return out;
  }
  for (const vulkan::DeviceInfo& d : *devices) {
    DeviceDescription v;
    v.id = absl::StrCat("vulkan:", d.index);
    v.name = d.name;
    v.type = d.type;
    v.driver = d.driver;
    v.memory_bytes = d.device_local_bytes;
    if (!d.compute) {
      v.unusable = "no compute queue";
    } else if (!d.storage_16bit) {
      v.unusable = "no 16-bit storage buffers";
    }
    out.push_back(v);
  }
#else
  if (vulkan_error != nullptr) *vulkan_error = "this build has no Vulkan backend";
#endif
  return out;
}


const char* StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kMaxTokens: return "max_tokens";
    case StopReason::kEndOfGeneration: return "eog";
    case StopReason::kStopString: return "stop_string";
    case StopReason::kContextFull: return "context_full";
    case StopReason::kCancelled: return "cancelled";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const std::string& path, const EngineOptions& options) {
  if (options.max_sequences < 1 || options.max_sequences > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_sequences must be in [1, 256], got ", options.max_sequences));
  }
  if (options.n_batch < options.max_sequences) {
    return absl::InvalidArgumentError(absl::StrCat("the per-step token budget (", options.n_batch,
                                                   ") must be at least max_sequences (", options.max_sequences,
                                                   "), so that every decoding sequence advances each step"));
  }
  if (options.kv_pool_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("KV pool size must be >= 0 tokens, got ", options.kv_pool_tokens));
  }
  std::unique_ptr<Engine> e(new Engine());
  AIRLOCK_ASSIGN_OR_RETURN(e->model_, Model::Load(path));
  auto tokenizer = Tokenizer::FromGguf(e->model_->file());
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(), absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  e->tokenizer_ = std::move(*tokenizer);
  const ModelConfig& c = e->model_->config();
  if (e->tokenizer_->n_vocab() > c.n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the tokenizer has ", e->tokenizer_->n_vocab(),
                                                   " tokens but the embedding only ", c.n_vocab));
  }
  AIRLOCK_ASSIGN_OR_RETURN(e->backend_, CreateDeviceBackend(options.device));
  ExecutorOptions eo;
  eo.n_threads = options.n_threads;
  eo.n_ctx = options.n_ctx > 0 ? options.n_ctx : std::min(c.n_ctx_train, 4096);
  eo.n_batch = options.n_batch;
  eo.kv_type = options.kv_type;
  eo.kv_block_tokens = options.kv_block_tokens;
  eo.prefix_cache = options.prefix_cache;
  eo.kv_pool_tokens = options.kv_pool_tokens;
  if (eo.kv_pool_tokens == 0) {
    // Every sequence at full context, unless that exceeds what the backend sets aside for a pool
    // (Backend::DefaultKvPoolBytes: a quarter of the machine's memory on the CPU; on a device,
    // half of its memory beside the weights).
    const double per_token = KvBytesPerToken(c, options.kv_type);
    const absl::StatusOr<uint64_t> budget_or = e->backend_->DefaultKvPoolBytes(*e->model_);
    if (!budget_or.ok()) {
      return absl::Status(budget_or.status().code(),
                          absl::StrCat(path, " on ", options.device, ": ", budget_or.status().message()));
    }
    const uint64_t budget = *budget_or;
    const int64_t want = static_cast<int64_t>(options.max_sequences) * eo.n_ctx;
    const int64_t fits = per_token > 0 && budget > 0 ? static_cast<int64_t>(static_cast<double>(budget) / per_token) : want;
    eo.kv_pool_tokens = std::max<int64_t>(eo.n_ctx, std::min(want, fits));
  }
  absl::StatusOr<std::unique_ptr<ModelExecutor>> executor = e->backend_->CreateExecutor(*e->model_, eo);
  if (!executor.ok()) {
    return absl::Status(executor.status().code(),
                        absl::StrCat(path, " on ", options.device, ": ", executor.status().message()));
  }
  e->executor_ = std::move(*executor);
  e->device_name_ = e->backend_->name();
  e->scheduler_ = std::make_unique<Scheduler>(*e->executor_, *e->tokenizer_, options.max_sequences);
  return e;
}

Engine::~Engine() { scheduler_.reset(); }

int32_t Engine::max_sequences() const { return scheduler_->max_sequences(); }

EngineStats Engine::stats() const { return scheduler_->stats(); }

absl::Status Engine::Health() const { return scheduler_->health(); }

absl::Status Engine::Start(GenerateRequest request, PieceCallback on_piece, DoneCallback on_done) {
  AIRLOCK_RETURN_IF_ERROR(Health());
  AIRLOCK_RETURN_IF_ERROR(ValidateSamplingParams(request.sampling));
  if (request.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0, got ", request.max_tokens));
  }
  AIRLOCK_ASSIGN_OR_RETURN(StopMatcher stop, StopMatcher::Create(request.stop));
  std::vector<int32_t> prompt;
  if (!request.prompt_tokens.empty()) {
    for (size_t i = 0; i < request.prompt_tokens.size(); ++i) {
      if (!tokenizer_->IsValid(request.prompt_tokens[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt_tokens[", i, "] = ", request.prompt_tokens[i], " is not a token of this model"));
      }
    }
    prompt = request.prompt_tokens;
  } else {
    prompt = tokenizer_->Encode(request.prompt, request.add_special, request.parse_special);
  }
  const int32_t n_ctx = context_length();
  if (prompt.empty()) {
    return absl::InvalidArgumentError("prompt is empty and the model adds no BOS token: nothing to condition on");
  }
  if (static_cast<int64_t>(prompt.size()) > n_ctx) {
    return absl::OutOfRangeError(
        absl::StrCat("prompt has ", prompt.size(), " tokens but the context holds ", n_ctx));
  }
  // Refused now rather than admitted and starved: a request that needs more positions than the
  // whole pool could never finish.
  const KvPool& pool = executor_->kv_pool();
  const int64_t positions = std::min<int64_t>(static_cast<int64_t>(prompt.size()) + request.max_tokens, n_ctx);
  if (pool.BlocksFor(positions) > pool.n_blocks()) {
    return absl::OutOfRangeError(absl::StrCat(
        "the request needs up to ", positions, " KV-cache positions (prompt ", prompt.size(), " + max_tokens ",
        request.max_tokens, ") but the model's whole KV pool holds ", pool.n_blocks() * pool.block_tokens()));
  }
  AIRLOCK_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(request.sampling, model_->config().n_vocab, n_ctx));
  AIRLOCK_RETURN_IF_ERROR(sampler.AcceptPrompt(prompt));
  auto job = std::make_unique<GenerationJob>(*tokenizer_, std::move(sampler), std::move(stop));
  job->tokens = prompt;
  job->result.prompt_tokens = std::move(prompt);
  job->request = std::move(request);
  job->on_piece = std::move(on_piece);
  job->on_done = std::move(on_done);
  scheduler_->Submit(std::move(job));
  return absl::OkStatus();
}

absl::StatusOr<GenerateResult> Engine::Generate(const GenerateRequest& request, const PieceCallback& on_piece) {
  std::promise<absl::StatusOr<GenerateResult>> promise;
  std::future<absl::StatusOr<GenerateResult>> future = promise.get_future();
  AIRLOCK_RETURN_IF_ERROR(Start(request, on_piece, [&promise](absl::StatusOr<GenerateResult> result) {
    promise.set_value(std::move(result));
  }));
  return future.get();
}

}  // namespace airlock::inference

// Engine: validates and tokenizes a request, then hands it to the scheduler (inference/scheduler.h).
#include "inference/engine.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "inference/base/status.h"
#include "inference/sampling/json_schema.h"
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
  // Fault injection for the tests of a lost device: "N" loses the (first) device of the first
  // replica at its step N, "N:R" that of replica R. Named in the device label, so the start-up log
  // shows it.
  int64_t lost_at_step = 0, lost_replica = 0;
  if (const char* v = std::getenv("AIRLOCK_TEST_VULKAN_LOST_AT_STEP"); v != nullptr) {
    const std::vector<absl::string_view> parts = absl::StrSplit(v, ':');
    if (parts.size() > 2 || !absl::SimpleAtoi(parts[0], &lost_at_step) || lost_at_step <= 0 ||
        (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &lost_replica) || lost_replica < 0))) {
      return absl::InvalidArgumentError(
          "AIRLOCK_TEST_VULKAN_LOST_AT_STEP must be a positive step number, optionally followed by :REPLICA");
    }
  }
  // The backends the model runs on: one, one per replica, or one over every device (layers).
  std::vector<std::unique_ptr<Backend>> backends;
  if (options.devices.size() >= 2) {
    for (const std::string& d : options.devices) {
      if (!d.starts_with("vulkan:")) {
        return absl::InvalidArgumentError(absl::StrCat(
            "a model placed on several devices runs on Vulkan devices only; devices lists \"", d.substr(0, 64), "\""));
      }
      if (options.placement == EngineOptions::Placement::kReplicas) {
        AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<Backend> b, CreateDeviceBackend(d));
        backends.push_back(std::move(b));
      } else {
        AIRLOCK_RETURN_IF_ERROR(CreateDeviceBackend(d).status());  // the selector's form; a build with Vulkan
      }
    }
#ifdef AIRLOCK_HAVE_VULKAN
    if (options.placement == EngineOptions::Placement::kLayers) backends.push_back(CreateVulkanLayersBackend(options.devices));
#endif
  } else {
    AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<Backend> b,
                             CreateDeviceBackend(options.devices.empty() ? options.device : options.devices[0]));
    backends.push_back(std::move(b));
  }
  ExecutorOptions eo;
  eo.n_threads = options.n_threads;
  eo.n_ctx = options.n_ctx > 0 ? options.n_ctx : std::min(c.n_ctx_train, 4096);
  if (c.sliding_window > 0 && !c.sliding_window_applied && eo.n_ctx > c.sliding_window) {
    return absl::UnimplementedError(absl::StrCat(
        path, ": attention.sliding_window is ", c.sliding_window, " tokens but the context is ", eo.n_ctx,
        ": sliding-window attention is not implemented; run the model with a context of at most ", c.sliding_window,
        " tokens (models[].context_length)"));
  }
  eo.n_batch = options.n_batch;
  eo.kv_type = options.kv_type;
  eo.kv_block_tokens = options.kv_block_tokens;
  eo.prefix_cache = options.prefix_cache;
  std::vector<std::string> names;
  for (std::unique_ptr<Backend>& backend : backends) {
    const std::string where = backend->name();
    eo.test_device_lost_at_step = static_cast<int64_t>(e->replicas_.size()) == lost_replica ? lost_at_step : 0;
    eo.kv_pool_tokens = options.kv_pool_tokens;
    if (eo.kv_pool_tokens == 0) {
      // Every sequence at full context, unless that exceeds what the backend sets aside for a pool
      // (Backend::DefaultKvPoolBytes: a quarter of the machine's memory on the CPU; on a device,
      // half of its memory beside the weights).
      const double per_token = KvBytesPerToken(c, options.kv_type);
      const absl::StatusOr<uint64_t> budget_or = backend->DefaultKvPoolBytes(*e->model_);
      if (!budget_or.ok()) {
        return absl::Status(budget_or.status().code(),
                            absl::StrCat(path, " on ", where, ": ", budget_or.status().message()));
      }
      const uint64_t budget = *budget_or;
      const int64_t want = static_cast<int64_t>(options.max_sequences) * eo.n_ctx;
      const int64_t fits =
          per_token > 0 && budget > 0 ? static_cast<int64_t>(static_cast<double>(budget) / per_token) : want;
      eo.kv_pool_tokens = std::max<int64_t>(eo.n_ctx, std::min(want, fits));
    }
    absl::StatusOr<std::unique_ptr<ModelExecutor>> executor = backend->CreateExecutor(*e->model_, eo);
    if (!executor.ok()) {
      return absl::Status(executor.status().code(),
                          absl::StrCat(path, " on ", where, ": ", executor.status().message()));
    }
    Replica r;
    r.executor = std::move(*executor);
    names.push_back(backend->name());
    r.backend = std::move(backend);
    e->replicas_.push_back(std::move(r));
  }
  e->device_name_ = backends.size() > 1 ? absl::StrCat("replicas: ", absl::StrJoin(names, " + ")) : names[0];
  for (Replica& r : e->replicas_) {
    r.scheduler = std::make_unique<Scheduler>(*r.executor, *e->tokenizer_, options.max_sequences);
  }
  return e;
}

const char* PlacementName(EngineOptions::Placement placement) {
  switch (placement) {
    case EngineOptions::Placement::kReplicas: return "replicas";
    case EngineOptions::Placement::kLayers: return "layers";
  }
  return "unknown";
}

absl::Status SetDevicesFromFlags(const std::string& device, const std::string& placement, EngineOptions* options) {
  const std::vector<std::string> devices = absl::StrSplit(device, ',');
  if (devices.size() == 1) {
    if (!placement.empty()) return absl::InvalidArgumentError("--placement needs several devices (--device A,B)");
    options->device = device;
    return absl::OkStatus();
  }
  if (placement == "replicas") {
    options->placement = EngineOptions::Placement::kReplicas;
  } else if (placement == "layers") {
    options->placement = EngineOptions::Placement::kLayers;
  } else {
    return absl::InvalidArgumentError("several devices need --placement replicas or --placement layers");
  }
  options->devices = devices;
  return absl::OkStatus();
}

Engine::~Engine() {
  // Every step thread stops (failing what still runs) before any executor goes.
  for (Replica& r : replicas_) r.scheduler.reset();
}

int32_t Engine::max_sequences() const {
  int32_t n = 0;
  for (const Replica& r : replicas_) n += r.scheduler->max_sequences();
  return n;
}

EngineStats Engine::stats() const {
  EngineStats sum;
  for (const Replica& r : replicas_) {
    const EngineStats s = r.scheduler->stats();
    sum.running += s.running;
    sum.waiting += s.waiting;
    sum.batch_sequences += s.batch_sequences;
    sum.batch_tokens += s.batch_tokens;
    sum.kv_blocks_total += s.kv_blocks_total;
    sum.kv_blocks_used += s.kv_blocks_used;
    sum.kv_blocks_cached += s.kv_blocks_cached;
    sum.kv_block_tokens = s.kv_block_tokens;
    sum.steps += s.steps;
    sum.prefix_query_tokens += s.prefix_query_tokens;
    sum.prefix_hit_tokens += s.prefix_hit_tokens;
    sum.preemptions += s.preemptions;
  }
  return sum;
}

absl::Status Engine::Health() const {
  absl::Status first;
  for (const Replica& r : replicas_) {
    absl::Status h = r.scheduler->health();
    if (h.ok()) return h;
    if (first.ok()) first = std::move(h);
  }
  return first;
}

std::vector<std::string> Engine::degraded() const {
  std::vector<std::string> out;
  for (const Replica& r : replicas_) {
    const absl::Status h = r.scheduler->health();
    if (!h.ok()) out.emplace_back(h.message());
  }
  return out;
}

std::vector<ModelExecutor::DeviceUsage> Engine::device_usage() const {
  std::vector<ModelExecutor::DeviceUsage> out;
  for (const Replica& r : replicas_) {
    for (ModelExecutor::DeviceUsage& u : r.executor->device_usage()) out.push_back(std::move(u));
  }
  return out;
}

absl::Status Engine::Start(GenerateRequest request, PieceCallback on_piece, DoneCallback on_done) {
  // The least-loaded replica that can still serve (the first on a tie).
  Replica* replica = nullptr;
  int64_t least = 0;
  for (Replica& r : replicas_) {
    if (!r.scheduler->health().ok()) continue;
    const EngineStats s = r.scheduler->stats();
    const int64_t load = int64_t{s.running} + s.waiting;
    if (replica == nullptr || load < least) {
      replica = &r;
      least = load;
    }
  }
  if (replica == nullptr) return Health();
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
  const KvPool& pool = replica->executor->kv_pool();
  const int64_t positions = std::min<int64_t>(static_cast<int64_t>(prompt.size()) + request.max_tokens, n_ctx);
  if (pool.BlocksFor(positions) > pool.n_blocks()) {
    return absl::OutOfRangeError(absl::StrCat(
        "the request needs up to ", positions, " KV-cache positions (prompt ", prompt.size(), " + max_tokens ",
        request.max_tokens, ") but the model's whole KV pool holds ", pool.n_blocks() * pool.block_tokens()));
  }
  AIRLOCK_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(request.sampling, model_->config().n_vocab, n_ctx));
  AIRLOCK_RETURN_IF_ERROR(sampler.AcceptPrompt(prompt));
  if (request.constraint == nullptr) {
    AIRLOCK_ASSIGN_OR_RETURN(request.constraint, PrepareConstraint(request.response_format));
  }
  auto job = std::make_unique<GenerationJob>(*tokenizer_, std::move(sampler), std::move(stop));
  if (request.constraint != nullptr) job->constraint.emplace(request.constraint);
  job->tokens = prompt;
  job->result.prompt_tokens = std::move(prompt);
  job->request = std::move(request);
  job->on_piece = std::move(on_piece);
  job->on_done = std::move(on_done);
  replica->scheduler->Submit(std::move(job));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<TokenMaskCache>> Engine::PrepareConstraint(const ResponseFormat& format) const {
  if (format.type == ResponseFormat::Type::kText) return std::shared_ptr<TokenMaskCache>();
  const std::string& schema = format.type == ResponseFormat::Type::kJsonSchema ? format.json_schema : std::string();
  std::shared_ptr<const TokenVocabulary> vocabulary;
  {
    std::lock_guard<std::mutex> lock(constraint_mutex_);
    for (size_t i = 0; i < constraints_.size(); ++i) {
      if (constraints_[i].type == format.type && constraints_[i].schema == schema) {
        std::rotate(constraints_.begin(), constraints_.begin() + static_cast<std::ptrdiff_t>(i),
                    constraints_.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        return constraints_.front().masks;
      }
    }
    if (constraint_vocabulary_ == nullptr) {
      // The bytes each token adds to the text (as the detokenizer writes them); control tokens are
      // never produced under a constraint, end-of-generation tokens end it.
      const Tokenizer& t = *tokenizer_;
      std::vector<std::string> bytes(static_cast<size_t>(t.n_vocab()));
      std::vector<int32_t> never;
      for (int32_t id = 0; id < t.n_vocab(); ++id) {
        if (t.IsEndOfGeneration(id)) continue;
        if (t.IsControl(id)) {
          never.push_back(id);
          continue;
        }
        bytes[static_cast<size_t>(id)] = std::string(t.PieceView(id));
      }
      AIRLOCK_ASSIGN_OR_RETURN(constraint_vocabulary_,
                               TokenVocabulary::Create(std::move(bytes), t.end_of_generation_tokens(), never));
    }
    vocabulary = constraint_vocabulary_;
  }
  std::shared_ptr<const Grammar> grammar;
  if (format.type == ResponseFormat::Type::kJsonObject) {
    grammar = AnyJsonObjectGrammar();
  } else {
    AIRLOCK_ASSIGN_OR_RETURN(grammar, CompileJsonSchema(schema));
  }
  TokenMaskCacheOptions options;
  options.max_bytes = kConstraintMaskBytes;
  auto masks = std::make_shared<TokenMaskCache>(std::move(grammar), std::move(vocabulary), options);
  std::lock_guard<std::mutex> lock(constraint_mutex_);
  constraints_.insert(constraints_.begin(), ConstraintEntry{format.type, schema, masks});
  if (constraints_.size() > kConstraintCacheEntries) constraints_.pop_back();
  return masks;
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

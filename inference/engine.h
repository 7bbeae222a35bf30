// The engine facade: load a GGUF model and generate text from it. The daemon and the CLI see the
// inference engine only through this header.
//
// Many generations run at once: Start() hands a request to the engine's scheduler (one step
// thread per engine, inference/scheduler.h), which advances every running sequence together in
// batched forward steps over a paged, prefix-sharing KV cache. A request's tokens do not depend on
// what else runs (batch invariance): the same request gives the same output alone or batched.
//
// Thread-safety: Start(), Generate() and stats() may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/backend/backend.h"
#include "inference/model/model.h"
#include "inference/sampling/sampling_params.h"
#include "inference/sampling/token_constraint.h"
#include "inference/tokenizer/tokenizer.h"

namespace airlock::inference {

struct EngineOptions {
  int32_t n_threads = 1;                    // Default: 1.
  int32_t n_ctx = 0;                        // Default: 0 = min(model context, 4096). Per sequence.
  // Tokens one forward step computes at most, over all sequences (the per-step token budget): a
  // long prompt is prefilled in chunks that share each step with the decoding sequences. Smaller
  // keeps the other streams' inter-token latency low while a long prompt is read; larger reads
  // prompts faster. docs/performance.md measures the trade-off.
  int32_t n_batch = 64;                     // Default: 64.
  KvCacheType kv_type = KvCacheType::kF16;  // Default: F16, as llama.cpp.
  int32_t max_sequences = 16;               // Default: 16. Sequences generating at once, at most.
  // Size of the model's KV-cache pool in tokens (all sequences together). Memory is committed as
  // blocks are used. 0 = max_sequences * n_ctx, capped at what the backend sets aside for a pool
  // (Backend::DefaultKvPoolBytes: a quarter of physical memory on the CPU; on a Vulkan device,
  // half of its memory beside the weights, within its per-buffer limit) but never below n_ctx.
  int64_t kv_pool_tokens = 0;               // Default: 0 (see above).
  int32_t kv_block_tokens = 16;             // Default: 16 tokens per KV block (1..256).
  bool prefix_cache = true;                 // Default: true. Reuse cached prompt prefixes.
  // Where the model runs: "cpu", or a Vulkan device ("vulkan:N" by index, or "vulkan:NAME" for
  // part of its name). Never falls back to the CPU when the device is missing or refuses the model.
  std::string device = "cpu";               // Default: "cpu".
  // Two or more Vulkan devices to place the model on, as `placement` says; `device` is then
  // ignored. Empty: the model runs on `device` alone. The same device named twice gives two
  // logical devices on it (how the tests exercise placement on one lavapipe device).
  std::vector<std::string> devices;         // Default: empty.
  enum class Placement {
    // A full copy of the model per device, each with its own KV pool (sized for its device), up
    // to max_sequences sequences and its own step thread; each request goes to the least-loaded
    // replica whose device still works.
    kReplicas,
    // Consecutive layers per device (CreateVulkanLayersBackend), for a model too large for one:
    // one KV pool, one scheduler, each step passing through every device in turn.
    kLayers,
  };
  Placement placement = Placement::kReplicas;  // Default: replicas.
};
const char* PlacementName(EngineOptions::Placement placement);
// For command-line tools: "--device D" and "--placement P" into `options` (D one device, or
// several separated by commas; P "replicas" or "layers", needed with several and only then).
absl::Status SetDevicesFromFlags(const std::string& device, const std::string& placement, EngineOptions* options);

// What the engine holds and has done, for metrics. Counters count since Load.
struct EngineStats {
  int32_t running = 0;          // sequences admitted (holding or waiting for KV blocks to run)
  int32_t waiting = 0;          // started but not yet admitted (no free sequence slot or KV blocks)
  int32_t batch_sequences = 0;  // sequences in the last forward step
  int32_t batch_tokens = 0;     // tokens in the last forward step
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;   // referenced by at least one sequence
  int64_t kv_blocks_cached = 0; // unreferenced but kept for prefix reuse (evicted when needed)
  int32_t kv_block_tokens = 0;
  uint64_t steps = 0;                // forward steps run
  uint64_t prefix_query_tokens = 0;  // prompt tokens looked up in the prefix cache
  uint64_t prefix_hit_tokens = 0;    // of those, found cached (not computed again)
  uint64_t preemptions = 0;          // sequences evicted from the pool to be recomputed later
};

enum class StopReason {
  kMaxTokens,        // max_tokens generated
  kEndOfGeneration,  // the model produced EOS/EOT
  kStopString,       // one of the request's stop strings appeared
  kContextFull,      // no room left in the context window
  kCancelled,        // the caller's callback asked to stop
};
const char* StopReasonName(StopReason reason);

// Structured output: what the generated text must be (inference/sampling/json_schema.h says
// which JSON Schema keywords are honoured and what the JSON looks like).
struct ResponseFormat {
  enum class Type { kText, kJsonObject, kJsonSchema };
  Type type = Type::kText;
  std::string json_schema;  // kJsonSchema: the schema, as JSON text
};

struct GenerateRequest {
  std::string prompt;
  // When non-empty, the prompt already tokenized (chat prompts); `prompt`, add_special and
  // parse_special are then ignored. Every id must be valid for the vocabulary.
  std::vector<int32_t> prompt_tokens;
  int32_t max_tokens = 128;          // Default: 128; must be >= 0.
  SamplingParams sampling;
  std::vector<std::string> stop;     // stop strings; the text stops before the first match
  bool add_special = true;           // BOS etc. as the vocabulary says
  bool parse_special = false;        // text spelling a control token stays text
  // Polled while the request waits and before every step it takes part in (each prompt chunk, each
  // decoded token); when it returns true the generation stops with StopReason::kCancelled and its
  // KV blocks are freed. May be empty. Lets a caller cancel a long prefill (client gone, deadline
  // passed), which the piece callback cannot. Called on the engine's step thread: keep it cheap.
  std::function<bool()> cancelled;
  // Prefix-cache blocks are shared only between requests with the same scope (the daemon passes
  // the caller's identity unless configured to share model-wide): the time to first token shows
  // whether a prefix was cached, so sharing across scopes lets one caller probe another's prompts.
  std::string cache_scope;
  // Structured output: each token is drawn only among those that keep the text a prefix of a
  // valid instance, and the end of generation comes only once it is complete. Start() compiles
  // the format unless `constraint` is already set (Engine::PrepareConstraint, which a caller uses
  // to refuse a bad schema before queueing the request).
  ResponseFormat response_format;
  std::shared_ptr<TokenMaskCache> constraint;
};

struct GeneratedPiece {
  int32_t token = -1;  // the token that completed this text (-1 for text flushed at the end)
  std::string text;    // valid UTF-8, possibly empty (a byte token mid-character)
};

struct GenerateResult {
  std::vector<int32_t> prompt_tokens;  // BOS included when the model adds it
  std::vector<int32_t> output_tokens;  // includes a final EOS/EOT token when that ended generation
  std::string text;
  StopReason stop_reason = StopReason::kMaxTokens;
  double prompt_seconds = 0;
  double generation_seconds = 0;
};

// Called for every generated piece; return false to cancel.
using PieceCallback = std::function<bool(const GeneratedPiece&)>;
// Called exactly once when a started generation ends: its result, or the engine's error.
using DoneCallback = std::function<void(absl::StatusOr<GenerateResult>)>;

class Scheduler;

// The backend an EngineOptions::device string names: "cpu", or "vulkan:N" / "vulkan:NAME"
// (INVALID_ARGUMENT for anything else, UNIMPLEMENTED for Vulkan in a build without it).
absl::StatusOr<std::unique_ptr<Backend>> CreateDeviceBackend(const std::string& device);

// A device a model can be placed on, for `airlockctl devices` and start-up logs.
struct DeviceDescription {
  std::string id;            // what EngineOptions::device takes: "cpu", "vulkan:0", ...
  std::string name;          // the device's own name
  std::string type;          // "cpu", or the Vulkan device type ("discrete", "integrated", ...)
  std::string driver;        // driver name and version (Vulkan)
  uint64_t memory_bytes = 0; // the largest device-local heap (Vulkan); 0 for the CPU
  // Empty when the Vulkan backend can run models on it, else why not.
  std::string unusable;
};

// "cpu", then every device the Vulkan loader reports. A build without the Vulkan backend, or a
// machine without a Vulkan driver, lists the CPU alone (the second with `vulkan_error` set).
std::vector<DeviceDescription> ListDevices(std::string* vulkan_error = nullptr);

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const std::string& path, const EngineOptions& options);

  ~Engine();  // cancels what still runs (each on_done gets UNAVAILABLE) and stops the step thread

  // Hands a generation to the scheduler and returns at once. A request that can never run (bad
  // sampling parameters, empty or over-long prompt, needing more KV cache than the whole pool) is
  // refused here with a clear error, and then on_done is never called. Otherwise on_piece (may be
  // empty) and then on_done run on the engine's step thread: they must return quickly (every
  // sequence in the batch waits for them) and must not call into the engine.
  absl::Status Start(GenerateRequest request, PieceCallback on_piece, DoneCallback on_done);

  // The token masks of `format` for this model's vocabulary (null for text): compiled on first use
  // and kept for the last kConstraintCacheEntries distinct formats, so that requests repeating a
  // schema share its masks. INVALID_ARGUMENT naming what the schema uses that cannot be honoured.
  // Any thread.
  static constexpr size_t kConstraintCacheEntries = 8;
  // Memory the masks of one format may take (TokenMaskCacheOptions::max_bytes).
  static constexpr size_t kConstraintMaskBytes = size_t{16} << 20;
  absl::StatusOr<std::shared_ptr<TokenMaskCache>> PrepareConstraint(const ResponseFormat& format) const;

  // Start() and wait for the result (on_piece runs on the step thread).
  absl::StatusOr<GenerateResult> Generate(const GenerateRequest& request, const PieceCallback& on_piece);

  const Model& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // The first replica's (every replica runs with the same options; only its pool may differ).
  const ExecutorOptions& executor_options() const { return replicas_.front().executor->options(); }
  // Tokens a prompt plus its output may use.
  int32_t context_length() const { return executor_options().n_ctx; }
  // Sequences generating at once, at most, over every replica.
  int32_t max_sequences() const;
  // Where the model runs: "cpu", the configured Vulkan device with its name, or the placement
  // over several ("replicas: vulkan:0 (A) + vulkan:1 (B)", "vulkan:0 (A) layers 0-15 + ...").
  const std::string& device_name() const { return device_name_; }
  int replicas() const { return static_cast<int>(replicas_.size()); }
  // Summed over the replicas.
  EngineStats stats() const;
  // OK while the model can serve; UNAVAILABLE with the cause once its backend failed for good (a
  // lost GPU): every request then running, waiting or started later ends with that error. With
  // replicas, OK while any replica's device works (the lost one's requests end with its cause,
  // later ones go to the others); degraded() names the lost ones.
  absl::Status Health() const;
  // Why each replica that can no longer serve cannot; empty when all can.
  std::vector<std::string> degraded() const;
  // Memory and busy time on each device the model runs on; empty on the CPU. Any thread.
  std::vector<ModelExecutor::DeviceUsage> device_usage() const;

 private:
  Engine() = default;
  struct Replica {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<ModelExecutor> executor;
    std::unique_ptr<Scheduler> scheduler;
  };

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string device_name_;
  std::vector<Replica> replicas_;

  // Structured output: the vocabulary's bytes (built on first use) and the masks of recent
  // formats, most recently used first.
  mutable std::mutex constraint_mutex_;
  mutable std::shared_ptr<const TokenVocabulary> constraint_vocabulary_;
  struct ConstraintEntry {
    ResponseFormat::Type type;
    std::string schema;
    std::shared_ptr<TokenMaskCache> masks;
  };
  mutable std::vector<ConstraintEntry> constraints_;
};

}  // namespace airlock::inference

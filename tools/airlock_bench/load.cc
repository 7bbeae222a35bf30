// airlock-bench load: N concurrent mTLS clients, each on its own connection, streaming
// GenerateStream requests back to back through a running airlockd; TTFT, end-to-end latency,
// throughput and errors per run, beside the same request run by an in-process Engine.
#include "tools/airlock_bench/load.h"

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "inference/base/status.h"
#include "inference/engine.h"
#include "tools/airlock_bench/stats.h"

namespace airlock::bench {
namespace {

namespace v1 = ::airlock::v1;

constexpr auto kConnectDeadline = std::chrono::seconds(30);
// The check request before the runs gets at least this long, whatever --deadline says.
constexpr double kProbeDeadlineSeconds = 120;

// One measured request.
struct Sample {
  bool has_first_piece = false;
  double ttft_ms = 0;         // request sent until the first `piece` message (or engine callback)
  double e2e_ms = 0;          // request sent until the stream's status (or Generate's return)
  uint32_t tokens = 0;        // completion tokens (the final `done` message's usage)
  double queue_ms = 0;        // the daemon's own timings.queue_seconds
  double server_ttft_ms = 0;  // the daemon's own timings.time_to_first_token_seconds
};

// The result of one run: one path (daemon or in-process engine) at one concurrency.
struct RunResult {
  std::string path;
  int clients = 1;
  int ok = 0;      // requests that ended with OK and a `done` message
  int failed = 0;  // all other requests
  double wall_s = 0;
  uint64_t tokens = 0;
  Distribution ttft, e2e, queue, server_ttft;
  bool has_queue = false;  // daemon runs: queue and server_ttft are set
  std::map<std::string, int> errors;  // gRPC code name (or NO_DONE) -> count

  double RequestsPerSecond() const { return wall_s > 0 ? ok / wall_s : 0; }
  double TokensPerSecond() const { return wall_s > 0 ? static_cast<double>(tokens) / wall_s : 0; }
  double TokensPerRequest() const { return ok > 0 ? static_cast<double>(tokens) / ok : 0; }
};

RunResult Aggregate(std::string path, int clients, double wall_s, const std::vector<std::vector<Sample>>& samples,
                    bool has_queue) {
  RunResult r;
  r.path = std::move(path);
  r.clients = clients;
  r.wall_s = wall_s;
  r.has_queue = has_queue;
  std::vector<double> ttft, e2e, queue, server_ttft;
  for (const auto& mine : samples) {
    for (const Sample& s : mine) {
      ++r.ok;
      r.tokens += s.tokens;
      if (s.has_first_piece) ttft.push_back(s.ttft_ms);
      e2e.push_back(s.e2e_ms);
      queue.push_back(s.queue_ms);
      server_ttft.push_back(s.server_ttft_ms);
    }
  }
  r.ttft = Summarize(std::move(ttft));
  r.e2e = Summarize(std::move(e2e));
  if (has_queue) {
    r.queue = Summarize(std::move(queue));
    r.server_ttft = Summarize(std::move(server_ttft));
  }
  return r;
}

// What `Stream` returns for an OK stream without the final `done` message.
constexpr char kNoDone[] = "NO_DONE";

std::string ErrorKey(const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::DATA_LOSS && status.error_message() == kNoDone) return kNoDone;
  return GrpcCodeName(status.error_code());
}

class LoadBench {
 public:
  explicit LoadBench(const LoadOptions& o) : o_(o) {}

  absl::Status Init() {
    AIRLOCK_ASSIGN_OR_RETURN(ssl_, LoadMtlsFiles(o_.ca_file, o_.cert_file, o_.key_file));
    request_.set_model(o_.model);
    request_.set_prompt(o_.prompt);
    request_.set_max_tokens(o_.max_tokens);
    request_.mutable_sampling()->set_temperature(o_.temperature);
    if (o_.seed) request_.mutable_sampling()->set_seed(*o_.seed);
    if (!o_.model_file.empty() && o_.reference_requests > 0) {
      inference::EngineOptions eo;
      eo.n_threads = o_.engine_threads;
      AIRLOCK_ASSIGN_OR_RETURN(engine_, inference::Engine::Load(o_.model_file, eo));
      // As the daemon's PrepareGenerate: BOS as the vocabulary says, control tokens stay text.
      local_.prompt_tokens = engine_->tokenizer().Encode(o_.prompt, /*add_special=*/true, /*parse_special=*/false);
      local_.max_tokens = o_.max_tokens;
      local_.sampling.temperature = o_.temperature;
      if (o_.seed) local_.sampling.seed = *o_.seed;
    }
    // One request through the daemon: it answers, and (when the output is deterministic) it serves
    // the same model as --model-file.
    std::shared_ptr<grpc::Channel> channel = NewMtlsChannel(o_.server, o_.server_name, ssl_);
    auto stub = v1::Inference::NewStub(channel);
    Sample probe;
    const grpc::Status status = Stream(*stub, &probe, std::max(o_.deadline_s, kProbeDeadlineSeconds));
    if (!status.ok()) return FromGrpc(status, "GenerateStream");
    if (engine_ != nullptr && (o_.temperature == 0.0f || o_.seed)) {
      AIRLOCK_ASSIGN_OR_RETURN(inference::GenerateResult mine, engine_->Generate(local_, nullptr));
      if (mine.output_tokens.size() != probe.tokens) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the daemon generated ", probe.tokens, " tokens and the in-process engine ", mine.output_tokens.size(),
            " for the same request: is --model-file the file the daemon serves as --model-name?"));
      }
    }
    return absl::OkStatus();
  }

  bool has_reference() const { return engine_ != nullptr; }

  // One GenerateStream call with a deadline of `deadline_s` (default: --deadline); `out` is filled
  // when the status is OK.
  grpc::Status Stream(v1::Inference::Stub& stub, Sample* out, double deadline_s = 0) const {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::duration_cast<std::chrono::system_clock::duration>(
                         std::chrono::duration<double>(deadline_s > 0 ? deadline_s : o_.deadline_s)));
    const Clock::time_point t0 = Clock::now();
    std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader = stub.GenerateStream(&ctx, request_);
    v1::GenerateStreamResponse message;
    bool done = false;
    while (reader->Read(&message)) {
      if (message.has_piece() && !out->has_first_piece) {
        out->ttft_ms = MsSince(t0);
        out->has_first_piece = true;
      } else if (message.has_done()) {
        out->tokens = message.done().usage().completion_tokens();
        out->queue_ms = 1e3 * message.done().timings().queue_seconds();
        out->server_ttft_ms = 1e3 * message.done().timings().time_to_first_token_seconds();
        done = true;
      }
    }
    grpc::Status status = reader->Finish();
    out->e2e_ms = MsSince(t0);
    if (status.ok() && !done) return grpc::Status(grpc::StatusCode::DATA_LOSS, kNoDone);
    return status;
  }

  // `clients` threads, each on a connection of its own, each sending `warmup` unmeasured then
  // requests_per_client (or duration_s worth of) measured requests back to back.
  absl::StatusOr<RunResult> Daemon(int clients) const {
    std::vector<std::unique_ptr<v1::Inference::Stub>> stubs;
    for (int c = 0; c < clients; ++c) {
      std::shared_ptr<grpc::Channel> channel = NewMtlsChannel(o_.server, o_.server_name, ssl_);
      if (!channel->WaitForConnected(std::chrono::system_clock::now() + kConnectDeadline)) {
        return absl::UnavailableError(absl::StrCat("client ", c, ": no connection to ", o_.server, " within 30 s"));
      }
      stubs.push_back(v1::Inference::NewStub(channel));
    }
    std::vector<std::vector<Sample>> samples(static_cast<size_t>(clients));
    std::vector<std::map<std::string, int>> errors(static_cast<size_t>(clients));
    std::vector<Clock::time_point> ends(static_cast<size_t>(clients));
    Clock::time_point start;
    std::barrier after_warmup(clients, [&]() noexcept { start = Clock::now(); });
    auto body = [&](int c) {
      v1::Inference::Stub& stub = *stubs[static_cast<size_t>(c)];
      for (int i = 0; i < o_.warmup; ++i) {
        Sample ignored;
        (void)Stream(stub, &ignored);
      }
      after_warmup.arrive_and_wait();
      const auto stop_at = start + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(o_.duration_s));
      auto& mine = samples[static_cast<size_t>(c)];
      for (int i = 0;; ++i) {
        if (o_.duration_s > 0 ? Clock::now() >= stop_at : i >= o_.requests_per_client) break;
        Sample s;
        const grpc::Status status = Stream(stub, &s);
        if (status.ok()) {
          mine.push_back(s);
        } else {
          ++errors[static_cast<size_t>(c)][ErrorKey(status)];
        }
      }
      ends[static_cast<size_t>(c)] = Clock::now();
    };
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) threads.emplace_back(body, c);
    for (std::thread& t : threads) t.join();
    const Clock::time_point end = *std::max_element(ends.begin(), ends.end());
    RunResult r = Aggregate("daemon", clients, std::chrono::duration<double>(end - start).count(), samples, true);
    for (const auto& e : errors) {
      for (const auto& [code, n] : e) {
        r.errors[code] += n;
        r.failed += n;
      }
    }
    return r;
  }

  // The same request by the in-process engine, one caller, on a thread of its own (as the daemon's
  // worker; see docs/performance.md on the main thread's KV allocation).
  absl::StatusOr<RunResult> Reference() {
    std::vector<std::vector<Sample>> samples(1);
    absl::Status error;
    Clock::time_point start, end;
    std::thread worker([&] {
      for (int i = -std::max(1, o_.warmup); i < o_.reference_requests; ++i) {
        Sample s;
        const Clock::time_point t0 = Clock::now();
        if (i == 0) start = t0;
        absl::StatusOr<inference::GenerateResult> r =
            engine_->Generate(local_, [&](const inference::GeneratedPiece&) {
              if (!s.has_first_piece) {
                s.ttft_ms = MsSince(t0);
                s.has_first_piece = true;
              }
              return true;
            });
        s.e2e_ms = MsSince(t0);
        if (!r.ok()) {
          error = r.status();
          return;
        }
        s.tokens = static_cast<uint32_t>(r->output_tokens.size());
        if (i >= 0) samples[0].push_back(s);
      }
      end = Clock::now();
    });
    worker.join();
    AIRLOCK_RETURN_IF_ERROR(error);
    return Aggregate("engine in-process", 1, std::chrono::duration<double>(end - start).count(), samples, false);
  }

 private:
  const LoadOptions& o_;
  grpc::SslCredentialsOptions ssl_;
  v1::GenerateRequest request_;
  std::unique_ptr<inference::Engine> engine_;
  inference::GenerateRequest local_;
};

std::string ErrorsText(const RunResult& r) {
  if (r.errors.empty()) return "0";
  std::string out;
  for (const auto& [code, n] : r.errors) absl::StrAppend(&out, out.empty() ? "" : ", ", code, " ", n);
  return out;
}

void PrintTable(const LoadOptions& o, const std::vector<RunResult>& runs) {
  std::printf("airlock-bench load: %s (model %s), GenerateStream, prompt \"%s\", max_tokens %d, temperature %g%s, ",
              o.server.c_str(), o.model.c_str(), o.prompt.c_str(), o.max_tokens, static_cast<double>(o.temperature),
              o.seed ? absl::StrCat(", seed ", *o.seed).c_str() : "");
  if (o.duration_s > 0) {
    std::printf("%.1f s per run per client", o.duration_s);
  } else {
    std::printf("%d requests per client", o.requests_per_client);
  }
  std::printf(" after %d warm-up; one mTLS connection per client\n\n", o.warmup);
  std::printf("| path | clients | requests | req/s | TTFT p50 ms | TTFT p99 ms | e2e p50 ms | e2e p99 ms |"
              " tokens/req | tokens/s | daemon queue p50 ms | daemon TTFT p50 ms | errors |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const RunResult& r : runs) {
    std::printf("| %s | %d | %d | %.2f | %.3f | %.3f | %.3f | %.3f | %.1f | %.1f | %s | %s | %s |\n", r.path.c_str(),
                r.clients, r.ok, r.RequestsPerSecond(), r.ttft.p50, r.ttft.p99, r.e2e.p50, r.e2e.p99,
                r.TokensPerRequest(), r.TokensPerSecond(),
                r.has_queue ? absl::StrFormat("%.3f", r.queue.p50).c_str() : "-",
                r.has_queue ? absl::StrFormat("%.3f", r.server_ttft.p50).c_str() : "-", ErrorsText(r).c_str());
  }
  std::fflush(stdout);
}

void PrintJson(const LoadOptions& o, const std::vector<RunResult>& runs) {
  nlohmann::json j;
  j["server"] = o.server;
  j["model"] = o.model;
  j["model_file"] = o.model_file;
  j["prompt"] = o.prompt;
  j["max_tokens"] = o.max_tokens;
  j["temperature"] = o.temperature;
  j["seed"] = o.seed ? nlohmann::json(*o.seed) : nlohmann::json(nullptr);
  j["requests_per_client"] = o.requests_per_client;
  j["duration_s"] = o.duration_s;
  j["warmup"] = o.warmup;
  j["runs"] = nlohmann::json::array();
  for (const RunResult& r : runs) {
    nlohmann::json run = {{"path", r.path},
                          {"clients", r.clients},
                          {"requests_ok", r.ok},
                          {"requests_failed", r.failed},
                          {"wall_s", r.wall_s},
                          {"requests_per_s", r.RequestsPerSecond()},
                          {"ttft", ToJson(r.ttft)},
                          {"e2e", ToJson(r.e2e)},
                          {"completion_tokens", r.tokens},
                          {"tokens_per_request", r.TokensPerRequest()},
                          {"tokens_per_s", r.TokensPerSecond()},
                          {"errors", r.errors}};
    if (r.has_queue) {
      run["daemon_queue"] = ToJson(r.queue);
      run["daemon_ttft"] = ToJson(r.server_ttft);
    }
    j["runs"].push_back(std::move(run));
  }
  std::printf("%s\n", j.dump(2).c_str());
  std::fflush(stdout);
}

}  // namespace

absl::Status RunStreamingLoad(const LoadOptions& o) {
  if (o.concurrency.empty() || *std::min_element(o.concurrency.begin(), o.concurrency.end()) < 1 ||
      o.requests_per_client < 1 || o.duration_s < 0 || o.warmup < 0 || o.reference_requests < 0 ||
      o.max_tokens < 1 || o.engine_threads < 1 || o.deadline_s <= 0) {
    return absl::InvalidArgumentError("--concurrency, --requests-per-client, --max-tokens and --engine-threads must "
                                      "be >= 1; --duration, --warmup and --reference-requests >= 0; --deadline > 0");
  }
  LoadBench bench(o);
  AIRLOCK_RETURN_IF_ERROR(bench.Init());
  std::vector<RunResult> runs;
  if (bench.has_reference()) {
    AIRLOCK_ASSIGN_OR_RETURN(RunResult reference, bench.Reference());
    runs.push_back(std::move(reference));
  }
  for (int clients : o.concurrency) {
    AIRLOCK_ASSIGN_OR_RETURN(RunResult run, bench.Daemon(clients));
    runs.push_back(std::move(run));
  }
  if (o.json) {
    PrintJson(o, runs);
  } else {
    PrintTable(o, runs);
  }
  return absl::OkStatus();
}

}  // namespace airlock::bench

// airlock-bench overhead: Tokenize and Generate (max_tokens = 1, greedy) through a running airlockd
// over one persistent mTLS connection versus the same work in-process, at 1 and C callers, plus
// the cost of a fresh connection (full TLS handshake with client certificate + first call).
#include "tools/airlock_bench/overhead.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/algorithm/container.h"
#include "absl/strings/numbers.h"
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

constexpr auto kCallDeadline = std::chrono::seconds(30);

struct LoadResult {
  Distribution latency;
  double throughput = 0;  // requests per second over the measured wall time
};

// One request of a test: `caller` in [0, concurrency); `measured` is false during warm-up.
using RequestFn = std::function<absl::Status(int caller, bool measured)>;

// Runs `warmup` then `requests` requests spread over `concurrency` threads that take them from a
// shared counter; every request's latency is recorded, and the wall time of the measured phase.
absl::StatusOr<LoadResult> RunLoad(int requests, int warmup, int concurrency, const RequestFn& fn) {
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  absl::Status first_error;
  std::mutex error_mutex;
  std::vector<std::vector<double>> latencies(static_cast<size_t>(concurrency));
  Clock::time_point start, end;
  std::barrier after_warmup(concurrency, [&]() noexcept { start = Clock::now(); });
  std::barrier done(concurrency, [&]() noexcept { end = Clock::now(); });
  auto fail = [&](absl::Status s) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (first_error.ok()) first_error = std::move(s);
    failed = true;
  };
  auto body = [&](int caller) {
    for (int i = caller; i < warmup && !failed; i += concurrency) {
      if (absl::Status s = fn(caller, false); !s.ok()) fail(std::move(s));
    }
    after_warmup.arrive_and_wait();
    auto& mine = latencies[static_cast<size_t>(caller)];
    mine.reserve(static_cast<size_t>(requests / concurrency + 1));
    while (!failed && next.fetch_add(1, std::memory_order_relaxed) < requests) {
      const Clock::time_point t0 = Clock::now();
      absl::Status s = fn(caller, true);
      mine.push_back(MsSince(t0));
      if (!s.ok()) fail(std::move(s));
    }
    done.arrive_and_wait();
  };
  // Every caller on a thread of its own, the first too: the daemon's engine runs on a worker thread
  // (its own malloc arena), and the in-process reference should not differ from it in that.
  std::vector<std::thread> threads;
  for (int c = 0; c < concurrency; ++c) threads.emplace_back(body, c);
  for (std::thread& t : threads) t.join();
  if (!first_error.ok()) return first_error;
  std::vector<double> all;
  for (const auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  LoadResult r;
  r.latency = Summarize(std::move(all));
  r.throughput = requests / std::chrono::duration<double>(end - start).count();
  return r;
}

// Per-caller sample lists merged after a run (server-reported timings etc.).
class PerCaller {
 public:
  explicit PerCaller(int callers) : v_(static_cast<size_t>(callers)) {}
  void Add(int caller, double ms) { v_[static_cast<size_t>(caller)].push_back(ms); }
  Distribution Take() {
    std::vector<double> all;
    for (auto& v : v_) {
      all.insert(all.end(), v.begin(), v.end());
      v.clear();
    }
    return Summarize(std::move(all));
  }

 private:
  std::vector<std::vector<double>> v_;
};

struct Row {
  std::string test;
  int callers = 1;
  LoadResult in_process;
  LoadResult daemon;
  // Generate only: p50 of the daemon's own timings (queue; prompt + generation) and of the
  // in-process engine's (prompt + generation).
  bool has_engine_timings = false;
  Distribution daemon_queue, daemon_engine, in_process_engine;
};

struct Handshake {
  Distribution connect;     // channel creation until READY: TCP + TLS 1.3 handshake with client cert
  Distribution first_call;  // channel creation until the first Tokenize returned
};

class Bench {
 public:
  explicit Bench(const OverheadOptions& o) : o_(o) {}

  absl::Status Init() {
    AIRLOCK_ASSIGN_OR_RETURN(ssl_, LoadMtlsFiles(o_.ca_file, o_.cert_file, o_.key_file));
    inference::EngineOptions eo;
    eo.n_threads = o_.engine_threads;
    AIRLOCK_ASSIGN_OR_RETURN(engine_, inference::Engine::Load(o_.model_file, eo));
    channel_ = NewChannel();
    stub_ = v1::Inference::NewStub(channel_);
    tokenize_.set_model(o_.model);
    tokenize_.set_text(o_.tokenize_text);
    generate_.set_model(o_.model);
    generate_.set_prompt(o_.prompt);
    generate_.set_max_tokens(1);
    generate_.mutable_sampling()->set_temperature(0.0f);
    local_.prompt = o_.prompt;
    local_.max_tokens = 1;
    local_.sampling.temperature = 0.0f;
    local_.add_special = true;     // as the daemon's PrepareGenerate
    local_.parse_special = false;  // as the daemon's PrepareGenerate
    // One call each way, and the same answer both ways.
    v1::GenerateResponse remote;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    AIRLOCK_RETURN_IF_ERROR(FromGrpc(stub_->Generate(&ctx, generate_, &remote), "Generate"));
    AIRLOCK_ASSIGN_OR_RETURN(inference::GenerateResult mine, engine_->Generate(local_, nullptr));
    if (remote.token_ids_size() != static_cast<int>(mine.output_tokens.size()) ||
        (!mine.output_tokens.empty() && remote.token_ids(0) != mine.output_tokens[0])) {
      return absl::FailedPreconditionError(
          "the daemon and the in-process engine generate different tokens: is --model-file the file the daemon "
          "serves as --model-name?");
    }
    return absl::OkStatus();
  }

  std::shared_ptr<grpc::Channel> NewChannel() const { return NewMtlsChannel(o_.server, o_.server_name, ssl_); }

  absl::Status DaemonTokenize(v1::Inference::Stub& stub) const {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    v1::TokenizeResponse response;
    AIRLOCK_RETURN_IF_ERROR(FromGrpc(stub.Tokenize(&ctx, tokenize_, &response), "Tokenize"));
    if (response.token_ids_size() == 0) return absl::InternalError("Tokenize returned no tokens");
    return absl::OkStatus();
  }

  absl::Status WarmTokenize() const { return DaemonTokenize(*stub_); }

  absl::Status LocalTokenize() const {
    const inference::Tokenizer& tok = engine_->tokenizer();
    const std::vector<int32_t> ids = tok.Encode(o_.tokenize_text, false, false);
    std::vector<std::string> pieces;
    pieces.reserve(ids.size());
    for (int32_t id : ids) pieces.emplace_back(tok.PieceView(id, true));
    if (ids.empty()) return absl::InternalError("Encode returned no tokens");
    return absl::OkStatus();
  }

  absl::StatusOr<Row> Tokenize(int callers) {
    Row row;
    row.test = "Tokenize";
    row.callers = callers;
    AIRLOCK_ASSIGN_OR_RETURN(row.in_process,
                             RunLoad(o_.requests, o_.warmup, callers, [&](int, bool) { return LocalTokenize(); }));
    AIRLOCK_ASSIGN_OR_RETURN(row.daemon, RunLoad(o_.requests, o_.warmup, callers,
                                                 [&](int, bool) { return DaemonTokenize(*stub_); }));
    return row;
  }

  absl::StatusOr<Row> Generate(int callers) {
    Row row;
    row.test = "Generate max_tokens=1";
    row.callers = callers;
    row.has_engine_timings = true;
    PerCaller engine_ms(callers), queue_ms(callers);
    AIRLOCK_ASSIGN_OR_RETURN(row.in_process,
                             RunLoad(o_.requests, o_.warmup, callers, [&](int caller, bool measured) -> absl::Status {
                               AIRLOCK_ASSIGN_OR_RETURN(inference::GenerateResult r,
                                                        engine_->Generate(local_, nullptr));
                               if (measured) engine_ms.Add(caller, 1e3 * (r.prompt_seconds + r.generation_seconds));
                               return absl::OkStatus();
                             }));
    row.in_process_engine = engine_ms.Take();
    AIRLOCK_ASSIGN_OR_RETURN(row.daemon,
                             RunLoad(o_.requests, o_.warmup, callers, [&](int caller, bool measured) -> absl::Status {
                               grpc::ClientContext ctx;
                               ctx.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
                               v1::GenerateResponse response;
                               AIRLOCK_RETURN_IF_ERROR(
                                   FromGrpc(stub_->Generate(&ctx, generate_, &response), "Generate"));
                               if (measured) {
                                 const v1::Timings& t = response.timings();
                                 engine_ms.Add(caller, 1e3 * (t.prompt_seconds() + t.generation_seconds()));
                                 queue_ms.Add(caller, 1e3 * t.queue_seconds());
                               }
                               return absl::OkStatus();
                             }));
    row.daemon_engine = engine_ms.Take();
    row.daemon_queue = queue_ms.Take();
    return row;
  }

  // Generate over the OpenAI listener: POST /v1/completions with the same prompt, one token,
  // greedy (the same engine request as the gRPC Generate), one keep-alive connection per caller.
  absl::StatusOr<Row> GenerateHttp(int callers) {
    Row row;
    row.test = "Generate max_tokens=1, HTTP /v1/completions";
    row.callers = callers;
    AIRLOCK_ASSIGN_OR_RETURN(row.in_process, RunLoad(o_.requests, o_.warmup, callers, [&](int, bool) -> absl::Status {
                               return engine_->Generate(local_, nullptr).status();
                             }));
    const size_t colon = o_.openai.rfind(':');
    int port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(o_.openai.substr(colon + 1), &port)) {
      return absl::InvalidArgumentError(absl::StrCat("--openai: expected host:port, got ", o_.openai));
    }
    std::vector<std::unique_ptr<httplib::SSLClient>> clients;
    for (int i = 0; i < callers; ++i) {
      auto& c = clients.emplace_back(
          std::make_unique<httplib::SSLClient>(o_.server_name, port, o_.cert_file, o_.key_file));
      c->set_ca_cert_path(o_.ca_file.c_str());
      c->enable_server_certificate_verification(true);
      c->set_keep_alive(true);
      c->set_tcp_nodelay(true);  // as curl and Node's undici do
      c->set_read_timeout(30);
    }
    const std::string body = nlohmann::json{{"model", o_.model}, {"prompt", o_.prompt}, {"max_tokens", 1},
                                            {"temperature", 0}}.dump();
    AIRLOCK_ASSIGN_OR_RETURN(row.daemon,
                             RunLoad(o_.requests, o_.warmup, callers, [&](int caller, bool) -> absl::Status {
                               httplib::Result r = clients[caller]->Post("/v1/completions", body, "application/json");
                               if (!r) return absl::UnavailableError(absl::StrCat("POST /v1/completions: ",
                                                                                 httplib::to_string(r.error())));
                               if (r->status != 200) {
                                 return absl::InternalError(
                                     absl::StrCat("POST /v1/completions: HTTP ", r->status, ": ", r->body.substr(0, 300)));
                               }
                               return absl::OkStatus();
                             }));
    return row;
  }

  absl::StatusOr<Handshake> Connections() {
    std::vector<double> connect, first_call;
    for (int i = 0; i < o_.connections + o_.connections / 10; ++i) {  // the first tenth is warm-up
      const bool measured = i >= o_.connections / 10;
      const Clock::time_point t0 = Clock::now();
      std::shared_ptr<grpc::Channel> channel = NewChannel();
      grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
      const auto deadline = std::chrono::system_clock::now() + kCallDeadline;
      while (state != GRPC_CHANNEL_READY) {
        if (!channel->WaitForStateChange(state, deadline)) {
          return absl::DeadlineExceededError("a fresh connection did not become READY within 30 s");
        }
        state = channel->GetState(false);
        if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
          return absl::UnavailableError("a fresh connection failed (handshake refused?)");
        }
      }
      const double ready = MsSince(t0);
      auto stub = v1::Inference::NewStub(channel);
      AIRLOCK_RETURN_IF_ERROR(DaemonTokenize(*stub));
      const double called = MsSince(t0);
      if (measured) {
        connect.push_back(ready);
        first_call.push_back(called);
      }
    }
    return Handshake{Summarize(std::move(connect)), Summarize(std::move(first_call))};
  }

 private:
  const OverheadOptions& o_;
  grpc::SslCredentialsOptions ssl_;
  std::unique_ptr<inference::Engine> engine_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  v1::TokenizeRequest tokenize_;
  v1::GenerateRequest generate_;
  inference::GenerateRequest local_;
};

void PrintTable(const OverheadOptions& o, const std::vector<Row>& rows, const Handshake* hs, double tokenize_p50) {
  std::printf("airlock-bench overhead: %s (model %s = %s), %d requests per line after %d warm-up\n\n",
              o.server.c_str(), o.model.c_str(), o.model_file.c_str(), o.requests, o.warmup);
  std::printf("| test | callers | path | p50 ms | p90 ms | p99 ms | mean ms | req/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    for (const auto& [path, lr] : {std::pair<const char*, const LoadResult&>{"in-process", r.in_process},
                                   std::pair<const char*, const LoadResult&>{"daemon", r.daemon}}) {
      std::printf("| %s | %d | %s | %.3f | %.3f | %.3f | %.3f | %.0f |\n", r.test.c_str(), r.callers, path,
                  lr.latency.p50, lr.latency.p90, lr.latency.p99, lr.latency.mean, lr.throughput);
    }
    std::printf("| %s | %d | **difference** | **%.3f** | %.3f | %.3f | %.3f | %.2fx |\n", r.test.c_str(), r.callers,
                r.daemon.latency.p50 - r.in_process.latency.p50, r.daemon.latency.p90 - r.in_process.latency.p90,
                r.daemon.latency.p99 - r.in_process.latency.p99, r.daemon.latency.mean - r.in_process.latency.mean,
                r.in_process.throughput / r.daemon.throughput);
  }
  std::printf("\n(difference req/s column: in-process throughput / daemon throughput)\n");
  bool header = false;
  for (const Row& r : rows) {
    if (!r.has_engine_timings) continue;
    if (!header) {
      std::printf("\n| test | callers | engine p50 ms in-process | engine p50 ms in daemon | daemon queue p50 ms |"
                  " daemon queue p99 ms |\n|---|---|---|---|---|---|\n");
      header = true;
    }
    std::printf("| %s | %d | %.3f | %.3f | %.3f | %.3f |\n", r.test.c_str(), r.callers, r.in_process_engine.p50,
                r.daemon_engine.p50, r.daemon_queue.p50, r.daemon_queue.p99);
  }
  if (hs != nullptr) {
    std::printf("\n| fresh connection (%zu) | p50 ms | p90 ms | p99 ms | mean ms |\n|---|---|---|---|---|\n",
                hs->connect.n);
    std::printf("| connect until READY (TCP + TLS handshake) | %.3f | %.3f | %.3f | %.3f |\n", hs->connect.p50,
                hs->connect.p90, hs->connect.p99, hs->connect.mean);
    std::printf("| connect + first Tokenize | %.3f | %.3f | %.3f | %.3f |\n", hs->first_call.p50, hs->first_call.p90,
                hs->first_call.p99, hs->first_call.mean);
    std::printf("| **handshake cost** (first call p50 - Tokenize p50 on a warm connection) | **%.3f** | | | |\n",
                hs->first_call.p50 - tokenize_p50);
  }
  std::fflush(stdout);
}

void PrintJson(const OverheadOptions& o, const std::vector<Row>& rows, const Handshake* hs, double tokenize_p50) {
  nlohmann::json j;
  j["server"] = o.server;
  j["model"] = o.model;
  j["model_file"] = o.model_file;
  j["requests"] = o.requests;
  j["warmup"] = o.warmup;
  for (const Row& r : rows) {
    nlohmann::json row = {{"test", r.test},
                          {"callers", r.callers},
                          {"in_process", ToJson(r.in_process.latency)},
                          {"daemon", ToJson(r.daemon.latency)},
                          {"in_process_rps", r.in_process.throughput},
                          {"daemon_rps", r.daemon.throughput},
                          {"overhead_p50_ms", r.daemon.latency.p50 - r.in_process.latency.p50},
                          {"overhead_p90_ms", r.daemon.latency.p90 - r.in_process.latency.p90},
                          {"overhead_p99_ms", r.daemon.latency.p99 - r.in_process.latency.p99}};
    if (r.has_engine_timings) {
      row["in_process_engine"] = ToJson(r.in_process_engine);
      row["daemon_engine"] = ToJson(r.daemon_engine);
      row["daemon_queue"] = ToJson(r.daemon_queue);
    }
    j["tests"].push_back(std::move(row));
  }
  if (hs != nullptr) {
    j["fresh_connection"] = {{"connect", ToJson(hs->connect)},
                             {"first_call", ToJson(hs->first_call)},
                             {"handshake_cost_p50_ms", hs->first_call.p50 - tokenize_p50}};
  }
  std::printf("%s\n", j.dump(2).c_str());
  std::fflush(stdout);
}

}  // namespace

absl::Status RunOverhead(const OverheadOptions& o) {
  if (o.requests < 1 || o.warmup < 0 || o.concurrency < 1 || o.connections < 0 || o.engine_threads < 1) {
    return absl::InvalidArgumentError("--requests, --concurrency and --engine-threads must be >= 1, "
                                      "--warmup and --connections >= 0");
  }
  Bench bench(o);
  AIRLOCK_RETURN_IF_ERROR(bench.Init());
  std::vector<int> callers = {1};
  if (o.concurrency > 1) callers.push_back(o.concurrency);
  for (const std::string& test : o.only) {
    if (test != "tokenize" && test != "generate" && test != "connect") {
      return absl::InvalidArgumentError(absl::StrCat("--only: unknown test \"", test, "\""));
    }
  }
  auto wanted = [&](const char* test) { return o.only.empty() || absl::c_linear_search(o.only, test); };
  std::vector<Row> rows;
  for (int c : callers) {
    if (!wanted("tokenize")) break;
    AIRLOCK_ASSIGN_OR_RETURN(Row row, bench.Tokenize(c));
    rows.push_back(std::move(row));
  }
  for (int c : callers) {
    if (!wanted("generate")) break;
    AIRLOCK_ASSIGN_OR_RETURN(Row row, bench.Generate(c));
    rows.push_back(std::move(row));
    if (!o.openai.empty()) {
      AIRLOCK_ASSIGN_OR_RETURN(Row http, bench.GenerateHttp(c));
      rows.push_back(std::move(http));
    }
  }
  std::unique_ptr<Handshake> hs;
  if (o.connections > 0 && wanted("connect")) {
    AIRLOCK_ASSIGN_OR_RETURN(Handshake h, bench.Connections());
    hs = std::make_unique<Handshake>(h);
  }
  // The handshake cost subtracts a warm Tokenize; without the tokenize test, one quick measurement.
  double tokenize_p50 = 0;
  if (!rows.empty() && rows.front().test == "Tokenize") {
    tokenize_p50 = rows.front().daemon.latency.p50;
  } else if (hs != nullptr) {
    AIRLOCK_ASSIGN_OR_RETURN(LoadResult warm, RunLoad(200, 50, 1, [&](int, bool) { return bench.WarmTokenize(); }));
    tokenize_p50 = warm.latency.p50;
  }
  if (o.json) {
    PrintJson(o, rows, hs.get(), tokenize_p50);
  } else {
    PrintTable(o, rows, hs.get(), tokenize_p50);
  }
  return absl::OkStatus();
}

}  // namespace airlock::bench

// Benchmark of the durable audit log: synced (group-committed) records per second and the latency
// one Append adds, at 1, 8 and 64 concurrent writers, and how fast a whole store verifies, on
// RocksDB stores in temporary directories ($TMPDIR, else /tmp: put it on the disk you want to
// measure).
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "audit/audit_reader.h"
#include "audit/audit_record.h"
#include "audit/audit_store.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"
#include "inference/base/status.h"

namespace airlock::audit {
namespace {

// A store in a fresh directory under $TMPDIR (else /tmp).
void OpenTempStore(const char* prefix, std::string* dir, std::unique_ptr<StateDb>* db) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/", prefix, "-XXXXXX");
  AIRLOCK_CHECK(mkdtemp(templ.data()) != nullptr);
  *dir = templ;
  absl::StatusOr<std::unique_ptr<StateDb>> opened = StateDb::Open(*dir);
  AIRLOCK_CHECK(opened.ok());
  *db = *std::move(opened);
}

CheckpointSigner FreshSigner() {
  absl::StatusOr<std::string> pem = GenerateSigningKeyPem();
  AIRLOCK_CHECK(pem.ok());
  absl::StatusOr<CheckpointSigner> signer = CheckpointSigner::FromPrivateKeyPem(*pem);
  AIRLOCK_CHECK(signer.ok());
  return *std::move(signer);
}

// One store and log for the whole run (the chain just keeps growing across benchmarks).
struct SharedLog {
  std::string dir;
  std::unique_ptr<StateDb> db;
  std::unique_ptr<AuditLog> log;

  SharedLog() {
    OpenTempStore("airlock-audit-bench", &dir, &db);
    absl::StatusOr<std::unique_ptr<AuditLog>> started = AuditLog::Open(db.get(), FreshSigner());  // defaults: N=1000, T=10 s
    AIRLOCK_CHECK(started.ok());
    log = *std::move(started);
  }
  ~SharedLog() {
    log.reset();
    db.reset();
    std::filesystem::remove_all(dir);
  }
};

SharedLog& Shared() {
  static SharedLog shared;
  return shared;
}

// A begin record of typical size (identity, model, sampling, HMAC of the prompt).
AuditRecord TypicalRecord(int thread, uint64_t i) {
  AuditRecord record;
  record.phase = Phase::kBegin;
  record.decision = Decision::kAllowed;
  record.request_id = absl::StrCat("bench-", thread, "-", i);
  record.identity = "clinic-frontend";
  record.subject = "CN=clinic-frontend,OU=apps,O=Example Hospital";
  record.cert_fingerprint = std::string(64, 'f');
  record.peer = "ipv4:10.0.0.17:53122";
  record.method = "/airlock.v1.Inference/Generate";
  record.model = "llama-3.2-1b-instruct-q4_k_m";
  record.sampling = "max_tokens=256;seed=0;temperature=0.7;top_k=40;top_p=0.9";
  record.prompt_tokens = 412;
  record.prompt_hmac = std::string(kHmacSize, 'h');
  return record;
}

void BM_DurableAppend(benchmark::State& state) {
  AuditLog& log = *Shared().log;
  const AuditLogStats before = log.stats();
  std::vector<double> latencies_us;
  latencies_us.reserve(1 << 16);
  uint64_t i = 0;
  for (auto _ : state) {
    AuditRecord record = TypicalRecord(state.thread_index(), i++);
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<uint64_t> sequence = log.Append(std::move(record));
    const auto end = std::chrono::steady_clock::now();
    if (!sequence.ok()) {
      state.SkipWithError(std::string(sequence.status().message()).c_str());
      break;
    }
    latencies_us.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  // items_per_second (summed over the threads, over real time) is durable records/s.
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    // Approximate (threads finish at slightly different times): records per synced write.
    const AuditLogStats after = log.stats();
    const double batches = static_cast<double>(after.batches - before.batches);
    if (batches > 0) {
      state.counters["records_per_sync"] = static_cast<double>(after.records - before.records) / batches;
    }
  }
  if (!latencies_us.empty()) {
    std::sort(latencies_us.begin(), latencies_us.end());
    double sum = 0;
    for (double v : latencies_us) sum += v;
    const auto at = [&](double q) {
      return latencies_us[std::min(latencies_us.size() - 1, static_cast<size_t>(q * static_cast<double>(latencies_us.size())))];
    };
    // Per-thread statistics averaged over the threads.
    state.counters["lat_mean_us"] = benchmark::Counter(sum / static_cast<double>(latencies_us.size()),
                                                       benchmark::Counter::kAvgThreads);
    state.counters["lat_p50_us"] = benchmark::Counter(at(0.50), benchmark::Counter::kAvgThreads);
    state.counters["lat_p99_us"] = benchmark::Counter(at(0.99), benchmark::Counter::kAvgThreads);
  }
}
BENCHMARK(BM_DurableAppend)->Threads(1)->Threads(8)->Threads(64)->UseRealTime()->MinTime(3.0);

// How fast an auditor's verification goes (VerifyAudit, `airlockctl audit verify --state-dir`): a
// store of 200,000 typical records (checkpoint every 1000), verified from one snapshot: records
// read, decoded, rehashed and linked, checkpoints' Ed25519 signatures checked.
struct VerifyFixture {
  static constexpr uint64_t kRecords = 200000;
  std::string dir;
  std::string public_key;
  std::unique_ptr<StateDb> db;

  VerifyFixture() {
    OpenTempStore("airlock-verify-bench", &dir, &db);
    CheckpointSigner signer = FreshSigner();
    public_key = signer.PublicKeyPem();
    // Filled with group commit from 64 threads (a lone writer would wait a sync per record).
    absl::StatusOr<std::unique_ptr<AuditLog>> log = AuditLog::Open(db.get(), std::move(signer));
    AIRLOCK_CHECK(log.ok());
    std::vector<std::thread> writers;
    for (int t = 0; t < 64; ++t) {
      writers.emplace_back([&log, t] {
        for (uint64_t i = 0; i < kRecords / 64; ++i) AIRLOCK_CHECK((*log)->Append(TypicalRecord(t, i)).ok());
      });
    }
    for (std::thread& w : writers) w.join();
  }
  ~VerifyFixture() {
    db.reset();
    std::filesystem::remove_all(dir);
  }
};

void BM_VerifyStore(benchmark::State& state) {
  static VerifyFixture fixture;
  uint64_t checked = 0;
  for (auto _ : state) {
    AuditSnapshot snapshot(*fixture.db);
    absl::StatusOr<VerifyReport> report = VerifySnapshot(snapshot, fixture.public_key);
    AIRLOCK_CHECK(report.ok() && report->ok);
    checked += report->records_checked;
  }
  state.SetItemsProcessed(static_cast<int64_t>(checked));  // items_per_second: records verified/s
}
BENCHMARK(BM_VerifyStore)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

}  // namespace
}  // namespace airlock::audit

BENCHMARK_MAIN();

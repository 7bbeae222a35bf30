// airlockctl audit tail | query | verify | export: the audit log through the Admin API of a running
// daemon, and verify / export offline from a stopped daemon's state directory or an export file
// with only the checkpoint public key. Every source is read as a stream (the header — anchor and
// checkpoints — then the records in order), so a log of any length is verified in constant memory.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <type_traits>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "airlock/v1/admin.grpc.pb.h"
#include "audit/audit_reader.h"
#include "audit/chain_verifier.h"
#include "audit/state_db.h"
#include "audit/witness.h"
#include "auth/dev_pki.h"
#include "inference/base/status.h"
#include "tools/airlockctl/client_connection.h"
#include "tools/airlockctl/commands.h"

namespace airlock::ctl {
namespace {

using Json = nlohmann::json;

// `audit verify`: the chain does not verify (or the store is corrupt).
constexpr int kExitTampered = 3;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }
std::string Hex(std::string_view bytes) { return audit::HexLower(bytes); }

// The start of every source: the anchor of a pruned chain and the checkpoints.
struct AuditHeader {
  std::optional<audit::Checkpoint> anchor;
  std::vector<audit::Checkpoint> checkpoints;
};
using HeaderSink = std::function<void(const AuditHeader&)>;
// A record in stored form; returns false to stop reading.
using RecordSink = std::function<bool(std::string_view stored)>;
// An export record line whose readable fields disagree with its stored bytes: its sequence (0 when
// the bytes do not decode) and why. Called before that record's RecordSink.
using MismatchSink = std::function<void(uint64_t sequence, std::string problem)>;

Json RecordJson(const audit::ChainedRecord& c, std::string_view stored);

// The export line a record's stored bytes make (what `audit export` writes for it).
Json ExpectedRecordJson(std::string_view stored) {
  absl::StatusOr<audit::ChainedRecord> record = audit::DecodeStoredRecord(stored);
  if (!record.ok()) return {{"type", "record"}, {"undecodable", true}, {"stored", absl::Base64Escape(ToAbsl(stored))}};
  return RecordJson(*record, stored);
}

// A stopped daemon's state directory, read through one snapshot.
absl::Status ReadStateDir(const std::string& dir, const HeaderSink& on_header, const RecordSink& on_record) {
  // Read-only: the evidence is not changed by looking at it (no lock file, no WAL replayed into
  // new files), and a read-only copy can be verified.
  audit::StateDbOptions options;
  options.read_only = true;
  absl::StatusOr<std::unique_ptr<audit::StateDb>> db = audit::StateDb::Open(dir, options);
  if (!db.ok()) return db.status();
  audit::AuditSnapshot snapshot(**db);
  AuditHeader header;
  AIRLOCK_ASSIGN_OR_RETURN(header.anchor, snapshot.Anchor());
  AIRLOCK_ASSIGN_OR_RETURN(header.checkpoints, snapshot.Checkpoints());
  on_header(header);
  return snapshot.ScanRecords(0, UINT64_MAX, false,
                              [&](uint64_t, std::string_view stored) { return on_record(stored); });
}

// An export file: one JSON object per line; "type" is "anchor" or "checkpoint" (with "encoded")
// or "record" (with "stored"). Read twice: the anchor and checkpoints first, then the records in
// file order, whatever order the lines are in.
absl::Status ReadExportFile(const std::string& path, const HeaderSink& on_header, const RecordSink& on_record,
                            const MismatchSink& on_mismatch) {
  AuditHeader header;
  for (int pass = 0; pass < 2; ++pass) {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      if (line.empty()) continue;
      const Json j = Json::parse(line, nullptr, false);
      const auto where = [&] { return absl::StrCat(path, ":", number, ": "); };
      if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where(), "not an export line (JSON object with \"type\")"));
      }
      const std::string type = j["type"].get<std::string>();
      if (type != "record" && type != "checkpoint" && type != "anchor") {
        return absl::InvalidArgumentError(absl::StrCat(where(), "unknown type \"", type, "\""));
      }
      if ((type == "record") != (pass == 1)) continue;
      const std::string field = type == "record" ? "stored" : "encoded";
      if (!j.contains(field) || !j[field].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where(), "missing \"", field, "\""));
      }
      std::string bytes;
      if (!absl::Base64Unescape(j[field].get<std::string>(), &bytes)) {
        return absl::InvalidArgumentError(absl::StrCat(where(), "\"", field, "\" is not base64"));
      }
      if (type == "record") {
        if (on_mismatch) {
          // Readers of an export (people, SIEMs) read its plain fields: they must say what the
          // verified stored bytes say, and nothing else.
          // Compared as written and read back: Dump replaces invalid UTF-8 the way the export did.
          const Json expected = Json::parse(Dump(ExpectedRecordJson(bytes)));
          if (j != expected) {
            std::string field = "?";
            for (const auto& [name, value] : j.items()) {
              if (!expected.contains(name) || expected[name] != value) { field = name; break; }
            }
            if (field == "?") {
              for (const auto& [name, value] : expected.items()) {
                if (!j.contains(name)) { field = name; break; }
              }
            }
            absl::StatusOr<audit::ChainedRecord> decoded = audit::DecodeStoredRecord(bytes);
            on_mismatch(decoded.ok() ? decoded->sequence : 0,
                        absl::StrCat(where(), "the record's field \"", field.substr(0, 64),
                                     "\" does not match its stored bytes (the readable fields were edited)"));
          }
        }
        if (!on_record(bytes)) return absl::OkStatus();
        continue;
      }
      absl::StatusOr<audit::Checkpoint> checkpoint = audit::DecodeCheckpoint(bytes);
      if (!checkpoint.ok()) return absl::InvalidArgumentError(absl::StrCat(where(), checkpoint.status().message()));
      if (type == "anchor") {
        if (header.anchor.has_value()) return absl::InvalidArgumentError(absl::StrCat(where(), "a second anchor"));
        header.anchor = *std::move(checkpoint);
      } else {
        header.checkpoints.push_back(*std::move(checkpoint));
      }
    }
    if (pass == 0) on_header(header);
  }
  return absl::OkStatus();
}

// A running daemon, through Admin/ExportAudit. An RPC failure comes back as *rpc_status.
absl::Status ReadOnline(v1::Admin::Stub& stub, grpc::ClientContext& ctx, const HeaderSink& on_header,
                        const RecordSink& on_record, grpc::Status* rpc_status) {
  std::unique_ptr<grpc::ClientReader<v1::ExportAuditResponse>> reader =
      stub.ExportAudit(&ctx, v1::ExportAuditRequest());
  v1::ExportAuditResponse message;
  bool first = true;
  absl::Status status;
  while (status.ok() && reader->Read(&message)) {
    if (first) {
      first = false;
      AuditHeader header;
      if (!message.anchor().empty()) {
        absl::StatusOr<audit::Checkpoint> anchor = audit::DecodeCheckpoint(message.anchor());
        if (!anchor.ok()) {
          status = absl::DataLossError(absl::StrCat("the daemon's anchor: ", anchor.status().message()));
          break;
        }
        header.anchor = *std::move(anchor);
      }
      for (const std::string& bytes : message.checkpoints()) {
        absl::StatusOr<audit::Checkpoint> checkpoint = audit::DecodeCheckpoint(bytes);
        if (!checkpoint.ok()) {
          status = absl::DataLossError(absl::StrCat("a checkpoint from the daemon: ", checkpoint.status().message()));
          break;
        }
        header.checkpoints.push_back(*std::move(checkpoint));
      }
      if (!status.ok()) break;
      on_header(header);
    }
    for (const std::string& stored : message.stored_records()) {
      if (!on_record(stored)) {
        ctx.TryCancel();
        break;
      }
    }
  }
  if (!status.ok()) ctx.TryCancel();
  *rpc_status = reader->Finish();
  return status;
}

// The export schema (docs/audit.md): the record's fields (audit::ForEachRecordField) with its time
// as RFC 3339 under "time", hashes and HMACs in hex, sealed text and the stored bytes in base64.
Json RecordJson(const audit::ChainedRecord& c, std::string_view stored) {
  Json j = {{"type", "record"}, {"stored", absl::Base64Escape(ToAbsl(stored))}};
  audit::ForEachRecordField(c, [&](const char* name, const auto& value) {
    using T = std::decay_t<decltype(value)>;
    if constexpr (std::is_same_v<T, audit::RecordTime>) {
      j["time"] = absl::FormatTime("%Y-%m-%d%ET%H:%M:%E6SZ", absl::FromUnixMicros(value.unix_micros),
                                   absl::UTCTimeZone());
    } else if constexpr (std::is_same_v<T, audit::RecordBytes>) {
      j[name] = value.base64 ? absl::Base64Escape(ToAbsl(value.bytes)) : Hex(value.bytes);
    } else if constexpr (std::is_same_v<T, std::string_view>) {
      j[name] = std::string(value);
    } else {
      j[name] = value;
    }
  });
  return j;
}

// One export line for a stored record (undecodable ones are kept as they are, so that
// `verify --export` reports them at their position).
std::string RecordLine(std::string_view stored) { return Dump(ExpectedRecordJson(stored)); }

std::string CheckpointLine(const audit::Checkpoint& c, const char* type) { return audit::CheckpointJsonLine(c, type); }

// One human-readable line: sequence, time, phase, decision, identity, method, model, status.
std::string RecordText(const audit::ChainedRecord& c) {
  const audit::AuditRecord& r = c.record;
  std::string line = absl::StrCat(
      c.sequence, "  ",
      absl::FormatTime("%Y-%m-%d %H:%M:%E3S", absl::FromUnixMicros(r.time_unix_micros), absl::UTCTimeZone()), "  ",
      ToAbsl(audit::PhaseName(r.phase)), "  ", ToAbsl(audit::DecisionName(r.decision)), "  ", r.identity.empty() ? "-" : r.identity,
      "  ", r.method, r.model.empty() ? "" : absl::StrCat("  model=", r.model));
  if (r.phase != audit::Phase::kBegin) absl::StrAppend(&line, "  status=", StatusCodeName(static_cast<grpc::StatusCode>(r.status_code)));
  if (r.prompt_tokens + r.completion_tokens > 0) {
    absl::StrAppend(&line, "  tokens=", r.prompt_tokens, "+", r.completion_tokens);
  }
  if (!r.stop_reason.empty()) absl::StrAppend(&line, "  stop=", r.stop_reason);
  if (r.phase == audit::Phase::kEnd) absl::StrAppend(&line, "  ", r.latency_micros / 1000.0, "ms");
  if (r.phase == audit::Phase::kAdmin && !r.sampling.empty()) absl::StrAppend(&line, "  ", r.sampling);
  absl::StrAppend(&line, "  id=", r.request_id);
  return line;
}

// Where `verify` and `export` read from.
struct SourceFlags {
  std::string state_dir;
  std::string export_file;
  ConnectionFlags conn;
};

// Reads the chosen source. Returns the exit code for a failure (0 when all went well).
int ReadSource(const char* command, const SourceFlags& f, const HeaderSink& on_header, const RecordSink& on_record,
               const MismatchSink& on_mismatch = nullptr) {
  if (!f.state_dir.empty() || !f.export_file.empty()) {
    absl::Status status = !f.export_file.empty() ? ReadExportFile(f.export_file, on_header, on_record, on_mismatch)
                                                 : ReadStateDir(f.state_dir, on_header, on_record);
    if (!status.ok()) {
      std::cerr << "airlockctl audit " << command << ": " << status.message() << "\n";
      // A corrupt store is evidence of damage (exit 3, as tampering), not an unreadable input.
      return status.code() == absl::StatusCode::kDataLoss ? kExitTampered : kExitLocalError;
    }
    return kExitOk;
  }
  std::string server;
  std::shared_ptr<grpc::Channel> channel = ConnectOrReport(f.conn, &server);
  if (channel == nullptr) return kExitLocalError;
  auto stub = v1::Admin::NewStub(channel);
  grpc::ClientContext ctx;
  if (f.conn.timeout_seconds > 0) ctx.set_deadline(CallDeadline(f.conn, 0));
  ScopedCancelOnInterrupt cancel_on_interrupt(&ctx);
  grpc::Status rpc;
  absl::Status status = ReadOnline(*stub, ctx, on_header, on_record, &rpc);
  if (!status.ok()) {
    std::cerr << "airlockctl audit " << command << ": " << status.message() << "\n";
    return kExitLocalError;
  }
  if (!rpc.ok() && !(rpc.error_code() == grpc::StatusCode::CANCELLED && !Interrupted())) {
    return ReportRpcError("ExportAudit", rpc, server);
  }
  return Interrupted() ? kExitInterrupted : kExitOk;
}

void PrintReport(const audit::VerifyReport& report, uint64_t anchor_sequence, bool json) {
  if (json) {
    Json j = {{"ok", report.ok},
              {"records_checked", report.records_checked},
              {"checkpoints_checked", report.checkpoints_checked},
              {"head_sequence", report.head_sequence},
              {"signed_through", report.signed_through},
              {"unsigned_tail", report.unsigned_tail},
              {"anchor_sequence", anchor_sequence},
              {"problem", report.problem}};
    j["first_bad_sequence"] = report.first_bad_sequence ? Json(*report.first_bad_sequence) : nullptr;
    std::cout << j.dump() << "\n";
  } else if (report.ok) {
    std::cout << "OK: " << report.records_checked << " records, " << report.checkpoints_checked
              << " checkpoints, signed through sequence " << report.signed_through
              << (anchor_sequence > 0 ? absl::StrCat(", pruned through anchor ", anchor_sequence) : "")
              << (report.problem.empty() ? "" : "; " + report.problem) << "\n";
  } else {
    std::cout << "TAMPERED: first bad sequence "
              << (report.first_bad_sequence ? std::to_string(*report.first_bad_sequence) : "unknown") << ": "
              << report.problem << "\n";
  }
}

// The daemon verifies its own store (no --public-key given, online).
int VerifyOnDaemon(const ConnectionFlags& conn, bool json) {
  std::string server;
  std::shared_ptr<grpc::Channel> channel = ConnectOrReport(conn, &server);
  if (channel == nullptr) return kExitLocalError;
  auto stub = v1::Admin::NewStub(channel);
  grpc::ClientContext ctx;
  if (conn.timeout_seconds > 0) ctx.set_deadline(CallDeadline(conn, 0));
  ScopedCancelOnInterrupt cancel_on_interrupt(&ctx);
  v1::VerifyAuditResponse r;
  grpc::Status status = stub->VerifyAudit(&ctx, v1::VerifyAuditRequest(), &r);
  if (!status.ok()) return ReportRpcError("VerifyAudit", status, server);
  audit::VerifyReport report;
  report.ok = r.ok();
  report.records_checked = r.records_checked();
  report.checkpoints_checked = r.checkpoints_checked();
  if (!r.ok() && r.first_bad_sequence() != 0) report.first_bad_sequence = r.first_bad_sequence();
  report.problem = r.problem();
  report.head_sequence = r.head_sequence();
  report.signed_through = r.signed_through();
  report.unsigned_tail = r.unsigned_tail();
  PrintReport(report, r.anchor_sequence(), json);
  return report.ok ? kExitOk : kExitTampered;
}

// Checkpoints an auditor kept outside the store (--anchor): a witness file, the daemon's "audit
// checkpoint" log lines' witness JSON, or an export's checkpoint lines. Each must verify with the key.
absl::StatusOr<std::vector<audit::Checkpoint>> ReadAnchors(const std::vector<std::string>& files,
                                                           const std::string& public_key_pem) {
  AIRLOCK_ASSIGN_OR_RETURN(audit::CheckpointVerifier verifier, audit::CheckpointVerifier::FromPublicKeyPem(public_key_pem));
  std::vector<audit::Checkpoint> out;
  for (const std::string& file : files) {
    AIRLOCK_ASSIGN_OR_RETURN(std::string text, auth::ReadTextFile(file));
    AIRLOCK_ASSIGN_OR_RETURN(std::vector<audit::Checkpoint> checkpoints, audit::ParseCheckpointLines(text, file));
    if (checkpoints.empty()) return absl::InvalidArgumentError(absl::StrCat("--anchor ", file, ": holds no checkpoint line"));
    for (audit::Checkpoint& checkpoint : checkpoints) {
      if (absl::Status status = verifier.Verify(checkpoint); !status.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--anchor ", file, ": ", status.message()));
      }
      out.push_back(std::move(checkpoint));
    }
  }
  return out;
}

int Verify(const SourceFlags& f, const std::string& public_key_file, const std::vector<std::string>& anchor_files,
           uint64_t max_unsigned_tail, bool json) {
  const bool offline = !f.state_dir.empty() || !f.export_file.empty();
  if (public_key_file.empty()) {
    if (offline) {
      std::cerr << "airlockctl audit verify: --public-key is required with --state-dir or --export\n";
      return kExitLocalError;
    }
    return VerifyOnDaemon(f.conn, json);
  }
  absl::StatusOr<std::string> key = auth::ReadTextFile(public_key_file);
  if (!key.ok()) {
    std::cerr << "airlockctl audit verify: " << key.status().message() << "\n";
    return kExitLocalError;
  }
  absl::StatusOr<std::vector<audit::Checkpoint>> anchors = ReadAnchors(anchor_files, *key);
  if (!anchors.ok()) {
    std::cerr << "airlockctl audit verify: " << anchors.status().message() << "\n";
    return kExitLocalError;
  }
  audit::VerifyPolicy policy;
  policy.max_unsigned_tail = max_unsigned_tail;
  std::optional<audit::ChainVerifier> verifier;
  uint64_t anchor_sequence = 0;
  const int code = ReadSource(
      "verify", f,
      [&](const AuditHeader& header) {
        // An external anchor is one more checkpoint the chain must hold: a chain that ends below
        // it was truncated, one whose record there has another hash was rewritten.
        std::vector<audit::Checkpoint> checkpoints = header.checkpoints;
        checkpoints.insert(checkpoints.end(), anchors->begin(), anchors->end());
        verifier.emplace(*key, checkpoints, header.anchor, policy);
        anchor_sequence = header.anchor ? header.anchor->sequence : 0;
      },
      [&](std::string_view stored) { return verifier->AddStored(stored); },
      [&](uint64_t sequence, std::string problem) {
        if (verifier.has_value()) verifier->Reject(sequence, std::move(problem));
      });
  if (code == kExitTampered && json) {
    audit::VerifyReport corrupt;
    corrupt.problem = "the state store is corrupt (see the error above)";
    PrintReport(corrupt, 0, json);
  }
  if (code != kExitOk) return code;
  if (!verifier.has_value()) {
    std::cerr << "airlockctl audit verify: the source ended before its header\n";
    return kExitLocalError;
  }
  const audit::VerifyReport report = verifier->Finish();
  PrintReport(report, anchor_sequence, json);
  return report.ok ? kExitOk : kExitTampered;
}

int Export(const SourceFlags& f, const std::string& out_file) {
  std::ofstream file;
  if (!out_file.empty()) {
    file.open(out_file, std::ios::trunc);
    if (!file) {
      std::cerr << "airlockctl audit export: cannot write " << out_file << "\n";
      return kExitLocalError;
    }
  }
  std::ostream& out = out_file.empty() ? std::cout : file;
  const int code = ReadSource(
      "export", f,
      [&](const AuditHeader& header) {
        if (header.anchor.has_value()) out << CheckpointLine(*header.anchor, "anchor") << "\n";
        for (const audit::Checkpoint& c : header.checkpoints) out << CheckpointLine(c, "checkpoint") << "\n";
      },
      [&](std::string_view stored) {
        out << RecordLine(stored) << "\n";
        return out.good();
      });
  if (code != kExitOk) return code;
  out.flush();
  if (!out.good()) {
    std::cerr << "airlockctl audit export: writing " << (out_file.empty() ? "stdout" : out_file) << " failed\n";
    return kExitLocalError;
  }
  return kExitOk;
}

// --since / --until: an RFC 3339 time ("2026-11-23T10:00:00Z") or a duration back from now ("15m").
absl::StatusOr<int64_t> ParseWhen(const std::string& flag, const std::string& text) {
  if (text.empty()) return 0;
  absl::Time t;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, text, &t, &error)) return absl::ToUnixMicros(t);
  absl::Duration ago;
  if (absl::ParseDuration(text, &ago) && ago >= absl::ZeroDuration() && ago != absl::InfiniteDuration()) {
    return absl::ToUnixMicros(absl::Now() - ago);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      flag, ": expected an RFC 3339 time (2026-11-23T10:00:00Z) or a duration back from now (15m, 24h), got \"", text,
      "\""));
}

struct QueryFlags {
  ConnectionFlags conn;
  std::string since;
  std::string until;
  std::string identity;
  std::string model;
  std::string decision;
  std::string method;
  std::string phase;
  uint32_t limit = 1000;
  std::string format = "text";
  bool follow = false;
};

// Runs QueryAudit pages until `wanted` records came or the log has no more (a following request:
// one call, until Ctrl-C); prints each record in the order received, and returns the last
// sequence printed through *last.
int RunQuery(v1::Admin::Stub& stub, const QueryFlags& f, const std::string& server, v1::QueryAuditRequest request,
             uint64_t wanted, const std::function<void(const audit::ChainedRecord&, std::string_view)>& print,
             uint64_t* last) {
  uint64_t received = 0;
  while (received < wanted) {
    if (!request.follow()) request.set_limit(static_cast<uint32_t>(std::min<uint64_t>(wanted - received, 100000)));
    grpc::ClientContext ctx;
    if (f.conn.timeout_seconds > 0) ctx.set_deadline(CallDeadline(f.conn, 0));
    ScopedCancelOnInterrupt cancel_on_interrupt(&ctx);
    std::unique_ptr<grpc::ClientReader<v1::QueryAuditResponse>> reader = stub.QueryAudit(&ctx, request);
    v1::QueryAuditResponse page;
    bool limit_reached = false;
    uint64_t cursor = 0;
    while (reader->Read(&page)) {
      for (const v1::AuditRecord& record : page.records()) {
        absl::StatusOr<audit::ChainedRecord> decoded = audit::DecodeStoredRecord(record.stored());
        if (!decoded.ok()) {
          std::cerr << "airlockctl audit: record " << record.sequence() << " does not decode: "
                    << decoded.status().message() << "\n";
          ctx.TryCancel();
          reader->Finish();
          return kExitOtherRpcError;
        }
        print(*decoded, record.stored());
        *last = record.sequence();
        ++received;
      }
      cursor = page.next_cursor();
      limit_reached = page.limit_reached();
      if (request.follow()) std::cout.flush();
    }
    grpc::Status status = reader->Finish();
    if (Interrupted()) return kExitInterrupted;
    if (request.follow() && status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) return kExitOk;
    if (!status.ok()) return ReportRpcError("QueryAudit", status, server);
    if (!limit_reached || cursor == 0) break;
    if (request.newest_first()) {
      request.set_before_sequence(cursor);
    } else {
      request.set_after_sequence(cursor);
    }
  }
  return kExitOk;
}

int Query(const QueryFlags& f, bool tail, uint32_t tail_count) {
  v1::QueryAuditRequest request;
  absl::StatusOr<int64_t> since = ParseWhen("--since", f.since);
  absl::StatusOr<int64_t> until = ParseWhen("--until", f.until);
  if (!since.ok() || !until.ok()) {
    std::cerr << "airlockctl audit: " << (!since.ok() ? since.status() : until.status()).message() << "\n";
    return kExitLocalError;
  }
  request.set_since_unix_micros(*since);
  request.set_until_unix_micros(*until);
  request.set_identity(f.identity);
  request.set_model(f.model);
  request.set_decision(f.decision);
  request.set_method(f.method);
  request.set_phase(f.phase);

  std::string server;
  std::shared_ptr<grpc::Channel> channel = ConnectOrReport(f.conn, &server);
  if (channel == nullptr) return kExitLocalError;
  auto stub = v1::Admin::NewStub(channel);
  const bool jsonl = f.format == "jsonl";
  auto print = [&](const audit::ChainedRecord& record, std::string_view stored) {
    std::cout << (jsonl ? Dump(RecordJson(record, stored)) : RecordText(record)) << "\n";
  };
  uint64_t last = 0;
  if (!tail) return RunQuery(*stub, f, server, request, f.limit, print, &last);

  // tail: the newest `tail_count` matches, printed oldest first; then, with --follow, the daemon
  // streams new matches until Ctrl-C (or --timeout).
  std::vector<std::pair<audit::ChainedRecord, std::string>> newest;
  v1::QueryAuditRequest newest_request = request;
  newest_request.set_newest_first(true);
  int code = RunQuery(
      *stub, f, server, newest_request, tail_count,
      [&](const audit::ChainedRecord& record, std::string_view stored) { newest.emplace_back(record, stored); }, &last);
  if (code != kExitOk) return code;
  last = 0;
  for (auto it = newest.rbegin(); it != newest.rend(); ++it) {
    print(it->first, it->second);
    last = it->first.sequence;
  }
  std::cout.flush();
  if (!f.follow) return kExitOk;
  if (last == 0) {
    // Nothing matched yet: follow from the current head.
    v1::QueryAuditRequest head_request;
    head_request.set_newest_first(true);
    code = RunQuery(*stub, f, server, head_request, 1, [](const audit::ChainedRecord&, std::string_view) {}, &last);
    if (code != kExitOk) return code;
  }
  request.set_after_sequence(last);
  request.set_follow(true);
  return RunQuery(*stub, f, server, request, UINT64_MAX, print, &last);
}

}  // namespace

void AddAuditCommands(CLI::App& app) {
  CLI::App* audit_cmd = app.add_subcommand(
      "audit", "The audit log: tail, query, verify, export (online through the Admin API, or offline)");
  audit_cmd->require_subcommand(1);

  const auto add_filters = [](CLI::App* cmd, QueryFlags& f) {
    AddConnectionFlags(*cmd, f.conn);
    cmd->add_option("--since", f.since, "Records at or after: RFC 3339 time or a duration back from now (24h)");
    cmd->add_option("--until", f.until, "Records before: RFC 3339 time or a duration back from now");
    cmd->add_option("--identity", f.identity, "Only this identity");
    cmd->add_option("--model", f.model, "Only this model");
    cmd->add_option("--decision", f.decision, "Only this decision")
        ->check(CLI::IsMember({"allowed", "denied_by_role", "denied_by_quota", "invalid", "unauthenticated"}));
    cmd->add_option("--method", f.method, "Only this method (airlock.v1.Inference/Generate)");
    cmd->add_option("--phase", f.phase, "Only this phase")->check(CLI::IsMember({"begin", "end", "admin"}));
    cmd->add_option("--format", f.format, "text (default) or jsonl (the export schema)")
        ->check(CLI::IsMember({"text", "jsonl"}));
  };

  {
    auto f = std::make_shared<QueryFlags>();
    auto count = std::make_shared<uint32_t>(20);
    CLI::App* tail = audit_cmd->add_subcommand("tail", "The newest records (matching the filters); -f to follow");
    add_filters(tail, *f);
    tail->add_option("-n,--lines", *count, "How many records (default 20)")->check(CLI::Range(1u, 100000u));
    tail->add_flag("-f,--follow", f->follow, "Keep printing new records as they are written, until Ctrl-C");
    tail->callback([=] { SetExitCode(Query(*f, true, *count)); });
  }
  {
    auto f = std::make_shared<QueryFlags>();
    CLI::App* query = audit_cmd->add_subcommand("query", "Records matching the filters, oldest first");
    add_filters(query, *f);
    query->add_option("--limit", f->limit, "At most this many records (default 1000)")
        ->check(CLI::Range(1u, 100000000u));
    query->callback([=] { SetExitCode(Query(*f, false, 0)); });
  }

  const auto add_source = [](CLI::App* cmd, SourceFlags& f) {
    AddConnectionFlags(*cmd, f.conn);
    auto* dir_opt = cmd->add_option("--state-dir", f.state_dir, "Offline: a stopped daemon's audit.state_dir");
    auto* export_opt = cmd->add_option("--export", f.export_file, "Offline: an export file (audit export)");
    dir_opt->excludes(export_opt);
  };
  {
    auto f = std::make_shared<SourceFlags>();
    auto public_key = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    CLI::App* verify = audit_cmd->add_subcommand(
        "verify",
        "Check the whole chain and every checkpoint signature; report the first bad sequence. With "
        "--public-key, here (online: over an export stream); without, by the daemon itself");
    add_source(verify, *f);
    auto anchors = std::make_shared<std::vector<std::string>>();
    auto max_tail = std::make_shared<uint64_t>(audit::VerifyPolicy().max_unsigned_tail);
    verify->add_option("--public-key", *public_key, "The checkpoint public key (<signing_key_file>.pub)");
    verify->add_option("--anchor", *anchors,
                       "A checkpoint kept outside the store (the audit witness file, an \"audit checkpoint\" "
                       "log line's witness JSON, export checkpoint lines): the chain must reach it and hold it")
        ->check(CLI::ExistingFile);
    verify->add_option("--max-unsigned-tail", *max_tail,
                       "Most records allowed after the last checkpoint: the daemon's audit.checkpoint_every")
        ->check(CLI::Range(uint64_t{1}, uint64_t{1000000}));
    verify->add_flag("--json", *json, "One JSON object");
    verify->callback([=] {
      if (!anchors->empty() && public_key->empty()) {
        std::cerr << "airlockctl audit verify: --anchor needs --public-key\n";
        SetExitCode(kExitLocalError);
        return;
      }
      SetExitCode(Verify(*f, *public_key, *anchors, *max_tail, *json));
    });
  }
  {
    auto f = std::make_shared<SourceFlags>();
    auto out = std::make_shared<std::string>();
    auto format = std::make_shared<std::string>("jsonl");
    CLI::App* exp = audit_cmd->add_subcommand(
        "export", "Write the anchor, every checkpoint and every record as JSON Lines (docs/audit.md)");
    add_source(exp, *f);
    exp->add_option("--format", *format, "jsonl (the only format)")->check(CLI::IsMember({"jsonl"}));
    exp->add_option("--out,-o", *out, "Output file (default: stdout)");
    exp->callback([=] { SetExitCode(Export(*f, *out)); });
  }
}

}  // namespace airlock::ctl

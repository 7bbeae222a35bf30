// airlockctl audit verify | export: offline access to a stopped daemon's audit log (its state
// directory) or to an export file, with only the checkpoint public key.
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "audit/audit_store.h"
#include "audit/chain_verifier.h"
#include "audit/state_db.h"
#include "auth/dev_pki.h"
#include "inference/base/status.h"
#include "tools/airlockctl/commands.h"

namespace airlock::ctl {
namespace {

struct AuditSource {
  std::vector<std::string> stored;               // EncodeStoredRecord bytes, in stored order
  std::vector<audit::Checkpoint> checkpoints;
};

absl::StatusOr<AuditSource> ReadStateDir(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<audit::StateDb>> db = audit::StateDb::Open(dir);
  if (!db.ok()) {
    return absl::Status(db.status().code(),
                        absl::StrCat(db.status().message(),
                                     " (a running airlockd holds its state directory: stop it first)"));
  }
  AuditSource source;
  AIRLOCK_ASSIGN_OR_RETURN(source.stored, audit::ReadStoredAuditRange(**db, 1, UINT64_MAX));
  AIRLOCK_ASSIGN_OR_RETURN(source.checkpoints, audit::ReadAuditCheckpoints(**db));
  return source;
}

// An export file: one JSON object per line; "type" is "record" (with "stored", the record's
// stored bytes in base64) or "checkpoint" (with "encoded").
absl::StatusOr<AuditSource> ReadExport(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  AuditSource source;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    const auto where = [&] { return absl::StrCat(path, ":", number, ": "); };
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where(), "not an export line (JSON object with \"type\")"));
    }
    const std::string field = j["type"] == "record" ? "stored" : "encoded";
    if (!j.contains(field) || !j[field].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where(), "missing \"", field, "\""));
    }
    std::string bytes;
    if (!absl::Base64Unescape(j[field].get<std::string>(), &bytes)) {
      return absl::InvalidArgumentError(absl::StrCat(where(), "\"", field, "\" is not base64"));
    }
    if (j["type"] == "record") {
      source.stored.push_back(std::move(bytes));
    } else if (j["type"] == "checkpoint") {
      absl::StatusOr<audit::Checkpoint> checkpoint = audit::DecodeCheckpoint(bytes);
      if (!checkpoint.ok()) return absl::InvalidArgumentError(absl::StrCat(where(), checkpoint.status().message()));
      source.checkpoints.push_back(*std::move(checkpoint));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where(), "unknown type ", j["type"].dump()));
    }
  }
  return source;
}

std::string Hex(std::string_view bytes) { return audit::HexLower(bytes); }

nlohmann::json RecordJson(const audit::ChainedRecord& c, const std::string& stored) {
  const audit::AuditRecord& r = c.record;
  return {{"type", "record"},
          {"sequence", c.sequence},
          {"time", absl::FormatTime("%Y-%m-%d%ET%H:%M:%E6SZ", absl::FromUnixMicros(r.time_unix_micros),
                                    absl::UTCTimeZone())},
          {"phase", std::string(audit::PhaseName(r.phase))},
          {"decision", std::string(audit::DecisionName(r.decision))},
          {"request_id", r.request_id},
          {"identity", r.identity},
          {"subject", r.subject},
          {"cert_fingerprint", r.cert_fingerprint},
          {"peer", r.peer},
          {"method", r.method},
          {"model", r.model},
          {"sampling", r.sampling},
          {"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"stop_reason", r.stop_reason},
          {"status_code", r.status_code},
          {"latency_micros", r.latency_micros},
          {"prompt_hmac", Hex(r.prompt_hmac)},
          {"output_hmac", Hex(r.output_hmac)},
          {"sealed_text", absl::Base64Escape(r.sealed_text)},
          {"prev_hash", Hex(c.prev_hash)},
          {"hash", Hex(c.hash)},
          {"stored", absl::Base64Escape(stored)}};
}

int Verify(const std::string& state_dir, const std::string& export_file, const std::string& public_key_file,
           bool json) {
  absl::StatusOr<AuditSource> source = !export_file.empty() ? ReadExport(export_file) : ReadStateDir(state_dir);
  if (!source.ok()) {
    std::cerr << "airlockctl audit verify: " << source.status().message() << "\n";
    return 1;
  }
  absl::StatusOr<std::string> key = auth::ReadTextFile(public_key_file);
  if (!key.ok()) {
    std::cerr << "airlockctl audit verify: " << key.status().message() << "\n";
    return 1;
  }
  const audit::VerifyReport report = audit::VerifyStoredChain(source->stored, source->checkpoints, *key, std::nullopt);
  if (json) {
    nlohmann::json j = {{"ok", report.ok},
                        {"records_checked", report.records_checked},
                        {"checkpoints_checked", report.checkpoints_checked},
                        {"head_sequence", report.head_sequence},
                        {"signed_through", report.signed_through},
                        {"unsigned_tail", report.unsigned_tail},
                        {"problem", report.problem}};
    j["first_bad_sequence"] = report.first_bad_sequence ? nlohmann::json(*report.first_bad_sequence) : nullptr;
    std::cout << j.dump() << "\n";
  } else if (report.ok) {
    std::cout << "OK: " << report.records_checked << " records, " << report.checkpoints_checked
              << " checkpoints, signed through sequence " << report.signed_through
              << (report.problem.empty() ? "" : "; " + report.problem) << "\n";
  } else {
    std::cout << "TAMPERED: first bad sequence "
              << (report.first_bad_sequence ? std::to_string(*report.first_bad_sequence) : "unknown") << ": "
              << report.problem << "\n";
  }
  return report.ok ? 0 : 3;
}

int Export(const std::string& state_dir, const std::string& out_file) {
  absl::StatusOr<AuditSource> source = ReadStateDir(state_dir);
  if (!source.ok()) {
    std::cerr << "airlockctl audit export: " << source.status().message() << "\n";
    return 1;
  }
  std::ofstream file;
  if (!out_file.empty()) {
    file.open(out_file, std::ios::trunc);
    if (!file) {
      std::cerr << "airlockctl audit export: cannot write " << out_file << "\n";
      return 1;
    }
  }
  std::ostream& out = out_file.empty() ? std::cout : file;
  for (const std::string& stored : source->stored) {
    absl::StatusOr<audit::ChainedRecord> record = audit::DecodeStoredRecord(stored);
    if (!record.ok()) {
      // Exported as is so that `verify --export` reports it at its position.
      out << nlohmann::json{{"type", "record"}, {"undecodable", true}, {"stored", absl::Base64Escape(stored)}}.dump()
          << "\n";
      continue;
    }
    out << RecordJson(*record, stored).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  for (const audit::Checkpoint& c : source->checkpoints) {
    out << nlohmann::json{{"type", "checkpoint"},
                          {"sequence", c.sequence},
                          {"chain_hash", Hex(c.chain_hash)},
                          {"key_id", c.key_id},
                          {"encoded", absl::Base64Escape(audit::EncodeCheckpoint(c))}}
               .dump()
        << "\n";
  }
  return out.good() ? 0 : 1;
}

}  // namespace

void AddAuditCommands(CLI::App& app) {
  CLI::App* audit_cmd = app.add_subcommand("audit", "Offline audit log tools (verify, export)");
  audit_cmd->require_subcommand(1);

  auto state_dir = std::make_shared<std::string>();
  auto export_file = std::make_shared<std::string>();
  auto public_key = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* verify = audit_cmd->add_subcommand(
      "verify", "Check the whole chain and every checkpoint signature; report the first bad sequence");
  auto* dir_opt = verify->add_option("--state-dir", *state_dir, "A stopped daemon's audit.state_dir");
  auto* export_opt = verify->add_option("--export", *export_file, "An export file (audit export)");
  dir_opt->excludes(export_opt);
  verify->add_option("--public-key", *public_key, "The checkpoint public key (<signing_key_file>.pub)")->required();
  verify->add_flag("--json", *json, "One JSON object");
  verify->callback([=] {
    if (state_dir->empty() && export_file->empty()) {
      std::cerr << "airlockctl audit verify: give --state-dir or --export\n";
      SetExitCode(1);
      return;
    }
    SetExitCode(Verify(*state_dir, *export_file, *public_key, *json));
  });

  auto export_dir = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("jsonl");
  CLI::App* exp = audit_cmd->add_subcommand("export", "Write every record and checkpoint as JSON Lines");
  exp->add_option("--state-dir", *export_dir, "A stopped daemon's audit.state_dir")->required();
  exp->add_option("--format", *format, "jsonl (the only format)")->check(CLI::IsMember({"jsonl"}));
  exp->add_option("--out,-o", *out, "Output file (default: stdout)");
  exp->callback([=] { SetExitCode(Export(*export_dir, *out)); });
}

}  // namespace airlock::ctl

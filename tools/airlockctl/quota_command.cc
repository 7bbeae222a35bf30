// airlockctl quota show | list | set | reset: quota limits and usage of a running daemon, through
// the Admin API (docs/quotas.md, "Administration"). Each call is audited by the daemon.
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "airlock/v1/admin.grpc.pb.h"
#include "auth/quota.h"
#include "google/protobuf/util/json_util.h"
#include "tools/airlockctl/admin_call.h"
#include "tools/airlockctl/client_connection.h"
#include "tools/airlockctl/commands.h"

namespace airlock::ctl {
namespace {

// What counts against a limit in the current windows; nullopt for the per-request limits.
std::optional<uint64_t> UsedAgainst(const v1::QuotaUsage& u, auth::Limit limit) {
  switch (limit) {
    case auth::Limit::kRequestsPerMinute: return u.minute_requests();
    case auth::Limit::kTokensPerMinute: return u.minute_tokens();
    case auth::Limit::kTokensPerDay: return u.day_prompt_tokens() + u.day_completion_tokens();
    case auth::Limit::kPromptTokensPerDay: return u.day_prompt_tokens();
    case auth::Limit::kCompletionTokensPerDay: return u.day_completion_tokens();
    case auth::Limit::kTokensPerMonth: return u.month_prompt_tokens() + u.month_completion_tokens();
    case auth::Limit::kPromptTokensPerMonth: return u.month_prompt_tokens();
    case auth::Limit::kCompletionTokensPerMonth: return u.month_completion_tokens();
    case auth::Limit::kMaxConcurrentRequests: return u.running();
    default: return std::nullopt;
  }
}

std::string Cell(std::optional<uint64_t> v, const char* none) {
  return v.has_value() ? absl::StrCat(*v) : std::string(none);
}

void PrintQuota(const v1::IdentityQuota& q) {
  std::printf("%s%s\n", q.identity().c_str(), q.configured_user() ? "" : " (not a configured user)");
  std::printf("  %-28s %12s %12s %12s %12s\n", "limit", "configured", "override", "in force", "used");
  for (int i = 0; i < auth::kLimitCount; ++i) {
    const auto limit = static_cast<auth::Limit>(i);
    const std::optional<uint64_t> o = auth::LimitValue(q.admin_override(), limit);
    const std::string override_cell = !o.has_value() ? "-" : (*o == 0 ? "none" : absl::StrCat(*o));
    std::printf("  %-28s %12s %12s %12s %12s\n", std::string(auth::LimitName(limit)).c_str(),
                Cell(auth::LimitValue(q.configured(), limit), "none").c_str(), override_cell.c_str(),
                Cell(auth::LimitValue(q.effective(), limit), "none").c_str(), Cell(UsedAgainst(q.usage(), limit), "-").c_str());
  }
  const v1::QuotaUsage& u = q.usage();
  std::printf("  windows (UTC): minute from %s, day from %s, month from %s\n",
              UtcText(u.minute_start_unix_seconds()).c_str(), UtcText(u.day_start_unix_seconds()).c_str(),
              UtcText(u.month_start_unix_seconds()).c_str());
  std::printf("  running: %u (reserving %llu prompt + %llu completion tokens, counted in \"used\")\n", u.running(),
              static_cast<unsigned long long>(u.reserved_prompt_tokens()),
              static_cast<unsigned long long>(u.reserved_completion_tokens()));
}

// "used/limit", or "used" when there is no limit.
std::string UsedOf(const v1::IdentityQuota& q, auth::Limit limit) {
  const std::optional<uint64_t> max = auth::LimitValue(q.effective(), limit);
  const uint64_t used = UsedAgainst(q.usage(), limit).value_or(0);
  return max.has_value() ? absl::StrCat(used, "/", *max) : absl::StrCat(used);
}

struct QuotaFlags {
  ConnectionFlags conn;
  bool json = false;
};

int Show(const QuotaFlags& f, const std::string& identity) {
  v1::GetUsageRequest request;
  request.set_identity(identity);
  v1::GetUsageResponse response;
  if (const int rc = AdminCall(f.conn, "GetUsage", &v1::Admin::Stub::GetUsage, request, &response); rc != kExitOk) return rc;
  if (f.json) {
    std::printf("%s\n", ApiJson(response.quota()).c_str());
  } else {
    PrintQuota(response.quota());
  }
  return kExitOk;
}

int List(const QuotaFlags& f) {
  v1::ListUsageRequest request;
  bool header = false;
  while (true) {
    v1::ListUsageResponse page;
    if (const int rc = AdminCall(f.conn, "ListUsage", &v1::Admin::Stub::ListUsage, request, &page); rc != kExitOk) return rc;
    for (const v1::IdentityQuota& q : page.quotas()) {
      if (f.json) {
        std::printf("%s\n", ApiJson(q).c_str());
        continue;
      }
      if (!header) {
        std::printf("%-24s %-14s %-22s %-22s %-8s %s\n", "IDENTITY", "REQUESTS/MIN", "TOKENS TODAY",
                    "TOKENS THIS MONTH", "RUNNING", "OVERRIDE");
        header = true;
      }
      std::printf("%-24s %-14s %-22s %-22s %-8s %s\n", q.identity().c_str(),
                  UsedOf(q, auth::Limit::kRequestsPerMinute).c_str(), UsedOf(q, auth::Limit::kTokensPerDay).c_str(),
                  UsedOf(q, auth::Limit::kTokensPerMonth).c_str(),
                  UsedOf(q, auth::Limit::kMaxConcurrentRequests).c_str(),
                  q.admin_override().ByteSizeLong() > 0 ? "yes" : "-");
    }
    if (!page.more() || page.quotas().empty()) break;
    request.set_after_identity(page.quotas(page.quotas_size() - 1).identity());
  }
  return kExitOk;
}

// "tokens_per_day=500000" (set), "tokens_per_day=none" (no limit), "tokens_per_day=default"
// (back to the configured value) into the request.
bool ParseAssignment(const std::string& text, v1::SetQuotaOverrideRequest& request) {
  const size_t eq = text.find('=');
  const std::string name = text.substr(0, eq);
  const std::optional<auth::Limit> limit = auth::LimitNamed(name);
  if (eq == std::string::npos || !limit.has_value()) {
    std::fprintf(stderr, "airlockctl: quota set: \"%s\": expected LIMIT=VALUE with LIMIT one of", text.c_str());
    for (int i = 0; i < auth::kLimitCount; ++i) {
      std::fprintf(stderr, "%s %s", i == 0 ? "" : ",", std::string(auth::LimitName(static_cast<auth::Limit>(i))).c_str());
    }
    std::fprintf(stderr, "\n");
    return false;
  }
  const std::string value = text.substr(eq + 1);
  if (value == "default") {
    request.add_remove(name);
    return true;
  }
  uint64_t v = 0;
  if (value != "none" && (!absl::SimpleAtoi(value, &v) || v == 0)) {
    std::fprintf(stderr,
                 "airlockctl: quota set: %s: \"%s\" is not a positive whole number, \"none\" (no limit) or "
                 "\"default\" (the configured value)\n",
                 name.c_str(), value.c_str());
    return false;
  }
  auth::SetLimitValue(*request.mutable_set(), *limit, v);
  return true;
}

int Set(const QuotaFlags& f, const std::string& identity, const std::vector<std::string>& assignments, bool clear) {
  v1::SetQuotaOverrideRequest request;
  request.set_identity(identity);
  request.set_clear(clear);
  if (assignments.empty() && !clear) {
    std::fprintf(stderr, "airlockctl: quota set: give LIMIT=VALUE assignments, or --clear\n");
    return kExitLocalError;
  }
  for (const std::string& a : assignments) {
    if (!ParseAssignment(a, request)) return kExitLocalError;
  }
  v1::SetQuotaOverrideResponse response;
  if (const int rc = AdminCall(f.conn, "SetQuotaOverride", &v1::Admin::Stub::SetQuotaOverride, request, &response);
      rc != kExitOk) {
    return rc;
  }
  if (f.json) {
    std::printf("%s\n", ApiJson(response.quota()).c_str());
  } else {
    PrintQuota(response.quota());
  }
  return kExitOk;
}

int Reset(const QuotaFlags& f, const std::string& identity, const std::string& window) {
  v1::ResetUsageRequest request;
  request.set_identity(identity);
  if (window == "minute") request.set_window(v1::ResetUsageRequest::WINDOW_MINUTE);
  if (window == "day") request.set_window(v1::ResetUsageRequest::WINDOW_DAY);
  if (window == "month") request.set_window(v1::ResetUsageRequest::WINDOW_MONTH);
  v1::ResetUsageResponse response;
  if (const int rc = AdminCall(f.conn, "ResetUsage", &v1::Admin::Stub::ResetUsage, request, &response); rc != kExitOk) {
    return rc;
  }
  if (f.json) {
    std::printf("%s\n", ApiJson(response).c_str());
    return kExitOk;
  }
  const v1::QuotaUsage& b = response.before();
  std::printf("reset %s usage of %s; before: %llu requests this minute, %llu tokens today, %llu this month\n",
              window.c_str(), identity.c_str(), static_cast<unsigned long long>(b.minute_requests()),
              static_cast<unsigned long long>(b.day_prompt_tokens() + b.day_completion_tokens()),
              static_cast<unsigned long long>(b.month_prompt_tokens() + b.month_completion_tokens()));
  PrintQuota(response.quota());
  return kExitOk;
}

}  // namespace

void AddQuotaCommands(CLI::App& app) {
  CLI::App* quota = app.add_subcommand(
      "quota", "Quota limits and usage of a running daemon: show, list, set (an override), reset (Admin API)");
  quota->require_subcommand(1);
  const auto common = [](CLI::App* cmd, QuotaFlags& f) {
    AddConnectionFlags(*cmd, f.conn);
    cmd->add_flag("--json", f.json, "JSON (the API's field names) instead of a table");
  };
  {
    auto f = std::make_shared<QuotaFlags>();
    auto identity = std::make_shared<std::string>();
    CLI::App* show = quota->add_subcommand("show", "One identity's limits (configured, override, in force) and usage");
    common(show, *f);
    show->add_option("identity", *identity, "The identity (a configured user name)")->required();
    show->callback([=] { SetExitCode(Show(*f, *identity)); });
  }
  {
    auto f = std::make_shared<QuotaFlags>();
    CLI::App* list = quota->add_subcommand("list", "Every configured user and every identity with usage");
    common(list, *f);
    list->callback([=] { SetExitCode(List(*f)); });
  }
  {
    auto f = std::make_shared<QuotaFlags>();
    auto identity = std::make_shared<std::string>();
    auto assignments = std::make_shared<std::vector<std::string>>();
    auto clear = std::make_shared<bool>(false);
    CLI::App* set = quota->add_subcommand(
        "set",
        "Override an identity's limits: LIMIT=N, LIMIT=none (no limit) or LIMIT=default (the configured value); "
        "kept across restarts until removed");
    common(set, *f);
    set->add_option("identity", *identity, "The identity")->required();
    set->add_option("assignments", *assignments, "LIMIT=VALUE, e.g. tokens_per_day=500000");
    set->add_flag("--clear", *clear, "Remove the whole override first (alone: back to the configuration)");
    set->callback([=] { SetExitCode(Set(*f, *identity, *assignments, *clear)); });
  }
  {
    auto f = std::make_shared<QuotaFlags>();
    auto identity = std::make_shared<std::string>();
    auto window = std::make_shared<std::string>("all");
    CLI::App* reset = quota->add_subcommand(
        "reset", "Start an identity's current windows afresh (running requests stay counted)");
    common(reset, *f);
    reset->add_option("identity", *identity, "The identity")->required();
    reset->add_option("--window", *window, "all (default), minute, day or month")
        ->check(CLI::IsMember({"all", "minute", "day", "month"}));
    reset->callback([=] { SetExitCode(Reset(*f, *identity, *window)); });
  }
}

}  // namespace airlock::ctl

// airlockctl apikey create | list | revoke: API keys for the OpenAI-compatible listener, through the
// Admin API (docs/security.md, "API keys"). Each call is audited by the daemon.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tools/airlockctl/admin_call.h"
#include "tools/airlockctl/client_connection.h"
#include "tools/airlockctl/commands.h"

namespace airlock::ctl {
namespace {

struct ApiKeyFlags {
  ConnectionFlags conn;
  bool json = false;
};

// "never", a lifetime ("90d", "12h", "30m") or a UTC date or time ("2027-06-30",
// "2027-06-30T12:00:00Z"), into the request; false (printed) when it is none of those.
bool ParseExpiry(const std::string& text, v1::CreateApiKeyRequest& request) {
  if (text == "never") {
    request.set_never_expires(true);
    return true;
  }
  absl::Time when;
  std::string error;
  int64_t days = 0;
  absl::Duration lifetime;
  if (text.size() > 1 && text.back() == 'd' && absl::SimpleAtoi(text.substr(0, text.size() - 1), &days) && days > 0 &&
      days <= 3653) {
    when = absl::Now() + absl::Hours(24 * days);
  } else if (absl::ParseDuration(text, &lifetime) && lifetime > absl::ZeroDuration()) {
    when = absl::Now() + lifetime;
  } else if (!absl::ParseTime("%Y-%m-%d", text, absl::UTCTimeZone(), &when, &error) &&
             !absl::ParseTime(absl::RFC3339_full, text, absl::UTCTimeZone(), &when, &error)) {
    std::fprintf(stderr,
                 "airlockctl: apikey create: --expires \"%s\": expected \"never\", a lifetime (90d, 12h) or a UTC date "
                 "(2027-06-30) or time (2027-06-30T12:00:00Z)\n",
                 text.c_str());
    return false;
  }
  request.set_expires_unix_seconds(absl::ToUnixSeconds(when));
  return true;
}

std::string ExpiryText(const v1::ApiKey& key) {
  return key.expires_unix_seconds() == 0 ? "never" : UtcText(key.expires_unix_seconds());
}

int Create(const ApiKeyFlags& f, const std::string& identity, const std::string& expires, const std::string& label) {
  v1::CreateApiKeyRequest request;
  request.set_identity(identity);
  request.set_label(label);
  if (!ParseExpiry(expires, request)) return kExitLocalError;
  v1::CreateApiKeyResponse response;
  if (const int rc = AdminCall(f.conn, "CreateApiKey", &v1::Admin::Stub::CreateApiKey, request, &response);
      rc != kExitOk) {
    return rc;
  }
  if (f.json) {
    std::printf("%s\n", ApiJson(response).c_str());
    return kExitOk;
  }
  // The secret alone on stdout (KEY=$(airlockctl apikey create ...)); what it is on stderr.
  std::fprintf(stderr, "API key %s for %s, expires %s. Keep it now: airlockd keeps only a keyed hash of it.\n",
               response.key().id().c_str(), response.key().identity().c_str(), ExpiryText(response.key()).c_str());
  std::printf("%s\n", response.secret().c_str());
  return kExitOk;
}

void PrintKeyLine(const v1::ApiKey& key) {
  std::string state = "active";
  if (key.revoked_unix_seconds() != 0) {
    state = absl::StrCat("revoked ", UtcText(key.revoked_unix_seconds()), " by ", key.revoked_by());
  } else if (key.expires_unix_seconds() != 0 && key.expires_unix_seconds() <= absl::ToUnixSeconds(absl::Now())) {
    state = "expired";
  }
  std::printf("%-16s  %-20s  %-20s  %-20s  %-14s  %s%s%s\n", key.id().c_str(), key.identity().c_str(),
              UtcText(key.created_unix_seconds()).c_str(), ExpiryText(key).c_str(), key.created_by().c_str(),
              state.c_str(), key.label().empty() ? "" : "  ", key.label().c_str());
}

int List(const ApiKeyFlags& f, const std::string& identity) {
  v1::ListApiKeysRequest request;
  request.set_identity(identity);
  v1::ListApiKeysResponse response;
  if (const int rc = AdminCall(f.conn, "ListApiKeys", &v1::Admin::Stub::ListApiKeys, request, &response);
      rc != kExitOk) {
    return rc;
  }
  if (f.json) {
    for (const v1::ApiKey& key : response.keys()) std::printf("%s\n", ApiJson(key).c_str());
    return kExitOk;
  }
  std::printf("%-16s  %-20s  %-20s  %-20s  %-14s  %s\n", "ID", "IDENTITY", "CREATED", "EXPIRES", "CREATED BY",
              "STATE  LABEL");
  for (const v1::ApiKey& key : response.keys()) PrintKeyLine(key);
  return kExitOk;
}

int Revoke(const ApiKeyFlags& f, const std::string& id) {
  v1::RevokeApiKeyRequest request;
  request.set_id(id);
  v1::RevokeApiKeyResponse response;
  if (const int rc = AdminCall(f.conn, "RevokeApiKey", &v1::Admin::Stub::RevokeApiKey, request, &response);
      rc != kExitOk) {
    return rc;
  }
  if (f.json) {
    std::printf("%s\n", ApiJson(response.key()).c_str());
  } else {
    std::printf("revoked API key %s of %s (at %s by %s)\n", response.key().id().c_str(),
                response.key().identity().c_str(), UtcText(response.key().revoked_unix_seconds()).c_str(),
                response.key().revoked_by().c_str());
  }
  return kExitOk;
}

}  // namespace

void AddApiKeyCommands(CLI::App& app) {
  CLI::App* apikey = app.add_subcommand(
      "apikey", "API keys for the OpenAI-compatible endpoint: create, list, revoke (Admin API; openai.api_keys)");
  apikey->require_subcommand(1);
  const auto common = [](CLI::App* cmd, ApiKeyFlags& f) {
    AddConnectionFlags(*cmd, f.conn);
    cmd->add_flag("--json", f.json, "JSON (the API's field names) instead of text");
  };
  {
    auto f = std::make_shared<ApiKeyFlags>();
    auto user = std::make_shared<std::string>();
    auto expires = std::make_shared<std::string>("90d");
    auto label = std::make_shared<std::string>();
    CLI::App* create = apikey->add_subcommand(
        "create", "Issue a key that acts as USER (its roles and quotas); prints the secret once, on stdout");
    common(create, *f);
    create->add_option("--user", *user, "The configured user the key acts as")->required();
    create->add_option("--expires", *expires,
                       "\"never\", a lifetime (90d, 12h) or a UTC date (2027-06-30) or time (2027-06-30T12:00:00Z); "
                       "default 90d");
    create->add_option("--label", *label, "A note kept with the key (e.g. the tool that uses it)");
    create->callback([=] { SetExitCode(Create(*f, *user, *expires, *label)); });
  }
  {
    auto f = std::make_shared<ApiKeyFlags>();
    auto user = std::make_shared<std::string>();
    CLI::App* list = apikey->add_subcommand("list", "Every key (revoked and expired ones too), without secrets");
    common(list, *f);
    list->add_option("--user", *user, "Only this user's keys");
    list->callback([=] { SetExitCode(List(*f, *user)); });
  }
  {
    auto f = std::make_shared<ApiKeyFlags>();
    auto id = std::make_shared<std::string>();
    CLI::App* revoke = apikey->add_subcommand("revoke", "Revoke a key: refused from the next call on");
    common(revoke, *f);
    revoke->add_option("id", *id, "The key's id (16 hex digits, from list or create)")->required();
    revoke->callback([=] { SetExitCode(Revoke(*f, *id)); });
  }
}

}  // namespace airlock::ctl

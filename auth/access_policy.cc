// Role-based access: resolves users -> groups -> roles once, then answers per call, deny by default.
#include "auth/access_policy.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "inference/base/status.h"

namespace airlock::auth {
namespace {

struct Role {
  std::vector<std::string> methods;  // full names, "service/*" or "*"
  std::set<std::string, std::less<>> models;  // names, or "*"
};

// The Admin service reads the audit log: a role gets it only by naming it, never through "*".
constexpr std::string_view kAdminServicePrefix = "airlock.v1.Admin/";

bool MethodMatches(const std::string& pattern, std::string_view full_method) {
  if (pattern == "*") return !full_method.starts_with(kAdminServicePrefix);
  if (pattern.size() >= 2 && pattern.compare(pattern.size() - 2, 2, "/*") == 0) {
    // "service/*": the service part must match exactly, up to and including the slash.
    std::string_view prefix(pattern.data(), pattern.size() - 1);
    return full_method.size() > prefix.size() && full_method.substr(0, prefix.size()) == prefix;
  }
  return pattern == full_method;
}

bool ValidMethodPattern(const std::string& pattern) {
  for (const std::string& method : ServedMethods()) {
    if (MethodMatches(pattern, method)) return true;
  }
  return false;
}

}  // namespace

struct AccessPolicy::Impl {
  std::map<std::string, Role, std::less<>> roles;
  std::map<std::string, std::vector<std::string>, std::less<>> user_roles;  // sorted, unique
  std::map<std::string, std::string, std::less<>> user_issuer;  // users[].issuer, when set
};

AccessPolicy::AccessPolicy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AccessPolicy::~AccessPolicy() = default;

absl::StatusOr<std::shared_ptr<const AccessPolicy>> AccessPolicy::Create(
    const airlock::v1::config::DaemonConfig& config) {
  // The configuration is validated before this, but a policy is a security boundary: dangling
  // references are refused here too rather than silently granting less (or more).
  auto impl = std::make_unique<Impl>();
  std::set<std::string> models;
  for (const auto& model : config.models()) models.insert(model.name());
  for (const auto& role : config.roles()) {
    if (role.name().empty()) return absl::InvalidArgumentError("a role has no name");
    Role resolved;
    for (const std::string& method : role.methods()) {
      if (!ValidMethodPattern(method)) {
        return absl::InvalidArgumentError(absl::StrCat("role \"", role.name(),
                                                       "\" names unknown method \"", method, "\""));
      }
      resolved.methods.push_back(method);
    }
    for (const std::string& model : role.models()) {
      if (model != "*" && models.count(model) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("role \"", role.name(),
                                                       "\" names unknown model \"", model, "\""));
      }
      resolved.models.insert(model);
    }
    if (!impl->roles.emplace(role.name(), std::move(resolved)).second) {
      return absl::InvalidArgumentError(absl::StrCat("role \"", role.name(), "\" defined twice"));
    }
  }
  std::map<std::string, std::vector<std::string>> group_roles;
  for (const auto& group : config.groups()) {
    if (group.name().empty()) return absl::InvalidArgumentError("a group has no name");
    std::vector<std::string> roles;
    for (const std::string& role : group.roles()) {
      if (impl->roles.count(role) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("group \"", group.name(),
                                                       "\" names unknown role \"", role, "\""));
      }
      roles.push_back(role);
    }
    if (!group_roles.emplace(group.name(), std::move(roles)).second) {
      return absl::InvalidArgumentError(absl::StrCat("group \"", group.name(), "\" defined twice"));
    }
  }
  for (const auto& user : config.users()) {
    if (user.name().empty()) return absl::InvalidArgumentError("a user has no name");
    std::set<std::string> roles;
    for (const std::string& role : user.roles()) {
      if (impl->roles.count(role) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("user \"", user.name(),
                                                       "\" names unknown role \"", role, "\""));
      }
      roles.insert(role);
    }
    for (const std::string& group : user.groups()) {
      auto it = group_roles.find(group);
      if (it == group_roles.end()) {
        return absl::InvalidArgumentError(absl::StrCat("user \"", user.name(),
                                                       "\" names unknown group \"", group, "\""));
      }
      roles.insert(it->second.begin(), it->second.end());
    }
    if (!impl->user_roles.emplace(user.name(), std::vector<std::string>(roles.begin(), roles.end()))
             .second) {
      return absl::InvalidArgumentError(absl::StrCat("user \"", user.name(), "\" defined twice"));
    }
    if (!user.issuer().empty()) impl->user_issuer.emplace(user.name(), user.issuer());
  }
  return std::shared_ptr<const AccessPolicy>(new AccessPolicy(std::move(impl)));
}

absl::Status AccessPolicy::CheckIssuer(std::string_view identity, std::string_view issuer_subject,
                                       std::string_view issuer_fingerprint) const {
  auto bound = impl_->user_issuer.find(identity);
  if (bound == impl_->user_issuer.end()) return absl::OkStatus();
  const std::string& want = bound->second;
  const bool match = want.rfind("sha256:", 0) == 0
                         ? !issuer_fingerprint.empty() && std::string_view(want).substr(7) == issuer_fingerprint
                         : !issuer_subject.empty() && want == issuer_subject;
  if (match) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "identity \"", ToAbsl(identity), "\" must be issued by CA \"", want, "\"; this certificate was issued by \"",
      ToAbsl(issuer_subject), "\" (sha256:", ToAbsl(issuer_fingerprint), "), so it is not that user"));
}

absl::Status AccessPolicy::Authorize(std::string_view identity, std::string_view full_method,
                                     std::string_view model) const {
  auto user = impl_->user_roles.find(identity);
  if (user == impl_->user_roles.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("identity \"", ToAbsl(identity), "\" is not a configured user"));
  }
  const std::vector<std::string>& roles = user->second;
  bool method_granted = false;
  for (const std::string& name : roles) {
    const Role& role = impl_->roles.at(name);
    const bool grants_method =
        std::any_of(role.methods.begin(), role.methods.end(),
                    [&](const std::string& pattern) { return MethodMatches(pattern, full_method); });
    if (!grants_method) continue;
    method_granted = true;
    // Method and model must come from the same role: a role granting Chat on one model and
    // another granting Tokenize on all models do not add up to Chat on all models.
    if (model.empty() || role.models.count("*") != 0 || role.models.count(model) != 0) {
      return absl::OkStatus();
    }
  }
  const std::string role_list = roles.empty() ? "none" : absl::StrJoin(roles, ", ");
  if (!method_granted) {
    return absl::PermissionDeniedError(absl::StrCat("identity \"", ToAbsl(identity),
                                                    "\" (roles: ", role_list,
                                                    ") has no role granting ", ToAbsl(full_method)));
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "identity \"", ToAbsl(identity), "\" (roles: ", role_list, ") has no role granting model \"",
      ToAbsl(model), "\" for ", ToAbsl(full_method)));
}

bool AccessPolicy::Allows(std::string_view identity, std::string_view full_method,
                          std::string_view model) const {
  const std::string_view methods[] = {full_method};
  return AllowsAnyOf(identity, methods, model);
}

bool AccessPolicy::AllowsAnyOf(std::string_view identity, std::span<const std::string_view> full_methods,
                               std::string_view model) const {
  auto user = impl_->user_roles.find(identity);
  if (user == impl_->user_roles.end()) return false;
  for (const std::string& name : user->second) {
    const Role& role = impl_->roles.at(name);
    // Method and model from the same role, as in Authorize.
    if (!model.empty() && role.models.count("*") == 0 && role.models.count(model) == 0) continue;
    for (const std::string_view method : full_methods) {
      for (const std::string& pattern : role.methods) {
        if (MethodMatches(pattern, method)) return true;
      }
    }
  }
  return false;
}

std::vector<std::string> AccessPolicy::RolesOf(std::string_view identity) const {
  auto user = impl_->user_roles.find(identity);
  if (user == impl_->user_roles.end()) return {};
  return user->second;
}

const std::vector<std::string>& ServedMethods() {
  static const std::vector<std::string>* const kMethods = new std::vector<std::string>{
      "airlock.v1.Inference/Generate", "airlock.v1.Inference/GenerateStream",
      "airlock.v1.Inference/Chat",     "airlock.v1.Inference/ChatStream",
      "airlock.v1.Inference/Tokenize", "airlock.v1.Inference/ListModels",
      "grpc.health.v1.Health/Check",   "grpc.health.v1.Health/Watch",
      "airlock.v1.Admin/QueryAudit",   "airlock.v1.Admin/VerifyAudit",
      "airlock.v1.Admin/ExportAudit",  "airlock.v1.Admin/GetUsage",
      "airlock.v1.Admin/ListUsage",    "airlock.v1.Admin/SetQuotaOverride",
      "airlock.v1.Admin/ResetUsage",   "airlock.v1.Admin/CreateApiKey",
      "airlock.v1.Admin/ListApiKeys",  "airlock.v1.Admin/RevokeApiKey",
      // The OpenAI-compatible HTTPS listener's routes (daemon/openai_server.h).
      "openai/v1/chat/completions",    "openai/v1/completions",
      "openai/v1/models",
  };
  return *kMethods;
}

}  // namespace airlock::auth

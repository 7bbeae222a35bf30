// Role-based access: identity -> user -> groups -> roles -> granted methods and models.
// Deny by default: an identity that is not a configured user is refused.
//
// Thread-safety: immutable after Create(); the daemon swaps in a new policy on reload.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "airlock/v1/config.pb.h"

namespace airlock::auth {

class AccessPolicy {
 public:
  // From the validated configuration (users, groups, roles, models).
  static absl::StatusOr<std::shared_ptr<const AccessPolicy>> Create(
      const airlock::v1::config::DaemonConfig& config);

  // OK when some role of `identity` grants `full_method` ("airlock.v1.Inference/Generate") and,
  // when `model` is non-empty, the model. Otherwise PERMISSION_DENIED with a message that says what
  // was missing, e.g.
  //   identity "mallory" is not a configured user
  //   identity "bob" (roles: reader) has no role granting airlock.v1.Inference/Generate
  //   identity "bob" (roles: chat) has no role granting model "llama3-70b" for airlock.v1.Inference/Chat
  absl::Status Authorize(std::string_view identity, std::string_view full_method,
                         std::string_view model) const;

  // Whether Authorize(identity, full_method, model) would pass (without composing a message).
  bool Allows(std::string_view identity, std::string_view full_method, std::string_view model) const;
  // Whether it would pass for at least one of `full_methods` (ListModels: "may use this model").
  bool AllowsAnyOf(std::string_view identity, std::span<const std::string_view> full_methods,
                   std::string_view model) const;

  // OK unless the user `identity` is bound to an issuing CA (users[].issuer) other than the one that
  // issued the caller's certificate (`issuer_subject` RFC 2253, `issuer_fingerprint` SHA-256 hex of
  // the CA certificate; empty when unknown, which fails a bound user). PERMISSION_DENIED then:
  // that certificate does not name this user. An unknown identity passes (Authorize refuses it).
  absl::Status CheckIssuer(std::string_view identity, std::string_view issuer_subject,
                           std::string_view issuer_fingerprint) const;

  // The identity's roles, sorted (empty for an unknown identity).
  std::vector<std::string> RolesOf(std::string_view identity) const;

  ~AccessPolicy();

 private:
  struct Impl;
  explicit AccessPolicy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Every method the daemon serves, as full gRPC names, then the OpenAI-compatible listener's routes
// ("openai/v1/chat/completions"); roles may name only these (or wildcards).
const std::vector<std::string>& ServedMethods();

}  // namespace airlock::auth

// Tests for role-based access: unknown identities, group-inherited roles, wildcards, models, messages.
#include "auth/access_policy.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <google/protobuf/text_format.h>

namespace airlock::auth {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr char kGenerate[] = "airlock.v1.Inference/Generate";
constexpr char kChat[] = "airlock.v1.Inference/Chat";
constexpr char kList[] = "airlock.v1.Inference/ListModels";
constexpr char kHealth[] = "grpc.health.v1.Health/Check";

airlock::v1::config::DaemonConfig Config(const std::string& text) {
  airlock::v1::config::DaemonConfig config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &config)) << text;
  return config;
}

std::shared_ptr<const AccessPolicy> Policy() {
  auto policy = AccessPolicy::Create(Config(R"pb(
    models { name: "llama3-8b" }
    models { name: "llama3-70b" }
    roles { name: "admin" methods: "*" models: "*" }
    roles { name: "chat" methods: "airlock.v1.Inference/Chat" methods: "airlock.v1.Inference/ChatStream" models: "llama3-8b" }
    roles { name: "reader" methods: "airlock.v1.Inference/ListModels" methods: "grpc.health.v1.Health/*" }
    roles { name: "inference" methods: "airlock.v1.Inference/*" models: "llama3-70b" }
    groups { name: "staff" roles: "chat" roles: "reader" }
    groups { name: "ops" roles: "admin" }
    users { name: "alice" groups: "ops" }
    users { name: "bob" roles: "chat" }
    users { name: "carol" groups: "staff" roles: "inference" }
    users { name: "dave" }
  )pb"));
  EXPECT_TRUE(policy.ok()) << policy.status();
  return *policy;
}

TEST(AccessPolicyTest, UnknownIdentityIsDenied) {
  auto policy = Policy();
  absl::Status status = policy->Authorize("mallory", kHealth, "");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(status.message(), "identity \"mallory\" is not a configured user");
  EXPECT_FALSE(policy->Allows("mallory", kList, ""));
  EXPECT_THAT(policy->RolesOf("mallory"), IsEmpty());
  // Names are exact: no case folding, no prefix matching.
  EXPECT_FALSE(policy->Allows("Alice", kHealth, ""));
  EXPECT_FALSE(policy->Allows("alic", kHealth, ""));
}

TEST(AccessPolicyTest, AUserBoundToAnIssuerIsOnlyThatUserInThatCasCertificates) {
  // Two configured CAs: the lab CA issues staff certificates, the admin CA the auditor's. A lab CA
  // certificate with CN=auditor is not the auditor.
  const std::string fingerprint(64, 'a');
  auto policy = AccessPolicy::Create(Config(R"pb(
    roles { name: "admin" methods: "*" }
    users { name: "auditor" roles: "admin" issuer: "CN=Airlock Lab Admin CA" }
    users { name: "pinned" roles: "admin" issuer: "sha256:)pb" + fingerprint + R"pb(" }
    users { name: "anyone" roles: "admin" }
  )pb"));
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_TRUE((*policy)->CheckIssuer("auditor", "CN=Airlock Lab Admin CA", "01").ok());
  absl::Status other = (*policy)->CheckIssuer("auditor", "CN=Airlock Dev CA", "02");
  EXPECT_EQ(other.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(other.message(),
            "identity \"auditor\" must be issued by CA \"CN=Airlock Lab Admin CA\"; this certificate was issued "
            "by \"CN=Airlock Dev CA\" (sha256:02), so it is not that user");
  // By fingerprint: a CA with the same name but another certificate does not do.
  EXPECT_TRUE((*policy)->CheckIssuer("pinned", "CN=X", fingerprint).ok());
  EXPECT_FALSE((*policy)->CheckIssuer("pinned", "CN=X", std::string(64, 'b')).ok());
  // Issuer unknown (no revocation checker): a bound user fails closed, others are unaffected.
  EXPECT_FALSE((*policy)->CheckIssuer("auditor", "", "").ok());
  EXPECT_FALSE((*policy)->CheckIssuer("pinned", "", "").ok());
  EXPECT_TRUE((*policy)->CheckIssuer("anyone", "CN=Whatever", "03").ok());
  EXPECT_TRUE((*policy)->CheckIssuer("mallory", "CN=Whatever", "03").ok());  // Authorize refuses
}

TEST(AccessPolicyTest, MissingMethodMessage) {
  auto policy = Policy();
  absl::Status status = policy->Authorize("bob", kGenerate, "llama3-8b");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(status.message(),
            "identity \"bob\" (roles: chat) has no role granting airlock.v1.Inference/Generate");
  EXPECT_EQ(policy->Authorize("dave", kHealth, "").message(),
            "identity \"dave\" (roles: none) has no role granting grpc.health.v1.Health/Check");
}

TEST(AccessPolicyTest, MissingModelMessage) {
  auto policy = Policy();
  absl::Status status = policy->Authorize("bob", kChat, "llama3-70b");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(status.message(),
            "identity \"bob\" (roles: chat) has no role granting model \"llama3-70b\" for "
            "airlock.v1.Inference/Chat");
  EXPECT_TRUE(policy->Authorize("bob", kChat, "llama3-8b").ok());
}

TEST(AccessPolicyTest, GroupInheritedRolesAndSortedRolesOf) {
  auto policy = Policy();
  EXPECT_THAT(policy->RolesOf("carol"), ElementsAre("chat", "inference", "reader"));
  EXPECT_THAT(policy->RolesOf("alice"), ElementsAre("admin"));
  EXPECT_TRUE(policy->Allows("carol", kChat, "llama3-8b"));     // via staff -> chat
  EXPECT_TRUE(policy->Allows("carol", kHealth, ""));            // via staff -> reader
  EXPECT_TRUE(policy->Allows("carol", kGenerate, "llama3-70b"));  // direct role
  EXPECT_FALSE(policy->Allows("carol", kGenerate, "llama3-8b"));
}

TEST(AccessPolicyTest, MethodAndModelMustComeFromOneRole) {
  auto policy = Policy();
  // chat grants Chat on 8b, inference grants Inference/* on 70b: Chat on 70b is via inference.
  EXPECT_TRUE(policy->Allows("carol", kChat, "llama3-70b"));
  // reader grants ListModels with no models: only method-only calls pass.
  EXPECT_TRUE(policy->Allows("carol", kList, ""));
  auto narrow = AccessPolicy::Create(Config(R"pb(
    models { name: "m1" }
    roles { name: "lister" methods: "airlock.v1.Inference/ListModels" }
    roles { name: "m1-tokenize" methods: "airlock.v1.Inference/Tokenize" models: "m1" }
    users { name: "u" roles: "lister" roles: "m1-tokenize" }
  )pb"));
  ASSERT_TRUE(narrow.ok()) << narrow.status();
  EXPECT_FALSE((*narrow)->Allows("u", kChat, "m1"));
  EXPECT_TRUE((*narrow)->Allows("u", "airlock.v1.Inference/Tokenize", "m1"));
}

TEST(AccessPolicyTest, Wildcards) {
  auto policy = Policy();
  for (const std::string& method : ServedMethods()) {
    // "*" grants everything but the Admin service (the audit log), which must be named.
    const bool admin = method.starts_with("airlock.v1.Admin/");
    EXPECT_EQ(policy->Allows("alice", method, "llama3-70b"), !admin) << method;
    EXPECT_EQ(policy->Allows("alice", method, ""), !admin) << method;
  }
  auto auditor = AccessPolicy::Create(Config(R"pb(
    roles { name: "admin" methods: "airlock.v1.Admin/*" }
    roles { name: "query" methods: "airlock.v1.Admin/QueryAudit" }
    users { name: "auditor" roles: "admin" }
    users { name: "reader" roles: "query" }
  )pb"));
  ASSERT_TRUE(auditor.ok()) << auditor.status();
  EXPECT_TRUE((*auditor)->Allows("auditor", "airlock.v1.Admin/ExportAudit", ""));
  EXPECT_TRUE((*auditor)->Allows("reader", "airlock.v1.Admin/QueryAudit", ""));
  EXPECT_FALSE((*auditor)->Allows("reader", "airlock.v1.Admin/ExportAudit", ""));
  EXPECT_FALSE((*auditor)->Allows("auditor", kList, ""));

  // "grpc.health.v1.Health/*" covers Health only.
  EXPECT_TRUE(policy->Allows("carol", "grpc.health.v1.Health/Watch", ""));
  auto health_only = AccessPolicy::Create(Config(R"pb(
    roles { name: "h" methods: "grpc.health.v1.Health/*" }
    users { name: "probe" roles: "h" }
  )pb"));
  ASSERT_TRUE(health_only.ok());
  EXPECT_FALSE((*health_only)->Allows("probe", kList, ""));
  EXPECT_FALSE((*health_only)->Allows("probe", "grpc.health.v1.HealthX/Check", ""));
}

TEST(AccessPolicyTest, AllowsAnyOfNeedsMethodAndModelFromOneRole) {
  auto policy = AccessPolicy::Create(Config(R"pb(
    models { name: "m1" }
    models { name: "m2" }
    roles { name: "chat-m1" methods: "airlock.v1.Inference/Chat" models: "m1" }
    roles { name: "tokenize-all" methods: "airlock.v1.Inference/Tokenize" models: "*" }
    users { name: "u" roles: "chat-m1" roles: "tokenize-all" }
  )pb"));
  ASSERT_TRUE(policy.ok()) << policy.status();
  const std::string_view chat_or_generate[] = {"airlock.v1.Inference/Generate", kChat};
  EXPECT_TRUE((*policy)->AllowsAnyOf("u", chat_or_generate, "m1"));
  EXPECT_FALSE((*policy)->AllowsAnyOf("u", chat_or_generate, "m2"));  // Tokenize's "*" does not lend Chat
  const std::string_view tokenize[] = {"airlock.v1.Inference/Tokenize"};
  EXPECT_TRUE((*policy)->AllowsAnyOf("u", tokenize, "m2"));
  EXPECT_FALSE((*policy)->AllowsAnyOf("nobody", tokenize, "m2"));
  EXPECT_FALSE((*policy)->AllowsAnyOf("u", {}, "m1"));
}

TEST(AccessPolicyTest, ServedMethods) {
  EXPECT_THAT(ServedMethods(),
              ElementsAre("airlock.v1.Inference/Generate", "airlock.v1.Inference/GenerateStream",
                          "airlock.v1.Inference/Chat", "airlock.v1.Inference/ChatStream",
                          "airlock.v1.Inference/Tokenize", "airlock.v1.Inference/ListModels",
                          "grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch",
                          "airlock.v1.Admin/QueryAudit", "airlock.v1.Admin/VerifyAudit",
                          "airlock.v1.Admin/ExportAudit", "airlock.v1.Admin/GetUsage",
                          "airlock.v1.Admin/ListUsage", "airlock.v1.Admin/SetQuotaOverride",
                          "airlock.v1.Admin/ResetUsage", "airlock.v1.Admin/CreateApiKey",
                          "airlock.v1.Admin/ListApiKeys", "airlock.v1.Admin/RevokeApiKey",
                          "openai/v1/chat/completions", "openai/v1/completions",
                          "openai/v1/models"));
}

TEST(AccessPolicyTest, RefusesDanglingReferences) {
  EXPECT_FALSE(AccessPolicy::Create(Config(R"pb(users { name: "u" roles: "ghost" })pb")).ok());
  EXPECT_FALSE(AccessPolicy::Create(Config(R"pb(users { name: "u" groups: "ghost" })pb")).ok());
  EXPECT_FALSE(AccessPolicy::Create(Config(R"pb(roles { name: "r" methods: "x.Y/Z" })pb")).ok());
  EXPECT_FALSE(AccessPolicy::Create(Config(R"pb(roles { name: "r" models: "nope" })pb")).ok());
  EXPECT_FALSE(
      AccessPolicy::Create(Config(R"pb(users { name: "u" } users { name: "u" })pb")).ok());
}

}  // namespace
}  // namespace airlock::auth

// The Admin API's request rules (docs/api.md): each refusal is INVALID_ARGUMENT naming the field.
#include "daemon/admin_service.h"

#include <string>
#include <vector>

#include "audit/audit_record.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace airlock::daemon {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;

void ExpectInvalid(const absl::Status& status, const std::string& names) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr(names));
}

TEST(AdminValidationTest, QuotaCallsNeedAnIdentityOfReasonableLength) {
  ExpectInvalid(ValidateGetUsage(v1::GetUsageRequest()), "identity: required");
  v1::GetUsageRequest get;
  get.set_identity(std::string(2000, 'a'));
  ExpectInvalid(ValidateGetUsage(get), "identity: 2000 bytes is more than the maximum of 1024");
  get.set_identity("alice");
  EXPECT_TRUE(ValidateGetUsage(get).ok());
  ExpectInvalid(ValidateResetUsage(v1::ResetUsageRequest()), "identity: required");
}

TEST(AdminValidationTest, QueryFiltersAndUnknownNamesAreBoundedBeforeTheyAreRecordedOrEchoed) {
  // An admin's filters go into the call's own audit record; an unknown name into the error.
  v1::QueryAuditRequest query;
  query.set_model(std::string(1000000, 'm'));
  ExpectInvalid(ValidateQuery(query), "model: 1000000 bytes is more than the maximum of 128");
  query.clear_model();
  query.set_method(std::string(5000, 'x'));
  ExpectInvalid(ValidateQuery(query), "method: 5000 bytes is more than the maximum of 256");
  query.clear_method();
  query.set_identity(std::string(2000, 'i'));
  ExpectInvalid(ValidateQuery(query), "identity: 2000 bytes is more than the maximum of 1024");
  query.clear_identity();
  query.set_decision(std::string(100000, 'd'));
  const absl::Status decision = ValidateQuery(query);
  ExpectInvalid(decision, "decision: unknown \"dddd");
  EXPECT_LT(decision.message().size(), 400u);
  EXPECT_THAT(decision.message(), HasSubstr("...[100000 bytes, sha256:"));
  query.clear_decision();
  query.set_phase(std::string(100000, 'p'));
  EXPECT_LT(ValidateQuery(query).message().size(), 400u);
  v1::SetQuotaOverrideRequest override_request;
  override_request.set_identity("alice");
  override_request.add_remove(std::string(100000, 'r'));
  const absl::Status remove = ValidateSetQuotaOverride(override_request);
  ExpectInvalid(remove, "remove: unknown limit \"rrrr");
  EXPECT_LT(remove.message().size(), 400u);
}

TEST(AdminValidationTest, AnOverrideNamesKnownLimitsAndKeepsTheQuotaRules) {
  v1::SetQuotaOverrideRequest request;
  request.set_identity("alice");
  EXPECT_TRUE(ValidateSetQuotaOverride(request).ok());  // an empty change is allowed (a no-op)
  request.add_remove("tokens_per_fortnight");
  ExpectInvalid(ValidateSetQuotaOverride(request), "remove: unknown limit \"tokens_per_fortnight\"");
  request.clear_remove();
  request.add_remove("tokens_per_day");
  request.mutable_set()->set_tokens_per_minute(500);
  request.mutable_set()->set_tokens_per_day(100);
  ExpectInvalid(ValidateSetQuotaOverride(request), "set.tokens_per_minute: 500 is more than tokens_per_day (100)");
  request.mutable_set()->set_tokens_per_day(0);  // 0: no limit, never compared
  EXPECT_TRUE(ValidateSetQuotaOverride(request).ok());
  request.mutable_set()->set_max_prompt_tokens(2'000'000'000'000);
  ExpectInvalid(ValidateSetQuotaOverride(request), "set.max_prompt_tokens: 2000000000000 is more than the maximum");
}

TEST(AdminValidationTest, ListLimitsAndResetWindowsAreBounded) {
  v1::ListUsageRequest list;
  list.set_limit(10000);
  EXPECT_TRUE(ValidateListUsage(list).ok());
  list.set_limit(10001);
  ExpectInvalid(ValidateListUsage(list), "limit: 10001 is more than the maximum of 10000");
  v1::ResetUsageRequest reset;
  reset.set_identity("alice");
  reset.set_window(static_cast<v1::ResetUsageRequest::Window>(7));  // an unknown enum value on the wire
  ExpectInvalid(ValidateResetUsage(reset), "window: unknown value 7");
}

TEST(AdminValidationTest, AuditQueriesKeepTheirRules) {
  v1::QueryAuditRequest query;
  query.set_since_unix_micros(10);
  query.set_until_unix_micros(5);
  ExpectInvalid(ValidateQuery(query), "until_unix_micros (5) must be greater than since_unix_micros (10)");
  query = v1::QueryAuditRequest();
  query.set_decision("maybe");
  ExpectInvalid(ValidateQuery(query), "decision: unknown \"maybe\"");
  query = v1::QueryAuditRequest();
  query.set_newest_first(true);
  query.set_follow(true);
  ExpectInvalid(ValidateQuery(query), "follow: only oldest first");
}

TEST(AdminValidationTest, ApiKeyCallsAreBoundedBeforeTheyAreRecorded) {
  v1::CreateApiKeyRequest create;
  ExpectInvalid(ValidateCreateApiKey(create), "identity: required");
  create.set_identity("alice");
  ExpectInvalid(ValidateCreateApiKey(create), "give either expires_unix_seconds or never_expires");
  create.set_never_expires(true);
  EXPECT_TRUE(ValidateCreateApiKey(create).ok());
  create.set_expires_unix_seconds(2000000000);
  ExpectInvalid(ValidateCreateApiKey(create), "give either expires_unix_seconds or never_expires");
  create.set_never_expires(false);
  EXPECT_TRUE(ValidateCreateApiKey(create).ok());
  create.set_label(std::string(1000000, 'l'));
  ExpectInvalid(ValidateCreateApiKey(create), "label: 1000000 bytes is more than the maximum of 128");
  create.set_label("line\nbreak");
  ExpectInvalid(ValidateCreateApiKey(create), "label: only printable ASCII is allowed");
  create.set_label("ci-bot");
  create.set_identity(std::string(2000, 'a'));
  ExpectInvalid(ValidateCreateApiKey(create), "identity: 2000 bytes is more than the maximum of 1024");

  v1::RevokeApiKeyRequest revoke;
  for (const char* bad : {"", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "0123456789abcdeg"}) {
    revoke.set_id(bad);
    ExpectInvalid(ValidateRevokeApiKey(revoke), "id: expected 16 lowercase hex digits");
  }
  revoke.set_id("0123456789abcdef");
  EXPECT_TRUE(ValidateRevokeApiKey(revoke).ok());

  v1::ListApiKeysRequest list;
  EXPECT_TRUE(ValidateListApiKeys(list).ok());
  list.set_identity(std::string(2000, 'a'));
  ExpectInvalid(ValidateListApiKeys(list), "identity: 2000 bytes is more than the maximum of 1024");
}

// One table (audit::ForEachRecordField) feeds both the API message and the export's JSON: it must
// name every field of airlock.v1.AuditRecord but `stored`, each once.
TEST(AdminValidationTest, TheRecordFieldTableCoversTheApiMessage) {
  std::vector<std::string> names;
  audit::ForEachRecordField(audit::ChainedRecord(), [&](const char* name, const auto&) { names.emplace_back(name); });
  names.emplace_back("stored");
  std::vector<std::string> fields;
  const google::protobuf::Descriptor* d = v1::AuditRecord::descriptor();
  for (int i = 0; i < d->field_count(); ++i) fields.push_back(d->field(i)->name());
  EXPECT_THAT(names, ::testing::UnorderedElementsAreArray(fields));
}

}  // namespace
}  // namespace airlock::daemon

// Structured output through airlockd: a Generate with a JSON schema returns an instance of it (unary
// and streamed give the same text for a seed), the audit record names the format and the schema's
// hash, and a schema the engine cannot honour, an oversized one or a misplaced one is refused with
// INVALID_ARGUMENT naming the field and, for a keyword, the keyword and where it is.
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "auth/digest.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;

// Short instances only (enums, booleans, small arrays), so every generation completes.
constexpr char kSchema[] = R"({"type": "object",
  "properties": {"mood": {"enum": ["happy", "sad"]}, "pets": {"type": "array", "items": {"type": "boolean"},
                 "maxItems": 2}, "age": {"type": "integer"}},
  "required": ["mood", "pets"]})";

class StructuredOutputTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    SetUpLab(kAliceMayCallAnything, {"alice"});
    StartDaemon();
  }

  v1::GenerateRequest Request(const std::string& schema, uint64_t seed) const {
    v1::GenerateRequest r;
    r.set_model("stories");
    r.set_prompt("Once upon a time");
    r.set_max_tokens(300);
    r.mutable_sampling()->set_temperature(1.0f);
    r.mutable_sampling()->set_seed(seed);
    r.mutable_response_format()->set_type(v1::ResponseFormat::TYPE_JSON_SCHEMA);
    r.mutable_response_format()->set_json_schema(schema);
    return r;
  }

  grpc::Status Generate(const v1::GenerateRequest& r, v1::GenerateResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(60)));
    return v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))->Generate(&context, r, response);
  }
};

TEST_F(StructuredOutputTest, GenerateReturnsAnInstanceAndTheRecordNamesTheSchema) {
  std::string request_id;
  for (uint64_t seed : {1u, 2u, 3u}) {
    v1::GenerateResponse response;
    const grpc::Status s = Generate(Request(kSchema, seed), &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    SCOPED_TRACE(response.text());
    EXPECT_EQ(response.stop_reason(), v1::STOP_REASON_END_OF_GENERATION);
    const nlohmann::json j = nlohmann::json::parse(response.text(), nullptr, false);
    ASSERT_TRUE(j.is_object());
    EXPECT_TRUE(j["mood"] == "happy" || j["mood"] == "sad");
    ASSERT_TRUE(j["pets"].is_array());
    EXPECT_LE(j["pets"].size(), 2u);
    for (const auto& [key, value] : j.items()) EXPECT_TRUE(key == "mood" || key == "pets" || key == "age") << key;

    // The same request streamed: the pieces join to the same text.
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(60)));
    auto reader = v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))
                      ->GenerateStream(&context, Request(kSchema, seed));
    std::string streamed;
    v1::GenerateStreamResponse piece;
    while (reader->Read(&piece)) {
      if (piece.has_piece()) streamed += piece.piece().text();
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(streamed, response.text());
    request_id = response.request_id();
  }
  ASSERT_NO_FATAL_FAILURE(StopDaemon());
  bool found = false;
  for (const nlohmann::json& line : ExportAudit(dir_ + "/state")) {
    if (line["type"] != "record" || line["request_id"] != request_id || line["phase"] != "begin") continue;
    found = true;
    EXPECT_THAT(line["sampling"].get<std::string>(),
                HasSubstr(";response_format=json_schema;json_schema_sha256=" + auth::HexLower(auth::Sha256(kSchema))));
  }
  EXPECT_TRUE(found);
}

TEST_F(StructuredOutputTest, SchemasThatCannotBeHonouredAreRefusedByName) {
  v1::GenerateResponse response;
  grpc::Status s = Generate(Request(R"({"type":"object","properties":{"when":{"type":"string","format":"date"}}})", 1),
                            &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("response_format.json_schema"));
  EXPECT_THAT(s.error_message(), HasSubstr("format"));
  EXPECT_THAT(s.error_message(), HasSubstr("/properties/when"));

  // A keyword or property name of the caller's is quoted back only so far.
  const std::string long_name(20000, 'x');
  s = Generate(Request(absl::StrCat(R"({"type":"object","properties":{")", long_name,
                                    R"(":{"type":"string","pattern":"a"}},")", long_name, R"(":1})"),
                       1),
               &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(s.error_message().size(), 1024u) << s.error_message().substr(0, 200);

  s = Generate(Request(std::string(65537, ' '), 1), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("at most 65536"));

  s = Generate(Request("{\"type\": \"object\"", 1), &response);  // not JSON
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("response_format.json_schema"));

  v1::GenerateRequest misplaced = Request(kSchema, 1);
  misplaced.mutable_response_format()->set_type(v1::ResponseFormat::TYPE_JSON_OBJECT);
  s = Generate(misplaced, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("must be empty unless type is TYPE_JSON_SCHEMA"));

  v1::GenerateRequest unknown = Request("", 1);
  unknown.mutable_response_format()->set_type(static_cast<v1::ResponseFormat::Type>(7));
  s = Generate(unknown, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("response_format.type: unknown value 7"));

  // JSON object: an object, or an unfinished one at max_tokens.
  v1::GenerateRequest object = Request("", 4);
  object.mutable_response_format()->set_type(v1::ResponseFormat::TYPE_JSON_OBJECT);
  s = Generate(object, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_FALSE(response.text().empty());
  EXPECT_EQ(response.text().front(), '{');
}

}  // namespace
}  // namespace airlock::testing

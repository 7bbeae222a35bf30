// Tests for the OpenAI API translation, written as a hostile client probes it (deep nesting, huge
// names, invalid UTF-8, wrong types, out-of-range numbers, unsupported features, duplicate keys),
// then the mapping of every field, the rendered bodies read back as JSON, and the error responses.
#include "daemon/openai_api.h"

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "auth/quota.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "inference/base/status.h"
#include "inference/tokenizer/utf8.h"

namespace airlock::daemon::openai {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Json = nlohmann::json;
using airlock::v1::ResponseFormat;

constexpr char kEllipsis[] = "\xE2\x80\xA6";

// A minimal valid chat body with `extra` members ("" or ",\"k\":v...") appended.
std::string ChatBody(std::string_view extra = "") {
  return absl::StrCat(R"({"model":"m","messages":[{"role":"user","content":"hi"}])", ToAbsl(extra), "}");
}
std::string CompletionBodyText(std::string_view extra = "") {
  return absl::StrCat(R"({"model":"m","prompt":"once")", ToAbsl(extra), "}");
}

// The error message of a chat body that must be refused with INVALID_ARGUMENT.
std::string ChatError(std::string_view body) {
  const absl::StatusOr<ChatCompletionCall> call = ParseChatCompletion(body);
  EXPECT_FALSE(call.ok()) << body.substr(0, 200);
  if (call.ok()) return "";
  EXPECT_EQ(call.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(call.status().message());
}
std::string CompletionError(std::string_view body) {
  const absl::StatusOr<CompletionCall> call = ParseCompletion(body);
  EXPECT_FALSE(call.ok()) << body.substr(0, 200);
  if (call.ok()) return "";
  EXPECT_EQ(call.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(call.status().message());
}

ChatCompletionCall ChatOk(std::string_view body) {
  absl::StatusOr<ChatCompletionCall> call = ParseChatCompletion(body);
  EXPECT_TRUE(call.ok()) << call.status();
  return call.ok() ? *std::move(call) : ChatCompletionCall{};
}
CompletionCall CompletionOk(std::string_view body) {
  absl::StatusOr<CompletionCall> call = ParseCompletion(body);
  EXPECT_TRUE(call.ok()) << call.status();
  return call.ok() ? *std::move(call) : CompletionCall{};
}

// ---- Hostile bodies ----

TEST(OpenAiParseTest, DeepNestingRefusedBeforeParsing) {
  const std::string deep = ChatBody(absl::StrCat(R"(,"metadata":)", std::string(100'000, '[')));
  EXPECT_EQ(ChatError(deep), "request body: nested more than 64 levels deep");
  const std::string objects = absl::StrCat("{", std::string(100'000, '{'));
  EXPECT_EQ(CompletionError(objects), "request body: nested more than 64 levels deep");
}

TEST(OpenAiParseTest, NestingLimitIsExactAndIgnoresBracketsInStrings) {
  // The root object is level 1: 63 more levels pass, 64 more do not.
  auto nested = [](int levels) {
    std::string text;
    for (int i = 0; i < levels; ++i) text += R"({"a":)";
    text += "1";
    text += std::string(levels, '}');
    return text;
  };
  ChatOk(ChatBody(absl::StrCat(R"(,"metadata":)", nested(63))));
  EXPECT_EQ(ChatError(ChatBody(absl::StrCat(R"(,"metadata":)", nested(64)))),
            "request body: nested more than 64 levels deep");
  // Brackets (and escaped quotes) inside strings are text.
  const std::string content = absl::StrCat(R"(\"[[)", std::string(10'000, '['), "{{");
  const ChatCompletionCall call =
      ChatOk(absl::StrCat(R"({"model":"m","messages":[{"role":"user","content":")", content, R"("}]})"));
  EXPECT_EQ(call.request.messages(0).content(), absl::StrCat(R"("[[)", std::string(10'000, '['), "{{"));
}

TEST(OpenAiParseTest, HugeUnknownParameterNameIsBoundedInTheReply) {
  const std::string name(20'000, 'x');
  const std::string message = ChatError(ChatBody(absl::StrCat(",\"", name, "\":1")));
  EXPECT_EQ(message, absl::StrCat("unrecognized request argument: ", std::string(64, 'x'), kEllipsis));
  // A multi-byte name is cut at a character boundary: the reply stays valid UTF-8.
  std::string accents;
  for (int i = 0; i < 5'000; ++i) accents += "\xC3\xA9";  // é
  const std::string cut = ChatError(ChatBody(absl::StrCat(",\"a", accents, "\":1")));
  EXPECT_TRUE(inference::utf8::IsValid(cut));
  EXPECT_LE(cut.size(), std::string_view("unrecognized request argument: ").size() + 64 + std::string_view(kEllipsis).size());
  EXPECT_THAT(cut, StartsWith("unrecognized request argument: a\xC3\xA9"));
}

TEST(OpenAiParseTest, UnknownParameterNamedAsOpenAiDoesEvenWhenNull) {
  EXPECT_EQ(ChatError(ChatBody(R"(,"temprature":0.5)")), "unrecognized request argument: temprature");
  EXPECT_EQ(ChatError(ChatBody(R"(,"top_k":null)")), "unrecognized request argument: top_k");
  // Completions have no response_format or max_completion_tokens; chat has no prompt.
  EXPECT_EQ(CompletionError(CompletionBodyText(R"(,"response_format":{"type":"text"})")),
            "unrecognized request argument: response_format");
  EXPECT_EQ(CompletionError(CompletionBodyText(R"(,"max_completion_tokens":5)")),
            "unrecognized request argument: max_completion_tokens");
  EXPECT_EQ(ChatError(ChatBody(R"(,"prompt":"x")")), "unrecognized request argument: prompt");
}

TEST(OpenAiParseTest, InvalidUtf8AndLoneSurrogatesRefused) {
  EXPECT_EQ(ChatError("{\"model\":\"m\xFF\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
            "request body: not valid UTF-8");
  EXPECT_EQ(ChatError("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xC0\xAF\"}]}"),
            "request body: not valid UTF-8");  // overlong '/'
  // An escaped lone surrogate is not a character either; the reply gives a position, not the text.
  const std::string message =
      ChatError(R"({"model":"m","messages":[{"role":"user","content":"SECRET\ud800"}]})");
  EXPECT_THAT(message, StartsWith("request body: not valid JSON (at byte "));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("SECRET")));
}

TEST(OpenAiParseTest, SyntaxErrorsGiveAByteOffsetAndNeverEchoTheBody) {
  const std::string message = ChatError(R"({"model": "SECRET" garbage})");
  EXPECT_EQ(message, "request body: not valid JSON (at byte 20)");
  EXPECT_THAT(ChatError(""), StartsWith("request body: not valid JSON (at byte "));
  EXPECT_THAT(ChatError("{\"model\":\"m\""), StartsWith("request body: not valid JSON (at byte "));
  EXPECT_THAT(ChatError(R"({"max_tokens":1e400})"), StartsWith("request body: not valid JSON (at byte "));
  // Comments are not JSON.
  EXPECT_THAT(ChatError(ChatBody(" /* c */")), StartsWith("request body: not valid JSON (at byte "));
}

TEST(OpenAiParseTest, TrailingBytesAfterTheObjectRefused) {
  const std::string body = ChatBody();
  EXPECT_EQ(ChatError(body + "x"), absl::StrCat("request body: not valid JSON (at byte ", body.size() + 1, ")"));
  EXPECT_THAT(ChatError(body + "{}"), StartsWith("request body: not valid JSON"));
  // nlohmann alone stops at a NUL byte and would ignore what follows it.
  EXPECT_EQ(ChatError(body + std::string(1, '\0') + "garbage"),
            absl::StrCat("request body: not valid JSON (at byte ", body.size() + 1, ")"));
  EXPECT_EQ(ChatError(std::string("{\"model\":\"m\0\"}", 15)), "request body: not valid JSON (at byte 12)");
  ChatOk(body + " \r\n\t");  // whitespace is allowed
}

TEST(OpenAiParseTest, BodyMustBeAnObject) {
  for (const std::string_view body : {R"("hello")", "42", "null", "true", "[]", R"([{"model":"m"}])"}) {
    EXPECT_EQ(ChatError(body), "request body: must be a JSON object") << body;
    EXPECT_EQ(CompletionError(body), "request body: must be a JSON object") << body;
  }
}

TEST(OpenAiParseTest, DuplicateKeysRefusedAtAnyDepth) {
  EXPECT_EQ(ChatError(R"({"model":"a","model":"b","messages":[{"role":"user","content":"x"}]})"),
            "request body: key \"model\" appears twice in one object");
  EXPECT_EQ(ChatError(R"({"model":"a","messages":[{"role":"user","content":"x","role":"system"}]})"),
            "request body: key \"role\" appears twice in one object");
  const std::string long_key(1'000, 'k');
  EXPECT_EQ(ChatError(ChatBody(absl::StrCat(R"(,"metadata":{")", long_key, R"(":1,")", long_key, R"(":2})"))),
            absl::StrCat("request body: key \"", std::string(64, 'k'), kEllipsis, "\" appears twice in one object"));
  // The same key in sibling objects is fine.
  ChatOk(R"({"model":"a","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"},)"
         R"({"role":"user","content":"z"}]})");
}

TEST(OpenAiParseTest, ObjectWithManyMembersParsesInLinearTime) {
  // nlohmann's own ordered_json builder searches each key linearly: 100k members took seconds.
  std::string members;
  for (int i = 0; i < 100'000; ++i) absl::StrAppend(&members, i == 0 ? "" : ",", "\"k", i, "\":0");
  const auto start = std::chrono::steady_clock::now();
  ChatOk(ChatBody(absl::StrCat(R"(,"metadata":{)", members, "}")));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(OpenAiParseTest, NumbersAsStringsAndOtherWrongTypesRefused) {
  EXPECT_EQ(ChatError(ChatBody(R"(,"temperature":"0.5")")), "temperature: must be a number");
  EXPECT_EQ(ChatError(ChatBody(R"(,"top_p":true)")), "top_p: must be a number");
  EXPECT_EQ(ChatError(ChatBody(R"(,"presence_penalty":[1])")), "presence_penalty: must be a number");
  EXPECT_EQ(ChatError(ChatBody(R"(,"max_tokens":"10")")), "max_tokens: must be an integer");
  EXPECT_EQ(ChatError(ChatBody(R"(,"seed":"1")")), "seed: must be an integer");
  EXPECT_EQ(ChatError(ChatBody(R"(,"stream":"true")")), "stream: must be a boolean");
  EXPECT_EQ(ChatError(ChatBody(R"(,"n":"1")")), "n: must be an integer");
  EXPECT_EQ(ChatError(ChatBody(R"(,"user":5)")), "user: must be a string");
  EXPECT_EQ(ChatError(ChatBody(R"(,"service_tier":{})")), "service_tier: must be a string");
  EXPECT_EQ(ChatError(ChatBody(R"(,"metadata":"x")")), "metadata: must be an object");
  EXPECT_EQ(ChatError(ChatBody(R"(,"store":"no")")), "store: must be a boolean");
  EXPECT_EQ(ChatError(R"({"model":7,"messages":[{"role":"user","content":"x"}]})"), "model: must be a string");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":{"role":"user"}})"), "messages: must be an array of messages");
  EXPECT_EQ(CompletionError(R"({"model":"m","prompt":5})"), "prompt: only one text prompt is supported");
  // Beyond float's range: refused here (the conversion itself would be undefined).
  EXPECT_EQ(ChatError(ChatBody(R"(,"temperature":1e300)")), "temperature: out of range");
}

TEST(OpenAiParseTest, MaxTokensMustBeAnInt32Integer) {
  EXPECT_EQ(ChatError(ChatBody(R"(,"max_tokens":1e20)")), "max_tokens: out of range for a 32-bit integer");
  EXPECT_EQ(ChatError(ChatBody(R"(,"max_tokens":2147483648)")), "max_tokens: out of range for a 32-bit integer");
  EXPECT_EQ(ChatError(ChatBody(R"(,"max_tokens":-2147483649)")), "max_tokens: out of range for a 32-bit integer");
  EXPECT_EQ(ChatError(ChatBody(R"(,"max_tokens":18446744073709551615)")),
            "max_tokens: out of range for a 32-bit integer");
  EXPECT_EQ(ChatError(ChatBody(R"(,"max_tokens":1.5)")), "max_tokens: must be an integer");
  EXPECT_EQ(ChatError(ChatBody(R"(,"max_completion_tokens":0.5)")), "max_completion_tokens: must be an integer");
  // In range but not positive: mapped as is; PrepareChat refuses it with "max_tokens: ...".
  EXPECT_EQ(ChatOk(ChatBody(R"(,"max_tokens":-1)")).request.max_tokens(), -1);
  EXPECT_EQ(ChatOk(ChatBody(R"(,"max_tokens":2147483647)")).request.max_tokens(), 2147483647);
  // An integral float is an integer (as OpenAI's own validation reads it).
  EXPECT_EQ(ChatOk(ChatBody(R"(,"max_tokens":100.0)")).request.max_tokens(), 100);
  EXPECT_EQ(ChatOk(ChatBody(R"(,"max_tokens":1e2)")).request.max_tokens(), 100);
}

TEST(OpenAiParseTest, MaxTokensAndMaxCompletionTokensMustAgree) {
  EXPECT_EQ(ChatError(ChatBody(R"(,"max_tokens":10,"max_completion_tokens":11)")),
            "max_completion_tokens: differs from max_tokens; set only one of them");
  EXPECT_EQ(ChatOk(ChatBody(R"(,"max_tokens":10,"max_completion_tokens":10)")).request.max_tokens(), 10);
  EXPECT_EQ(ChatOk(ChatBody(R"(,"max_completion_tokens":7)")).request.max_tokens(), 7);
  EXPECT_EQ(ChatOk(ChatBody(R"(,"max_tokens":7,"max_completion_tokens":null)")).request.max_tokens(), 7);
  EXPECT_FALSE(ChatOk(ChatBody()).request.has_max_tokens());  // chat leaves our default
}

TEST(OpenAiParseTest, SeedMustBeANonNegativeInteger) {
  EXPECT_EQ(ChatError(ChatBody(R"(,"seed":-1)")), "seed: must be >= 0");
  EXPECT_EQ(ChatError(ChatBody(R"(,"seed":-1.0)")), "seed: must be >= 0");
  EXPECT_EQ(ChatError(ChatBody(R"(,"seed":1.5)")), "seed: must be an integer");
  EXPECT_EQ(ChatError(ChatBody(R"(,"seed":1e20)")), "seed: out of range for a 64-bit unsigned integer");
  EXPECT_EQ(ChatOk(ChatBody(R"(,"seed":18446744073709551615)")).request.sampling().seed(), UINT64_MAX);
  EXPECT_EQ(ChatOk(ChatBody(R"(,"seed":0)")).request.sampling().seed(), 0u);
  EXPECT_TRUE(ChatOk(ChatBody(R"(,"seed":0)")).request.sampling().has_seed());
  EXPECT_FALSE(ChatOk(ChatBody(R"(,"seed":null)")).request.sampling().has_seed());
}

TEST(OpenAiParseTest, ContentPartsOtherThanTextRefused) {
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},)"
                      R"({"type":"image_url","image_url":{"url":"data:..."}}]}]})"),
            "messages[0].content[1].type: only text parts are supported");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]})"),
            "messages[0].content[0].text: required");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":[{"text":"a"}]}]})"),
            "messages[0].content[0].type: required");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":["a"]}]})"),
            "messages[0].content[0]: must be an object");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":3}]}]})"),
            "messages[0].content[0].text: must be a string");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","x":1}]}]})"),
            "messages[0].content[0].x: unrecognized field");
}

TEST(OpenAiParseTest, ToolAndFunctionMessagesAndToolCallsRefused) {
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":"x"},)"
                      R"({"role":"tool","content":"42","tool_call_id":"c1"}]})"),
            "messages[1].role: tool and function messages are not supported");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"function","name":"f","content":"42"}]})"),
            "messages[0].role: tool and function messages are not supported");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"assistant","content":"x","tool_calls":[{"id":"c"}]}]})"),
            "messages[0].tool_calls: not supported");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"assistant","content":"x","refusal":"no"},{"role":"user","content":"y"}]})"),
            "messages[0].refusal: not supported");
  // An assistant message sent back as the SDKs return it: empty tool calls, no refusal, no annotations.
  ChatOk(R"({"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b","refusal":null,)"
         R"("annotations":[],"tool_calls":[]},{"role":"user","content":"c"}]})");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"assistant","content":"x","function_call":{}}]})"),
            "messages[0].function_call: not supported");
  // Null means absent.
  ChatOk(R"({"model":"m","messages":[{"role":"user","content":"x","tool_calls":null,"name":null}]})");
  for (const std::string_view name : {"tools", "tool_choice", "functions", "function_call", "parallel_tool_calls",
                                      "audio", "modalities", "prediction", "reasoning_effort", "web_search_options"}) {
    EXPECT_EQ(ChatError(ChatBody(absl::StrCat(",\"", ToAbsl(name), "\":false"))), absl::StrCat(ToAbsl(name), ": not supported"));
    ChatOk(ChatBody(absl::StrCat(",\"", ToAbsl(name), "\":null")));
  }
}

TEST(OpenAiParseTest, MessageShapeErrorsNameTheMessage) {
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[]})"), "messages: must not be empty");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":["hi"]})"), "messages[0]: must be an object");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"content":"x"}]})"), "messages[0].role: required");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":3,"content":"x"}]})"), "messages[0].role: must be a string");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user"}]})"), "messages[0].content: required");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"assistant","content":null}]})"),
            "messages[0].content: required");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":1}]})"),
            "messages[0].content: must be a string or an array of text parts");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":"x","name":1}]})"),
            "messages[0].name: must be a string");
  EXPECT_EQ(ChatError(R"({"model":"m","messages":[{"role":"user","content":"x"},{"role":"user","content":"y","zz":1}]})"),
            "messages[1].zz: unrecognized field");
  // Unknown keys and roles are quoted bounded; a role's value beyond that never is.
  const std::string key(5'000, 'q');
  EXPECT_EQ(ChatError(absl::StrCat(R"({"model":"m","messages":[{"role":"user","content":"x",")", key, R"(":1}]})")),
            absl::StrCat("messages[0].", std::string(64, 'q'), kEllipsis, ": unrecognized field"));
  const std::string role(5'000, 'r');
  const std::string message = ChatError(absl::StrCat(R"({"model":"m","messages":[{"role":")", role, R"(","content":"x"}]})"));
  EXPECT_EQ(message, absl::StrCat("messages[0].role: unknown role \"", std::string(64, 'r'), kEllipsis,
                                  "\"; one of system, developer, user, assistant"));
}

TEST(OpenAiParseTest, RequiredParameters) {
  EXPECT_EQ(ChatError(R"({"messages":[{"role":"user","content":"x"}]})"), "model: required");
  EXPECT_EQ(ChatError(R"({"model":null,"messages":[{"role":"user","content":"x"}]})"), "model: required");
  EXPECT_EQ(ChatError(R"({"model":"m"})"), "messages: required");
  EXPECT_EQ(CompletionError(R"({"model":"m"})"), "prompt: required");
  EXPECT_EQ(CompletionError(R"({"prompt":"x"})"), "model: required");
  // An unknown parameter is named before a missing one (a typo is the likelier cause).
  EXPECT_EQ(ChatError(R"({"modle":"m","messages":[{"role":"user","content":"x"}]})"),
            "unrecognized request argument: modle");
}

TEST(OpenAiParseTest, StreamOptionsOnlyWithStream) {
  EXPECT_EQ(ChatError(ChatBody(R"(,"stream_options":{"include_usage":true})")),
            "stream_options: only allowed when stream is true");
  EXPECT_EQ(ChatError(ChatBody(R"(,"stream":false,"stream_options":{})")),
            "stream_options: only allowed when stream is true");
  EXPECT_EQ(CompletionError(CompletionBodyText(R"(,"stream_options":{"include_usage":true})")),
            "stream_options: only allowed when stream is true");
  EXPECT_EQ(ChatError(ChatBody(R"(,"stream":true,"stream_options":{"include_usage":1})")),
            "stream_options.include_usage: must be a boolean");
  EXPECT_EQ(ChatError(ChatBody(R"(,"stream":true,"stream_options":{"x":true})")),
            "stream_options.x: unrecognized field");
  EXPECT_EQ(ChatError(ChatBody(R"(,"stream":true,"stream_options":true)")), "stream_options: must be an object");
  ChatOk(ChatBody(R"(,"stream_options":null)"));
  const ChatCompletionCall call = ChatOk(ChatBody(R"(,"stream":true,"stream_options":{"include_usage":true})"));
  EXPECT_TRUE(call.stream);
  EXPECT_TRUE(call.include_usage);
  const ChatCompletionCall plain = ChatOk(ChatBody(R"(,"stream":true)"));
  EXPECT_TRUE(plain.stream);
  EXPECT_FALSE(plain.include_usage);
}

TEST(OpenAiParseTest, JsonSchemaShapeChecked) {
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":"json_schema","json_schema":{"name":"x"}})")),
            "response_format.json_schema.schema: required");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":"json_schema"})")),
            "response_format.json_schema: required with type json_schema");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":"json_schema","json_schema":{"schema":true}})")),
            "response_format.json_schema.schema: must be an object");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":"json_schema","json_schema":{"schema":{},"strict":"yes"}})")),
            "response_format.json_schema.strict: must be a boolean");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":"json_schema","json_schema":{"schema":{},"name":1}})")),
            "response_format.json_schema.name: must be a string");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":"json_schema","json_schema":{"schema":{},"x":1}})")),
            "response_format.json_schema.x: unrecognized field");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":"yaml"})")),
            "response_format.type: must be text, json_object or json_schema");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":1})")),
            "response_format.type: must be text, json_object or json_schema");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{})")), "response_format.type: required");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":"json")")), "response_format: must be an object");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":"text","schema":{}})")),
            "response_format.schema: unrecognized field");
  EXPECT_EQ(ChatError(ChatBody(R"(,"response_format":{"type":"json_object","json_schema":{"schema":{}}})")),
            "response_format.json_schema: only allowed with type json_schema");
}

TEST(OpenAiParseTest, HugeSchemaRefusedWithItsSize) {
  std::string properties;
  for (int i = 0; i < 3'000; ++i) absl::StrAppend(&properties, i == 0 ? "" : ",", "\"p", i, R"(":{"type":"string"})");
  const std::string schema = absl::StrCat(R"({"type":"object","properties":{)", properties, "}}");
  ASSERT_GT(schema.size(), 65'536u);
  EXPECT_EQ(ChatError(ChatBody(absl::StrCat(R"(,"response_format":{"type":"json_schema","json_schema":{"schema":)",
                                            schema, "}}"))),
            absl::StrCat("response_format.json_schema.schema: is ", schema.size(), " bytes; at most 65536"));
}

TEST(OpenAiParseTest, UnsupportedSettingsRefusedAndHarmlessOnesAccepted) {
  EXPECT_EQ(ChatError(ChatBody(R"(,"n":2)")), "n: only 1 is supported");
  EXPECT_EQ(ChatError(ChatBody(R"(,"logprobs":true)")), "logprobs: not supported");
  EXPECT_EQ(ChatError(ChatBody(R"(,"top_logprobs":0)")), "top_logprobs: not supported");
  EXPECT_EQ(ChatError(ChatBody(R"(,"logit_bias":{"50256":-100})")), "logit_bias: not supported");
  EXPECT_EQ(ChatError(ChatBody(R"(,"logit_bias":[])")), "logit_bias: must be an object");
  EXPECT_EQ(ChatError(ChatBody(R"(,"store":true)")), "store: not supported");
  EXPECT_EQ(CompletionError(CompletionBodyText(R"(,"echo":true)")), "echo: not supported");
  EXPECT_EQ(CompletionError(CompletionBodyText(R"(,"suffix":"x")")), "suffix: not supported");
  EXPECT_EQ(CompletionError(CompletionBodyText(R"(,"best_of":2)")), "best_of: only 1 is supported");
  EXPECT_EQ(CompletionError(CompletionBodyText(R"(,"logprobs":0)")), "logprobs: not supported");
  ChatOk(ChatBody(R"(,"n":1,"logprobs":false,"top_logprobs":null,"logit_bias":{},"store":false,)"
                  R"("metadata":{"k":"v"},"service_tier":"auto","user":"u-1")"));
  CompletionOk(CompletionBodyText(R"(,"n":1,"logprobs":null,"echo":false,"suffix":null,"best_of":1,"user":"u")"));
}

TEST(OpenAiParseTest, StopStrings) {
  EXPECT_EQ(ChatError(ChatBody(R"(,"stop":["a","b","c","d","e"])")), "stop: at most 4 stop strings, got 5");
  EXPECT_EQ(ChatError(ChatBody(R"(,"stop":["a",1])")), "stop[1]: must be a string");
  EXPECT_EQ(ChatError(ChatBody(R"(,"stop":3)")), "stop: must be a string or an array of strings");
  EXPECT_THAT(ChatOk(ChatBody(R"(,"stop":"END")")).request.stop(), ::testing::ElementsAre("END"));
  EXPECT_THAT(ChatOk(ChatBody(R"(,"stop":["a","b","c","d"])")).request.stop(),
              ::testing::ElementsAre("a", "b", "c", "d"));
  EXPECT_TRUE(ChatOk(ChatBody(R"(,"stop":null)")).request.stop().empty());
  EXPECT_TRUE(ChatOk(ChatBody(R"(,"stop":[])")).request.stop().empty());
}

TEST(OpenAiParseTest, NoExceptionEscapesOnMutatedBodies) {
  const std::string seed =
      R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a\u00e9"}]}],"max_tokens":5,)"
      R"("temperature":0.2,"stop":["x"],"stream":true,"stream_options":{"include_usage":true},)"
      R"("response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"}}}})";
  std::mt19937 rng(7);
  for (int i = 0; i < 20'000; ++i) {
    std::string body = seed;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % body.size();
      switch (rng() % 3) {
        case 0: body[at] = static_cast<char>(rng()); break;
        case 1: body.erase(at, 1 + rng() % 8); break;
        default: body.insert(at, 1, "[]{}\",:0-e.\\"[rng() % 12]); break;
      }
      if (body.empty()) body.push_back('{');
    }
    EXPECT_NO_THROW({
      const absl::StatusOr<ChatCompletionCall> chat = ParseChatCompletion(body);
      if (!chat.ok()) {
        EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument) << chat.status();
      }
      const absl::StatusOr<CompletionCall> completion = ParseCompletion(body);
      if (!completion.ok()) {
        EXPECT_EQ(completion.status().code(), absl::StatusCode::kInvalidArgument) << completion.status();
      }
    });
  }
}

// ---- Mapping ----

TEST(OpenAiParseTest, ChatMapsEveryField) {
  const ChatCompletionCall call = ChatOk(R"({
    "model": "qwen", "max_tokens": 12, "temperature": 0.25, "top_p": 0.5, "presence_penalty": 0.75,
    "frequency_penalty": -1.5, "seed": 42, "stop": ["\n\n", "END"], "stream": true,
    "stream_options": {"include_usage": true}, "user": "alice", "n": 1,
    "messages": [
      {"role": "developer", "content": "be terse"},
      {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}], "name": "a"},
      {"role": "assistant", "content": "Hi."},
      {"role": "user", "content": "And?"}
    ],
    "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "strict": true, "description": "d",
      "schema": {"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "integer"}},
                 "required": ["z", "a"]}}}
  })");
  const airlock::v1::ChatRequest& r = call.request;
  EXPECT_EQ(r.model(), "qwen");
  EXPECT_EQ(r.max_tokens(), 12);
  EXPECT_FLOAT_EQ(r.sampling().temperature(), 0.25f);
  EXPECT_FLOAT_EQ(r.sampling().top_p(), 0.5f);
  EXPECT_FLOAT_EQ(r.sampling().presence_penalty(), 0.75f);
  EXPECT_FLOAT_EQ(r.sampling().frequency_penalty(), -1.5f);
  EXPECT_EQ(r.sampling().seed(), 42u);
  EXPECT_THAT(r.stop(), ::testing::ElementsAre("\n\n", "END"));
  EXPECT_TRUE(call.stream);
  EXPECT_TRUE(call.include_usage);
  ASSERT_EQ(r.messages_size(), 4);
  EXPECT_EQ(r.messages(0).role(), "system");  // developer -> system
  EXPECT_EQ(r.messages(0).content(), "be terse");
  EXPECT_EQ(r.messages(1).role(), "user");
  EXPECT_EQ(r.messages(1).content(), "Hello, world");  // parts concatenated
  EXPECT_EQ(r.messages(2).role(), "assistant");
  EXPECT_EQ(r.messages(3).content(), "And?");
  EXPECT_EQ(r.response_format().type(), ResponseFormat::TYPE_JSON_SCHEMA);
  // Compact, and in the client's member order (structured output generates in that order).
  EXPECT_EQ(r.response_format().json_schema(),
            R"({"type":"object","properties":{"z":{"type":"string"},"a":{"type":"integer"}},"required":["z","a"]})");
}

TEST(OpenAiParseTest, ResponseFormatTextAndJsonObject) {
  EXPECT_EQ(ChatOk(ChatBody(R"(,"response_format":{"type":"text"})")).request.response_format().type(),
            ResponseFormat::TYPE_TEXT);
  const ChatCompletionCall json = ChatOk(ChatBody(R"(,"response_format":{"type":"json_object"})"));
  EXPECT_EQ(json.request.response_format().type(), ResponseFormat::TYPE_JSON_OBJECT);
  EXPECT_TRUE(json.request.response_format().json_schema().empty());
  EXPECT_EQ(ChatOk(ChatBody(R"(,"response_format":null)")).request.response_format().type(),
            ResponseFormat::TYPE_UNSPECIFIED);
}

TEST(OpenAiParseTest, OpenAiSamplingDefaultsAppliedWhenUnset) {
  for (const std::string& body : {ChatBody(), ChatBody(R"(,"temperature":null,"top_p":null)")}) {
    const airlock::v1::SamplingParameters s = ChatOk(body).request.sampling();
    EXPECT_TRUE(s.has_temperature());
    EXPECT_FLOAT_EQ(s.temperature(), 1.0f);
    EXPECT_TRUE(s.has_top_p());
    EXPECT_FLOAT_EQ(s.top_p(), 1.0f);
    EXPECT_TRUE(s.has_top_k());
    EXPECT_EQ(s.top_k(), 0);
    EXPECT_TRUE(s.has_min_p());
    EXPECT_FLOAT_EQ(s.min_p(), 0.0f);
    EXPECT_TRUE(s.has_repeat_penalty());
    EXPECT_FLOAT_EQ(s.repeat_penalty(), 1.0f);
    EXPECT_TRUE(s.has_repeat_last_n());
    EXPECT_EQ(s.repeat_last_n(), -1);
    EXPECT_FALSE(s.has_presence_penalty());
    EXPECT_FALSE(s.has_frequency_penalty());
    EXPECT_FALSE(s.has_seed());
  }
  const CompletionCall completion = CompletionOk(CompletionBodyText());
  EXPECT_FLOAT_EQ(completion.request.sampling().temperature(), 1.0f);
  EXPECT_FLOAT_EQ(completion.request.sampling().top_p(), 1.0f);
  EXPECT_EQ(completion.request.sampling().top_k(), 0);
  EXPECT_EQ(completion.request.sampling().repeat_last_n(), -1);
  EXPECT_FALSE(completion.stream);
  EXPECT_FALSE(completion.include_usage);
}

TEST(OpenAiParseTest, OpenAiSamplingDefaultsNotAppliedWhenSet) {
  const airlock::v1::SamplingParameters s = ChatOk(ChatBody(R"(,"temperature":0,"top_p":0.1)")).request.sampling();
  EXPECT_TRUE(s.has_temperature());
  EXPECT_EQ(s.temperature(), 0.0f);  // greedy stays greedy
  EXPECT_FLOAT_EQ(s.top_p(), 0.1f);
  const airlock::v1::SamplingParameters c =
      CompletionOk(CompletionBodyText(R"(,"temperature":1.5,"top_p":0.9)")).request.sampling();
  EXPECT_FLOAT_EQ(c.temperature(), 1.5f);
  EXPECT_FLOAT_EQ(c.top_p(), 0.9f);
}

TEST(OpenAiParseTest, CompletionMapsEveryField) {
  const CompletionCall call = CompletionOk(
      R"({"model":"llama","prompt":["Once upon"],"max_tokens":64,"temperature":0.3,"top_p":0.8,"seed":9,)"
      R"("stop":"\n","presence_penalty":0.1,"frequency_penalty":0.2,"stream":true,)"
      R"("stream_options":{"include_usage":false}})");
  const airlock::v1::GenerateRequest& r = call.request;
  EXPECT_EQ(r.model(), "llama");
  EXPECT_EQ(r.prompt(), "Once upon");
  EXPECT_EQ(r.max_tokens(), 64);
  EXPECT_FLOAT_EQ(r.sampling().temperature(), 0.3f);
  EXPECT_FLOAT_EQ(r.sampling().top_p(), 0.8f);
  EXPECT_EQ(r.sampling().seed(), 9u);
  EXPECT_FLOAT_EQ(r.sampling().presence_penalty(), 0.1f);
  EXPECT_FLOAT_EQ(r.sampling().frequency_penalty(), 0.2f);
  EXPECT_THAT(r.stop(), ::testing::ElementsAre("\n"));
  EXPECT_TRUE(call.stream);
  EXPECT_FALSE(call.include_usage);
}

TEST(OpenAiParseTest, CompletionPromptAndDefaultMaxTokens) {
  EXPECT_EQ(CompletionOk(CompletionBodyText()).request.max_tokens(), 16);  // OpenAI's default
  EXPECT_EQ(CompletionOk(CompletionBodyText(R"(,"max_tokens":null)")).request.max_tokens(), 16);
  EXPECT_EQ(CompletionOk(CompletionBodyText(R"(,"max_tokens":3)")).request.max_tokens(), 3);
  for (const std::string_view prompt : {R"([1,2,3])", R"([[1,2]])", R"(["a","b"])", "[]", "{}"}) {
    EXPECT_EQ(CompletionError(absl::StrCat(R"({"model":"m","prompt":)", ToAbsl(prompt), "}")),
              "prompt: only one text prompt is supported")
        << prompt;
  }
  EXPECT_EQ(CompletionOk(R"({"model":"m","prompt":"x\u0000y"})").request.prompt(), std::string("x\0y", 3));
}

// ---- Rendering ----

Json Parsed(const std::string& text) {
  EXPECT_TRUE(Json::accept(text)) << text;
  return Json::parse(text, nullptr, false);
}

TEST(OpenAiRenderTest, FinishReasonMapping) {
  EXPECT_EQ(FinishReason(airlock::v1::STOP_REASON_MAX_TOKENS), "length");
  EXPECT_EQ(FinishReason(airlock::v1::STOP_REASON_CONTEXT_FULL), "length");
  EXPECT_EQ(FinishReason(airlock::v1::STOP_REASON_END_OF_GENERATION), "stop");
  EXPECT_EQ(FinishReason(airlock::v1::STOP_REASON_STOP_STRING), "stop");
  EXPECT_EQ(FinishReason(airlock::v1::STOP_REASON_UNSPECIFIED), "stop");
  EXPECT_EQ(FinishReason(airlock::v1::STOP_REASON_CANCELLED), "stop");
}

TEST(OpenAiRenderTest, ChatCompletionBodyReadsBack) {
  const std::string text = "Hé said \"hi\"\n\t\x01 😀";
  const Json body = Parsed(ChatCompletionBody("chatcmpl-1", 1'700'000'000, "qwen", text,
                                              airlock::v1::STOP_REASON_MAX_TOKENS, {.prompt_tokens = 7,
                                                                                    .completion_tokens = 5}));
  EXPECT_EQ(body["id"], "chatcmpl-1");
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["created"], 1'700'000'000);
  EXPECT_EQ(body["model"], "qwen");
  ASSERT_EQ(body["choices"].size(), 1u);
  EXPECT_EQ(body["choices"][0]["index"], 0);
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], text);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(body["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(body["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(body["usage"]["completion_tokens"], 5);
  EXPECT_EQ(body["usage"]["total_tokens"], 12);
  EXPECT_TRUE(body.contains("system_fingerprint"));
  EXPECT_TRUE(body["system_fingerprint"].is_null());
}

TEST(OpenAiRenderTest, ChatChunks) {
  const Json first = Parsed(ChatCompletionChunk("c", 5, "m", "assistant", "", std::nullopt));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], (Json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(first.contains("usage"));
  const Json piece = Parsed(ChatCompletionChunk("c", 5, "m", std::nullopt, "Hel", std::nullopt));
  EXPECT_EQ(piece["choices"][0]["delta"], (Json{{"content", "Hel"}}));
  EXPECT_EQ(piece["id"], "c");
  EXPECT_EQ(piece["created"], 5);
  EXPECT_EQ(piece["model"], "m");
  const Json last = Parsed(ChatCompletionChunk("c", 5, "m", std::nullopt, "", airlock::v1::STOP_REASON_STOP_STRING));
  EXPECT_EQ(last["choices"][0]["delta"], Json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const Json usage = Parsed(ChatUsageChunk("c", 5, "m", {.prompt_tokens = 4'000'000'000u,
                                                         .completion_tokens = 4'000'000'000u}));
  EXPECT_EQ(usage["object"], "chat.completion.chunk");
  EXPECT_EQ(usage["choices"], Json::array());
  EXPECT_EQ(usage["usage"]["total_tokens"], 8'000'000'000u);  // no 32-bit overflow
}

TEST(OpenAiRenderTest, CompletionBodiesAndChunks) {
  const Json body = Parsed(CompletionBody("cmpl-1", 9, "llama", "text", airlock::v1::STOP_REASON_END_OF_GENERATION,
                                          {.prompt_tokens = 2, .completion_tokens = 3}));
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], "text");
  EXPECT_EQ(body["choices"][0]["index"], 0);
  EXPECT_TRUE(body["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["usage"]["total_tokens"], 5);
  const Json chunk = Parsed(CompletionChunk("cmpl-1", 9, "llama", "te", std::nullopt));
  EXPECT_EQ(chunk["object"], "text_completion");
  EXPECT_EQ(chunk["choices"][0]["text"], "te");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  const Json end = Parsed(CompletionChunk("cmpl-1", 9, "llama", "", airlock::v1::STOP_REASON_CONTEXT_FULL));
  EXPECT_EQ(end["choices"][0]["finish_reason"], "length");
  const Json usage = Parsed(CompletionUsageChunk("cmpl-1", 9, "llama", {.prompt_tokens = 1, .completion_tokens = 1}));
  EXPECT_EQ(usage["choices"], Json::array());
  EXPECT_EQ(usage["usage"]["total_tokens"], 2);
}

TEST(OpenAiRenderTest, ModelsBodies) {
  const Json list = Parsed(ModelsBody({"a", "b"}, 100));
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 2u);
  EXPECT_EQ(list["data"][1], (Json{{"id", "b"}, {"object", "model"}, {"created", 100}, {"owned_by", "airlock"}}));
  EXPECT_EQ(Parsed(ModelsBody({}, 1))["data"], Json::array());
  EXPECT_EQ(Parsed(ModelBody("a", 100)), list["data"][0]);
}

TEST(OpenAiRenderTest, InvalidUtf8TextIsReplacedNotThrown) {
  std::string body;
  EXPECT_NO_THROW(body = ChatCompletionBody("i", 0, "m\xFF", "bad \xC3 byte", airlock::v1::STOP_REASON_MAX_TOKENS, {}));
  EXPECT_TRUE(inference::utf8::IsValid(body));
  EXPECT_EQ(Parsed(body)["choices"][0]["message"]["content"], "bad \xEF\xBF\xBD byte");
}

TEST(OpenAiRenderTest, SseFraming) {
  const std::string chunk = ChatCompletionChunk("c", 1, "m", std::nullopt, "line\nbreak", std::nullopt);
  EXPECT_EQ(chunk.find('\n'), std::string::npos);  // a newline in the text is escaped: one data line
  const std::string event = SseEvent(chunk);
  EXPECT_EQ(event, absl::StrCat("data: ", chunk, "\n\n"));
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
}

// ---- Errors ----

TEST(OpenAiErrorTest, EachCodeMapsToItsHttpStatusAndType) {
  struct Case {
    absl::Status status;
    int http;
    std::string type;
    Json code;
  };
  const std::vector<Case> cases = {
      {absl::InvalidArgumentError("temperature: bad"), 400, "invalid_request_error", nullptr},
      {absl::OutOfRangeError("x"), 400, "invalid_request_error", nullptr},
      {absl::FailedPreconditionError("x"), 400, "invalid_request_error", nullptr},
      {absl::UnauthenticatedError("x"), 401, "authentication_error", nullptr},
      {absl::PermissionDeniedError("x"), 403, "permission_error", nullptr},
      {absl::NotFoundError("model: no model \"q\""), 404, "invalid_request_error", "model_not_found"},
      {absl::NotFoundError("no such thing"), 404, "invalid_request_error", nullptr},
      {absl::ResourceExhaustedError("queue full"), 429, "rate_limit_error", "rate_limit_exceeded"},
      {absl::UnavailableError("draining"), 503, "server_error", "unavailable"},
      {absl::DeadlineExceededError("slow"), 504, "server_error", "timeout"},
      {absl::CancelledError("gone"), 499, "server_error", nullptr},
      {absl::InternalError("bug"), 500, "server_error", nullptr},
      {absl::DataLossError("disk"), 500, "server_error", nullptr},
      {absl::UnknownError("?"), 500, "server_error", nullptr},
  };
  for (const Case& c : cases) {
    const HttpError error = ErrorResponse(c.status);
    EXPECT_EQ(error.status, c.http) << c.status;
    const Json body = Parsed(error.body);
    EXPECT_EQ(body["error"]["message"], std::string(c.status.message())) << c.status;
    EXPECT_EQ(body["error"]["type"], c.type) << c.status;
    EXPECT_TRUE(body["error"].contains("param"));
    EXPECT_TRUE(body["error"]["param"].is_null());
    EXPECT_EQ(body["error"]["code"], c.code) << c.status;
    EXPECT_FALSE(error.retry_after_seconds.has_value()) << c.status;
  }
}

// A refusal built as auth::QuotaLedger builds one (auth/quota.cc, QuotaError).
absl::Status QuotaRefusal(int64_t seconds, int32_t nanos, bool with_retry = true) {
  google::rpc::QuotaFailure failure;
  failure.add_violations()->set_description("tokens_per_minute exceeded");
  google::rpc::Status rpc;
  rpc.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
  rpc.set_message("tokens_per_minute exceeded");
  rpc.add_details()->PackFrom(failure);
  if (with_retry) {
    google::rpc::RetryInfo retry;
    retry.mutable_retry_delay()->set_seconds(seconds);
    retry.mutable_retry_delay()->set_nanos(nanos);
    rpc.add_details()->PackFrom(retry);
  }
  absl::Status status = absl::ResourceExhaustedError("tokens_per_minute exceeded");
  status.SetPayload(auth::kRpcStatusPayloadUrl, absl::Cord(rpc.SerializeAsString()));
  return status;
}

TEST(OpenAiErrorTest, QuotaRefusalCarriesRetryAfterRoundedUp) {
  const HttpError error = ErrorResponse(QuotaRefusal(2, 300'000'000));
  EXPECT_EQ(error.status, 429);
  EXPECT_EQ(error.retry_after_seconds, 3);
  EXPECT_EQ(Parsed(error.body)["error"]["message"], "tokens_per_minute exceeded");
  EXPECT_EQ(ErrorResponse(QuotaRefusal(2, 0)).retry_after_seconds, 2);
  EXPECT_EQ(ErrorResponse(QuotaRefusal(0, 0)).retry_after_seconds, 1);  // at least 1
  EXPECT_EQ(ErrorResponse(QuotaRefusal(0, 1)).retry_after_seconds, 1);
  EXPECT_EQ(ErrorResponse(QuotaRefusal(-5, 0)).retry_after_seconds, 1);
  EXPECT_FALSE(ErrorResponse(QuotaRefusal(0, 0, /*with_retry=*/false)).retry_after_seconds.has_value());
  // A payload that does not parse is ignored, not trusted.
  absl::Status garbage = absl::ResourceExhaustedError("x");
  garbage.SetPayload(auth::kRpcStatusPayloadUrl, absl::Cord("\xFF\xFF\xFF"));
  EXPECT_FALSE(ErrorResponse(garbage).retry_after_seconds.has_value());
}

TEST(OpenAiErrorTest, LongMessagesAreCapped) {
  const HttpError error = ErrorResponse(absl::InternalError(std::string(10'000, 'z')));
  const std::string message = Parsed(error.body)["error"]["message"];
  EXPECT_EQ(message, absl::StrCat(std::string(1024, 'z'), kEllipsis));
  // Invalid UTF-8 in a message cannot break the body.
  EXPECT_TRUE(inference::utf8::IsValid(ErrorResponse(absl::InternalError("bad \xC3")).body));
}

TEST(OpenAiErrorTest, ParseErrorsRenderAs400) {
  const absl::StatusOr<ChatCompletionCall> call = ParseChatCompletion("[");
  ASSERT_FALSE(call.ok());
  const HttpError error = ErrorResponse(call.status());
  EXPECT_EQ(error.status, 400);
  EXPECT_EQ(Parsed(error.body)["error"]["type"], "invalid_request_error");
}

TEST(OpenAiErrorTest, PayloadTooLarge) {
  const HttpError error = PayloadTooLarge(1'048'576);
  EXPECT_EQ(error.status, 413);
  EXPECT_FALSE(error.retry_after_seconds.has_value());
  const Json body = Parsed(error.body);
  EXPECT_EQ(body["error"]["message"], "request body: larger than 1048576 bytes (limits.max_request_bytes)");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
}

}  // namespace
}  // namespace airlock::daemon::openai

// End-to-end: with model_signatures.required, airlockd serves a model from a bundle that
// airlockctl packed and signed, and refuses to start — saying why — on an unsigned model, a bundle
// whose weights were altered after signing, or a bundle signed by a key the site does not trust.
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/run_command.h"
#include "tests/support/test_data.h"

namespace airlock::testing {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::airlock::v1;

class ModelSignatureTest : public LabDaemonTest {
 protected:
  void SetUp() override {
    AIRLOCK_REQUIRE_SHARED_FILE(SharedPath(kStoriesModel));
    SetUpLab(kAliceMayCallAnything, {"alice"});
    ASSERT_EQ(RunAirlockctl({"model", "keygen", "--out", dir_ + "/publisher.key"}).exit_code, 0);
    ASSERT_EQ(RunAirlockctl({"model", "keygen", "--out", dir_ + "/stranger.key"}).exit_code, 0);
    const CommandResult packed = RunAirlockctl({"model", "pack", "--key", dir_ + "/publisher.key", "--name", "stories",
                                      "--version", "1.0", "--licence", "mit", "--out", dir_ + "/bundle",
                                      SharedPath(kStoriesModel)});
    ASSERT_EQ(packed.exit_code, 0) << packed.err;
    bundled_model_ = dir_ + "/bundle/" + std::filesystem::path(kStoriesModel).filename().string();
  }

  // The configuration requiring signatures by `trusted_key`, serving `model_path` as "stories".
  std::string Config(const std::string& model_path, const std::string& trusted_key) const {
    return BaseConfig(dir_, pki_, absl::StrCat("  - name: stories\n    path: \"", model_path, "\"\n    threads: 1\n"),
                      access_,
                      absl::StrCat("model_signatures:\n  required: true\n  trusted_keys: [\"", trusted_key, "\"]\n"));
  }
  // Starts airlockd expecting it to refuse; returns what it said.
  std::string Refusal(const std::string& config) {
    std::filesystem::remove(dir_ + "/airlockd.log");  // only this start's words
    std::string error;
    std::unique_ptr<DaemonProcess> d = DaemonProcess::Start(dir_, config, &error, absl::Seconds(60));
    EXPECT_EQ(d, nullptr) << "airlockd started: " << (d ? d->Log() : "");
    return error;
  }

  std::string bundled_model_;
};

TEST_F(ModelSignatureTest, ASignedBundleIsServedAndAnUnsignedOrAlteredOneRefused) {
  const std::string publisher = dir_ + "/publisher.pub";

  // The shared model file itself has no manifest beside it: not a signed bundle.
  EXPECT_THAT(Refusal(Config(SharedPath(kStoriesModel), publisher)),
              HasSubstr("manifest.json is missing (not a signed model bundle?)"));

  // Signed by a key the site does not trust.
  EXPECT_THAT(Refusal(Config(bundled_model_, dir_ + "/stranger.pub")), HasSubstr("which is not a trusted publisher"));

  // The signed bundle: served.
  std::string error;
  daemon_ = DaemonProcess::Start(dir_, Config(bundled_model_, publisher), &error);
  ASSERT_NE(daemon_, nullptr) << error;
  EXPECT_TRUE(daemon_->WaitForLog("model verified", absl::Seconds(1))) << daemon_->Log();
  v1::GenerateRequest request;
  request.set_model("stories");
  request.set_prompt("Once");
  request.set_max_tokens(3);
  v1::GenerateResponse response;
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(30)));
  const grpc::Status s =
      v1::Inference::NewStub(Connect(daemon_->port(), pki_, "alice"))->Generate(&context, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  ASSERT_NO_FATAL_FAILURE(StopDaemon());

  // One byte of the weights altered after signing: refused before anything is served.
  {
    std::string bytes = ReadFileOrDie(bundled_model_);
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x20);
    std::ofstream(bundled_model_, std::ios::binary | std::ios::trunc) << bytes;
  }
  const std::string refusal = Refusal(Config(bundled_model_, publisher));
  // (The log is JSON: the model's name is quoted as \"stories\" there.)
  EXPECT_THAT(refusal, HasSubstr("stories\\\": model bundle " + dir_ + "/bundle: stories260K-f32.gguf: SHA-256 "));
  EXPECT_THAT(refusal, HasSubstr("differs from the manifest's"));
}

}  // namespace
}  // namespace airlock::testing

// airlockctl model keygen | pack | verify | import end to end, on the real binary and a real GGUF:
// a packed bundle verifies and imports; a flipped byte, a wrong key or a missing file is refused
// with a message naming it, and a refused import leaves nothing behind.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "tests/support/run_command.h"
#include "tests/support/test_data.h"

namespace airlock {
namespace {

using ::testing::HasSubstr;
using testing::CommandResult;

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

class BundleCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::SharedPath("models/stories260K-f32.gguf");
    AIRLOCK_REQUIRE_SHARED_FILE(model_);
    dir_ = testing::MakeTempDir();
    ASSERT_EQ(testing::RunAirlockctl({"model", "keygen", "--out", dir_ + "/acme.key"}).exit_code, 0);
    const CommandResult packed = testing::RunAirlockctl({"model", "pack", "--key", dir_ + "/acme.key", "--name", "stories", "--version",
                                      "2026.11", "--licence", "mit", "--out", dir_ + "/bundle", model_});
    ASSERT_EQ(packed.exit_code, 0) << packed.err;
    weights_ = dir_ + "/bundle/stories260K-f32.gguf";
  }
  void TearDown() override {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  CommandResult Verify(const std::string& key = "") {
    return testing::RunAirlockctl({"model", "verify", dir_ + "/bundle", "--trusted-key", key.empty() ? dir_ + "/acme.pub" : key});
  }

  std::string dir_;
  std::string model_;
  std::string weights_;
};

TEST_F(BundleCommandTest, KeygenWritesAPrivateKeyAndItsPublicKeyOnce) {
  EXPECT_EQ(ModeOf(dir_ + "/acme.key"), 0600u);
  EXPECT_EQ(ModeOf(dir_ + "/acme.pub"), 0644u);
  EXPECT_THAT(testing::ReadFileOrDie(dir_ + "/acme.pub"), HasSubstr("-----BEGIN PUBLIC KEY-----"));
  const CommandResult again = testing::RunAirlockctl({"model", "keygen", "--out", dir_ + "/acme.key"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.err, HasSubstr("acme.key exists; not overwritten"));
}

TEST_F(BundleCommandTest, APackedBundleDescribesItsFileAndVerifies) {
  const nlohmann::json manifest = nlohmann::json::parse(testing::ReadFileOrDie(dir_ + "/bundle/manifest.json"));
  EXPECT_EQ(manifest["name"], "stories");
  EXPECT_EQ(manifest["version"], "2026.11");
  EXPECT_EQ(manifest["architecture"], "llama");
  EXPECT_EQ(manifest["quantisation"], "F32");
  EXPECT_EQ(manifest["licence"], "mit");
  ASSERT_EQ(manifest["files"].size(), 1u);
  EXPECT_EQ(manifest["files"][0]["name"], "stories260K-f32.gguf");
  EXPECT_EQ(manifest["files"][0]["size"], std::filesystem::file_size(model_));
  EXPECT_EQ(testing::ReadFileOrDie(weights_), testing::ReadFileOrDie(model_));
  const CommandResult verified = Verify();
  ASSERT_EQ(verified.exit_code, 0) << verified.err;
  EXPECT_THAT(verified.out, HasSubstr("stories 2026.11 (llama, F32, licence mit), signed by trusted key"));
}

TEST_F(BundleCommandTest, AFlippedByteAWrongKeyOrAMissingFileIsRefused) {
  ASSERT_EQ(testing::RunAirlockctl({"model", "keygen", "--out", dir_ + "/other.key"}).exit_code, 0);
  CommandResult r = Verify(dir_ + "/other.pub");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("which is not a trusted publisher"));

  std::string bytes = testing::ReadFileOrDie(weights_);
  bytes[1000] = static_cast<char>(bytes[1000] ^ 0x01);
  std::ofstream(weights_, std::ios::binary | std::ios::trunc) << bytes;
  r = Verify();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("stories260K-f32.gguf: SHA-256 "));
  EXPECT_THAT(r.err, HasSubstr("(the file was altered)"));
  // Nothing of a refused bundle reaches the model directory.
  r = testing::RunAirlockctl({"model", "import", dir_ + "/bundle", "--trusted-key", dir_ + "/acme.pub", "--into", dir_ + "/models"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/models/stories-2026.11"));

  std::filesystem::remove(weights_);
  r = Verify();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("stories260K-f32.gguf is listed in the manifest but missing"));
}

TEST_F(BundleCommandTest, ImportCopiesAVerifiedBundleIntoTheModelDirectoryOnce) {
  const std::vector<std::string> import = {"model", "import", dir_ + "/bundle", "--trusted-key", dir_ + "/acme.pub",
                                           "--into", dir_ + "/models"};
  CommandResult r = testing::RunAirlockctl(import);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string target = dir_ + "/models/stories-2026.11";
  EXPECT_THAT(r.out, HasSubstr("path: " + target + "/stories260K-f32.gguf"));
  EXPECT_EQ(testing::ReadFileOrDie(target + "/stories260K-f32.gguf"), testing::ReadFileOrDie(model_));
  EXPECT_EQ(testing::RunAirlockctl({"model", "verify", target, "--trusted-key", dir_ + "/acme.pub"}).exit_code, 0);
  r = testing::RunAirlockctl(import);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("stories-2026.11 exists; not replaced"));
  // No staging directory is left behind.
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_ + "/models")) ++entries;
  EXPECT_EQ(entries, 1u);
}

TEST_F(BundleCommandTest, ImportPrintsOneModelsEntryPerFileWithUniqueNames) {
  // A single-file bundle: one entry, named as the bundle.
  CommandResult r = testing::RunAirlockctl({"model", "import", dir_ + "/bundle", "--trusted-key", dir_ + "/acme.pub", "--into",
                         dir_ + "/models"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("  models:\n    - name: stories\n      path: "));
  // Two files (the same weights under a second name): one models: list, a distinct name for each.
  const std::string second = dir_ + "/second.gguf";
  std::filesystem::copy_file(model_, second);
  ASSERT_EQ(testing::RunAirlockctl({"model", "pack", "--key", dir_ + "/acme.key", "--name", "pair", "--version", "1", "--licence", "mit",
                 "--out", dir_ + "/pair", model_, second})
                .exit_code,
            0);
  r = testing::RunAirlockctl({"model", "import", dir_ + "/pair", "--trusted-key", dir_ + "/acme.pub", "--into", dir_ + "/models"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string target = dir_ + "/models/pair-1";
  EXPECT_THAT(r.out, HasSubstr("  models:\n    - name: pair-stories260K-f32\n      path: " + target +
                               "/stories260K-f32.gguf\n    - name: pair-second\n      path: " + target + "/second.gguf\n"));
}

TEST_F(BundleCommandTest, PackRefusesWhatTheDaemonCouldNotLoadOrNameAndAnExistingBundle) {
  std::ofstream(dir_ + "/notes.txt") << "not a model";
  CommandResult r = testing::RunAirlockctl({"model", "pack", "--key", dir_ + "/acme.key", "--name", "x", "--version", "1", "--licence",
                         "mit", "--out", dir_ + "/b2", dir_ + "/notes.txt"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("notes.txt: "));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/b2"));
  // The stories model carries no general.license: the licence must be given.
  r = testing::RunAirlockctl({"model", "pack", "--key", dir_ + "/acme.key", "--name", "x", "--version", "1", "--out", dir_ + "/b3",
           model_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--licence is required"));
  r = testing::RunAirlockctl({"model", "pack", "--key", dir_ + "/acme.key", "--name", "../x", "--version", "1", "--licence", "mit",
           "--out", dir_ + "/b4", model_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("manifest.json: name: \"../x\" must be"));
  r = testing::RunAirlockctl({"model", "pack", "--key", dir_ + "/acme.key", "--name", "x", "--version", "1", "--licence", "mit", "--out",
           dir_ + "/bundle", model_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("exists and is not empty"));
}

}  // namespace
}  // namespace airlock

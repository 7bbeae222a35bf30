// Tests of LoadConfigFile and CheckConfigFiles against real files in a scratch directory.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "daemon/config/config_loader.h"
#include "daemon/config/daemon_options.h"
#include "tests/support/test_data.h"

namespace airlock::daemon {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

void WriteFile(const std::string& path, const std::string& content, mode_t mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    ASSERT_TRUE(out.good()) << path;
    out << content;
  }
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

// A scratch directory holding a model, TLS files and a config naming them.
class ConfigFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = airlock::testing::MakeTempDir();
    WriteFile(Path("model.gguf"), "GGUF", 0644);
    WriteFile(Path("server.crt"), "-----BEGIN CERTIFICATE-----\n", 0644);
    WriteFile(Path("server.key"), "-----BEGIN PRIVATE KEY-----\n", 0600);
    WriteFile(Path("ca.crt"), "-----BEGIN CERTIFICATE-----\n", 0644);
    WriteFile(Path("ca.crl"), "-----BEGIN X509 CRL-----\n", 0644);
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Line 1 tls:, 3 key_file (value at column 13), 7 models:, 9 path (value at column 11).
  std::string ConfigText() const {
    return absl::StrReplaceAll(R"(tls:
  cert_file: DIR/server.crt
  key_file: DIR/server.key
  client_ca_file: DIR/ca.crt
  crl_files:
    - DIR/ca.crl
models:
  - name: m
    path: DIR/model.gguf
audit: {state_dir: DIR/state, signing_key_file: DIR/audit.key, hmac_secret_file: DIR/audit.secret}
)",
                               {{"DIR", dir_}});
  }

  absl::StatusOr<ParsedConfig> WriteAndLoad(mode_t mode = 0640) {
    WriteFile(Path("airlockd.yaml"), ConfigText(), mode);
    return LoadConfigFile(Path("airlockd.yaml"));
  }

  std::string dir_;
};

TEST_F(ConfigFilesTest, ValidFilesPass) {
  absl::StatusOr<ParsedConfig> parsed = WriteAndLoad();
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->file_name(), Path("airlockd.yaml"));
  EXPECT_EQ(parsed->source_path(), Path("airlockd.yaml"));
  EXPECT_EQ(parsed->PositionOf("tls.key_file"), Path("airlockd.yaml") + ":3:13");
  EXPECT_TRUE(CheckConfigFiles(*parsed).ok()) << CheckConfigFiles(*parsed);
  EXPECT_EQ(ResolveOptions(*parsed).models.at(0).path, Path("model.gguf"));
}

TEST_F(ConfigFilesTest, GroupReadableKeyIsRefusedAtItsPosition) {
  ASSERT_EQ(::chmod(Path("server.key").c_str(), 0644), 0);
  absl::StatusOr<ParsedConfig> parsed = WriteAndLoad();
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const absl::Status status = CheckConfigFiles(*parsed);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(),
            absl::StrCat(Path("airlockd.yaml"), ":3:13: tls.key_file: private key \"",
                         Path("server.key"),
                         "\" is accessible by group or others (mode 0644); run chmod 600 ",
                         Path("server.key")));
  // Group access alone is refused too.
  ASSERT_EQ(::chmod(Path("server.key").c_str(), 0640), 0);
  EXPECT_THAT(std::string(CheckConfigFiles(*parsed).message()), HasSubstr("(mode 0640)"));
  ASSERT_EQ(::chmod(Path("server.key").c_str(), 0400), 0);
  EXPECT_TRUE(CheckConfigFiles(*parsed).ok());
}

TEST_F(ConfigFilesTest, TheMetricsListenersOwnKeyMustBePrivateToo) {
  WriteFile(Path("metrics.key"), "-----BEGIN PRIVATE KEY-----\n", 0644);
  WriteFile(Path("airlockd.yaml"),
            ConfigText() + absl::StrReplaceAll("metrics: {listen: \"127.0.0.1:9443\", key_file: DIR/metrics.key, "
                                               "cert_file: DIR/server.crt, scrapers: [prometheus]}\n",
                                               {{"DIR", dir_}}),
            0640);
  absl::StatusOr<ParsedConfig> parsed = LoadConfigFile(Path("airlockd.yaml"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(std::string(CheckConfigFiles(*parsed).message()),
              HasSubstr(absl::StrCat("metrics.key_file: private key \"", Path("metrics.key"),
                                     "\" is accessible by group or others (mode 0644); run chmod 600 ")));
  ASSERT_EQ(::chmod(Path("metrics.key").c_str(), 0600), 0);
  EXPECT_TRUE(CheckConfigFiles(*parsed).ok()) << CheckConfigFiles(*parsed);
}

TEST_F(ConfigFilesTest, KeyOwnedBySomeoneElseIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown a file to another user";
  ASSERT_EQ(::chown(Path("server.key").c_str(), 4242, static_cast<gid_t>(-1)), 0);
  absl::StatusOr<ParsedConfig> parsed = WriteAndLoad();
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(std::string(CheckConfigFiles(*parsed).message()),
              StartsWith(absl::StrCat(Path("airlockd.yaml"), ":3:13: tls.key_file: private key \"",
                                      Path("server.key"), "\" is owned by uid 4242, not by uid 0")));
}

TEST_F(ConfigFilesTest, WritableTrustAnchorsAreRefusedAtTheirPosition) {
  // Any local user could append a CA of their own to the bundle, or swap in an older CRL.
  ASSERT_EQ(::chmod(Path("ca.crt").c_str(), 0666), 0);
  ASSERT_EQ(::chmod(Path("ca.crl").c_str(), 0664), 0);
  absl::StatusOr<ParsedConfig> parsed = WriteAndLoad();
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const std::string message(CheckConfigFiles(*parsed).message());
  EXPECT_THAT(message, HasSubstr(absl::StrCat(Path("airlockd.yaml"), ":4:19: tls.client_ca_file: client CA file ",
                                              Path("ca.crt"), " has mode 0666")));
  EXPECT_THAT(message, HasSubstr(absl::StrCat("tls.crl_files[0]: CRL file ", Path("ca.crl"), " has mode 0664")));
  // Their directory counts as much as the files.
  ASSERT_EQ(::chmod(Path("ca.crt").c_str(), 0644), 0);
  ASSERT_EQ(::chmod(Path("ca.crl").c_str(), 0644), 0);
  EXPECT_TRUE(CheckConfigFiles(*parsed).ok()) << CheckConfigFiles(*parsed);
  ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);
  EXPECT_THAT(std::string(CheckConfigFiles(*parsed).message()),
              HasSubstr(absl::StrCat("tls.cert_file: directory ", dir_, " above certificate file ", Path("server.crt"),
                                     " has mode 0777")));
}

TEST_F(ConfigFilesTest, MissingModelIsRefusedAtItsPosition) {
  ASSERT_EQ(::unlink(Path("model.gguf").c_str()), 0);
  absl::StatusOr<ParsedConfig> parsed = WriteAndLoad();
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(CheckConfigFiles(*parsed).message(),
            absl::StrCat(Path("airlockd.yaml"), ":9:11: models[0].path: cannot open \"",
                         Path("model.gguf"), "\": No such file or directory"));
}

TEST_F(ConfigFilesTest, ModelThatIsADirectoryIsRefused) {
  ASSERT_EQ(::unlink(Path("model.gguf").c_str()), 0);
  ASSERT_EQ(::mkdir(Path("model.gguf").c_str(), 0755), 0);
  absl::StatusOr<ParsedConfig> parsed = WriteAndLoad();
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(CheckConfigFiles(*parsed).message(),
            absl::StrCat(Path("airlockd.yaml"), ":9:11: models[0].path: \"", Path("model.gguf"),
                         "\" is not a regular file"));
}

TEST_F(ConfigFilesTest, MissingTlsFilesAreEachReported) {
  ASSERT_EQ(::unlink(Path("ca.crl").c_str()), 0);
  ASSERT_EQ(::unlink(Path("server.crt").c_str()), 0);
  absl::StatusOr<ParsedConfig> parsed = WriteAndLoad();
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const std::string message(CheckConfigFiles(*parsed).message());
  EXPECT_THAT(message, HasSubstr(absl::StrCat(Path("airlockd.yaml"),
                                              ":2:14: tls.cert_file: cannot open \"")));
  EXPECT_THAT(message, HasSubstr(absl::StrCat(Path("airlockd.yaml"),
                                              ":6:7: tls.crl_files[0]: cannot open \"")));
}

TEST_F(ConfigFilesTest, WorldWritableConfigIsRefused) {
  absl::StatusOr<ParsedConfig> parsed = WriteAndLoad(0666);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(CheckConfigFiles(*parsed).message(),
            absl::StrCat(Path("airlockd.yaml"),
                         ": the configuration file is writable by anyone (mode 0666); run chmod "
                         "o-w ",
                         Path("airlockd.yaml")));
  // A config parsed from text has no file to check.
  absl::StatusOr<ParsedConfig> from_text = ParseConfig(ConfigText(), "text.yaml");
  ASSERT_TRUE(from_text.ok()) << from_text.status();
  EXPECT_TRUE(CheckConfigFiles(*from_text).ok());
}

TEST_F(ConfigFilesTest, LoadErrors) {
  absl::StatusOr<ParsedConfig> missing = LoadConfigFile(Path("nope.yaml"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            absl::StrCat(Path("nope.yaml"), ": cannot open: No such file or directory"));

  absl::StatusOr<ParsedConfig> directory = LoadConfigFile(dir_);
  EXPECT_EQ(directory.status().message(), absl::StrCat(dir_, ": not a regular file"));

  // Just over the limit: refused before parsing, with a hint.
  WriteFile(Path("big.yaml"), std::string(kMaxConfigFileBytes + 1, '#'), 0600);
  absl::StatusOr<ParsedConfig> big = LoadConfigFile(Path("big.yaml"));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(big.status().message()),
              StartsWith(absl::StrCat(Path("big.yaml"), ": larger than 1048576 bytes")));

  // Parse errors name the file as given.
  WriteFile(Path("bad.yaml"), ConfigText() + "bogus: 1\n", 0600);
  absl::StatusOr<ParsedConfig> bad = LoadConfigFile(Path("bad.yaml"));
  EXPECT_THAT(std::string(bad.status().message()),
              StartsWith(absl::StrCat(Path("bad.yaml"), ":11:1: bogus: unknown key")));

  WriteFile(Path("empty.yaml"), "", 0600);
  EXPECT_EQ(LoadConfigFile(Path("empty.yaml")).status().message(),
            absl::StrCat(Path("empty.yaml"),
                         ": the configuration is empty (at least the keys tls and models are "
                         "needed)"));
}

TEST_F(ConfigFilesTest, ExampleConfigParses) {
  // The documented example must stay valid (its files do not exist here: only the text is checked).
  const std::string example =
      airlock::testing::ReadFileOrDie(airlock::testing::SourcePath("deploy/config/airlockd.example.yaml"));
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(example, "airlockd.example.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const DaemonOptions options = ResolveOptions(*parsed);
  EXPECT_FALSE(options.models.empty());
  EXPECT_EQ(options.tls.key_file.rfind("/etc/airlock/", 0), 0u);
  EXPECT_EQ(options.metrics.listen, "10.0.0.5:9464");
  EXPECT_EQ(options.metrics.cert_file, options.tls.cert_file);
  // The package installs it: signed models only, and every file the service writes under
  // /var/lib/airlock (the unit makes everything else read-only).
  EXPECT_TRUE(options.require_signed_models);
  EXPECT_EQ(options.audit.state_dir.rfind("/var/lib/airlock/", 0), 0u);
  EXPECT_EQ(options.audit.signing_key_file.rfind("/var/lib/airlock/", 0), 0u);
  EXPECT_EQ(options.audit.hmac_secret_file.rfind("/var/lib/airlock/", 0), 0u);
}

}  // namespace
}  // namespace airlock::daemon

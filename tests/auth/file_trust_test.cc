// Tests for trust-anchor file checks: writable files, writable or foreign-owned directories, symlinks, sticky dirs.
#include "auth/file_trust.h"

#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "auth/dev_pki.h"
#include "tests/auth/openssl_test_util.h"

namespace airlock::auth {
namespace {

using ::testing::HasSubstr;

class FileTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::chmod(tmp_.path.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
    ASSERT_TRUE(WritePublicFile(ca_, "a CA bundle").ok());
  }
  testing::ScopedTempDir tmp_;
  const std::string dir_ = tmp_.path + "/etc";
  const std::string ca_ = dir_ + "/ca.crt";
};

TEST_F(FileTrustTest, AFileOnlyItsOwnerCanWriteIsTrusted) {
  EXPECT_TRUE(CheckTrustedFile("client CA file", ca_).ok()) << CheckTrustedFile("client CA file", ca_);
}

TEST_F(FileTrustTest, AGroupOrWorldWritableFileIsRefusedWithItsMode) {
  // The attack: another local user appends a CA of their own to the bundle.
  for (const mode_t mode : {0666, 0664, 0646}) {
    ASSERT_EQ(::chmod(ca_.c_str(), mode), 0);
    const absl::Status status = CheckTrustedFile("client CA file", ca_);
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(status.message(), HasSubstr("client CA file " + ca_ + " has mode 0" + std::to_string(mode / 64) +
                                            std::to_string(mode / 8 % 8) + std::to_string(mode % 8)));
    EXPECT_THAT(status.message(), HasSubstr("chmod go-w"));
  }
}

TEST_F(FileTrustTest, AWritableDirectoryAboveIsRefused) {
  // The file is safe but its directory lets anyone replace it.
  ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);
  absl::Status status = CheckTrustedFile("CRL file", ca_);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(), HasSubstr("directory " + dir_ + " above CRL file " + ca_ + " has mode 0777"));
  // Two levels up counts as much.
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(tmp_.path.c_str(), 0775), 0);
  status = CheckTrustedFile("CRL file", ca_);
  EXPECT_THAT(status.message(), HasSubstr("directory " + tmp_.path + " above CRL file"));
}

TEST_F(FileTrustTest, AStickyWorldWritableDirectoryIsAccepted) {
  // As /tmp: others may add names there but cannot rename or delete our file.
  ASSERT_EQ(::chmod(dir_.c_str(), 01777), 0);
  EXPECT_TRUE(CheckTrustedFile("client CA file", ca_).ok());
}

TEST_F(FileTrustTest, ASymlinkInAWritableDirectoryIsRefused) {
  // The target is safe, but whoever can write the directory holding the link can repoint it.
  const std::string open_dir = tmp_.path + "/open";
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0777), 0);
  ASSERT_EQ(::symlink(ca_.c_str(), (open_dir + "/ca.crt").c_str()), 0);
  const absl::Status status = CheckTrustedFile("client CA file", open_dir + "/ca.crt");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(), HasSubstr("directory " + open_dir + " above"));
  // And a safe link to a file in a writable directory: refused along the resolved path.
  const std::string safe_link = dir_ + "/link.crt";
  ASSERT_TRUE(WritePublicFile(open_dir + "/real.crt", "x").ok());
  ASSERT_EQ(::symlink((open_dir + "/real.crt").c_str(), safe_link.c_str()), 0);
  EXPECT_THAT(CheckTrustedFile("client CA file", safe_link).message(), HasSubstr("directory " + open_dir + " above"));
}

TEST_F(FileTrustTest, AFileOrDirectoryOwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file away";
  // uid 0 is trusted, so give them to some other user.
  ASSERT_EQ(::chown(ca_.c_str(), 4242, 4242), 0);
  absl::Status status = CheckTrustedFile("client CA file", ca_);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(), HasSubstr("client CA file " + ca_ + " is owned by uid 4242"));
  ASSERT_EQ(::chown(ca_.c_str(), 0, 0), 0);
  ASSERT_EQ(::chown(dir_.c_str(), 4242, 4242), 0);
  status = CheckTrustedFile("client CA file", ca_);
  EXPECT_THAT(status.message(), HasSubstr("directory " + dir_ + " above client CA file " + ca_ + " is owned by uid 4242"));
}

TEST_F(FileTrustTest, AMissingFileIsNamed) {
  const absl::Status status = CheckTrustedFile("CRL file", dir_ + "/none.crl");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(dir_ + "/none.crl"));
}

}  // namespace
}  // namespace airlock::auth

// MappedFile: maps real files, and refuses missing paths and directories with a named error.
#include "inference/base/mapped_file.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/test_data.h"

namespace airlock {
namespace {

TEST(MappedFileTest, MapsContents) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/f.bin";
  std::ofstream(path, std::ios::binary) << "hello";
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->size(), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*file)->data()), 5), "hello");
}

TEST(MappedFileTest, EmptyFileHasNoData) {
  const std::string path = testing::MakeTempDir() + "/empty";
  std::ofstream(path, std::ios::binary).close();
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->size(), 0u);
}

TEST(MappedFileTest, MissingFileNamesPath) {
  auto file = MappedFile::Open("/nonexistent/model.gguf");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(file.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

TEST(MappedFileTest, DirectoryIsRefused) {
  auto file = MappedFile::Open(testing::MakeTempDir());
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("not a regular file"), std::string::npos);
}

}  // namespace
}  // namespace airlock

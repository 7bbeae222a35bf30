// Locating the shared test data (../shared beside the checkout, or $AIRLOCK_TEST_DATA) and reading
// llama.cpp's reference files. Under CI=true a missing file fails the test instead of skipping it.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace airlock::testing {

// Root of the shared data: $AIRLOCK_TEST_DATA if set, else <source>/../shared.
std::string SharedDir();
// SharedDir() + "/" + relative.
std::string SharedPath(const std::string& relative);
// A file of this source tree, by its path from the repository root (the path CMake configured,
// not __FILE__: a compiler cache may rewrite that to a relative one).
std::string SourcePath(const std::string& relative);
bool RunningInCi();

// Reads a whole file; throws std::runtime_error when it cannot (test code only).
std::string ReadFileOrDie(const std::string& path);
// Parses a JSON Lines file.
std::vector<nlohmann::json> ReadJsonLines(const std::string& path);

// One tokenizer test vector (llama.cpp's test-tokenizer-0 format).
struct TokenizerCase {
  std::string text;
  std::vector<int32_t> expected;
};
std::vector<TokenizerCase> ReadTokenizerVectors(const std::string& inp_path, const std::string& out_path);

// A scratch directory unique to the running test, removed by the caller or left for inspection.
std::string MakeTempDir();

}  // namespace airlock::testing

// Skips the test (or fails it under CI=true) when a shared file is missing. Use at the top of a test.
#define AIRLOCK_REQUIRE_SHARED_FILE(path)                                                   \
  do {                                                                                      \
    if (!::airlock::testing::internal::FileExists(path)) {                                  \
      if (::airlock::testing::RunningInCi()) {                                              \
        FAIL() << "shared test file missing (CI=true): " << (path);                         \
      } else {                                                                              \
        GTEST_SKIP() << "shared test file missing: " << (path)                              \
                     << " (set AIRLOCK_TEST_DATA to the shared data directory)";           \
      }                                                                                     \
    }                                                                                       \
  } while (0)

namespace airlock::testing::internal {
bool FileExists(const std::string& path);
}

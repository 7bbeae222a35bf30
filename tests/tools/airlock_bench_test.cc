// airlock-bench end to end: the memory read-bandwidth test and the tg test's fraction of it, their
// JSON output, and refusals of bad arguments.
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/run_command.h"
#include "tests/support/test_data.h"

namespace airlock {
namespace {

using ::testing::HasSubstr;
using testing::CommandResult;

CommandResult RunBench(std::vector<std::string> args) {
  args.insert(args.begin(), AIRLOCK_BENCH_PATH);
  return testing::RunCommand(args);
}

std::vector<nlohmann::json> JsonLines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    if (end > start) lines.push_back(nlohmann::json::parse(out.substr(start, end - start)));
    start = end + 1;
  }
  return lines;
}

TEST(AirlockBenchTest, MemoryReportsEachThreadCount) {
  CommandResult o = RunBench({"memory", "-t", "1", "-t", "2", "--size-mib", "16", "-r", "2", "--json"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const std::vector<nlohmann::json> lines = JsonLines(o.out);
  ASSERT_EQ(lines.size(), 2u) << o.out;
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["threads"], static_cast<int>(i) + 1);
    EXPECT_EQ(lines[i]["bytes"], 16u << 20);  // 16 MiB splits into whole lines for 1 and 2 threads
    EXPECT_GT(lines[i]["mean_gb_per_s"].get<double>(), 0.0);
    EXPECT_GE(lines[i]["best_gb_per_s"].get<double>(), lines[i]["mean_gb_per_s"].get<double>());
  }
}

TEST(AirlockBenchTest, MemoryRefusesBadArguments) {
  CommandResult zero_threads = RunBench({"memory", "-t", "0", "--size-mib", "1"});
  EXPECT_NE(zero_threads.exit_code, 0);
  EXPECT_THAT(zero_threads.err, HasSubstr("threads must be in [1, 1024], got 0"));
  CommandResult zero_size = RunBench({"memory", "--size-mib", "0"});
  EXPECT_NE(zero_size.exit_code, 0);
  EXPECT_THAT(zero_size.err, HasSubstr("--size-mib"));
  CommandResult no_reps = RunBench({"memory", "-r", "0"});
  EXPECT_NE(no_reps.exit_code, 0);
  EXPECT_THAT(no_reps.err, HasSubstr("--reps"));
}

TEST(AirlockBenchTest, DecodeReportsItsShareOfTheReadBandwidth) {
  const std::string model = testing::SharedPath("models/stories260K-f32.gguf");
  AIRLOCK_REQUIRE_SHARED_FILE(model);
  CommandResult o = RunBench({"-m", model, "-t", "1", "-p", "8", "-n", "8", "-r", "2", "--json"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const std::vector<nlohmann::json> lines = JsonLines(o.out);
  ASSERT_EQ(lines.size(), 2u) << o.out;
  EXPECT_EQ(lines[0]["test"], "pp8");
  EXPECT_FALSE(lines[0].contains("read_gb_per_s"));
  const nlohmann::json& tg = lines[1];
  EXPECT_EQ(tg["test"], "tg8");
  ASSERT_TRUE(tg.contains("decode_weight_gb_per_s")) << tg.dump();
  ASSERT_TRUE(tg.contains("read_gb_per_s")) << tg.dump();
  EXPECT_GT(tg["decode_weight_gb_per_s"].get<double>(), 0.0);
  EXPECT_GT(tg["read_gb_per_s"].get<double>(), 0.0);
  EXPECT_GT(tg["fraction_of_read"].get<double>(), 0.0);

  CommandResult skipped = RunBench({"-m", model, "-t", "1", "-p", "0", "-n", "4", "-r", "1", "--json",
                                    "--no-bandwidth"});
  ASSERT_EQ(skipped.exit_code, 0) << skipped.err;
  const std::vector<nlohmann::json> only_tg = JsonLines(skipped.out);
  ASSERT_EQ(only_tg.size(), 1u) << skipped.out;
  EXPECT_TRUE(only_tg[0].contains("decode_weight_gb_per_s"));
  EXPECT_FALSE(only_tg[0].contains("read_gb_per_s"));
}

}  // namespace
}  // namespace airlock

// gRPC's log lines reach the daemon's log hook, and only gRPC's "Failed accept4" error (the
// listener abandoned, CVE-2023-4785) counts as a dead listener, once.
#include "daemon/grpc_log.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "grpc/support/log.h"
#include "gtest/gtest.h"

namespace airlock::daemon {
namespace {

// One test: the failure is process-wide state that happens once.
TEST(GrpcLogTest, OnlyGrpcsAcceptFailureMarksTheListenerDeadOnce) {
  ForwardGrpcLogs(LogLevel::kInfo);
  std::vector<std::string> actions;
  OnGrpcListenerFailure([&actions](std::string_view line) { actions.emplace_back(line); });

  // Ordinary lines, and the same words at a lower severity or mid-sentence, are only logged.
  gpr_log(GPR_ERROR, "Handshake failed with fatal error SSL_ERROR_SSL");
  HandleGrpcLogLine(LogLevel::kInfo, "tcp_server_posix.cc", 1, "Failed accept4: Too many open files");
  HandleGrpcLogLine(LogLevel::kError, "x.cc", 1, "client said: Failed accept4");
  EXPECT_TRUE(actions.empty());
  EXPECT_EQ(GrpcListenerFailure(), "");

  // gRPC 1.51's own call, through gpr_log and the installed hook.
  gpr_log(GPR_ERROR, "Failed accept4: %s", strerror(EMFILE));
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0], "Failed accept4: Too many open files");
  EXPECT_EQ(GrpcListenerFailure(), "Failed accept4: Too many open files");

  // A second listener failing later changes nothing: the drain has already begun.
  gpr_log(GPR_ERROR, "Failed accept4: %s", strerror(ENFILE));
  EXPECT_EQ(actions.size(), 1u);
  EXPECT_EQ(GrpcListenerFailure(), "Failed accept4: Too many open files");
}

}  // namespace
}  // namespace airlock::daemon

// gRPC log forwarding and the dead-listener check (grpc_log.h).
#include "daemon/grpc_log.h"

#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/support/log.h"

namespace airlock::daemon {
namespace {

struct ListenerWatch {
  absl::Mutex mu;
  std::function<void(std::string_view)> action ABSL_GUARDED_BY(mu);
  std::string failure ABSL_GUARDED_BY(mu);
};

ListenerWatch& Watch() {
  static ListenerWatch* const watch = new ListenerWatch();  // never destroyed: gRPC threads may log at exit
  return *watch;
}

LogLevel LevelOf(gpr_log_severity severity) {
  switch (severity) {
    case GPR_LOG_SEVERITY_DEBUG: return LogLevel::kDebug;
    case GPR_LOG_SEVERITY_INFO: return LogLevel::kInfo;
    case GPR_LOG_SEVERITY_ERROR: return LogLevel::kError;
  }
  return LogLevel::kError;
}

void GrpcLogHook(gpr_log_func_args* args) {
  HandleGrpcLogLine(LevelOf(args->severity), args->file != nullptr ? args->file : "", args->line,
                    args->message != nullptr ? args->message : "");
}

}  // namespace

void HandleGrpcLogLine(LogLevel level, std::string_view file, int line, std::string_view message) {
  Log(level, message, {{"component", "grpc"}, {"source", std::string(file) + ":" + std::to_string(line)}});
  if (level != LogLevel::kError || message.substr(0, kGrpcAcceptFailed.size()) != kGrpcAcceptFailed) return;
  std::function<void(std::string_view)> action;
  {
    ListenerWatch& watch = Watch();
    absl::MutexLock lock(&watch.mu);
    if (!watch.failure.empty()) return;  // one listener's failure is enough; act once
    watch.failure = std::string(message);
    action = std::move(watch.action);
  }
  if (action) action(message);
}

void ForwardGrpcLogs(LogLevel level) {
  // Set, not left to GRPC_VERBOSITY: "NONE" there would hide the line the listener check needs.
  gpr_set_log_verbosity(level == LogLevel::kDebug ? GPR_LOG_SEVERITY_DEBUG : GPR_LOG_SEVERITY_ERROR);
  gpr_set_log_function(&GrpcLogHook);
}

void OnGrpcListenerFailure(std::function<void(std::string_view line)> action) {
  ListenerWatch& watch = Watch();
  absl::MutexLock lock(&watch.mu);
  watch.action = std::move(action);
}

std::string GrpcListenerFailure() {
  ListenerWatch& watch = Watch();
  absl::MutexLock lock(&watch.mu);
  return watch.failure;
}

}  // namespace airlock::daemon

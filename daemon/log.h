// Structured logs: one JSON object per line on stderr, e.g.
//   {"ts":"2026-11-23T10:00:00.123Z","level":"info","msg":"listening","address":"127.0.0.1:7443"}
// so that journald, Loki or a SIEM can parse every field without regexes.
//
// Thread-safety: every function may be called from any thread; lines are never interleaved.
#pragma once

#include <string>
#include <string_view>

#include "nlohmann/json.hpp"

namespace airlock::daemon {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Writes {"ts","level","msg"} plus `fields` (an object; may be null) as one line.
void Log(LogLevel level, std::string_view message, const nlohmann::json& fields = nullptr);

inline void LogInfo(std::string_view message, const nlohmann::json& fields = nullptr) {
  Log(LogLevel::kInfo, message, fields);
}
inline void LogWarning(std::string_view message, const nlohmann::json& fields = nullptr) {
  Log(LogLevel::kWarning, message, fields);
}
inline void LogError(std::string_view message, const nlohmann::json& fields = nullptr) {
  Log(LogLevel::kError, message, fields);
}

// Lines below this level are dropped. Default: kInfo.
void SetLogLevel(LogLevel level);

}  // namespace airlock::daemon

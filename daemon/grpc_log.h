// gRPC's own log lines, routed into airlockd's JSON log (daemon/log.h), and the one line among
// them that means the gRPC listener has stopped accepting connections for good.
//
// Why the log: gRPC 1.51 (Debian 12; CVE-2023-4785, no backport) gives up on a listening socket
// when accept4() fails with anything but EINTR/EAGAIN/ECONNABORTED, e.g. EMFILE once an
// unauthenticated peer has used up the descriptors. It never accepts on it again, and the only
// trace is the GPR_ERROR line "Failed accept4: <strerror>" (src/core/lib/iomgr/tcp_server_posix.cc,
// on_read). The daemon cannot revive the listener; it can notice, stop claiming readiness and
// exit for its service manager to restart it (main.cc).
//
// Thread-safety: ForwardGrpcLogs and OnGrpcListenerFailure from main() before any gRPC object
// exists; GrpcListenerFailure from any thread.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "daemon/log.h"

namespace airlock::daemon {

// What gRPC 1.51 logs, at error severity, when it abandons a listener after accept4() failed.
inline constexpr std::string_view kGrpcAcceptFailed = "Failed accept4";

// Makes gRPC log through Log() (field "component": "grpc"): its errors always, whatever
// GRPC_VERBOSITY says (the listener check depends on them), its info and debug lines when `level`
// is kDebug. Call before the first gRPC object is made: gRPC reads GRPC_VERBOSITY only when
// nothing has set the verbosity yet.
void ForwardGrpcLogs(LogLevel level);

// `action` runs at most once, when gRPC has logged kGrpcAcceptFailed, with that line. It runs on
// the gRPC thread that logged it, possibly with gRPC's locks held: it must not call into gRPC or
// block (set a flag, raise a signal).
void OnGrpcListenerFailure(std::function<void(std::string_view line)> action);

// The line that reported the failure; empty while every gRPC listener still accepts.
std::string GrpcListenerFailure();

// Handles one gRPC log line as ForwardGrpcLogs' hook does (logged, and checked for
// kGrpcAcceptFailed); for tests, which cannot make a real listener fail in-process.
void HandleGrpcLogLine(LogLevel level, std::string_view file, int line, std::string_view message);

}  // namespace airlock::daemon

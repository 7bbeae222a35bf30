// What the Admin API commands (quota, apikey) share: one unary call with the connection, deadline
// and Ctrl-C handling of every client command, and the printing of responses.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "airlock/v1/admin.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tools/airlockctl/client_connection.h"

namespace airlock::ctl {

namespace v1 = ::airlock::v1;

// Calls `method` of the Admin service; on failure prints the error (ReportRpcError) and returns
// its exit code.
template <typename Request, typename Response>
int AdminCall(const ConnectionFlags& flags, const char* name,
              grpc::Status (v1::Admin::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
              const Request& request, Response* response) {
  std::string server;
  std::shared_ptr<grpc::Channel> channel = ConnectOrReport(flags, &server);
  if (channel == nullptr) return kExitLocalError;
  auto stub = v1::Admin::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(CallDeadline(flags, kShortTimeoutSeconds));
  ScopedCancelOnInterrupt cancel_on_interrupt(&ctx);
  const grpc::Status status = ((*stub).*method)(&ctx, request, response);
  if (!status.ok()) return ReportRpcError(name, status, server);
  return kExitOk;
}

// One message as JSON with the API's field names, every field printed.
inline std::string ApiJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) out = "{}";
  return out;
}

// "2026-12-07T21:00:00Z".
inline std::string UtcText(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds), absl::UTCTimeZone());
}

}  // namespace airlock::ctl

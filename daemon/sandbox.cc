// Seccomp network lock-down (libseccomp).
#include "daemon/sandbox.h"

#include <errno.h>
#include <seccomp.h>
#include <sys/socket.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace airlock::daemon {

absl::Status LockDownNetwork() {
  std::unique_ptr<void, void (*)(scmp_filter_ctx)> ctx(seccomp_init(SCMP_ACT_ALLOW), seccomp_release);
  if (ctx == nullptr) return absl::InternalError("seccomp_init failed");
  const auto fail = [](const char* what, int rc) {
    return absl::InternalError(absl::StrCat("seccomp: ", what, ": ", strerror(-rc)));
  };
  // The filter must cover threads gRPC already started, and no-new-privileges is required to
  // install a filter without CAP_SYS_ADMIN.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) {
    if (rc == -EOPNOTSUPP) {
      // libseccomp found the seccomp(2) system call unavailable: only it can filter all threads.
      return absl::FailedPreconditionError(
          "seccomp: the seccomp() system call is not permitted here, and only it can apply the filter to every "
          "thread; a service manager's system-call filter must allow it (systemd: SystemCallFilter=seccomp, as the "
          "packaged airlockd.service does)");
    }
    return fail("TSYNC", rc);
  }
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 1); rc != 0) return fail("NNP", rc);
  const uint32_t deny = SCMP_ACT_ERRNO(EACCES);
  // socket(domain != AF_UNIX, ...)
  if (int rc = seccomp_rule_add(ctx.get(), deny, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX)); rc != 0) {
    return fail("socket", rc);
  }
  // socket(AF_UNIX, type != SOCK_STREAM): a datagram socket could sendto() a named local socket
  // without connect(); a stream socket cannot reach anyone once connect() is gone.
  constexpr scmp_datum_t kTypeMask = 0xF;  // SOCK_NONBLOCK / SOCK_CLOEXEC are flags above it
  if (int rc = seccomp_rule_add(ctx.get(), deny, SCMP_SYS(socket), 1,
                                SCMP_A1(SCMP_CMP_MASKED_EQ, kTypeMask, SOCK_DGRAM));
      rc != 0) {
    return fail("socket(SOCK_DGRAM)", rc);
  }
  if (int rc = seccomp_rule_add(ctx.get(), deny, SCMP_SYS(socket), 1,
                                SCMP_A1(SCMP_CMP_MASKED_EQ, kTypeMask, SOCK_SEQPACKET));
      rc != 0) {
    return fail("socket(SOCK_SEQPACKET)", rc);
  }
  if (int rc = seccomp_rule_add(ctx.get(), deny, SCMP_SYS(socketpair), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX)); rc != 0) {
    return fail("socketpair", rc);
  }
  for (const int call : {SCMP_SYS(connect), SCMP_SYS(bind), SCMP_SYS(listen)}) {
    if (int rc = seccomp_rule_add(ctx.get(), deny, call, 0); rc != 0) return fail("connect/bind/listen", rc);
  }
  for (const int call : {SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register)}) {
    if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), call, 0); rc != 0) return fail("io_uring", rc);
  }
  if (int rc = seccomp_load(ctx.get()); rc != 0) return fail("load", rc);
  return absl::OkStatus();
}

}  // namespace airlock::daemon

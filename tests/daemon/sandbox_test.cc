// Tests of the seccomp network lock-down (daemon/sandbox.h): in a forked child, after LockDownNetwork()
// no new network socket, connect, bind or listen is possible, while AF_UNIX sockets and connections
// accepted on an existing listener keep working.
#include "daemon/sandbox.h"

#include <errno.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/test_data.h"

namespace airlock::daemon {
namespace {

// One property checked in the locked-down child; `run` returns "" when it holds, else what happened.
struct Check {
  std::string name;
  std::function<std::string()> run;
};

std::string ExpectErrno(const char* what, int rc, int expected_errno) {
  if (rc >= 0) return absl::StrCat(what, " succeeded (returned ", rc, ")");
  if (errno != expected_errno) {
    return absl::StrCat(what, " failed with ", strerrorname_np(errno), ", expected ", strerrorname_np(expected_errno));
  }
  return "";
}

sockaddr_un UnixAddress(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  return address;
}

// Waits for `pid` with a deadline; its exit code, 128+signal, or -1 if it was still running (then killed).
int WaitChild(pid_t pid, std::chrono::seconds within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -2;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling interval, bounded by the deadline
  }
}

class LockDownNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = airlock::testing::MakeTempDir(); }
  std::string dir_;
};

TEST_F(LockDownNetworkTest, ForbidsNewNetworkSocketsButKeepsExistingConnections) {
  const std::string listening_path = dir_ + "/listening.sock";
  const std::string bind_path = dir_ + "/bind.sock";
  ASSERT_LT(listening_path.size(), sizeof(sockaddr_un{}.sun_path)) << "temp dir path too long for AF_UNIX";
  int report[2];
  ASSERT_EQ(::pipe(report), 0);

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << strerror(errno);
  if (pid == 0) {
    ::close(report[0]);
    // Everything that must survive the lock-down is set up first, as the daemon does: an AF_UNIX
    // listener (so a refused connect is the filter's doing, not a missing peer), a TCP listener
    // with a connection already queued, and a thread started before the filter (TSYNC).
    const int unix_listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
    const sockaddr_un listening = UnixAddress(listening_path);
    const int tcp_listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in loopback{};
    loopback.sin_family = AF_INET;
    loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(loopback);
    const int tcp_client = ::socket(AF_INET, SOCK_STREAM, 0);
    if (unix_listener < 0 || tcp_listener < 0 || tcp_client < 0 ||
        ::bind(unix_listener, reinterpret_cast<const sockaddr*>(&listening), sizeof(listening)) != 0 ||
        ::listen(unix_listener, 4) != 0 ||
        ::bind(tcp_listener, reinterpret_cast<const sockaddr*>(&loopback), sizeof(loopback)) != 0 ||
        ::listen(tcp_listener, 4) != 0 ||
        ::getsockname(tcp_listener, reinterpret_cast<sockaddr*>(&loopback), &length) != 0 ||
        ::connect(tcp_client, reinterpret_cast<const sockaddr*>(&loopback), sizeof(loopback)) != 0) {
      const std::string message = absl::StrCat("set-up before the lock-down failed: ", strerror(errno), "\n");
      (void)!::write(report[1], message.data(), message.size());
      ::_exit(100);
    }
    std::atomic<int> stage{0};
    int thread_errno = 0;
    int thread_rc = 0;
    std::thread early([&] {
      while (stage.load() == 0) std::this_thread::yield();
      thread_rc = ::socket(AF_INET6, SOCK_DGRAM, 0);
      thread_errno = errno;
      stage.store(2);
    });

    const absl::Status locked = LockDownNetwork();
    if (!locked.ok()) {
      const std::string message = absl::StrCat("LockDownNetwork: ", locked.ToString(), "\n");
      (void)!::write(report[1], message.data(), message.size());
      stage.store(1);
      early.join();
      ::_exit(101);
    }
    stage.store(1);
    early.join();

    const std::vector<Check> checks = {
        {"socket(AF_INET)", [] { return ExpectErrno("socket(AF_INET, SOCK_STREAM)", ::socket(AF_INET, SOCK_STREAM, 0), EACCES); }},
        {"socket(AF_INET6)", [] { return ExpectErrno("socket(AF_INET6, SOCK_DGRAM)", ::socket(AF_INET6, SOCK_DGRAM, 0), EACCES); }},
        {"socket(AF_NETLINK)",
         [] { return ExpectErrno("socket(AF_NETLINK)", ::socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE), EACCES); }},
        {"socket(AF_PACKET)", [] { return ExpectErrno("socket(AF_PACKET)", ::socket(AF_PACKET, SOCK_RAW, 0), EACCES); }},
        {"socketpair(AF_INET)",
         [] {
           int fds[2];
           return ExpectErrno("socketpair(AF_INET)", ::socketpair(AF_INET, SOCK_STREAM, 0, fds), EACCES);
         }},
        {"thread started before the filter",
         [&] {
           errno = thread_errno;
           return ExpectErrno("socket(AF_INET6) on an earlier thread", thread_rc, EACCES);
         }},
        {"socket(AF_UNIX) works",
         [] {
           const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
           if (fd < 0) return absl::StrCat("socket(AF_UNIX) failed: ", strerror(errno));
           ::close(fd);
           return std::string();
         }},
        {"socket(AF_UNIX, SOCK_DGRAM)",
         [] { return ExpectErrno("socket(AF_UNIX, SOCK_DGRAM)", ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), EACCES); }},
        {"socket(AF_UNIX, SOCK_SEQPACKET)",
         [] { return ExpectErrno("socket(AF_UNIX, SOCK_SEQPACKET)", ::socket(AF_UNIX, SOCK_SEQPACKET, 0), EACCES); }},
        {"socketpair(AF_UNIX) works",
         [] {
           int fds[2];
           if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return absl::StrCat("socketpair(AF_UNIX): ", strerror(errno));
           const bool echoed = ::write(fds[0], "x", 1) == 1 && [&] {
             char c = 0;
             return ::read(fds[1], &c, 1) == 1 && c == 'x';
           }();
           ::close(fds[0]);
           ::close(fds[1]);
           return echoed ? std::string() : std::string("no data through the AF_UNIX pair");
         }},
        {"connect(AF_UNIX) to a live listener",
         [&] {
           const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
           if (fd < 0) return absl::StrCat("socket(AF_UNIX) failed: ", strerror(errno));
           const std::string error =
               ExpectErrno("connect(AF_UNIX)", ::connect(fd, reinterpret_cast<const sockaddr*>(&listening), sizeof(listening)), EACCES);
           ::close(fd);
           return error;
         }},
        {"bind(AF_UNIX)",
         [&] {
           const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
           if (fd < 0) return absl::StrCat("socket(AF_UNIX) failed: ", strerror(errno));
           const sockaddr_un address = UnixAddress(bind_path);
           const std::string error =
               ExpectErrno("bind(AF_UNIX)", ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), EACCES);
           ::close(fd);
           return error;
         }},
        {"listen()",
         [] {
           const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
           if (fd < 0) return absl::StrCat("socket(AF_UNIX) failed: ", strerror(errno));
           const std::string error = ExpectErrno("listen(AF_UNIX)", ::listen(fd, 1), EACCES);
           ::close(fd);
           return error;
         }},
        {"io_uring_setup", [] { return ExpectErrno("io_uring_setup", static_cast<int>(::syscall(SYS_io_uring_setup, 1, nullptr)), ENOSYS); }},
        {"accept and read/write on the existing listener",
         [&] {
           const int accepted = ::accept(tcp_listener, nullptr, nullptr);
           if (accepted < 0) return absl::StrCat("accept: ", strerror(errno));
           char c = 0;
           const bool echoed = ::write(tcp_client, "y", 1) == 1 && ::read(accepted, &c, 1) == 1 && c == 'y' &&
                               ::write(accepted, "z", 1) == 1 && ::read(tcp_client, &c, 1) == 1 && c == 'z';
           ::close(accepted);
           return echoed ? std::string() : absl::StrCat("no data through the accepted connection: ", strerror(errno));
         }},
    };
    // Exit code: 0 when every check held, else 1 + the index of the first that did not; each
    // failure is also written to the pipe for the parent's message.
    int first_failure = -1;
    for (size_t i = 0; i < checks.size(); ++i) {
      const std::string error = checks[i].run();
      if (error.empty()) continue;
      const std::string line = absl::StrCat(checks[i].name, ": ", error, "\n");
      (void)!::write(report[1], line.data(), line.size());
      if (first_failure < 0) first_failure = static_cast<int>(i);
    }
    ::_exit(first_failure < 0 ? 0 : 1 + first_failure);
  }

  ::close(report[1]);
  const int code = WaitChild(pid, std::chrono::seconds(30));
  std::string details;
  char buffer[512];
  for (ssize_t n; (n = ::read(report[0], buffer, sizeof(buffer))) > 0;) details.append(buffer, static_cast<size_t>(n));
  ::close(report[0]);
  EXPECT_EQ(code, 0) << "child exit code " << code << " (-1: did not finish within 30 s)\n" << details;

  // The parent, which never called LockDownNetwork, is unaffected: the filter is per process tree.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0) << strerror(errno);
  if (fd >= 0) ::close(fd);
}

}  // namespace
}  // namespace airlock::daemon

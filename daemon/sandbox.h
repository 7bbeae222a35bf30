// The daemon's network lock-down: once it listens, it needs no new network sockets and never
// connects anywhere, so a seccomp filter (inherited by every thread) makes both impossible. A
// compromised process then cannot exfiltrate data over the network even on a host whose firewall
// would let it.
//
// Thread-safety: call once, from any thread; the filter applies to all threads (TSYNC).
#pragma once

#include "absl/status/status.h"

namespace airlock::daemon {

// Forbids, with EACCES: socket() for every address family except AF_UNIX, and AF_UNIX datagram /
// seqpacket sockets (sendto() needs no connect()); socketpair() except AF_UNIX; connect(), bind(),
// listen(); and io_uring (ENOSYS), which could issue the same operations unfiltered.
// Accepting connections on the existing listener and reading/writing them keep working.
absl::Status LockDownNetwork();

}  // namespace airlock::daemon

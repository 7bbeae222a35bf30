// Opening the daemon's state store.
#include "daemon/state_store.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/log.h"

namespace airlock::daemon {

absl::StatusOr<std::unique_ptr<audit::StateDb>> OpenStateStore(const std::string& state_dir) {
  struct stat st;
  if (::stat(state_dir.c_str(), &st) != 0 && ::mkdir(state_dir.c_str(), 0700) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("audit.state_dir: cannot create ", state_dir, ": ", std::strerror(errno)));
  }
  audit::StateDbOptions options;
  // RocksDB's warnings and errors (e.g. "No space left on device") go to our log, not to a file on
  // the state disk (which may be the full one).
  options.diagnostics = [](std::string_view line) { LogWarning("rocksdb", {{"line", std::string(line)}}); };
  absl::StatusOr<std::unique_ptr<audit::StateDb>> db = audit::StateDb::Open(state_dir, options);
  if (!db.ok()) {
    return absl::Status(db.status().code(), absl::StrCat("audit.state_dir ", state_dir, ": ", db.status().message()));
  }
  return db;
}

}  // namespace airlock::daemon

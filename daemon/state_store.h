// The daemon's state store: one RocksDB instance in audit.state_dir, opened once at start and
// shared by what keeps durable state — the audit log (its own column families) and quota usage
// and overrides (the `quota` column family). The daemon owns it; both borrow it.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "audit/state_db.h"

namespace airlock::daemon {

// Creates `state_dir` (mode 0700) when absent and opens the store in it, with RocksDB's warnings
// and errors forwarded to the daemon's log rather than written to a file on the state disk.
// Errors name audit.state_dir.
absl::StatusOr<std::unique_ptr<audit::StateDb>> OpenStateStore(const std::string& state_dir);

}  // namespace airlock::daemon

// Quota usage kept in the daemon's RocksDB state (the `quota` column family), so that budgets
// survive restarts and crashes (docs/quotas.md, "Accounting").
//
// Thread-safety: Save and LoadAll may be called from any thread.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "audit/state_db.h"
#include "auth/quota.h"

namespace airlock::daemon {

class StateDbUsageStore final : public auth::UsageStore {
 public:
  // `db` must outlive the store.
  explicit StateDbUsageStore(audit::StateDb* db) : db_(db) {}

  // One unsynced write (durable against a process crash at once, and on disk with the next
  // synced audit record, which shares the write-ahead log).
  absl::Status Save(std::string_view identity, std::string_view value) override;
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadAll() const override;
  // One synced write (an administrator's decision survives a power loss).
  absl::Status SaveOverride(std::string_view identity, std::string_view value) override;
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadOverrides() const override;

 private:
  audit::StateDb* const db_;
};

}  // namespace airlock::daemon

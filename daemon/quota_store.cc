// Quota usage in the state store: key "usage/" + identity, value auth::EncodeUsage; overrides:
// key "override/" + identity, value a serialized config QuotaLimits.
#include "daemon/quota_store.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "inference/base/status.h"

namespace airlock::daemon {
namespace {

constexpr std::string_view kUsagePrefix = "usage/";
constexpr std::string_view kOverridePrefix = "override/";

// Puts (or, for an empty value, deletes) prefix + identity.
absl::Status Write(audit::StateDb& db, std::string_view prefix, std::string_view identity, std::string_view value,
                   bool sync) {
  rocksdb::WriteBatch batch;
  const std::string key = absl::StrCat(ToAbsl(prefix), ToAbsl(identity));
  const rocksdb::Status op = value.empty() ? batch.Delete(db.quota(), key)
                                           : batch.Put(db.quota(), key, audit::ToSlice(value));
  if (!op.ok()) return audit::FromRocksDb(op, absl::StatusCode::kInternal, "quota store");
  return db.Write(&batch, sync);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadPrefix(audit::StateDb& db,
                                                                           std::string_view prefix) {
  std::vector<std::pair<std::string, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(db.db()->NewIterator(rocksdb::ReadOptions(), db.quota()));
  for (it->Seek(audit::ToSlice(prefix)); it->Valid() && it->key().starts_with(audit::ToSlice(prefix)); it->Next()) {
    const std::string_view key = audit::ToStringView(it->key());
    out.emplace_back(std::string(key.substr(prefix.size())), std::string(audit::ToStringView(it->value())));
  }
  AIRLOCK_RETURN_IF_ERROR(audit::FromRocksDb(it->status(), absl::StatusCode::kUnavailable,
                                             absl::StrCat("quota store: reading ", ToAbsl(prefix))));
  return out;
}

}  // namespace

absl::Status StateDbUsageStore::Save(std::string_view identity, std::string_view value) {
  return Write(*db_, kUsagePrefix, identity, value, /*sync=*/false);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> StateDbUsageStore::LoadAll() const {
  return LoadPrefix(*db_, kUsagePrefix);
}

absl::Status StateDbUsageStore::SaveOverride(std::string_view identity, std::string_view value) {
  return Write(*db_, kOverridePrefix, identity, value, /*sync=*/true);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> StateDbUsageStore::LoadOverrides() const {
  return LoadPrefix(*db_, kOverridePrefix);
}

}  // namespace airlock::daemon

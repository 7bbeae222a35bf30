// Quota usage in the state store: key "usage/" + identity, value auth::EncodeUsage.
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

}  // namespace

absl::Status StateDbUsageStore::Save(std::string_view identity, std::string_view value) {
  rocksdb::WriteBatch batch;
  const std::string key = absl::StrCat(ToAbsl(kUsagePrefix), ToAbsl(identity));
  if (rocksdb::Status put = batch.Put(db_->quota(), key, audit::ToSlice(value)); !put.ok()) {
    return audit::FromRocksDb(put, absl::StatusCode::kInternal, "quota usage");
  }
  return db_->Write(&batch, /*sync=*/false);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> StateDbUsageStore::LoadAll() const {
  std::vector<std::pair<std::string, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(rocksdb::ReadOptions(), db_->quota()));
  for (it->Seek(audit::ToSlice(kUsagePrefix)); it->Valid() && it->key().starts_with(audit::ToSlice(kUsagePrefix));
       it->Next()) {
    const std::string_view key = audit::ToStringView(it->key());
    out.emplace_back(std::string(key.substr(kUsagePrefix.size())), std::string(audit::ToStringView(it->value())));
  }
  AIRLOCK_RETURN_IF_ERROR(audit::FromRocksDb(it->status(), absl::StatusCode::kUnavailable, "quota usage: reading"));
  return out;
}

}  // namespace airlock::daemon

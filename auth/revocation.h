// Certificate revocation that fails closed. gRPC 1.51's own CRL directory accepts everyone when a
// CRL is missing and never re-reads a changed one, so Airlock loads CRLs itself: every CA in the
// client CA bundle must have a CRL signed by it and not past its nextUpdate, or loading fails.
//
// Thread-safety: a RevocationList is immutable once created; RevocationChecker swaps the current
// list atomically and may be used from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace airlock::auth {

class RevocationList {
 public:
  // ca_bundle_pem: the client CA bundle (one or more certificates). crl_pems: CRL files' contents
  // (a file may hold several CRLs). Errors name the CA without a CRL, the CRL whose signature does
  // not verify against any CA, or the CRL that expired (with its nextUpdate).
  static absl::StatusOr<std::shared_ptr<const RevocationList>> Create(
      const std::string& ca_bundle_pem, const std::vector<std::string>& crl_pems, absl::Time now);
  // As Create, reading the files; errors name the file.
  static absl::StatusOr<std::shared_ptr<const RevocationList>> Load(
      const std::string& ca_bundle_file, const std::vector<std::string>& crl_files, absl::Time now);

  ~RevocationList();

  // OK when the leaf certificate (PEM) is not revoked by its issuer's CRL and that CRL is still
  // current at `now`. PERMISSION_DENIED naming serial and revocation time when revoked;
  // FAILED_PRECONDITION when the issuer's CRL expired or the issuer is unknown.
  absl::Status Check(const std::string& leaf_cert_pem, absl::Time now) const;

  // The earliest nextUpdate among the CRLs (for logs and metrics).
  absl::Time earliest_next_update() const;

 private:
  struct Impl;
  explicit RevocationList(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The list in force; the daemon swaps in a new one on SIGHUP after it loaded successfully.
class RevocationChecker {
 public:
  explicit RevocationChecker(std::shared_ptr<const RevocationList> list) : list_(std::move(list)) {}
  void Replace(std::shared_ptr<const RevocationList> list) ABSL_LOCKS_EXCLUDED(mutex_);
  std::shared_ptr<const RevocationList> current() const ABSL_LOCKS_EXCLUDED(mutex_);
  absl::Status Check(const std::string& leaf_cert_pem, absl::Time now) const;

 private:
  mutable absl::Mutex mutex_;
  std::shared_ptr<const RevocationList> list_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace airlock::auth

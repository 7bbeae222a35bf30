// Certificate revocation that fails closed. gRPC 1.51's own CRL directory accepts everyone when a
// CRL is missing and never re-reads a changed one, so Airlock loads CRLs itself: every CA in the
// client CA bundle must have a CRL signed by it and not past its nextUpdate, or loading fails.
//
// A CRL never goes backwards: RevocationChecker::ReplaceIfNotOlder refuses a list in which a CA's
// CRL is older than the one in use (lower crlNumber, a lost crlNumber, the same number with other
// contents, or without numbers an older thisUpdate), since an older CRL un-revokes certificates.
//
// Thread-safety: a RevocationList is immutable once created; RevocationChecker swaps the current
// list atomically and may be used from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
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

  // What Check needs from a leaf once its issuer is known: found once per certificate (parsing and
  // a signature check), then remembered by RevocationChecker.
  struct Leaf {
    std::string issuer_fingerprint;  // SHA-256 of the issuing CA certificate's DER, lowercase hex
    std::string issuer_subject;      // that CA's subject, RFC 2253
    std::string serial;              // uppercase hex
  };
  // The CA of this list that signed `leaf_cert_pem`, and its serial. FAILED_PRECONDITION when no
  // CA of the list issued it; INVALID_ARGUMENT when it does not parse.
  absl::StatusOr<Leaf> Locate(const std::string& leaf_cert_pem) const;
  // Check() for a located leaf. FAILED_PRECONDITION when its issuer is not in this list.
  absl::Status CheckLeaf(const Leaf& leaf, absl::Time now) const;
  // Whether the leaf's issuer (by certificate fingerprint) is a CA of this list.
  bool Knows(const Leaf& leaf) const;

  // OK when no CA's CRL here is older than that CA's CRL in `current` (CAs matched by subject and
  // public key; a CA new to this list is not compared). FAILED_PRECONDITION naming the CA and both
  // CRLs' crlNumber or thisUpdate otherwise.
  absl::Status CheckNotOlderThan(const RevocationList& current) const;

  // Whether the two lists hold the same CAs and the same CRLs (a watch that found nothing new).
  bool SameAs(const RevocationList& other) const;

 private:
  struct Impl;
  explicit RevocationList(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The list in force; the daemon swaps in a new one (SIGHUP, or its tls.watch_interval re-read)
// after it loaded successfully and is not older than the current one.
class RevocationChecker {
 public:
  explicit RevocationChecker(std::shared_ptr<const RevocationList> list) : list_(std::move(list)) {}
  // Unconditional swap (tests, and a first list).
  void Replace(std::shared_ptr<const RevocationList> list) ABSL_LOCKS_EXCLUDED(mutex_);
  // Swaps in `list` unless one of its CRLs is older than the one in use (list->CheckNotOlderThan),
  // checked and swapped under one lock so that two reloaders cannot interleave. The error says why
  // and the current list stays.
  absl::Status ReplaceIfNotOlder(std::shared_ptr<const RevocationList> list) ABSL_LOCKS_EXCLUDED(mutex_);
  std::shared_ptr<const RevocationList> current() const ABSL_LOCKS_EXCLUDED(mutex_);
  // The current list's verdict on the certificate. Cheap enough for every call: the issuer and
  // serial of the last few hundred certificates are remembered (keyed by the PEM bytes), so a
  // known certificate costs a hash lookup, not a parse and a signature check.
  // `located`, when given, receives the certificate's issuing CA and serial (when it was found).
  absl::Status Check(const std::string& leaf_cert_pem, absl::Time now,
                     RevocationList::Leaf* located = nullptr) const ABSL_LOCKS_EXCLUDED(cache_mutex_);

 private:
  static constexpr size_t kMaxCachedLeaves = 1024;
  mutable absl::Mutex mutex_;
  std::shared_ptr<const RevocationList> list_ ABSL_GUARDED_BY(mutex_);
  mutable absl::Mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, RevocationList::Leaf> leaves_ ABSL_GUARDED_BY(cache_mutex_);
};

}  // namespace airlock::auth

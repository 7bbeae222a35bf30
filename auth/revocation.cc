// Fail-closed CRL checking: every client CA must have a current CRL signed by it, checked per handshake.
#include "auth/revocation.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "auth/dev_pki.h"
#include "auth/openssl_util.h"
#include "inference/base/status.h"

namespace airlock::auth {
namespace {

using ossl::NameToString;
using ossl::TimeText;
using ossl::ToTime;
using ossl::X509CrlPtr;
using ossl::X509Ptr;

// Every CRL of a CRL file's contents; INVALID_ARGUMENT when a block is malformed or there is none.
absl::StatusOr<std::vector<X509CrlPtr>> ParseCrls(const std::string& pem) {
  AIRLOCK_ASSIGN_OR_RETURN(std::vector<X509CrlPtr> crls, ossl::ParseCrls(pem));
  if (crls.empty()) return absl::InvalidArgumentError("holds no CRL");
  return crls;
}

// Whether `crl` names `ca` as its issuer: same subject, and when the CRL carries an authority
// key id, the CA's subject key id (two CAs may share a name).
bool CrlNamesIssuer(X509_CRL* crl, X509* ca) {
  if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) != 0) return false;
  auto* akid = static_cast<AUTHORITY_KEYID*>(
      X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, nullptr, nullptr));
  bool match = true;
  if (akid != nullptr && akid->keyid != nullptr) {
    const ASN1_OCTET_STRING* skid = X509_get0_subject_key_id(ca);
    match = skid != nullptr && ASN1_OCTET_STRING_cmp(akid->keyid, skid) == 0;
  }
  AUTHORITY_KEYID_free(akid);
  return match;
}

}  // namespace

struct RevocationList::Impl {
  struct Authority {
    X509Ptr ca;
    std::string subject;
    absl::Time this_update;
    absl::Time next_update;
    std::map<std::string, absl::Time> revoked;  // serial hex -> revocation time
  };
  std::vector<Authority> authorities;
};

RevocationList::RevocationList(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RevocationList::~RevocationList() = default;

absl::StatusOr<std::shared_ptr<const RevocationList>> RevocationList::Create(
    const std::string& ca_bundle_pem, const std::vector<std::string>& crl_pems, absl::Time now) {
  auto impl = std::make_unique<Impl>();
  AIRLOCK_ASSIGN_OR_RETURN(std::vector<X509Ptr> bundle, ossl::ParseCertificates(ca_bundle_pem));
  for (X509Ptr& cert : bundle) {
    // Only CA certificates can issue client certificates that OpenSSL's chain check accepts.
    if (X509_check_ca(cert.get()) == 0) continue;
    Impl::Authority authority;
    authority.subject = NameToString(X509_get_subject_name(cert.get()));
    authority.this_update = absl::InfinitePast();
    authority.ca = std::move(cert);
    impl->authorities.push_back(std::move(authority));
  }
  if (impl->authorities.empty()) {
    return absl::InvalidArgumentError("the client CA bundle holds no CA certificate");
  }

  for (size_t file = 0; file < crl_pems.size(); ++file) {
    absl::StatusOr<std::vector<X509CrlPtr>> crls = ParseCrls(crl_pems[file]);
    if (!crls.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("CRL input ", file + 1, ": ", crls.status().message()));
    }
    for (X509CrlPtr& crl : *crls) {
      const std::string issuer = NameToString(X509_CRL_get_issuer(crl.get()));
      Impl::Authority* owner = nullptr;
      for (Impl::Authority& authority : impl->authorities) {
        if (CrlNamesIssuer(crl.get(), authority.ca.get()) &&
            X509_CRL_verify(crl.get(), X509_get0_pubkey(authority.ca.get())) == 1) {
          owner = &authority;
          break;
        }
        ERR_clear_error();
      }
      if (owner == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "CRL issued by \"", issuer, "\" is not signed by any CA in the client CA bundle"));
      }
      AIRLOCK_ASSIGN_OR_RETURN(absl::Time this_update, ToTime(X509_CRL_get0_lastUpdate(crl.get())));
      if (this_update > now) {
        return absl::InvalidArgumentError(absl::StrCat("CRL of ", owner->subject,
                                                       " is not valid before ",
                                                       TimeText(this_update)));
      }
      // A CRL without nextUpdate would never expire: fail closed on it.
      const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl.get());
      if (next == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("CRL of ", owner->subject, " has no nextUpdate"));
      }
      AIRLOCK_ASSIGN_OR_RETURN(absl::Time next_update, ToTime(next));
      // Several CRLs for one CA (an old file left beside a new one): the newest wins, and only
      // its nextUpdate counts (checked below).
      if (this_update <= owner->this_update) continue;
      owner->this_update = this_update;
      owner->next_update = next_update;
      owner->revoked.clear();
      STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
      for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
        const X509_REVOKED* entry = sk_X509_REVOKED_value(revoked, i);
        absl::StatusOr<absl::Time> when = ToTime(X509_REVOKED_get0_revocationDate(entry));
        absl::StatusOr<std::string> serial = ossl::SerialHex(X509_REVOKED_get0_serialNumber(entry));
        if (!serial.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("a CRL entry's serial cannot be read: ", serial.status().message()));
        }
        owner->revoked[*serial] = when.ok() ? *when : absl::InfinitePast();
      }
    }
  }
  for (const Impl::Authority& authority : impl->authorities) {
    if (authority.this_update == absl::InfinitePast()) {
      return absl::InvalidArgumentError(
          absl::StrCat("no CRL for CA ", authority.subject,
                       " (every client CA needs one; an empty CRL revokes nothing)"));
    }
    if (authority.next_update <= now) {
      return absl::FailedPreconditionError(absl::StrCat(
          "CRL of ", authority.subject, " expired at ", TimeText(authority.next_update)));
    }
    // Fill OpenSSL's per-certificate caches now, so that the concurrent Check()s only read.
    X509_check_purpose(authority.ca.get(), -1, 0);
  }
  return std::shared_ptr<const RevocationList>(new RevocationList(std::move(impl)));
}

absl::StatusOr<std::shared_ptr<const RevocationList>> RevocationList::Load(
    const std::string& ca_bundle_file, const std::vector<std::string>& crl_files, absl::Time now) {
  AIRLOCK_ASSIGN_OR_RETURN(std::string bundle, ReadTextFile(ca_bundle_file));
  std::vector<std::string> crls;
  for (const std::string& file : crl_files) {
    AIRLOCK_ASSIGN_OR_RETURN(std::string text, ReadTextFile(file));
    // Parsed alone first so that a broken file is named by its path, not its position.
    absl::StatusOr<std::vector<X509CrlPtr>> parsed = ParseCrls(text);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", parsed.status().message()));
    }
    crls.push_back(std::move(text));
  }
  absl::StatusOr<std::shared_ptr<const RevocationList>> list = Create(bundle, crls, now);
  if (!list.ok()) {
    return absl::Status(list.status().code(),
                        absl::StrCat(ca_bundle_file, ": ", list.status().message()));
  }
  return list;
}

absl::Status RevocationList::Check(const std::string& leaf_cert_pem, absl::Time now) const {
  absl::StatusOr<X509Ptr> parsed = ossl::ParseCertificate(leaf_cert_pem, "the client");
  if (!parsed.ok()) return absl::InvalidArgumentError("cannot parse the client certificate");
  const X509Ptr leaf = *std::move(parsed);
  const Impl::Authority* issuer = nullptr;
  for (const Impl::Authority& authority : impl_->authorities) {
    // Name and key identifiers first (cheap), then the signature: the CRL that applies is the
    // one of the CA that really signed this certificate.
    if (X509_check_issued(authority.ca.get(), leaf.get()) == X509_V_OK &&
        X509_verify(leaf.get(), X509_get0_pubkey(authority.ca.get())) == 1) {
      issuer = &authority;
      break;
    }
  }
  ERR_clear_error();
  if (issuer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("issuer ", NameToString(X509_get_issuer_name(leaf.get())),
                     " of the client certificate has no CRL loaded"));
  }
  if (now >= issuer->next_update) {
    return absl::FailedPreconditionError(
        absl::StrCat("CRL of ", issuer->subject, " expired at ", TimeText(issuer->next_update),
                     "; refusing every certificate it covers until a current CRL is loaded"));
  }
  // A serial that cannot be read is refused: revocation fails closed.
  absl::StatusOr<std::string> leaf_serial = ossl::SerialHex(X509_get0_serialNumber(leaf.get()));
  if (!leaf_serial.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read the client certificate's serial: ", leaf_serial.status().message()));
  }
  const std::string& serial = *leaf_serial;
  auto it = issuer->revoked.find(serial);
  if (it != issuer->revoked.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("certificate serial ", serial, " revoked at ", TimeText(it->second)));
  }
  return absl::OkStatus();
}

absl::Time RevocationList::earliest_next_update() const {
  absl::Time earliest = absl::InfiniteFuture();
  for (const Impl::Authority& authority : impl_->authorities) {
    earliest = std::min(earliest, authority.next_update);
  }
  return earliest;
}

void RevocationChecker::Replace(std::shared_ptr<const RevocationList> list) {
  absl::MutexLock lock(&mutex_);
  list_ = std::move(list);
}

std::shared_ptr<const RevocationList> RevocationChecker::current() const {
  absl::MutexLock lock(&mutex_);
  return list_;
}

absl::Status RevocationChecker::Check(const std::string& leaf_cert_pem, absl::Time now) const {
  // The list is copied out so that a slow check never holds the lock against Replace().
  std::shared_ptr<const RevocationList> list = current();
  if (list == nullptr) {
    return absl::FailedPreconditionError("no revocation list loaded");
  }
  return list->Check(leaf_cert_pem, now);
}

}  // namespace airlock::auth

// Fail-closed CRL checking: every client CA must have a current CRL signed by it, checked per handshake.
#include "auth/revocation.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
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

// SHA-256 of a DER encoding, hex.
std::string Sha256Hex(const unsigned char* digest, unsigned int length) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), length));
}

absl::StatusOr<std::string> CertificateFingerprint(X509* cert) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (X509_digest(cert, EVP_sha256(), digest, &length) != 1) return ossl::OpenSslError("X509_digest");
  return Sha256Hex(digest, length);
}

absl::StatusOr<std::string> CrlFingerprint(X509_CRL* crl) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (X509_CRL_digest(crl, EVP_sha256(), digest, &length) != 1) return ossl::OpenSslError("X509_CRL_digest");
  return Sha256Hex(digest, length);
}

// The CRL's crlNumber (uppercase hex, as SerialHex), nullopt when it has none. A negative or
// repeated crlNumber is malformed (RFC 5280 5.2.3: a non-negative integer, once).
absl::StatusOr<std::optional<std::string>> CrlNumber(X509_CRL* crl) {
  int critical = 0;
  auto* number = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl, NID_crl_number, &critical, nullptr));
  if (number == nullptr) {
    ERR_clear_error();
    if (critical == -1) return std::optional<std::string>();
    return absl::InvalidArgumentError("its crlNumber extension is malformed or repeated");
  }
  absl::StatusOr<std::string> hex = ossl::SerialHex(number);
  ASN1_INTEGER_free(number);
  AIRLOCK_RETURN_IF_ERROR(hex.status());
  if (hex->empty() || hex->front() == '-') return absl::InvalidArgumentError("its crlNumber is negative");
  return std::optional<std::string>(*std::move(hex));
}

// Orders two crlNumbers written by SerialHex (no leading zero octets, non-negative): <0, 0, >0.
int CompareCrlNumbers(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
  return a.compare(b);
}

std::string CrlNumberText(const std::optional<std::string>& number) {
  return number.has_value() ? absl::StrCat("crlNumber 0x", *number) : "no crlNumber";
}

}  // namespace

struct RevocationList::Impl {
  struct Authority {
    X509Ptr ca;
    std::string subject;
    std::string fingerprint;  // SHA-256 of the CA certificate's DER
    absl::Time this_update;
    absl::Time next_update;
    std::optional<std::string> crl_number;  // hex; nullopt: the CRL has none
    std::string crl_fingerprint;            // SHA-256 of the CRL's DER
    std::map<std::string, absl::Time> revoked;  // serial hex -> revocation time
  };
  std::vector<Authority> authorities;

  const Authority* Find(const std::string& fingerprint) const {
    for (const Authority& authority : authorities) {
      if (authority.fingerprint == fingerprint) return &authority;
    }
    return nullptr;
  }
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
    AIRLOCK_ASSIGN_OR_RETURN(authority.fingerprint, CertificateFingerprint(cert.get()));
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
      absl::StatusOr<std::optional<std::string>> number = CrlNumber(crl.get());
      if (!number.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("CRL of ", owner->subject, ": ", number.status().message()));
      }
      // Several CRLs for one CA (an old file left beside a new one): the newest wins (the higher
      // crlNumber when both have one, else the later thisUpdate), and only its nextUpdate counts
      // (checked below).
      if (owner->this_update != absl::InfinitePast()) {
        const bool newer = number->has_value() && owner->crl_number.has_value()
                               ? CompareCrlNumbers(**number, *owner->crl_number) > 0
                               : this_update > owner->this_update;
        if (!newer) continue;
      }
      AIRLOCK_ASSIGN_OR_RETURN(owner->crl_fingerprint, CrlFingerprint(crl.get()));
      owner->crl_number = *std::move(number);
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

absl::StatusOr<RevocationList::Leaf> RevocationList::Locate(const std::string& leaf_cert_pem) const {
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
  // A serial that cannot be read is refused: revocation fails closed.
  absl::StatusOr<std::string> leaf_serial = ossl::SerialHex(X509_get0_serialNumber(leaf.get()));
  if (!leaf_serial.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read the client certificate's serial: ", leaf_serial.status().message()));
  }
  return Leaf{issuer->fingerprint, issuer->subject, *std::move(leaf_serial)};
}

absl::Status RevocationList::CheckLeaf(const Leaf& leaf, absl::Time now) const {
  const Impl::Authority* issuer = impl_->Find(leaf.issuer_fingerprint);
  if (issuer == nullptr) {
    return absl::FailedPreconditionError("the client certificate's issuer has no CRL loaded");
  }
  if (now >= issuer->next_update) {
    return absl::FailedPreconditionError(
        absl::StrCat("CRL of ", issuer->subject, " expired at ", TimeText(issuer->next_update),
                     "; refusing every certificate it covers until a current CRL is loaded"));
  }
  auto it = issuer->revoked.find(leaf.serial);
  if (it != issuer->revoked.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("certificate serial ", leaf.serial, " revoked at ", TimeText(it->second)));
  }
  return absl::OkStatus();
}

absl::Status RevocationList::Check(const std::string& leaf_cert_pem, absl::Time now) const {
  AIRLOCK_ASSIGN_OR_RETURN(const Leaf leaf, Locate(leaf_cert_pem));
  return CheckLeaf(leaf, now);
}

absl::Status RevocationList::CheckNotOlderThan(const RevocationList& current) const {
  for (const Impl::Authority& next : impl_->authorities) {
    // The same CA: same name and key (a renewed CA certificate keeps counting its CRLs).
    const Impl::Authority* in_use = nullptr;
    for (const Impl::Authority& candidate : current.impl_->authorities) {
      if (X509_NAME_cmp(X509_get_subject_name(candidate.ca.get()), X509_get_subject_name(next.ca.get())) == 0 &&
          EVP_PKEY_eq(X509_get0_pubkey(candidate.ca.get()), X509_get0_pubkey(next.ca.get())) == 1) {
        in_use = &candidate;
        break;
      }
    }
    ERR_clear_error();
    if (in_use == nullptr || in_use->crl_fingerprint == next.crl_fingerprint) continue;
    const auto refuse = [&](absl::string_view why) {
      return absl::FailedPreconditionError(absl::StrCat(
          "CRL of ", next.subject, " (", CrlNumberText(next.crl_number), ", thisUpdate ", TimeText(next.this_update),
          ") is refused: ", why, " than the CRL in use (", CrlNumberText(in_use->crl_number), ", thisUpdate ",
          TimeText(in_use->this_update), "); an older CRL would un-revoke certificates"));
    };
    if (in_use->crl_number.has_value()) {
      if (!next.crl_number.has_value()) return refuse("it has no crlNumber, which is less");
      const int order = CompareCrlNumbers(*next.crl_number, *in_use->crl_number);
      if (order < 0) return refuse("its crlNumber is lower");
      if (order == 0) return refuse("it has the same crlNumber but other contents, no newer");
    } else if (!next.crl_number.has_value() && next.this_update <= in_use->this_update) {
      return refuse("it has no crlNumber and is no newer");
    }
  }
  return absl::OkStatus();
}

bool RevocationList::Knows(const Leaf& leaf) const { return impl_->Find(leaf.issuer_fingerprint) != nullptr; }

bool RevocationList::SameAs(const RevocationList& other) const {
  if (impl_->authorities.size() != other.impl_->authorities.size()) return false;
  for (size_t i = 0; i < impl_->authorities.size(); ++i) {
    const Impl::Authority& a = impl_->authorities[i];
    const Impl::Authority& b = other.impl_->authorities[i];
    if (a.fingerprint != b.fingerprint || a.crl_fingerprint != b.crl_fingerprint) return false;
  }
  return true;
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

absl::Status RevocationChecker::ReplaceIfNotOlder(std::shared_ptr<const RevocationList> list) {
  absl::MutexLock lock(&mutex_);
  if (list_ != nullptr && list != nullptr) AIRLOCK_RETURN_IF_ERROR(list->CheckNotOlderThan(*list_));
  list_ = std::move(list);
  return absl::OkStatus();
}

std::shared_ptr<const RevocationList> RevocationChecker::current() const {
  absl::MutexLock lock(&mutex_);
  return list_;
}

absl::Status RevocationChecker::Check(const std::string& leaf_cert_pem, absl::Time now,
                                      RevocationList::Leaf* located) const {
  // The list is copied out so that a slow check never holds the lock against Replace().
  std::shared_ptr<const RevocationList> list = current();
  if (list == nullptr) {
    return absl::FailedPreconditionError("no revocation list loaded");
  }
  // The remembered issuer is a CA certificate fingerprint: a list without that CA (the bundle
  // changed) locates the certificate again rather than trusting the old answer.
  std::optional<RevocationList::Leaf> leaf;
  {
    absl::MutexLock lock(&cache_mutex_);
    if (auto it = leaves_.find(leaf_cert_pem); it != leaves_.end()) leaf = it->second;
  }
  if (!leaf.has_value() || !list->Knows(*leaf)) {
    AIRLOCK_ASSIGN_OR_RETURN(leaf, list->Locate(leaf_cert_pem));
    absl::MutexLock lock(&cache_mutex_);
    if (leaves_.size() >= kMaxCachedLeaves) leaves_.clear();  // simple bound; refills at once
    leaves_.insert_or_assign(leaf_cert_pem, *leaf);
  }
  if (located != nullptr) *located = *leaf;
  return list->CheckLeaf(*leaf, now);
}

}  // namespace airlock::auth

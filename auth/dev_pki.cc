// Development PKI on OpenSSL 3: CA, leaf certificates, CRLs, and the `airlockctl pki` directory.
#include "auth/dev_pki.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "auth/openssl_util.h"
#include "inference/base/status.h"

namespace airlock::auth {
namespace {

using ossl::AkidPtr;
using ossl::Asn1IntPtr;
using ossl::Asn1TimePtr;
using ossl::BioContents;
using ossl::BioPtr;
using ossl::BnPtr;
using ossl::GeneralNamePtr;
using ossl::GeneralNamesPtr;
using ossl::OpenSslError;
using ossl::PkeyPtr;
using ossl::X509CrlPtr;
using ossl::X509ExtPtr;
using ossl::X509Ptr;
using ossl::X509RevokedPtr;

absl::StatusOr<PkeyPtr> ParseKey(const std::string& pem, std::string_view what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, ossl::NoPassword, nullptr));
  if (!key) return OpenSslError(absl::StrCat("cannot parse ", ToAbsl(what), " private key"));
  return key;
}

absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("PEM_write_bio_PrivateKey");
  }
  return BioContents(bio.get());
}

absl::StatusOr<PkeyPtr> GenerateKey() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslError("EVP_EC_gen(P-256)");
  return key;
}

// 128 random bits with the top bit cleared: positive, at most 16 octets, never zero in practice
// (retried if so, since RFC 5280 requires a positive serial).
absl::StatusOr<Asn1IntPtr> RandomSerial() {
  unsigned char bytes[16];
  do {
    if (RAND_bytes(bytes, sizeof(bytes)) != 1) return OpenSslError("RAND_bytes");
    bytes[0] &= 0x7f;
  } while (std::all_of(bytes, bytes + sizeof(bytes), [](unsigned char b) { return b == 0; }));
  BnPtr bn(BN_bin2bn(bytes, sizeof(bytes), nullptr));
  if (!bn) return OpenSslError("BN_bin2bn");
  Asn1IntPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  if (!serial) return OpenSslError("BN_to_ASN1_INTEGER");
  return serial;
}

absl::Status SetTime(ASN1_TIME* field, absl::Time t, std::string_view what) {
  if (ASN1_TIME_set(field, absl::ToTimeT(t)) == nullptr) {
    return OpenSslError(absl::StrCat("cannot set ", ToAbsl(what)));
  }
  return absl::OkStatus();
}

// Adds an extension given in OpenSSL's config syntax (only for fixed, trusted values).
absl::Status AddConfExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext) return OpenSslError(absl::StrCat("cannot build extension ", OBJ_nid2sn(nid), "=", value));
  if (X509_add_ext(cert, ext.get(), -1) != 1) return OpenSslError("X509_add_ext");
  return absl::OkStatus();
}

absl::Status AddIa5Name(GENERAL_NAMES* names, int type, const std::string& value) {
  GeneralNamePtr name(GENERAL_NAME_new());
  ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
  if (!name || !ia5) {
    ASN1_IA5STRING_free(ia5);
    return OpenSslError("GENERAL_NAME_new");
  }
  if (ASN1_STRING_set(ia5, value.data(), static_cast<int>(value.size())) != 1) {
    ASN1_IA5STRING_free(ia5);
    return OpenSslError("ASN1_STRING_set");
  }
  GENERAL_NAME_set0_value(name.get(), type, ia5);
  if (sk_GENERAL_NAME_push(names, name.get()) == 0) return OpenSslError("sk_GENERAL_NAME_push");
  name.release();  // owned by `names` now
  return absl::OkStatus();
}

// SANs are built as GENERAL_NAMEs rather than config text so that a name holding ',' or ':'
// cannot smuggle in other names.
absl::Status AddSubjectAltNames(X509* cert, const CertificateSpec& spec) {
  GeneralNamesPtr names(GENERAL_NAMES_new());
  if (!names) return OpenSslError("GENERAL_NAMES_new");
  for (const std::string& dns : spec.dns_names) {
    AIRLOCK_RETURN_IF_ERROR(AddIa5Name(names.get(), GEN_DNS, dns));
  }
  for (const std::string& ip : spec.ip_addresses) {
    ASN1_OCTET_STRING* octets = a2i_IPADDRESS(ip.c_str());
    if (octets == nullptr) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat("not an IP address: \"", ip, "\""));
    }
    GeneralNamePtr name(GENERAL_NAME_new());
    if (!name) {
      ASN1_OCTET_STRING_free(octets);
      return OpenSslError("GENERAL_NAME_new");
    }
    GENERAL_NAME_set0_value(name.get(), GEN_IPADD, octets);
    if (sk_GENERAL_NAME_push(names.get(), name.get()) == 0) {
      return OpenSslError("sk_GENERAL_NAME_push");
    }
    name.release();
  }
  for (const std::string& email : spec.emails) {
    AIRLOCK_RETURN_IF_ERROR(AddIa5Name(names.get(), GEN_EMAIL, email));
  }
  for (const std::string& uri : spec.uris) {
    AIRLOCK_RETURN_IF_ERROR(AddIa5Name(names.get(), GEN_URI, uri));
  }
  if (sk_GENERAL_NAME_num(names.get()) == 0) return absl::OkStatus();
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return OpenSslError("cannot add subjectAltName");
  }
  return absl::OkStatus();
}

// Fields common to CA and leaf certificates: v3, random serial, validity, subject, issuer, key.
absl::StatusOr<X509Ptr> NewCertificate(const std::string& common_name, absl::Time not_before,
                                       absl::Duration validity, EVP_PKEY* subject_key,
                                       X509* issuer /* nullptr: self-signed */) {
  if (common_name.empty()) return absl::InvalidArgumentError("certificate common name is empty");
  if (validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("certificate validity must be positive");
  }
  if (not_before == absl::InfinitePast()) not_before = absl::Now() - absl::Minutes(1);
  X509Ptr cert(X509_new());
  if (!cert) return OpenSslError("X509_new");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) return OpenSslError("X509_set_version");
  AIRLOCK_ASSIGN_OR_RETURN(Asn1IntPtr serial, RandomSerial());
  if (X509_set_serialNumber(cert.get(), serial.get()) != 1) {
    return OpenSslError("X509_set_serialNumber");
  }
  AIRLOCK_RETURN_IF_ERROR(SetTime(X509_getm_notBefore(cert.get()), not_before, "notBefore"));
  AIRLOCK_RETURN_IF_ERROR(
      SetTime(X509_getm_notAfter(cert.get()), not_before + validity, "notAfter"));
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) != 1) {
    return OpenSslError("cannot set subject CN");
  }
  X509_NAME* issuer_name = issuer == nullptr ? subject : X509_get_subject_name(issuer);
  if (X509_set_issuer_name(cert.get(), issuer_name) != 1) {
    return OpenSslError("X509_set_issuer_name");
  }
  if (X509_set_pubkey(cert.get(), subject_key) != 1) return OpenSslError("X509_set_pubkey");
  return cert;
}

absl::Status Sign(X509* cert, EVP_PKEY* key) {
  if (X509_sign(cert, key, EVP_sha256()) <= 0) return OpenSslError("X509_sign");
  return absl::OkStatus();
}

bool FileExists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

std::string ErrnoMessage(int err) { return std::strerror(err); }

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents,
                                 mode_t mode) {
  // Same directory as the target so that rename() is atomic; O_EXCL so a stale temp file from
  // someone else is never followed or reused.
  const std::string temp = absl::StrCat(path, ".tmp.", getpid());
  int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", temp, ": ", ErrnoMessage(errno)));
  }
  // Explicit fchmod: the umask must not widen or narrow what the caller asked for.
  absl::Status status;
  if (fchmod(fd, mode) != 0) {
    status = absl::InternalError(absl::StrCat("cannot chmod ", temp, ": ", ErrnoMessage(errno)));
  }
  size_t written = 0;
  while (status.ok() && written < contents.size()) {
    ssize_t n = write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      status = absl::InternalError(absl::StrCat("cannot write ", temp, ": ", ErrnoMessage(errno)));
      break;
    }
    written += static_cast<size_t>(n);
  }
  if (status.ok() && fsync(fd) != 0) {
    status = absl::InternalError(absl::StrCat("cannot sync ", temp, ": ", ErrnoMessage(errno)));
  }
  if (close(fd) != 0 && status.ok()) {
    status = absl::InternalError(absl::StrCat("cannot close ", temp, ": ", ErrnoMessage(errno)));
  }
  if (status.ok() && rename(temp.c_str(), path.c_str()) != 0) {
    status = absl::InternalError(
        absl::StrCat("cannot rename ", temp, " to ", path, ": ", ErrnoMessage(errno)));
  }
  if (!status.ok()) unlink(temp.c_str());
  return status;
}

absl::StatusOr<PemKeyPair> ReadPair(const std::string& dir, const std::string& stem) {
  PemKeyPair pair;
  AIRLOCK_ASSIGN_OR_RETURN(pair.cert_pem, ReadTextFile(absl::StrCat(dir, "/", stem, ".crt")));
  AIRLOCK_ASSIGN_OR_RETURN(pair.key_pem, ReadTextFile(absl::StrCat(dir, "/", stem, ".key")));
  return pair;
}

absl::Status WritePair(const std::string& dir, const std::string& stem, const PemKeyPair& pair) {
  const std::string crt = absl::StrCat(dir, "/", stem, ".crt");
  const std::string key = absl::StrCat(dir, "/", stem, ".key");
  for (const std::string& path : {crt, key}) {
    if (FileExists(path)) {
      return absl::AlreadyExistsError(absl::StrCat(path, " already exists; refusing to overwrite"));
    }
  }
  // Key first: a certificate without its key is useless, a lone key is harmless.
  AIRLOCK_RETURN_IF_ERROR(WritePrivateFile(key, pair.key_pem));
  return WritePublicFile(crt, pair.cert_pem);
}

// revoked.txt: one "SERIAL_HEX UNIX_SECONDS" per line.
absl::StatusOr<std::vector<RevokedEntry>> ReadRevoked(const std::string& path) {
  std::vector<RevokedEntry> entries;
  if (!FileExists(path)) return entries;
  AIRLOCK_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    int64_t seconds = 0;
    if (fields.size() != 2 || !absl::SimpleAtoi(fields[1], &seconds)) {
      return absl::DataLossError(
          absl::StrCat(path, ":", line_number, ": expected \"SERIAL_HEX UNIX_SECONDS\""));
    }
    entries.push_back({std::string(fields[0]), absl::FromUnixSeconds(seconds)});
  }
  return entries;
}

absl::StatusOr<int64_t> NextCrlNumber(const std::string& dir) {
  const std::string path = dir + "/crl_number";
  int64_t number = 0;
  if (FileExists(path)) {
    AIRLOCK_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &number) || number < 0) {
      return absl::DataLossError(absl::StrCat(path, ": not a CRL number"));
    }
  }
  return number + 1;
}

// Signs crl.pem from `revoked` with the next CRL number (monotonic, as RFC 5280 asks), then
// records that number.
absl::Status SignDirectoryCrl(const std::string& dir, const PemKeyPair& ca,
                              const std::vector<RevokedEntry>& revoked,
                              absl::Duration crl_validity) {
  if (crl_validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("CRL validity must be positive");
  }
  AIRLOCK_ASSIGN_OR_RETURN(int64_t number, NextCrlNumber(dir));
  // thisUpdate a minute back, like certificates' notBefore, to tolerate small clock skew.
  const absl::Time now = absl::Now();
  AIRLOCK_ASSIGN_OR_RETURN(std::string crl,
                           CreateCrl(ca, revoked, now - absl::Minutes(1), now + crl_validity, number));
  AIRLOCK_RETURN_IF_ERROR(WritePublicFile(dir + "/crl.pem", crl));
  return WritePublicFile(dir + "/crl_number", absl::StrCat(number, "\n"));
}

absl::Status ValidateStem(const std::string& stem) {
  if (stem.empty() || stem[0] == '.' || stem.size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat("invalid file name \"", stem, "\""));
  }
  for (char c : stem) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid file name \"", stem, "\": use letters, digits, '.', '-', '_'"));
    }
  }
  if (stem == "ca" || stem == "crl") {
    return absl::InvalidArgumentError(absl::StrCat("file name \"", stem, "\" is reserved"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PemKeyPair> CreateCertificateAuthority(const std::string& common_name,
                                                      absl::Duration validity) {
  AIRLOCK_ASSIGN_OR_RETURN(PkeyPtr key, GenerateKey());
  AIRLOCK_ASSIGN_OR_RETURN(
      X509Ptr cert, NewCertificate(common_name, absl::InfinitePast(), validity, key.get(), nullptr));
  X509* c = cert.get();
  AIRLOCK_RETURN_IF_ERROR(AddConfExtension(c, c, NID_basic_constraints, "critical,CA:TRUE"));
  AIRLOCK_RETURN_IF_ERROR(
      AddConfExtension(c, c, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"));
  AIRLOCK_RETURN_IF_ERROR(AddConfExtension(c, c, NID_subject_key_identifier, "hash"));
  // Self-signed: the authority key id is the certificate's own subject key id (just added).
  AIRLOCK_RETURN_IF_ERROR(AddConfExtension(c, c, NID_authority_key_identifier, "keyid:always"));
  AIRLOCK_RETURN_IF_ERROR(Sign(c, key.get()));
  PemKeyPair pair;
  AIRLOCK_ASSIGN_OR_RETURN(pair.cert_pem, ossl::CertificatePem(c));
  AIRLOCK_ASSIGN_OR_RETURN(pair.key_pem, KeyToPem(key.get()));
  return pair;
}

absl::StatusOr<PemKeyPair> IssueCertificate(const PemKeyPair& ca, const CertificateSpec& spec) {
  AIRLOCK_ASSIGN_OR_RETURN(X509Ptr ca_cert, ossl::ParseCertificate(ca.cert_pem, "CA"));
  AIRLOCK_ASSIGN_OR_RETURN(PkeyPtr ca_key, ParseKey(ca.key_pem, "CA"));
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    return OpenSslError("CA private key does not match the CA certificate");
  }
  if (X509_check_ca(ca_cert.get()) == 0) {
    return absl::InvalidArgumentError("the issuing certificate is not a CA certificate");
  }
  AIRLOCK_ASSIGN_OR_RETURN(PkeyPtr key, GenerateKey());
  AIRLOCK_ASSIGN_OR_RETURN(X509Ptr cert, NewCertificate(spec.common_name, spec.not_before,
                                                        spec.validity, key.get(), ca_cert.get()));
  X509* c = cert.get();
  X509* issuer = ca_cert.get();
  AIRLOCK_RETURN_IF_ERROR(AddConfExtension(c, issuer, NID_basic_constraints, "critical,CA:FALSE"));
  // ECDSA keys sign (TLS 1.2 ECDHE_ECDSA and TLS 1.3); keyAgreement is for static ECDH, unused.
  AIRLOCK_RETURN_IF_ERROR(AddConfExtension(c, issuer, NID_key_usage, "critical,digitalSignature"));
  AIRLOCK_RETURN_IF_ERROR(
      AddConfExtension(c, issuer, NID_ext_key_usage, spec.server ? "serverAuth" : "clientAuth"));
  AIRLOCK_RETURN_IF_ERROR(AddConfExtension(c, issuer, NID_subject_key_identifier, "hash"));
  AIRLOCK_RETURN_IF_ERROR(AddConfExtension(c, issuer, NID_authority_key_identifier, "keyid:always"));
  AIRLOCK_RETURN_IF_ERROR(AddSubjectAltNames(c, spec));
  AIRLOCK_RETURN_IF_ERROR(Sign(c, ca_key.get()));
  PemKeyPair pair;
  AIRLOCK_ASSIGN_OR_RETURN(pair.cert_pem, ossl::CertificatePem(c));
  AIRLOCK_ASSIGN_OR_RETURN(pair.key_pem, KeyToPem(key.get()));
  return pair;
}

absl::StatusOr<std::string> CertificateSerialHex(const std::string& cert_pem) {
  AIRLOCK_ASSIGN_OR_RETURN(X509Ptr cert, ossl::ParseCertificate(cert_pem, "the"));
  return ossl::SerialHex(X509_get0_serialNumber(cert.get()));
}

absl::StatusOr<std::string> CreateCrl(const PemKeyPair& ca, const std::vector<RevokedEntry>& revoked,
                                      absl::Time this_update, absl::Time next_update,
                                      int64_t crl_number) {
  if (next_update <= this_update) {
    return absl::InvalidArgumentError("CRL nextUpdate must be after thisUpdate");
  }
  AIRLOCK_ASSIGN_OR_RETURN(X509Ptr ca_cert, ossl::ParseCertificate(ca.cert_pem, "CA"));
  AIRLOCK_ASSIGN_OR_RETURN(PkeyPtr ca_key, ParseKey(ca.key_pem, "CA"));
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    return OpenSslError("CA private key does not match the CA certificate");
  }
  X509CrlPtr crl(X509_CRL_new());
  if (!crl) return OpenSslError("X509_CRL_new");
  if (X509_CRL_set_version(crl.get(), 1) != 1) return OpenSslError("X509_CRL_set_version");  // v2
  if (X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca_cert.get())) != 1) {
    return OpenSslError("X509_CRL_set_issuer_name");
  }
  Asn1TimePtr time(ASN1_TIME_new());
  if (!time) return OpenSslError("ASN1_TIME_new");
  AIRLOCK_RETURN_IF_ERROR(SetTime(time.get(), this_update, "thisUpdate"));
  if (X509_CRL_set1_lastUpdate(crl.get(), time.get()) != 1) {
    return OpenSslError("X509_CRL_set1_lastUpdate");
  }
  AIRLOCK_RETURN_IF_ERROR(SetTime(time.get(), next_update, "nextUpdate"));
  if (X509_CRL_set1_nextUpdate(crl.get(), time.get()) != 1) {
    return OpenSslError("X509_CRL_set1_nextUpdate");
  }
  for (const RevokedEntry& entry : revoked) {
    BIGNUM* raw = nullptr;
    if (entry.serial_hex.empty() ||
        BN_hex2bn(&raw, entry.serial_hex.c_str()) != static_cast<int>(entry.serial_hex.size())) {
      BN_free(raw);
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("not a hexadecimal serial: \"", entry.serial_hex, "\""));
    }
    BnPtr bn(raw);
    Asn1IntPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    if (!serial) return OpenSslError("BN_to_ASN1_INTEGER");
    X509RevokedPtr rev(X509_REVOKED_new());
    if (!rev) return OpenSslError("X509_REVOKED_new");
    if (X509_REVOKED_set_serialNumber(rev.get(), serial.get()) != 1) {
      return OpenSslError("X509_REVOKED_set_serialNumber");
    }
    AIRLOCK_RETURN_IF_ERROR(SetTime(time.get(), entry.revoked_at, "revocationDate"));
    if (X509_REVOKED_set_revocationDate(rev.get(), time.get()) != 1) {
      return OpenSslError("X509_REVOKED_set_revocationDate");
    }
    if (X509_CRL_add0_revoked(crl.get(), rev.get()) != 1) {
      return OpenSslError("X509_CRL_add0_revoked");
    }
    rev.release();  // owned by the CRL now
  }
  if (X509_CRL_sort(crl.get()) != 1) return OpenSslError("X509_CRL_sort");

  if (crl_number >= 0) {
    Asn1IntPtr number(ASN1_INTEGER_new());
    if (!number || ASN1_INTEGER_set_int64(number.get(), crl_number) != 1) {
      return OpenSslError("CRL number");
    }
    if (X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number.get(), 0, X509V3_ADD_DEFAULT) != 1) {
      return OpenSslError("cannot add CRL number");
    }
  }
  // authorityKeyIdentifier: lets a verifier pick the right CA when several share a name.
  const ASN1_OCTET_STRING* ca_key_id = X509_get0_subject_key_id(ca_cert.get());
  if (ca_key_id != nullptr) {
    AkidPtr akid(AUTHORITY_KEYID_new());
    if (!akid) return OpenSslError("AUTHORITY_KEYID_new");
    akid->keyid = ASN1_OCTET_STRING_dup(ca_key_id);
    if (akid->keyid == nullptr) return OpenSslError("ASN1_OCTET_STRING_dup");
    if (X509_CRL_add1_ext_i2d(crl.get(), NID_authority_key_identifier, akid.get(), 0,
                              X509V3_ADD_DEFAULT) != 1) {
      return OpenSslError("cannot add CRL authorityKeyIdentifier");
    }
  }
  if (X509_CRL_sign(crl.get(), ca_key.get(), EVP_sha256()) <= 0) {
    return OpenSslError("X509_CRL_sign");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_CRL(bio.get(), crl.get()) != 1) {
    return OpenSslError("PEM_write_bio_X509_CRL");
  }
  return BioContents(bio.get());
}

absl::Status WritePrivateFile(const std::string& path, const std::string& contents) {
  return WriteFileAtomically(path, contents, 0600);
}

absl::Status WritePublicFile(const std::string& path, const std::string& contents) {
  return WriteFileAtomically(path, contents, 0644);
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    std::string message = absl::StrCat("cannot read ", path, ": ", ErrnoMessage(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    return absl::PermissionDeniedError(message);
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return contents.str();
}

absl::Status InitPki(const std::string& dir, const PkiInitOptions& options) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create directory ", dir, ": ", ErrnoMessage(errno)));
  }
  for (const char* name : {"ca.key", "ca.crt"}) {
    const std::string path = absl::StrCat(dir, "/", name);
    if (FileExists(path)) {
      return absl::AlreadyExistsError(
          absl::StrCat(path, " already exists; refusing to overwrite a CA"));
    }
  }
  for (const char* name : {"server.crt", "server.key", "crl.pem"}) {
    const std::string path = absl::StrCat(dir, "/", name);
    if (FileExists(path)) {
      return absl::AlreadyExistsError(absl::StrCat(path, " already exists; refusing to overwrite"));
    }
  }
  AIRLOCK_ASSIGN_OR_RETURN(PemKeyPair ca,
                           CreateCertificateAuthority(options.ca_common_name, options.ca_validity));
  CertificateSpec server;
  server.common_name = options.server_dns_names.empty() ? "airlockd" : options.server_dns_names[0];
  server.dns_names = options.server_dns_names;
  server.ip_addresses = options.server_ip_addresses;
  server.validity = options.leaf_validity;
  server.server = true;
  AIRLOCK_ASSIGN_OR_RETURN(PemKeyPair server_pair, IssueCertificate(ca, server));
  AIRLOCK_RETURN_IF_ERROR(WritePair(dir, "ca", ca));
  AIRLOCK_RETURN_IF_ERROR(WritePair(dir, "server", server_pair));
  AIRLOCK_RETURN_IF_ERROR(WritePublicFile(dir + "/revoked.txt", ""));
  return SignDirectoryCrl(dir, ca, {}, options.crl_validity);
}

absl::Status IssueClient(const std::string& dir, const std::string& file_stem,
                         const CertificateSpec& spec) {
  AIRLOCK_RETURN_IF_ERROR(ValidateStem(file_stem));
  AIRLOCK_ASSIGN_OR_RETURN(PemKeyPair ca, ReadPair(dir, "ca"));
  for (const char* ext : {".crt", ".key"}) {
    const std::string path = absl::StrCat(dir, "/", file_stem, ext);
    if (FileExists(path)) {
      return absl::AlreadyExistsError(absl::StrCat(path, " already exists; refusing to overwrite"));
    }
  }
  AIRLOCK_ASSIGN_OR_RETURN(PemKeyPair pair, IssueCertificate(ca, spec));
  return WritePair(dir, file_stem, pair);
}

absl::Status Revoke(const std::string& dir, const std::string& cert_pem,
                    absl::Duration crl_validity) {
  AIRLOCK_ASSIGN_OR_RETURN(PemKeyPair ca, ReadPair(dir, "ca"));
  AIRLOCK_ASSIGN_OR_RETURN(X509Ptr ca_cert, ossl::ParseCertificate(ca.cert_pem, "CA"));
  AIRLOCK_ASSIGN_OR_RETURN(X509Ptr cert, ossl::ParseCertificate(cert_pem, "the revoked"));
  // Only this CA's certificates: a serial from another CA in this CRL would revoke nothing and
  // give a false sense of safety.
  EVP_PKEY* ca_public = X509_get0_pubkey(ca_cert.get());
  if (ca_public == nullptr || X509_verify(cert.get(), ca_public) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the certificate was not issued by this CA");
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::string serial, ossl::SerialHex(X509_get0_serialNumber(cert.get())));
  const std::string revoked_path = dir + "/revoked.txt";
  AIRLOCK_ASSIGN_OR_RETURN(std::vector<RevokedEntry> revoked, ReadRevoked(revoked_path));
  for (const RevokedEntry& entry : revoked) {
    if (entry.serial_hex == serial) {
      return absl::AlreadyExistsError(absl::StrCat("certificate serial ", serial,
                                                   " is already revoked"));
    }
  }
  const absl::Time now = absl::Now();
  revoked.push_back({serial, now});
  std::string text;
  for (const RevokedEntry& entry : revoked) {
    absl::StrAppend(&text, entry.serial_hex, " ", absl::ToUnixSeconds(entry.revoked_at), "\n");
  }
  AIRLOCK_RETURN_IF_ERROR(WritePublicFile(revoked_path, text));
  return SignDirectoryCrl(dir, ca, revoked, crl_validity);
}

absl::Status RefreshCrl(const std::string& dir, absl::Duration crl_validity) {
  AIRLOCK_ASSIGN_OR_RETURN(PemKeyPair ca, ReadPair(dir, "ca"));
  AIRLOCK_ASSIGN_OR_RETURN(std::vector<RevokedEntry> revoked, ReadRevoked(dir + "/revoked.txt"));
  return SignDirectoryCrl(dir, ca, revoked, crl_validity);
}

}  // namespace airlock::auth

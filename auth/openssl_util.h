// Internal OpenSSL plumbing shared by auth/*.cc: owning pointers, error text, times, PEM parsing.
//
// Not part of the auth API: only airlock_auth's own sources (and its tests) include this header.
// Thread-safety: free functions without shared state; OpenSSL's error queue is per thread.
#pragma once

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/conf.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "inference/base/free_deleter.h"

namespace airlock::auth::ossl {

// Owning pointers to OpenSSL objects, so that no error path leaks.
using BioPtr = std::unique_ptr<BIO, FreeDeleter<BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, FreeDeleter<X509_free>>;
using X509CrlPtr = std::unique_ptr<X509_CRL, FreeDeleter<X509_CRL_free>>;
using X509RevokedPtr = std::unique_ptr<X509_REVOKED, FreeDeleter<X509_REVOKED_free>>;
using X509ExtPtr = std::unique_ptr<X509_EXTENSION, FreeDeleter<X509_EXTENSION_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, FreeDeleter<EVP_PKEY_free>>;
using BnPtr = std::unique_ptr<BIGNUM, FreeDeleter<BN_free>>;
using Asn1IntPtr = std::unique_ptr<ASN1_INTEGER, FreeDeleter<ASN1_INTEGER_free>>;
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, FreeDeleter<ASN1_TIME_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, FreeDeleter<GENERAL_NAMES_free>>;
using GeneralNamePtr = std::unique_ptr<GENERAL_NAME, FreeDeleter<GENERAL_NAME_free>>;
using AkidPtr = std::unique_ptr<AUTHORITY_KEYID, FreeDeleter<AUTHORITY_KEYID_free>>;
using ConfPtr = std::unique_ptr<CONF, FreeDeleter<NCONF_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, FreeDeleter<SSL_CTX_free>>;

// Every error queued on this thread, oldest first, joined by "; ", or "unknown OpenSSL error"
// when the queue is empty. Drains the queue, so that later calls start clean.
std::string OpenSslErrors();

// INTERNAL: `what`, then ": " and the queued errors as OpenSslErrors() (just `what` when the queue
// is empty). Drains the queue.
absl::Status OpenSslError(std::string_view what);

// A PEM password callback that refuses to prompt: an encrypted key is an error, not a terminal
// read. For PEM_read_bio_PrivateKey and the like.
int NoPassword(char* buffer, int size, int rwflag, void* userdata);

// The contents of a memory BIO. INTERNAL (from OpenSslError) when BIO_get_mem_data fails.
absl::StatusOr<std::string> BioContents(BIO* bio);

// A certificate in PEM. INTERNAL (from OpenSslError) when it cannot be written.
absl::StatusOr<std::string> CertificatePem(X509* cert);

// An ASN.1 time (UTCTime or GeneralizedTime) as absl::Time. INVALID_ARGUMENT "unreadable time"
// when `t` is null or malformed (the error queue is cleared).
absl::StatusOr<absl::Time> ToTime(const ASN1_TIME* t);

// `t` as RFC 3339 UTC to the second ("2025-01-31T12:00:00Z"), for messages.
std::string TimeText(absl::Time t);

// An X.509 name in RFC 2253 order and escaping ("CN=alice,O=Clinic"), UTF-8 kept readable rather
// than \XX-escaped. Empty when the name cannot be printed.
std::string NameToString(const X509_NAME* name);

// A serial number as uppercase hex in whole octets without leading zero octets, exactly as
// `openssl x509 -serial` prints it. INTERNAL (from OpenSslError) when the conversion fails.
absl::StatusOr<std::string> SerialHex(const ASN1_INTEGER* serial);

// The first certificate of a PEM text. INTERNAL "cannot parse <what> certificate: <OpenSSL
// errors>" when there is none or it is malformed (the error queue is drained either way); `what`
// names the certificate's role ("CA", "the").
absl::StatusOr<X509Ptr> ParseCertificate(const std::string& pem, std::string_view what);

// Every certificate of a PEM text, in order; empty when the text holds no PEM certificate block.
// INVALID_ARGUMENT "cannot parse certificate: <OpenSSL errors>" when a block is malformed. The
// error queue is clear afterwards.
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const std::string& pem);

// As ParseCertificates, for CRLs: every CRL of a PEM text, possibly none; INVALID_ARGUMENT
// "cannot parse CRL: <OpenSSL errors>" when a block is malformed.
absl::StatusOr<std::vector<X509CrlPtr>> ParseCrls(const std::string& pem);

// Reads the file at `path` that plays the role `what` ("certificate file"). INVALID_ARGUMENT
// "<what> is not set" when `path` is empty; otherwise ReadTextFile's errors (same code), with the
// message prefixed by "<what> <path>: ".
absl::StatusOr<std::string> ReadNamedFile(std::string_view what, const std::string& path);

// The earliest notAfter among the certificates of the PEM file at `path` (a leaf with its chain,
// or a CA bundle: the first of them to expire). ReadNamedFile's errors; ParseCertificates' errors
// prefixed by "<what> <path>: "; INVALID_ARGUMENT when the file holds no certificate.
absl::StatusOr<absl::Time> EarliestNotAfter(std::string_view what, const std::string& path);

}  // namespace airlock::auth::ossl

// Helpers for the auth tests: parse PEM, verify chains, read extensions, scratch directories.
#pragma once

#include <arpa/inet.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "auth/dev_pki.h"
#include "auth/openssl_util.h"
#include "tests/support/test_data.h"

namespace airlock::auth::testing {

using X509Ptr = ::airlock::auth::ossl::X509Ptr;
using X509CrlPtr = ::airlock::auth::ossl::X509CrlPtr;

// A scratch directory removed with everything in it when the test ends.
struct ScopedTempDir {
  std::string path = ::airlock::testing::MakeTempDir();
  ~ScopedTempDir() { std::filesystem::remove_all(path); }
};

inline X509Ptr ParsePem(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509Ptr cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return cert;
}

inline X509CrlPtr ParseCrlPem(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509CrlPtr crl(PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return crl;
}

// X509_verify_cert of `leaf` against the single trust anchor `ca`, with the given purpose
// ("sslclient"/"sslserver"); optionally with CRL checking against `crl`. Returns the
// X509_V_* result code (X509_V_OK on success).
inline int VerifyChain(const std::string& ca_pem, const std::string& leaf_pem,
                       const char* purpose, const std::string& crl_pem = "") {
  X509Ptr ca = ParsePem(ca_pem);
  X509Ptr leaf = ParsePem(leaf_pem);
  if (!ca || !leaf) return -1;
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca.get());
  if (!crl_pem.empty()) {
    X509CrlPtr crl = ParseCrlPem(crl_pem);
    X509_STORE_add_crl(store, crl.get());
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  }
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf.get(), nullptr);
  X509_VERIFY_PARAM_set_purpose(X509_STORE_CTX_get0_param(ctx),
                                X509_PURPOSE_get_by_sname(purpose) + X509_PURPOSE_MIN);
  int ok = X509_verify_cert(ctx);
  int error = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return error;
}

// The SANs of `cert_pem` as "DNS:x", "IP:1.2.3.4", "email:x", "URI:x".
inline std::vector<std::string> SubjectAltNames(const std::string& cert_pem) {
  std::vector<std::string> out;
  X509Ptr cert = ParsePem(cert_pem);
  if (!cert) return out;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    int type = 0;
    auto* value = static_cast<ASN1_STRING*>(GENERAL_NAME_get0_value(name, &type));
    std::string text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                     ASN1_STRING_length(value));
    switch (type) {
      case GEN_DNS: out.push_back("DNS:" + text); break;
      case GEN_EMAIL: out.push_back("email:" + text); break;
      case GEN_URI: out.push_back("URI:" + text); break;
      case GEN_IPADD: {
        char ip[INET6_ADDRSTRLEN] = "?";
        const int family = ASN1_STRING_length(value) == 4 ? AF_INET : AF_INET6;
        inet_ntop(family, ASN1_STRING_get0_data(value), ip, sizeof(ip));
        out.push_back(std::string("IP:") + ip);
        break;
      }
      default: out.push_back("other"); break;
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

// `cert_pem` with a second subject CN `extra` appended, re-signed by `ca` (what a careless or
// hostile registration authority can get a CA to sign).
inline std::string WithSecondCommonName(const std::string& cert_pem, const PemKeyPair& ca, const std::string& extra) {
  X509Ptr cert = ParsePem(cert_pem);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  EXPECT_EQ(X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                       reinterpret_cast<const unsigned char*>(extra.c_str()), -1, -1, 0),
            1);
  BIO* key_bio = BIO_new_mem_buf(ca.key_pem.data(), static_cast<int>(ca.key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  EXPECT_GT(X509_sign(cert.get(), key, EVP_sha256()), 0);
  EVP_PKEY_free(key);
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(out, cert.get());
  char* data = nullptr;
  const long length = BIO_get_mem_data(out, &data);  // NOLINT(runtime/int): OpenSSL's type
  std::string pem(data, static_cast<size_t>(length));
  BIO_free(out);
  return pem;
}

}  // namespace airlock::auth::testing

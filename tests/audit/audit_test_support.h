// Helpers shared by the audit store tests: one signing key per test process, and opening a state
// store and an audit log on it (failing the test, then stopping, when they do not open).
#pragma once

#include <memory>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "audit/audit_store.h"
#include "audit/checkpoint.h"
#include "audit/state_db.h"
#include "inference/base/status.h"

namespace airlock::audit {

// A checkpoint signing key generated once per test process (PEM).
inline const std::string& TestKeyPem() {
  static const std::string* const pem = [] {
    absl::StatusOr<std::string> generated = GenerateSigningKeyPem();
    AIRLOCK_CHECK(generated.ok());
    return new std::string(*generated);
  }();
  return *pem;
}

inline CheckpointSigner SignerFromPem(const std::string& pem = TestKeyPem()) {
  absl::StatusOr<CheckpointSigner> signer = CheckpointSigner::FromPrivateKeyPem(pem);
  AIRLOCK_CHECK(signer.ok());
  return *std::move(signer);
}

inline std::unique_ptr<StateDb> OpenDbOrDie(const std::string& path, rocksdb::Env* env = nullptr) {
  StateDbOptions options;
  options.env = env;
  absl::StatusOr<std::unique_ptr<StateDb>> db = StateDb::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.status();
  AIRLOCK_CHECK(db.ok());
  return *std::move(db);
}

inline std::unique_ptr<AuditLog> OpenLogOrDie(StateDb* db, const AuditLogOptions& options = {},
                                              const std::string& key_pem = TestKeyPem()) {
  absl::StatusOr<std::unique_ptr<AuditLog>> log = AuditLog::Open(db, SignerFromPem(key_pem), options);
  EXPECT_TRUE(log.ok()) << log.status();
  AIRLOCK_CHECK(log.ok());
  return *std::move(log);
}

}  // namespace airlock::audit

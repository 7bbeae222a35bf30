// Signed model bundles: a signed bundle verifies; a flipped byte in a file, the manifest or the
// signature, a key nobody trusts, a missing or cut-short file are each refused with a message
// naming what is wrong; hostile manifests are refused field by field.
#include "auth/model_bundle.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "auth/dev_pki.h"
#include "auth/digest.h"
#include "tests/auth/openssl_test_util.h"
#include "tests/support/test_data.h"

namespace airlock::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Ed25519PrivateKey NewKey() {
  absl::StatusOr<std::string> pem = GenerateEd25519KeyPem();
  EXPECT_TRUE(pem.ok()) << pem.status();
  absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::FromPem(*pem, "test key");
  EXPECT_TRUE(key.ok()) << key.status();
  return *std::move(key);
}

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Flips one bit of the byte at `offset` in the file at `path`.
void FlipByte(const std::string& path, size_t offset) {
  std::string bytes = ::airlock::testing::ReadFileOrDie(path);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x01);
  Write(path, bytes);
}

class ModelBundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path + "/bundle";
    std::filesystem::create_directory(dir_);
    weights_ = std::string(100000, '\0');
    for (size_t i = 0; i < weights_.size(); ++i) weights_[i] = static_cast<char>(i * 131 % 251);
    Write(dir_ + "/model.gguf", weights_);
    Write(dir_ + "/mmproj.gguf", "projector");
    manifest_.name = "tiny-llama";
    manifest_.version = "2026.11.1";
    manifest_.architecture = "llama";
    manifest_.quantisation = "Q4_K";
    manifest_.licence = "apache-2.0";
    manifest_.created = "2026-11-24T03:00:00Z";
    manifest_.files = {{"model.gguf", weights_.size(), HexLower(Sha256(weights_))},
                       {"mmproj.gguf", 9, HexLower(Sha256(std::string("projector")))}};
    ASSERT_TRUE(WriteSignedManifest(dir_, manifest_, publisher_).ok());
    absl::StatusOr<TrustedPublishers> trusted = TrustedPublishers::FromPems({publisher_.public_key_pem()});
    ASSERT_TRUE(trusted.ok()) << trusted.status();
    trusted_ = *std::move(trusted);
  }

  absl::Status Verify() const { return VerifyBundle(dir_, trusted_).status(); }

  testing::ScopedTempDir tmp_;  // auth::testing
  std::string dir_;
  std::string weights_;
  ModelManifest manifest_;
  Ed25519PrivateKey publisher_ = NewKey();
  TrustedPublishers trusted_;
};

TEST_F(ModelBundleTest, ASignedBundleVerifiesAndSaysWhoSignedIt) {
  absl::StatusOr<VerifiedManifest> verified = VerifyBundle(dir_, trusted_);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->manifest, manifest_);
  EXPECT_EQ(verified->key_id, publisher_.key_id());
  EXPECT_EQ(verified->key_id.size(), 16u);
}

TEST_F(ModelBundleTest, AFlippedByteInTheWeightsIsRefused) {
  FlipByte(dir_ + "/model.gguf", 54321);
  const absl::Status status = Verify();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), StartsWith("model bundle " + dir_ + ": model.gguf: SHA-256 "));
  EXPECT_THAT(std::string(status.message()), HasSubstr("differs from the manifest's " + HexLower(Sha256(weights_))));
  // The manifest alone still verifies: the daemon checks the file against it after mapping it.
  EXPECT_TRUE(VerifyManifest(dir_, trusted_).ok());
}

TEST_F(ModelBundleTest, ACutShortOrMissingFileIsRefused) {
  Write(dir_ + "/mmproj.gguf", "proj");
  EXPECT_THAT(std::string(Verify().message()), HasSubstr("mmproj.gguf: 4 bytes, the manifest says 9"));
  std::filesystem::remove(dir_ + "/mmproj.gguf");
  const absl::Status status = Verify();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("mmproj.gguf is listed in the manifest but missing"));
}

TEST_F(ModelBundleTest, AFlippedByteInTheManifestOrSignatureIsRefused) {
  const std::string manifest = ::airlock::testing::ReadFileOrDie(dir_ + "/manifest.json");
  // "apache-2.0" -> "apache-3.0": still a well-formed manifest, no longer the publisher's.
  Write(dir_ + "/manifest.json", absl::StrReplaceAll(manifest, {{"apache-2.0", "apache-3.0"}}));
  absl::Status status = Verify();
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(status.message()), HasSubstr("does not verify (the manifest or its signature was altered)"));

  Write(dir_ + "/manifest.json", manifest);
  ASSERT_TRUE(Verify().ok());
  const std::string sig = ::airlock::testing::ReadFileOrDie(dir_ + "/manifest.sig");
  const size_t at = sig.find("\"signature\": \"") + 14;
  std::string altered = sig;
  altered[at] = altered[at] == '0' ? '1' : '0';
  Write(dir_ + "/manifest.sig", altered);
  EXPECT_THAT(std::string(Verify().message()), HasSubstr("does not verify"));
}

TEST_F(ModelBundleTest, ABundleSignedByAKeyNobodyTrustsIsRefused) {
  const Ed25519PrivateKey other = NewKey();
  absl::StatusOr<TrustedPublishers> only_other = TrustedPublishers::FromPems({other.public_key_pem()});
  ASSERT_TRUE(only_other.ok());
  const absl::Status status = VerifyBundle(dir_, *only_other).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrCat("signed by key ", publisher_.key_id(),
                                                       ", which is not a trusted publisher (trusted: ", other.key_id(),
                                                       ")")));
  // Re-signed by the other key over the same bytes: now that key's bundle, and refused by a site
  // trusting only the first.
  ASSERT_TRUE(WriteSignedManifest(dir_, manifest_, other).ok());
  EXPECT_TRUE(VerifyBundle(dir_, *only_other).ok());
  EXPECT_THAT(std::string(Verify().message()), HasSubstr("which is not a trusted publisher"));
}

TEST_F(ModelBundleTest, AnUnsignedDirectoryIsNotABundle) {
  std::filesystem::remove(dir_ + "/manifest.sig");
  const absl::Status status = Verify();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "model bundle " + dir_ + ": manifest.sig is missing (not a signed model bundle?)");
}

TEST(ModelManifestTest, JsonRoundTripsAndHostileManifestsAreRefusedByField) {
  ModelManifest m;
  m.name = "m";
  m.version = "1";
  m.architecture = "llama";
  m.quantisation = "F32";
  m.licence = "mit";
  m.created = "2026-11-24T00:00:00Z";
  m.files = {{"a.gguf", 3, std::string(64, 'a')}};
  const std::string json = ManifestJson(m);
  absl::StatusOr<ModelManifest> parsed = ParseManifest(json);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, m);

  const auto error = [&](const std::string& from, const std::string& to) {
    const std::string altered = absl::StrReplaceAll(json, {{from, to}});
    EXPECT_NE(altered, json) << from;
    absl::StatusOr<ModelManifest> p = ParseManifest(altered);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << to;
    return std::string(p.status().message());
  };
  EXPECT_EQ(error("\"a.gguf\"", "\"../../etc/passwd\""),
            "manifest.json: files[0].name: \"../../etc/passwd\" is not a plain file name of the bundle");
  EXPECT_THAT(error("\"a.gguf\"", "\".hidden\""), HasSubstr("is not a plain file name"));
  EXPECT_THAT(error("\"a.gguf\"", "\"manifest.sig\""), HasSubstr("files[0].name: \"manifest.sig\" is reserved"));
  EXPECT_THAT(error("\"name\": \"m\"", "\"name\": \"../m\""), HasSubstr("manifest.json: name: \"../m\" must be"));
  EXPECT_THAT(error(std::string(64, 'a'), std::string(63, 'a')), HasSubstr("files[0].sha256: must be 64 lowercase"));
  EXPECT_THAT(error("\"size\": 3", "\"size\": -3"), HasSubstr("files[0].size: must be a byte count"));
  EXPECT_THAT(error("\"licence\"", "\"license\""), HasSubstr("unknown key \"license\""));
  EXPECT_THAT(error("airlock-model-bundle/1", "airlock-model-bundle/9"), HasSubstr("is not airlock-model-bundle/1"));
  EXPECT_THAT(error("\"version\": \"1\"", "\"version\": \"\""), HasSubstr("manifest.json: version: must not be empty"));
  EXPECT_EQ(ParseManifest("[1, 2").status().message(), "manifest.json: not a JSON object");
  EXPECT_THAT(std::string(ParseManifest(absl::StrReplaceAll(json, {{"\"files\": [", "\"files\": [], \"x\": ["}}))
                              .status()
                              .message()),
              HasSubstr("unknown key"));
  // Two entries with one name.
  m.files.push_back(m.files[0]);
  EXPECT_THAT(std::string(ParseManifest(ManifestJson(m)).status().message()),
              HasSubstr("files[1].name: \"a.gguf\" is reserved or repeated"));
}

TEST(Ed25519Test, SignaturesVerifyOnlyForTheirDataAndKey) {
  const Ed25519PrivateKey a = NewKey();
  const Ed25519PrivateKey b = NewKey();
  absl::StatusOr<Ed25519PublicKey> a_public = Ed25519PublicKey::FromPem(a.public_key_pem(), "a");
  ASSERT_TRUE(a_public.ok());
  const std::string signature = a.Sign("data");
  EXPECT_EQ(signature.size(), kEd25519SignatureSize);
  EXPECT_TRUE(a_public->Verify("data", signature));
  EXPECT_FALSE(a_public->Verify("datb", signature));
  EXPECT_FALSE(a_public->Verify("data", b.Sign("data")));
  EXPECT_FALSE(a_public->Verify("data", signature.substr(1)));
  EXPECT_EQ(a_public->key_id(), a.key_id());
  EXPECT_NE(a.key_id(), b.key_id());
  // An RSA or EC key is not accepted as an Ed25519 one.
  absl::StatusOr<PemKeyPair> ca = CreateCertificateAuthority("CA", absl::Hours(1));
  ASSERT_TRUE(ca.ok());
  absl::StatusOr<Ed25519PrivateKey> ec = Ed25519PrivateKey::FromPem(ca->key_pem, "the CA key");
  EXPECT_EQ(ec.status().message(), "the CA key is not an Ed25519 key");
  EXPECT_THAT(std::string(Ed25519PublicKey::FromPem("junk", "publisher key x").status().message()),
              StartsWith("cannot parse publisher key x (a PUBLIC KEY PEM)"));
}

}  // namespace
}  // namespace airlock::auth

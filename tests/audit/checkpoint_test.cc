// Tests of signed checkpoints: Ed25519 sign/verify, wrong keys, golden bytes, strict decode.
#include "audit/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <random>
#include <string>

#include "audit/audit_record.h"

namespace airlock::audit {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// RFC 8032 section 7.1, test 1: the private key 9d61b19d..., as PKCS#8 PEM. Its public key is
// d75a9801...511a; key id = first 16 hex of SHA-256 over those 32 bytes.
constexpr std::string_view kRfc8032Pem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
    "-----END PRIVATE KEY-----\n";
constexpr std::string_view kRfc8032KeyId = "21fe31dfa154a261";
// Ed25519 is deterministic: the signature of the checkpoint (7, 32 x 0x33, 1700000000000000) under
// that key, computed independently (Python cryptography) over the documented signed data.
constexpr std::string_view kGoldenSignatureHex =
    "7f6a22a511232557df99729188ebc314091a0989077149758ef6bb1de48010bc"
    "7daf39c284a2a75caf01b1c2791fa617910b0197b388a196ddfcc4ba09a5dd05";

CheckpointSigner NewSigner() {
  auto pem = GenerateSigningKeyPem();
  EXPECT_TRUE(pem.ok()) << pem.status();
  auto signer = CheckpointSigner::FromPrivateKeyPem(*pem);
  EXPECT_TRUE(signer.ok()) << signer.status();
  return *std::move(signer);
}

TEST(CheckpointTest, SignAndVerify) {
  const CheckpointSigner signer = NewSigner();
  const Checkpoint checkpoint = signer.Sign(42, std::string(32, 'h'), 1234567);
  EXPECT_EQ(checkpoint.sequence, 42u);
  EXPECT_EQ(checkpoint.chain_hash, std::string(32, 'h'));
  EXPECT_EQ(checkpoint.time_unix_micros, 1234567);
  EXPECT_EQ(checkpoint.key_id, signer.key_id());
  EXPECT_EQ(checkpoint.signature.size(), kSignatureSize);
  EXPECT_TRUE(VerifyCheckpoint(checkpoint, signer.PublicKeyPem()).ok());
  EXPECT_THAT(signer.PublicKeyPem(), StartsWith("-----BEGIN PUBLIC KEY-----"));
  EXPECT_EQ(signer.key_id().size(), kKeyIdSize);
  EXPECT_EQ(signer.key_id().find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(CheckpointTest, GoldenKeyIdAndSignature) {
  auto signer = CheckpointSigner::FromPrivateKeyPem(kRfc8032Pem);
  ASSERT_TRUE(signer.ok()) << signer.status();
  EXPECT_EQ(signer->key_id(), kRfc8032KeyId);
  const Checkpoint checkpoint = signer->Sign(7, std::string(32, '\x33'), 1700000000000000);
  EXPECT_EQ(HexLower(checkpoint.signature), kGoldenSignatureHex);
  EXPECT_EQ(auth::Ed25519KeyId(std::string(
                "\xd7\x5a\x98\x01\x82\xb1\x0a\xb7\xd5\x4b\xfe\xd3\xc9\x64\x07\x3a\x0e\xe1\x72\xf3"
                "\xda\xa6\x23\x25\xaf\x02\x1a\x68\xf7\x07\x51\x1a",
                32)),
            kRfc8032KeyId);
}

TEST(CheckpointTest, GoldenSignedDataAndEncoding) {
  Checkpoint checkpoint;
  checkpoint.sequence = 7;
  checkpoint.chain_hash = std::string(32, '\x33');
  checkpoint.time_unix_micros = 1700000000000000;
  checkpoint.key_id = "0123456789abcdef";
  checkpoint.signature = std::string(64, '\x44');
  EXPECT_EQ(HexLower(CheckpointSignedData(checkpoint)),
            "6169726c6f636b2d61756469742d636865636b706f696e742d76310000000000"
            "0000000700000020333333333333333333333333333333333333333333333333"
            "333333333333333300060a24181e400000000010303132333435363738396162"
            "63646566");
  EXPECT_EQ(HexLower(EncodeCheckpoint(checkpoint)),
            "414c435001010000000000000007020000002033333333333333333333333333"
            "333333333333333333333333333333333333330300060a24181e400004000000"
            "1030313233343536373839616263646566050000004044444444444444444444"
            "4444444444444444444444444444444444444444444444444444444444444444"
            "44444444444444444444444444444444444444444444");
}

TEST(CheckpointTest, EncodeDecodeRoundTrip) {
  const CheckpointSigner signer = NewSigner();
  const Checkpoint checkpoint = signer.Sign(UINT64_MAX, std::string(32, '\x01'), -17);
  auto decoded = DecodeCheckpoint(EncodeCheckpoint(checkpoint));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, checkpoint);
  EXPECT_TRUE(VerifyCheckpoint(*decoded, signer.PublicKeyPem()).ok());
}

TEST(CheckpointTest, WrongKeyIsRefused) {
  const CheckpointSigner signer = NewSigner();
  const CheckpointSigner other = NewSigner();
  ASSERT_NE(signer.key_id(), other.key_id());
  const Checkpoint checkpoint = signer.Sign(1, std::string(32, 'h'), 1);
  absl::Status status = VerifyCheckpoint(checkpoint, other.PublicKeyPem());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("key id"));

  // Same key id claimed, signature from another key: still refused.
  Checkpoint forged = other.Sign(1, std::string(32, 'h'), 1);
  forged.key_id = signer.key_id();
  status = VerifyCheckpoint(forged, signer.PublicKeyPem());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("signature does not verify"));
}

TEST(CheckpointTest, EveryTamperedFieldIsRefused) {
  const CheckpointSigner signer = NewSigner();
  const Checkpoint good = signer.Sign(9, std::string(32, 'h'), 555);
  std::vector<Checkpoint> bad(5, good);
  bad[0].sequence = 10;
  bad[1].chain_hash[31] ^= 1;
  bad[2].time_unix_micros = 556;
  bad[3].signature[0] ^= 1;
  bad[4].signature[63] ^= 0x80;
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(VerifyCheckpoint(bad[i], signer.PublicKeyPem()).code(), absl::StatusCode::kDataLoss)
        << "field " << i;
  }
  Checkpoint short_signature = good;
  short_signature.signature.pop_back();
  EXPECT_FALSE(VerifyCheckpoint(short_signature, signer.PublicKeyPem()).ok());
}

TEST(CheckpointTest, VerifierIsReusable) {
  const CheckpointSigner signer = NewSigner();
  auto verifier = CheckpointVerifier::FromPublicKeyPem(signer.PublicKeyPem());
  ASSERT_TRUE(verifier.ok()) << verifier.status();
  EXPECT_EQ(verifier->key_id(), signer.key_id());
  for (uint64_t sequence = 1; sequence <= 50; ++sequence) {
    EXPECT_TRUE(verifier->Verify(signer.Sign(sequence, std::string(32, 'x'), 0)).ok());
  }
}

TEST(CheckpointTest, BadKeysAreInvalidArgument) {
  EXPECT_EQ(CheckpointSigner::FromPrivateKeyPem("not a pem").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckpointSigner::FromPrivateKeyPem("").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckpointVerifier::FromPublicKeyPem("garbage").status().code(),
            absl::StatusCode::kInvalidArgument);
  // A private key where a public key is expected.
  auto pem = GenerateSigningKeyPem();
  ASSERT_TRUE(pem.ok());
  EXPECT_EQ(CheckpointVerifier::FromPublicKeyPem(*pem).status().code(),
            absl::StatusCode::kInvalidArgument);

  // An EC P-256 key is a valid key, but not Ed25519.
  EVP_PKEY* ec = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  ASSERT_NE(ec, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PrivateKey(bio, ec, nullptr, nullptr, 0, nullptr, nullptr), 1);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);  // NOLINT(runtime/int)
  const std::string ec_pem(data, static_cast<size_t>(size));
  BIO_free(bio);
  EVP_PKEY_free(ec);
  auto signer = CheckpointSigner::FromPrivateKeyPem(ec_pem);
  EXPECT_EQ(signer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(signer.status().message()), HasSubstr("Ed25519"));
}

TEST(CheckpointTest, HostileDecode) {
  const CheckpointSigner signer = NewSigner();
  const std::string good = EncodeCheckpoint(signer.Sign(3, std::string(32, 'h'), 4));
  for (size_t length = 0; length < good.size(); ++length) {
    auto decoded = DecodeCheckpoint(std::string_view(good).substr(0, length));
    ASSERT_FALSE(decoded.ok()) << length;
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_FALSE(DecodeCheckpoint(good + "x").ok());
  std::string wrong_version = good;
  wrong_version[4] = 2;
  EXPECT_THAT(std::string(DecodeCheckpoint(wrong_version).status().message()),
              HasSubstr("version"));

  Checkpoint odd = signer.Sign(3, std::string(31, 'h'), 4);
  EXPECT_FALSE(DecodeCheckpoint(EncodeCheckpoint(odd)).ok());
  odd = signer.Sign(3, std::string(32, 'h'), 4);
  odd.key_id += "0";
  EXPECT_FALSE(DecodeCheckpoint(EncodeCheckpoint(odd)).ok());
  odd = signer.Sign(3, std::string(32, 'h'), 4);
  odd.signature.pop_back();
  EXPECT_FALSE(DecodeCheckpoint(EncodeCheckpoint(odd)).ok());

  std::mt19937_64 rng(99);
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = good;
    for (int f = 0; f < 3; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    auto decoded = DecodeCheckpoint(bytes);
    if (decoded.ok()) {
      EXPECT_EQ(EncodeCheckpoint(*decoded), bytes);
    }
    std::string random(rng() % 200, '\0');
    for (char& c : random) c = static_cast<char>(rng());
    EXPECT_FALSE(DecodeCheckpoint(random).ok());
  }
}

}  // namespace
}  // namespace airlock::audit

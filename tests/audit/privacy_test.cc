// Tests of audit privacy: HMAC-SHA256 known answers (RFC 4231) and AES-256-GCM sealing.
#include "audit/privacy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "audit/audit_record.h"

namespace airlock::audit {
namespace {

std::string Unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::string TestKey() {
  std::string key;
  for (int i = 0; i < 32; ++i) key.push_back(static_cast<char>(i));
  return key;
}

// RFC 4231 test cases 1, 2 and 6 (HMAC-SHA-256).
TEST(PrivacyTest, HmacSha256Rfc4231) {
  EXPECT_EQ(HexLower(HmacSha256(std::string(20, '\x0b'), "Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(HexLower(HmacSha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(HexLower(HmacSha256(std::string(131, '\xaa'),
                                "Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(PrivacyTest, HmacDependsOnSecretAndText) {
  EXPECT_EQ(HmacSha256("s", "text").size(), kHmacSize);
  EXPECT_NE(HmacSha256("s1", "text"), HmacSha256("s2", "text"));
  EXPECT_NE(HmacSha256("s", "text"), HmacSha256("s", "text "));
  EXPECT_EQ(HmacSha256("", "").size(), kHmacSize);
}

TEST(PrivacyTest, SealOpenRoundTrip) {
  const std::string key = TestKey();
  for (size_t size : {0, 1, 15, 16, 17, 1000, 100000}) {
    std::string plaintext(size, '\0');
    for (size_t i = 0; i < size; ++i) plaintext[i] = static_cast<char>(i * 7);
    auto sealed = Seal(key, plaintext, "req-1");
    ASSERT_TRUE(sealed.ok()) << sealed.status();
    EXPECT_EQ(sealed->size(), plaintext.size() + kSealOverhead);
    EXPECT_EQ((*sealed)[0], static_cast<char>(kSealVersion));
    auto opened = Open(key, *sealed, "req-1");
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_EQ(*opened, plaintext);
  }
}

TEST(PrivacyTest, EverySealUsesAFreshNonce) {
  const std::string key = TestKey();
  std::set<std::string> nonces;
  for (int i = 0; i < 100; ++i) {
    auto sealed = Seal(key, "same text", "req");
    ASSERT_TRUE(sealed.ok());
    nonces.insert(sealed->substr(1, kSealNonceSize));
  }
  EXPECT_EQ(nonces.size(), 100u);
}

// A sealed text built independently (Python cryptography's AESGCM) with key 00..1f, nonce
// 64..6f, authenticated data 0x01 || "req-42", over "the prompt text": Open must accept it.
TEST(PrivacyTest, OpensAnIndependentlySealedText) {
  const std::string sealed = Unhex(
      "016465666768696a6b6c6d6e6f3c73bb46099b39f34e167f9cbf1d1ead191d6d462bb51c50653de04a185fb6");
  auto opened = Open(TestKey(), sealed, "req-42");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "the prompt text");
}

TEST(PrivacyTest, TamperingIsRefused) {
  const std::string key = TestKey();
  auto sealed = Seal(key, "confidential prompt", "req-7");
  ASSERT_TRUE(sealed.ok());
  for (size_t i = 0; i < sealed->size(); ++i) {
    std::string bad = *sealed;
    bad[i] ^= 0x01;
    auto opened = Open(key, bad, "req-7");
    ASSERT_FALSE(opened.ok()) << "byte " << i;
    EXPECT_EQ(opened.status().code(),
              i == 0 ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kDataLoss)
        << "byte " << i;
  }
  // Wrong associated data (the sealed text moved to another request), wrong key.
  EXPECT_EQ(Open(key, *sealed, "req-8").status().code(), absl::StatusCode::kDataLoss);
  std::string other_key = key;
  other_key[0] ^= 1;
  EXPECT_EQ(Open(other_key, *sealed, "req-7").status().code(), absl::StatusCode::kDataLoss);
  // Every truncation.
  for (size_t length = 0; length < sealed->size(); ++length) {
    EXPECT_FALSE(Open(key, sealed->substr(0, length), "req-7").ok()) << length;
  }
}

TEST(PrivacyTest, KeySizeIsChecked) {
  EXPECT_EQ(Seal(std::string(16, 'k'), "x", "r").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Open(std::string(33, 'k'), std::string(40, 'x'), "r").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PrivacyTest, GenerateSecret) {
  auto a = GenerateSecret();
  auto b = GenerateSecret();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), kSealKeySize);
  EXPECT_NE(*a, *b);
  auto sealed = Seal(*a, "text", "");
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(*Open(*a, *sealed, ""), "text");
}

}  // namespace
}  // namespace airlock::audit

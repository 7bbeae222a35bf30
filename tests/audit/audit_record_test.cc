// Tests of the canonical audit record encoding: round trips, golden bytes, strict hostile decode.
#include "audit/audit_record.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

namespace airlock::audit {
namespace {

using ::testing::HasSubstr;

std::string Unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

// The fixed record of the golden test (docs/audit.md walks through its bytes).
ChainedRecord GoldenRecord() {
  ChainedRecord chained;
  chained.sequence = 7;
  chained.prev_hash = std::string(32, '\x11');
  AuditRecord& r = chained.record;
  r.phase = Phase::kEnd;
  r.decision = Decision::kAllowed;
  r.time_unix_micros = 1700000000123456;
  r.request_id = "req-1";
  r.identity = "alice";
  r.subject = "CN=alice";
  r.cert_fingerprint = "ab12";
  r.peer = "ipv4:10.0.0.5:5123";
  r.method = "/airlock.v1.Inference/Generate";
  r.model = "tiny";
  r.sampling = "temperature=0.7";
  r.prompt_tokens = 12;
  r.completion_tokens = 34;
  r.stop_reason = "eos";
  r.status_code = -1;
  r.latency_micros = 56789;
  r.prompt_hmac = std::string(32, '\x22');
  r.output_hmac = "";
  r.sealed_text = std::string("\x01\x02", 2);
  return chained;
}

// Computed independently from the layout in docs/audit.md (a Python encoder), not from our code.
constexpr std::string_view kGoldenHex =
    "414c415201010000000000000007020000002011111111111111111111111111"
    "11111111111111111111111111111111111111030204010500060a2418202240"
    "06000000057265712d310700000005616c6963650800000008434e3d616c6963"
    "650900000004616231320a00000012697076343a31302e302e302e353a353132"
    "330b0000001e2f6169726c6f636b2e76312e496e666572656e63652f47656e65"
    "726174650c0000000474696e790d0000000f74656d70657261747572653d302e"
    "370e0000000c0f000000221000000003656f7311ffffffff12000000000000dd"
    "d513000000202222222222222222222222222222222222222222222222222222"
    "222222222222140000000015000000020102";
constexpr std::string_view kGoldenChainHashHex =
    "992bdfd2230b828748d0371dbbe58e9c71f1dd9e71dde59de5a6831a9af739ae";

TEST(AuditRecordTest, GoldenBytes) {
  const std::string encoded = EncodeRecord(GoldenRecord());
  EXPECT_EQ(HexLower(encoded), kGoldenHex);
  EXPECT_EQ(encoded.size(), 274u);
}

TEST(AuditRecordTest, GoldenChainHash) {
  const ChainedRecord chained = GoldenRecord();
  EXPECT_EQ(HexLower(ChainHash(chained.prev_hash, EncodeRecord(chained))), kGoldenChainHashHex);
  const ChainedRecord made = Chain(chained.sequence, chained.prev_hash, chained.record);
  EXPECT_EQ(HexLower(made.hash), kGoldenChainHashHex);
  EXPECT_EQ(made.sequence, 7u);
  EXPECT_EQ(made.record, chained.record);
}

TEST(AuditRecordTest, RoundTripFullRecord) {
  ChainedRecord chained = GoldenRecord();
  chained.record.status_code = INT32_MIN;
  chained.record.time_unix_micros = -5;  // before 1970: still exact
  chained.record.prompt_tokens = UINT32_MAX;
  chained.record.latency_micros = UINT64_MAX;
  chained.record.output_hmac = std::string(32, '\0');
  chained.record.identity = std::string("nul\0inside", 10);
  chained.sequence = UINT64_MAX;
  auto decoded = DecodeRecord(EncodeRecord(chained));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, chained);
  EXPECT_TRUE(decoded->hash.empty());
}

TEST(AuditRecordTest, RoundTripDefaultRecordAndEveryEnumValue) {
  for (Phase phase : {Phase::kBegin, Phase::kEnd, Phase::kAdmin}) {
    for (Decision decision : {Decision::kAllowed, Decision::kDeniedByRole, Decision::kDeniedByQuota,
                              Decision::kInvalid, Decision::kUnauthenticated}) {
      AuditRecord record;
      record.phase = phase;
      record.decision = decision;
      const ChainedRecord chained = Chain(1, GenesisHash(), record);
      auto decoded = DecodeRecord(EncodeRecord(chained));
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      EXPECT_EQ(decoded->record, record);
      EXPECT_EQ(decoded->prev_hash, GenesisHash());
    }
  }
}

TEST(AuditRecordTest, StoredFormKeepsTheStoredHash) {
  const ChainedRecord chained = Chain(3, std::string(32, 'p'), GoldenRecord().record);
  const std::string stored = EncodeStoredRecord(chained);
  EXPECT_EQ(stored.size(), EncodeRecord(chained).size() + kHashSize);
  auto decoded = DecodeStoredRecord(stored);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, chained);

  // A wrong stored hash is kept as stored (the verifier's job to notice), not recomputed.
  std::string forged = stored;
  forged.back() ^= 1;
  auto kept = DecodeStoredRecord(forged);
  ASSERT_TRUE(kept.ok());
  EXPECT_NE(kept->hash, chained.hash);

  EXPECT_FALSE(DecodeStoredRecord("short").ok());
  EXPECT_FALSE(DecodeStoredRecord("").ok());
}

TEST(AuditRecordTest, EveryFieldChangesTheHash) {
  const ChainedRecord base = Chain(7, std::string(32, '\x11'), GoldenRecord().record);
  std::vector<ChainedRecord> variants(22, base);
  variants[0].sequence = 8;
  variants[1].prev_hash[0] ^= 1;
  variants[2].record.phase = Phase::kBegin;
  variants[3].record.decision = Decision::kDeniedByRole;
  variants[4].record.time_unix_micros += 1;
  variants[5].record.request_id += "x";
  variants[6].record.identity += "x";
  variants[7].record.subject += "x";
  variants[8].record.cert_fingerprint += "x";
  variants[9].record.peer += "x";
  variants[10].record.method += "x";
  variants[11].record.model += "x";
  variants[12].record.sampling += "x";
  variants[13].record.prompt_tokens += 1;
  variants[14].record.completion_tokens += 1;
  variants[15].record.stop_reason += "x";
  variants[16].record.status_code += 1;
  variants[17].record.latency_micros += 1;
  variants[18].record.prompt_hmac[5] ^= 1;
  variants[19].record.output_hmac = std::string(32, 'o');
  variants[20].record.sealed_text += "x";
  // Moving a byte between adjacent text fields must change the encoding (length prefixes).
  variants[21].record.request_id = "req-1a";
  variants[21].record.identity = "lice";
  for (size_t i = 0; i < variants.size(); ++i) {
    EXPECT_NE(ChainHash(variants[i].prev_hash, EncodeRecord(variants[i])), base.hash)
        << "variant " << i;
  }
}

TEST(AuditRecordTest, EveryTruncationIsRejected) {
  const std::string encoded = EncodeRecord(GoldenRecord());
  for (size_t length = 0; length < encoded.size(); ++length) {
    auto decoded = DecodeRecord(std::string_view(encoded).substr(0, length));
    ASSERT_FALSE(decoded.ok()) << "length " << length;
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(AuditRecordTest, TrailingBytesAreRejected) {
  const std::string encoded = EncodeRecord(GoldenRecord()) + std::string(1, '\0');
  auto decoded = DecodeRecord(encoded);
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(std::string(decoded.status().message()), HasSubstr("trailing"));
}

TEST(AuditRecordTest, StrictFieldRules) {
  const std::string good = EncodeRecord(GoldenRecord());
  auto expect_rejected = [](std::string bytes, std::string_view why) {
    auto decoded = DecodeRecord(bytes);
    ASSERT_FALSE(decoded.ok()) << why;
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << why;
    EXPECT_THAT(std::string(decoded.status().message()), HasSubstr(std::string(why)));
  };
  {
    std::string bad = good;
    bad[0] = 'X';
    expect_rejected(bad, "magic");
  }
  {
    std::string bad = good;
    bad[4] = 2;
    expect_rejected(bad, "version");
  }
  {
    std::string bad = good;
    bad[5] = 2;  // the sequence tag
    expect_rejected(bad, "sequence");
  }
  // Offsets in the golden layout: phase tag at 51, decision tag at 53, request_id tag at 64.
  {
    std::string bad = good;
    ASSERT_EQ(bad[51], 3);
    bad[52] = 0;
    expect_rejected(bad, "phase");
    bad[52] = 4;
    expect_rejected(bad, "phase");
  }
  {
    std::string bad = good;
    ASSERT_EQ(bad[53], 4);
    bad[54] = 6;
    expect_rejected(bad, "decision");
  }
  {
    ChainedRecord record = GoldenRecord();
    record.prev_hash = std::string(31, 'a');
    expect_rejected(EncodeRecord(record), "prev_hash");
    record.prev_hash = "";
    expect_rejected(EncodeRecord(record), "prev_hash");
  }
  {
    ChainedRecord record = GoldenRecord();
    record.record.prompt_hmac = std::string(16, 'a');
    expect_rejected(EncodeRecord(record), "prompt_hmac");
    record = GoldenRecord();
    record.record.output_hmac = std::string(33, 'a');
    expect_rejected(EncodeRecord(record), "output_hmac");
  }
  {
    // A length that claims 4 GiB must fail cleanly, without allocating it.
    std::string bad = good;
    ASSERT_EQ(bad[64], 6);
    bad.replace(65, 4, "\xff\xff\xff\xff");
    expect_rejected(bad, "request_id");
  }
}

TEST(AuditRecordTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(20261123);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(rng() % 300, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    if (i % 2 == 0 && bytes.size() >= 5) bytes.replace(0, 5, std::string("ALAR\x01", 5));
    accepted += DecodeRecord(bytes).ok() ? 1 : 0;
  }
  EXPECT_EQ(accepted, 0);
}

TEST(AuditRecordTest, MutatedEncodingsNeverCrashAndReencodeExactly) {
  const std::string good = EncodeRecord(GoldenRecord());
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    auto decoded = DecodeRecord(bytes);
    // Whatever decodes must be canonical: its encoding is exactly the input.
    if (decoded.ok()) {
      EXPECT_EQ(EncodeRecord(*decoded), bytes);
    }
  }
}

TEST(AuditRecordTest, NamesAreStable) {
  EXPECT_EQ(PhaseName(Phase::kBegin), "begin");
  EXPECT_EQ(PhaseName(Phase::kEnd), "end");
  EXPECT_EQ(PhaseName(Phase::kAdmin), "admin");
  EXPECT_EQ(PhaseName(static_cast<Phase>(9)), "unknown");
  EXPECT_EQ(DecisionName(Decision::kAllowed), "allowed");
  EXPECT_EQ(DecisionName(Decision::kDeniedByRole), "denied_by_role");
  EXPECT_EQ(DecisionName(Decision::kDeniedByQuota), "denied_by_quota");
  EXPECT_EQ(DecisionName(Decision::kInvalid), "invalid");
  EXPECT_EQ(DecisionName(Decision::kUnauthenticated), "unauthenticated");
  EXPECT_EQ(DecisionName(static_cast<Decision>(0)), "unknown");
}

TEST(AuditRecordTest, Sha256AndHexKnownAnswers) {
  EXPECT_EQ(HexLower(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexLower(std::string("\x00\xff\x10", 3)), "00ff10");
  EXPECT_EQ(Unhex("00ff10"), std::string("\x00\xff\x10", 3));
  EXPECT_EQ(GenesisHash(), std::string(32, '\0'));
}

}  // namespace
}  // namespace airlock::audit

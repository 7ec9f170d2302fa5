// tests/test_block_hash.cpp — pkv::block_hashes and its pieces against vectors computed without pkv
// (tests/block_hash_vectors.py: Python's hashlib for SHA-256, the `xxhsum -H2` tool for XXH3-128),
// and the properties prefix caching relies on.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "pkv/pkv.hpp"

namespace {

using pkv::BlockHash;
using pkv::HashAlgorithm;
using pkv::TokenId;

constexpr HashAlgorithm kBoth[] = {HashAlgorithm::sha256, HashAlgorithm::xxh3_128};

std::vector<TokenId> iota_tokens(std::size_t n, TokenId first = 0) {
  std::vector<TokenId> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

// Hex of the bytes the algorithm fills (the known vectors are printed that long).
std::string filled_hex(const BlockHash& h, HashAlgorithm a) {
  return h.to_hex().substr(0, 2 * pkv::digest_size(a));
}

struct Vector {
  HashAlgorithm algorithm;
  const char* salt;
  const char* salt_hash;
  const char* h0;
  const char* h1;
};

// Tokens 0..9, block size 4: two full blocks ({0,1,2,3}, {4,5,6,7}); {8,9} is partial.
const Vector kVectors[] = {
    {HashAlgorithm::sha256, "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "0c47b210c9a57e664661f7ed102b192883b1368f854d43d07cadd79728a99167",
     "ceb321cb84e5f0e41624e807242967931200961a2a5965aa54451db28d6d86c2"},
    {HashAlgorithm::sha256, "tenant-a",
     "80a707af7dc77ee1228f9127180f3964835e5beb4c4ab0d812f0fe7593579b3a",
     "c2e02370ca13ea26cf1d9767073fbb3de8e45e4d66584f0189c8dc544b0b7b0f",
     "9fbd8df54e8cdb1c6eedff515ce175105f35bbcc0b0e93aed1e9348977e08390"},
    {HashAlgorithm::xxh3_128, "", "99aa06d3014798d86001c324468d497f",
     "f3edf4a85182e178bd160734e9d3c692", "253b5e2d31cb25b08e49ec89af37e1aa"},
    {HashAlgorithm::xxh3_128, "tenant-a", "840d4cd48986a98b18ab3e02a86ce641",
     "d94d032fdacc9824ff9e899c1d74acfc", "dafdfb4cdf651f440368d67cab9efb68"},
};

TEST(BlockHash, st_known_vectors) {
  const auto tokens = iota_tokens(10);
  for (const Vector& v : kVectors) {
    SCOPED_TRACE(std::string(pkv::to_string(v.algorithm)) + " salt '" + v.salt + "'");
    EXPECT_EQ(filled_hex(pkv::salt_hash(v.salt, v.algorithm), v.algorithm), v.salt_hash);
    const auto hs = pkv::block_hashes(tokens, 4, v.salt, v.algorithm);
    ASSERT_EQ(hs.size(), 2u);
    EXPECT_EQ(filled_hex(hs[0], v.algorithm), v.h0);
    EXPECT_EQ(filled_hex(hs[1], v.algorithm), v.h1);
  }
}

TEST(BlockHash, st_empty_salt_sha256_is_sha256_of_nothing) {
  EXPECT_EQ(pkv::salt_hash("", HashAlgorithm::sha256).to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(BlockHash, st_tokens_are_hashed_little_endian) {
  const std::vector<TokenId> t = {0x01020304u, 0xFFFFFFFEu};
  EXPECT_EQ(
      pkv::chain_hash(pkv::salt_hash("", HashAlgorithm::sha256), t, HashAlgorithm::sha256).to_hex(),
      "6c0d76e33d09a6a8dcd6c6af91ecd953c507d7653fe9219f3170ff07a61e77bd");
  EXPECT_EQ(filled_hex(pkv::chain_hash(pkv::salt_hash("", HashAlgorithm::xxh3_128), t,
                                       HashAlgorithm::xxh3_128),
                       HashAlgorithm::xxh3_128),
            "dd905b3fce613c38ed1b734ce8b23ef6");
}

// 300-token blocks: longer than xxh3's one-shot buffer, so the streaming path is taken.
TEST(BlockHash, st_long_blocks_known_vectors) {
  std::vector<TokenId> t(600);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<TokenId>(i * 2654435761u);
  const auto s = pkv::block_hashes(t, 300, "long", HashAlgorithm::sha256);
  const auto x = pkv::block_hashes(t, 300, "long", HashAlgorithm::xxh3_128);
  ASSERT_EQ(s.size(), 2u);
  ASSERT_EQ(x.size(), 2u);
  EXPECT_EQ(s[1].to_hex(), "b5b6c5a9183c4ebc957e4eeaa61caf9373d90923d4aaaac903a57657003b4a0c");
  EXPECT_EQ(filled_hex(x[1], HashAlgorithm::xxh3_128), "06373928a0278531be477c403b9b5c31");
}

TEST(BlockHash, st_chain_pieces_agree_with_block_hashes) {
  const auto tokens = iota_tokens(70, 1000);
  for (HashAlgorithm a : kBoth) {
    const auto hs = pkv::block_hashes(tokens, 16, "s", a);
    ASSERT_EQ(hs.size(), 4u);
    BlockHash parent = pkv::salt_hash("s", a);
    for (std::size_t i = 0; i < hs.size(); ++i) {
      parent = pkv::chain_hash(parent, std::span(tokens).subspan(16 * i, 16), a);
      EXPECT_EQ(parent, hs[i]) << pkv::to_string(a) << " block " << i;
    }
  }
}

TEST(BlockHash, st_partial_last_block_is_ignored) {
  for (HashAlgorithm a : kBoth) {
    const auto full = iota_tokens(32);
    auto longer = full;
    longer.push_back(7);
    longer.push_back(8);
    EXPECT_EQ(pkv::block_hashes(full, 16, "", a), pkv::block_hashes(longer, 16, "", a));
    EXPECT_EQ(pkv::block_hashes(longer, 16, "", a).size(), 2u);
    EXPECT_TRUE(pkv::block_hashes(iota_tokens(15), 16, "", a).empty());
    EXPECT_TRUE(pkv::block_hashes({}, 16, "", a).empty());
  }
}

TEST(BlockHash, st_salt_changes_every_hash) {
  const auto tokens = iota_tokens(64);
  for (HashAlgorithm a : kBoth) {
    const auto plain = pkv::block_hashes(tokens, 16, "", a);
    const auto salted = pkv::block_hashes(tokens, 16, "tenant-a", a);
    const auto other = pkv::block_hashes(tokens, 16, "tenant-b", a);
    ASSERT_EQ(plain.size(), 4u);
    for (std::size_t i = 0; i < plain.size(); ++i) {
      EXPECT_NE(plain[i], salted[i]) << i;
      EXPECT_NE(salted[i], other[i]) << i;
    }
  }
}

TEST(BlockHash, st_equal_prefixes_equal_leading_hashes) {
  for (HashAlgorithm a : kBoth) {
    auto x = iota_tokens(64);
    auto y = x;
    y[40] = 99999;  // differs inside block 2
    const auto hx = pkv::block_hashes(x, 16, "", a);
    const auto hy = pkv::block_hashes(y, 16, "", a);
    EXPECT_EQ(hx[0], hy[0]);
    EXPECT_EQ(hx[1], hy[1]);
    EXPECT_NE(hx[2], hy[2]);
    EXPECT_NE(hx[3], hy[3]);  // equal tokens, different parent: the chain keeps them apart
    // Same tokens at another position do not collide either: block 0 of {16..31} is not block 1.
    const auto shifted = pkv::block_hashes(std::span(x).subspan(16), 16, "", a);
    EXPECT_NE(shifted[0], hx[1]);
  }
}

TEST(BlockHash, st_xxh3_leaves_upper_16_bytes_zero) {
  const auto hs = pkv::block_hashes(iota_tokens(48), 16, "z", HashAlgorithm::xxh3_128);
  std::vector<BlockHash> all = hs;
  all.push_back(pkv::salt_hash("z", HashAlgorithm::xxh3_128));
  for (const BlockHash& h : all) {
    for (std::size_t i = 16; i < 32; ++i) EXPECT_EQ(h.bytes[i], 0) << i;
    bool any = false;
    for (std::size_t i = 0; i < 16; ++i) any |= h.bytes[i] != 0;
    EXPECT_TRUE(any);
  }
}

TEST(BlockHash, st_hex_print_and_order) {
  BlockHash h;
  h.bytes[0] = 0xAB;
  h.bytes[1] = 0x05;
  h.bytes[31] = 0xF0;
  const std::string expect = "ab05" + std::string(58, '0') + "f0";
  EXPECT_EQ(h.to_hex(), expect);
  std::ostringstream os;
  os << h;
  EXPECT_EQ(os.str(), expect);

  BlockHash lo, hi;
  hi.bytes[0] = 1;
  lo.bytes[31] = 0xFF;
  EXPECT_LT(lo, hi);  // bytewise: byte 0 decides first
  EXPECT_FALSE(hi < lo);
  EXPECT_NE(lo, hi);
  EXPECT_EQ(lo, lo);
}

TEST(BlockHash, st_unordered_set) {
  std::unordered_set<BlockHash> set;
  for (HashAlgorithm a : kBoth) {
    for (const BlockHash& h : pkv::block_hashes(iota_tokens(16 * 100), 16, "", a)) {
      EXPECT_TRUE(set.insert(h).second);
    }
  }
  EXPECT_EQ(set.size(), 200u);
  const auto again = pkv::block_hashes(iota_tokens(16 * 100), 16, "", HashAlgorithm::sha256);
  for (const BlockHash& h : again) EXPECT_EQ(set.count(h), 1u);
  EXPECT_EQ(set.count(pkv::salt_hash("never", HashAlgorithm::sha256)), 0u);
}

TEST(BlockHash, st_block_size_zero_is_rejected) {
  const auto tokens = iota_tokens(8);
  for (HashAlgorithm a : kBoth) {
    try {
      (void)pkv::block_hashes(tokens, 0, "", a);
      ADD_FAILURE() << "no exception";
    } catch (const std::invalid_argument& e) {
      EXPECT_STREQ(e.what(), "block_hashes: block_size must be positive");
    }
  }
}

TEST(BlockHash, st_algorithm_names) {
  for (HashAlgorithm a : kBoth) EXPECT_EQ(pkv::parse_hash_algorithm(pkv::to_string(a)), a);
  EXPECT_EQ(pkv::parse_hash_algorithm("md5"), std::nullopt);
  EXPECT_EQ(pkv::digest_size(HashAlgorithm::sha256), 32u);
  EXPECT_EQ(pkv::digest_size(HashAlgorithm::xxh3_128), 16u);
}

// Each thread gets its own libcrypto context: concurrent hashing gives the sequential values.
TEST(BlockHash, mt_threads_agree) {
  const auto tokens = iota_tokens(16 * 64);
  const auto expect = pkv::block_hashes(tokens, 16, "mt", HashAlgorithm::sha256);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (pkv::block_hashes(tokens, 16, "mt", HashAlgorithm::sha256) != expect) {
          mismatches.fetch_add(1, std::memory_order_relaxed);  // counter only; joined below
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace

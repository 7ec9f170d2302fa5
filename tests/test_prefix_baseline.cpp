// tests/test_prefix_baseline.cpp — the prefix-caching cases (prefix_cache_cases.hpp) against the
// vLLM-style baseline (baselines/prefix_baseline.hpp), with both hash algorithms, and what is
// particular to the baseline.
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>

#include "baselines/prefix_baseline.hpp"
#include "prefix_cache_cases.hpp"

namespace pkv_test {
namespace {

using pkv::HashAlgorithm;
using pkv::baseline::PrefixBaseline;

template <HashAlgorithm A>
struct Baseline {
  using Cache = PrefixBaseline;
  static std::unique_ptr<Cache> make(std::size_t num_blocks, std::size_t block_size) {
    return std::make_unique<Cache>(num_blocks, block_size, A);
  }
};

using BaselineTypes =
    ::testing::Types<Baseline<HashAlgorithm::sha256>, Baseline<HashAlgorithm::xxh3_128>>;
INSTANTIATE_TYPED_TEST_SUITE_P(PrefixBaseline, PrefixCacheCases, BaselineTypes);

TEST(PrefixBaselineOnly, st_constructor_rejects_zero_sizes) {
  EXPECT_THROW(PrefixBaseline(0, 16), std::invalid_argument);
  EXPECT_THROW(PrefixBaseline(4, 0), std::invalid_argument);
}

// The hashes a cache publishes are exactly pkv::block_hashes of the prompt: a prompt hashed by
// another process with the same function finds the same blocks.
TEST(PrefixBaselineOnly, st_block_size_other_than_16) {
  PrefixBaseline c(8, 4, HashAlgorithm::xxh3_128);
  const Tokens t = range_tokens(0, 10);
  ASSERT_TRUE(c.allocate(pkv::SeqId{1}, t, "x").has_value());
  ASSERT_EQ(c.commit(pkv::SeqId{1}, 10).value(), 2u);
  EXPECT_EQ(c.match_prefix(t, "x"), 8u);
  EXPECT_EQ(c.match_prefix(range_tokens(0, 9), "x"), 8u);
  EXPECT_EQ(c.match_prefix(range_tokens(0, 8), "x"), 4u);
  EXPECT_EQ(c.validate(), "");
}

}  // namespace
}  // namespace pkv_test

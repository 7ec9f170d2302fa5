// Value types: printing, hashing, Result, Error texts (the seed's), strategies.
#include <gtest/gtest.h>

#include <pkv/pkv.hpp>
#include <sstream>
#include <unordered_set>

namespace {

template <class T>
std::string str(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

TEST(Types, st_ids_print_and_compare) {
  EXPECT_EQ(str(pkv::SeqId{42}), "S42");
  EXPECT_EQ(str(pkv::BlockId{7}), "B7");
  EXPECT_EQ(pkv::to_string(pkv::SeqId{3}), "S3");
  EXPECT_EQ(pkv::to_string(pkv::BlockId{0}), "B0");
  EXPECT_LT(pkv::SeqId{1}, pkv::SeqId{2});
  EXPECT_EQ(pkv::BlockId{5}, pkv::BlockId{5});
  EXPECT_NE(pkv::BlockId{5}, pkv::BlockId{6});
}

TEST(Types, st_ids_hash) {
  std::unordered_set<pkv::SeqId> s;
  for (std::uint64_t i = 0; i < 1000; ++i) s.insert(pkv::SeqId{i});
  EXPECT_EQ(s.size(), 1000u);
  EXPECT_TRUE(s.contains(pkv::SeqId{999}));
  std::unordered_set<pkv::BlockId> b{pkv::BlockId{1}, pkv::BlockId{1}, pkv::BlockId{2}};
  EXPECT_EQ(b.size(), 2u);
}

TEST(Types, st_error_texts_are_the_seeds) {
  EXPECT_EQ(pkv::Error::out_of_memory(3, 1).message(),
            "Out of memory: requested 3 blocks, 1 available");
  EXPECT_EQ(pkv::Error::out_of_memory(3, 1).code(), pkv::Errc::out_of_memory);
  EXPECT_EQ(pkv::Error::sequence_not_found(pkv::SeqId{9}).message(), "Sequence not found: S9");
  EXPECT_EQ(pkv::Error::block_not_found(pkv::BlockId{4}).message(), "Block not found: B4");
  EXPECT_EQ(pkv::Error::invalid_operation("x").message(), "Invalid operation: x");
  EXPECT_EQ(pkv::Error::invalid_argument("y").message(), "Invalid argument: y");
  EXPECT_EQ(pkv::Error::invalid_argument("y").code(), pkv::Errc::invalid_argument);
  EXPECT_STREQ(pkv::to_string(pkv::Errc::block_not_found), "block_not_found");
  EXPECT_EQ(str(pkv::Error::block_not_found(pkv::BlockId{1})), "Block not found: B1");
}

TEST(Types, st_result_value_and_error) {
  pkv::Result<int> ok = 5;
  ASSERT_TRUE(ok.has_value());
  EXPECT_TRUE(static_cast<bool>(ok));
  EXPECT_EQ(ok.value(), 5);
  pkv::Result<int> bad = pkv::Error::sequence_not_found(pkv::SeqId{1});
  EXPECT_FALSE(bad.has_value());
  EXPECT_FALSE(static_cast<bool>(bad));
  EXPECT_EQ(bad.error().code(), pkv::Errc::sequence_not_found);

  pkv::Result<void> v;
  EXPECT_TRUE(v.has_value());
  pkv::Result<void> e = pkv::Error::invalid_operation("nope");
  EXPECT_FALSE(e);
  EXPECT_EQ(e.error().message(), "Invalid operation: nope");
}

TEST(TypesDeath, st_result_misuse_aborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  pkv::Result<int> bad = pkv::Error::sequence_not_found(pkv::SeqId{1});
  EXPECT_DEATH((void)bad.value(), "value\\(\\) on an error Result");
  pkv::Result<int> ok = 1;
  EXPECT_DEATH((void)ok.error(), "error\\(\\) on a Result that holds a value");
}

TEST(Types, st_strategy_printing_matches_seed) {
  EXPECT_EQ(str(pkv::EvictionStrategy::lru()), "LRU");
  EXPECT_EQ(str(pkv::EvictionStrategy::lfu()), "LFU");
  EXPECT_EQ(str(pkv::EvictionStrategy::longest_first()), "LongestFirst");
  EXPECT_EQ(str(pkv::EvictionStrategy::priority(4)), "Priority(4)");
  EXPECT_EQ(str(pkv::EvictionStrategy::streaming_llm(4, 16)), "StreamingLLM(sink=4, window=16)");
  EXPECT_EQ(pkv::EvictionStrategy{}, pkv::EvictionStrategy::lru());
  EXPECT_EQ(pkv::to_string(pkv::EvictionStrategy::priority(2)), "Priority(2)");
  static_assert(pkv::EvictionStrategy::streaming_llm(1, 2).window_tokens() == 2);
}

TEST(Types, st_sequence_info_slot_of) {
  pkv::SequenceInfo info;
  info.num_tokens = 20;
  info.token_runs = {{0, 0, 4}, {4, 16, 16}};
  EXPECT_EQ(info.slot_of(0), 0u);
  EXPECT_EQ(info.slot_of(3), 3u);
  EXPECT_EQ(info.slot_of(4), 16u);
  EXPECT_EQ(info.slot_of(19), 31u);
  EXPECT_EQ(info.slot_of(20), ~std::uint64_t{0});
  EXPECT_EQ(str(pkv::CopyOp{pkv::BlockId{1}, pkv::BlockId{2}}), "CopyOp{B1 -> B2}");
}

}  // namespace

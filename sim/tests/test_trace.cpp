// sim/tests/test_trace.cpp — Mooncake trace reading, token expansion, the infinite-cache bound and
// the shared-prefix generator (sim/trace.hpp): synthetic lines first, then the real trace.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "trace.hpp"

namespace pkv::sim {
namespace {

Trace parse(const std::string& text) {
  std::istringstream in(text);
  return parse_mooncake_trace(in, "t.jsonl");
}

// The message of the TraceError that parsing `text` throws ("" if none).
std::string parse_error(const std::string& text) {
  try {
    (void)parse(text);
  } catch (const TraceError& e) {
    return e.what();
  }
  return "";
}

TEST(Trace, st_parse_lines) {
  const Trace t = parse(
      "{\"timestamp\": 0, \"input_length\": 700, \"output_length\": 5, \"hash_ids\": [7, 8]}\n"
      "\n"
      "{\"timestamp\": 12.5, \"input_length\": 512, \"output_length\": 0, \"hash_ids\": [7]}\n");
  ASSERT_EQ(t.requests.size(), 2u);
  EXPECT_EQ(t.source, "t.jsonl");
  EXPECT_EQ(t.requests[0].input_length, 700u);
  EXPECT_EQ(t.requests[0].output_length, 5u);
  EXPECT_EQ(t.requests[0].hash_ids, (std::vector<std::uint64_t>{7, 8}));
  EXPECT_DOUBLE_EQ(t.requests[1].timestamp_ms, 12.5);
  EXPECT_EQ(t.prompt_tokens(), 1212u);
  EXPECT_EQ(t.output_tokens(), 5u);
}

TEST(Trace, st_malformed_lines_are_rejected_with_their_line) {
  const std::string ok =
      "{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n";
  EXPECT_EQ(parse_error(ok), "");
  EXPECT_EQ(parse_error(ok + "{\"timestamp\": 5, \"input_length\": 10,\n").substr(0, 10),
            "t.jsonl:2:");
  EXPECT_NE(parse_error(ok + "[1, 2]\n").find("t.jsonl:2: not a JSON object"), std::string::npos);
  EXPECT_NE(parse_error("{\"timestamp\": 0, \"output_length\": 1, \"hash_ids\": [1]}")
                .find("t.jsonl:1: missing \"input_length\""),
            std::string::npos);
  EXPECT_NE(parse_error("{\"timestamp\": 0, \"input_length\": 10, \"output_length\": -1, "
                        "\"hash_ids\": [1]}")
                .find("\"output_length\" must be a non-negative integer"),
            std::string::npos);
  EXPECT_NE(parse_error("{\"timestamp\": 0, \"input_length\": 0, \"output_length\": 1, "
                        "\"hash_ids\": []}")
                .find("\"input_length\" must be positive"),
            std::string::npos);
  EXPECT_NE(parse_error("{\"timestamp\": 0, \"input_length\": 513, \"output_length\": 1, "
                        "\"hash_ids\": [1]}")
                .find("\"hash_ids\" has 1 ids, but input_length 513 needs ceil(n / 512) = 2"),
            std::string::npos);
  EXPECT_NE(parse_error("{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, "
                        "\"hash_ids\": [\"a\"]}")
                .find("\"hash_ids\" must hold non-negative integers"),
            std::string::npos);
  EXPECT_NE(parse_error(ok + "{\"timestamp\": 4, \"input_length\": 10, \"output_length\": 1, "
                             "\"hash_ids\": [1]}")
                .find("t.jsonl:2: timestamps go backwards"),
            std::string::npos);
  EXPECT_NE(parse_error("{\"timestamp\": \"x\", \"input_length\": 10, \"output_length\": 1, "
                        "\"hash_ids\": [1]}")
                .find("\"timestamp\" must be a non-negative number"),
            std::string::npos);
  try {
    (void)load_mooncake_trace("/nonexistent/trace.jsonl");
    ADD_FAILURE() << "no exception";
  } catch (const TraceError& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/trace.jsonl: cannot open");
  }
}

TEST(Trace, st_expand_equal_ids_equal_tokens_partial_blocks_private) {
  const Trace t = parse(
      "{\"timestamp\": 0, \"input_length\": 700, \"output_length\": 1, \"hash_ids\": [7, 9]}\n"
      "{\"timestamp\": 1, \"input_length\": 800, \"output_length\": 1, \"hash_ids\": [7, 9]}\n"
      "{\"timestamp\": 2, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [8, 9]}\n");
  const auto a = expand_prompt(t.requests[0], 0);
  const auto b = expand_prompt(t.requests[1], 1);
  const auto c = expand_prompt(t.requests[2], 2);
  ASSERT_EQ(a.size(), 700u);
  ASSERT_EQ(b.size(), 800u);
  ASSERT_EQ(c.size(), 1024u);
  for (std::size_t j = 0; j < 512; ++j) ASSERT_EQ(a[j], trace_token(7, j)) << j;
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + 512, b.begin()));
  for (std::size_t p = 512; p < 700; ++p) ASSERT_EQ(a[p], request_token(0, p)) << p;
  // Same id 9 for the partial block of a and b, but its tokens are each request's own.
  EXPECT_FALSE(std::equal(a.begin() + 512, a.begin() + 528, b.begin() + 512));
  // A full block with id 9 takes the id's tokens.
  for (std::size_t j = 0; j < 512; ++j) ASSERT_EQ(c[512 + j], trace_token(9, j)) << j;
  EXPECT_FALSE(std::equal(a.begin(), a.begin() + 16, c.begin()));
  for (const TokenId x : c) EXPECT_LT(x, 1u << 17);
  std::vector<TokenId> reuse = {1, 2, 3};
  expand_prompt(t.requests[0], 0, reuse);
  EXPECT_EQ(reuse, a);
}

// A: [1,2,3] 1536; B: [1,2,4] 1536; C: [1,2,3] 1536; D: [1,5] 600; E: [1,5] 1024; F: [9,1] 1024.
const char* const kSynthetic =
    "{\"timestamp\": 0, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}\n"
    "{\"timestamp\": 1, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 4]}\n"
    "{\"timestamp\": 2, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}\n"
    "{\"timestamp\": 3, \"input_length\": 600, \"output_length\": 1, \"hash_ids\": [1, 5]}\n"
    "{\"timestamp\": 4, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [1, 5]}\n"
    "{\"timestamp\": 5, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [9, 1]}\n";

PrefixBound token_bound(const Trace& t, std::size_t block_size, std::size_t max_requests) {
  InfiniteCacheBound bound(block_size);
  std::vector<TokenId> prompt;
  for (std::size_t i = 0; i < std::min(max_requests, t.requests.size()); ++i) {
    expand_prompt(t.requests[i], i, prompt);
    bound.add(prompt);
  }
  return bound.result();
}

TEST(Trace, st_bound_by_hand) {
  const Trace t = parse(kSynthetic);
  // A 0; B shares [1,2]: 1024; C repeats A: 3 blocks, but the last token is computed: 1535 -> 1024
  // at block 512, 1520 at block 16; D shares [1]: 512; E shares [1] (D's id-5 block was partial,
  // so not cached): 512; F: a different chain from its first block: 0.
  const PrefixBound b512 = infinite_cache_bound(t, 512);
  EXPECT_EQ(b512.requests, 6u);
  EXPECT_EQ(b512.prompt_tokens, 7256u);
  EXPECT_EQ(b512.hit_tokens, 3072u);
  const PrefixBound b16 = infinite_cache_bound(t, 16);
  EXPECT_EQ(b16.hit_tokens, 3568u);
  EXPECT_DOUBLE_EQ(b16.hit_rate(), 3568.0 / 7256.0);
  EXPECT_THROW((void)infinite_cache_bound(t, 0), std::invalid_argument);
  EXPECT_THROW(InfiniteCacheBound(0), std::invalid_argument);
}

// The id-level bound is what pkv's hashing sees on the expanded tokens, at every block size that
// divides 512: the expansion makes content equal exactly where the ids say so.
TEST(Trace, st_bound_from_ids_equals_bound_from_tokens) {
  const Trace t = parse(kSynthetic);
  for (const std::size_t bs : {16u, 32u, 128u, 512u}) {
    EXPECT_EQ(token_bound(t, bs, t.requests.size()).hit_tokens,
              infinite_cache_bound(t, bs).hit_tokens)
        << bs;
  }
}

TEST(SharedPrefix, st_parse) {
  std::string err;
  const auto s = parse_shared_prefix("shared-prefix:64:16:2048:128", &err);
  ASSERT_TRUE(s.has_value()) << err;
  EXPECT_EQ(s->groups, 64u);
  EXPECT_EQ(s->prompts_per_group, 16u);
  EXPECT_EQ(s->system_tokens, 2048u);
  EXPECT_EQ(s->question_tokens, 128u);
  for (const char* bad : {"shared-prefix:1:2:3", "shared-prefix:1:2:3:4:5", "shared:1:2:3:4",
                          "shared-prefix:0:2:3:4", "shared-prefix:1:0:3:4", "shared-prefix:1:1:0:0",
                          "shared-prefix:1:x:3:4", "shared-prefix:1:2:-3:4", "shared-prefix:1::3:4",
                          "shared-prefix:99999999:2:3:4", "shared-prefix:8192:8192:1:1"}) {
    err.clear();
    EXPECT_FALSE(parse_shared_prefix(bad, &err).has_value()) << bad;
    EXPECT_EQ(err.rfind("shared-prefix: ", 0), 0u) << bad << " -> " << err;
  }
  EXPECT_FALSE(parse_shared_prefix("nope").has_value());  // no error out-parameter: fine
}

TEST(SharedPrefix, st_generate_and_bound) {
  const SharedPrefixSpec spec{3, 4, 40, 10};
  const auto plain = generate_shared_prefix(spec, false, 0);
  ASSERT_EQ(plain.size(), 12u);
  for (const auto& p : plain) {
    ASSERT_EQ(p.tokens.size(), 50u);
    const auto& first = plain[p.group * 4];
    EXPECT_TRUE(std::equal(p.tokens.begin(), p.tokens.begin() + 40, first.tokens.begin()));
    if (p.index_in_group != 0) {
      EXPECT_FALSE(
          std::equal(p.tokens.begin() + 40, p.tokens.begin() + 50, first.tokens.begin() + 40));
    }
  }
  EXPECT_FALSE(
      std::equal(plain[0].tokens.begin(), plain[0].tokens.begin() + 16, plain[4].tokens.begin()));

  // Each group's first prompt misses; the other 3 hit floor(40 / 16) * 16 = 32 tokens.
  for (const bool shuffle : {false, true}) {
    const auto prompts = generate_shared_prefix(spec, shuffle, 42);
    InfiniteCacheBound bound(16);
    for (const auto& p : prompts) bound.add(p.tokens);
    EXPECT_EQ(bound.result().hit_tokens, 3u * 3u * 32u) << shuffle;
    EXPECT_EQ(bound.result().prompt_tokens, 600u);
  }
  const auto a = generate_shared_prefix(spec, true, 42);
  const auto b = generate_shared_prefix(spec, true, 42);
  const auto c = generate_shared_prefix(spec, true, 43);
  std::vector<std::pair<std::size_t, std::size_t>> oa, oc;
  std::set<std::pair<std::size_t, std::size_t>> all;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens);  // deterministic
    oa.emplace_back(a[i].group, a[i].index_in_group);
    oc.emplace_back(c[i].group, c[i].index_in_group);
    all.insert(oa.back());
  }
  EXPECT_EQ(all.size(), 12u);  // a permutation
  EXPECT_NE(oa, oc);
}

// ---- the real trace -----------------------------------------------------------------------------

const std::string kMooncake = std::string(PKV_TRACE_DIR) + "/mooncake_conversation.jsonl";

TEST(MooncakeTrace, st_conversation_trace_bound) {
  if (!std::filesystem::exists(kMooncake)) GTEST_SKIP() << kMooncake << " not found";
  const Trace t = load_mooncake_trace(kMooncake);
  // Mooncake FAST'25 Table 2 (conversation): 12,031 requests, average input 12,035, output 343.
  ASSERT_EQ(t.requests.size(), 12031u);
  const double avg_in = static_cast<double>(t.prompt_tokens()) / 12031.0;
  const double avg_out = static_cast<double>(t.output_tokens()) / 12031.0;
  EXPECT_NEAR(avg_in, 12035.0, 0.5);
  EXPECT_NEAR(avg_out, 343.0, 0.5);

  const PrefixBound b512 = infinite_cache_bound(t, 512);
  const PrefixBound b16 = infinite_cache_bound(t, 16);
  std::printf("mooncake conversation: %zu requests, avg input %.1f, avg output %.1f\n",
              t.requests.size(), avg_in, avg_out);
  std::printf(
      "infinite-cache prefix hit rate (tokens): block 512: %.4f (%llu / %llu), block 16: "
      "%.4f (%llu); Mooncake Table 2 cache ratio: about 0.40\n",
      b512.hit_rate(), static_cast<unsigned long long>(b512.hit_tokens),
      static_cast<unsigned long long>(b512.prompt_tokens), b16.hit_rate(),
      static_cast<unsigned long long>(b16.hit_tokens));
  // Computed independently from the JSON with /usr/bin/python3 (a set of id-chain prefixes of full
  // blocks, in file order; hit = floor(min(512 d, n - 1) / bs) * bs): 54,063,104 of 144,793,823
  // prompt tokens at both block sizes.
  EXPECT_EQ(b512.prompt_tokens, 144793823u);
  EXPECT_EQ(b512.hit_tokens, 54063104u);
  EXPECT_EQ(b16.hit_tokens, 54063104u);

  // The expansion preserves it: pkv's own hashing of the expanded prompts finds the same hits
  // (block 512 over the whole trace; block 16 over the first 1,000 requests).
  EXPECT_EQ(token_bound(t, 512, t.requests.size()).hit_tokens, b512.hit_tokens);
  Trace head = t;
  head.requests.resize(1000);
  EXPECT_EQ(token_bound(t, 16, 1000).hit_tokens, infinite_cache_bound(head, 16).hit_tokens);
}

}  // namespace
}  // namespace pkv::sim

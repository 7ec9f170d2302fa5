// tests/model/gen_ops.hpp — RapidCheck generators for Op programs and cache configurations.
//
// Small on purpose: 4..16 blocks of 1..4 tokens and four sequence ids, so that out-of-memory,
// id collisions, shared blocks (copy-on-write), eviction and StreamingLLM happen in most
// programs. Rare huge values reach the overflow and range checks.
#pragma once

#include <rapidcheck.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "harness.hpp"

namespace pkv::model::gen {

inline constexpr std::uint64_t kHuge = std::numeric_limits<std::size_t>::max();

inline rc::Gen<CacheConfig> config() {
  return rc::gen::apply(
      [](std::uint64_t blocks, std::uint64_t bs, std::uint64_t heads, std::uint64_t dim,
         std::uint32_t mag, bool hold, unsigned affinity) {
        CacheConfig c;
        c.hold_copy_sources = hold;
        c.affinity_shift = affinity;
        c.num_blocks = blocks;
        c.block_size = bs;
        c.num_heads = heads;
        c.head_dim = dim;
        c.magazine_size = mag;
        return c;
      },
      rc::gen::inRange<std::uint64_t>(4, 17),
      rc::gen::weightedOneOf<std::uint64_t>(
          {{1, rc::gen::just<std::uint64_t>(1)}, {6, rc::gen::inRange<std::uint64_t>(2, 5)}}),
      rc::gen::inRange<std::uint64_t>(1, 3), rc::gen::inRange<std::uint64_t>(1, 4),
      rc::gen::elementOf(std::vector<std::uint32_t>{0, 1, 2, 4, 32, 64}),
      rc::gen::arbitrary<bool>(),
      // Placement by owner bits (1, 2: the small test ids fall into several slices) or by hash;
      // test_ids() pairs share a shard under each of these (kTestAffinityShifts).
      rc::gen::elementOf(std::vector<unsigned>{0, 0, 1, 2}));
}

/// Four ids: two pairs, each pair in one shard (test_ids()).
inline rc::Gen<std::uint64_t> seq_id() {
  return rc::gen::map(rc::gen::inRange<std::size_t>(0, 4),
                      [](std::size_t i) { return test_ids()[i]; });
}

/// 0..3 of the four ids (repeats allowed).
inline rc::Gen<std::vector<std::uint64_t>> seq_ids() {
  return rc::gen::mapcat(rc::gen::inRange<std::size_t>(0, 4), [](std::size_t k) {
    return rc::gen::container<std::vector<std::uint64_t>>(k, seq_id());
  });
}

/// fork_many's destinations: mostly 2..3 distinct ids (so that some fork_many succeeds with
/// several children), otherwise seq_ids() (repeats, empty).
inline rc::Gen<std::vector<std::uint64_t>> fork_dsts() {
  return rc::gen::weightedOneOf<std::vector<std::uint64_t>>(
      {{2, seq_ids()},
       {3, rc::gen::apply(
               [](std::size_t k, std::size_t start) {
                 std::vector<std::uint64_t> v;
                 for (std::size_t i = 0; i < k; ++i) v.push_back(test_ids()[(start + i) % 4]);
                 return v;
               },
               rc::gen::inRange<std::size_t>(2, 4), rc::gen::inRange<std::size_t>(0, 4))}});
}

inline rc::Gen<std::uint64_t> tokens() {
  return rc::gen::weightedOneOf<std::uint64_t>(
      {{30, rc::gen::inRange<std::uint64_t>(0, 6)},
       {8, rc::gen::inRange<std::uint64_t>(6, 17)},
       {1,
        rc::gen::elementOf(std::vector<std::uint64_t>{kHuge, kHuge - 1, std::uint64_t{1} << 40})}});
}

/// Decode steps append a token or two; sometimes a chunk; rarely something absurd.
inline rc::Gen<std::uint64_t> append_tokens() {
  return rc::gen::weightedOneOf<std::uint64_t>(
      {{30, rc::gen::inRange<std::uint64_t>(0, 4)},
       {6, rc::gen::inRange<std::uint64_t>(4, 10)},
       {1,
        rc::gen::elementOf(std::vector<std::uint64_t>{kHuge, kHuge - 1, std::uint64_t{1} << 40})}});
}

inline rc::Gen<std::uint64_t> small() {
  return rc::gen::weightedOneOf<std::uint64_t>(
      {{30, rc::gen::inRange<std::uint64_t>(0, 7)},
       {1, rc::gen::elementOf(std::vector<std::uint64_t>{kHuge, kHuge - 1})}});
}

inline rc::Gen<double> fraction() {
  return rc::gen::weightedOneOf<double>(
      {{12, rc::gen::map(rc::gen::inRange(0, 101), [](int v) { return v / 100.0; })},
       {1,
        rc::gen::elementOf(std::vector<double>{-0.5, 1.5, std::numeric_limits<double>::quiet_NaN(),
                                               std::numeric_limits<double>::infinity(),
                                               -std::numeric_limits<double>::infinity()})}});
}

inline Op make(OpKind k) {
  Op o;
  o.kind = k;
  return o;
}

inline rc::Gen<Op> op() {
  using K = OpKind;
  return rc::gen::weightedOneOf<Op>({
      {14, rc::gen::apply(
               [](std::uint64_t s, std::uint64_t n) {
                 Op o = make(K::allocate);
                 o.seq = s;
                 o.n = n;
                 return o;
               },
               seq_id(), tokens())},
      {18, rc::gen::apply(
               [](std::uint64_t s, std::uint64_t n) {
                 Op o = make(K::append);
                 o.seq = s;
                 o.n = n;
                 return o;
               },
               seq_id(), append_tokens())},
      {6, rc::gen::apply(
              [](std::uint64_t s, std::uint64_t s2, std::uint64_t n) {
                Op o = make(K::append_batch);
                o.seq = s;
                o.seq2 = s2;
                o.n = n;
                return o;
              },
              seq_id(), seq_id(), append_tokens())},
      {12, rc::gen::apply(
               [](std::uint64_t s, std::uint64_t d) {
                 Op o = make(K::fork);
                 o.seq = s;
                 o.seq2 = d;
                 return o;
               },
               seq_id(), seq_id())},
      {4, rc::gen::map(seq_id(),
                       [](std::uint64_t s) {
                         Op o = make(K::free);
                         o.seq = s;
                         return o;
                       })},
      {2, rc::gen::map(seq_id(),
                       [](std::uint64_t s) {
                         Op o = make(K::get_sequence);
                         o.seq = s;
                         return o;
                       })},
      {1, rc::gen::just(make(K::sequence_ids))},
      {2, rc::gen::just(make(K::select_target))},
      {3, rc::gen::just(make(K::evict))},
      {1, rc::gen::map(fraction(),
                       [](double x) {
                         Op o = make(K::evict_to_threshold);
                         o.x = x;
                         return o;
                       })},
      {7, rc::gen::apply(
              [](std::uint64_t s, std::uint64_t sink, std::uint64_t window) {
                Op o = make(K::streaming);
                o.seq = s;
                o.n = sink;
                o.m = window;
                return o;
              },
              seq_id(), small(), small())},
      {3, rc::gen::apply(
              [](std::uint64_t s, std::uint32_t p) {
                Op o = make(K::set_priority);
                o.seq = s;
                o.priority = p;
                return o;
              },
              seq_id(),
              rc::gen::weightedOneOf<std::uint32_t>(
                  {{20, rc::gen::inRange<std::uint32_t>(0, 4)},
                   {1, rc::gen::just(std::numeric_limits<std::uint32_t>::max())}}))},
      {3, rc::gen::apply(
              [](std::uint8_t k, std::uint64_t a, std::uint64_t b) {
                Op o = make(K::set_strategy);
                o.strategy = k;
                o.n = a;
                o.m = b;
                return o;
              },
              rc::gen::inRange<std::uint8_t>(0, 5), small(), small())},
      {2, rc::gen::map(fraction(),
                       [](double x) {
                         Op o = make(K::set_threshold);
                         o.x = x;
                         return o;
                       })},
      {1, rc::gen::just(make(K::display))},
      {3, rc::gen::map(seq_id(),
                       [](std::uint64_t s) {
                         Op o = make(K::pin);
                         o.seq = s;
                         return o;
                       })},
      {3, rc::gen::map(seq_id(),
                       [](std::uint64_t s) {
                         Op o = make(K::unpin);
                         o.seq = s;
                         return o;
                       })},
      {3, rc::gen::map(seq_id(),
                       [](std::uint64_t s) {
                         Op o = make(K::copy_done);
                         o.seq = s;
                         return o;
                       })},
      // 0..3 ids from the four: repeats (invalid_argument), src among them, existing ones.
      {10, rc::gen::apply(
               [](std::uint64_t s, std::vector<std::uint64_t> ids) {
                 Op o = make(K::fork_many);
                 o.seq = s;
                 o.ids = std::move(ids);
                 return o;
               },
               seq_id(), fork_dsts())},
      {5, rc::gen::map(seq_ids(),
                       [](std::vector<std::uint64_t> ids) {
                         Op o = make(K::free_many);
                         o.ids = std::move(ids);
                         return o;
                       })},
      {14, rc::gen::apply(
               [](std::uint64_t s, std::uint64_t n, std::uint64_t f, std::uint8_t salt) {
                 Op o = make(K::allocate_tokens);
                 o.seq = s;
                 o.n = n;
                 o.m = f;
                 o.strategy = salt;
                 return o;
               },
               seq_id(), rc::gen::inRange<std::uint64_t>(0, 11),
               rc::gen::inRange<std::uint64_t>(0, 4),
               rc::gen::weightedOneOf<std::uint8_t>(
                   {{4, rc::gen::just<std::uint8_t>(0)}, {1, rc::gen::just<std::uint8_t>(1)}}))},
      {10, rc::gen::apply(
               [](std::uint64_t s, std::uint64_t n, std::uint64_t f) {
                 Op o = make(K::append_tokens);
                 o.seq = s;
                 o.n = n;
                 o.m = f;
                 return o;
               },
               seq_id(), rc::gen::inRange<std::uint64_t>(0, 4),
               rc::gen::inRange<std::uint64_t>(0, 5))},
      {8, rc::gen::apply(
              [](std::uint64_t s, std::uint64_t n) {
                Op o = make(K::commit);
                o.seq = s;
                o.n = n;
                return o;
              },
              seq_id(), rc::gen::inRange<std::uint64_t>(0, 14))},
      {3, rc::gen::apply(
              [](std::uint64_t n, std::uint64_t f, std::uint8_t salt) {
                Op o = make(K::match_prefix);
                o.n = n;
                o.m = f;
                o.strategy = salt;
                return o;
              },
              rc::gen::inRange<std::uint64_t>(0, 12), rc::gen::inRange<std::uint64_t>(0, 4),
              rc::gen::inRange<std::uint8_t>(0, 2))},
      {1, rc::gen::just(make(K::reset_prefix))},
      // A decode step with token ids: family 0..3 continued (4: a token no prompt has).
      {6, rc::gen::apply(
              [](std::uint64_t s, std::uint64_t s2, std::uint64_t f, std::uint64_t n) {
                Op o = make(K::append_batch_tokens);
                o.seq = s;
                o.seq2 = s2;
                o.m = f;
                o.n = n;
                return o;
              },
              seq_id(), seq_id(), rc::gen::inRange<std::uint64_t>(0, 5),
              rc::gen::inRange<std::uint64_t>(0, 7))},
      {8, rc::gen::apply(
              [](std::uint64_t s, std::uint64_t n) {
                Op o = make(K::truncate);
                o.seq = s;
                o.n = n;
                return o;
              },
              seq_id(), append_tokens())},
  });
}

}  // namespace pkv::model::gen

// src/cache/fork.cpp — fork and fork_many: new sequences sharing every block of a source
// (copy-on-write happens later, in append). fork is fork_many with one destination.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <type_traits>
#include <vector>

#include "cache/cache_impl.hpp"
#include "cache/refcounts.hpp"
#include "cache/shard_set.hpp"

namespace pkv {

using detail::Entry;
using detail::Shard;

namespace {

// The first id of `ids` that appears again later in it, if any. Quadratic for a few ids (beam
// widths, sample counts), a sorted copy beyond.
std::optional<SeqId> first_repeated(std::span<const SeqId> ids) {
  constexpr std::size_t kQuadratic = 16;
  if (ids.size() <= kQuadratic) {
    for (std::size_t i = 0; i < ids.size(); ++i)
      for (std::size_t j = i + 1; j < ids.size(); ++j)
        if (ids[i] == ids[j]) return ids[i];
    return std::nullopt;
  }
  std::vector<SeqId> sorted(ids.begin(), ids.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<SeqId> repeated;  // each repeated value once, sorted
  for (std::size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i] == sorted[i - 1] && (repeated.empty() || repeated.back() != sorted[i]))
      repeated.push_back(sorted[i]);
  for (SeqId id : ids)  // the one whose first occurrence comes first, as the quadratic loop finds
    if (std::binary_search(repeated.begin(), repeated.end(), id)) return id;
  return std::nullopt;
}

// to = from, as one memcpy: BlockId has a default member initializer, so it is not a trivial
// type and vector's copy would copy it one element at a time (it is trivially copyable).
void copy_table(const std::vector<BlockId>& from, std::vector<BlockId>& to) {
  static_assert(std::is_trivially_copyable_v<BlockId>);
  to.resize(from.size());
  if (!from.empty()) std::memcpy(to.data(), from.data(), from.size() * sizeof(BlockId));
}

}  // namespace

Result<void> PagedKvCache::fork(SeqId src, SeqId dst) {
  return fork_many(src, std::span<const SeqId>(&dst, 1));
}

Result<void> PagedKvCache::fork_many(SeqId src, std::span<const SeqId> dsts) {
  // The checks that need no lock, in the order the contract lists the errors.
  for (SeqId d : dsts)
    if (d == src)
      return Error::invalid_operation("Cannot fork sequence " + to_string(src) + " onto itself");
  // Each child adds one reference per block: the count of a block must stay below 2^32 - 1.
  if (dsts.size() >= std::numeric_limits<std::uint32_t>::max())
    return Error::invalid_argument("fork_many: " + std::to_string(dsts.size()) +
                                   " destinations (at most 2^32 - 2)");
  if (dsts.size() > 1) {
    if (const std::optional<SeqId> dup = first_repeated(dsts))
      return Error::invalid_argument("fork_many: destination " + to_string(*dup) +
                                     " appears more than once");
  }
  Impl& m = *impl_;
  Shard& a = m.shard_of(src);
  detail::ShardSetLock locks;
  locks.add(a);
  for (SeqId d : dsts) locks.add(m.shard_of(d));
  locks.lock_all();
  for (SeqId d : dsts)
    if (m.shard_of(d).map.contains(d))
      return Error::invalid_operation("Destination sequence " + to_string(d) + " already exists");
  Entry* found = a.map.find_entry(src);
  if (found == nullptr) return Error::sequence_not_found(src);
  if (dsts.empty()) return {};
  Entry& s = *found;
  const auto k = static_cast<std::uint32_t>(dsts.size());
  // Cannot fail: src holds a reference to each of its blocks, and we hold its shard's lock.
  if (s.token_mode) {
    m.retain_blocks_n(s.blocks, k, true);
  } else if (Result<void> r = detail::retain_n(m.pool, s.blocks, k); !r) {
    return r.error();
  }
  // One clock update for all children: child i is stamped base + i + 1, as k forks in dsts
  // order would be. Taken under every child's shard lock, so stamps still rise within a shard.
  const std::uint64_t base = m.clock.fetch_add(k, std::memory_order_relaxed);
  s.maybe_shared = true;  // src and every child now hold the same last block
  for (std::uint32_t i = 0; i < k; ++i) {
    Entry d(dsts[i]);
    copy_table(s.blocks, d.blocks);
    d.runs = s.runs;
    d.end_slot = s.end_slot;
    d.num_tokens = s.num_tokens;
    d.priority = s.priority;  // a beam or sample inherits its request's priority
    d.streamed = s.streamed;
    d.truncated = s.truncated;
    d.maybe_shared = true;
    if (s.token_mode) {  // the child continues the same chain of hashes
      d.token_mode = true;
      d.publishing = s.publishing;
      d.tokens = s.tokens;
      d.hashes = s.hashes;
      d.salt_root = s.salt_root;
      d.committed = s.committed;
      d.published = s.published;
    }
    d.last_access = base + i + 1;
    d.access_count = 1;
    m.shard_of(dsts[i]).insert_locked(dsts[i], std::move(d));
  }
  for ([[maybe_unused]] Shard* sh : locks.shards()) PKV_ASSERT_EXPENSIVE(m.validate_shard(*sh));
  m.my_stripe().forks.fetch_add(k, std::memory_order_relaxed);  // striped statistic
  return {};
}

}  // namespace pkv

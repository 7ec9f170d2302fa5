// src/cache/published_head.hpp — a shard's victim-index head, published for lock-free victim
// scans, and the shard's bit in the cache's occupancy map.
//
// Written only under the shard's lock (publish, publish_listed_head); read by select/evict with no
// lock (read()). The occupancy bit is 1 exactly while the published head is not empty, so a scan
// reads the kShards / 64 occupancy words and then only the heads of occupied shards.
// Invariants, whenever no call is in flight:
//   read() == the index's head key (kNoKey when empty) == last()
//   occupancy bit == (last() != kNoKey)
//
// Memory ordering
//   Every store and load here is relaxed. The head is three words, so a reader racing with a
//   writer may see a mix of two heads, or an occupancy bit that disagrees with the head; both are
//   hints: the scanner uses them only to choose a shard, then takes that shard's lock (acquire)
//   and reads the real head from the index, rescanning a bounded number of times when it differs
//   from what it saw (eviction.cpp). No data is reached through a published word, so nothing
//   needs acquire/release here; the shard lock orders the real data.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

#include "cache/entry.hpp"
#include "cache/victim_index.hpp"
#include "config.hpp"

namespace pkv::detail {

class PublishedHead {
 public:
  /// Sets the occupancy word and bit of this shard (once, before any other call).
  void attach(std::atomic<std::uint64_t>* word, std::uint64_t bit) noexcept {
    occupied_word_ = word;
    occupied_bit_ = bit;
  }

  /// Publishes `head` (nullopt: empty) if it differs from what was last published.
  void publish(const std::optional<Key>& head) noexcept {
    const Key k = head ? *head : kNoKey;
    if (k == last_) return;
    const bool was_empty = last_.last_access == kMax64;
    const bool now_empty = k.last_access == kMax64;
    last_ = k;
    // relaxed: hints for scanners (see Memory ordering).
    primary_.store(k.primary, std::memory_order_relaxed);
    access_.store(k.last_access, std::memory_order_relaxed);
    seq_.store(k.seq, std::memory_order_relaxed);
    // The occupancy bit follows only when emptiness changes (allocate into / free of the last
    // candidate of a shard, not every append). relaxed: a hint exactly like the head.
    if (was_empty != now_empty && occupied_word_ != nullptr) {
      if (now_empty) {
        occupied_word_->fetch_and(~occupied_bit_, std::memory_order_relaxed);
      } else {
        occupied_word_->fetch_or(occupied_bit_, std::memory_order_relaxed);
      }
    }
  }

  /// publish() after a touch of the head of a recency list (VictimIndex::Change::head_touched):
  /// the list is not empty before or after, so the occupancy bit stands and primary stays 0;
  /// only the head's stamp, and its id if another entry became head, change.
  [[gnu::always_inline]] void publish_listed_head(const Entry& h) noexcept {
    PKV_ASSERT(last_.primary == 0 && last_.last_access != kMax64);
    // relaxed: hints for scanners (see Memory ordering).
    if (last_.seq != h.id.value) {
      last_.seq = h.id.value;
      seq_.store(last_.seq, std::memory_order_relaxed);
    }
    last_.last_access = h.last_access;
    access_.store(last_.last_access, std::memory_order_relaxed);
  }

  /// The published head, read with no lock (a hint; see Memory ordering).
  Key read() const noexcept {
    return Key{primary_.load(std::memory_order_relaxed), access_.load(std::memory_order_relaxed),
               seq_.load(std::memory_order_relaxed)};
  }
  /// What this shard last published (guarded by the shard lock).
  const Key& last() const noexcept { return last_; }
  /// This shard's occupancy bit, read relaxed (validation).
  bool occupied() const noexcept {
    return occupied_word_ != nullptr &&
           (occupied_word_->load(std::memory_order_relaxed) & occupied_bit_) != 0;
  }

 private:
  std::atomic<std::uint64_t> primary_{kMax64};
  std::atomic<std::uint64_t> access_{kMax64};
  std::atomic<std::uint64_t> seq_{kMax64};
  Key last_ = kNoKey;  // guarded by the shard lock: the values last stored above
  std::atomic<std::uint64_t>* occupied_word_ = nullptr;
  std::uint64_t occupied_bit_ = 0;
};

}  // namespace pkv::detail

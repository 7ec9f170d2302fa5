// src/cache/victim_index.hpp — a shard's eviction index: its unpinned sequences in victim order
// under the current strategy, behind one interface.
//
// Victim order: smaller Key first. Key.primary depends on the strategy; ties fall to least recent
// access (last_access is unique), then to the id.
//   LRU, StreamingLLM               an intrusive recency list (a ring through a sentinel) in
//                                   last_access order: insert and touch are a push to the tail,
//                                   O(1); an older stamp (append_batch stamps before it locks, or
//                                   an unpin) walks back past the entries touched since.
//   LFU, LongestFirst, Priority     an ordered set of keys, O(log n) per update.
// Invariants:
//   size() == number of unpinned entries of the shard
//   list kinds: ring.next->...->ring visits each listed entry once, last_access strictly rising;
//               ring.prev == ring  <=>  ring.next == ring  <=>  size() == 0
//   set kinds:  keys == { key_of(e) : e unpinned }
// Not thread-safe: guarded by its shard's lock.
#pragma once

#include <algorithm>
#include <compare>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cache/entry.hpp"
#include "config.hpp"
#include "pkv/types.hpp"

namespace pkv::detail {

inline constexpr std::uint64_t kMax64 = std::numeric_limits<std::uint64_t>::max();

struct Key {
  std::uint64_t primary = 0;
  std::uint64_t last_access = 0;
  std::uint64_t seq = 0;
  friend auto operator<=>(const Key&, const Key&) = default;
};
/// The key of an empty index (what a shard publishes when it has no candidate).
inline constexpr Key kNoKey{kMax64, kMax64, kMax64};

class VictimIndex {
 public:
  using Kind = EvictionStrategy::Kind;
  /// What an update did to the index's order: nothing, moved only the recency list's head to a
  /// later stamp (its id may change too), or anything else.
  enum class Change : std::uint8_t { none, head_touched, any };

  VictimIndex() = default;
  VictimIndex(const VictimIndex&) = delete;  // the ring points into the object
  VictimIndex& operator=(const VictimIndex&) = delete;

  Kind kind() const noexcept { return kind_; }
  std::size_t size() const noexcept { return is_list() ? listed_ : keys_.size(); }

  Key key_of(const Entry& e) const noexcept {
    std::uint64_t primary = 0;
    switch (kind_) {
      case Kind::lru:
      case Kind::streaming_llm:
        break;
      case Kind::lfu:
        primary = e.access_count;
        break;
      case Kind::longest_first:
        primary = kMax64 - e.num_tokens;
        break;
      case Kind::priority:
        primary = e.priority;
        break;
    }
    return Key{primary, e.last_access, e.id.value};
  }

  /// The best victim's key, if any.
  std::optional<Key> head() const {
    if (is_list()) return ring_.next != &ring_ ? std::optional<Key>(key_of(*list_head())) : std::nullopt;
    return keys_.empty() ? std::nullopt : std::optional<Key>(*keys_.begin());
  }
  /// The best victim itself, found in `map` for the set kinds; nullptr when empty.
  template <class Map>
  Entry* head_entry(const Map& map) const noexcept {
    if (is_list()) return ring_.next != &ring_ ? list_head() : nullptr;
    return keys_.empty() ? nullptr : map.find_entry(SeqId{keys_.begin()->seq});
  }

  void insert(Entry& e) {
    if (is_list()) {
      place(e);
    } else {
      keys_.insert(key_of(e));
    }
  }
  void erase(Entry& e) {
    if (is_list()) {
      unlink(e);
    } else {
      keys_.erase(key_of(e));
    }
  }
  /// Re-keys a listed entry after `mutate` changed it. Set kinds reuse the node (no allocation).
  template <class F>
  Change update(Entry& e, F&& mutate) {
    if (is_list()) {
      const std::uint64_t old = e.last_access;
      mutate(e);
      if (e.last_access == old) return Change::none;
      unlink(e);  // touched: usually the most recent of this shard
      place(e);
      return Change::any;
    }
    const Key old_key = key_of(e);
    mutate(e);
    const Key new_key = key_of(e);
    if (new_key == old_key) return Change::none;
    auto node = keys_.extract(old_key);
    PKV_ASSERT(!node.empty());
    node.value() = new_key;
    keys_.insert(std::move(node));
    return Change::any;
  }
  /// append's update of a listed entry: `n` tokens added, accessed at `stamp` (a later stamp that
  /// another call left on the entry stays). The recency list takes a short path: only an entry
  /// that was the head changes the head, and the tail needs no move.
  [[gnu::always_inline]] Change touch_appended(Entry& e, std::uint64_t n, std::uint64_t stamp) {
    if (!is_list()) {
      return update(e, [&](Entry& x) {
        x.num_tokens += n;
        x.last_access = std::max(x.last_access, stamp);
        x.access_count += 1;
      });
    }
    e.num_tokens += n;
    e.access_count += 1;
    if (stamp <= e.last_access) return Change::none;
    const bool was_head = ring_.next == &e;
    e.last_access = stamp;
    if (ring_.prev != &e) {
      unlink(e);  // (the tail stays: it is another entry)
      if (stamp >= as_entry(ring_.prev)->last_access) {
        link_tail(e);  // the usual case, inline; place() walks back for an older batch stamp
      } else {
        place(e);
      }
    }
    return was_head ? Change::head_touched : Change::none;
  }
  /// The recency list's head; only for list kinds with a non-empty list.
  Entry* list_head() const noexcept { return as_entry(ring_.next); }

  /// Empties the index, switches to `k`, and inserts `entries` (unpinned, any order).
  void rebuild(Kind k, std::vector<Entry*> entries) {
    ring_.prev = ring_.next = &ring_;
    listed_ = 0;
    keys_.clear();
    kind_ = k;
    std::sort(entries.begin(), entries.end(),
              [](const Entry* x, const Entry* y) { return x->last_access < y->last_access; });
    for (Entry* e : entries) insert(*e);
  }

  /// Whether `e` is in the index. O(n) for list kinds (validation only).
  bool contains(const Entry& e) const {
    if (!is_list()) return keys_.contains(key_of(e));
    for (const ListHook* x = ring_.next; x != &ring_; x = x->next)
      if (x == &e) return true;
    return false;
  }
  /// The list's invariants (see the file comment): "" when they hold; `is_member(e)` says whether
  /// a listed entry belongs (is in the shard's map and unpinned).
  template <class IsMember>
  std::string validate(std::size_t unpinned, IsMember&& is_member) const {
    if (size() != unpinned) return "index size disagrees with the unpinned entries";
    if (!is_list()) return {};
    if (ring_.next->prev != &ring_ || (ring_.next == &ring_) != (ring_.prev == &ring_))
      return "recency ring's sentinel links are corrupt";
    std::size_t n = 0;
    std::uint64_t last = 0;
    for (const ListHook* h = ring_.next; h != &ring_; h = h->next) {
      const Entry* x = as_entry(const_cast<ListHook*>(h));
      if (h->next->prev != h || !is_member(*x) || ++n > unpinned ||
          (n > 1 && x->last_access <= last))
        return "recency list is corrupt";
      last = x->last_access;
    }
    if (n != unpinned) return "recency list misses entries";
    return {};
  }

 private:
  // The one place the two representations part.
  bool is_list() const noexcept { return kind_ == Kind::lru || kind_ == Kind::streaming_llm; }
  static Entry* as_entry(ListHook* h) noexcept { return static_cast<Entry*>(h); }
  static const Entry* as_entry(const ListHook* h) noexcept { return static_cast<const Entry*>(h); }

  void link_after(ListHook& after, Entry& e) noexcept {
    e.prev = &after;
    e.next = after.next;
    after.next->prev = &e;
    after.next = &e;
    ++listed_;
  }
  void link_tail(Entry& e) noexcept { link_after(*ring_.prev, e); }
  void unlink(Entry& e) noexcept {
    e.prev->next = e.next;
    e.next->prev = e.prev;
    --listed_;
  }
  // Links `e` at its place by last_access, walking back from the tail.
  void place(Entry& e) noexcept {
    ListHook* after = ring_.prev;
    while (after != &ring_ && as_entry(after)->last_access > e.last_access) after = after->prev;
    link_after(*after, e);
  }

  // kind_ and the ring come first: the shard keeps them in its first cache line (shard.hpp).
  Kind kind_ = Kind::lru;
  // The sentinel: ring_.next is the head (least recent), ring_.prev the tail; both point to the
  // sentinel itself when the list is empty. Every other hook in the ring is an Entry.
  ListHook ring_{&ring_, &ring_};
  std::size_t listed_ = 0;
  std::set<Key> keys_;  // set kinds
};

}  // namespace pkv::detail

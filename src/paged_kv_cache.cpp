// PagedKvCache: sharded sequence maps over a BlockPool (contract in pkv/paged_kv_cache.hpp).
#include "pkv/paged_kv_cache.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <ostream>
#include <set>
#include <shared_mutex>
#include <stdexcept>
#include <unordered_map>

#include "block_pool_impl.hpp"
#include "config.hpp"
#include "pkv/detail/spin_lock.hpp"
#include "pkv/detail/thread_index.hpp"

namespace pkv {

namespace {

constexpr std::size_t kLine = 128;
constexpr std::size_t kStripes = 64;
constexpr std::uint64_t kMax64 = std::numeric_limits<std::uint64_t>::max();

// The shard lock (see pkv/detail/spin_lock.hpp): critical sections are a few hundred
// instructions and never block.
using ShardLock = detail::BasicSpinLock<std::atomic>;

// Victim order under every strategy: smaller key is evicted first. `primary` depends on the
// strategy; ties fall to least recent access (last_access is unique), then to the id.
struct Key {
  std::uint64_t primary = 0;
  std::uint64_t last_access = 0;
  std::uint64_t seq = 0;
  friend auto operator<=>(const Key&, const Key&) = default;
};

std::optional<Error> config_error(std::size_t num_blocks, std::size_t block_size,
                                  std::size_t num_heads, std::size_t head_dim,
                                  const PagedKvCache::Options& options, std::size_t* block_bytes) {
  if (num_blocks == 0) return Error::invalid_argument("num_blocks must be at least 1");
  if (block_size == 0) return Error::invalid_argument("block_size must be at least 1");
  if (num_heads == 0) return Error::invalid_argument("num_heads must be at least 1");
  if (head_dim == 0) return Error::invalid_argument("head_dim must be at least 1");
  if (num_blocks > BlockPool::kMaxBlocks)
    return Error::invalid_argument("num_blocks " + std::to_string(num_blocks) +
                                   " exceeds the 32-bit block id space");
  // 2 (K and V) x block_size x num_heads x head_dim x 2 bytes (f16), times num_blocks, must fit.
  std::size_t bytes = 4;
  for (std::size_t f : {block_size, num_heads, head_dim, num_blocks}) {
    if (bytes > std::numeric_limits<std::size_t>::max() / f)
      return Error::invalid_argument(
          "block_size x num_heads x head_dim x num_blocks overflows the memory size");
    bytes *= f;
  }
  if (auto e = detail::pool_config_error(num_blocks, options.pool.magazine_size)) return e;
  if (options.affinity_shift > 63)
    return Error::invalid_argument("affinity_shift " + std::to_string(options.affinity_shift) +
                                   " is not a bit position of a 64-bit id (0..63)");
  *block_bytes = bytes / num_blocks;
  return std::nullopt;
}

// Recency-list links (LRU / StreamingLLM index). Each shard's list is a ring through a sentinel
// hook in the shard, so linking and unlinking never branch on the list's ends (with one to a few
// sequences per shard, as with thread-affine shards, those branches went either way at random).
struct ListHook {
  ListHook* prev = nullptr;  // shard-guarded, like the whole list
  ListHook* next = nullptr;
};

}  // namespace

// ---- internal state ----

struct PagedKvCache::Entry : ListHook {  // the hook links it into its shard's recency list
  explicit Entry(SeqId s) : id(s) {}
  SeqId id;
  std::vector<BlockId> blocks;
  std::vector<TokenRun> runs;  // empty iff num_tokens == 0
  // runs.back().slot + runs.back().length (0 without runs): the slot the next token goes to.
  // Kept here so that append's fast path reads no line outside the entry; every change of `runs`
  // sets it (validate_unsafe checks it).
  std::uint64_t end_slot = 0;
  std::uint64_t num_tokens = 0;
  std::uint64_t last_access = 0;
  std::uint64_t access_count = 0;
  std::uint32_t priority = 0;
  std::uint32_t pins = 0;  // pin() count; pinned entries are not in the victim index
  bool streamed = false;   // StreamingLLM left dead slots in some block (validate_unsafe)
  // The last block may be held by another sequence too: set by fork (on both sides) and by
  // StreamingLLM (a kept earlier block may be shared), cleared once append finds the last block
  // private. While clear, append skips the reference-count read: the last block of this entry
  // can only become shared through fork of this entry, which holds this shard's lock.
  bool maybe_shared = false;
  std::vector<BlockId> pending;  // copy-on-write sources still held (Options::hold_copy_sources)

  std::uint64_t next_slot() const noexcept { return end_slot; }
  // What end_slot must be for these runs.
  static std::uint64_t end_of(const std::vector<TokenRun>& rs) noexcept {
    return rs.empty() ? 0 : rs.back().slot + rs.back().length;
  }
};

namespace {

// A shard's sequence table: open addressing with linear probing over a power-of-two array of
// {id, node} slots, at most half full, deletion by backward shift (no tombstones). The node holds
// the Entry, so entries never move (the recency list links them in place) and a lookup reads one
// slot line before the entry itself. std::unordered_map was a third of append's time: a prime
// modulus, a bucket that points to the node before, and a node per lookup step. The slot index
// uses the id's hash above the shard bits (the shard is chosen by the low bits).
// Not thread-safe: the shard lock guards it.
template <class Entry>
class SeqMap {
 public:
  using value_type = std::pair<const SeqId, Entry>;

 private:
  struct Slot {
    std::uint64_t key = 0;
    value_type* node = nullptr;  // owned; nullptr = empty slot
  };

 public:
  class iterator {
   public:
    iterator(Slot* cur, Slot* end) noexcept : cur_(cur), end_(end) { skip(); }
    value_type& operator*() const noexcept { return *cur_->node; }
    value_type* operator->() const noexcept { return cur_->node; }
    iterator& operator++() noexcept {
      ++cur_;
      skip();
      return *this;
    }
    friend bool operator==(const iterator& a, const iterator& b) noexcept {
      return a.cur_ == b.cur_;
    }
    Slot* slot() const noexcept { return cur_; }

   private:
    void skip() noexcept {
      while (cur_ != end_ && cur_->node == nullptr) ++cur_;
    }
    Slot* cur_;
    Slot* end_;
  };

  SeqMap() = default;
  SeqMap(const SeqMap&) = delete;
  SeqMap& operator=(const SeqMap&) = delete;
  ~SeqMap() {
    for (std::size_t i = 0; i < cap_; ++i) delete slots_[i].node;
  }

  std::size_t size() const noexcept { return size_; }
  iterator begin() const noexcept { return iterator(first(), last()); }
  iterator end() const noexcept { return iterator(last(), last()); }

  iterator find(SeqId id) const noexcept { return find(id, std::hash<SeqId>{}(id)); }
  /// `hash` is std::hash<SeqId>{}(id), when the caller has it already.
  iterator find(SeqId id, std::size_t hash) const noexcept {
    Slot* s = find_slot(id, hash);
    return s != nullptr ? iterator(s, last()) : end();
  }
  bool contains(SeqId id) const noexcept { return find(id) != end(); }
  /// find() for the hot paths: the entry, or nullptr (no iterator to build).
  Entry* find_entry(SeqId id, std::size_t hash) const noexcept {
    Slot* s = find_slot(id, hash);
    return s != nullptr ? &s->node->second : nullptr;
  }

  /// Inserts (id, entry); `id` must be absent. Returns the new element.
  iterator insert_new(SeqId id, Entry&& entry) {
    if (2 * (size_ + 1) > cap_) grow();
    auto node = std::make_unique<value_type>(id, std::move(entry));
    std::size_t i = home(id.value);
    while (slots_[i].node != nullptr) i = (i + 1) & mask_;
    slots_[i] = Slot{id.value, node.release()};
    ++size_;
    return iterator(&slots_[i], last());
  }

  void erase(iterator it) noexcept {
    Slot* s = it.slot();
    delete s->node;
    --size_;
    // Backward shift: move later members of the probe run into the hole so that every member
    // stays reachable from its home slot without crossing an empty slot.
    std::size_t hole = static_cast<std::size_t>(s - slots_.get());
    for (std::size_t j = (hole + 1) & mask_; slots_[j].node != nullptr; j = (j + 1) & mask_) {
      const std::size_t h = home(slots_[j].key);
      // Stays if its home lies cyclically in (hole, j].
      const bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
      if (stays) continue;
      slots_[hole] = slots_[j];
      hole = j;
    }
    slots_[hole] = Slot{};
  }
  void erase(SeqId id) noexcept {
    iterator it = find(id);
    if (it != end()) erase(it);
  }

 private:
  // The one probe loop: the slot holding `id`, or nullptr.
  Slot* find_slot(SeqId id, std::size_t hash) const noexcept {
    if (size_ == 0) return nullptr;
    for (std::size_t i = (hash >> 8) & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.node == nullptr) return nullptr;
      if (s.key == id.value) return &s;
    }
  }
  std::size_t home(std::uint64_t key) const noexcept {
    return (std::hash<SeqId>{}(SeqId{key}) >> 8) & mask_;
  }
  Slot* first() const noexcept { return slots_.get(); }
  Slot* last() const noexcept { return slots_.get() + cap_; }
  void grow() {
    const std::size_t old_cap = cap_;
    const std::size_t new_cap = std::max<std::size_t>(8, 2 * old_cap);
    std::unique_ptr<Slot[]> old = std::exchange(slots_, std::make_unique<Slot[]>(new_cap));
    cap_ = new_cap;
    mask_ = new_cap - 1;
    for (std::size_t j = 0; j < old_cap; ++j) {
      const Slot& s = old[j];
      if (s.node == nullptr) continue;
      std::size_t i = home(s.key);
      while (slots_[i].node != nullptr) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }

  // Four words; the shard keeps them in its first cache line with the lock.
  std::unique_ptr<Slot[]> slots_;
  std::size_t mask_ = 0;  // cap_ - 1; cap_ is a power of two, or 0 before the first insert
  std::size_t size_ = 0;
  std::size_t cap_ = 0;
};

}  // namespace

struct alignas(kLine) PagedKvCache::Shard {
  // The first 64 bytes hold what append touches: the lock, the table, the list ends.
  mutable ShardLock mu;
  EvictionStrategy::Kind kind = EvictionStrategy::Kind::lru;  // guarded by mu
  SeqMap<Entry> map;                                          // guarded by mu

  // The victim index holds every unpinned entry, ordered by Key under `kind`:
  //  * LRU and StreamingLLM: an intrusive list in last_access order. Stamps taken under `mu`
  //    (tick()) are the newest of the shard, so insert and touch are a push to the tail, O(1);
  //    append_batch's stamps, taken before the lock, may walk back past entries touched since.
  //  * LFU, LongestFirst, Priority: an ordered set of keys, O(log n) per update.
  // The list's sentinel: ring.next is the head (least recent), ring.prev the tail; both point to
  // the sentinel itself when the list is empty. Every other hook in the ring is an Entry.
  ListHook ring{&ring, &ring};
  std::size_t listed = 0;
  Entry* head() const noexcept { return ring.next == &ring ? nullptr : as_entry(ring.next); }
  static Entry* as_entry(ListHook* h) noexcept { return static_cast<Entry*>(h); }

  // The index head, published for lock-free victim scans: written under `mu` whenever the head
  // changes, read relaxed by select/evict. Three words, so a concurrent reader may see a mix of
  // two heads; it only uses them to pick a shard, then takes that shard's real head under `mu`.
  // Exact whenever no call is in flight. last_access == kMax64 means "empty".
  std::atomic<std::uint64_t> pub_primary{kMax64};
  std::atomic<std::uint64_t> pub_access{kMax64};
  std::atomic<std::uint64_t> pub_seq{kMax64};
  Key published{kMax64, kMax64, kMax64};  // guarded by mu: last values stored above
  std::atomic<std::size_t> size{0};       // map.size(), written under mu, read lock-free
  std::set<Key> index;                    // (set kinds)
  // This shard's bit in Impl::occupied (set in Impl's constructor): 1 while the published head
  // is not empty, so victim scans visit only shards with candidates.
  std::atomic<std::uint64_t>* occupied_word = nullptr;
  std::uint64_t occupied_bit = 0;

  void store_published(const Key& k) noexcept {
    const bool was_empty = published.last_access == kMax64;
    const bool now_empty = k.last_access == kMax64;
    published = k;
    // relaxed: a hint for scanners (see above); the shard lock orders the real data.
    pub_primary.store(k.primary, std::memory_order_relaxed);
    pub_access.store(k.last_access, std::memory_order_relaxed);
    pub_seq.store(k.seq, std::memory_order_relaxed);
    // The occupancy bit follows, only when emptiness changes (allocate into / free of the last
    // candidate of a shard, not every append). relaxed: a hint exactly like the head; a scan
    // racing with it may miss this shard or find it empty, as with a stale head.
    if (was_empty != now_empty && occupied_word != nullptr) {
      if (now_empty) {
        occupied_word->fetch_and(~occupied_bit, std::memory_order_relaxed);
      } else {
        occupied_word->fetch_or(occupied_bit, std::memory_order_relaxed);
      }
    }
  }

  void publish() noexcept {
    const std::optional<Key> h = index_head();
    const Key k = h ? *h : Key{kMax64, kMax64, kMax64};
    if (k == published) return;
    store_published(k);
  }
  Key read_published() const noexcept {
    return Key{pub_primary.load(std::memory_order_relaxed),
               pub_access.load(std::memory_order_relaxed), pub_seq.load(std::memory_order_relaxed)};
  }

  bool uses_list() const noexcept {
    return kind == EvictionStrategy::Kind::lru || kind == EvictionStrategy::Kind::streaming_llm;
  }

  Key key_of(const Entry& e) const noexcept {
    std::uint64_t primary = 0;
    switch (kind) {
      case EvictionStrategy::Kind::lru:
      case EvictionStrategy::Kind::streaming_llm:
        break;
      case EvictionStrategy::Kind::lfu:
        primary = e.access_count;
        break;
      case EvictionStrategy::Kind::longest_first:
        primary = kMax64 - e.num_tokens;
        break;
      case EvictionStrategy::Kind::priority:
        primary = e.priority;
        break;
    }
    return Key{primary, e.last_access, e.id.value};
  }

  void link_after(ListHook& after, Entry& e) noexcept {
    e.prev = &after;
    e.next = after.next;
    after.next->prev = &e;
    after.next = &e;
    ++listed;
  }
  void link_tail(Entry& e) noexcept { link_after(*ring.prev, e); }
  void unlink(Entry& e) noexcept {
    e.prev->next = e.next;
    e.next->prev = e.prev;
    --listed;
  }

  // Links `e` into the recency list at its place by last_access. Stamps taken under `mu`
  // (tick()) are the newest of the shard: a push to the tail, O(1). An unpinned entry, or one
  // stamped by append_batch before it took `mu`, may be older than the tail: walk back (past
  // only the entries touched since).
  void place(Entry& e) noexcept {
    ListHook* after = ring.prev;
    while (after != &ring && as_entry(after)->last_access > e.last_access) after = after->prev;
    link_after(*after, e);
  }

  void index_insert(Entry& e) {
    if (e.pins > 0) return;
    if (uses_list()) {
      place(e);
    } else {
      index.insert(key_of(e));
    }
    publish();
  }
  void index_erase(Entry& e) {
    if (e.pins > 0) return;
    if (uses_list()) {
      unlink(e);
    } else {
      index.erase(key_of(e));
    }
    publish();
  }
  // Re-keys an entry after `mutate` changed it. Set kinds reuse the node (no allocation).
  template <class F>
  void update(Entry& e, F&& mutate) {
    if (e.pins > 0) {
      mutate(e);
      return;
    }
    if (uses_list()) {
      const std::uint64_t old = e.last_access;
      mutate(e);
      if (e.last_access != old) {  // touched: usually the most recent of this shard
        unlink(e);
        place(e);
        publish();  // cheap when the head did not change
      }
      return;
    }
    Key old_key = key_of(e);
    mutate(e);
    Key new_key = key_of(e);
    if (new_key == old_key) return;
    auto node = index.extract(old_key);
    assert(!node.empty());
    node.value() = new_key;
    index.insert(std::move(node));
    publish();
  }
  // append's recency update: `n` tokens were added and the entry was accessed at `stamp` (a later
  // stamp that another call left on the entry stays). The list kinds take a short path: only an
  // entry that was the head changes the published head, and the tail needs no move.
  [[gnu::always_inline]] void touch_appended(Entry& e, std::uint64_t n, std::uint64_t stamp) {
    if (e.pins > 0 || !uses_list()) {
      update(e, [&](Entry& x) {
        x.num_tokens += n;
        x.last_access = std::max(x.last_access, stamp);
        x.access_count += 1;
      });
      return;
    }
    e.num_tokens += n;
    e.access_count += 1;
    if (stamp <= e.last_access) return;
    const bool was_head = ring.next == &e;
    e.last_access = stamp;
    if (ring.prev != &e) {
      unlink(e);  // (the tail stays: it is another entry)
      if (stamp >= as_entry(ring.prev)->last_access) {
        link_tail(e);  // the usual case, inline; place() walks back for an older batch stamp
      } else {
        place(e);
      }
    }
    if (was_head) publish_listed_head();
  }
  // publish() after a touch of the head of a list kind: the list is not empty before or after
  // (the touched entry stays listed), so the occupancy bit stands and primary stays 0; only the
  // head's stamp, and its id if another entry became head, change.
  [[gnu::always_inline]] void publish_listed_head() noexcept {
    assert(ring.next != &ring && published.primary == 0 && published.last_access != kMax64);
    const Entry& h = *as_entry(ring.next);
    // relaxed: a hint for scanners (see pub_primary).
    if (published.seq != h.id.value) {
      published.seq = h.id.value;
      pub_seq.store(published.seq, std::memory_order_relaxed);
    }
    published.last_access = h.last_access;
    pub_access.store(published.last_access, std::memory_order_relaxed);
  }
  std::optional<Key> index_head() const {
    if (uses_list()) return head() != nullptr ? std::optional<Key>(key_of(*head())) : std::nullopt;
    return index.empty() ? std::nullopt : std::optional<Key>(*index.begin());
  }
  std::size_t index_size() const noexcept { return uses_list() ? listed : index.size(); }
  bool index_contains(const Entry& e) const {
    if (!uses_list()) return index.contains(key_of(e));
    for (const ListHook* x = ring.next; x != &ring; x = x->next)
      if (x == &e) return true;
    return false;
  }
  void rebuild(EvictionStrategy::Kind k) {
    ring.prev = ring.next = &ring;
    listed = 0;
    index.clear();
    kind = k;
    std::vector<Entry*> all;
    for (auto& kv : map)
      if (kv.second.pins == 0) all.push_back(&kv.second);
    std::sort(all.begin(), all.end(),
              [](const Entry* x, const Entry* y) { return x->last_access < y->last_access; });
    for (Entry* e : all) index_insert(*e);
    publish();
  }
};

struct alignas(kLine) PagedKvCache::Stripe {
  std::atomic<std::uint64_t> evictions{0};  // relaxed counters: summed by stats()
  std::atomic<std::uint64_t> forks{0};
};

struct PagedKvCache::Impl {
  Impl() {
    for (std::size_t i = 0; i < kShards; ++i) {
      shards[i].occupied_word = &occupied[i / 64];
      shards[i].occupied_bit = std::uint64_t{1} << (i % 64);
    }
  }
  std::array<Shard, kShards> shards;
  std::array<Stripe, kStripes> stripes;
  // Bit i set while shard i's published head is not empty (Shard::store_published). Victim scans
  // read these kShards / 64 words and then only the heads of occupied shards: with few live
  // sequences a scan reads a few lines instead of kShards.
  alignas(kLine) std::array<std::atomic<std::uint64_t>, kShards / 64> occupied{};
  static_assert(kShards % 64 == 0);
  // Logical clock for recency: one relaxed RMW on its own line; its order agrees with
  // happens-before, which is all "exact LRU for calls one after another" needs.
  alignas(kLine) std::atomic<std::uint64_t> clock{0};
  alignas(kLine) std::atomic<std::uint64_t> peak{0};  // CAS-max, relaxed (a statistic)
  std::atomic<double> threshold{0.9};
  static_assert(std::atomic<double>::is_always_lock_free);
  // Excludes strategy changes (writer) from victim selection (readers). Never taken by
  // allocate / append / free / fork / get_sequence.
  mutable std::shared_mutex strategy_mu;
  EvictionStrategy strategy;  // guarded by strategy_mu
};

PagedKvCache::Shard& PagedKvCache::shard_of(SeqId seq) const noexcept {
  return shard_at(seq, std::hash<SeqId>{}(seq));
}

PagedKvCache::Shard& PagedKvCache::shard_at(SeqId seq, std::size_t hash) const noexcept {
  // The table slot uses hash bits 8 and up (SeqMap), the shard only bits below 8: independent.
  static_assert(kShards <= 256);
  return impl_
      ->shards[(((seq.value >> owner_shift_) & owner_mask_) << owner_pos_) | (hash & local_mask_)];
}

std::size_t PagedKvCache::shard_index(SeqId seq) const noexcept {
  return static_cast<std::size_t>(&shard_of(seq) - impl_->shards.data());
}

PagedKvCache::Stripe& PagedKvCache::my_stripe() const noexcept {
  return impl_->stripes[detail::thread_index() & (kStripes - 1)];
}

std::uint64_t PagedKvCache::tick() noexcept {
  // Recency stamps, taken under the shard lock of the sequence they stamp. One relaxed RMW on a
  // line of its own: its modification order agrees with happens-before, so calls that happen one
  // after another are ordered exactly. (Measured: rdtscp costs 19 ns on the CI VM, more than the
  // RMW even with 2 threads contending, so there is no TSC variant.) Within a shard the stamps
  // are increasing anyway, since they are taken under the shard lock; the recency list relies on
  // that, and the assert in index_insert checks it.
  return impl_->clock.fetch_add(1, std::memory_order_relaxed) + 1;
}

void PagedKvCache::note_peak() noexcept {
  std::uint64_t used = pool_->used_count();
  std::uint64_t peak = impl_->peak.load(std::memory_order_relaxed);
  while (used > peak && !impl_->peak.compare_exchange_weak(peak, used, std::memory_order_relaxed)) {
  }
}

// ---- construction and configuration ----

Result<std::unique_ptr<PagedKvCache>> PagedKvCache::create(std::size_t num_blocks,
                                                           std::size_t block_size,
                                                           std::size_t num_heads,
                                                           std::size_t head_dim, Options options) {
  std::size_t bytes = 0;
  if (auto e = config_error(num_blocks, block_size, num_heads, head_dim, options, &bytes))
    return *e;
  return std::make_unique<PagedKvCache>(num_blocks, block_size, num_heads, head_dim, options);
}

PagedKvCache::PagedKvCache(std::size_t num_blocks, std::size_t block_size, std::size_t num_heads,
                           std::size_t head_dim, Options options)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      num_heads_(num_heads),
      head_dim_(head_dim),
      block_bytes_(0) {
  if (auto e = config_error(num_blocks, block_size, num_heads, head_dim, options, &block_bytes_))
    throw std::invalid_argument(e->message());
  pool_ = std::make_unique<BlockPool>(num_blocks, options.pool);
  hold_copy_sources_ = options.hold_copy_sources;
  if (options.affinity_shift != 0) {
    constexpr std::size_t per_slice = kShards / kAffinitySlices;
    owner_shift_ = options.affinity_shift;
    owner_pos_ = static_cast<unsigned>(std::countr_zero(per_slice));
    owner_mask_ = kAffinitySlices - 1;
    local_mask_ = per_slice - 1;
  }
  impl_ = std::make_unique<Impl>();
}

PagedKvCache::~PagedKvCache() = default;

Result<void> PagedKvCache::set_eviction_strategy(const EvictionStrategy& s) {
  if (s.kind() == EvictionStrategy::Kind::priority && s.levels() == 0)
    return Error::invalid_argument("Priority strategy needs at least 1 level");
  if (s.kind() == EvictionStrategy::Kind::streaming_llm) {
    if (s.sink_tokens() + s.window_tokens() == 0 ||
        s.sink_tokens() > std::numeric_limits<std::size_t>::max() - s.window_tokens())
      return Error::invalid_argument("StreamingLLM needs 1 <= sink + window (no overflow)");
  }
  std::unique_lock<std::shared_mutex> w(impl_->strategy_mu);
  impl_->strategy = s;
  for (Shard& sh : impl_->shards) {
    std::lock_guard<ShardLock> g(sh.mu);
    sh.rebuild(s.kind());
  }
  return {};
}

EvictionStrategy PagedKvCache::eviction_strategy() const {
  std::shared_lock<std::shared_mutex> r(impl_->strategy_mu);
  return impl_->strategy;
}

Result<void> PagedKvCache::set_eviction_threshold(double threshold) {
  if (std::isnan(threshold)) return Error::invalid_argument("eviction threshold is NaN");
  impl_->threshold.store(std::clamp(threshold, 0.0, 1.0), std::memory_order_relaxed);
  return {};
}

double PagedKvCache::eviction_threshold() const noexcept {
  return impl_->threshold.load(std::memory_order_relaxed);
}

Result<void> PagedKvCache::set_priority(SeqId seq, std::uint32_t priority) {
  Shard& sh = shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  auto it = sh.map.find(seq);
  if (it == sh.map.end()) return Error::sequence_not_found(seq);
  sh.update(it->second, [&](Entry& e) { e.priority = priority; });
  return {};
}

Result<void> PagedKvCache::pin(SeqId seq) {
  Shard& sh = shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  auto it = sh.map.find(seq);
  if (it == sh.map.end()) return Error::sequence_not_found(seq);
  Entry& e = it->second;
  if (e.pins == std::numeric_limits<std::uint32_t>::max())
    return Error::invalid_operation("Sequence " + to_string(seq) + " is pinned too often");
  if (e.pins == 0) sh.index_erase(e);  // out of the victims' reach
  ++e.pins;
  return {};
}

Result<void> PagedKvCache::unpin(SeqId seq) {
  Shard& sh = shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  auto it = sh.map.find(seq);
  if (it == sh.map.end()) return Error::sequence_not_found(seq);
  Entry& e = it->second;
  if (e.pins == 0) return Error::invalid_operation("Sequence " + to_string(seq) + " is not pinned");
  if (--e.pins == 0) sh.index_insert(e);
  return {};
}

Result<std::size_t> PagedKvCache::copy_done(SeqId seq) {
  Shard& sh = shard_of(seq);
  std::vector<BlockId> pending;
  {
    std::lock_guard<ShardLock> g(sh.mu);
    auto it = sh.map.find(seq);
    if (it == sh.map.end()) return Error::sequence_not_found(seq);
    pending.swap(it->second.pending);
    (void)pool_->release(std::span<const BlockId>(pending));  // under the lock: see free()
  }
  return pending.size();
}

// ---- figures ----

std::size_t PagedKvCache::free_block_count() const noexcept {
  return pool_->free_count();
}
std::size_t PagedKvCache::used_block_count() const noexcept {
  return pool_->used_count();
}

double PagedKvCache::utilization() const noexcept {
  return static_cast<double>(used_block_count()) / static_cast<double>(num_blocks_);
}

bool PagedKvCache::needs_eviction() const noexcept {
  return utilization() >= eviction_threshold();
}

std::size_t PagedKvCache::num_sequences() const noexcept {
  std::size_t n = 0;
  for (const Shard& sh : impl_->shards) n += sh.size.load(std::memory_order_relaxed);
  return n;
}

CacheStats PagedKvCache::stats() const noexcept {
  CacheStats s;
  s.total_allocations = pool_->total_acquired();
  s.total_frees = pool_->total_released();
  for (const Stripe& st : impl_->stripes) {
    s.total_evictions += st.evictions.load(std::memory_order_relaxed);
    s.total_forks += st.forks.load(std::memory_order_relaxed);
  }
  s.peak_blocks_used = impl_->peak.load(std::memory_order_relaxed);
  return s;
}

// ---- sequences ----

Result<void> PagedKvCache::allocate(SeqId seq, std::size_t num_tokens) {
  const std::size_t nb = num_tokens / block_size_ + (num_tokens % block_size_ != 0 ? 1 : 0);
  Shard& sh = shard_of(seq);
  {
    std::lock_guard<ShardLock> g(sh.mu);
    if (sh.map.contains(seq))
      return Error::invalid_operation("Sequence " + to_string(seq) + " already exists");
    Entry e(seq);
    if (nb > 0) {
      if (Result<void> r = pool_->acquire(nb, e.blocks); !r) return r.error();
      e.runs.push_back(TokenRun{0, 0, num_tokens});
      e.end_slot = num_tokens;
    }
    e.num_tokens = num_tokens;
    e.last_access = tick();
    e.access_count = 1;
    auto it = sh.map.insert_new(seq, std::move(e));
    sh.index_insert(it->second);
    sh.size.store(sh.map.size(), std::memory_order_relaxed);
  }
  if (nb > 0) note_peak();
  return {};
}

// append's fast path, inline in append and append_batch (append_locked, out of line, does the
// rest): the tokens fit in the free slots of a last block that is known to be private, so no
// copy, no block taken and no overflow (the slots exist). Most decode steps. Caller holds the
// shard lock. Returns false, having changed nothing, when the slow path must run.
template <class Shard, class Entry>
[[gnu::always_inline]] inline bool append_fast(Shard& sh, Entry& e, std::size_t block_size,
                                               std::size_t num_tokens, std::uint64_t stamp) {
  if (num_tokens == 0 || e.maybe_shared || e.runs.empty() ||
      num_tokens > e.blocks.size() * block_size - e.next_slot())
    return false;
  e.runs.back().length += num_tokens;
  e.end_slot += num_tokens;
  sh.touch_appended(e, num_tokens, stamp);
  return true;
}

// The body of append() for one entry whose shard lock the caller holds. `stamp` is the recency
// stamp of this access (see tick()); an entry touched meanwhile with a later stamp keeps it.
// Sets *took when blocks were taken (the caller notes the peak after unlocking). The outcome is a
// one-byte code; the CopyOp (rare) comes back through *copy and the Error (cold) through *err.
// Returning a Result here, or a small struct, and moving it into place cost a store-forwarding
// stall per call (narrow stores re-read by wider loads), more than the rest of the append.
PagedKvCache::AppendStep PagedKvCache::append_locked(Shard& sh, Entry& e, std::size_t num_tokens,
                                                     std::uint64_t stamp, bool* took, CopyOp* copy,
                                                     std::optional<Error>* err) {
  if (num_tokens > std::numeric_limits<std::size_t>::max() - e.num_tokens) {
    err->emplace(Error::invalid_argument("appending " + std::to_string(num_tokens) + " tokens to " +
                                         to_string(e.id) + " overflows its token count"));
    return AppendStep::failed;
  }
  AppendStep outcome = AppendStep::appended;
  if (num_tokens > 0) {
    const std::uint64_t next = e.next_slot();
    const std::uint64_t room = e.blocks.size() * block_size_ - next;  // free slots in last block
    // Copy-on-write: the last block has free slots we are about to write, and another sequence
    // holds it. Its count cannot rise meanwhile: only fork adds references, and fork of any
    // holder of this block locks that holder's shard; the one holder whose next write goes
    // here is `seq`, whose shard we hold. (Two sharers may both copy; never neither.)
#if PKV_MUTATION_COW
    const bool cow = false;  // mutation build: copy-on-write dropped (the checks must fail)
#else
    const bool cow = room > 0 && e.maybe_shared && pool_->ref_count(e.blocks.back()) > 1;
#endif
    const std::uint64_t beyond = num_tokens > room ? num_tokens - room : 0;
    const std::uint64_t fresh = beyond / block_size_ + (beyond % block_size_ != 0 ? 1 : 0);
    const std::uint64_t need = fresh + (cow ? 1 : 0);
    // After this append the last block is private: a fresh copy, a fresh block, or one whose
    // count we just read as 1 (nothing can raise it while we hold this shard's lock, see above).
    if (need > 0) {
      const std::size_t old_len = e.blocks.size();
      // Grow geometrically here: acquire() reserves only what it appends. (A request larger
      // than the pool fails in acquire with out_of_memory; reserve nothing for it.)
      if (need <= num_blocks_ && e.blocks.capacity() < old_len + need)
        e.blocks.reserve(std::max<std::size_t>(2 * e.blocks.capacity(), old_len + need));
      // acquire appends to e.blocks, or fails and leaves it unchanged (nothing changed then).
      if (Result<void> r = pool_->acquire(need, e.blocks); !r) {
        err->emplace(r.error());
        return AppendStep::failed;
      }
      *took = true;
      if (cow) {
        // The first fresh block replaces the shared last block (the CopyOp's destination).
        const BlockId unshared = e.blocks[old_len - 1];
        *copy = CopyOp{unshared, e.blocks[old_len]};
        outcome = AppendStep::copied;
        e.blocks[old_len - 1] = e.blocks[old_len];
        e.blocks.erase(e.blocks.begin() + static_cast<std::ptrdiff_t>(old_len));
        // Our reference to the source: held until copy_done(), or dropped now. Under the lock:
        // see free().
        if (hold_copy_sources_) {
          e.pending.push_back(unshared);
        } else {
          (void)pool_->release(unshared);
        }
      }
    }
    e.maybe_shared = false;  // (only after success: a failed append changes nothing)
    if (e.runs.empty()) {
      e.runs.push_back(TokenRun{0, next, num_tokens});
    } else {
      e.runs.back().length += num_tokens;  // appended tokens follow the last kept slot
    }
    e.end_slot = next + num_tokens;
  }
  sh.touch_appended(e, num_tokens, stamp);
  return outcome;
}

Result<std::optional<CopyOp>> PagedKvCache::append(SeqId seq, std::size_t num_tokens) {
  // One hash for the shard and the slot (after the lock the compiler would compute it again).
  const std::size_t hash = std::hash<SeqId>{}(seq);
  Shard& sh = shard_at(seq, hash);
  bool took = false;
  std::optional<Error> err;
  CopyOp copy;
  AppendStep step;
  {
    std::lock_guard<ShardLock> g(sh.mu);
    Entry* e = sh.map.find_entry(seq, hash);
    if (e == nullptr) return Error::sequence_not_found(seq);
    const std::uint64_t stamp = tick();
    step = append_fast(sh, *e, block_size_, num_tokens, stamp)
               ? AppendStep::appended
               : append_locked(sh, *e, num_tokens, stamp, &took, &copy, &err);
  }
  if (took) note_peak();
  if (step == AppendStep::appended) return Result<std::optional<CopyOp>>(std::in_place);
  if (step == AppendStep::copied) return Result<std::optional<CopyOp>>(std::in_place, copy);
  return std::move(*err);
}

void PagedKvCache::append_batch(std::span<const SeqId> seqs, std::size_t num_tokens,
                                AppendBatchOutcome& out) {
  append_items<false>(seqs, num_tokens, nullptr, out);
}

Result<void> PagedKvCache::append_batch(std::span<const SeqId> seqs,
                                        std::span<const std::size_t> num_tokens,
                                        AppendBatchOutcome& out) {
  if (num_tokens.size() != seqs.size()) {
    out.clear();
    return Error::invalid_argument("append_batch: " + std::to_string(seqs.size()) +
                                   " sequences but " + std::to_string(num_tokens.size()) +
                                   " token counts");
  }
  append_items<true>(seqs, 0, num_tokens.data(), out);
  return {};
}

// Both append_batch forms: item i appends per_item[i] tokens (PerItem), or num_tokens. Two
// instantiations, so the uniform form keeps its count loop-invariant (a runtime choice per item
// cost it ~7 instructions per item, callgrind).
template <bool PerItem>
void PagedKvCache::append_items(std::span<const SeqId> seqs, std::size_t num_tokens,
                                const std::size_t* per_item, AppendBatchOutcome& out) {
  out.clear();
  // Room for every item's copy or error before any item changes anything: no allocation, so no
  // exception, after the first item (a CopyOp lost that way would leave a block uncopied).
  // Capacity is kept across calls, so a scheduler reusing `out` allocates only while warming up.
  out.copies.reserve(seqs.size());
  out.errors.reserve(seqs.size());
  out.items = seqs.size();
  if (seqs.empty()) return;
  // One clock update for the whole batch: item i is stamped base + i + 1, so the items are
  // ordered among themselves as separate calls would be, and after every call that returned
  // before this one started. (tick() takes one stamp; this takes seqs.size() at once.)
  const std::uint64_t base = impl_->clock.fetch_add(seqs.size(), std::memory_order_relaxed);
  bool took = false;
  std::optional<Error> err;
  CopyOp copy;
  std::size_t next_hash = std::hash<SeqId>{}(seqs[0]);
  Shard* next_shard = &shard_at(seqs[0], next_hash);
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    const SeqId seq = seqs[i];
    const std::size_t hash = next_hash;
    Shard& sh = *next_shard;
    // The next item's shard line (lock, table header, list ends) starts loading now, so its
    // miss overlaps this item's work. A prefetch reads no data: nothing races.
    if (i + 1 < seqs.size()) {
      next_hash = std::hash<SeqId>{}(seqs[i + 1]);
      next_shard = &shard_at(seqs[i + 1], next_hash);
      __builtin_prefetch(next_shard, 1);
    }
    std::size_t n = num_tokens;
    if constexpr (PerItem) n = per_item[i];
    AppendStep step = AppendStep::failed;
    {
      std::lock_guard<ShardLock> g(sh.mu);
      Entry* e = sh.map.find_entry(seq, hash);
      if (e == nullptr) {
        err.emplace(Error::sequence_not_found(seq));
      } else {
        step = append_fast(sh, *e, block_size_, n, base + i + 1)
                   ? AppendStep::appended
                   : append_locked(sh, *e, n, base + i + 1, &took, &copy, &err);
      }
    }
    // A success writes nothing; copies and errors are listed with their item's index.
    if (step == AppendStep::copied) {
      out.copies.push_back({i, copy});
    } else if (step == AppendStep::failed) {
      out.errors.push_back({i, std::move(*err)});
      err.reset();
    }
  }
  if (took) note_peak();
}

Result<void> PagedKvCache::free(SeqId seq) {
  Shard& sh = shard_of(seq);
  std::vector<BlockId> blocks;
  {
    std::lock_guard<ShardLock> g(sh.mu);
    auto it = sh.map.find(seq);
    if (it == sh.map.end()) return Error::sequence_not_found(seq);
    sh.index_erase(it->second);
    blocks = std::move(it->second.blocks);
    blocks.insert(blocks.end(), it->second.pending.begin(), it->second.pending.end());
    sh.map.erase(it);
    sh.size.store(sh.map.size(), std::memory_order_relaxed);
    // Blocks go back before the shard unlocks: a caller that sees the sequence gone (its shard
    // lock taken after ours) also sees its blocks free, so it gets no spurious out_of_memory.
    (void)pool_->release(std::span<const BlockId>(blocks));
  }
  return {};
}

Result<void> PagedKvCache::fork(SeqId src, SeqId dst) {
  if (src == dst)
    return Error::invalid_operation("Cannot fork sequence " + to_string(src) + " onto itself");
  Shard& a = shard_of(src);
  Shard& b = shard_of(dst);
  // Two shard locks in address order (one if both ids share a shard): no deadlock with another
  // fork locking the same pair the other way round.
  std::unique_lock<ShardLock> l1, l2;
  if (&a == &b) {
    l1 = std::unique_lock<ShardLock>(a.mu);
  } else {
    Shard* first = &a < &b ? &a : &b;
    Shard* second = &a < &b ? &b : &a;
    l1 = std::unique_lock<ShardLock>(first->mu);
    l2 = std::unique_lock<ShardLock>(second->mu);
  }
  if (b.map.contains(dst))
    return Error::invalid_operation("Destination sequence " + to_string(dst) + " already exists");
  auto it = a.map.find(src);
  if (it == a.map.end()) return Error::sequence_not_found(src);
  Entry& s = it->second;
  if (Result<void> r = pool_->retain(std::span<const BlockId>(s.blocks)); !r) return r.error();
  Entry d(dst);
  d.blocks = s.blocks;
  d.runs = s.runs;
  d.end_slot = s.end_slot;
  d.num_tokens = s.num_tokens;
  d.priority = s.priority;  // a beam or sample inherits its request's priority
  d.streamed = s.streamed;
  d.maybe_shared = s.maybe_shared = true;  // both now hold the same last block
  d.last_access = tick();
  d.access_count = 1;
  auto ins = b.map.insert_new(dst, std::move(d));
  b.index_insert(ins->second);
  b.size.store(b.map.size(), std::memory_order_relaxed);
  my_stripe().forks.fetch_add(1, std::memory_order_relaxed);  // striped statistic
  return {};
}

std::optional<SequenceInfo> PagedKvCache::get_sequence(SeqId seq) const {
  Shard& sh = shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  auto it = sh.map.find(seq);
  if (it == sh.map.end()) return std::nullopt;
  const Entry& e = it->second;
  SequenceInfo info;
  info.seq_id = seq;
  info.num_tokens = e.num_tokens;
  info.block_ids = e.blocks;
  info.last_access = e.last_access;
  info.access_count = e.access_count;
  info.priority = e.priority;
  info.token_runs = e.runs;
  return info;
}

std::vector<SeqId> PagedKvCache::sequence_ids() const {
  std::vector<SeqId> ids;
  ids.reserve(num_sequences());
  for (const Shard& sh : impl_->shards) {
    std::lock_guard<ShardLock> g(sh.mu);
    for (const auto& kv : sh.map) ids.push_back(kv.first);
  }
  return ids;
}

// ---- eviction ----

namespace {
// The shard whose published head is best (smallest key): a lock-free scan of the occupied
// shards' published heads, no lock taken. nullptr if every shard looked empty; *seen = the key it
// saw.
template <class Impl>
auto* best_shard(Impl& impl, Key* seen) {
  decltype(&impl.shards[0]) best = nullptr;
  Key& best_key = *seen;
  for (std::size_t w = 0; w < impl.occupied.size(); ++w) {
    // relaxed: a hint (see Shard::store_published); the chosen shard is re-read under its lock.
    for (std::uint64_t bits = impl.occupied[w].load(std::memory_order_relaxed); bits != 0;
         bits &= bits - 1) {
      auto& sh = impl.shards[w * 64 + static_cast<std::size_t>(std::countr_zero(bits))];
      const Key k = sh.read_published();
      if (k.last_access == kMax64) continue;  // emptied since the bit was read
      if (best == nullptr || k < best_key) {
        best = &sh;
        best_key = k;
      }
    }
  }
  return best;
}
}  // namespace

// Victim choice: scan the published heads, lock the best shard, and take its real head if it is
// still the key the scan saw. If that shard changed meanwhile (its head was pinned, touched,
// freed...), the scan is stale: scan again, a bounded number of times, then take the real head.
constexpr int kRescans = 16;

std::optional<SeqId> PagedKvCache::select_eviction_target() const {
  std::shared_lock<std::shared_mutex> r(impl_->strategy_mu);
  for (int attempt = 0;; ++attempt) {
    Key seen{};
    const Shard* sh = best_shard(*impl_, &seen);
    if (sh == nullptr) return std::nullopt;
    std::lock_guard<ShardLock> g(sh->mu);
    std::optional<Key> k = sh->index_head();
    if (!k) continue;  // the shard emptied after the scan: scan again
    if (*k == seen || attempt >= kRescans) return SeqId{k->seq};
  }
}

Result<SeqId> PagedKvCache::evict() {
  std::vector<BlockId> blocks;
  SeqId victim;
  {
    std::shared_lock<std::shared_mutex> r(impl_->strategy_mu);
    for (int attempt = 0;; ++attempt) {
      Key seen{};
      Shard* sh = best_shard(*impl_, &seen);
      if (sh == nullptr) return Error::invalid_operation("No sequences to evict");
      std::lock_guard<ShardLock> g(sh->mu);
      const std::optional<Key> real = sh->index_head();
      if (!real) continue;                                // emptied after the scan
      if (*real != seen && attempt < kRescans) continue;  // stale scan: see kRescans
      // The shard's real head, under its lock: unpinned, live, and removed by this thread only.
      Entry* e = sh->uses_list() ? sh->head() : nullptr;
      if (!sh->uses_list()) {
        if (sh->index.empty()) continue;  // emptied after the scan: scan again
        e = &sh->map.find(SeqId{sh->index.begin()->seq})->second;
      }
      if (e == nullptr) continue;
      victim = e->id;
      sh->index_erase(*e);
      blocks = std::move(e->blocks);
      blocks.insert(blocks.end(), e->pending.begin(), e->pending.end());
      sh->map.erase(victim);
      sh->size.store(sh->map.size(), std::memory_order_relaxed);
      // Removed under its shard lock by this thread alone: freed once, never by anyone else;
      // released before unlocking, as in free().
      (void)pool_->release(std::span<const BlockId>(blocks));
      break;
    }
  }
  my_stripe().evictions.fetch_add(1, std::memory_order_relaxed);  // striped statistic
  return victim;
}

Result<std::vector<SeqId>> PagedKvCache::evict_to_threshold(double target) {
  if (!(target >= 0.0 && target <= 1.0))
    return Error::invalid_argument("eviction target utilization must be in 0..1");
  std::vector<SeqId> evicted;
  while (utilization() > target) {
    Result<SeqId> r = evict();
    if (!r) break;  // no sequence left
    evicted.push_back(r.value());
  }
  return evicted;
}

Result<std::size_t> PagedKvCache::apply_streaming_llm(SeqId seq, std::size_t sink,
                                                      std::size_t window) {
  if (sink > std::numeric_limits<std::size_t>::max() - window)
    return Error::invalid_argument("sink_tokens + window_tokens overflows");
  if (sink + window == 0)
    return Error::invalid_argument("StreamingLLM must keep at least one token (sink + window)");
  Shard& sh = shard_of(seq);
  std::vector<BlockId> dropped;
  std::size_t evicted = 0;
  {
    std::lock_guard<ShardLock> g(sh.mu);
    auto it = sh.map.find(seq);
    if (it == sh.map.end()) return Error::sequence_not_found(seq);
    Entry& e = it->second;
    const std::uint64_t n = e.num_tokens;
    const std::uint64_t keep = sink + window;
    if (n <= keep) return std::size_t{0};

    // Kept tokens [0, sink) and [n - window, n), located in slot space through the runs.
    std::vector<TokenRun> pieces;  // in old slot space, first_token already renumbered
    auto collect = [&](std::uint64_t t0, std::uint64_t t1, std::uint64_t renumber_to) {
      for (const TokenRun& r : e.runs) {
        std::uint64_t lo = std::max(t0, r.first_token);
        std::uint64_t hi = std::min(t1, r.first_token + r.length);
        if (lo >= hi) continue;
        pieces.push_back(TokenRun{renumber_to + (lo - t0), r.slot + (lo - r.first_token), hi - lo});
      }
    };
    collect(0, sink, 0);
    collect(n - window, n, sink);

    // Keep exactly the blocks that hold a kept token.
    const std::size_t nb = e.blocks.size();
    std::vector<std::uint64_t> new_index(nb, kMax64);
    for (const TokenRun& p : pieces) {
      for (std::uint64_t b = p.slot / block_size_; b <= (p.slot + p.length - 1) / block_size_; ++b)
        new_index[b] = 0;
    }
    std::vector<BlockId> kept;
    for (std::size_t b = 0; b < nb; ++b) {
      if (new_index[b] == 0) {
        new_index[b] = kept.size();
        kept.push_back(e.blocks[b]);
      } else {
        dropped.push_back(e.blocks[b]);
      }
    }
    // Renumber slots into the compacted table; merge runs that became adjacent.
    std::vector<TokenRun> runs;
    for (TokenRun p : pieces) {
      p.slot = new_index[p.slot / block_size_] * block_size_ + p.slot % block_size_;
      if (!runs.empty() && runs.back().first_token + runs.back().length == p.first_token &&
          runs.back().slot + runs.back().length == p.slot) {
        runs.back().length += p.length;
      } else {
        runs.push_back(p);
      }
    }
    sh.update(e, [&](Entry& x) {
      x.blocks = std::move(kept);
      x.runs = std::move(runs);
      x.end_slot = Entry::end_of(x.runs);
      x.num_tokens = keep;
      x.streamed = true;
      x.maybe_shared = true;  // the new last block may be an earlier, shared one
    });
    evicted = n - keep;
    (void)pool_->release(std::span<const BlockId>(dropped));  // under the lock: see free()
  }
  return evicted;
}

// ---- validation and printing ----

std::string PagedKvCache::validate_unsafe() const {
  if (std::string e = pool_->validate_unsafe(); !e.empty()) return "pool: " + e;
  struct Holder {
    std::uint64_t fill;
    bool streamed;
  };
  std::unordered_map<std::uint32_t, std::vector<Holder>> holders;
  for (std::size_t s = 0; s < kShards; ++s) {
    const Shard& sh = impl_->shards[s];
    std::size_t unpinned = 0;
    for (const auto& kv : sh.map) unpinned += kv.second.pins == 0 ? 1 : 0;
    if (sh.index_size() != unpinned || sh.size.load() != sh.map.size())
      return "shard " + std::to_string(s) + ": index/size disagree with the map";
    {
      const std::optional<Key> h = sh.index_head();
      if (sh.read_published() != (h ? *h : Key{kMax64, kMax64, kMax64}))
        return "shard " + std::to_string(s) + ": published head is stale";
      const bool bit = (impl_->occupied[s / 64].load() >> (s % 64)) & 1;
      if (bit != h.has_value())
        return "shard " + std::to_string(s) + ": occupancy bit disagrees with its head";
    }
    if (sh.uses_list()) {
      // One walk: sorted by recency, only unpinned entries of this shard, each once.
      std::size_t n = 0;
      std::uint64_t last = 0;
      if (sh.ring.next->prev != &sh.ring ||
          (sh.ring.next == &sh.ring) != (sh.ring.prev == &sh.ring))
        return "shard " + std::to_string(s) + ": recency ring's sentinel links are corrupt";
      for (const ListHook* h = sh.ring.next; h != &sh.ring; h = h->next) {
        const Entry* x = Shard::as_entry(const_cast<ListHook*>(h));
        auto it = sh.map.find(x->id);
        if (h->next->prev != h || it == sh.map.end() || &it->second != x || x->pins > 0 ||
            ++n > unpinned || (n > 1 && x->last_access <= last))
          return "shard " + std::to_string(s) + ": recency list is corrupt";
        last = x->last_access;
      }
      if (n != unpinned) return "shard " + std::to_string(s) + ": recency list misses entries";
    }
    for (const auto& [seq, e] : sh.map) {
      if (!sh.uses_list() && e.pins == 0 && !sh.index_contains(e))
        return to_string(seq) + " missing from index";
      for (BlockId b : e.pending) holders[b.value].push_back(Holder{0, true});
      if (&shard_of(seq) != &sh) return to_string(seq) + " is in the wrong shard";
      std::uint64_t tokens = 0;
      std::vector<std::uint8_t> used(e.blocks.size(), 0);
      for (const TokenRun& r : e.runs) {
        if (r.first_token != tokens || r.length == 0) return to_string(seq) + ": bad token runs";
        tokens += r.length;
        if (r.slot + r.length > e.blocks.size() * block_size_)
          return to_string(seq) + ": a run points past its block table";
        for (std::uint64_t b = r.slot / block_size_; b <= (r.slot + r.length - 1) / block_size_;
             ++b)
          used[b] = 1;
      }
      if (tokens != e.num_tokens) return to_string(seq) + ": runs do not cover num_tokens";
      if (e.end_slot != Entry::end_of(e.runs))
        return to_string(seq) + ": end_slot does not match its runs";
      if (std::find(used.begin(), used.end(), 0) != used.end())
        return to_string(seq) + ": holds a block with none of its tokens";
      for (std::size_t b = 0; b < e.blocks.size(); ++b) {
        std::uint64_t fill =
            b + 1 < e.blocks.size() ? block_size_ : e.next_slot() - b * block_size_;
        holders[e.blocks[b].value].push_back(Holder{fill, e.streamed});
      }
    }
  }
  for (const auto& [block, hs] : holders) {
    if (pool_->ref_count(BlockId{block}) != hs.size())
      return "B" + std::to_string(block) + ": ref count " +
             std::to_string(pool_->ref_count(BlockId{block})) + " != " + std::to_string(hs.size()) +
             " tables holding it";
    // A shared block is frozen: every holder that never dropped tokens sees the same fill, so no
    // holder wrote into it after the fork (copy-on-write did its job).
    for (const Holder& h : hs) {
      if (!h.streamed && !hs.front().streamed && h.fill != hs.front().fill)
        return "B" + std::to_string(block) + " is shared with different fills (" +
               std::to_string(h.fill) + " vs " + std::to_string(hs.front().fill) +
               "): a sharer wrote into it";
    }
  }
  if (holders.size() != pool_->used_count())
    return "referenced blocks (" + std::to_string(holders.size()) + ") != used blocks (" +
           std::to_string(pool_->used_count()) + ")";
  return {};
}

std::ostream& operator<<(std::ostream& os, const PagedKvCache& c) {
  const CacheStats s = c.stats();
  const std::size_t used = c.used_block_count();
  char buf[256];
  os << "PagedKvCache\n";
  os << "  Strategy: " << c.eviction_strategy() << " (block_size=" << c.block_size() << ")\n";
  std::snprintf(buf, sizeof buf, "  Blocks: %zu/%zu (%.1f%% used)\n", used, c.total_blocks(),
                static_cast<double>(used) / static_cast<double>(c.total_blocks()) * 100.0);
  os << buf;
  std::snprintf(buf, sizeof buf, "  Memory: %.2f MB / %.2f MB\n",
                static_cast<double>(used * c.block_memory_bytes()) / 1'000'000.0,
                static_cast<double>(c.total_memory_bytes()) / 1'000'000.0);
  os << buf;
  os << "  Sequences: " << c.num_sequences() << " active\n";
  os << "  Stats: allocs=" << s.total_allocations << ", frees=" << s.total_frees
     << ", evictions=" << s.total_evictions << ", forks=" << s.total_forks << '\n';
  return os;
}

}  // namespace pkv

// src/cache/seq_map.hpp — a shard's sequence table: SeqId -> Entry, open addressing.
//
// Linear probing over a power-of-two array of {id, node} slots, at most half full, deletion by
// backward shift (no tombstones). The node holds the value, so values never move (the recency
// list links entries in place) and a lookup reads one slot line before the value itself. The slot
// index uses the id's hash above bit 8 (the shard is chosen by the bits below, see placement.hpp).
// Invariants:
//   size == number of slots with a node,   2 * size <= cap   (cap a power of two, or 0)
//   every member is reachable from its home slot without crossing an empty slot
// Not thread-safe: the shard lock guards it. Unit-tested on its own (tests/test_seq_map.cpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "pkv/types.hpp"

namespace pkv::detail {

template <class Value>
class SeqMap {
 public:
  using value_type = std::pair<const SeqId, Value>;

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
  std::size_t capacity() const noexcept { return cap_; }
  iterator begin() const noexcept { return iterator(first(), last()); }
  iterator end() const noexcept { return iterator(last(), last()); }

  iterator find(SeqId id) const noexcept { return find(id, std::hash<SeqId>{}(id)); }
  /// `hash` is std::hash<SeqId>{}(id), when the caller has it already.
  iterator find(SeqId id, std::size_t hash) const noexcept {
    Slot* s = find_slot(id, hash);
    return s != nullptr ? iterator(s, last()) : end();
  }
  bool contains(SeqId id) const noexcept { return find(id) != end(); }
  /// find() for the hot paths: the value, or nullptr (no iterator to build).
  Value* find_entry(SeqId id, std::size_t hash) const noexcept {
    Slot* s = find_slot(id, hash);
    return s != nullptr ? &s->node->second : nullptr;
  }
  Value* find_entry(SeqId id) const noexcept { return find_entry(id, std::hash<SeqId>{}(id)); }

  /// Inserts (id, value); `id` must be absent. Returns the new element.
  iterator insert_new(SeqId id, Value&& value) {
    if (2 * (size_ + 1) > cap_) grow();
    auto node = std::make_unique<value_type>(id, std::move(value));
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

  /// The table's invariants (see the file comment): "" when they hold. O(cap).
  std::string validate() const {
    std::size_t n = 0;
    if (cap_ != 0 && (cap_ & (cap_ - 1)) != 0) return "table capacity is not a power of two";
    for (std::size_t i = 0; i < cap_; ++i) {
      if (slots_[i].node == nullptr) continue;
      ++n;
      if (slots_[i].node->first.value != slots_[i].key) return "slot key differs from its node";
      for (std::size_t j = home(slots_[i].key); j != i; j = (j + 1) & mask_)
        if (slots_[j].node == nullptr) return "a member is cut off from its home slot";
    }
    if (n != size_) return "table size disagrees with its slots";
    if (2 * size_ > cap_) return "table more than half full";
    return {};
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

}  // namespace pkv::detail

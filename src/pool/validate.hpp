// src/pool/validate.hpp — BasicBlockPool::validate_unsafe(), the pool's full structural check
// (internal, never installed; included by src/block_pool_impl.hpp). It checks the accounting
// invariants listed in pkv/block_pool.hpp: every free block in exactly one place (the shared
// stack or one slot), the shape of both node stacks (see pool/node_stack.hpp), and the counters.
// Not thread-safe: run only when no other call is in flight.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pkv/block_pool.hpp"

namespace pkv {

template <template <class> class Atom>
std::string BasicBlockPool<Atom>::validate_unsafe() const {
  std::vector<std::uint8_t> seen(capacity_, 0);
  std::size_t free_total = 0;
  auto mark = [&](std::uint32_t id, const char* where) -> std::string {
    if (id >= capacity_) return std::string("id out of range in ") + where;
    if (seen[id]) return "B" + std::to_string(id) + " is free twice (" + where + ")";
    seen[id] = 1;
    if (meta_[id].refs.load(std::memory_order_relaxed) != 0)
      return "B" + std::to_string(id) + " is free but has references (" + where + ")";
    ++free_total;
    return {};
  };
  // `full`: nodes of 1..batch_ ids, at most one of them partial (see the node budget); `empty`:
  // the other nodes (batch_ > 1), so no node is lost; with batch_ == 1, node b holds block b.
  std::size_t listed = 0;
  std::size_t nodes = 0;
  std::size_t partial = 0;
  for (std::uint32_t cur = index_of(shared_.full.load(std::memory_order_relaxed)); cur != kNil;
       cur = node_next_[cur].load(std::memory_order_relaxed)) {
    if (cur >= num_nodes_) return "node index out of range on the shared stack";
    if (++nodes > num_nodes_) return "shared stack has a cycle";
    const std::uint32_t* d = node_data(cur);
    if (d[0] == 0 || d[0] > batch_)
      return "node " + std::to_string(cur) + " on the shared stack holds " + std::to_string(d[0]) +
             " ids";
    if (batch_ == 1 && d[1] != cur) return "node " + std::to_string(cur) + " holds another block";
    if (d[0] < batch_ && ++partial > 1) return "more than one partial node on the shared stack";
    for (std::uint32_t j = 0; j < d[0]; ++j)
      if (std::string e = mark(d[1 + j], "shared stack"); !e.empty()) return e;
    listed += d[0];
  }
  if (batch_ > 1) {
    for (std::uint32_t cur = index_of(shared_.empty.load(std::memory_order_relaxed)); cur != kNil;
         cur = node_next_[cur].load(std::memory_order_relaxed)) {
      if (cur >= num_nodes_) return "node index out of range on the spare stack";
      if (++nodes > num_nodes_) return "spare stack has a cycle or shares nodes";
    }
    if (nodes != num_nodes_)
      return std::to_string(num_nodes_ - nodes) + " pool nodes are on neither stack";
  }
  if (static_cast<std::int64_t>(listed) != shared_.count.load(std::memory_order_relaxed))
    return "shared stack length " + std::to_string(listed) + " != its count " +
           std::to_string(shared_.count.load(std::memory_order_relaxed));
  if (slots_) {
    for (std::size_t i = 0; i < kSlots; ++i) {
      const Slot& s = slots_[i];
      std::uint32_t c = s.count.load(std::memory_order_relaxed);
      if (c > slot_cap_) return "slot " + std::to_string(i) + " over capacity";
      for (std::uint32_t j = 0; j < c; ++j)
        if (std::string e = mark(s.items[j], "magazine"); !e.empty()) return e;
    }
  }
  std::size_t referenced = 0;
  for (std::size_t i = 0; i < capacity_; ++i) {
    std::uint32_t r = meta_[i].refs.load(std::memory_order_relaxed);
    if (r == 0 && !seen[i]) return "B" + std::to_string(i) + " is lost: no references, not free";
    if (r > 0) ++referenced;
  }
  if (free_total + referenced != capacity_) return "free + referenced != capacity";
  if (free_total != free_count()) return "free_count() disagrees with the free structures";
  if (total_acquired() - total_released() != referenced)
    return "acquired - released (" + std::to_string(total_acquired() - total_released()) +
           ") != referenced blocks (" + std::to_string(referenced) + ")";
  return {};
}

}  // namespace pkv

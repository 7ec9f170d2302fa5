// tests/support/kv_arena.hpp — the host KV arena of the checkers: one cookie per token slot of
// every block, addressed through a sequence's block table, and the CopyOp copy.
//
// What it models
//   A serving system keeps the KV data of token slot o of block b at some address; the checkers
//   (tests/model/harness.hpp, pkv-stress, pkv-sim --verify, the fuzzer) keep a `Cookie` there
//   instead: a value that names the token written, so a token that reads back another token's
//   cookie shows that two sequences wrote one block (copy-on-write broken) or that a block was
//   reused while still held.
//     cell(b, o)          = slots_[b * block_size + o],        o < block_size
//     token(info, i)      = cell(info.block_ids[s / block_size], s % block_size),
//                           s = info.slot_of(i)              (kept token i of the sequence)
//     copy(op, n)         : cell(op.dst, o) = cell(op.src, o) for o < n   (n <= block_size)
//
// Contract
//   Not synchronised. Threads may write and read different cells at the same time (each cell is
//   its own object); the callers' protocols (a gate, pins) make sure that no two threads touch one
//   block at once. token() returns nullptr when the slot lies beyond the block table (a
//   malformed SequenceInfo), never an out-of-range reference.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "pkv/types.hpp"

namespace pkv::test_support {

template <class Cookie>
class KvArena {
 public:
  KvArena() = default;
  /// num_blocks x block_size cells, each Cookie{} ("never written").
  KvArena(std::size_t num_blocks, std::size_t block_size)
      : block_size_(block_size), slots_(num_blocks * block_size, Cookie{}) {}

  std::size_t block_size() const noexcept { return block_size_; }
  std::size_t num_blocks() const noexcept {
    return block_size_ == 0 ? 0 : slots_.size() / block_size_;
  }

  Cookie& cell(BlockId block, std::uint64_t offset) noexcept {
    return slots_[block.value * block_size_ + offset];
  }
  const Cookie& cell(BlockId block, std::uint64_t offset) const noexcept {
    return slots_[block.value * block_size_ + offset];
  }

  /// The cell of kept token `i` of `info`, or nullptr if its slot is beyond the block table.
  Cookie* token(const SequenceInfo& info, std::uint64_t i) noexcept {
    const std::uint64_t slot = info.slot_of(i);
    if (slot / block_size_ >= info.block_ids.size()) return nullptr;
    return &cell(info.block_ids[slot / block_size_], slot % block_size_);
  }
  const Cookie* token(const SequenceInfo& info, std::uint64_t i) const noexcept {
    return const_cast<KvArena*>(this)->token(info, i);
  }

  /// Performs the CopyOp on the first `slots` cells of the block (all of them by default). Copy
  /// only the slots the copying sequence filled when another holder may append into the
  /// source's free slots meanwhile (append's contract without Options::hold_copy_sources).
  void copy(const CopyOp& op, std::size_t slots) noexcept {
    const auto src = slots_.begin() + static_cast<std::ptrdiff_t>(op.src.value * block_size_);
    const auto dst = slots_.begin() + static_cast<std::ptrdiff_t>(op.dst.value * block_size_);
    std::copy(src, src + static_cast<std::ptrdiff_t>(std::min(slots, block_size_)), dst);
  }
  void copy(const CopyOp& op) noexcept { copy(op, block_size_); }

 private:
  std::size_t block_size_ = 0;
  std::vector<Cookie> slots_;
};

}  // namespace pkv::test_support

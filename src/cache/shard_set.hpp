// src/cache/shard_set.hpp — holding the locks of several shards at once, for the calls that
// change sequences in more than one shard in one step (fork, fork_many, free_many).
//
// Deadlock freedom: a ShardSetLock locks its shards in increasing address order, each once (a
// shard named twice is locked once). Every caller that holds two or more shard locks holds them
// through a ShardSetLock, so all of them take shard locks in one global order; every other call
// holds at most one shard lock; and the only locks taken while a shard lock is held are the
// pool's slot locks, which never wait for a shard lock. So no cycle of waiters can form.
// Not thread-safe itself (one per call, on the caller's stack).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "cache/shard.hpp"

namespace pkv::detail {

class ShardSetLock {
 public:
  /// Shards held without a heap allocation (free_many's chunk, fork_many up to 31 children).
  static constexpr std::size_t kInline = 32;

  ShardSetLock() = default;
  ShardSetLock(const ShardSetLock&) = delete;
  ShardSetLock& operator=(const ShardSetLock&) = delete;
  ~ShardSetLock() {
    if (locked_) {
      for (Shard* s : shards()) s->mu.unlock();
    }
  }

  /// Names a shard to lock (before lock_all()).
  void add(Shard& s) {
    if (heap_.empty() && n_ < kInline) {
      inline_[n_++] = &s;
      return;
    }
    if (heap_.empty()) heap_.assign(inline_, inline_ + n_);
    heap_.push_back(&s);
  }

  /// Locks every named shard once, in address order.
  void lock_all() noexcept {
    Shard** b = begin();
    Shard** e = b + size();
    std::sort(b, e);
    const std::size_t n = static_cast<std::size_t>(std::unique(b, e) - b);
    if (heap_.empty()) {
      n_ = n;
    } else {
      heap_.resize(n);
    }
    for (Shard* s : shards()) s->mu.lock();
    locked_ = true;
  }

  /// The distinct shards, in address order (after lock_all()).
  std::span<Shard* const> shards() const noexcept {
    return heap_.empty() ? std::span<Shard* const>(inline_, n_)
                         : std::span<Shard* const>(heap_.data(), heap_.size());
  }

 private:
  Shard** begin() noexcept { return heap_.empty() ? inline_ : heap_.data(); }
  std::size_t size() const noexcept { return heap_.empty() ? n_ : heap_.size(); }

  Shard* inline_[kInline];
  std::size_t n_ = 0;
  std::vector<Shard*> heap_;  // used once more than kInline shards are named
  bool locked_ = false;
};

}  // namespace pkv::detail

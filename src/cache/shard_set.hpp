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

  /// Names a shard to lock (before lock_all()). Up to kInline shards are kept sorted and
  /// distinct as they come (insertion: a few compares for the usual two to five shards).
  void add(Shard& s) {
    Shard* p = &s;
    if (heap_.empty()) {
      std::size_t i = n_;
      while (i > 0 && inline_[i - 1] > p) --i;
      if (i > 0 && inline_[i - 1] == p) return;  // named already
      if (n_ < kInline) {
        for (std::size_t j = n_; j > i; --j) inline_[j] = inline_[j - 1];
        inline_[i] = p;
        ++n_;
        return;
      }
      heap_.assign(inline_, inline_ + n_);  // more than kInline: sorted at lock_all()
    }
    heap_.push_back(p);
  }

  /// Locks every named shard once, in address order.
  void lock_all() noexcept {
    if (!heap_.empty()) {
      std::sort(heap_.begin(), heap_.end());
      heap_.erase(std::unique(heap_.begin(), heap_.end()), heap_.end());
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
  Shard* inline_[kInline];
  std::size_t n_ = 0;
  std::vector<Shard*> heap_;  // used once more than kInline shards are named
  bool locked_ = false;
};

}  // namespace pkv::detail

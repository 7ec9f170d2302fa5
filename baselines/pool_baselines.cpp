// baselines/pool_baselines.cpp — see pool_baselines.hpp.
#include "pool_baselines.hpp"

#include <limits>
#include <optional>
#include <stdexcept>

namespace pkv::baseline {

namespace {
void check_size(std::size_t num_blocks) {
  if (num_blocks == 0 || num_blocks >= std::numeric_limits<std::uint32_t>::max() - 2) {
    throw std::invalid_argument("pool size must be in 1..2^32-3");
  }
}
}  // namespace

// ---- LockfreeStackPool ------------------------------------------------------------------------

LockfreeStackPool::LockfreeStackPool(std::size_t num_blocks)
    : capacity_((check_size(num_blocks), num_blocks)),
      refs_(new std::atomic<std::uint32_t>[num_blocks]),
      stack_(num_blocks) {
  // Push in reverse so the first pops hand out 0, 1, 2, ...
  for (std::size_t i = num_blocks; i-- > 0;) {
    refs_[i].store(0, std::memory_order_relaxed);
    stack_.bounded_push(static_cast<std::uint32_t>(i));
  }
  free_.store(static_cast<std::int64_t>(num_blocks), std::memory_order_relaxed);
}

std::size_t LockfreeStackPool::free_count() const noexcept {
  const std::int64_t n = free_.load(std::memory_order_relaxed);
  return n < 0 ? 0 : static_cast<std::size_t>(n);
}

Result<BlockId> LockfreeStackPool::acquire() {
  std::uint32_t id = 0;
  if (!stack_.pop(id)) return Error::out_of_memory(1, free_count());
  free_.fetch_sub(1, std::memory_order_relaxed);  // stats only
  refs_[id].store(1, std::memory_order_relaxed);  // caller publishes the id
  return BlockId{id};
}

Result<void> LockfreeStackPool::acquire(std::size_t k, std::vector<BlockId>& out) {
  const std::size_t base = out.size();
  for (std::size_t i = 0; i < k; ++i) {
    std::uint32_t id = 0;
    if (!stack_.pop(id)) {
      // All or nothing: give back what this call took.
      for (std::size_t j = base; j < out.size(); ++j) stack_.bounded_push(out[j].value);
      out.resize(base);
      return Error::out_of_memory(k, free_count());
    }
    out.push_back(BlockId{id});
  }
  free_.fetch_sub(static_cast<std::int64_t>(k), std::memory_order_relaxed);
  for (std::size_t j = base; j < out.size(); ++j) {
    refs_[out[j].value].store(1, std::memory_order_relaxed);
  }
  return {};
}

Result<bool> LockfreeStackPool::release(BlockId id) {
  if (id.value >= capacity_) return Error::block_not_found(id);
  std::uint32_t c = refs_[id.value].load(std::memory_order_relaxed);
  do {
    if (c == 0) return Error::block_not_found(id);
    // acq_rel: the thread that frees sees all writes of earlier holders.
  } while (!refs_[id.value].compare_exchange_weak(c, c - 1, std::memory_order_acq_rel,
                                                  std::memory_order_relaxed));
  if (c != 1) return false;
  stack_.bounded_push(id.value);
  free_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

Result<std::size_t> LockfreeStackPool::release(std::span<const BlockId> ids) {
  std::uint32_t local[64];
  std::vector<std::uint32_t> big;
  std::size_t n = 0;
  std::optional<Error> bad;
  for (const BlockId id : ids) {
    if (id.value >= capacity_) {
      if (!bad) bad = Error::block_not_found(id);
      continue;
    }
    std::uint32_t c = refs_[id.value].load(std::memory_order_relaxed);
    bool dropped = false;
    while (c != 0) {
      // acq_rel: see release(BlockId).
      if (refs_[id.value].compare_exchange_weak(c, c - 1, std::memory_order_acq_rel,
                                                std::memory_order_relaxed)) {
        dropped = true;
        break;
      }
    }
    if (!dropped) {
      if (!bad) bad = Error::block_not_found(id);
      continue;
    }
    if (c != 1) continue;
    if (n < 64) {
      local[n] = id.value;
    } else {
      if (big.empty()) big.assign(local, local + 64);
      big.push_back(id.value);
    }
    ++n;
  }
  if (n > 0) {
    const std::uint32_t* first = big.empty() ? local : big.data();
    stack_.bounded_push(first, first + n);  // one CAS links the whole batch
    free_.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
  }
  if (bad) return *bad;
  return n;
}

std::uint32_t LockfreeStackPool::ref_count(BlockId id) const noexcept {
  return id.value < capacity_ ? refs_[id.value].load(std::memory_order_relaxed) : 0;
}

// ---- VllmQueuePool ----------------------------------------------------------------------------

VllmQueuePool::VllmQueuePool(std::size_t num_blocks)
    : capacity_((check_size(num_blocks), num_blocks)),
      head_(static_cast<std::uint32_t>(num_blocks)),
      tail_(static_cast<std::uint32_t>(num_blocks + 1)),
      prev_(num_blocks + 2),
      next_(num_blocks + 2),
      refs_(num_blocks, 0) {
  // The queue starts ordered by block id: head <-> 0 <-> 1 <-> ... <-> n-1 <-> tail.
  for (std::uint32_t i = 0; i < num_blocks; ++i) {
    prev_[i] = i == 0 ? head_ : i - 1;
    next_[i] = i + 1 == num_blocks ? tail_ : i + 1;
  }
  next_[head_] = 0;
  prev_[tail_] = static_cast<std::uint32_t>(num_blocks - 1);
  prev_[head_] = head_;
  next_[tail_] = tail_;
  num_free_ = num_blocks;
}

std::uint32_t VllmQueuePool::popleft() noexcept {
  const std::uint32_t id = next_[head_];
  const std::uint32_t after = next_[id];
  next_[head_] = after;
  prev_[after] = head_;
  --num_free_;
  return id;
}

void VllmQueuePool::append(std::uint32_t id) noexcept {
  const std::uint32_t last = prev_[tail_];
  next_[last] = id;
  prev_[id] = last;
  next_[id] = tail_;
  prev_[tail_] = id;
  ++num_free_;
}

void VllmQueuePool::remove(std::uint32_t id) noexcept {
  const std::uint32_t p = prev_[id];
  const std::uint32_t n = next_[id];
  next_[p] = n;
  prev_[n] = p;
  --num_free_;
}

std::size_t VllmQueuePool::free_count() const {
  std::lock_guard lock(mu_);
  return num_free_;
}

Result<BlockId> VllmQueuePool::acquire() {
  std::lock_guard lock(mu_);
  if (num_free_ == 0) return Error::out_of_memory(1, 0);
  const std::uint32_t id = popleft();
  refs_[id] = 1;
  return BlockId{id};
}

Result<void> VllmQueuePool::acquire(std::size_t k, std::vector<BlockId>& out) {
  std::lock_guard lock(mu_);
  if (k > num_free_) return Error::out_of_memory(k, num_free_);
  if (k == 0) return {};
  // popleft_n: walk k nodes, then unlink the whole run with two stores.
  std::uint32_t id = next_[head_];
  for (std::size_t i = 0; i < k; ++i) {
    out.push_back(BlockId{id});
    refs_[id] = 1;
    id = next_[id];
  }
  next_[head_] = id;
  prev_[id] = head_;
  num_free_ -= k;
  return {};
}

Result<bool> VllmQueuePool::release(BlockId id) {
  std::lock_guard lock(mu_);
  if (id.value >= capacity_ || refs_[id.value] == 0) return Error::block_not_found(id);
  if (--refs_[id.value] != 0) return false;
  append(id.value);
  return true;
}

Result<std::size_t> VllmQueuePool::release(std::span<const BlockId> ids) {
  std::lock_guard lock(mu_);
  std::size_t freed = 0;
  std::optional<Error> bad;
  for (const BlockId id : ids) {
    if (id.value >= capacity_ || refs_[id.value] == 0) {
      if (!bad) bad = Error::block_not_found(id);
      continue;
    }
    if (--refs_[id.value] == 0) {
      append(id.value);
      ++freed;
    }
  }
  if (bad) return *bad;
  return freed;
}

Result<void> VllmQueuePool::take(BlockId id) {
  std::lock_guard lock(mu_);
  if (id.value >= capacity_ || refs_[id.value] != 0) return Error::block_not_found(id);
  remove(id.value);
  refs_[id.value] = 1;
  return {};
}

std::uint32_t VllmQueuePool::ref_count(BlockId id) const {
  std::lock_guard lock(mu_);
  return id.value < capacity_ ? refs_[id.value] : 0;
}

}  // namespace pkv::baseline

// tests/support/gate.hpp — the writers' gate of the checkers: KV writers hold it shared, evictors
// exclusive, so no block is freed by an eviction while its owner is writing it.
//
// Contract
//   Gate is a std::shared_mutex that prefers exclusive holders: once an evictor waits, new shared
//   holders wait for it, so a steady stream of writers cannot starve eviction. It meets the
//   SharedMutex requirements (use it with std::shared_lock / std::unique_lock). share_if and
//   exclude_if return a lock that holds the gate only when `on` (a checker that protects writes
//   another way, or not at all, passes false). Thread-safe.
//
// Memory ordering
//   That of std::shared_mutex: an unlock happens before the next lock that acquires the gate.
//   `waiting_` is a hint that steers who goes next and carries no data; mu_ alone orders the
//   holders' writes.
#pragma once

#include <atomic>
#include <mutex>
#include <shared_mutex>
#include <thread>

namespace pkv::test_support {

class Gate {
 public:
  void lock_shared() {
    // A hint (see Memory ordering): step aside while an evictor waits.
    while (waiting_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    mu_.lock_shared();
  }
  void unlock_shared() { mu_.unlock_shared(); }
  void lock() {
    waiting_.fetch_add(1, std::memory_order_acq_rel);  // announce before waiting for the writers
    mu_.lock();
    waiting_.fetch_sub(1, std::memory_order_acq_rel);
  }
  void unlock() { mu_.unlock(); }

 private:
  std::shared_mutex mu_;
  std::atomic<int> waiting_{0};
};

/// The gate held shared (a KV writer) when `on`, else an empty lock.
inline std::shared_lock<Gate> share_if(Gate& gate, bool on) {
  return on ? std::shared_lock<Gate>(gate) : std::shared_lock<Gate>(gate, std::defer_lock);
}

/// The gate held exclusive (an evictor) when `on`, else an empty lock.
inline std::unique_lock<Gate> exclude_if(Gate& gate, bool on) {
  return on ? std::unique_lock<Gate>(gate) : std::unique_lock<Gate>(gate, std::defer_lock);
}

}  // namespace pkv::test_support

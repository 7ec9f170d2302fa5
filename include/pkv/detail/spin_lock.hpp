// pkv/detail/spin_lock.hpp — the spin-then-yield lock of the pool's magazines and the cache's
// shards.
//
// Contract
//   BasicLockable (lock / unlock), so std::lock_guard and std::unique_lock work. Test-and-test-
//   and-set on one word: uncontended, lock + unlock is one exchange and one release store
//   (cheaper than std::mutex, whose uncontended pair is two RMWs). A waiter spins on a plain load
//   (the line stays shared) with a pause, then yields (spin_pause), so a holder preempted on an
//   oversubscribed machine gets the CPU back. Meant for short critical sections that never block.
//   Templated on the atomic so that tests/dsched can run the pool under its scheduler.
#pragma once

#include <atomic>
#include <cstdint>

namespace pkv::detail {

/// Spin briefly, then yield: a preempted lock holder on an oversubscribed machine (more threads
/// than cores) must get the CPU back quickly.
void spin_pause(unsigned& spins) noexcept;

template <template <class> class Atom = std::atomic>
class BasicSpinLock {
 public:
  void lock() noexcept {
    unsigned spins = 0;
    // acquire: pairs with the release store in unlock(); the previous holder's writes are visible.
    while (word_.exchange(1, std::memory_order_acquire) != 0) {
      // Test before test-and-set: spin on a shared read, not on an RMW that bounces the line.
      while (word_.load(std::memory_order_relaxed) != 0) spin_pause(spins);
    }
  }
  void unlock() noexcept {
    word_.store(0, std::memory_order_release);  // publishes the section's writes to the next holder
  }

 private:
  Atom<std::uint32_t> word_{0};  // 0 free, 1 held
};

}  // namespace pkv::detail

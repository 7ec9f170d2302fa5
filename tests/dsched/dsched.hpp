// Deterministic scheduling for concurrency tests (after folly's DeterministicSchedule).
//
// DSched::run() starts one std::thread per function but lets exactly one of them run at a time.
// Every operation on a DAtomic is a scheduling point: before it, the running thread hands the
// CPU to a thread chosen by a seeded PRNG (possibly itself). So one seed = one interleaving,
// replayable exactly; many seeds explore many interleavings of the real code (BasicBlockPool is
// templated on its atomic type for this). Execution is sequentially consistent: this explores
// interleavings, not weak-memory reorderings (ThreadSanitizer runs cover those).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <semaphore>
#include <stdexcept>
#include <thread>
#include <vector>

namespace pkv::test {

class DSched {
 public:
  explicit DSched(std::uint64_t seed, std::uint64_t max_steps = 2'000'000)
      : rng_(seed), max_steps_(max_steps) {}

  /// Runs every function as its own thread, one at a time. Returns false if the step budget ran
  /// out (a livelock or a hang under this schedule); the threads then finish unscheduled.
  bool run(const std::vector<std::function<void()>>& fns) {
    const std::size_t n = fns.size();
    done_.assign(n, false);
    sems_.clear();
    for (std::size_t i = 0; i < n; ++i)
      sems_.push_back(std::make_unique<std::counting_semaphore<>>(0));
    steps_ = 0;
    exhausted_ = false;
    active() = this;
    std::vector<std::thread> ts;
    for (std::size_t i = 0; i < n; ++i) {
      ts.emplace_back([this, i, &fns] {
        my_id() = static_cast<int>(i);
        sems_[i]->acquire();  // wait for the first turn
        fns[i]();
        finish(static_cast<int>(i));
        my_id() = -1;
      });
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      sems_[static_cast<std::size_t>(pick_locked())]->release();
    }
    for (auto& t : ts) t.join();
    active() = nullptr;
    return !exhausted_;
  }

  /// A scheduling point; a no-op outside DSched::run threads.
  static void yield_point() {
    DSched* s = active();
    int me = my_id();
    if (s == nullptr || me < 0) return;
    s->switch_from(me);
  }

 private:
  static DSched*& active() {
    static DSched* a = nullptr;
    return a;
  }
  static int& my_id() {
    thread_local int id = -1;
    return id;
  }

  int pick_locked() {
    int runnable[64];
    int k = 0;
    for (std::size_t i = 0; i < done_.size() && k < 64; ++i)
      if (!done_[i]) runnable[k++] = static_cast<int>(i);
    if (k == 0) return -1;
    return runnable[rng_() % static_cast<std::uint64_t>(k)];
  }

  // The running thread hands the CPU to the next one (one semaphore post, one wait).
  void switch_from(int me) {
    int next;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (exhausted_) return;  // budget spent: everyone runs freely to the end
      if (++steps_ > max_steps_) {
        exhausted_ = true;
        for (std::size_t i = 0; i < done_.size(); ++i)
          if (!done_[i] && static_cast<int>(i) != me) sems_[i]->release();
        return;
      }
      next = pick_locked();
      if (next == me) return;
      sems_[static_cast<std::size_t>(next)]->release();
    }
    sems_[static_cast<std::size_t>(me)]->acquire();
  }

  void finish(int me) {
    std::lock_guard<std::mutex> g(mu_);
    done_[static_cast<std::size_t>(me)] = true;
    if (exhausted_) return;
    int next = pick_locked();
    if (next >= 0) sems_[static_cast<std::size_t>(next)]->release();
  }

  std::mutex mu_;  // uncontended while scheduled (one runner); orders state across hand-offs
  std::vector<bool> done_;
  std::vector<std::unique_ptr<std::counting_semaphore<>>> sems_;
  std::mt19937_64 rng_;
  std::uint64_t steps_ = 0;
  std::uint64_t max_steps_;
  bool exhausted_ = false;
};

/// std::atomic with a scheduling point before every operation.
template <class T>
struct DAtomic {
  constexpr DAtomic() noexcept : a_(T{}) {}
  constexpr DAtomic(T v) noexcept : a_(v) {}  // NOLINT: mirrors std::atomic
  DAtomic(const DAtomic&) = delete;
  DAtomic& operator=(const DAtomic&) = delete;

  T load(std::memory_order mo = std::memory_order_seq_cst) const {
    DSched::yield_point();
    return a_.load(mo);
  }
  void store(T v, std::memory_order mo = std::memory_order_seq_cst) {
    DSched::yield_point();
    a_.store(v, mo);
  }
  T exchange(T v, std::memory_order mo = std::memory_order_seq_cst) {
    DSched::yield_point();
    return a_.exchange(v, mo);
  }
  bool compare_exchange_weak(T& expected, T desired, std::memory_order s, std::memory_order f) {
    DSched::yield_point();
    return a_.compare_exchange_strong(expected, desired, s, f);  // no spurious failures
  }
  bool compare_exchange_weak(T& expected, T desired,
                             std::memory_order mo = std::memory_order_seq_cst) {
    DSched::yield_point();
    return a_.compare_exchange_strong(expected, desired, mo);
  }
  T fetch_add(T v, std::memory_order mo = std::memory_order_seq_cst) {
    DSched::yield_point();
    return a_.fetch_add(v, mo);
  }
  T fetch_sub(T v, std::memory_order mo = std::memory_order_seq_cst) {
    DSched::yield_point();
    return a_.fetch_sub(v, mo);
  }

 private:
  std::atomic<T> a_;
};

}  // namespace pkv::test

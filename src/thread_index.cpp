// Dense per-thread indices (see pkv/detail/thread_index.hpp).
#include "pkv/detail/thread_index.hpp"

#include <atomic>
#include <functional>
#include <mutex>
#include <queue>
#include <vector>

namespace pkv::detail {
namespace {

struct Registry {
  std::mutex mu;
  // Indices given back by exited threads, smallest first, so indices stay dense.
  std::priority_queue<std::uint32_t, std::vector<std::uint32_t>, std::greater<>> returned;
  std::uint32_t next = 0;              // guarded by mu
  std::atomic<std::uint32_t> high{0};  // read lock-free; written under mu (monotonic)
};

Registry& registry() {
  // Leaked on purpose: threads may exit (and give their index back) after static destructors ran.
  static Registry* r = new Registry;
  return *r;
}

struct Holder {
  std::uint32_t index;
  Holder() {
    Registry& r = registry();
    std::lock_guard<std::mutex> g(r.mu);
    if (!r.returned.empty()) {
      index = r.returned.top();
      r.returned.pop();
    } else {
      index = r.next++;
      // release: pairs with the acquire load in thread_index_high_water().
      r.high.store(r.next, std::memory_order_release);
    }
  }
  ~Holder() {
    // Calls later in this thread's exit path (other thread_local destructors) get an index no
    // slot has: they take the shared, slot-less paths instead of re-registering.
    t_thread_index = kExitingThreadIndex;
    Registry& r = registry();
    std::lock_guard<std::mutex> g(r.mu);
    r.returned.push(index);
  }
  Holder(const Holder&) = delete;
  Holder& operator=(const Holder&) = delete;
};

}  // namespace

std::uint32_t register_thread() noexcept {
  // The holder's destructor gives the index back at thread exit.
  thread_local Holder holder;
  t_thread_index = holder.index;
  return holder.index;
}

std::uint32_t thread_index_high_water() noexcept {
  return registry().high.load(std::memory_order_acquire);
}

}  // namespace pkv::detail

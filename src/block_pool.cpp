// BlockPool: the library's one instantiation of BasicBlockPool (see pkv/block_pool.hpp).
#include "pkv/block_pool.hpp"

#include <thread>

#include "block_pool_impl.hpp"

namespace pkv {

namespace detail {
void spin_pause(unsigned& spins) noexcept {
  if (++spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}
}  // namespace detail

template class BasicBlockPool<std::atomic>;

}  // namespace pkv

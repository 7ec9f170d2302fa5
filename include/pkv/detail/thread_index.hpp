// pkv/detail/thread_index.hpp — a small dense index per live thread (internal).
//
// Each thread that calls into pkv gets the smallest index not held by another live thread; the
// index is given back when the thread exits. Pools and caches use it to pick a per-thread slot
// (magazine, statistics stripe) that no other live thread uses, so the common path writes only
// cache lines its own thread owns. Thread-safe; the first call in a thread takes a global mutex
// (once per thread lifetime), later calls read one initial-exec thread_local (no guard, no
// __tls_get_addr call).
#pragma once

#include <cstdint>

namespace pkv::detail {

inline constexpr std::uint32_t kNoThreadIndex = 0xFFFFFFFFu;       // not registered yet
inline constexpr std::uint32_t kExitingThreadIndex = 0xFFFFFFFEu;  // registration given back

// Trivially constructed and destroyed, so access needs no initialisation guard.
inline thread_local std::uint32_t t_thread_index [[gnu::tls_model("initial-exec")]] =
    kNoThreadIndex;

/// Registers the calling thread (first call only) and returns its index.
std::uint32_t register_thread() noexcept;

/// This thread's index: 0, 1, 2, ... dense over live threads. Stable for the thread's lifetime.
inline std::uint32_t thread_index() noexcept {
  std::uint32_t i = t_thread_index;
  if (i != kNoThreadIndex) [[likely]]
    return i;
  return register_thread();
}

/// One past the largest index handed out so far (monotonic); bounds loops over per-thread slots.
std::uint32_t thread_index_high_water() noexcept;

}  // namespace pkv::detail

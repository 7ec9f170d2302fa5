// pkv/detail/thread_index.hpp — a small dense index per live thread (internal).
//
// Each thread that calls into pkv gets the smallest index not held by another live thread; the
// index is given back when the thread exits. Pools and caches use it to pick a per-thread slot
// (magazine, statistics stripe) that no other live thread uses, so the common path writes only
// cache lines its own thread owns. Thread-safe; the first call in a thread takes a global mutex
// (once per thread lifetime), later calls read a thread_local.
#pragma once

#include <cstdint>

namespace pkv::detail {

/// This thread's index: 0, 1, 2, ... dense over live threads. Stable for the thread's lifetime.
std::uint32_t thread_index() noexcept;

/// One past the largest index handed out so far (monotonic); bounds loops over per-thread slots.
std::uint32_t thread_index_high_water() noexcept;

}  // namespace pkv::detail

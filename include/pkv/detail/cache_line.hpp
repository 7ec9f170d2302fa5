// pkv/detail/cache_line.hpp — the alignment pkv gives data that one thread writes and others read.
#pragma once

#include <cstddef>

namespace pkv::detail {

/// Two 64-byte lines: x86's adjacent-line prefetcher pulls lines in pairs, so data aligned to 64
/// alone can still share a prefetch pair with another thread's (Boost.Lockfree and folly pad the
/// same way). std::hardware_destructive_interference_size is 64 on GCC 12 and warns when used in
/// headers (-Winterference-size), hence the constant.
inline constexpr std::size_t kCacheLine = 128;

}  // namespace pkv::detail

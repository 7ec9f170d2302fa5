// tests/support/sanitizers.hpp — which sanitizer this translation unit is built with, so the
// checkers pick smaller defaults where it runs them many times slower.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define PKV_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PKV_TEST_TSAN 1
#endif
#endif
#ifndef PKV_TEST_TSAN
#define PKV_TEST_TSAN 0
#endif

namespace pkv::test_support {

/// True under ThreadSanitizer (GCC's -fsanitize=thread or clang's).
inline constexpr bool kUnderTsan = PKV_TEST_TSAN != 0;

}  // namespace pkv::test_support

// src/config.hpp — pkv's build switches and assert levels, in one place (internal, never installed).
//
// Every switch comes from a meson option (meson_options.txt) through the generated
// pkv_build_config.h; no installed header reads any of them.
//   PKV_MUTATION_ABA, PKV_MUTATION_COW,    TESTING ONLY (-Dmutation=...): plant a defect so that
//   PKV_MUTATION_STALE_HASH                scripts/mutation-check.sh can show the checks fail.
//   PKV_EXPENSIVE_CHECKS                   (-Dexpensive_checks=true) PKV_ASSERT_EXPENSIVE runs its
//                                          validator, e.g. a shard's after every locked mutation.
//   PKV_DEBUG_LOCKED_FREELIST              (-Ddebug_locked_freelist=true) the pool's shared free
//                                          list is a plain list behind a mutex, so a failure can be
//                                          pinned to the lock-free list or ruled out.
//
// Assert levels (as mimalloc's mi_assert / mi_assert_expensive):
//   PKV_ASSERT(cond)                 cheap; on unless NDEBUG.
//   PKV_ASSERT_EXPENSIVE(msg_expr)   msg_expr yields a std::string, empty when all holds; it is
//                                    evaluated only with PKV_EXPENSIVE_CHECKS.
// Neither validates API input: bad input returns an Error.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "pkv_build_config.h"

namespace pkv::detail {

[[noreturn]] inline void assert_failed(const char* what, const char* detail, const char* file,
                                       int line) noexcept {
  std::fprintf(stderr, "pkv: assertion failed at %s:%d: %s%s%s\n", file, line, what,
               detail != nullptr && detail[0] != '\0' ? ": " : "", detail != nullptr ? detail : "");
  std::abort();
}

}  // namespace pkv::detail

#if defined(NDEBUG)
#define PKV_ASSERT(cond) ((void)0)
#else
#define PKV_ASSERT(cond) \
  ((cond) ? (void)0 : ::pkv::detail::assert_failed(#cond, nullptr, __FILE__, __LINE__))
#endif

#if PKV_EXPENSIVE_CHECKS
#define PKV_ASSERT_EXPENSIVE(msg_expr)                                                  \
  do {                                                                                  \
    const auto pkv_assert_msg_ = (msg_expr);                                            \
    if (!pkv_assert_msg_.empty())                                                       \
      ::pkv::detail::assert_failed(#msg_expr, pkv_assert_msg_.c_str(), __FILE__, __LINE__); \
  } while (false)
#else
#define PKV_ASSERT_EXPENSIVE(msg_expr) ((void)0)
#endif

// src/c_api/common.hpp — what every exported function of the C ABI (include/pkv/pkv.h) is built
// from: the handle shells, the status mapping and the thread-local last error, the exception
// guard with the handle check (call()), NULL checks, result conversion and the caller's buffer of
// a variable-length result (CallerBuffer). Internal, never installed.
//
// Each exported function is one call(handle, body): call() checks the handle, runs body on the
// C++ object and turns any exception into a status, so no exception leaves the ABI. Adding a C++
// method to the ABI is a declaration in pkv.h and a few lines in the file of its concern.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "pkv/pkv.h"
#include "pkv/pkv.hpp"

// A handle is a 16-byte shell: a magic word naming its kind and the C++ object. Destroy deletes
// the object, overwrites the magic and keeps the shell (see bury()), so a destroyed handle used
// again is detected instead of read after free.
struct pkv_cache {
  std::uint64_t magic;
  pkv::PagedKvCache* impl;
};
struct pkv_pool {
  std::uint64_t magic;
  pkv::BlockPool* impl;
};

// Hidden: these helpers are shared by the C ABI's files only, not part of libpkv's exports.
namespace pkv::capi {
#pragma GCC visibility push(hidden)

inline constexpr std::uint64_t kCacheMagic = 0x706b765f63616368ULL;  // "pkv_cach"
inline constexpr std::uint64_t kPoolMagic = 0x706b765f706f6f6cULL;   // "pkv_pool"
inline constexpr std::uint64_t kDeadMagic = 0x646561645f706b76ULL;   // "dead_pkv"

// ---- status mapping and the last error (defined in errors.cpp) ----------------------------------

static_assert(static_cast<int>(pkv::Errc::out_of_memory) + 1 == PKV_OUT_OF_MEMORY);
static_assert(static_cast<int>(pkv::Errc::sequence_not_found) + 1 == PKV_SEQUENCE_NOT_FOUND);
static_assert(static_cast<int>(pkv::Errc::block_not_found) + 1 == PKV_BLOCK_NOT_FOUND);
static_assert(static_cast<int>(pkv::Errc::invalid_operation) + 1 == PKV_INVALID_OPERATION);
static_assert(static_cast<int>(pkv::Errc::invalid_argument) + 1 == PKV_INVALID_ARGUMENT);

inline pkv_status status_of(pkv::Errc code) noexcept {
  return static_cast<pkv_status>(static_cast<int>(code) + 1);
}

// Records a + b + c (truncated to a fixed buffer: recording an error never allocates) as this
// thread's last error message and returns `status`.
pkv_status fail(pkv_status status, std::string_view a, std::string_view b = {},
                std::string_view c = {}) noexcept;
inline pkv_status fail(const pkv::Error& e) noexcept {
  return fail(status_of(e.code()), e.message());
}
pkv_status null_arg(const char* name) noexcept;
pkv_status too_small(std::size_t required, std::size_t capacity);
// The status of a validate_unsafe() answer: OK when empty, else INTERNAL_ERROR with its text.
pkv_status invariants(const std::string& violation) noexcept;

// ---- the exception guard and the handle check ---------------------------------------------------

// Runs one exported function's body; no exception leaves it.
template <class F>
pkv_status guarded(F&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(PKV_HOST_OUT_OF_MEMORY, "Host out of memory (std::bad_alloc)");
  } catch (const std::exception& e) {
    return fail(PKV_INTERNAL_ERROR, "Internal error: ", e.what());
  } catch (...) {
    return fail(PKV_INTERNAL_ERROR, "Internal error: unknown exception");
  }
}

template <class Shell>
struct HandleKind;
template <>
struct HandleKind<pkv_cache> {
  using Impl = pkv::PagedKvCache;
  static constexpr std::uint64_t kMagic = kCacheMagic;
  static constexpr const char* kName = "pkv_cache";
};
template <>
struct HandleKind<pkv_pool> {
  using Impl = pkv::BlockPool;
  static constexpr std::uint64_t kMagic = kPoolMagic;
  static constexpr const char* kName = "pkv_pool";
};

pkv_status bad_handle(const void* shell, const char* kind) noexcept;

// Keeps a destroyed shell for the life of the process (see the shells above).
void bury(const void* shell);

// One exported function on a handle: checks that `shell` is a live handle of its kind, then runs
// body(object) under the exception guard. A const handle gives body a const object.
template <class Shell, class F>
pkv_status call(Shell* shell, F&& body) noexcept {
  using Kind = HandleKind<std::remove_const_t<Shell>>;
  using Impl =
      std::conditional_t<std::is_const_v<Shell>, const typename Kind::Impl, typename Kind::Impl>;
  return guarded([&]() -> pkv_status {
    if (shell == nullptr || shell->magic != Kind::kMagic) return bad_handle(shell, Kind::kName);
    Impl& impl = *shell->impl;
    return body(impl);
  });
}

// Wraps a new object in a live shell and stores the handle in *out.
template <class Shell>
pkv_status adopt(std::unique_ptr<typename HandleKind<Shell>::Impl> impl, Shell** out) {
  auto shell = std::make_unique<Shell>();
  shell->magic = HandleKind<Shell>::kMagic;
  shell->impl = impl.release();
  *out = shell.release();
  return PKV_OK;
}

// Destroys a live handle: the object is deleted, the shell marked dead and kept (bury()).
template <class Shell>
pkv_status destroy(Shell* shell) noexcept {
  return call(shell, [&](auto& impl) {
    shell->magic = kDeadMagic;
    shell->impl = nullptr;
    delete &impl;
    bury(shell);
    return PKV_OK;
  });
}

// ---- NULL checks (inside a body) ----------------------------------------------------------------

// An output or input pointer that must not be NULL.
#define PKV_NONNULL(ptr) \
  if ((ptr) == nullptr) return ::pkv::capi::null_arg(#ptr)
// A (pointer, length) argument: NULL is allowed only with length 0.
#define PKV_ARRAY(ptr, n) \
  if ((ptr) == nullptr && (n) != 0) return ::pkv::capi::null_arg(#ptr)

// Defines the exported figure `pkv_status fn(const Shell* handle, type* out)`: *out = expr, with
// the handle's object named `var` in expr.
#define PKV_FIGURE(fn, Shell, var, type, expr)                            \
  pkv_status fn(const Shell* handle, type* out) {                         \
    return ::pkv::capi::call(handle, [&](const auto& var) -> pkv_status { \
      PKV_NONNULL(out);                                                   \
      *out = (expr);                                                      \
      return PKV_OK;                                                      \
    });                                                                   \
  }

// ---- result conversion --------------------------------------------------------------------------

inline pkv_status status(const pkv::Result<void>& r) noexcept {
  return r ? PKV_OK : fail(r.error());
}

template <class T, class Out>
pkv_status status(const pkv::Result<T>& r, Out* out) {
  if (!r) return fail(r.error());
  *out = static_cast<Out>(r.value());
  return PKV_OK;
}

// ---- variable-length results --------------------------------------------------------------------

// A caller's buffer for a variable-length result (pkv.h, "Variable-length results"): `out` has
// room for `capacity` elements and may be NULL only with capacity 0, which makes the call a size
// query; the result's length goes to *required, which must not be NULL. The names are the C
// parameters', for the NULL-pointer message.
template <class T>
struct CallerBuffer {
  T* out;
  std::size_t capacity;
  std::size_t* required;
  const char* out_name = "out";
  const char* required_name = "required";

  // The argument checks, required first.
  pkv_status check() const noexcept {
    if (required == nullptr) return null_arg(required_name);
    if (out == nullptr && capacity != 0) return null_arg(out_name);
    return PKV_OK;
  }
  // Announces a result of n elements (stores *required = n): a status to return now (PKV_OK for
  // a size query, PKV_BUFFER_TOO_SMALL if n > capacity), or nullopt when out has room for n.
  std::optional<pkv_status> announce(std::size_t n) const {
    *required = n;
    if (out == nullptr) return PKV_OK;
    if (n > capacity) return too_small(n, capacity);
    return std::nullopt;
  }
  // The whole protocol for a result computed before the call: check, announce src.size() and
  // copy src (each element converted by conv) into out.
  template <class Src, class Conv>
  pkv_status fill(const Src& src, Conv conv) const {
    if (pkv_status s = check(); s != PKV_OK) return s;
    if (auto s = announce(src.size())) return *s;
    std::transform(src.begin(), src.end(), out, conv);
    return PKV_OK;
  }
};

#pragma GCC visibility pop
}  // namespace pkv::capi

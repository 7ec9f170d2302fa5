// src/c_api/errors.cpp — the C ABI's errors and handle bookkeeping: the thread-local last error
// message and the functions that record it (fail, null_arg, too_small, bad_handle), the status
// names, and the graveyard of destroyed handle shells.
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "c_api/common.hpp"

namespace pkv::capi {

namespace {

// A fixed buffer: recording an error never allocates. Touched only in this file.
constexpr std::size_t kMessageBytes = 512;
thread_local char t_message[kMessageBytes] = "";

// Destroyed shells, kept for the life of the process (reachable from here, so leak checkers see
// no leak). Never destroyed itself: static destructors may run before other threads stop.
struct Graveyard {
  std::mutex mu;
  std::vector<const void*> shells;
};
Graveyard& graveyard() {
  static Graveyard* g = new Graveyard;
  return *g;
}

}  // namespace

pkv_status fail(pkv_status status, std::string_view a, std::string_view b,
                std::string_view c) noexcept {
  std::size_t n = 0;
  for (std::string_view part : {a, b, c}) {
    const std::size_t k = std::min(part.size(), kMessageBytes - 1 - n);
    if (k != 0) std::memcpy(t_message + n, part.data(), k);  // an empty view may hold nullptr
    n += k;
  }
  t_message[n] = '\0';
  return status;
}

pkv_status null_arg(const char* name) noexcept {
  return fail(PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer for ", name);
}

pkv_status too_small(std::size_t required, std::size_t capacity) {
  return fail(PKV_BUFFER_TOO_SMALL, "Buffer too small: " + std::to_string(required) +
                                        " elements needed, capacity " + std::to_string(capacity));
}

pkv_status invariants(const std::string& violation) noexcept {
  return violation.empty() ? PKV_OK : fail(PKV_INTERNAL_ERROR, "Invariant violated: ", violation);
}

pkv_status bad_handle(const void* shell, const char* kind) noexcept {
  if (shell == nullptr) return null_arg(kind);
  return fail(PKV_INVALID_ARGUMENT, "Invalid argument: not a live ", kind,
              " handle (destroyed, or of another kind)");
}

void bury(const void* shell) {
  auto& g = graveyard();
  std::lock_guard lock(g.mu);
  g.shells.push_back(shell);  // may throw bad_alloc: the shell then stays unreferenced (leaked)
}

}  // namespace pkv::capi

const char* pkv_status_name(int s) {
  switch (s) {
    case PKV_OK:
      return "PKV_OK";
    case PKV_OUT_OF_MEMORY:
      return "PKV_OUT_OF_MEMORY";
    case PKV_SEQUENCE_NOT_FOUND:
      return "PKV_SEQUENCE_NOT_FOUND";
    case PKV_BLOCK_NOT_FOUND:
      return "PKV_BLOCK_NOT_FOUND";
    case PKV_INVALID_OPERATION:
      return "PKV_INVALID_OPERATION";
    case PKV_INVALID_ARGUMENT:
      return "PKV_INVALID_ARGUMENT";
    case PKV_BUFFER_TOO_SMALL:
      return "PKV_BUFFER_TOO_SMALL";
    case PKV_HOST_OUT_OF_MEMORY:
      return "PKV_HOST_OUT_OF_MEMORY";
    case PKV_INTERNAL_ERROR:
      return "PKV_INTERNAL_ERROR";
  }
  return "PKV_UNKNOWN_STATUS";
}

const char* pkv_last_error_message(void) {
  return pkv::capi::t_message;
}

// src/c_api/convert.hpp — conversions between the C ABI's values and the C++ API's: eviction
// strategies, hash algorithms, copy operations, token and salt arrays. Internal, never installed.
//
// A C caller may store any int in an enum field; reading it as the C++ enum type would be
// undefined for values outside the enumerators, so from_c reads the field's bytes as an int and
// rejects unknown values as invalid arguments.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "pkv/pkv.h"
#include "pkv/pkv.hpp"

namespace pkv::capi {
#pragma GCC visibility push(hidden)

inline pkv_copy_op to_c(const std::optional<CopyOp>& op) noexcept {
  if (!op) return {PKV_NO_BLOCK, PKV_NO_BLOCK};
  return {op->src.value, op->dst.value};
}

inline Result<EvictionStrategy> from_c(const pkv_eviction_strategy& s) {
  static_assert(sizeof(pkv_strategy_kind) == sizeof(int));
  int kind = 0;
  std::memcpy(&kind, &s.kind, sizeof kind);
  switch (kind) {
    case PKV_STRATEGY_LRU:
      return EvictionStrategy::lru();
    case PKV_STRATEGY_LFU:
      return EvictionStrategy::lfu();
    case PKV_STRATEGY_LONGEST_FIRST:
      return EvictionStrategy::longest_first();
    case PKV_STRATEGY_PRIORITY:
      return EvictionStrategy::priority(s.levels);
    case PKV_STRATEGY_STREAMING_LLM:
      return EvictionStrategy::streaming_llm(s.sink_tokens, s.window_tokens);
    default:
      return Error::invalid_argument("unknown eviction strategy kind " + std::to_string(kind));
  }
}

inline pkv_eviction_strategy to_c(const EvictionStrategy& s) noexcept {
  using Kind = EvictionStrategy::Kind;
  pkv_eviction_strategy out{PKV_STRATEGY_LRU, s.levels(), s.sink_tokens(), s.window_tokens()};
  switch (s.kind()) {
    case Kind::lru:
      out.kind = PKV_STRATEGY_LRU;
      break;
    case Kind::lfu:
      out.kind = PKV_STRATEGY_LFU;
      break;
    case Kind::longest_first:
      out.kind = PKV_STRATEGY_LONGEST_FIRST;
      break;
    case Kind::priority:
      out.kind = PKV_STRATEGY_PRIORITY;
      break;
    case Kind::streaming_llm:
      out.kind = PKV_STRATEGY_STREAMING_LLM;
      break;
  }
  return out;
}

inline Result<HashAlgorithm> from_c(const pkv_hash_algorithm& a) {
  static_assert(sizeof(pkv_hash_algorithm) == sizeof(int));
  int v = 0;
  std::memcpy(&v, &a, sizeof v);
  switch (v) {
    case PKV_HASH_SHA256:
      return HashAlgorithm::sha256;
    case PKV_HASH_XXH3_128:
      return HashAlgorithm::xxh3_128;
    default:
      return Error::invalid_argument("unknown hash algorithm " + std::to_string(v));
  }
}

inline pkv_hash_algorithm to_c(HashAlgorithm a) noexcept {
  return a == HashAlgorithm::sha256 ? PKV_HASH_SHA256 : PKV_HASH_XXH3_128;
}

// A (pointer, length) argument, checked with PKV_ARRAY, as a span / string_view.
inline std::span<const TokenId> tokens_of(const uint32_t* p, std::size_t n) noexcept {
  static_assert(std::is_same_v<TokenId, uint32_t>);
  return n == 0 ? std::span<const TokenId>{} : std::span<const TokenId>(p, n);
}
inline std::string_view salt_of(const char* p, std::size_t n) noexcept {
  return n == 0 ? std::string_view{} : std::string_view(p, n);
}

#pragma GCC visibility pop
}  // namespace pkv::capi

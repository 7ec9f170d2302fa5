// bench/prefix_workloads.hpp — workloads of automatic prefix caching (issue 11), in the shape of
// workloads.hpp: built once by thread 0, then step(tid) in a loop returning the items it did.
//
//   BlockHashes   pkv::block_hashes over one 2,048-token prompt (128 blocks of kBlockSize tokens)
//                 per step; items = blocks hashed, so ns per block = 1e9 / items_per_second.
//                 The prompt's token ids are fixed pseudo-random values below 2^17 (a tokenizer's
//                 range); each thread hashes the same prompt under its own salt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pkv/block_hash.hpp"
#include "workloads.hpp"

namespace pkv_bench {

class BlockHashes {
 public:
  static constexpr std::size_t kPromptTokens = 2048;

  BlockHashes(int threads, pkv::HashAlgorithm algorithm) : algorithm_(algorithm) {
    Rng rng{0x5eed};
    tokens_.resize(kPromptTokens);
    for (auto& t : tokens_) t = static_cast<pkv::TokenId>(rng.below(1u << 17));
    for (int t = 0; t < threads; ++t) salts_.push_back("tenant-" + std::to_string(t));
    sinks_.resize(static_cast<std::size_t>(threads) * kSinkStride);
  }

  std::int64_t step(int tid) {
    const auto hashes = pkv::block_hashes(tokens_, kBlockSize, salts_[tid], algorithm_);
    // Keep the result observable (the call is in another library, but be explicit).
    sinks_[static_cast<std::size_t>(tid) * kSinkStride] ^= hashes.back().bytes[0];
    return static_cast<std::int64_t>(hashes.size());
  }

 private:
  static constexpr std::size_t kSinkStride = kLine;  // one cache line per thread's sink
  pkv::HashAlgorithm algorithm_;
  std::vector<pkv::TokenId> tokens_;
  std::vector<std::string> salts_;
  std::vector<std::uint8_t> sinks_;
};

}  // namespace pkv_bench

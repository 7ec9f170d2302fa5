// pkv/block_hash.hpp — content hashes of KV blocks, the keys of automatic prefix caching.
//
// What it does
//   A prompt's full blocks are named by a chain of digests, so that two requests (in one process or
//   on two machines) that share a prefix of token ids compute equal keys for exactly the blocks of
//   that prefix:
//       h_{-1} = H(salt bytes)
//       h_i    = H(P(h_{i-1}) || tokens of block i, each as a little-endian u32)
//   where P(h) is the first digest_size(algorithm) bytes of h: all 32 for sha256, the 16 that
//   xxh3_128 fills (the 16 zero bytes after them are not hashed). Only full blocks get a hash; the
//   tokens of a partial last block are ignored. Raw bytes are hashed: no serialisation step.
//     sha256     SHA-256 (FIPS 180-4) through OpenSSL's libcrypto EVP interface (SHA-NI where the
//                CPU has it). Fills all 32 bytes.
//     xxh3_128   XXH3_128bits with seed 0 (xxHash's default, so `xxhsum -H2` over the same bytes
//                prints the same value), stored in xxHash's canonical (big-endian) byte order in
//                bytes 0..15; bytes 16..31 are zero.
//   The byte order of every input and output is fixed, so the values do not depend on the host's
//   endianness (a big-endian host byte-swaps the token ids before hashing).
//
// Progress guarantee
//   Every function is thread-safe and lock-free (pure functions of their arguments; sha256 uses a
//   thread-local libcrypto context, created on a thread's first sha256 call). chain_hash and
//   salt_hash allocate nothing after that first call; block_hashes allocates its result.
//
// Bad input
//   block_hashes() with block_size == 0 throws std::invalid_argument ("block_hashes: block_size
//   must be positive"): its return type leaves no room for an error value.
//   If libcrypto fails (it never does for SHA-256 in a sane installation), the call throws
//   std::runtime_error.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pkv {

/// A token id as the model's tokenizer produces it.
using TokenId = std::uint32_t;

/// The digest naming a block (see the file comment for the byte layout of each).
enum class HashAlgorithm : std::uint8_t { sha256, xxh3_128 };

/// "sha256" / "xxh3_128".
const char* to_string(HashAlgorithm algorithm) noexcept;
/// The inverse of to_string; nullopt for any other text.
std::optional<HashAlgorithm> parse_hash_algorithm(std::string_view text) noexcept;
/// Bytes of BlockHash::bytes the algorithm fills (and that a child's hash takes from its parent):
/// 32 for sha256, 16 for xxh3_128.
constexpr std::size_t digest_size(HashAlgorithm algorithm) noexcept {
  return algorithm == HashAlgorithm::sha256 ? 32 : 16;
}

/// A block's key: 32 bytes, compared bytewise (lexicographic), printed as 64 lowercase hex digits.
/// A plain value type (trivially copyable; not synchronised).
struct BlockHash {
  std::array<std::uint8_t, 32> bytes{};

  friend constexpr bool operator==(const BlockHash&, const BlockHash&) = default;
  friend constexpr auto operator<=>(const BlockHash&, const BlockHash&) = default;

  /// 64 lowercase hex digits, bytes[0] first.
  std::string to_hex() const;
  /// The first 8 bytes as a host integer: a digest is uniform, so this is a good hash-table key.
  std::size_t prefix_word() const noexcept {
    std::size_t w;
    std::memcpy(&w, bytes.data(), sizeof w);
    return w;
  }
};
static_assert(sizeof(BlockHash) == 32);

/// Prints to_hex().
std::ostream& operator<<(std::ostream& os, const BlockHash& h);

/// h_{-1} = H(salt): the parent of a chain's first block. Thread-safe, lock-free.
BlockHash salt_hash(std::string_view salt, HashAlgorithm algorithm);

/// h_i = H(P(parent) || block_tokens as little-endian u32). The caller passes the tokens of one
/// full block (any length is hashed as given). Thread-safe, lock-free.
BlockHash chain_hash(const BlockHash& parent, std::span<const TokenId> block_tokens,
                     HashAlgorithm algorithm);

/// The chain hashes of the floor(tokens.size() / block_size) full blocks of `tokens` under `salt`
/// (the partial last block, if any, has none). Thread-safe, lock-free; allocates the result.
/// Throws std::invalid_argument when block_size == 0.
std::vector<BlockHash> block_hashes(std::span<const TokenId> tokens, std::size_t block_size,
                                    std::string_view salt, HashAlgorithm algorithm);

}  // namespace pkv

template <>
struct std::hash<pkv::BlockHash> {
  std::size_t operator()(const pkv::BlockHash& h) const noexcept { return h.prefix_word(); }
};

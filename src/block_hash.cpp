// Block hashes (pkv/block_hash.hpp): SHA-256 through libcrypto's EVP interface, XXH3-128 from
// libxxhash's header. Neither algorithm is written here.
#include "pkv/block_hash.hpp"

#include <openssl/evp.h>

// libxxhash's functions compiled into this file: a call into libxxhash.so cannot be inlined,
// and for a 16-token block the call and its canonicalisation cost more than XXH3 itself
// (best of 7: 20 ns per block through the .so, 14 ns inlined).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <memory>
#include <ostream>
#include <stdexcept>

namespace pkv {
namespace {

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big,
              "mixed-endian hosts are not supported");
constexpr bool kLittleEndian = std::endian::native == std::endian::little;

// Token ids are hashed as little-endian u32; on a little-endian host that is their memory.
[[maybe_unused]] inline TokenId to_le(TokenId t) noexcept {
  if constexpr (kLittleEndian) {
    return t;
  } else {
    return __builtin_bswap32(t);
  }
}

// Feeds `tokens` to `update(const void*, size_t)` as little-endian bytes: one call on a
// little-endian host, chunks through a byte-swapped buffer on a big-endian one.
template <class Update>
void feed_tokens(std::span<const TokenId> tokens, Update&& update) {
  if constexpr (kLittleEndian) {
    if (!tokens.empty()) update(tokens.data(), tokens.size_bytes());
  } else {
    TokenId buf[256];
    for (std::size_t i = 0; i < tokens.size(); i += std::size(buf)) {
      const std::size_t n = std::min(std::size(buf), tokens.size() - i);
      for (std::size_t j = 0; j < n; ++j) buf[j] = to_le(tokens[i + j]);
      update(buf, n * sizeof(TokenId));
    }
  }
}

// Blocks up to this many tokens are hashed in one call over a stack copy of parent || tokens:
// one-shot XXH3 is several times faster than its streaming state on short inputs, and one
// EVP_DigestUpdate instead of two saves ~115 instructions per SHA-256 block (callgrind).
constexpr std::size_t kOneShotTokens = 256;

// parent's first `parent_bytes` bytes || tokens as little-endian u32, in a stack buffer.
class Gathered {
 public:
  Gathered(const BlockHash& parent, std::size_t parent_bytes, std::span<const TokenId> tokens)
      : size_(parent_bytes + tokens.size_bytes()) {
    std::memcpy(buf_, parent.bytes.data(), parent_bytes);
    if constexpr (kLittleEndian) {
      if (tokens.size() == 16) {  // pkv's usual block: a fixed-size copy the compiler inlines
        std::memcpy(buf_ + parent_bytes, tokens.data(), 16 * sizeof(TokenId));
      } else if (!tokens.empty()) {
        std::memcpy(buf_ + parent_bytes, tokens.data(), tokens.size_bytes());
      }
    } else {
      for (std::size_t i = 0; i < tokens.size(); ++i) {
        const TokenId t = to_le(tokens[i]);
        std::memcpy(buf_ + parent_bytes + i * sizeof t, &t, sizeof t);
      }
    }
  }
  const unsigned char* data() const noexcept { return buf_; }
  std::size_t size() const noexcept { return size_; }

 private:
  unsigned char buf_[sizeof(BlockHash) + kOneShotTokens * sizeof(TokenId)];
  std::size_t size_;
};

// ---- sha256 (libcrypto) ------------------------------------------------------------------------

[[noreturn]] void crypto_failure(const char* what) {
  throw std::runtime_error(std::string("pkv block hash: libcrypto ") + what + " failed");
}

struct CtxFree {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
using CtxPtr = std::unique_ptr<EVP_MD_CTX, CtxFree>;

// Per thread: `fresh` is a SHA-256 context initialised once; each hash copies it into `work`
// (EVP_MD_CTX_copy_ex copies the digest state, ~90 instructions fewer than re-initialising with
// EVP_DigestInit_ex2, and no provider lookup per call).
struct Sha256Contexts {
  CtxPtr fresh{EVP_MD_CTX_new()};
  CtxPtr work{EVP_MD_CTX_new()};
  Sha256Contexts() {
    if (!fresh || !work) crypto_failure("EVP_MD_CTX_new");
    EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (md == nullptr) crypto_failure("EVP_MD_fetch(SHA256)");
    const int ok = EVP_DigestInit_ex2(fresh.get(), md, nullptr);
    EVP_MD_free(md);  // the context keeps its own reference
    if (ok != 1) crypto_failure("EVP_DigestInit_ex2");
  }
};

EVP_MD_CTX* sha256_begin() {
  thread_local Sha256Contexts c;
  if (EVP_MD_CTX_copy_ex(c.work.get(), c.fresh.get()) != 1) crypto_failure("EVP_MD_CTX_copy_ex");
  return c.work.get();
}

void sha256_update(EVP_MD_CTX* ctx, const void* data, std::size_t n) {
  if (EVP_DigestUpdate(ctx, data, n) != 1) crypto_failure("EVP_DigestUpdate");
}

BlockHash sha256_final(EVP_MD_CTX* ctx) {
  BlockHash h;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, h.bytes.data(), &len) != 1 || len != h.bytes.size()) {
    crypto_failure("EVP_DigestFinal_ex");
  }
  return h;
}

constexpr std::size_t kShaParent = digest_size(HashAlgorithm::sha256);

BlockHash sha256_chain(const BlockHash& parent, std::span<const TokenId> tokens) {
  EVP_MD_CTX* ctx = sha256_begin();
  if (tokens.size() <= kOneShotTokens) {
    const Gathered g(parent, kShaParent, tokens);
    sha256_update(ctx, g.data(), g.size());
  } else {
    sha256_update(ctx, parent.bytes.data(), kShaParent);
    feed_tokens(tokens, [ctx](const void* p, std::size_t n) { sha256_update(ctx, p, n); });
  }
  return sha256_final(ctx);
}

// ---- xxh3_128 (libxxhash, compiled inline: XXH_INLINE_ALL above) -------------------------------

constexpr std::size_t kXxhParent = digest_size(HashAlgorithm::xxh3_128);

BlockHash xxh3_store(XXH128_hash_t v) noexcept {
  BlockHash h;
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, v);  // big-endian high64 then low64, as xxhsum prints it
  static_assert(sizeof c.digest == kXxhParent);
  std::memcpy(h.bytes.data(), c.digest, sizeof c.digest);
  return h;
}

BlockHash xxh3_chain(const BlockHash& parent, std::span<const TokenId> tokens) {
  if (tokens.size() <= kOneShotTokens) {
    const Gathered g(parent, kXxhParent, tokens);
    return xxh3_store(XXH3_128bits(g.data(), g.size()));
  }
  XXH3_state_t state;  // complete type under XXH_INLINE_ALL; about 600 bytes, on the stack
  (void)XXH3_128bits_reset(&state);  // cannot fail on a valid pointer
  (void)XXH3_128bits_update(&state, parent.bytes.data(), kXxhParent);
  feed_tokens(tokens,
              [&state](const void* p, std::size_t n) { (void)XXH3_128bits_update(&state, p, n); });
  return xxh3_store(XXH3_128bits_digest(&state));
}

}  // namespace

const char* to_string(HashAlgorithm algorithm) noexcept {
  switch (algorithm) {
    case HashAlgorithm::sha256:
      return "sha256";
    case HashAlgorithm::xxh3_128:
      return "xxh3_128";
  }
  return "unknown";
}

std::optional<HashAlgorithm> parse_hash_algorithm(std::string_view text) noexcept {
  if (text == "sha256") return HashAlgorithm::sha256;
  if (text == "xxh3_128") return HashAlgorithm::xxh3_128;
  return std::nullopt;
}

std::string BlockHash::to_hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * bytes.size(), '0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    s[2 * i] = kDigits[bytes[i] >> 4];
    s[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return s;
}

std::ostream& operator<<(std::ostream& os, const BlockHash& h) {
  return os << h.to_hex();
}

BlockHash salt_hash(std::string_view salt, HashAlgorithm algorithm) {
  if (algorithm == HashAlgorithm::xxh3_128) {
    return xxh3_store(XXH3_128bits(salt.data(), salt.size()));
  }
  EVP_MD_CTX* ctx = sha256_begin();
  sha256_update(ctx, salt.data(), salt.size());
  return sha256_final(ctx);
}

BlockHash chain_hash(const BlockHash& parent, std::span<const TokenId> block_tokens,
                     HashAlgorithm algorithm) {
  return algorithm == HashAlgorithm::xxh3_128 ? xxh3_chain(parent, block_tokens)
                                              : sha256_chain(parent, block_tokens);
}

std::vector<BlockHash> block_hashes(std::span<const TokenId> tokens, std::size_t block_size,
                                    std::string_view salt, HashAlgorithm algorithm) {
  if (block_size == 0) throw std::invalid_argument("block_hashes: block_size must be positive");
  const std::size_t n = tokens.size() / block_size;
  std::vector<BlockHash> out;
  if (n == 0) return out;
  out.resize(n);
  out[0] = chain_hash(salt_hash(salt, algorithm), tokens.first(block_size), algorithm);
  for (std::size_t i = 1; i < n; ++i) {
    out[i] = chain_hash(out[i - 1], tokens.subspan(i * block_size, block_size), algorithm);
  }
  return out;
}

}  // namespace pkv

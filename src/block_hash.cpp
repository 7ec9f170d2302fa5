// Block hashes (pkv/block_hash.hpp): SHA-256 through libcrypto's EVP interface, XXH3-128 through
// libxxhash. Neither algorithm is written here.
#include "pkv/block_hash.hpp"

#include <openssl/evp.h>
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
inline TokenId to_le(TokenId t) noexcept {
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

// ---- sha256 (libcrypto) ------------------------------------------------------------------------

[[noreturn]] void crypto_failure(const char* what) {
  throw std::runtime_error(std::string("pkv block hash: libcrypto ") + what + " failed");
}

// The SHA-256 implementation, fetched once (fetching per call would take libcrypto's provider
// lock on every hash).
const EVP_MD* sha256_md() {
  static const EVP_MD* md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (m == nullptr) crypto_failure("EVP_MD_fetch(SHA256)");
    return m;
  }();
  return md;
}

struct CtxFree {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};

// One digest context per thread, re-initialised for every hash (no allocation per call).
EVP_MD_CTX* sha256_ctx() {
  thread_local std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx) crypto_failure("EVP_MD_CTX_new");
  if (EVP_DigestInit_ex2(ctx.get(), sha256_md(), nullptr) != 1) crypto_failure("DigestInit");
  return ctx.get();
}

BlockHash sha256_final(EVP_MD_CTX* ctx) {
  BlockHash h;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, h.bytes.data(), &len) != 1 || len != h.bytes.size()) {
    crypto_failure("DigestFinal");
  }
  return h;
}

void sha256_update(EVP_MD_CTX* ctx, const void* data, std::size_t n) {
  if (EVP_DigestUpdate(ctx, data, n) != 1) crypto_failure("DigestUpdate");
}

BlockHash sha256_chain(const BlockHash& parent, std::span<const TokenId> tokens) {
  EVP_MD_CTX* ctx = sha256_ctx();
  sha256_update(ctx, parent.bytes.data(), digest_size(HashAlgorithm::sha256));
  feed_tokens(tokens, [ctx](const void* p, std::size_t n) { sha256_update(ctx, p, n); });
  return sha256_final(ctx);
}

// ---- xxh3_128 (libxxhash) ----------------------------------------------------------------------

constexpr std::size_t kXxhParent = digest_size(HashAlgorithm::xxh3_128);
// Blocks up to this many tokens are hashed in one XXH3 call over a stack copy of parent ||
// tokens (one-shot XXH3 is several times faster than its streaming state on short inputs).
constexpr std::size_t kXxhOneShotTokens = 256;

BlockHash xxh3_store(XXH128_hash_t v) noexcept {
  BlockHash h;
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, v);  // big-endian high64 then low64, as xxhsum prints it
  static_assert(sizeof c.digest == kXxhParent);
  std::memcpy(h.bytes.data(), c.digest, sizeof c.digest);
  return h;
}

struct StateFree {
  void operator()(XXH3_state_t* s) const noexcept { XXH3_freeState(s); }
};

BlockHash xxh3_chain(const BlockHash& parent, std::span<const TokenId> tokens) {
  if (tokens.size() <= kXxhOneShotTokens) {
    unsigned char buf[kXxhParent + kXxhOneShotTokens * sizeof(TokenId)];
    std::memcpy(buf, parent.bytes.data(), kXxhParent);
    if constexpr (kLittleEndian) {
      if (!tokens.empty()) std::memcpy(buf + kXxhParent, tokens.data(), tokens.size_bytes());
    } else {
      for (std::size_t i = 0; i < tokens.size(); ++i) {
        const TokenId t = to_le(tokens[i]);
        std::memcpy(buf + kXxhParent + i * sizeof t, &t, sizeof t);
      }
    }
    return xxh3_store(XXH3_128bits(buf, kXxhParent + tokens.size_bytes()));
  }
  // The streaming state's layout is private to libxxhash (XXH_STATIC_LINKING_ONLY would expose
  // it): one heap state per thread, made on the thread's first long block.
  thread_local std::unique_ptr<XXH3_state_t, StateFree> state(XXH3_createState());
  if (!state || XXH3_128bits_reset(state.get()) != XXH_OK) {
    throw std::runtime_error("pkv block hash: XXH3 streaming state failed");
  }
  XXH3_state_t* st = state.get();
  (void)XXH3_128bits_update(st, parent.bytes.data(), kXxhParent);  // cannot fail after reset
  feed_tokens(tokens, [st](const void* p, std::size_t n) { (void)XXH3_128bits_update(st, p, n); });
  return xxh3_store(XXH3_128bits_digest(st));
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
  EVP_MD_CTX* ctx = sha256_ctx();
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
  out.reserve(n);
  BlockHash parent = salt_hash(salt, algorithm);
  for (std::size_t i = 0; i < n; ++i) {
    parent = chain_hash(parent, tokens.subspan(i * block_size, block_size), algorithm);
    out.push_back(parent);
  }
  return out;
}

}  // namespace pkv

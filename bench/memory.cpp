// bench/memory.cpp — pkv-memory: metadata bytes per block and per sequence, and peak RSS.
//
//   pkv-memory               print a JSON object with every figure below (for pkv and seed_mutex)
//   pkv-memory --rss IMPL    (internal) build the RSS scenario for IMPL in this process
//
// Heap figures come from a counting global operator new/delete (live bytes as malloc reports them
// with malloc_usable_size, so allocator rounding is included):
//   bytes_per_block        heap of an empty cache of 1M blocks / 1M
//   bytes_per_used_block   extra heap per referenced block (slope between 10 and 20 blocks/seq)
//   bytes_per_sequence     heap per live sequence beyond its blocks' share (fixed cost)
// Peak RSS: a fresh process (fork + exec of this binary) builds a 1M-block cache and fills it with
// 100k sequences of 10 blocks (160 tokens) each; ru_maxrss of that child, and of a child that
// builds nothing (the process floor), from wait4().
// Prefix caching ("prefix": pkv with xxh3_128, the same with verify_tokens, and the vLLM-design
// baseline), on a 100k-block cache of 16-token blocks, 2,000 distinct prompts of 16 full blocks:
//   bytes_per_block             heap of the cache with its prefix structures built / blocks
//   bytes_per_held_cached_block extra heap per findable block held by a sequence (allocated with
//                               token ids and committed: table, token ids, hashes, index)
//   bytes_per_reclaimable_block extra heap per findable block that no sequence holds (freed)
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "baselines/prefix_baseline.hpp"
#include "baselines/seed_mutex_cache.hpp"
#include "pkv/pkv.hpp"

namespace {
std::atomic<std::int64_t> g_live{0};

void* counted_alloc(std::size_t n, std::size_t align) {
  void* p = nullptr;
  if (align <= alignof(std::max_align_t)) {
    p = std::malloc(n == 0 ? 1 : n);
  } else if (posix_memalign(&p, align, n == 0 ? 1 : n) != 0) {
    p = nullptr;
  }
  if (p == nullptr) throw std::bad_alloc();
  g_live.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  return p;
}
void counted_free(void* p) noexcept {
  if (p == nullptr) return;
  g_live.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}
}  // namespace

void* operator new(std::size_t n) {
  return counted_alloc(n, 0);
}
void* operator new[](std::size_t n) {
  return counted_alloc(n, 0);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept {
  counted_free(p);
}
void operator delete[](void* p) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  counted_free(p);
}

namespace {

constexpr std::size_t kBlocks = 1'000'000;
constexpr std::size_t kSeqs = 100'000;
constexpr std::size_t kBlockSize = 16;

template <class Cache>
std::unique_ptr<Cache> make(std::size_t blocks) {
  return std::make_unique<Cache>(blocks, kBlockSize, 32, 128);
}

template <class Cache>
void fill(Cache& c, std::size_t seqs, std::size_t blocks_each) {
  for (std::size_t i = 0; i < seqs; ++i) {
    auto r = c.allocate(pkv::SeqId{i + 1}, blocks_each * kBlockSize);
    if (!r) {
      std::fprintf(stderr, "pkv-memory: allocate failed: %s\n", r.error().message().c_str());
      std::exit(1);
    }
  }
}

struct Heap {
  double per_block = 0;
  double per_used_block = 0;
  double per_sequence = 0;
};

template <class Cache>
Heap measure_heap() {
  Heap h;
  const std::int64_t base = g_live.load();
  std::int64_t empty = 0;
  std::int64_t with10 = 0;
  std::int64_t with20 = 0;
  {
    auto c = make<Cache>(kBlocks);
    empty = g_live.load() - base;
    fill(*c, kSeqs / 2, 10);
    with10 = g_live.load() - base - empty;
  }
  {
    auto c = make<Cache>(kBlocks);
    fill(*c, kSeqs / 2, 20);
    with20 = g_live.load() - base - empty;
  }
  const double seqs = static_cast<double>(kSeqs / 2);
  h.per_block = static_cast<double>(empty) / static_cast<double>(kBlocks);
  h.per_used_block = static_cast<double>(with20 - with10) / (seqs * 10.0);
  h.per_sequence = static_cast<double>(with10) / seqs - 10.0 * h.per_used_block;
  return h;
}

// ---- prefix caching ----------------------------------------------------------------------------

constexpr std::size_t kPrefixBlocks = 100'000;
constexpr std::size_t kPrefixSeqs = 2'000;
constexpr std::size_t kPrefixBlocksEach = 16;

struct PrefixHeap {
  double per_block = 0;
  double per_held_cached_block = 0;
  double per_reclaimable_block = 0;
};

// Prompt i: 16 full blocks of ids no other prompt has, and one more token (so allocate's "last
// token is computed" rule leaves all 16 full blocks publishable).
std::vector<pkv::TokenId> prompt(std::size_t i) {
  std::vector<pkv::TokenId> p(kPrefixBlocksEach * kBlockSize + 1);
  for (std::size_t t = 0; t < p.size(); ++t) p[t] = static_cast<pkv::TokenId>(i * p.size() + t + 1);
  return p;
}

template <class Cache, class Make>
PrefixHeap measure_prefix(Make&& make_cache) {
  PrefixHeap h;
  const std::int64_t base = g_live.load();
  auto c = make_cache();
  // pkv builds its prefix structures on the first token-id allocation: count them as fixed.
  const std::vector<pkv::TokenId> one{7};
  if (!c->allocate(pkv::SeqId{999'999}, one, {}) || !c->free(pkv::SeqId{999'999})) std::exit(4);
  const std::int64_t empty = g_live.load() - base;
  for (std::size_t i = 0; i < kPrefixSeqs; ++i) {
    const std::vector<pkv::TokenId> p = prompt(i);
    const pkv::SeqId s{i + 1};
    if (!c->allocate(s, p, {}) || !c->commit(s, p.size())) {
      std::fprintf(stderr, "pkv-memory: prefix allocate/commit failed\n");
      std::exit(1);
    }
  }
  const std::int64_t held = g_live.load() - base - empty;
  for (std::size_t i = 0; i < kPrefixSeqs; ++i)
    if (!c->free(pkv::SeqId{i + 1})) std::exit(5);
  const std::int64_t reclaimable = g_live.load() - base - empty;
  const double cached = static_cast<double>(kPrefixSeqs * kPrefixBlocksEach);
  h.per_block = static_cast<double>(empty) / static_cast<double>(kPrefixBlocks);
  h.per_held_cached_block = static_cast<double>(held) / cached;
  h.per_reclaimable_block = static_cast<double>(reclaimable) / cached;
  return h;
}

template <class Cache>
int rss_child() {
  auto c = make<Cache>(kBlocks);
  fill(*c, kSeqs, kBlocks / kSeqs);
  if (c->free_block_count() != 0) return 3;
  return 0;
}

// Runs `self --rss impl` and returns its peak RSS in KiB (-1 on failure).
long child_rss(const char* self, const char* impl) {
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    execl(self, self, "--rss", impl, static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  rusage ru{};
  if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return -1;
  }
  return ru.ru_maxrss;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--rss") == 0) {
    if (std::strcmp(argv[2], "pkv") == 0) return rss_child<pkv::PagedKvCache>();
    if (std::strcmp(argv[2], "seed_mutex") == 0) return rss_child<pkv::baseline::SeedMutexCache>();
    if (std::strcmp(argv[2], "none") == 0) return 0;
    return 2;
  }
  const char* self = "/proc/self/exe";
  char path[4096];
  const ssize_t len = readlink(self, path, sizeof path - 1);
  if (len > 0) {
    path[len] = '\0';
    self = path;
  }
  const long floor_kib = child_rss(self, "none");
  const long pkv_kib = child_rss(self, "pkv");
  const long seed_kib = child_rss(self, "seed_mutex");
  auto make_pkv = [](bool verify) {
    return [verify] {
      pkv::PagedKvCache::Options o;
      o.prefix.hash = pkv::HashAlgorithm::xxh3_128;
      o.prefix.verify_tokens = verify;
      return std::make_unique<pkv::PagedKvCache>(kPrefixBlocks, kBlockSize, 32, 128, o);
    };
  };
  const PrefixHeap pp = measure_prefix<pkv::PagedKvCache>(make_pkv(false));
  const PrefixHeap pv = measure_prefix<pkv::PagedKvCache>(make_pkv(true));
  const PrefixHeap pb = measure_prefix<pkv::baseline::PrefixBaseline>([] {
    return std::make_unique<pkv::baseline::PrefixBaseline>(kPrefixBlocks, kBlockSize,
                                                           pkv::HashAlgorithm::xxh3_128);
  });
  const Heap p = measure_heap<pkv::PagedKvCache>();
  const Heap s = measure_heap<pkv::baseline::SeedMutexCache>();
  std::printf("{\n");
  std::printf("  \"blocks\": %zu, \"sequences\": %zu, \"blocks_per_sequence\": %zu,\n", kBlocks,
              kSeqs, kBlocks / kSeqs);
  std::printf("  \"rss_floor_kib\": %ld,\n", floor_kib);
  const Heap* heaps[] = {&p, &s};
  const char* names[] = {"pkv", "seed_mutex"};
  const long rss[] = {pkv_kib, seed_kib};
  for (int i = 0; i < 2; ++i) {
    std::printf(
        "  \"%s\": {\"bytes_per_block\": %.2f, \"bytes_per_used_block\": %.2f, "
        "\"bytes_per_sequence\": %.2f, \"peak_rss_kib\": %ld},\n",
        names[i], heaps[i]->per_block, heaps[i]->per_used_block, heaps[i]->per_sequence, rss[i]);
  }
  std::printf("  \"prefix\": {\"blocks\": %zu, \"cached_blocks\": %zu,\n", kPrefixBlocks,
              kPrefixSeqs * kPrefixBlocksEach);
  const PrefixHeap* ph[] = {&pp, &pv, &pb};
  const char* pn[] = {"pkv", "pkv_verify_tokens", "vllm_mutex"};
  for (int i = 0; i < 3; ++i) {
    std::printf(
        "    \"%s\": {\"bytes_per_block\": %.2f, \"bytes_per_held_cached_block\": %.2f, "
        "\"bytes_per_reclaimable_block\": %.2f}%s\n",
        pn[i], ph[i]->per_block, ph[i]->per_held_cached_block, ph[i]->per_reclaimable_block,
        i < 2 ? "," : "");
  }
  std::printf("  }\n");
  std::printf("}\n");
  return 0;
}

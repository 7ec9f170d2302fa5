// pkv-threads-demo: several scheduler threads share one PagedKvCache, each admitting requests
// (allocate), decoding (append), forking beams (copy-on-write) and finishing (free), then the
// demo checks that every block came back. Usage: pkv-threads-demo [threads] [requests-per-thread]
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <pkv/pkv.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  unsigned threads = 4;
  unsigned per_thread = 20000;
  try {
    if (argc > 1) threads = static_cast<unsigned>(std::stoul(argv[1]));
    if (argc > 2) per_thread = static_cast<unsigned>(std::stoul(argv[2]));
  } catch (const std::exception&) {
    std::cerr << "usage: pkv-threads-demo [threads >= 1] [requests-per-thread]\n";
    return 2;
  }
  if (threads == 0 || threads > 256) {
    std::cerr << "threads must be in 1..256\n";
    return 2;
  }
  pkv::PagedKvCache cache(4096, 16, 32, 128);
  std::atomic<std::uint64_t> copies{0}, ooms{0}, tokens{0};
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      std::uint64_t base = (std::uint64_t{t} + 1) << 40;
      for (unsigned i = 0; i < per_thread; ++i) {
        pkv::SeqId req{base + 4 * i};
        if (!cache.allocate(req, 16 + rng() % 200)) {
          ooms.fetch_add(1, std::memory_order_relaxed);
          (void)cache.evict();
          continue;
        }
        pkv::SeqId beams[2] = {pkv::SeqId{req.value + 1}, pkv::SeqId{req.value + 2}};
        for (pkv::SeqId b : beams) (void)cache.fork(req, b);
        for (int step = 0; step < 32; ++step) {
          for (pkv::SeqId s : {req, beams[0], beams[1]}) {
            auto r = cache.append(s, 1);
            if (r && r.value()) copies.fetch_add(1, std::memory_order_relaxed);
            if (r) tokens.fetch_add(1, std::memory_order_relaxed);
          }
        }
        for (pkv::SeqId s : {req, beams[0], beams[1]}) (void)cache.free(s);
      }
    });
  }
  for (auto& th : pool) th.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (pkv::SeqId s : cache.sequence_ids()) (void)cache.free(s);
  std::cout << cache;
  std::cout << "threads=" << threads << " requests=" << threads * per_thread
            << " tokens=" << tokens.load() << " cow_copies=" << copies.load()
            << " oom=" << ooms.load() << " seconds=" << secs << '\n';
  std::string problem = cache.validate_unsafe();
  if (!problem.empty() || cache.used_block_count() != 0) {
    std::cerr << "accounting violation: " << problem << '\n';
    return 1;
  }
  std::cout << "all " << cache.total_blocks() << " blocks accounted for\n";
  return 0;
}

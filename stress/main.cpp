// pkv-stress: many threads call every public method of one PagedKvCache at once, and the program
// checks that nothing is lost: no sequence, no block, no reference, no byte of KV data
// (stress.hpp says what is checked and the caller protocol the workers follow).
//
//   pkv-stress [--threads T] [--seconds S] [--seed N] [--blocks B] [--block-size K]
//              [--magazine M] [--check-ms MS] [--live L] [--blind P] [--cross-fork P]
//              [--hold-copy-sources 0|1] [--affinity 0|1]
//
// Prints its seed first and a one-line summary last ("ops=... violations=0 ..."); exits 1 on any
// violation (the first ones are printed to stderr), 2 on bad arguments.
//
// This file: the command line, the worker loop that picks operations, the coordinator that calls
// the quiescent checks every --check-ms, and the summary line.
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "stress.hpp"

namespace pkv::stress {

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "pkv-stress: %s\nusage: pkv-stress [--threads T] [--seconds S] [--seed N] "
               "[--blocks B] [--block-size K] [--magazine M] [--check-ms MS] [--live L] "
               "[--blind PERCENT] [--cross-fork PERCENT] [--hold-copy-sources 0|1] "
               "[--affinity 0|1]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") usage("help");
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    char* end = nullptr;
    const double d = std::strtod(v, &end);
    if (end == v || *end != '\0' || d < 0) usage(("bad value for " + a).c_str());
    const auto u = static_cast<std::uint64_t>(std::strtoull(v, nullptr, 10));
    if (a == "--threads") {
      o.threads = static_cast<unsigned>(u);
    } else if (a == "--seconds") {
      o.seconds = d;
    } else if (a == "--seed") {
      o.seed = u;
      o.seed_given = true;
    } else if (a == "--blocks") {
      o.blocks = u;
    } else if (a == "--block-size") {
      o.block_size = u;
    } else if (a == "--magazine") {
      o.magazine = static_cast<std::uint32_t>(u);
    } else if (a == "--check-ms") {
      o.check_ms = static_cast<unsigned>(u);
    } else if (a == "--live") {
      o.live = static_cast<unsigned>(u);
    } else if (a == "--blind") {
      o.blind = static_cast<unsigned>(u);
    } else if (a == "--cross-fork") {
      o.cross = static_cast<unsigned>(u);
    } else if (a == "--hold-copy-sources") {
      if (u > 1) usage("--hold-copy-sources is 0 or 1");
      o.hold = static_cast<int>(u);
    } else if (a == "--affinity") {
      if (u > 1) usage("--affinity is 0 or 1");
      o.affinity = static_cast<int>(u);
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (o.threads == 0 || o.threads > 200) usage("--threads must be in 1..200");
  if (o.blocks == 0 || o.block_size == 0 || o.block_size > 4096) usage("bad cache size");
  if (o.blocks * o.block_size > (std::size_t{1} << 26)) usage("cache too large for the arena");
  if (o.live == 0 || o.blind > 100 || o.cross > 100 || o.check_ms == 0)
    usage("bad --live / --blind / --cross-fork / --check-ms");
  return o;
}

bool affinity_of(const Options& o) {
  return o.affinity < 0 ? ((o.seed >> 1) & 1) == 1 : o.affinity == 1;
}

void Stress::worker(unsigned t) {
  Worker& w = workers_[t];
  std::uint64_t seen_epoch = 0;
  for (;;) {
    const std::uint64_t e = epoch_.load(std::memory_order_acquire);
    if (e != seen_epoch) {
      seen_epoch = e;
      barrier_->arrive_and_wait();  // the completion step checks everything
      continue;
    }
    if (stop_.load(std::memory_order_acquire)) break;
    const unsigned pick = static_cast<unsigned>(w.rng() % 1000);
    if (pick < 140) {
      op_allocate(t);
    } else if (pick < 180) {
      op_prefix(t);
    } else if (pick < 572) {
      op_append(t, w.rng() % 100 < opt_.blind);
    } else if (pick < 580) {
      op_append_batch(t);
    } else if (pick < 670) {
      op_fork(t, w.rng() % 100 < opt_.cross);
    } else if (pick < 720) {
      op_free(t);
    } else if (pick < 750) {
      op_streaming(t);
    } else if (pick < 840) {
      op_get(t);
    } else if (pick < 850) {
      op_fork_many(t);
    } else if (pick < 860) {
      op_free_many(t);
    } else if (pick < 870) {
      op_truncate(t);
    } else if (pick < 880) {
      op_evict(t, false);
    } else if (pick < 882) {
      op_evict(t, true);
    } else {
      op_misc(t);
    }
    // A scheduler that runs out of blocks evicts (never while holding the gate shared).
    if (w.pressure) {
      w.pressure = false;
      if (w.rng() % 2 == 0) op_evict(t, false);
    }
  }
}

int Stress::run() {
  barrier_ = std::make_unique<std::barrier<OnQuiescent>>(static_cast<std::ptrdiff_t>(opt_.threads),
                                                         OnQuiescent{this});
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < opt_.threads; ++t) threads.emplace_back([this, t] { worker(t); });
  const auto deadline = start + std::chrono::duration<double>(opt_.seconds);
  for (;;) {
    const auto next = std::chrono::steady_clock::now() + std::chrono::milliseconds(opt_.check_ms);
    if (next >= deadline) {
      std::this_thread::sleep_until(deadline);
      break;
    }
    std::this_thread::sleep_until(next);
    const std::uint64_t e = epoch_.fetch_add(1, std::memory_order_acq_rel) + 1;
    while (checked_.load(std::memory_order_acquire) != e)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  stop_.store(true, std::memory_order_release);
  for (std::thread& th : threads) th.join();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  quiescent_check(true);

  Stats total;
  for (const Worker& w : workers_) total.add(w.stats);
  const std::uint64_t v = violations_.load();
  std::printf(
      "ops=%" PRIu64 " ops/s=%.0f allocs=%" PRIu64 " appends=%" PRIu64 " blind_appends=%" PRIu64
      " copies=%" PRIu64 " pin_forks=%" PRIu64 " forks=%" PRIu64 " cross_forks=%" PRIu64
      " frees=%" PRIu64 " evict_calls=%" PRIu64 " evicted=%" PRIu64 " streamed=%" PRIu64
      " oom=%" PRIu64 " vanished=%" PRIu64 " strategy_changes=%" PRIu64 " fork_many=%" PRIu64
      " free_many=%" PRIu64 " truncates=%" PRIu64 " prefix_allocs=%" PRIu64
      " prefix_hit_tokens=%" PRIu64 " prefix_hit_decoded=%" PRIu64 " prefix_appends=%" PRIu64
      " prefix_matches=%" PRIu64 " prefix_matched_tokens=%" PRIu64 " reclaimed=%" PRIu64
      " checks=%" PRIu64 " tokens_checked=%" PRIu64 " violations=%" PRIu64 " seed=%" PRIu64 "\n",
      total.ops, static_cast<double>(total.ops) / secs, total.allocs, total.appends, total.blind,
      total.copies, total.pin_forks, total.forks, total.cross_forks, total.frees, total.evict_calls,
      total.evicted, total.streamed, total.oom, total.vanished, total.strategy_changes,
      total.fork_manys, total.free_manys, total.truncates, total.prefix_allocs,
      total.prefix_hit_tokens, total.prefix_hit_decoded, total.prefix_appends, total.prefix_matches,
      total.prefix_matched_tokens, reclaimed_, checks_, tokens_checked_, v, opt_.seed);
  return v == 0 ? 0 : 1;
}

}  // namespace pkv::stress

int main(int argc, char** argv) {
  using namespace pkv::stress;
  Options o = parse(argc, argv);
  if (!o.seed_given) o.seed = std::random_device{}() * 0x100000001ULL ^ std::random_device{}();
  std::printf("pkv-stress: seed=%" PRIu64
              " threads=%u seconds=%.1f blocks=%zu block_size=%zu "
              "magazine=%u check_ms=%u live=%u blind=%u cross_fork=%u hold_copy_sources=%d "
              "affinity=%d%s\n",
              o.seed, o.threads, o.seconds, o.blocks, o.block_size, o.magazine, o.check_ms, o.live,
              o.blind, o.cross, o.hold < 0 ? static_cast<int>(o.seed & 1) : o.hold,
              affinity_of(o) ? 1 : 0, kUnderTsan ? " (tsan defaults)" : "");
  std::fflush(stdout);
  Stress stress(o);
  return stress.run();
}

// The usage example shown in README.md (kept identical by tests/check_readme_example.sh).
// BEGIN README EXAMPLE
#include <cassert>
#include <iostream>
#include <optional>
#include <pkv/pkv.hpp>
#include <vector>

int main() {
  // 1024 blocks of 16 tokens; 32 heads x 128 dims (f16) => 256 KiB of KV per block.
  pkv::PagedKvCache cache(1024, 16, 32, 128);
  (void)cache.set_eviction_strategy(pkv::EvictionStrategy::lru());

  pkv::SeqId prompt{1};
  if (auto r = cache.allocate(prompt, 40); !r) {  // 40 tokens -> 3 blocks
    std::cerr << r.error().message() << '\n';
    return 1;
  }

  // Beam search: share the prompt's blocks, copy-on-write on the first divergent append.
  pkv::SeqId beam{2};
  (void)cache.fork(prompt, beam);
  auto appended = cache.append(beam, 1);  // last block is shared and partly full
  assert(appended.has_value());
  if (const auto& copy = appended.value()) {
    // The caller copies the KV data of block copy->src into copy->dst before writing the token.
    std::cout << "copy-on-write: " << copy->src << " -> " << copy->dst << '\n';
  }

  // A decode step: one token for every running sequence in one call (one clock update for the
  // whole batch). Every item appended except those in step.errors; step.copies are the CopyOps.
  const pkv::SeqId running[] = {prompt, beam};
  pkv::AppendBatchOutcome step;  // reuse it across steps
  cache.append_batch(running, 1, step);
  for (const auto& c : step.copies) std::cout << "item " << c.item << " copies " << c.copy << '\n';
  for (const auto& e : step.errors)
    std::cerr << running[e.item] << ": " << e.error.message() << '\n';
  const std::size_t stepped = step.items - step.errors.size();

  (void)cache.free(prompt);
  (void)cache.free(beam);
  std::cout << cache;  // the seed's Display form: strategy, blocks, memory, sequences, counters
  return cache.used_block_count() == 0 && stepped == 2 ? 0 : 1;
}
// END README EXAMPLE

// stress/ops_shared.cpp — the calls any thread makes on the cache as a whole: get_sequence and
// set_priority, evict and evict_to_threshold (on any thread's sequences), the lock-free figures,
// strategy and threshold changes, and calls that must fail the same way whatever others do.
#include <algorithm>
#include <cmath>
#include <mutex>
#include <shared_mutex>
#include <sstream>

#include "stress.hpp"

namespace pkv::stress {

void Stress::op_get(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  Tracked& tr = w.live[idx];
  auto info = cache_->get_sequence(SeqId{tr.id});
  if (!info) return forget(w, idx, true);
  if (info->seq_id != SeqId{tr.id} || info->num_tokens != tr.tokens || !runs_ok(*info) ||
      info->priority != tr.priority || info->access_count == 0)
    violation("get_sequence(" + s(tr.id) + ") disagrees with its owner (tokens " +
              std::to_string(info->num_tokens) + " vs " + std::to_string(tr.tokens) + ")");
  if (w.rng() % 2 == 0) {
    const std::uint32_t p = static_cast<std::uint32_t>(w.rng() % 4);
    if (auto r = cache_->set_priority(SeqId{tr.id}, p); !r) {
      expect_not_found(r.error(), tr.id, "set_priority");
      return forget(w, idx, true);
    }
    tr.priority = p;
  }
}

void Stress::op_evict(unsigned t, bool to_threshold) {
  Worker& w = workers_[t];
  const auto g = test_support::exclude_if(gate_, !hold_);  // gate mode: nobody writes KV data now
  ++w.stats.ops;
  ++w.stats.evict_calls;
  std::vector<SeqId> victims;
  if (to_threshold) {
    const double u = 0.5 + static_cast<double>(w.rng() % 45) / 100.0;
    auto r = cache_->evict_to_threshold(u);
    if (!r)
      return violation("evict_to_threshold(" + std::to_string(u) + "): " + r.error().message());
    victims = std::move(r).value();
  } else {
    auto r = cache_->evict();
    if (!r) {
      if (r.error().code() != Errc::invalid_operation ||
          r.error().message() != "Invalid operation: No sequences to evict")
        violation("evict: unexpected \"" + r.error().message() + "\"");
      return;
    }
    victims.push_back(r.value());
  }
  for (SeqId v : victims) {
    ++w.stats.evicted;
    w.ledger.evicted.push_back(v.value);
    if ((v.value >> 32) == 0 || (v.value >> 32) > opt_.threads)
      violation("evict returned " + pkv::to_string(v) + ", an id nobody created");
    // Gate mode: its owner can only re-create it holding the gate shared: it must be gone now.
    if (!hold_ && cache_->get_sequence(v))
      violation("evicted " + pkv::to_string(v) + " is still visible");
  }
  // Gate mode: no id is re-created meanwhile, so no id can be evicted twice. (Pin mode: an owner
  // may re-create an evicted id at once; the accounting still counts every incarnation.)
  std::sort(victims.begin(), victims.end());
  if (!hold_ && std::adjacent_find(victims.begin(), victims.end()) != victims.end())
    violation("evict_to_threshold returned a sequence twice");
}

void Stress::op_misc(unsigned t) {
  Worker& w = workers_[t];
  ++w.stats.ops;
  const std::size_t total = cache_->total_blocks();
  switch (w.rng() % 8) {
    case 0: {
      const std::size_t f = cache_->free_block_count();
      const double u = cache_->utilization();
      if (f > total || !(u >= 0.0 && u <= 1.0) || cache_->used_block_count() > total)
        violation("figures out of range");
      (void)cache_->needs_eviction();
      (void)cache_->used_memory_bytes();
      break;
    }
    case 1: {
      const pkv::CacheStats st = cache_->stats();
      if (st.peak_blocks_used > total) violation("peak_blocks_used > total blocks");
      (void)cache_->num_sequences();
      break;
    }
    case 2: {
      auto v = cache_->select_eviction_target();
      if (v && ((v->value >> 32) == 0 || (v->value >> 32) > opt_.threads))
        violation("select_eviction_target returned an id nobody created");
      break;
    }
    case 3: {
      if (w.rng() % 16 != 0) break;
      std::vector<SeqId> ids = cache_->sequence_ids();
      std::sort(ids.begin(), ids.end());
      if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
        violation("sequence_ids lists an id twice");
      break;
    }
    case 4: {
      if (w.rng() % 16 != 0) break;
      std::ostringstream os;
      os << *cache_;
      if (os.str().rfind("PagedKvCache\n  Strategy: ", 0) != 0) violation("operator<< form");
      break;
    }
    case 5: {
      if (w.rng() % 8 != 0) break;
      static const EvictionStrategy kValid[] = {
          EvictionStrategy::lru(), EvictionStrategy::lfu(), EvictionStrategy::longest_first(),
          EvictionStrategy::priority(4), EvictionStrategy::streaming_llm(2, 8)};
      if (auto r = cache_->set_eviction_strategy(kValid[w.rng() % 5]); !r)
        violation("set_eviction_strategy(valid): " + r.error().message());
      ++w.stats.strategy_changes;
      const EvictionStrategy bad =
          w.rng() % 2 ? EvictionStrategy::priority(0) : EvictionStrategy::streaming_llm(0, 0);
      if (auto r = cache_->set_eviction_strategy(bad);
          r || r.error().code() != Errc::invalid_argument)
        violation("set_eviction_strategy(invalid) was not rejected");
      (void)cache_->eviction_strategy();
      break;
    }
    case 6: {
      const double x = static_cast<double>(w.rng() % 140) / 100.0 - 0.2;
      if (auto r = cache_->set_eviction_threshold(x); !r) violation("set_eviction_threshold");
      const double e = cache_->eviction_threshold();
      if (!(e >= 0.0 && e <= 1.0)) violation("eviction_threshold out of 0..1");
      if (auto r = cache_->set_eviction_threshold(std::nan("")); r)
        violation("set_eviction_threshold(NaN) accepted");
      break;
    }
    default:
      op_bad_calls(t);
      break;
  }
}

// Calls that must fail the same way whatever the other threads do.
void Stress::op_bad_calls(unsigned t) {
  Worker& w = workers_[t];
  const std::uint64_t ghost = (std::uint64_t{0xFFFFFF} << 32) | (w.rng() % 1000);  // never created
  switch (w.rng() % 6) {
    case 0:
      if (auto r = cache_->append(SeqId{ghost}, 1); r)
        violation("append to a ghost succeeded");
      else
        expect_not_found(r.error(), ghost, "append(ghost)");
      break;
    case 1:
      if (auto r = cache_->free(SeqId{ghost}); r)
        violation("free of a ghost succeeded");
      else
        expect_not_found(r.error(), ghost, "free(ghost)");
      break;
    case 2:
      if (cache_->get_sequence(SeqId{ghost})) violation("get_sequence found a ghost");
      break;
    case 3:
      if (auto r = cache_->fork(SeqId{ghost}, SeqId{ghost}); r) {
        violation("fork onto itself succeeded");
      } else if (r.error().message() !=
                 "Invalid operation: Cannot fork sequence " + s(ghost) + " onto itself") {
        violation("fork onto itself: \"" + r.error().message() + "\"");
      }
      break;
    case 4:
      if (auto r = cache_->apply_streaming_llm(SeqId{ghost}, 0, 0);
          r || r.error().code() != Errc::invalid_argument)
        violation("apply_streaming_llm(0, 0) not rejected");
      break;
    default: {
      // allocate an id its owner believes alive: "already exists", or success if it was evicted.
      std::lock_guard<std::mutex> own(w.mu);
      if (w.live.empty()) break;
      const std::size_t idx = w.rng() % w.live.size();
      Tracked& tr = w.live[idx];
      const auto g = test_support::share_if(gate_, !hold_);
      auto r = cache_->allocate(SeqId{tr.id}, 1);
      if (r) {
        // It had been evicted; this is a new incarnation with one token.
        w.ledger.vanished.push_back(tr.id);
        w.ledger.created.push_back(tr.id);
        ++w.stats.vanished;
        if (hold_ && !pin(w, tr.id)) return forget(w, idx, false);
        Pinned pinned(*this, hold_ ? tr.id : 0);
        auto info = cache_->get_sequence(SeqId{tr.id});
        if (!info) return violation("re-allocated " + s(tr.id) + " is not visible");
        tr = Tracked{};
        tr.id = info->seq_id.value;
        tr.lineage = tr.id;
        tr.tokens = 1;
        write_tokens(*info, tr, 0, 1);
      } else if (r.error().code() == Errc::out_of_memory) {
        // Evicted meanwhile and no block free: forget it.
        forget(w, idx, true);
      } else if (r.error().message() !=
                 "Invalid operation: Sequence " + s(tr.id) + " already exists") {
        violation("allocate(existing " + s(tr.id) + "): \"" + r.error().message() + "\"");
      }
      break;
    }
  }
}

}  // namespace pkv::stress

// tests/model/harness.hpp — runs one call on a real PagedKvCache and on the ReferenceModel and
// compares everything a caller can observe (shared by the RapidCheck tests and the fuzzer).
//
//   Op        one public call with its arguments (ops.hpp; seq ids are small so collisions are
//             frequent).
//   Harness   owns the cache, the model and a host KV arena (support/kv_arena.hpp): block_size
//             slots per real block, each holding a cookie (a unique 64-bit number per written
//             token, 0 = never written).
//             step(op) (one step_<kind>() per OpKind) performs the call on both, performs the
//             returned CopyOp on the arena, writes a fresh cookie for every token a successful
//             allocate/append added (at the slot the real cache's SequenceInfo::slot_of gives),
//             and compares the results.
//             check() compares the whole observable state: validate_unsafe(), every figure and
//             counter, every live sequence (tokens, blocks, recency order, LFU count, priority,
//             slot of every kept token), the sharing structure (model and real block ids must be in
//             one consistent bijection, with equal reference counts) and the arena: every kept
//             token of every live sequence must read back its own cookie.
//   Both return "" when all agree, else a description of the first difference.
//
// NOT thread-safe: a Harness is driven by one thread.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "ops.hpp"
#include "pkv/paged_kv_cache.hpp"
#include "reference_model.hpp"
#include "support/kv_arena.hpp"

namespace pkv::model {

/// How often each interesting outcome happened (to check that generators reach them).
struct Coverage {
  std::uint64_t steps = 0, ok = 0, copies = 0, oom = 0, not_found = 0, invalid_operation = 0,
                invalid_argument = 0, evicted = 0, streamed = 0, forks = 0, shared_appends = 0,
                copies_done = 0, truncated = 0, forked_many = 0, freed_many_mixed = 0,
                prefix_hits = 0, published = 0, token_batch_items = 0;
};

class Harness {
 public:
  explicit Harness(const CacheConfig& c)
      : cfg_(c), model_(c.num_blocks, c.block_size, c.num_heads, c.head_dim, c.hold_copy_sources) {
    PagedKvCache::Options o;
    o.pool.magazine_size = c.magazine_size;
    o.hold_copy_sources = c.hold_copy_sources;
    o.affinity_shift = c.affinity_shift;
    auto r = PagedKvCache::create(c.num_blocks, c.block_size, c.num_heads, c.head_dim, o);
    if (!r) {
      init_error_ = "create failed: " + r.error().message();
      return;
    }
    cache_ = std::move(r).value();
    arena_ = test_support::KvArena<std::uint64_t>(c.num_blocks, c.block_size);
  }

  const std::string& init_error() const { return init_error_; }
  PagedKvCache& cache() { return *cache_; }
  ReferenceModel& model() { return model_; }
  const Coverage& coverage() const { return cov_; }

  /// Performs `op` on both; "" when the results agree.
  std::string step(const Op& op) {
    ++cov_.steps;
    switch (op.kind) {
      case OpKind::allocate:
        return step_allocate(op);
      case OpKind::append:
        return step_append(op);
      case OpKind::append_batch:
        return step_append_batch(op);
      case OpKind::fork:
        return step_fork(op);
      case OpKind::free:
        return step_free(op);
      case OpKind::get_sequence:
        return step_get_sequence(op);
      case OpKind::sequence_ids:
        return step_sequence_ids();
      case OpKind::select_target:
        return step_select_target();
      case OpKind::evict:
        return step_evict();
      case OpKind::evict_to_threshold:
        return step_evict_to_threshold(op);
      case OpKind::streaming:
        return step_streaming(op);
      case OpKind::set_priority:
        return compare_void(cache_->set_priority(SeqId{op.seq}, op.priority),
                            model_.set_priority(SeqId{op.seq}, op.priority));
      case OpKind::set_strategy:
        return step_set_strategy(op);
      case OpKind::set_threshold:
        return compare_void(cache_->set_eviction_threshold(op.x),
                            model_.set_eviction_threshold(op.x));
      case OpKind::display:
        return step_display();
      case OpKind::pin:
        return compare_void(cache_->pin(SeqId{op.seq}), model_.pin(SeqId{op.seq}));
      case OpKind::unpin:
        return compare_void(cache_->unpin(SeqId{op.seq}), model_.unpin(SeqId{op.seq}));
      case OpKind::copy_done:
        return step_copy_done(op);
      case OpKind::fork_many:
        return step_fork_many(op);
      case OpKind::free_many:
        return step_free_many(op);
      case OpKind::truncate:
        return step_truncate(op);
      case OpKind::allocate_tokens:
        return step_allocate_tokens(op);
      case OpKind::append_tokens:
        return step_append_tokens(op);
      case OpKind::commit:
        return step_commit(op);
      case OpKind::match_prefix: {
        const std::size_t r = cache_->match_prefix(prompt_of(op.m, op.n), salt_of(op.strategy));
        const std::size_t m = model_.match_prefix(prompt_of(op.m, op.n), salt_of(op.strategy));
        if (r != m)
          return "match_prefix: real " + std::to_string(r) + ", model " + std::to_string(m);
        return {};
      }
      case OpKind::reset_prefix:
        return compare_void(cache_->reset_prefix_cache(), model_.reset_prefix_cache());
      case OpKind::append_batch_tokens:
        return step_append_batch_tokens(op);
    }
    return "unknown op";
  }

  /// Compares the whole observable state; "" when it agrees.
  std::string check() const {
    const PagedKvCache& c = *cache_;
    if (std::string v = c.validate_unsafe(); !v.empty()) return "validate_unsafe: " + v;
    if (c.block_size() != model_.block_size() || c.total_blocks() != model_.total_blocks())
      return "sizes differ";
    if (c.free_block_count() != model_.free_block_count())
      return "free_block_count: real " + std::to_string(c.free_block_count()) + ", model " +
             std::to_string(model_.free_block_count());
    if (c.used_block_count() != model_.used_block_count()) return "used_block_count differs";
    if (c.cached_block_count() != model_.cached_block_count())
      return "cached_block_count: real " + std::to_string(c.cached_block_count()) + ", model " +
             std::to_string(model_.cached_block_count());
    if (c.reclaimable_block_count() != model_.reclaimable_block_count())
      return "reclaimable_block_count: real " + std::to_string(c.reclaimable_block_count()) +
             ", model " + std::to_string(model_.reclaimable_block_count());
    {
      const PrefixCacheStats rp = c.prefix_stats(), mp = model_.prefix_stats();
      if (rp.requests != mp.requests || rp.queries != mp.queries || rp.hits != mp.hits ||
          rp.published != mp.published || rp.reclaimed != mp.reclaimed)
        return "prefix_stats: real {requests=" + std::to_string(rp.requests) +
               ", queries=" + std::to_string(rp.queries) + ", hits=" + std::to_string(rp.hits) +
               ", published=" + std::to_string(rp.published) +
               ", reclaimed=" + std::to_string(rp.reclaimed) +
               "}, model {requests=" + std::to_string(mp.requests) +
               ", queries=" + std::to_string(mp.queries) + ", hits=" + std::to_string(mp.hits) +
               ", published=" + std::to_string(mp.published) +
               ", reclaimed=" + std::to_string(mp.reclaimed) + "}";
    }
    if (c.utilization() != model_.utilization()) return "utilization differs";
    if (c.block_memory_bytes() != model_.block_memory_bytes() ||
        c.total_memory_bytes() != model_.total_memory_bytes() ||
        c.used_memory_bytes() != model_.used_memory_bytes())
      return "memory figures differ";
    if (c.eviction_threshold() != model_.eviction_threshold()) return "eviction_threshold differs";
    if (c.needs_eviction() != model_.needs_eviction()) return "needs_eviction differs";
    if (c.num_sequences() != model_.num_sequences()) return "num_sequences differs";
    if (!(c.eviction_strategy() == model_.eviction_strategy())) return "strategy differs";
    const CacheStats rs = c.stats(), ms = model_.stats();
    if (!(rs == ms))
      return "stats: real {allocs=" + std::to_string(rs.total_allocations) +
             ", frees=" + std::to_string(rs.total_frees) +
             ", evictions=" + std::to_string(rs.total_evictions) +
             ", forks=" + std::to_string(rs.total_forks) +
             ", peak=" + std::to_string(rs.peak_blocks_used) +
             "}, model {allocs=" + std::to_string(ms.total_allocations) +
             ", frees=" + std::to_string(ms.total_frees) +
             ", evictions=" + std::to_string(ms.total_evictions) +
             ", forks=" + std::to_string(ms.total_forks) +
             ", peak=" + std::to_string(ms.peak_blocks_used) + "}";
    std::vector<SeqId> ids = c.sequence_ids();
    std::sort(ids.begin(), ids.end());
    if (ids != model_.sequence_ids()) return "sequence_ids differ";

    std::unordered_map<std::uint32_t, std::uint32_t> m2r, r2m;     // model <-> real block ids
    std::vector<std::pair<std::uint64_t, std::uint64_t>> recency;  // (model, real) last_access
    for (const auto& [id, q] : model_.sequences()) {
      const std::string who = "S" + std::to_string(id) + ": ";
      std::optional<SequenceInfo> info = c.get_sequence(SeqId{id});
      if (!info) return who + "missing from the real cache";
      if (info->seq_id != SeqId{id}) return who + "wrong seq_id in SequenceInfo";
      if (info->num_tokens != q.num_tokens())
        return who + "num_tokens real " + std::to_string(info->num_tokens) + ", model " +
               std::to_string(q.num_tokens());
      if (info->block_ids.size() != q.blocks.size())
        return who + "num_blocks real " + std::to_string(info->block_ids.size()) + ", model " +
               std::to_string(q.blocks.size());
      if (info->num_blocks() != info->block_ids.size()) return who + "num_blocks() wrong";
      recency.emplace_back(q.last_access, info->last_access);
      if (info->access_count != q.access_count)
        return who + "access_count real " + std::to_string(info->access_count) + ", model " +
               std::to_string(q.access_count);
      if (info->priority != q.priority) return who + "priority differs";
      std::uint64_t run_total = 0;
      for (const TokenRun& r : info->token_runs) {
        if (r.first_token != run_total || r.length == 0) return who + "malformed token_runs";
        run_total += r.length;
      }
      if (run_total != q.num_tokens()) return who + "token_runs do not cover num_tokens";
      if (!q.streamed && q.num_tokens() > 0 &&
          !(info->token_runs.size() == 1 && info->token_runs[0] == TokenRun{0, 0, q.num_tokens()}))
        return who + "a never-streamed sequence must have one run {0, 0, num_tokens}";
      for (std::uint64_t i = 0; i < q.num_tokens(); ++i) {
        if (info->slot_of(i) != q.slots[i])
          return who + "token " + std::to_string(i) + " in slot " +
                 std::to_string(info->slot_of(i)) + ", model slot " + std::to_string(q.slots[i]);
      }
      for (std::size_t b = 0; b < q.blocks.size(); ++b) {
        const std::uint32_t mb = q.blocks[b], rb = info->block_ids[b].value;
        auto [it1, new1] = m2r.emplace(mb, rb);
        auto [it2, new2] = r2m.emplace(rb, mb);
        if (it1->second != rb || it2->second != mb)
          return who + "block sharing differs from the model at table index " + std::to_string(b);
        // block_ref_count: the pool's count, or the prefix cache's holders in token mode.
        if (c.block_ref_count(BlockId{rb}) != model_.ref_count(mb))
          return who + "ref count of B" + std::to_string(rb) + " is " +
                 std::to_string(c.block_ref_count(BlockId{rb})) + ", model " +
                 std::to_string(model_.ref_count(mb));
        persist_[mb] = rb;
      }
      auto ex = expected_.find(id);
      const std::size_t expected_n = ex == expected_.end() ? 0 : ex->second.size();
      if (expected_n != q.num_tokens()) return who + "harness bookkeeping lost tokens";
      for (std::uint64_t i = 0; i < q.num_tokens(); ++i) {
        const std::uint64_t* cell = arena_.token(*info, i);
        if (cell == nullptr) return who + "token " + std::to_string(i) + " is beyond its blocks";
        const std::uint64_t cookie = *cell;
        if (cookie != ex->second[i])
          return who + "KV data of token " + std::to_string(i) + " lost (cookie " +
                 std::to_string(cookie) + ", expected " + std::to_string(ex->second[i]) + ")";
      }
    }
    // Recency values are the cache's own (a clock or TSC stamps): only their order is specified,
    // and calls made one after another must be ordered exactly as the model orders them.
    std::sort(recency.begin(), recency.end());
    for (std::size_t i = 1; i < recency.size(); ++i)
      if (!(recency[i - 1].second < recency[i].second))
        return "last_access order differs from the order of the calls";
    std::ostringstream os;
    os << c;
    if (os.str() != model_.display())
      return "operator<< prints\n" + os.str() + "model prints\n" + model_.display();
    return {};
  }

 private:
  // ---- one function per op kind: the call on both, the comparison, the arena's KV data ----

  std::string step_allocate(const Op& op) {
    const SeqId s{op.seq};
    Result<void> r = cache_->allocate(s, op.n);
    Result<void> m = model_.allocate(s, op.n);
    if (std::string e = compare_void(r, m); !e.empty()) return e;
    if (r) return write_new_tokens(s, 0, op.n);
    return {};
  }

  std::string step_append(const Op& op) {
    const SeqId s{op.seq};
    std::optional<SequenceInfo> pre = cache_->get_sequence(s);
    if (pre && !pre->block_ids.empty() && cache_->block_ref_count(pre->block_ids.back()) > 1)
      ++cov_.shared_appends;
    Result<std::optional<CopyOp>> r = cache_->append(s, op.n);
    Result<std::optional<CopyOp>> m = model_.append(s, op.n);
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    if (!r) return compare_error(r.error(), m.error());
    ++cov_.ok;
    if (r.value().has_value() != m.value().has_value())
      return std::string("CopyOp presence: real ") + (r.value() ? "yes" : "no") + ", model " +
             (m.value() ? "yes" : "no");
    if (!pre) return "append succeeded on a sequence get_sequence did not find";
    std::optional<SequenceInfo> post = cache_->get_sequence(s);
    if (!post) return "sequence vanished after append";
    const std::size_t old_nb = pre->block_ids.size();
    if (post->block_ids.size() < old_nb) return "append shrank the block table";
    for (std::size_t i = 0; i + 1 < old_nb; ++i)
      if (post->block_ids[i] != pre->block_ids[i]) return "append changed a full block";
    if (const std::optional<CopyOp>& c = r.value()) {
      ++cov_.copies;
      if (old_nb == 0 || c->src != pre->block_ids.back())
        return "CopyOp.src is not the old last block";
      if (c->dst != post->block_ids[old_nb - 1])
        return "CopyOp.dst is not the new block at the old last position";
      if (c->dst == c->src || cache_->block_ref_count(c->dst) != 1)
        return "CopyOp.dst is not a fresh private block";
      arena_.copy(*c);
    } else if (old_nb > 0 && post->block_ids[old_nb - 1] != pre->block_ids.back()) {
      return "append moved the last block without a CopyOp";
    }
    return write_new_tokens(s, pre->num_tokens, op.n);
  }

  // Each item must equal the model's append called in item order; then the CopyOps are performed
  // and the new tokens written in that order (no item of the batch can move an earlier item's
  // tokens: after an append the sequence's last block is private).
  // Odd counts take the per-item form with counts {n, n / 2, n}; even ones the uniform form.
  std::string step_append_batch(const Op& op) {
    const SeqId s{op.seq};
    const std::vector<SeqId> ids{s, SeqId{op.seq2}, s};
    const bool per_item = op.n % 2 == 1;
    const std::vector<std::size_t> counts{op.n, per_item ? op.n / 2 : op.n, op.n};
    AppendBatchOutcome outcome;
    if (per_item) {
      if (!cache_->append_batch(ids, counts, outcome))
        return "append_batch: equal-length spans rejected";
    } else {
      cache_->append_batch(ids, op.n, outcome);
    }
    if (outcome.items != ids.size()) return "append_batch: items is not seqs.size()";
    // Both lists in strictly increasing item order, in range, no item in both.
    auto in_order = [&](const auto& list) {
      for (std::size_t k = 0; k < list.size(); ++k)
        if (list[k].item >= ids.size() || (k > 0 && list[k].item <= list[k - 1].item)) return false;
      return true;
    };
    if (!in_order(outcome.copies)) return "append_batch: copies not in item order";
    if (!in_order(outcome.errors)) return "append_batch: errors not in item order";
    for (const auto& c : outcome.copies)
      for (const auto& e : outcome.errors)
        if (c.item == e.item) return "append_batch: an item both copied and failed";
    const std::vector<Result<std::optional<CopyOp>>> out = outcome.per_item();
    struct Done {
      SeqId id;
      std::uint64_t first;
      std::uint64_t n;
      std::optional<CopyOp> copy;
    };
    std::vector<Done> done;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::optional<SequenceInfo> mpre = model_.get_sequence(ids[i]);
      bool appended = false;
      if (std::string e =
              compare_item("append_batch", i, out[i], model_.append(ids[i], counts[i]), &appended);
          !e.empty())
        return e;
      if (!appended) continue;
      if (!mpre) return "append_batch item: succeeded on a sequence the model does not have";
      done.push_back(Done{ids[i], mpre->num_tokens, counts[i], out[i].value()});
    }
    for (const Done& d : done) {
      if (d.copy) {
        ++cov_.copies;
        if (d.copy->dst == d.copy->src) return "append_batch: CopyOp onto its own source";
        arena_.copy(*d.copy);
      }
      if (std::string e = write_new_tokens(d.id, d.first, d.n, false); !e.empty()) return e;
    }
    return {};
  }

  std::string step_fork(const Op& op) {
    Result<void> r = cache_->fork(SeqId{op.seq}, SeqId{op.seq2});
    Result<void> m = model_.fork(SeqId{op.seq}, SeqId{op.seq2});
    if (std::string e = compare_void(r, m); !e.empty()) return e;
    if (r) {
      ++cov_.forks;
      expected_[op.seq2] = expected_[op.seq];
    }
    return {};
  }

  static std::vector<SeqId> seq_ids_of(const std::vector<std::uint64_t>& ids) {
    std::vector<SeqId> v;
    for (std::uint64_t id : ids) v.push_back(SeqId{id});
    return v;
  }

  std::string step_fork_many(const Op& op) {
    const std::vector<SeqId> dsts = seq_ids_of(op.ids);
    Result<void> r = cache_->fork_many(SeqId{op.seq}, dsts);
    Result<void> m = model_.fork_many(SeqId{op.seq}, dsts);
    if (std::string e = compare_void(r, m); !e.empty()) return e;
    if (r) {
      cov_.forks += dsts.size();
      if (dsts.size() >= 2) ++cov_.forked_many;
      for (SeqId d : dsts) expected_[d.value] = expected_[op.seq];
    }
    return {};
  }

  // Each item must equal the model's free in item order: the outcome's errors (ascending items,
  // in range) are exactly the model's, and item(i) agrees.
  std::string step_free_many(const Op& op) {
    const std::vector<SeqId> ids = seq_ids_of(op.ids);
    FreeManyOutcome out;
    out.errors.push_back({99, Error(Errc::invalid_operation, "stale")});  // must be cleared
    cache_->free_many(ids, out);
    const std::vector<std::pair<std::size_t, Error>> m = model_.free_many(ids);
    if (out.items != ids.size()) return "free_many: items is not seqs.size()";
    if (out.errors.size() != m.size())
      return "free_many: " + std::to_string(out.errors.size()) + " failed items, model " +
             std::to_string(m.size());
    for (std::size_t k = 0; k < m.size(); ++k) {
      if (out.errors[k].item != m[k].first)
        return "free_many: failed item " + std::to_string(out.errors[k].item) + ", model " +
               std::to_string(m[k].first);
      if (std::string e = compare_error(out.errors[k].error, m[k].second); !e.empty())
        return "free_many item " + std::to_string(m[k].first) + ": " + e;
    }
    std::size_t next_err = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const bool failed = next_err < m.size() && m[next_err].first == i;
      if (failed) ++next_err;
      if (out.item(i).has_value() == failed)
        return "free_many: item(" + std::to_string(i) + ") wrong";
      if (!failed) {
        ++cov_.ok;
        expected_.erase(ids[i].value);
      }
    }
    if (out.all_freed() != m.empty()) return "free_many: all_freed() wrong";
    if (!m.empty() && m.size() < ids.size()) ++cov_.freed_many_mixed;
    return {};
  }

  std::string step_truncate(const Op& op) {
    const SeqId s{op.seq};
    const std::optional<SequenceInfo> pre = cache_->get_sequence(s);
    Result<std::size_t> r = cache_->truncate(s, op.n);
    Result<std::size_t> m = model_.truncate(s, op.n);
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    if (!r) return compare_error(r.error(), m.error());
    ++cov_.ok;
    if (r.value() != m.value())
      return "truncate released " + std::to_string(r.value()) + " blocks, model " +
             std::to_string(m.value());
    if (!pre) return "truncate succeeded on a sequence get_sequence did not find";
    const std::optional<SequenceInfo> post = cache_->get_sequence(s);
    if (!post) return "sequence vanished after truncate";
    // The kept blocks are the same blocks (no copy, no move).
    if (post->block_ids.size() + r.value() != pre->block_ids.size())
      return "truncate: table shrank by other than the returned count";
    for (std::size_t i = 0; i < post->block_ids.size(); ++i)
      if (post->block_ids[i] != pre->block_ids[i]) return "truncate moved a kept block";
    if (post->last_access != pre->last_access || post->access_count != pre->access_count)
      return "truncate counted as an access";
    if (op.n > 0) ++cov_.truncated;
    std::vector<std::uint64_t>& e = expected_[op.seq];
    e.resize(e.size() - op.n);
    return {};
  }

  // Token ids appended by append_tokens: family m continued at the sequence's positions (m == 4:
  // a token no prompt has).
  static std::vector<TokenId> continuation(std::uint64_t family, std::uint64_t first,
                                           std::uint64_t n) {
    std::vector<TokenId> v;
    for (std::uint64_t i = first; i < first + n; ++i)
      v.push_back(family == 4 ? TokenId{7777} : family_token(family, i));
    return v;
  }
  // The KV cookie of token i of a token-mode sequence: derived from (salt, ids[0..i]), not from
  // the writer, so a hit reads back exactly the cookies its publisher wrote.
  static std::uint64_t content_cookie(const std::string& salt, const std::vector<TokenId>& ids,
                                      std::uint64_t i) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (char ch : salt) h = (h ^ static_cast<unsigned char>(ch)) * 0x100000001b3ULL;
    for (std::uint64_t k = 0; k <= i; ++k) h = (h ^ ids[k]) * 0x100000001b3ULL;
    return h | (std::uint64_t{1} << 63);  // never 0 (unwritten) nor a counter cookie
  }

  std::string step_allocate_tokens(const Op& op) {
    const SeqId s{op.seq};
    const std::vector<TokenId> prompt = prompt_of(op.m, op.n);
    const std::string salt = salt_of(op.strategy);
    Result<std::size_t> r = cache_->allocate(s, prompt, salt);
    const std::optional<SequenceInfo> post = r ? cache_->get_sequence(s) : std::nullopt;
    std::string wrong_hit;
    // Among duplicates, the one whose real counterpart the cache took.
    auto choose = [&](std::size_t i, const std::vector<std::uint32_t>& cand) {
      if (post && i < post->block_ids.size())
        for (std::uint32_t mb : cand)
          if (auto it = persist_.find(mb);
              it != persist_.end() && it->second == post->block_ids[i].value)
            return mb;
      if (post && cand.size() > 1 && wrong_hit.empty())
        wrong_hit = "allocate hit B" + std::to_string(post->block_ids[i].value) + " at index " +
                    std::to_string(i) + ", none of the model's findable blocks for that prefix";
      return cand.front();
    };
    if (!r) {
      // Which duplicate a failed allocate revived is not observable, and it decides how many
      // blocks were available (a reclaimable duplicate is no longer available, a held one still
      // leaves the others): accept the outcome of any choice. A failure changes nothing.
      std::string first;
      for (int policy = 0; policy < 3; ++policy) {
        ReferenceModel trial = model_;
        auto pick = [&](std::size_t, const std::vector<std::uint32_t>& cand) {
          for (std::uint32_t mb : cand)
            if (policy == 0 || (policy == 1) == (trial.ref_count(mb) == 0)) return mb;
          return cand.front();
        };
        Result<std::size_t> m = trial.allocate(s, prompt, salt, pick);
        std::string e = m.has_value() ? mismatch(r, m) : compare_error(r.error(), m.error());
        if (e.empty()) return {};
        if (first.empty()) first = e;
      }
      return first;
    }
    Result<std::size_t> m = model_.allocate(s, prompt, salt, choose);
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    ++cov_.ok;
    if (!wrong_hit.empty()) return wrong_hit;
    if (r.value() != m.value())
      return "allocate(tokens) found " + std::to_string(r.value()) + " cached, model " +
             std::to_string(m.value());
    if (r.value() > 0) ++cov_.prefix_hits;
    // The cached tokens are not written: their cookies must be there already (check()).
    std::vector<std::uint64_t>& e = expected_[op.seq];
    e.clear();
    for (std::uint64_t i = 0; i < prompt.size(); ++i) {
      const std::uint64_t cookie = content_cookie(salt, prompt, i);
      e.push_back(cookie);
      if (i < r.value()) continue;
      std::uint64_t* cell = arena_.token(*post, i);
      if (cell == nullptr) return "slot_of points past the block table";
      *cell = cookie;
    }
    return {};
  }

  std::string step_append_tokens(const Op& op) {
    const SeqId s{op.seq};
    const ReferenceModel::Seq* q = model_.find(s);
    if (q == nullptr || !q->token_mode || !q->publishing) {
      // Count-mode sequences (and missing ones): the count form, compared as append.
      if (q == nullptr || !q->token_mode) {
        const std::vector<TokenId> ids = continuation(op.m, 0, op.n);
        std::optional<SequenceInfo> pre = cache_->get_sequence(s);
        Result<std::optional<CopyOp>> r = cache_->append(s, ids);
        Result<std::optional<CopyOp>> m = model_.append(s, ids);
        if (r.has_value() != m.has_value()) return mismatch(r, m);
        if (!r) return compare_error(r.error(), m.error());
        if (r.value().has_value() != m.value().has_value()) return "CopyOp presence differs";
        if (r.value()) arena_.copy(*r.value());
        return write_new_tokens(s, pre->num_tokens, op.n);
      }
    }
    const std::uint64_t first = q->num_tokens();
    const std::string salt = q->salt;
    const bool publishing = q->publishing;
    std::vector<TokenId> all = q->ids;
    const std::vector<TokenId> ids = continuation(op.m, first, op.n);
    std::optional<SequenceInfo> pre = cache_->get_sequence(s);
    Result<std::optional<CopyOp>> r = cache_->append(s, ids);
    Result<std::optional<CopyOp>> m = model_.append(s, ids);
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    if (!r) return compare_error(r.error(), m.error());
    ++cov_.ok;
    if (r.value().has_value() != m.value().has_value())
      return std::string("CopyOp presence: real ") + (r.value() ? "yes" : "no") + ", model " +
             (m.value() ? "yes" : "no");
    if (r.value()) {
      ++cov_.copies;
      arena_.copy(*r.value());
    }
    std::optional<SequenceInfo> post = cache_->get_sequence(s);
    if (!post || !pre) return "sequence vanished";
    std::vector<std::uint64_t>& e = expected_[op.seq];
    all.insert(all.end(), ids.begin(), ids.end());
    for (std::uint64_t i = first; i < first + op.n; ++i) {
      const std::uint64_t cookie = publishing ? content_cookie(salt, all, i) : ++next_cookie_;
      std::uint64_t* cell = arena_.token(*post, i);
      if (cell == nullptr) return "slot_of points past the block table";
      *cell = cookie;
      e.push_back(cookie);
    }
    return {};
  }

  // append_batch with token ids: item i appends one id, family m continued at the position the
  // item's sequence has when the item runs (computed on a copy of the model, which agrees with
  // the cache). Each item must equal the model's append(seq, {id}) in item order; then the
  // CopyOps are performed and the cookies written (content cookies while the sequence
  // publishes, so that later hits on these blocks read back exactly them).
  std::string step_append_batch_tokens(const Op& op) {
    const SeqId s{op.seq};
    const std::vector<SeqId> ids{s, SeqId{op.seq2}, s};
    std::vector<TokenId> tokens;
    {
      ReferenceModel ahead = model_;
      for (SeqId id : ids) {
        const ReferenceModel::Seq* q = ahead.find(id);
        tokens.push_back(continuation(op.m, q == nullptr ? 0 : q->num_tokens(), 1)[0]);
        (void)ahead.append(id, std::vector<TokenId>{tokens.back()});
      }
    }
    AppendBatchOutcome outcome;
    if (op.n % 7 == 6) {  // two ids for three items: rejected, nothing appended
      Result<void> r =
          cache_->append_batch(ids, std::span<const TokenId>(tokens.data(), 2), outcome);
      if (r || r.error().code() != Errc::invalid_argument)
        return "append_batch(tokens) with 3 ids and 2 tokens: wanted invalid_argument";
      if (outcome.items != 0 || !outcome.errors.empty() || !outcome.copies.empty())
        return "append_batch(tokens) rejected but left an outcome";
      ++cov_.invalid_argument;
      return {};
    }
    if (!cache_->append_batch(ids, tokens, outcome)) return "append_batch(tokens) rejected";
    if (outcome.items != ids.size()) return "append_batch(tokens): items is not seqs.size()";
    const std::vector<Result<std::optional<CopyOp>>> out = outcome.per_item();
    struct Done {
      SeqId id;
      std::uint64_t pos;  // the appended token's index in its sequence
      std::uint64_t cookie;
      std::optional<CopyOp> copy;
    };
    std::vector<Done> done;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const ReferenceModel::Seq* pre = model_.find(ids[i]);
      const std::uint64_t pos = pre == nullptr ? 0 : pre->num_tokens();
      bool appended = false;
      if (std::string e =
              compare_item("append_batch(tokens)", i, out[i],
                           model_.append(ids[i], std::vector<TokenId>{tokens[i]}), &appended);
          !e.empty())
        return e;
      if (!appended) continue;
      const ReferenceModel::Seq* q = model_.find(ids[i]);
      const bool publishing = q->token_mode && q->publishing;
      cov_.token_batch_items += publishing ? 1 : 0;
      const std::uint64_t cookie =
          publishing ? content_cookie(q->salt, q->ids, pos) : ++next_cookie_;
      done.push_back(Done{ids[i], pos, cookie, out[i].value()});
    }
    for (const Done& d : done) {
      if (d.copy) {
        ++cov_.copies;
        if (d.copy->dst == d.copy->src) return "append_batch(tokens): CopyOp onto its own source";
        arena_.copy(*d.copy);
      }
      const std::optional<SequenceInfo> info = cache_->get_sequence(d.id);
      if (!info) return "append_batch(tokens): an appended sequence is missing";
      std::vector<std::uint64_t>& e = expected_[d.id.value];
      if (e.size() != d.pos) return "harness bookkeeping out of step";
      std::uint64_t* cell = arena_.token(*info, d.pos);
      if (cell == nullptr) return "slot_of points past the block table";
      *cell = d.cookie;
      e.push_back(d.cookie);
    }
    return {};
  }

  std::string step_commit(const Op& op) {
    Result<std::size_t> r = cache_->commit(SeqId{op.seq}, op.n);
    Result<std::size_t> m = model_.commit(SeqId{op.seq}, op.n);
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    if (!r) return compare_error(r.error(), m.error());
    ++cov_.ok;
    if (r.value() != m.value())
      return "commit published " + std::to_string(r.value()) + ", model " +
             std::to_string(m.value());
    cov_.published += r.value();
    return {};
  }

  std::string step_free(const Op& op) {
    Result<void> r = cache_->free(SeqId{op.seq});
    Result<void> m = model_.free(SeqId{op.seq});
    if (std::string e = compare_void(r, m); !e.empty()) return e;
    if (r) expected_.erase(op.seq);
    return {};
  }

  std::string step_get_sequence(const Op& op) {
    const bool real = cache_->get_sequence(SeqId{op.seq}).has_value();
    const bool mod = model_.find(SeqId{op.seq}) != nullptr;
    if (real != mod) return std::string("get_sequence presence: real ") + yn(real);
    return {};  // contents are compared by check()
  }

  std::string step_sequence_ids() {
    std::vector<SeqId> ids = cache_->sequence_ids();
    std::sort(ids.begin(), ids.end());
    if (ids != model_.sequence_ids()) return "sequence_ids differ";
    return {};
  }

  std::string step_select_target() {
    std::optional<SeqId> r = cache_->select_eviction_target();
    std::optional<SeqId> m = model_.select_eviction_target();
    if (r != m) return "select_eviction_target: real " + opt_seq(r) + ", model " + opt_seq(m);
    return {};
  }

  std::string step_evict() {
    Result<SeqId> r = cache_->evict();
    Result<SeqId> m = model_.evict();
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    if (!r) return compare_error(r.error(), m.error());
    ++cov_.ok;
    ++cov_.evicted;
    if (r.value() != m.value())
      return "evict victim: real " + pkv::to_string(r.value()) + ", model " +
             pkv::to_string(m.value());
    expected_.erase(r.value().value);
    return {};
  }

  std::string step_evict_to_threshold(const Op& op) {
    Result<std::vector<SeqId>> r = cache_->evict_to_threshold(op.x);
    Result<std::vector<SeqId>> m = model_.evict_to_threshold(op.x);
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    if (!r) return compare_error(r.error(), m.error());
    ++cov_.ok;
    if (r.value() != m.value()) return "evict_to_threshold victims differ";
    for (SeqId v : r.value()) {
      ++cov_.evicted;
      expected_.erase(v.value);
    }
    return {};
  }

  std::string step_streaming(const Op& op) {
    const SeqId s{op.seq};
    Result<std::size_t> r = cache_->apply_streaming_llm(s, op.n, op.m);
    Result<std::size_t> m = model_.apply_streaming_llm(s, op.n, op.m);
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    if (!r) return compare_error(r.error(), m.error());
    ++cov_.ok;
    if (r.value() != m.value())
      return "apply_streaming_llm dropped " + std::to_string(r.value()) + ", model " +
             std::to_string(m.value());
    if (r.value() > 0) {
      ++cov_.streamed;
      std::vector<std::uint64_t>& e = expected_[op.seq];
      std::vector<std::uint64_t> kept(e.begin(), e.begin() + static_cast<std::ptrdiff_t>(op.n));
      kept.insert(kept.end(), e.end() - static_cast<std::ptrdiff_t>(op.m), e.end());
      e = std::move(kept);
    }
    return {};
  }

  std::string step_set_strategy(const Op& op) {
    const EvictionStrategy st = make_strategy(op.strategy, op.n, op.m);
    if (std::string e =
            compare_void(cache_->set_eviction_strategy(st), model_.set_eviction_strategy(st));
        !e.empty())
      return e;
    if (!(cache_->eviction_strategy() == model_.eviction_strategy()))
      return "eviction_strategy() differs";
    return {};
  }

  std::string step_display() {
    std::ostringstream os;
    os << *cache_;
    if (os.str() != model_.display())
      return "operator<< prints\n" + os.str() + "model prints\n" + model_.display();
    return {};
  }

  std::string step_copy_done(const Op& op) {
    Result<std::size_t> r = cache_->copy_done(SeqId{op.seq});
    Result<std::size_t> m = model_.copy_done(SeqId{op.seq});
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    if (!r) return compare_error(r.error(), m.error());
    ++cov_.ok;
    if (r.value() != m.value())
      return "copy_done released " + std::to_string(r.value()) + ", model " +
             std::to_string(m.value());
    cov_.copies_done += r.value();
    return {};
  }

  // ---- comparison helpers ----

  static const char* yn(bool b) { return b ? "yes" : "no"; }
  static std::string opt_seq(std::optional<SeqId> s) { return s ? pkv::to_string(*s) : "none"; }

  std::string compare_error(const Error& real, const Error& model) {
    switch (model.code()) {
      case Errc::out_of_memory:
        ++cov_.oom;
        break;
      case Errc::sequence_not_found:
        ++cov_.not_found;
        break;
      case Errc::invalid_operation:
        ++cov_.invalid_operation;
        break;
      case Errc::invalid_argument:
        ++cov_.invalid_argument;
        break;
      case Errc::block_not_found:
        break;
    }
    if (same_error(real, model)) return {};
    return "error: real \"" + real.message() + "\" (" + pkv::to_string(real.code()) +
           "), model \"" + model.message() + "\" (" + pkv::to_string(model.code()) + ")";
  }

  template <class T>
  std::string mismatch(const Result<T>& r, const Result<T>& m) {
    return std::string("outcome: real ") +
           (r ? std::string("success") : "\"" + r.error().message() + "\"") + ", model " +
           (m ? std::string("success") : "\"" + m.error().message() + "\"");
  }

  // Item i of an append_batch against the model's append at its turn: "" when they agree;
  // *appended: the item succeeded.
  std::string compare_item(const char* call, std::size_t i, const Result<std::optional<CopyOp>>& r,
                           const Result<std::optional<CopyOp>>& m, bool* appended) {
    *appended = false;
    const std::string item = std::string(call) + " item " + std::to_string(i) + ": ";
    if (r.has_value() != m.has_value()) return item + mismatch(r, m);
    if (!r) {
      const std::string e = compare_error(r.error(), m.error());
      return e.empty() ? e : item + e;
    }
    ++cov_.ok;
    if (r.value().has_value() != m.value().has_value())
      return item + "CopyOp presence differs from the model";
    *appended = true;
    return {};
  }

  std::string compare_void(const Result<void>& r, const Result<void>& m) {
    if (r.has_value() != m.has_value()) return mismatch(r, m);
    if (!r) return compare_error(r.error(), m.error());
    ++cov_.ok;
    return {};
  }

  // Writes fresh cookies for kept tokens [first, first + n) of `s` where the real cache says
  // they live, and records them as expected.
  // check_total: the call just made was the last change to `s` (not so inside append_batch).
  std::string write_new_tokens(SeqId s, std::uint64_t first, std::uint64_t n,
                               bool check_total = true) {
    std::optional<SequenceInfo> info = cache_->get_sequence(s);
    if (!info) return "sequence missing right after a successful call";
    if (check_total && info->num_tokens != first + n) return "num_tokens is not old + appended";
    if (info->num_tokens < first + n) return "num_tokens is below old + appended";
    std::vector<std::uint64_t>& e = expected_[s.value];
    if (e.size() != first) return "harness bookkeeping out of step";
    for (std::uint64_t i = first; i < first + n; ++i) {
      std::uint64_t* cell = arena_.token(*info, i);
      if (cell == nullptr) return "slot_of points past the block table";
      const std::uint64_t cookie = ++next_cookie_;
      *cell = cookie;
      e.push_back(cookie);
    }
    return {};
  }

  CacheConfig cfg_;
  std::string init_error_;
  std::unique_ptr<PagedKvCache> cache_;
  ReferenceModel model_;
  test_support::KvArena<std::uint64_t> arena_;                    // cookie per real slot
  std::map<std::uint64_t, std::vector<std::uint64_t>> expected_;  // cookies of kept tokens
  std::uint64_t next_cookie_ = 0;
  Coverage cov_;
  // Model block -> the real block last seen at the same place in a table (kept while the block
  // is reclaimable), to tell which of several duplicates a hit took.
  mutable std::unordered_map<std::uint32_t, std::uint32_t> persist_;
};

}  // namespace pkv::model

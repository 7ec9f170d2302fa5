// src/c_api/batch.cpp — the C ABI's batched calls (a decode step's append_batch, by count or by
// token ids; fork_many; free_many) and their per-thread scratch, so a step allocates nothing once
// warm. Per-item results go to the caller's arrays, which have room for every item.
#include <initializer_list>
#include <span>
#include <utility>
#include <vector>

#include "c_api/common.hpp"
#include "c_api/convert.hpp"

using namespace pkv::capi;
using pkv::SeqId;

namespace {

// Scratch of the batched calls, per thread.
struct BatchScratch {
  std::vector<SeqId> ids;
  std::vector<std::size_t> counts;
  pkv::AppendBatchOutcome outcome;
  pkv::FreeManyOutcome freed;
};
thread_local BatchScratch t_batch;

// The C sequence ids seqs[0..n) as C++ ids, in this thread's scratch.
std::span<const SeqId> seq_ids(const uint64_t* seqs, std::size_t n) {
  auto& ids = t_batch.ids;
  ids.resize(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = SeqId{seqs[i]};
  return ids;
}

// Appends the failed items to errors[*num_errors..]; the first failure's message becomes the last
// error message.
template <class ItemErrors>
void write_errors(const ItemErrors& failed, pkv_item_error* errors, size_t* num_errors) noexcept {
  for (const auto& ie : failed) errors[(*num_errors)++] = {ie.item, status_of(ie.error.code())};
  if (!failed.empty()) (void)fail(failed.front().error);
}

// The caller's per-item output arrays of an append_batch call, with room for every item.
struct ItemOutputs {
  pkv_item_copy* copies;
  size_t* num_copies;
  pkv_item_error* errors;
  size_t* num_errors;

  // The argument checks both append_batch forms begin with: the counts (then zeroed), and unless
  // the batch is empty its input arrays (`inputs`, in order) and the output arrays.
  pkv_status start(std::size_t n,
                   std::initializer_list<std::pair<const char*, const void*>> inputs) const {
    PKV_NONNULL(num_copies);
    PKV_NONNULL(num_errors);
    *num_copies = 0;
    *num_errors = 0;
    if (n == 0) return PKV_OK;
    for (const auto& [name, ptr] : inputs) {
      if (ptr == nullptr) return null_arg(name);
    }
    PKV_NONNULL(copies);
    PKV_NONNULL(errors);
    return PKV_OK;
  }
  // Copies an append_batch outcome into the arrays.
  pkv_status finish(const pkv::AppendBatchOutcome& o) const noexcept {
    for (const auto& ic : o.copies) {
      copies[(*num_copies)++] = {ic.item, {ic.copy.src.value, ic.copy.dst.value}};
    }
    write_errors(o.errors, errors, num_errors);
    return PKV_OK;
  }
};

}  // namespace

pkv_status pkv_cache_append_batch(pkv_cache* cache, const uint64_t* seqs, const size_t* num_tokens,
                                  size_t uniform_tokens, size_t n, pkv_item_copy* copies,
                                  size_t* num_copies, pkv_item_error* errors, size_t* num_errors) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    const ItemOutputs outs{copies, num_copies, errors, num_errors};
    if (pkv_status s = outs.start(n, {{"seqs", seqs}}); s != PKV_OK) return s;
    auto& b = t_batch;
    const std::span<const SeqId> ids = seq_ids(seqs, n);
    if (num_tokens != nullptr) {
      b.counts.assign(num_tokens, num_tokens + n);
      if (auto r = c.append_batch(ids, b.counts, b.outcome); !r) return fail(r.error());
    } else {
      c.append_batch(ids, uniform_tokens, b.outcome);
    }
    return outs.finish(b.outcome);
  });
}

pkv_status pkv_cache_append_batch_tokens(pkv_cache* cache, const uint64_t* seqs,
                                         const uint32_t* tokens, size_t n, pkv_item_copy* copies,
                                         size_t* num_copies, pkv_item_error* errors,
                                         size_t* num_errors) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    const ItemOutputs outs{copies, num_copies, errors, num_errors};
    if (pkv_status s = outs.start(n, {{"seqs", seqs}, {"tokens", tokens}}); s != PKV_OK) return s;
    auto& b = t_batch;
    if (auto r = c.append_batch(seq_ids(seqs, n), tokens_of(tokens, n), b.outcome); !r) {
      return fail(r.error());
    }
    return outs.finish(b.outcome);
  });
}

pkv_status pkv_cache_fork_many(pkv_cache* cache, uint64_t src, const uint64_t* dsts, size_t n) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_ARRAY(dsts, n);
    return status(c.fork_many(SeqId{src}, seq_ids(dsts, n)));
  });
}

pkv_status pkv_cache_free_many(pkv_cache* cache, const uint64_t* seqs, size_t n,
                               pkv_item_error* errors, size_t* num_errors) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_NONNULL(num_errors);
    *num_errors = 0;
    PKV_ARRAY(seqs, n);
    PKV_ARRAY(errors, n);
    auto& b = t_batch;
    c.free_many(seq_ids(seqs, n), b.freed);
    write_errors(b.freed.errors, errors, num_errors);
    return PKV_OK;
  });
}

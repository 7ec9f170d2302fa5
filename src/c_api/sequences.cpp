// src/c_api/sequences.cpp — the C ABI's calls on one sequence by token count: allocate, append,
// free, fork, truncate, pin / unpin, copy_done, StreamingLLM compaction; a sequence's snapshot
// (scalars, block table, token runs) and the list of live sequence ids.
#include "c_api/common.hpp"
#include "c_api/convert.hpp"

using namespace pkv::capi;
using pkv::SeqId;

// ---- lifetime -----------------------------------------------------------------------------------

pkv_status pkv_cache_allocate(pkv_cache* cache, uint64_t seq, size_t num_tokens) {
  return call(cache,
              [&](pkv::PagedKvCache& c) { return status(c.allocate(SeqId{seq}, num_tokens)); });
}

pkv_status pkv_cache_append(pkv_cache* cache, uint64_t seq, size_t num_tokens, pkv_copy_op* copy) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_NONNULL(copy);
    auto r = c.append(SeqId{seq}, num_tokens);
    if (!r) return fail(r.error());
    *copy = to_c(r.value());
    return PKV_OK;
  });
}

pkv_status pkv_cache_free(pkv_cache* cache, uint64_t seq) {
  return call(cache, [&](pkv::PagedKvCache& c) { return status(c.free(SeqId{seq})); });
}

pkv_status pkv_cache_fork(pkv_cache* cache, uint64_t src, uint64_t dst) {
  return call(cache, [&](pkv::PagedKvCache& c) { return status(c.fork(SeqId{src}, SeqId{dst})); });
}

pkv_status pkv_cache_truncate(pkv_cache* cache, uint64_t seq, size_t num_tokens,
                              size_t* blocks_released) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_NONNULL(blocks_released);
    return status(c.truncate(SeqId{seq}, num_tokens), blocks_released);
  });
}

// ---- pinning, copy sources, StreamingLLM --------------------------------------------------------

pkv_status pkv_cache_pin(pkv_cache* cache, uint64_t seq) {
  return call(cache, [&](pkv::PagedKvCache& c) { return status(c.pin(SeqId{seq})); });
}

pkv_status pkv_cache_unpin(pkv_cache* cache, uint64_t seq) {
  return call(cache, [&](pkv::PagedKvCache& c) { return status(c.unpin(SeqId{seq})); });
}

pkv_status pkv_cache_copy_done(pkv_cache* cache, uint64_t seq, size_t* released) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_NONNULL(released);
    return status(c.copy_done(SeqId{seq}), released);
  });
}

pkv_status pkv_cache_apply_streaming_llm(pkv_cache* cache, uint64_t seq, size_t sink_tokens,
                                         size_t window_tokens, size_t* dropped) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_NONNULL(dropped);
    return status(c.apply_streaming_llm(SeqId{seq}, sink_tokens, window_tokens), dropped);
  });
}

// ---- snapshots ----------------------------------------------------------------------------------

pkv_status pkv_cache_get_sequence(const pkv_cache* cache, uint64_t seq, pkv_sequence_info* out) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    PKV_NONNULL(out);
    auto info = c.get_sequence(SeqId{seq});
    if (!info) return fail(pkv::Error::sequence_not_found(SeqId{seq}));
    *out = {info->seq_id.value, info->num_tokens, info->block_ids.size(), info->last_access,
            info->access_count, info->priority,   info->token_runs.size()};
    return PKV_OK;
  });
}

namespace {

// One list of seq's snapshot (its `field`, each element converted by conv) into the caller's
// buffer; the NULL check of `required` comes before the lookup, the buffer's other check after.
template <class T, class Field, class Conv>
pkv_status snapshot_list(const pkv::PagedKvCache& c, uint64_t seq, const CallerBuffer<T>& buf,
                         Field pkv::SequenceInfo::*field, Conv conv) {
  if (buf.required == nullptr) return null_arg(buf.required_name);
  auto info = c.get_sequence(SeqId{seq});
  if (!info) return fail(pkv::Error::sequence_not_found(SeqId{seq}));
  return buf.fill((*info).*field, conv);
}

}  // namespace

pkv_status pkv_cache_block_table(const pkv_cache* cache, uint64_t seq, uint32_t* out,
                                 size_t capacity, size_t* required) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    return snapshot_list(c, seq, CallerBuffer<uint32_t>{out, capacity, required},
                         &pkv::SequenceInfo::block_ids, [](pkv::BlockId b) { return b.value; });
  });
}

pkv_status pkv_cache_token_runs(const pkv_cache* cache, uint64_t seq, pkv_token_run* out,
                                size_t capacity, size_t* required) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    return snapshot_list(c, seq, CallerBuffer<pkv_token_run>{out, capacity, required},
                         &pkv::SequenceInfo::token_runs, [](const pkv::TokenRun& r) {
                           return pkv_token_run{r.first_token, r.slot, r.length};
                         });
  });
}

pkv_status pkv_cache_sequence_ids(const pkv_cache* cache, uint64_t* out, size_t capacity,
                                  size_t* required) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    return CallerBuffer<uint64_t>{out, capacity, required}.fill(c.sequence_ids(),
                                                                [](SeqId s) { return s.value; });
  });
}

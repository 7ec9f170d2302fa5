// stress/ops_sequences.cpp — the owner's calls on its own sequences: allocate, append (with the
// KV data written and every CopyOp performed), blind appends and append_batch, fork (local and
// cross-thread), free, StreamingLLM, and the calls of issue 13: fork_many (beam expansion),
// free_many (beam losers, with a repeated and an unknown id), truncate (rejected drafts). Each
// checks what the calling thread can know.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <shared_mutex>

#include "stress.hpp"

namespace pkv::stress {

bool Stress::blind_appended(Worker& w, Tracked& tr, std::uint64_t n,
                            const pkv::Result<std::optional<CopyOp>>& r, const char* what) {
  if (!r) {
    if (r.error().code() == Errc::sequence_not_found) {
      expect_not_found(r.error(), tr.id, what);
      return false;
    }
    if (r.error().code() != Errc::out_of_memory)
      violation(std::string(what) + ": unexpected \"" + r.error().message() + "\"");
    ++w.stats.oom;
    w.pressure = true;
    return true;
  }
  ++w.stats.blind;
  if (r.value()) ++w.stats.copies;
  if (hold_ && r.value()) {
    ++tr.pending;
    if (w.rng() % 2 == 0) {  // or leave them to a later copy_done, free or evict
      auto d = cache_->copy_done(SeqId{tr.id});
      if (d && d.value() != tr.pending) violation("copy_done released a wrong count");
      tr.pending = 0;
    }
  }
  tr.tokens += n;
  tr.tainted = true;
  tr.keys.clear();
  return true;
}

void Stress::op_allocate(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.size() >= opt_.live) return;
  ++w.stats.ops;
  const std::uint64_t n = std::uniform_int_distribution<std::uint64_t>(0, 4 * bs())(w.rng);
  const std::uint64_t id = w.next_id++;
  const auto g = test_support::share_if(gate_, !hold_);
  auto r = cache_->allocate(SeqId{id}, n);
  if (!r) {
    ++w.stats.oom;
    w.pressure = true;
    expect_oom(r.error(), blocks_for(n), "allocate");
    return;
  }
  ++w.stats.allocs;
  w.ledger.created.push_back(id);
  // Pin mode: keep it from being evicted while its KV data is written.
  if (hold_ && !pin(w, id)) return;  // evicted at once
  Pinned pinned(*this, hold_ ? id : 0);
  auto info = cache_->get_sequence(SeqId{id});
  if (!info) return violation("allocate(" + s(id) + ") succeeded but get_sequence finds nothing");
  if (info->num_tokens != n || info->block_ids.size() != blocks_for(n) || info->access_count != 1 ||
      !runs_ok(*info) || (n > 0 && (info->token_runs.size() != 1 || info->token_runs[0].slot != 0)))
    return violation("allocate(" + s(id) + ", " + std::to_string(n) + "): wrong SequenceInfo");
  Tracked tr;
  tr.id = id;
  tr.lineage = id;
  tr.tokens = n;
  write_tokens(*info, tr, 0, n);
  w.live.push_back(std::move(tr));
}

// A decode step over some of this worker's sequences (a duplicate now and then) through
// append_batch, blind like a blind append (no data written, eviction may race with it): every
// item must be what append() would have returned at its turn, and a sequence reported missing by
// one item must stay missing for the later items of the same batch.
void Stress::op_append_batch(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  std::vector<std::size_t> idx;
  std::vector<SeqId> ids;
  for (std::size_t k = 1 + w.rng() % 4; k > 0; --k) {
    idx.push_back(w.rng() % w.live.size());
    ids.push_back(SeqId{w.live[idx.back()].id});
  }
  const std::uint64_t n = w.rng() % 3;
  pkv::AppendBatchOutcome outcome;
  cache_->append_batch(ids, n, outcome);
  if (outcome.items != ids.size()) return violation("append_batch: items is not seqs.size()");
  const std::vector<pkv::Result<std::optional<CopyOp>>> out = outcome.per_item();
  std::vector<bool> gone(w.live.size(), false);
  for (std::size_t j = 0; j < ids.size(); ++j) {
    Tracked& tr = w.live[idx[j]];
    if (gone[idx[j]] && out[j])
      violation("append_batch: " + s(tr.id) + " reported missing, then appended to");
    if (!blind_appended(w, tr, n, out[j], "append_batch item")) gone[idx[j]] = true;
  }
  for (std::size_t i = gone.size(); i-- > 0;)  // from the back: forget() moves the last entry
    if (gone[i]) forget(w, i, true);
}

void Stress::op_append(unsigned t, bool blind) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  Tracked& tr = w.live[idx];
  const std::uint64_t n =
      w.rng() % 4 == 0 ? std::uniform_int_distribution<std::uint64_t>(0, 3 * bs())(w.rng) : 1;
  if (blind) {
    if (!blind_appended(w, tr, n, cache_->append(SeqId{tr.id}, n), "blind append"))
      forget(w, idx, true);
    return;
  }

  const SeqId seq{tr.id};
  // No eviction of this sequence from here on: the gate (exclusive for evictors) or a pin.
  const auto g = test_support::share_if(gate_, !hold_);
  if (hold_ && !pin(w, tr.id)) return forget(w, idx, false);
  Pinned pinned(*this, hold_ ? tr.id : 0);
  if (hold_ && w.rng() % 8 == 0) {  // pins nest
    if (!cache_->pin(seq) || !cache_->unpin(seq)) violation("nested pin of " + s(tr.id));
  }
  std::optional<SequenceInfo> pre = cache_->get_sequence(seq);
  if (!pre) {
    if (hold_) return violation("pinned " + s(tr.id) + " vanished");
    return forget(w, idx, true);  // evicted before we took the gate
  }
  if (pre->num_tokens != tr.tokens)
    return violation(s(tr.id) + ": num_tokens " + std::to_string(pre->num_tokens) +
                     ", its owner expects " + std::to_string(tr.tokens));
  const std::uint64_t old_nb = pre->block_ids.size();
  const std::uint64_t next =
      pre->token_runs.empty() ? 0 : pre->token_runs.back().slot + pre->token_runs.back().length;
  const std::uint64_t room = old_nb * bs() - next;
  // Only forks add references, and forks of this sequence need our mutex: if the last block has
  // one holder now, it keeps one. Gate mode: if it has several and all are ours (the lineage was
  // never exported), none can go away either (we hold our mutex, eviction is shut out): the count
  // is exact and the copy source stays alive. If another thread holds a member of the lineage, it
  // may free it at any time: pin the block with a private fork so the copy source stays alive.
  // Pin mode: the other holders may be evicted meanwhile, so a shared block may or may not be
  // copied; the sequence itself holds the copy source until copy_done.
  const bool shared = room > 0 && n > 0 && cache_->pool().ref_count(pre->block_ids.back()) > 1;
  std::uint64_t pin_fork = 0;
  if (!hold_ && shared && tr.exported) {
    pin_fork = w.next_id++;
    if (auto f = cache_->fork(seq, SeqId{pin_fork}); !f)
      return violation("pin fork(" + s(tr.id) + ", " + s(pin_fork) +
                       ") failed: " + f.error().message());
    w.ledger.created.push_back(pin_fork);
    ++w.ledger.forks;
    ++w.stats.pin_forks;
  }
  auto free_pin_fork = [&] {
    if (pin_fork == 0) return;
    if (auto f = cache_->free(SeqId{pin_fork}); !f)
      violation("freeing pin " + s(pin_fork) + " failed: " + f.error().message());
    w.ledger.freed.push_back(pin_fork);
  };
  const std::uint64_t beyond = n > room ? n - room : 0;
  const std::uint64_t need = blocks_for(beyond) + (shared ? 1 : 0);
  auto r = cache_->append(seq, n);
  if (!r) {
    ++w.stats.oom;
    w.pressure = true;
    // Pin mode: the block may have stopped being shared, then one block fewer was asked for.
    if (!(hold_ && shared && r.error().code() == Errc::out_of_memory &&
          r.error().message().rfind("Out of memory: requested " + std::to_string(need - 1) + " ",
                                    0) == 0))
      expect_oom(r.error(), need, "append");
    free_pin_fork();
    return;
  }
  ++w.stats.appends;
  const std::uint64_t old_tokens = tr.tokens;
  tr.tokens += n;
  // After a violation the sequence's data is no longer tracked (one report, not a cascade).
  auto fail = [&](const std::string& what) {
    free_pin_fork();
    tr.tainted = true;
    tr.keys.clear();
    violation("append(" + s(tr.id) + ", " + std::to_string(n) + "): " + what);
  };
  const std::optional<CopyOp>& copy = r.value();
  std::optional<SequenceInfo> post = cache_->get_sequence(seq);
  if (!post) return fail("succeeded but the sequence is gone");
  if (copy.has_value() != shared && !(hold_ && shared))
    return fail(std::string("CopyOp ") + (copy ? "returned" : "missing") + " (room " +
                std::to_string(room) + ", last block " + (shared ? "shared" : "private") + ")");
  if (post->num_tokens != tr.tokens || post->block_ids.size() != old_nb + blocks_for(beyond) ||
      !runs_ok(*post))
    return fail("wrong SequenceInfo afterwards");
  for (std::uint64_t b = 0; b + 1 < old_nb; ++b)
    if (post->block_ids[b] != pre->block_ids[b]) return fail("changed a full block");
  if (copy) {
    ++w.stats.copies;
    if (copy->src != pre->block_ids.back() || copy->dst != post->block_ids[old_nb - 1] ||
        copy->dst == copy->src)
      return fail("CopyOp does not name the old and the new last block");
    // Copy the slots this sequence had filled (its tokens), not the whole block: once this
    // sequence let go of the source, another holder left alone with it may append into its free
    // slots (append's contract), and those are not ours to read.
    const std::uint64_t fill = next - (old_nb - 1) * bs();
    arena_.copy(*copy, fill);
    if (hold_) {
      auto d = cache_->copy_done(seq);
      if (!d || d.value() != tr.pending + 1)
        return fail("copy_done did not release exactly the pending copy sources");
      tr.pending = 0;
    }
  } else if (old_nb > 0 && post->block_ids[old_nb - 1] != pre->block_ids.back()) {
    return fail("moved its last block without a CopyOp");
  }
  free_pin_fork();
  if (!tr.tainted) write_tokens(*post, tr, old_tokens, n);
}

void Stress::op_fork(unsigned t, bool cross) {
  Worker& w = workers_[t];
  Tracked copy;
  const std::uint64_t dst = [&] {
    std::lock_guard<std::mutex> own(w.mu);
    return w.live.size() >= opt_.live ? 0 : w.next_id++;
  }();
  if (dst == 0) return;
  unsigned owner = t;
  if (cross && opt_.threads > 1) owner = (t + 1 + w.rng() % (opt_.threads - 1)) % opt_.threads;
  {
    Worker& o = workers_[owner];
    std::lock_guard<std::mutex> lk(o.mu);  // the source's owner cannot change it meanwhile
    if (o.live.empty()) return;
    ++w.stats.ops;
    const std::size_t idx = w.rng() % o.live.size();
    Tracked& src = o.live[idx];
    auto r = cache_->fork(SeqId{src.id}, SeqId{dst});
    if (!r) {
      expect_not_found(r.error(), src.id, "fork");
      if (owner == t) forget(o, idx, true);
      return;
    }
    w.ledger.created.push_back(dst);
    ++w.ledger.forks;
    ++w.stats.forks;
    if (owner != t) ++w.stats.cross_forks;
    if (owner != t) {
      // Blocks of this lineage are now held by two threads.
      for (Tracked& m : o.live)
        if (m.lineage == src.lineage) m.exported = true;
    }
    copy = src;
    copy.id = dst;
    copy.pending = 0;
    if (owner == t) {
      // A local fork joins the live list before the mutex is released: otherwise another
      // thread's cross fork of the lineage could mark the members exported in between and miss
      // this one (it would then append without the pin fork that keeps its copy source intact).
      w.live.push_back(std::move(copy));
      return;
    }
  }
  std::lock_guard<std::mutex> own(w.mu);
  w.live.push_back(std::move(copy));
}

void Stress::op_free(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  const std::uint64_t id = w.live[idx].id;
  auto r = cache_->free(SeqId{id});
  if (!r) {
    expect_not_found(r.error(), id, "free");
    return forget(w, idx, true);
  }
  ++w.stats.frees;
  w.ledger.freed.push_back(id);
  if (cache_->get_sequence(SeqId{id})) violation("free(" + s(id) + ") left the sequence visible");
  forget(w, idx, false);
}

void Stress::op_streaming(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  Tracked& tr = w.live[idx];
  const std::uint64_t sink = w.rng() % (bs() + 2);
  const std::uint64_t window = w.rng() % (2 * bs() + 1) + (sink == 0 ? 1 : 0);
  auto r = cache_->apply_streaming_llm(SeqId{tr.id}, sink, window);
  if (!r) {
    expect_not_found(r.error(), tr.id, "apply_streaming_llm");
    return forget(w, idx, true);
  }
  const std::uint64_t keep = sink + window;
  const std::uint64_t want = tr.tokens > keep ? tr.tokens - keep : 0;
  if (r.value() != want)
    return violation("apply_streaming_llm(" + s(tr.id) + ") dropped " + std::to_string(r.value()) +
                     ", expected " + std::to_string(want));
  if (want == 0) return;
  ++w.stats.streamed;
  if (!tr.tainted) {
    std::vector<std::uint64_t> kept(tr.keys.begin(),
                                    tr.keys.begin() + static_cast<std::ptrdiff_t>(sink));
    kept.insert(kept.end(), tr.keys.end() - static_cast<std::ptrdiff_t>(window), tr.keys.end());
    tr.keys = std::move(kept);
  }
  tr.tokens = keep;
}

// Beam expansion: 1..3 children of one of this worker's sequences in one call. Every destination
// is fresh, so the only possible error is sequence_not_found (the source was evicted); a
// repeated destination and a source among the destinations must be rejected and change nothing.
void Stress::op_fork_many(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty() || w.live.size() + 3 > opt_.live) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  const Tracked src = w.live[idx];
  std::vector<SeqId> dsts;
  for (std::size_t k = 1 + w.rng() % 3; k > 0; --k) dsts.push_back(SeqId{w.next_id++});
  if (w.rng() % 16 == 0) {  // bad input: changes nothing, whatever else happens
    std::vector<SeqId> bad = dsts;
    const bool self = w.rng() % 2 == 0;
    bad.push_back(self ? SeqId{src.id} : bad.front());
    auto r = cache_->fork_many(SeqId{src.id}, bad);
    const Errc want = self ? Errc::invalid_operation : Errc::invalid_argument;
    if (r || r.error().code() != want)
      violation("fork_many(" + s(src.id) + ") with a " + (self ? "self" : "repeated") +
                " destination: wanted " + pkv::to_string(want));
    for (SeqId d : dsts)
      if (cache_->get_sequence(d)) violation("a rejected fork_many created " + s(d.value));
  }
  auto r = cache_->fork_many(SeqId{src.id}, dsts);
  if (!r) {
    expect_not_found(r.error(), src.id, "fork_many");
    return forget(w, idx, true);
  }
  ++w.stats.fork_manys;
  for (SeqId d : dsts) {
    w.ledger.created.push_back(d.value);
    ++w.ledger.forks;
    ++w.stats.forks;
    Tracked copy = src;
    copy.id = d.value;
    copy.pending = 0;
    w.live.push_back(std::move(copy));
  }
}

// Beam losers / a finished batch: 1..4 of this worker's sequences (maybe one twice) and now and
// then an id that never existed, in one call. Each item must be what free() returns at its turn:
// an unknown id, a repeat of an id freed earlier in the call and a sequence evicted meanwhile fail
// with sequence_not_found; every other item is freed.
void Stress::op_free_many(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  std::vector<SeqId> ids;
  std::vector<std::size_t> idx;  // index into w.live, or SIZE_MAX for the unknown id
  for (std::size_t k = 1 + w.rng() % 4; k > 0; --k) {
    idx.push_back(w.rng() % w.live.size());
    ids.push_back(SeqId{w.live[idx.back()].id});
  }
  if (w.rng() % 4 == 0) {
    // Worker ids are (t + 1) << 32 | n with n counted up from 0: bit 31 is never reached.
    const std::size_t at = w.rng() % (ids.size() + 1);
    ids.insert(ids.begin() + static_cast<std::ptrdiff_t>(at),
               SeqId{w.next_id | (std::uint64_t{1} << 31)});
    idx.insert(idx.begin() + static_cast<std::ptrdiff_t>(at), SIZE_MAX);
  }
  pkv::FreeManyOutcome out;
  cache_->free_many(ids, out);
  if (out.items != ids.size()) return violation("free_many: items is not seqs.size()");
  for (std::size_t k = 1; k < out.errors.size(); ++k)
    if (out.errors[k].item <= out.errors[k - 1].item)
      return violation("free_many: errors not in ascending item order");
  std::vector<bool> seen(w.live.size(), false), gone(w.live.size(), false);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const pkv::Result<void> r = out.item(i);
    if (r) {
      if (idx[i] == SIZE_MAX || seen[idx[i]]) {
        violation("free_many freed " + s(ids[i].value) +
                  (idx[i] == SIZE_MAX ? ", which never existed" : " twice"));
      } else {
        ++w.stats.frees;
        w.ledger.freed.push_back(ids[i].value);
        if (cache_->get_sequence(ids[i]))
          violation("free_many(" + s(ids[i].value) + ") left the sequence visible");
      }
    } else {
      expect_not_found(r.error(), ids[i].value, "free_many item");
      if (idx[i] != SIZE_MAX && !seen[idx[i]]) {  // evicted before the call
        w.ledger.vanished.push_back(ids[i].value);
        ++w.stats.vanished;
      }
    }
    if (idx[i] != SIZE_MAX) seen[idx[i]] = gone[idx[i]] = true;
  }
  ++w.stats.free_manys;
  for (std::size_t i = gone.size(); i-- > 0;)  // from the back: forget() moves the last entry
    if (gone[i]) forget(w, i, false);
}

// Rejected drafts: drops the last n tokens of one of this worker's sequences (now and then more
// than it has: invalid_argument, nothing changes). The released count must be the blocks past
// the new end of the last run, the kept blocks must be the same blocks, recency must stay; the
// kept tokens' KV data stays checked (the next append into a kept shared block must copy it,
// which op_append checks through the reference count).
void Stress::op_truncate(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);  // no fork of ours changes the table meanwhile
  if (w.live.empty()) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  Tracked& tr = w.live[idx];
  const SeqId seq{tr.id};
  const bool too_many = w.rng() % 16 == 0;
  const std::uint64_t n = too_many ? tr.tokens + 1 + w.rng() % 3
                                   : std::min<std::uint64_t>(tr.tokens, w.rng() % (2 * bs() + 1));
  std::optional<SequenceInfo> pre = cache_->get_sequence(seq);
  auto r = cache_->truncate(seq, n);
  if (!r) {
    if (r.error().code() == Errc::sequence_not_found) {
      expect_not_found(r.error(), tr.id, "truncate");
      return forget(w, idx, true);
    }
    if (!too_many || r.error().code() != Errc::invalid_argument)
      violation("truncate(" + s(tr.id) + ", " + std::to_string(n) + "): unexpected \"" +
                r.error().message() + "\"");
    return;
  }
  if (too_many) return violation("truncate(" + s(tr.id) + ") beyond its length succeeded");
  ++w.stats.truncates;
  if (!pre) return violation("truncate succeeded on a sequence get_sequence did not find");
  // The new end: cut n tokens from the runs, newest first.
  std::uint64_t left = n, end = 0;
  for (std::size_t k = pre->token_runs.size(); k-- > 0;) {
    const pkv::TokenRun& run = pre->token_runs[k];
    if (left >= run.length) {
      left -= run.length;
      continue;
    }
    end = run.slot + run.length - left;
    break;
  }
  const std::uint64_t keep = blocks_for(end);
  if (r.value() != pre->block_ids.size() - keep)
    return violation("truncate(" + s(tr.id) + ", " + std::to_string(n) + ") released " +
                     std::to_string(r.value()) + " blocks, expected " +
                     std::to_string(pre->block_ids.size() - keep));
  tr.tokens -= n;
  if (!tr.tainted) tr.keys.resize(tr.tokens);
  std::optional<SequenceInfo> post = cache_->get_sequence(seq);
  if (!post) return forget(w, idx, true);  // evicted right after
  if (post->num_tokens != tr.tokens || post->block_ids.size() != keep || !runs_ok(*post) ||
      post->last_access != pre->last_access || post->access_count != pre->access_count ||
      !std::equal(post->block_ids.begin(), post->block_ids.end(), pre->block_ids.begin()))
    violation("truncate(" + s(tr.id) + ", " + std::to_string(n) +
              "): wrong SequenceInfo afterwards (moved blocks or counted as an access)");
}

// Prefix caching under contention: a prompt from a few shared system prompts, questions and
// salts, sometimes a second turn that repeats a first turn's answer (conversation_prompt),
// allocated with its token ids. The cached tokens it reports are not written: each must read back
// the cookie derived from (salt, token ids up to it) that the block's publisher wrote before
// committing (a wrong hit, e.g. a reclaimed block still findable, reads another prompt's or
// another sequence's cookie). The other tokens get their content cookies; then up to
// kAnswerTokens answer tokens are decoded with token ids (append, or a one-item append_batch),
// each step's cookies written before the next step commits them; then the sequence is committed
// (now and then without its last decode step) and freed: its blocks turn reclaimable, to be hit
// or reclaimed by the other threads. KV is written under the gate (shared) or a pin, as
// op_allocate does.
//
// match_prefix has no effect and promises no lower bound under concurrency (a lookup racing with
// a publish or reclaim may miss, and what it saw may be reclaimed before an allocate): it is
// checked for what always holds, a multiple of block_size, at most prompt.size() - 1 (rounded
// down to whole blocks), nothing under a salt no one allocates with, 0 for no tokens.
void Stress::op_prefix(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  ++w.stats.ops;
  std::string salt;
  const std::vector<TokenId> prompt = conversation_prompt(w.rng, &salt);
  const std::uint64_t id = w.next_id++;
  {
    const std::size_t matched = cache_->match_prefix(prompt, salt);
    ++w.stats.prefix_matches;
    w.stats.prefix_matched_tokens += matched;
    if (matched % bs() != 0 || matched > (prompt.size() - 1) / bs() * bs())
      violation("match_prefix of a " + std::to_string(prompt.size()) + "-token prompt says " +
                std::to_string(matched) + " tokens are cached");
    if (w.rng() % 8 == 0 && cache_->match_prefix(prompt, kUnusedSalt) != 0)
      violation("match_prefix found cached blocks under a salt no sequence was allocated with");
    if (w.rng() % 32 == 0 && cache_->match_prefix({}, salt) != 0)
      violation("match_prefix of no tokens is not 0");
  }
  const auto g = test_support::share_if(gate_, !hold_);
  auto r = cache_->allocate(SeqId{id}, prompt, salt);
  if (!r) {
    ++w.stats.oom;
    w.pressure = true;
    if (r.error().code() != Errc::out_of_memory)
      violation("allocate(prompt): unexpected \"" + r.error().message() + "\"");
    return;
  }
  ++w.stats.prefix_allocs;
  w.ledger.created.push_back(id);
  const std::uint64_t cached = r.value();
  if (cached % bs() != 0 || cached >= prompt.size())
    violation("allocate(prompt) reported " + std::to_string(cached) + " cached tokens of " +
              std::to_string(prompt.size()));
  if (hold_ && !pin(w, id)) return;  // evicted at once
  {
    Pinned pinned(*this, hold_ ? id : 0);
    auto info = cache_->get_sequence(SeqId{id});
    if (!info || info->num_tokens != prompt.size() || !runs_ok(*info))
      return violation("allocate(" + s(id) + ", prompt): wrong SequenceInfo");
    for (std::uint64_t i = 0; i < prompt.size(); ++i) {
      const Slot want = prefix_cookie(salt, prompt, i);
      Slot* cell = arena_.token(*info, i);
      if (cell == nullptr) return violation(s(id) + ": prompt token without a slot");
      if (i < cached) {
        ++w.stats.prefix_hit_tokens;
        if (prompt[i] >= kFirstAnswerToken) ++w.stats.prefix_hit_decoded;  // a decode step wrote it
        if (cell->k != want.k || cell->v != want.v)
          violation("prefix hit of " + s(id) + " (salt \"" + salt + "\"): token " +
                    std::to_string(i) + " of " + std::to_string(cached) +
                    " cached reads back another token's KV");
      } else {
        *cell = want;
      }
    }
    std::vector<TokenId> all = prompt;
    for (std::uint64_t j = 0, answer = w.rng() % (kAnswerTokens + 1); j < answer;) {
      std::vector<TokenId> step;
      for (std::uint64_t k = std::min<std::uint64_t>(answer - j, 1 + w.rng() % 2); k > 0; --k)
        step.push_back(answer_token(prompt, j + step.size()));
      pkv::Result<std::optional<CopyOp>> a = std::optional<CopyOp>{};
      if (step.size() == 1 && w.rng() % 3 == 0) {
        const SeqId ids[] = {SeqId{id}};
        pkv::AppendBatchOutcome out;
        if (!cache_->append_batch(ids, step, out) || out.items != 1)
          return violation("append_batch(" + s(id) + ", one token id) rejected its spans");
        a = out.item(0);
      } else {
        a = cache_->append(SeqId{id}, step);
      }
      if (!a) {
        if (a.error().code() != Errc::out_of_memory)
          return violation("append(" + s(id) + ", token ids): unexpected \"" + a.error().message() +
                           "\"");
        ++w.stats.oom;
        w.pressure = true;
        break;
      }
      // Its last block is private and not findable (a partly filled block is never published;
      // nothing forks this sequence): there is nothing to copy.
      if (a.value()) return violation("append(" + s(id) + ", token ids) returned a CopyOp");
      ++w.stats.prefix_appends;
      const std::size_t first = all.size();
      all.insert(all.end(), step.begin(), step.end());
      const std::optional<SequenceInfo> post = cache_->get_sequence(SeqId{id});
      if (!post || post->num_tokens != all.size() ||
          post->block_ids.size() != blocks_for(all.size()) || !runs_ok(*post))
        return violation("append(" + s(id) + ", token ids): wrong SequenceInfo afterwards");
      for (std::size_t i = first; i < all.size(); ++i) {
        Slot* cell = arena_.token(*post, i);
        if (cell == nullptr) return violation(s(id) + ": decoded token without a slot");
        *cell = prefix_cookie(salt, all, i);
      }
      j += step.size();
    }
    auto c = cache_->commit(SeqId{id}, w.rng() % 4 == 0 ? prompt.size() : all.size());
    if (!c) {
      expect_not_found(c.error(), id, "commit");  // (pin mode: cannot happen while pinned)
      w.ledger.vanished.push_back(id);
      ++w.stats.vanished;
      return;
    }
  }
  auto f = cache_->free(SeqId{id});
  if (!f) {
    expect_not_found(f.error(), id, "free(prompt)");
    w.ledger.vanished.push_back(id);
    ++w.stats.vanished;
    return;
  }
  w.ledger.freed.push_back(id);
}

}  // namespace pkv::stress

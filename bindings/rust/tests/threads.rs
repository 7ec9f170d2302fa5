//! One PagedKvCache shared by scoped threads through `&cache` (every method takes &self).
use pkv::{PagedKvCache, SeqId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn scoped_threads_share_one_cache_and_accounting_is_exact() {
    const THREADS: u64 = 6;
    const SEQS: u64 = 24;
    const STEPS: usize = 400;
    let cache = PagedKvCache::new(16384, 16, 8, 64);
    let forks = AtomicUsize::new(0);
    let live: Vec<HashMap<SeqId, usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let cache = &cache;
                let forks = &forks;
                s.spawn(move || {
                    let mut next = (t + 1) << 40;
                    let mut tokens: HashMap<SeqId, usize> = HashMap::new();
                    let mut order: Vec<SeqId> = Vec::new();
                    for i in 0..SEQS {
                        let n = 1 + (i as usize * 7) % 50;
                        cache.allocate(SeqId(next), n).unwrap();
                        tokens.insert(SeqId(next), n);
                        order.push(SeqId(next));
                        next += 1;
                    }
                    for step in 0..STEPS {
                        let out = cache.append_batch(&order, 1);
                        assert!(out.all_appended(), "{:?}", out.first_error);
                        for v in tokens.values_mut() {
                            *v += 1;
                        }
                        let k = step % order.len();
                        let victim = order[k];
                        if step % 3 == 0 {
                            let child = SeqId(next);
                            next += 1;
                            cache.fork(victim, child).unwrap();
                            cache.append(child, 2).unwrap();
                            tokens.insert(child, tokens[&victim] + 2);
                            order.push(child);
                            forks.fetch_add(1, Ordering::Relaxed);
                        }
                        if step % 5 == 0 {
                            cache.free(victim).unwrap();
                            tokens.remove(&victim);
                            order.swap_remove(k);
                            let fresh = SeqId(next);
                            next += 1;
                            cache.allocate(fresh, 33).unwrap();
                            tokens.insert(fresh, 33);
                            order.push(fresh);
                        }
                        if step % 7 == 0 {
                            let s = order[step % order.len()];
                            assert_eq!(cache.get_sequence(s).unwrap().num_tokens, tokens[&s]);
                            let _ = cache.stats();
                            let _ = cache.free_block_count();
                        }
                    }
                    tokens
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: HashMap<SeqId, usize> = live.into_iter().flatten().collect();
    assert_eq!(cache.num_sequences(), all.len());
    let mut distinct = HashSet::new();
    for (s, n) in &all {
        let info = cache.get_sequence(*s).unwrap();
        assert_eq!(info.num_tokens, *n);
        assert_eq!(info.block_ids.len(), (n + 15) / 16);
        distinct.extend(info.block_ids);
    }
    assert_eq!(cache.used_block_count(), distinct.len());
    let st = cache.stats();
    assert_eq!(
        (st.total_allocations - st.total_frees) as usize,
        distinct.len()
    );
    assert_eq!(st.total_forks as usize, forks.load(Ordering::Relaxed));
    cache.validate_unsafe().unwrap();
    for s in all.keys() {
        cache.free(*s).unwrap();
    }
    assert_eq!(cache.free_block_count(), cache.total_blocks());
    cache.validate_unsafe().unwrap();
}

#[test]
fn concurrent_evict_never_frees_twice() {
    let cache = PagedKvCache::new(4096, 16, 1, 1);
    for i in 0..2000 {
        cache.allocate(SeqId(i), 16).unwrap();
    }
    let victims: Vec<Vec<SeqId>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while let Ok(v) = cache.evict() {
                        mine.push(v);
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<SeqId> = victims.into_iter().flatten().collect();
    assert_eq!(all.len(), 2000);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2000, "a sequence was evicted twice");
    assert_eq!(cache.free_block_count(), 4096);
    assert_eq!(cache.stats().total_evictions, 2000);
}

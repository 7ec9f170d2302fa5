//! The seed's documented behaviour (../shared/seed/README.md), its fixed defects, and bad input.
use pkv::{
    BlockPool, CacheOptions, CopyOp, ErrorKind, EvictionStrategy, PagedKvCache, PagedKvError,
    SeqId, TokenRun,
};

fn cache(blocks: usize, block_size: usize) -> PagedKvCache {
    PagedKvCache::new(blocks, block_size, 32, 128)
}

#[test]
fn defaults_and_memory_sizes() {
    let c = cache(10, 16);
    assert_eq!(c.block_size(), 16);
    assert_eq!(c.total_blocks(), 10);
    assert_eq!(c.block_memory_bytes(), 262_144);
    assert_eq!(c.total_memory_bytes(), 2_621_440);
    assert_eq!(c.eviction_strategy(), EvictionStrategy::LRU);
    assert!((c.eviction_threshold() - 0.9).abs() < 1e-12);
    assert_eq!(c.free_block_count(), 10);
    assert_eq!(c.utilization(), 0.0);
    assert!(!c.needs_eviction());
}

#[test]
fn allocate_rounds_up_all_or_nothing() {
    let c = cache(10, 16);
    c.allocate(SeqId(1), 40).unwrap();
    assert_eq!(c.used_block_count(), 3);
    assert_eq!(c.used_memory_bytes(), 3 * 262_144);
    let info = c.get_sequence(SeqId(1)).unwrap();
    assert_eq!(
        (info.seq_id, info.num_tokens, info.num_blocks()),
        (SeqId(1), 40, 3)
    );
    assert_eq!(info.access_count, 1);
    assert_eq!(
        c.allocate(SeqId(1), 1),
        Err(PagedKvError::InvalidOperation(
            "Sequence S1 already exists".into()
        ))
    );
    let e = c.allocate(SeqId(2), 1000).unwrap_err();
    assert_eq!(
        e,
        PagedKvError::OutOfMemory {
            requested: 63,
            available: 7
        }
    );
    assert_eq!(
        e.to_string(),
        "Out of memory: requested 63 blocks, 7 available"
    );
    assert_eq!(c.used_block_count(), 3);
    assert!(c.get_sequence(SeqId(2)).is_none());
}

#[test]
fn append_takes_blocks_only_at_a_boundary() {
    let c = cache(10, 16);
    c.allocate(SeqId(1), 10).unwrap();
    assert_eq!(c.append(SeqId(1), 6).unwrap(), None);
    assert_eq!(c.used_block_count(), 1);
    assert_eq!(c.append(SeqId(1), 1).unwrap(), None);
    assert_eq!(c.used_block_count(), 2);
    assert_eq!(c.get_sequence(SeqId(1)).unwrap().num_tokens, 17);
    assert_eq!(
        c.append(SeqId(9), 1),
        Err(PagedKvError::SequenceNotFound(SeqId(9)))
    );
    assert_eq!(
        c.append(SeqId(9), 1).unwrap_err().to_string(),
        "Sequence not found: S9"
    );
}

#[test]
fn fork_shares_and_free_drops_references() {
    let c = cache(10, 16);
    c.allocate(SeqId(1), 32).unwrap();
    c.fork(SeqId(1), SeqId(2)).unwrap();
    assert_eq!(c.used_block_count(), 2);
    assert_eq!(
        c.get_sequence(SeqId(1)).unwrap().block_ids,
        c.get_sequence(SeqId(2)).unwrap().block_ids
    );
    let s = c.stats();
    assert_eq!((s.total_allocations, s.total_forks), (2, 1));
    assert_eq!(
        c.fork(SeqId(1), SeqId(2)).unwrap_err().to_string(),
        "Invalid operation: Destination sequence S2 already exists"
    );
    assert_eq!(
        c.fork(SeqId(1), SeqId(1)).unwrap_err().to_string(),
        "Invalid operation: Cannot fork sequence S1 onto itself"
    );
    c.free(SeqId(1)).unwrap();
    assert_eq!(c.used_block_count(), 2);
    c.free(SeqId(2)).unwrap();
    assert_eq!(c.free_block_count(), 10);
    assert_eq!(
        c.free(SeqId(2)),
        Err(PagedKvError::SequenceNotFound(SeqId(2)))
    );
    let s = c.stats();
    assert_eq!((s.total_frees, s.peak_blocks_used), (2, 2));
}

#[test]
fn display_is_the_seeds() {
    let c = cache(10, 16);
    c.allocate(SeqId(1), 40).unwrap();
    assert_eq!(
        c.to_string(),
        "PagedKvCache\n  Strategy: LRU (block_size=16)\n  Blocks: 3/10 (30.0% used)\n  \
         Memory: 0.79 MB / 2.62 MB\n  Sequences: 1 active\n  \
         Stats: allocs=3, frees=0, evictions=0, forks=0\n"
    );
    assert_eq!(
        EvictionStrategy::StreamingLLM {
            sink_tokens: 4,
            window_tokens: 8
        }
        .to_string(),
        "StreamingLLM(sink=4, window=8)"
    );
    assert_eq!(
        EvictionStrategy::Priority { levels: 3 }.to_string(),
        "Priority(3)"
    );
    assert_eq!(format!("{} {}", SeqId(3), pkv::BlockId(4)), "S3 B4");
}

#[test]
fn eviction_strategies_and_thresholds() {
    let c = cache(20, 16).with_eviction_threshold(0.25);
    for i in 1..=4 {
        c.allocate(SeqId(i), 16 * i as usize).unwrap();
    }
    c.append(SeqId(1), 1).unwrap();
    assert!(c.needs_eviction());
    assert_eq!(c.select_eviction_target(), Some(SeqId(2)));
    let c = c.with_eviction_strategy(EvictionStrategy::LongestFirst);
    assert_eq!(c.evict(), Ok(SeqId(4)));
    c.set_eviction_strategy(EvictionStrategy::Priority { levels: 4 })
        .unwrap();
    c.set_priority(SeqId(1), 2).unwrap();
    c.set_priority(SeqId(2), 3).unwrap();
    assert_eq!(c.select_eviction_target(), Some(SeqId(3)));
    assert_eq!(
        c.eviction_strategy(),
        EvictionStrategy::Priority { levels: 4 }
    );
    c.set_eviction_strategy(EvictionStrategy::LFU).unwrap();
    c.append(SeqId(3), 0).unwrap();
    c.append(SeqId(3), 0).unwrap();
    assert_eq!(c.select_eviction_target(), Some(SeqId(2)));
    let mut v = c.evict_to_threshold(0.0).unwrap();
    v.sort();
    assert_eq!(v, vec![SeqId(1), SeqId(2), SeqId(3)]);
    assert_eq!(c.stats().total_evictions, 4);
    assert_eq!(
        c.evict(),
        Err(PagedKvError::InvalidOperation(
            "No sequences to evict".into()
        ))
    );
    assert_eq!(c.select_eviction_target(), None);
    assert!(matches!(
        c.evict_to_threshold(1.5),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.evict_to_threshold(f64::NAN),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.set_eviction_threshold(f64::NAN),
        Err(PagedKvError::InvalidArgument(_))
    ));
    c.set_eviction_threshold(3.0).unwrap();
    assert_eq!(c.eviction_threshold(), 1.0);
}

#[test]
fn evict_to_threshold_beyond_one_buffer() {
    // More victims than the first buffer holds (16 or the size query): the crate loops.
    let c = cache(400, 1);
    for i in 0..300 {
        c.allocate(SeqId(i), 1).unwrap();
    }
    assert_eq!(c.evict_to_threshold(0.0).unwrap().len(), 300);
    assert_eq!(c.num_sequences(), 0);
}

#[test]
fn copy_on_write_is_real() {
    // The seed kept writing into the shared, partly filled last block after fork.
    let c = cache(10, 16);
    c.allocate(SeqId(1), 20).unwrap();
    c.fork(SeqId(1), SeqId(2)).unwrap();
    let shared = c.get_sequence(SeqId(1)).unwrap().block_ids;
    let op: CopyOp = c.append(SeqId(2), 1).unwrap().expect("a copy");
    assert_eq!(op.src, shared[1]);
    assert!(!shared.contains(&op.dst));
    assert_eq!(
        c.get_sequence(SeqId(2)).unwrap().block_ids,
        vec![shared[0], op.dst]
    );
    assert_eq!(c.get_sequence(SeqId(1)).unwrap().block_ids, shared);
    assert_eq!(c.append(SeqId(1), 1).unwrap(), None); // alone in it now: in place
    c.validate_unsafe().unwrap();
}

#[test]
fn hold_copy_sources_until_copy_done() {
    let o = CacheOptions {
        hold_copy_sources: true,
        ..CacheOptions::default()
    };
    let c = PagedKvCache::with_options(8, 4, 1, 1, o).unwrap();
    c.allocate(SeqId(1), 2).unwrap();
    c.fork(SeqId(1), SeqId(2)).unwrap();
    assert!(c.append(SeqId(2), 1).unwrap().is_some());
    c.free(SeqId(1)).unwrap();
    assert_eq!(c.free_block_count(), 6);
    assert_eq!(c.copy_done(SeqId(2)), Ok(1));
    assert_eq!(c.free_block_count(), 7);
}

#[test]
fn streaming_llm_keeps_exactly_sink_and_window() {
    // The seed skipped sink / block_size + 1 blocks (one too many here) and then wrote past the
    // end of a full block on the next append.
    let c = cache(20, 4);
    c.allocate(SeqId(1), 40).unwrap();
    let before = c.get_sequence(SeqId(1)).unwrap().block_ids;
    assert_eq!(c.apply_streaming_llm(SeqId(1), 100, 100), Ok(0));
    assert_eq!(c.apply_streaming_llm(SeqId(1), 4, 8), Ok(28));
    let info = c.get_sequence(SeqId(1)).unwrap();
    assert_eq!(info.num_tokens, 12);
    assert_eq!(info.block_ids, vec![before[0], before[8], before[9]]);
    assert_eq!(c.free_block_count(), 17);
    c.append(SeqId(1), 1).unwrap();
    assert_eq!(c.free_block_count(), 16);
    c.allocate(SeqId(2), 40).unwrap();
    assert_eq!(c.apply_streaming_llm(SeqId(2), 5, 6), Ok(29));
    assert_eq!(
        c.get_sequence(SeqId(2)).unwrap().token_runs,
        vec![
            TokenRun {
                first_token: 0,
                slot: 0,
                length: 5
            },
            TokenRun {
                first_token: 5,
                slot: 10,
                length: 6
            }
        ]
    );
    assert!(matches!(
        c.apply_streaming_llm(SeqId(2), 0, 0),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert_eq!(
        c.apply_streaming_llm(SeqId(3), 1, 1),
        Err(PagedKvError::SequenceNotFound(SeqId(3)))
    );
    c.validate_unsafe().unwrap();
}

#[test]
fn append_batch_reports_copies_and_errors() {
    let c = cache(6, 4);
    c.allocate(SeqId(1), 2).unwrap();
    c.allocate(SeqId(2), 4).unwrap();
    c.fork(SeqId(1), SeqId(3)).unwrap();
    let out = c.append_batch(&[SeqId(1), SeqId(2), SeqId(99), SeqId(3)], 1);
    assert_eq!(out.items, 4);
    assert_eq!(out.copies.len(), 1);
    assert_eq!(out.copies[0].0, 0);
    assert_eq!(out.errors, vec![(2, ErrorKind::SequenceNotFound)]);
    assert_eq!(
        out.first_error,
        Some(PagedKvError::SequenceNotFound(SeqId(99)))
    );
    let out = c
        .append_batch_counts(&[SeqId(1), SeqId(2)], &[0, 16])
        .unwrap();
    assert_eq!(out.errors, vec![(1, ErrorKind::OutOfMemory)]);
    assert!(matches!(
        out.first_error,
        Some(PagedKvError::OutOfMemory {
            requested: 4,
            available: 2
        })
    ));
    assert!(matches!(
        c.append_batch_counts(&[SeqId(1)], &[1, 2]),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert!(c.append_batch(&[], 1).all_appended());
    assert_eq!(c.get_sequence(SeqId(2)).unwrap().num_tokens, 5);
}

#[test]
fn bad_input_is_an_error_not_a_crash() {
    for (b, s, h, d) in [
        (0, 16, 32, 128),
        (10, 0, 32, 128),
        (10, 16, 0, 128),
        (10, 16, 32, 0),
        (1 << 33, 16, 32, 128),
        (usize::MAX, usize::MAX, usize::MAX, usize::MAX),
    ] {
        assert!(matches!(
            PagedKvCache::try_new(b, s, h, d),
            Err(PagedKvError::InvalidArgument(_))
        ));
    }
    let r = std::panic::catch_unwind(|| PagedKvCache::new(0, 16, 32, 128));
    assert!(r.is_err(), "new() panics on a configuration pkv rejects");
    let o = CacheOptions {
        affinity_shift: 64,
        ..CacheOptions::default()
    };
    assert!(PagedKvCache::with_options(10, 16, 1, 1, o).is_err());
    let c = cache(10, 16);
    c.allocate(SeqId(1), 1).unwrap();
    assert!(matches!(
        c.append(SeqId(1), usize::MAX),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.allocate(SeqId(2), usize::MAX),
        Err(PagedKvError::OutOfMemory { .. })
    ));
    assert!(matches!(
        c.allocate(SeqId(u64::MAX), usize::MAX),
        Err(PagedKvError::OutOfMemory { .. })
    ));
    assert!(matches!(
        c.set_eviction_strategy(EvictionStrategy::Priority { levels: 0 }),
        Err(PagedKvError::InvalidArgument(_))
    ));
    let r = std::panic::catch_unwind(|| {
        cache(1, 1).with_eviction_strategy(EvictionStrategy::StreamingLLM {
            sink_tokens: 0,
            window_tokens: 0,
        })
    });
    assert!(r.is_err());
    assert_eq!(c.get_sequence(SeqId(1)).unwrap().num_tokens, 1);
    assert_eq!(c.num_sequences(), 1);
}

#[test]
fn block_pool() {
    let p = BlockPool::new(8, 4).unwrap();
    assert_eq!(p.capacity(), 8);
    let b = p.acquire().unwrap();
    p.retain(b).unwrap();
    assert_eq!(p.ref_count(b), 2);
    assert_eq!(p.release(b), Ok(false));
    assert_eq!(p.release(b), Ok(true));
    assert_eq!(p.release(b), Err(PagedKvError::BlockNotFound(b)));
    assert_eq!(
        p.acquire_n(9),
        Err(PagedKvError::OutOfMemory {
            requested: 9,
            available: 8
        })
    );
    let all = p.acquire_n(8).unwrap();
    assert_eq!(p.used_count(), 8);
    assert_eq!(p.free_count(), 0);
    p.retain_n(&all).unwrap();
    assert_eq!(p.release_n(&all), Ok(0));
    assert_eq!(p.release_n(&all), Ok(8));
    assert_eq!((p.total_acquired(), p.total_released()), (9, 9));
    p.validate_unsafe().unwrap();
    assert!(BlockPool::new(0, 4).is_err());
    assert!(BlockPool::new(8, 65).is_err());
}

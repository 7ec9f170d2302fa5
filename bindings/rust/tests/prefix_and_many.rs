//! fork_many / free_many / truncate and automatic prefix caching through the crate, with their bad
//! input, and block_hashes against the known vectors of tests/test_block_hash.cpp.
use pkv::{
    block_hashes, BlockId, CacheOptions, ErrorKind, HashAlgorithm, PagedKvCache, PagedKvError,
    PrefixCachingOptions, SeqId,
};

fn prompt(n: u32) -> Vec<u32> {
    (100..100 + n).collect()
}

#[test]
fn fork_many_free_many_truncate() {
    let c = PagedKvCache::new(16, 4, 1, 1);
    c.allocate(SeqId(1), 6).unwrap();
    c.fork_many(SeqId(1), &[SeqId(2), SeqId(3), SeqId(4)])
        .unwrap();
    assert_eq!(c.num_sequences(), 4);
    assert_eq!(c.free_block_count(), 14);
    let b0 = c.block_table(SeqId(1)).unwrap()[0];
    assert_eq!(c.block_ref_count(b0), 4);
    // bad input changes nothing
    assert!(matches!(
        c.fork_many(SeqId(1), &[SeqId(7), SeqId(7)]),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.fork_many(SeqId(1), &[SeqId(8), SeqId(2)]),
        Err(PagedKvError::InvalidOperation(_))
    ));
    assert_eq!(
        c.fork_many(SeqId(99), &[]),
        Err(PagedKvError::SequenceNotFound(SeqId(99)))
    );
    assert_eq!(c.num_sequences(), 4);
    assert_eq!(c.block_ref_count(b0), 4);

    assert_eq!(c.truncate(SeqId(4), 3), Ok(1));
    assert_eq!(c.get_sequence(SeqId(4)).unwrap().num_tokens, 3);
    assert!(matches!(
        c.truncate(SeqId(4), 4),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert_eq!(c.get_sequence(SeqId(4)).unwrap().num_tokens, 3);
    assert_eq!(
        c.truncate(SeqId(42), 1),
        Err(PagedKvError::SequenceNotFound(SeqId(42)))
    );

    let out = c.free_many(&[SeqId(2), SeqId(55), SeqId(3), SeqId(2), SeqId(4)]);
    assert_eq!(out.items, 5);
    assert_eq!(
        out.errors,
        vec![
            (1, ErrorKind::SequenceNotFound),
            (3, ErrorKind::SequenceNotFound)
        ]
    );
    assert_eq!(
        out.first_error,
        Some(PagedKvError::SequenceNotFound(SeqId(55)))
    );
    assert_eq!(c.num_sequences(), 1);
    assert!(c.free_many(&[]).all_freed());
    assert!(c.free_many(&[SeqId(1)]).all_freed());
    assert_eq!(c.free_block_count(), 16);
    c.validate_unsafe().unwrap();
}

#[test]
fn prefix_hit_commit_and_stats() {
    let c = PagedKvCache::with_prefix_caching(
        16,
        4,
        1,
        1,
        PrefixCachingOptions {
            verify_tokens: true,
            ..PrefixCachingOptions::default()
        },
    )
    .unwrap();
    let p = prompt(10);
    assert_eq!(c.allocate_tokens(SeqId(1), &p, "t"), Ok(0));
    assert_eq!(c.match_prefix(&p, "t"), 0, "nothing committed yet");
    assert!(matches!(
        c.commit(SeqId(1), 11),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert_eq!(c.commit(SeqId(1), 10), Ok(2));
    assert_eq!(c.cached_block_count(), 2);
    assert_eq!(c.match_prefix(&p, "t"), 8);
    assert_eq!(c.match_prefix(&p, b"other"), 0);
    let free = c.free_block_count();
    assert_eq!(c.allocate_tokens(SeqId(2), &p, "t"), Ok(8));
    assert_eq!(c.free_block_count(), free - 1);
    let (t1, t2) = (
        c.block_table(SeqId(1)).unwrap(),
        c.block_table(SeqId(2)).unwrap(),
    );
    assert_eq!(&t1[..2], &t2[..2]);
    assert_ne!(t1[2], t2[2]);
    assert_eq!(c.block_ref_count(t1[0]), 2);
    assert_eq!(c.block_ref_count(BlockId(u32::MAX)), 0);

    assert_eq!(c.append_tokens(SeqId(1), &[110, 111]), Ok(None));
    assert!(matches!(
        c.append(SeqId(1), 1),
        Err(PagedKvError::InvalidOperation(_))
    ));
    let out = c
        .append_batch_tokens(&[SeqId(1), SeqId(2), SeqId(77)], &[112, 500, 1])
        .unwrap();
    assert_eq!(out.errors, vec![(2, ErrorKind::SequenceNotFound)]);
    assert!(matches!(
        c.append_batch_tokens(&[SeqId(1)], &[]),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert_eq!(c.get_sequence(SeqId(1)).unwrap().num_tokens, 13);

    // bad input
    assert!(matches!(
        c.allocate_tokens(SeqId(3), &[], ""),
        Err(PagedKvError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.allocate_tokens(SeqId(1), &p, ""),
        Err(PagedKvError::InvalidOperation(_))
    ));
    assert!(matches!(
        c.allocate_tokens(SeqId(3), &[0; 100], ""),
        Err(PagedKvError::OutOfMemory { .. })
    ));
    assert_eq!(c.num_sequences(), 2);

    let s = c.prefix_stats();
    assert_eq!((s.requests, s.queries, s.hits), (2, 20, 8));
    assert!((s.hit_rate() - 0.4).abs() < 1e-12);
    c.free_many(&[SeqId(1), SeqId(2)]);
    assert_eq!(c.free_block_count(), 16);
    assert!(c.reclaimable_block_count() >= 2);
    assert_eq!(c.match_prefix(&p, "t"), 8);
    c.reset_prefix_cache().unwrap();
    assert_eq!(c.match_prefix(&p, "t"), 0);
    c.validate_unsafe().unwrap();
}

#[test]
fn options_default_and_off() {
    let d = CacheOptions::default();
    assert!(d.prefix.enabled);
    assert_eq!(d.prefix.hash, HashAlgorithm::Sha256);
    assert!(!d.prefix.verify_tokens);
    let off = PagedKvCache::with_prefix_caching(
        16,
        4,
        1,
        1,
        PrefixCachingOptions {
            enabled: false,
            ..PrefixCachingOptions::default()
        },
    )
    .unwrap();
    let p = prompt(10);
    off.allocate_tokens(SeqId(1), &p, "").unwrap();
    assert_eq!(off.commit(SeqId(1), 10), Ok(0));
    assert_eq!(off.allocate_tokens(SeqId(2), &p, ""), Ok(0));
}

#[test]
fn prefix_hit_across_threads() {
    let c = PagedKvCache::with_prefix_caching(
        64,
        16,
        1,
        1,
        PrefixCachingOptions {
            hash: HashAlgorithm::Xxh3_128,
            ..PrefixCachingOptions::default()
        },
    )
    .unwrap();
    let p = prompt(100); // 6 full blocks
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(c.allocate_tokens(SeqId(1), &p, "x"), Ok(0));
            assert_eq!(c.commit(SeqId(1), 100), Ok(6));
        })
        .join()
        .unwrap();
        s.spawn(|| assert_eq!(c.allocate_tokens(SeqId(2), &p, "x"), Ok(96)))
            .join()
            .unwrap();
    });
    c.validate_unsafe().unwrap();
}

#[test]
fn block_hashes_known_vectors() {
    let t: Vec<u32> = (0..10).collect();
    let hs = block_hashes(&t, 4, "", HashAlgorithm::Sha256).unwrap();
    assert_eq!(hs.len(), 2);
    assert_eq!(
        hs[0].to_hex(),
        "0c47b210c9a57e664661f7ed102b192883b1368f854d43d07cadd79728a99167"
    );
    assert_eq!(
        hs[1].to_string(),
        "ceb321cb84e5f0e41624e807242967931200961a2a5965aa54451db28d6d86c2"
    );
    let x = block_hashes(&t, 4, "tenant-a", HashAlgorithm::Xxh3_128).unwrap();
    assert_eq!(&x[1].to_hex()[..32], "dafdfb4cdf651f440368d67cab9efb68");
    assert_eq!(&x[1].0[16..], &[0u8; 16]);
    assert_eq!(block_hashes(&[], 4, "", HashAlgorithm::Sha256), Ok(vec![]));
    assert!(matches!(
        block_hashes(&t, 0, "", HashAlgorithm::Sha256),
        Err(PagedKvError::InvalidArgument(m)) if m.contains("block_size must be positive")
    ));
}

"""pkv from Python: the seed's documented behaviour, its fixed defects, errors and bad input."""
import gc

import numpy as np
import pytest

import pkv

DISPLAY_3_OF_10 = (
    "PagedKvCache\n"
    "  Strategy: LRU (block_size=16)\n"
    "  Blocks: 3/10 (30.0% used)\n"
    "  Memory: 0.79 MB / 2.62 MB\n"
    "  Sequences: 1 active\n"
    "  Stats: allocs=3, frees=0, evictions=0, forks=0\n"
)


def make(num_blocks=10, block_size=16, **kw):
    return pkv.PagedKvCache(num_blocks, block_size, 32, 128, **kw)


# ---- the seed's documented behaviour ---------------------------------------------------------


def test_defaults_and_sizes():
    c = make()
    assert c.block_size() == 16 and c.total_blocks() == 10
    assert c.block_memory_bytes() == 262144  # 2 x 16 x 32 x 128 x 2
    assert c.total_memory_bytes() == 2621440
    assert c.eviction_strategy() == pkv.EvictionStrategy.lru()
    assert c.eviction_threshold() == pytest.approx(0.9)
    assert c.free_block_count() == 10 and c.used_block_count() == 0
    assert c.utilization() == 0.0 and not c.needs_eviction()
    assert len(c) == 0 and c.num_sequences() == 0


def test_allocate_rounds_up_and_is_all_or_nothing():
    c = make()
    c.allocate(1, 40)
    assert c.used_block_count() == 3
    info = c.get_sequence(1)
    assert info.seq_id == 1 and info.num_tokens == 40 and info.num_blocks() == 3
    assert len(info.block_ids) == 3 and info.access_count == 1 and info.priority == 0
    with pytest.raises(pkv.OutOfMemory) as e:
        c.allocate(2, 16 * 8)
    assert str(e.value) == "Out of memory: requested 8 blocks, 7 available"
    assert c.used_block_count() == 3 and 2 not in c
    c.allocate(3, 0)  # a sequence with no blocks
    assert c.get_sequence(3).block_ids == []


def test_append_takes_blocks_only_on_a_boundary():
    c = make()
    c.allocate(1, 10)
    assert c.append(1, 6) is None and c.used_block_count() == 1
    assert c.append(1, 1) is None and c.used_block_count() == 2
    assert c.append(1, 0) is None and c.get_sequence(1).num_tokens == 17
    assert c.get_sequence(1).access_count == 4


def test_free_returns_blocks_and_counts():
    c = make()
    c.allocate(1, 40)
    c.free(1)
    assert c.free_block_count() == 10 and 1 not in c
    s = c.stats()
    assert (s.total_allocations, s.total_frees, s.peak_blocks_used) == (3, 3, 3)


def test_fork_shares_blocks_and_counts_a_fork():
    c = make()
    c.allocate(1, 32)
    c.fork(1, 2)
    assert c.used_block_count() == 2
    assert c.get_sequence(2).block_ids == c.get_sequence(1).block_ids
    s = c.stats()
    assert s.total_forks == 1 and s.total_allocations == 2
    c.free(1)
    assert c.used_block_count() == 2  # still referenced by S2
    c.free(2)
    assert c.free_block_count() == 10


def test_display_is_the_seeds():
    c = make()
    c.allocate(1, 40)
    assert str(c) == DISPLAY_3_OF_10
    assert repr(c) == DISPLAY_3_OF_10
    assert str(pkv.EvictionStrategy.streaming_llm(4, 8)) == "StreamingLLM(sink=4, window=8)"
    assert str(pkv.EvictionStrategy.priority(3)) == "Priority(3)"
    assert [str(s) for s in (pkv.EvictionStrategy.lru(), pkv.EvictionStrategy.lfu(),
                             pkv.EvictionStrategy.longest_first())] == ["LRU", "LFU", "LongestFirst"]


def test_eviction_strategies():
    c = make(20)
    for i in range(1, 5):
        c.allocate(i, 16 * i)
    c.append(1, 1)  # S1 most recent
    assert c.select_eviction_target() == 2  # LRU
    c.set_eviction_strategy(pkv.EvictionStrategy.longest_first())
    assert c.evict() == 4
    c.set_eviction_strategy(pkv.EvictionStrategy.priority(4))
    c.set_priority(1, 2)
    c.set_priority(2, 3)
    assert c.select_eviction_target() == 3
    c.set_eviction_strategy(pkv.EvictionStrategy.lfu())
    c.append(3, 0)
    c.append(3, 0)
    assert c.select_eviction_target() == 2  # S2 count 1, S1 2, S3 3
    assert c.stats().total_evictions == 1
    assert sorted(c.evict_to_threshold(0.0)) == [1, 2, 3]
    assert c.evict_to_threshold(0.0) == []
    with pytest.raises(pkv.InvalidOperation, match="No sequences to evict"):
        c.evict()
    assert c.select_eviction_target() is None


def test_needs_eviction_and_threshold_clamps():
    c = make(eviction_threshold=0.2)
    assert c.eviction_threshold() == pytest.approx(0.2)
    c.allocate(1, 32)
    assert c.needs_eviction()
    c.set_eviction_threshold(5.0)
    assert c.eviction_threshold() == 1.0
    c.set_eviction_threshold(-1.0)
    assert c.eviction_threshold() == 0.0


def test_pin_keeps_a_sequence_from_eviction():
    c = make()
    c.allocate(1, 1)
    c.allocate(2, 1)
    c.pin(1)
    assert c.evict() == 2
    with pytest.raises(pkv.InvalidOperation, match="No sequences to evict"):
        c.evict()
    c.unpin(1)
    with pytest.raises(pkv.InvalidOperation, match="Sequence S1 is not pinned"):
        c.unpin(1)
    assert c.evict() == 1


# ---- the seed's defects, fixed ----------------------------------------------------------------


def test_copy_on_write_is_real():
    c = make()
    c.allocate(1, 20)  # the last block is partly full
    c.fork(1, 2)
    shared = c.get_sequence(1).block_ids
    op = c.append(2, 1)
    assert isinstance(op, pkv.CopyOp)
    assert op.src == shared[1] and op.dst not in shared
    assert c.get_sequence(2).block_ids == [shared[0], op.dst]
    assert c.get_sequence(1).block_ids == shared  # the writer moved, the other kept its block
    assert c.append(1, 1) is None  # S1 is alone in its block now: in place
    assert c.validate_unsafe() == ""


def test_hold_copy_sources_until_copy_done():
    c = make(8, 4, hold_copy_sources=True)
    c.allocate(1, 2)
    c.fork(1, 2)
    assert c.append(2, 1) is not None
    c.free(1)
    assert c.free_block_count() == 6
    assert c.copy_done(2) == 1 and c.free_block_count() == 7


def test_streaming_llm_keeps_exactly_sink_and_window():
    c = make(20, 4)
    c.allocate(1, 40)  # 10 blocks
    assert c.apply_streaming_llm(1, 100, 100) == 0
    # sink 4 = exactly block 0 (the seed skipped one block too many here), window 8 = blocks 8, 9
    before = c.get_sequence(1).block_ids
    assert c.apply_streaming_llm(1, 4, 8) == 28
    info = c.get_sequence(1)
    assert info.num_tokens == 12 and info.block_ids == [before[0], before[8], before[9]]
    assert c.free_block_count() == 17
    c.append(1, 1)  # last kept block is full: a new block, no write past its end
    assert c.free_block_count() == 16 and c.get_sequence(1).num_tokens == 13
    # Unaligned: kept tokens stay in their slots.
    c.allocate(2, 40)
    assert c.apply_streaming_llm(2, 5, 6) == 29
    info = c.get_sequence(2)
    assert info.token_runs == [(0, 0, 5), (5, 10, 6)]
    assert [info.slot_of(i) for i in (0, 4, 5, 10)] == [0, 4, 10, 15]
    with pytest.raises(pkv.InvalidArgument):
        info.slot_of(11)
    with pytest.raises(pkv.InvalidArgument):
        c.apply_streaming_llm(2, 0, 0)
    assert c.validate_unsafe() == ""


# ---- append_batch ------------------------------------------------------------------------------


def test_append_batch_lists_and_numpy():
    c = make(6, 4)
    c.allocate(1, 2)
    c.allocate(2, 4)
    c.fork(1, 3)
    out = c.append_batch([1, 2, 99, 3])
    assert isinstance(out, pkv.BatchOutcome) and isinstance(out, tuple)
    items, copies, errors = out  # a named tuple
    assert items == out.items == 4 and copies is out.copies and errors is out.errors
    assert [i for i, _ in out.copies] == [0] and isinstance(out.copies[0][1], pkv.CopyOp)
    (item, err), = out.errors
    assert item == 2 and isinstance(err, pkv.SequenceNotFound)
    assert err.code == pkv.Errc.sequence_not_found and err.message == "Sequence not found: S99"
    out = c.append_batch(np.array([1, 2], dtype=np.uint64), np.array([1, 3], dtype=np.uint64))
    assert not out.errors and not out.copies and c.get_sequence(2).num_tokens == 8
    out = c.append_batch((1, 2), [0, 16])
    assert [(i, e.code) for i, e in out.errors] == [(1, pkv.Errc.out_of_memory)]
    assert c.append_batch([]).items == 0
    with pytest.raises(pkv.InvalidArgument):
        c.append_batch([1, 2], [1])
    assert c.get_sequence(2).num_tokens == 8


def test_append_batch_bad_input():
    c = make()
    c.allocate(1, 1)
    with pytest.raises(TypeError):
        c.append_batch([1, "2"])
    with pytest.raises(TypeError):
        c.append_batch([1, 2.0])
    with pytest.raises(TypeError):
        c.append_batch([1, None])
    with pytest.raises(OverflowError):
        c.append_batch([1, -1])
    with pytest.raises(OverflowError):
        c.append_batch([2**64])
    with pytest.raises(TypeError):
        c.append_batch(np.array([1], dtype=np.int32))
    with pytest.raises(TypeError):
        c.append_batch(np.array([[1]], dtype=np.uint64))
    with pytest.raises(TypeError):
        c.append_batch(None)
    with pytest.raises(TypeError):
        c.append_batch(5)
    assert c.get_sequence(1).num_tokens == 1  # nothing was appended


# ---- block tables through the buffer protocol ---------------------------------------------------


def test_block_table_is_a_list_and_a_zero_copy_buffer():
    c = make()
    c.allocate(1, 40)
    t = c.block_table(1)
    assert list(t) == c.get_sequence(1).block_ids and t.tolist() == list(t) and len(t) == 3
    assert t[-1] == t[2] and t == list(t) and t == c.block_table(1)
    assert t != None and t != [9] and t != tuple(t)  # noqa: E711
    with pytest.raises(IndexError):
        t[3]
    a = np.asarray(t)
    assert a.dtype == np.uint32 and a.tolist() == list(t)
    m = memoryview(t)
    assert m.readonly and m.format == "I" and m.shape == (3,)
    assert np.shares_memory(a, np.asarray(t))  # both view the table's own memory: no copy
    assert not a.flags.writeable
    # The array views the table's memory (no copy): it keeps the table alive.
    del t
    gc.collect()
    assert a.tolist() == c.get_sequence(1).block_ids
    with pytest.raises(pkv.SequenceNotFound):
        c.block_table(2)


# ---- errors ------------------------------------------------------------------------------------


def test_errors_carry_code_and_seed_message():
    c = make()
    c.allocate(1, 20)
    cases = [
        (lambda: c.allocate(1, 1), pkv.InvalidOperation, pkv.Errc.invalid_operation,
         "Invalid operation: Sequence S1 already exists"),
        (lambda: c.append(7, 1), pkv.SequenceNotFound, pkv.Errc.sequence_not_found,
         "Sequence not found: S7"),
        (lambda: c.free(7), pkv.SequenceNotFound, pkv.Errc.sequence_not_found,
         "Sequence not found: S7"),
        (lambda: c.fork(1, 1), pkv.InvalidOperation, pkv.Errc.invalid_operation,
         "Invalid operation: Cannot fork sequence S1 onto itself"),
        (lambda: c.allocate(2, 1000), pkv.OutOfMemory, pkv.Errc.out_of_memory,
         "Out of memory: requested 63 blocks, 8 available"),
        (lambda: c.append(1, 2**64 - 1), pkv.InvalidArgument, pkv.Errc.invalid_argument,
         None),
        (lambda: c.evict_to_threshold(1.5), pkv.InvalidArgument, pkv.Errc.invalid_argument, None),
        (lambda: c.set_eviction_threshold(float("nan")), pkv.InvalidArgument,
         pkv.Errc.invalid_argument, None),
        (lambda: c.set_eviction_strategy(pkv.EvictionStrategy.priority(0)), pkv.InvalidArgument,
         pkv.Errc.invalid_argument, None),
    ]
    for call, cls, code, message in cases:
        with pytest.raises(pkv.Error) as e:
            call()
        assert type(e.value) is cls and e.value.code == code and cls.code == code
        assert str(e.value) == e.value.message
        if message is not None:
            assert e.value.message == message
        else:
            assert e.value.message.startswith("Invalid argument: ")
    assert c.get_sequence(1).num_tokens == 20 and c.used_block_count() == 2
    assert issubclass(pkv.OutOfMemory, pkv.Error) and issubclass(pkv.Error, Exception)


def test_bad_input_raises_python_errors_and_changes_nothing():
    c = make()
    c.allocate(1, 1)
    # allocate / append / append_batch / free / fork (the per-step methods) convert ints like
    # CPython's own unsigned arguments; the other methods through pybind11 (TypeError for all).
    for bad, err in ((None, TypeError), (1.5, TypeError), ("1", TypeError), ([1], TypeError),
                     (-1, OverflowError), (2**64, OverflowError)):
        with pytest.raises(err):
            c.allocate(bad, 1)
        with pytest.raises(err):
            c.append(1, bad)
        with pytest.raises(err):
            c.fork(1, bad)
        with pytest.raises(err):
            c.free(bad)
        with pytest.raises(TypeError):
            c.set_priority(bad, 1)
        with pytest.raises(TypeError):
            c.get_sequence(bad)
    with pytest.raises(TypeError):
        c.allocate(1)  # arity
    with pytest.raises(TypeError):
        c.append_batch()
    with pytest.raises(TypeError):
        c.append(seq=1, num_tokens=1)  # positional only
    with pytest.raises(TypeError):
        pkv.PagedKvCache.allocate(5, 1, 1)  # not a cache
    blank = pkv.PagedKvCache.__new__(pkv.PagedKvCache)  # no C++ object behind it
    for call in (lambda: blank.allocate(1, 1), lambda: blank.append(1, 1), lambda: blank.free(1),
                 lambda: blank.fork(1, 2), lambda: blank.append_batch([1])):
        with pytest.raises(TypeError, match="__init__ was not called"):
            call()
    with pytest.raises(TypeError):
        c.set_eviction_strategy("LRU")
    with pytest.raises(TypeError):
        c.set_priority(1, 2**32)
    for args in ((0, 16, 32, 128), (10, 0, 32, 128), (10, 16, 0, 128), (10, 16, 32, 0),
                 (2**40, 16, 32, 128), (2**63, 2**63, 2**63, 2**63)):
        with pytest.raises(pkv.InvalidArgument):
            pkv.PagedKvCache(*args)
    with pytest.raises(TypeError):
        pkv.PagedKvCache(-1, 16, 32, 128)
    with pytest.raises(pkv.InvalidArgument):
        make(affinity_shift=64)
    with pytest.raises(pkv.InvalidArgument):
        make(magazine_size=65)
    with pytest.raises(pkv.InvalidArgument):
        make(eviction_strategy=pkv.EvictionStrategy.streaming_llm(0, 0))
    assert c.get_sequence(1).num_tokens == 1 and len(c) == 1


# ---- the pool ----------------------------------------------------------------------------------


def test_block_pool():
    p = pkv.BlockPool(8, magazine_size=4)
    assert p.capacity() == 8 and p.magazine_size() == 4 and p.free_count() == 8
    b = p.acquire()
    assert p.ref_count(b) == 1
    p.retain(b)
    assert p.release(b) is False and p.release(b) is True
    with pytest.raises(pkv.BlockNotFound, match=f"Block not found: B{b}"):
        p.release(b)
    with pytest.raises(pkv.BlockNotFound):
        p.retain(1000)
    with pytest.raises(pkv.OutOfMemory, match="requested 9 blocks, 8 available"):
        p.acquire_n(9)
    ids = p.acquire_n(8)
    assert sorted(ids) == list(range(8)) and p.used_count() == 8
    with pytest.raises(pkv.OutOfMemory):
        p.acquire()
    p.retain_n(ids)
    with pytest.raises(pkv.BlockNotFound):
        p.retain_n([ids[0], 5000])
    assert p.ref_count(ids[0]) == 2
    assert p.release_n(ids) == 0 and p.release_n(ids) == 8
    assert p.total_acquired() == 9 and p.total_released() == 9 and p.validate_unsafe() == ""
    with pytest.raises(pkv.InvalidArgument):
        pkv.BlockPool(0)
    with pytest.raises(TypeError):
        p.release(-1)


def test_readme_python_example_runs(capsys):
    import os
    import re

    root = os.environ.get("PKV_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    with open(os.path.join(root, "README.md")) as f:
        text = f.read()
    block = re.search(r"<!-- BEGIN PYTHON EXAMPLE -->\n```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) == 5
    scope = {}
    exec(block, scope)
    assert scope["copy"] == pkv.CopyOp(2, 3)
    assert scope["hit"] == 32  # prefix caching: two of the 40 tokens' blocks (the last is computed)
    assert "Sequences: 2 active" in capsys.readouterr().out

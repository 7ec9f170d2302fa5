"""Prefix caching, fork_many / free_many / truncate and block_hashes from Python, with bad input."""
import threading

import numpy as np
import pytest

import pkv


def make(num_blocks=16, block_size=4, **kw):
    return pkv.PagedKvCache(num_blocks, block_size, 2, 8, **kw)


PROMPT = list(range(100, 110))  # 10 tokens: two full blocks of 4 and a partial one


def test_prefix_hit_commit_match_and_stats():
    c = make(verify_tokens=True)
    assert c.allocate_tokens(1, PROMPT, "t") == 0
    assert c.match_prefix(PROMPT, "t") == 0  # nothing committed yet
    assert c.commit(1, 10) == 2
    assert c.cached_block_count() == 2
    assert c.match_prefix(PROMPT, "t") == 8
    assert c.match_prefix(PROMPT, b"t") == 8  # bytes and str salts are the same bytes
    assert c.match_prefix(PROMPT) == 0  # another salt shares nothing
    free = c.free_block_count()
    # a numpy uint32 array is read through the buffer protocol
    assert c.allocate_tokens(2, np.array(PROMPT, dtype=np.uint32), "t") == 8
    assert c.free_block_count() == free - 1
    t1, t2 = c.block_table(1).tolist(), c.block_table(2).tolist()
    assert t1[:2] == t2[:2] and t1[2] != t2[2]
    assert c.block_ref_count(t1[0]) == 2
    assert c.block_ref_count(2**32 - 1) == 0

    assert c.append_tokens(1, [110, 111]) is None  # token ids
    assert c.append_tokens(1, np.array([], dtype=np.uint32)) is None
    with pytest.raises(pkv.InvalidOperation):
        c.append(1, 1)  # by count on a token-mode sequence
    out = c.append_batch_tokens([1, 2, 77], np.array([112, 500, 1], dtype=np.uint32))
    assert out.items == 3 and out.copies == []
    assert [(i, type(e)) for i, e in out.errors] == [(2, pkv.SequenceNotFound)]
    assert c.get_sequence(1).num_tokens == 13 and c.get_sequence(2).num_tokens == 11

    s = c.prefix_stats()
    assert (s.requests, s.queries, s.hits, s.verify_failures) == (2, 20, 8, 0)
    assert s.hit_rate() == pytest.approx(0.4)
    assert "hits=8" in repr(s)
    assert c.free_many([1, 2]) == []
    assert c.free_block_count() == 16 and c.reclaimable_block_count() >= 2
    assert c.match_prefix(PROMPT, "t") == 8
    c.reset_prefix_cache()
    assert c.match_prefix(PROMPT, "t") == 0 and c.cached_block_count() == 0
    assert c.validate_unsafe() == ""


def test_prefix_options():
    off = make(prefix_caching=False)
    off.allocate_tokens(1, PROMPT)
    assert off.commit(1, 10) == 0
    assert off.allocate_tokens(2, PROMPT) == 0
    x = make(prefix_hash=pkv.HashAlgorithm.xxh3_128)
    x.allocate_tokens(1, PROMPT)
    x.commit(1, 10)
    assert x.allocate_tokens(2, PROMPT) == 8
    with pytest.raises(TypeError):
        make(prefix_hash="md5")


def test_prefix_hit_across_two_threads():
    c = make(num_blocks=64, block_size=16)
    prompt = np.arange(1000, 1100, dtype=np.uint32)  # 6 full blocks of 16 + 4 tokens
    committed = threading.Event()
    result = {}

    def prefill():
        result["first"] = c.allocate_tokens(1, prompt, "tenant")
        result["published"] = c.commit(1, len(prompt))
        committed.set()

    def second():
        committed.wait(10)
        result["second"] = c.allocate_tokens(2, prompt.tolist(), "tenant")

    threads = [threading.Thread(target=second), threading.Thread(target=prefill)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert result == {"first": 0, "published": 6, "second": 96}
    assert c.block_table(1).tolist()[:6] == c.block_table(2).tolist()[:6]
    assert c.validate_unsafe() == ""


def test_prefix_bad_input_raises_and_changes_nothing():
    c = make()
    c.allocate_tokens(1, PROMPT)
    free = c.free_block_count()
    with pytest.raises(pkv.InvalidArgument):
        c.allocate_tokens(2, [])  # empty prompt
    with pytest.raises(pkv.InvalidArgument):
        c.allocate_tokens(2, np.array([], dtype=np.uint32))
    with pytest.raises(pkv.InvalidArgument):
        c.commit(1, 11)  # beyond the sequence's length
    with pytest.raises(pkv.SequenceNotFound):
        c.commit(9, 1)
    with pytest.raises(pkv.InvalidOperation):
        c.allocate_tokens(1, PROMPT)  # exists
    with pytest.raises(pkv.OutOfMemory):
        c.allocate_tokens(2, [0] * 100)
    with pytest.raises(TypeError):
        c.allocate_tokens(2, "hello")  # a str is not token ids
    with pytest.raises(TypeError):
        c.allocate_tokens(2, [1, 2.5])
    with pytest.raises(TypeError):
        c.allocate_tokens(2, None)
    with pytest.raises(TypeError):
        c.allocate_tokens(2, np.array([1, 2], dtype=np.int64))  # only uint32 buffers
    with pytest.raises(TypeError):
        c.allocate_tokens(2, np.zeros((2, 2), dtype=np.uint32))
    with pytest.raises(TypeError):
        c.allocate_tokens(2, PROMPT, 5)  # salt must be str or bytes
    with pytest.raises(TypeError):
        c.allocate_tokens(2, 4)  # a count is not token ids
    with pytest.raises(TypeError):
        c.append_tokens(1, 1)
    with pytest.raises(TypeError):
        c.append_tokens(1, "ab")
    with pytest.raises(ValueError):
        c.allocate_tokens(2, [2**32])
    with pytest.raises(OverflowError):
        c.allocate_tokens(2, [-1])
    with pytest.raises(TypeError):
        c.match_prefix(None)
    with pytest.raises(TypeError):
        c.append_batch_tokens([1], "x")
    with pytest.raises(pkv.InvalidArgument):
        c.append_batch_tokens([1, 2], [5])  # lengths differ
    with pytest.raises(TypeError):
        c.commit(1, -1)
    assert c.free_block_count() == free and len(c) == 1
    assert c.get_sequence(1).num_tokens == 10
    assert c.validate_unsafe() == ""


def test_fork_many_free_many_truncate():
    c = make()
    c.allocate(1, 6)
    c.fork_many(1, np.array([2, 3, 4], dtype=np.uint64))
    assert len(c) == 4 and c.free_block_count() == 14
    b0 = c.block_table(1)[0]
    assert c.block_ref_count(b0) == 4
    with pytest.raises(pkv.InvalidArgument):
        c.fork_many(1, [7, 7])
    with pytest.raises(pkv.InvalidOperation):
        c.fork_many(1, [8, 1])
    with pytest.raises(pkv.InvalidOperation):
        c.fork_many(1, [9, 2])
    with pytest.raises(pkv.SequenceNotFound):
        c.fork_many(99, [])
    with pytest.raises(TypeError):
        c.fork_many(1, ["a"])
    with pytest.raises(TypeError):
        c.fork_many(1, None)
    assert len(c) == 4 and c.block_ref_count(b0) == 4

    assert c.truncate(4, 3) == 1
    assert c.get_sequence(4).num_tokens == 3
    with pytest.raises(pkv.InvalidArgument):
        c.truncate(4, 4)
    with pytest.raises(pkv.SequenceNotFound):
        c.truncate(42, 1)
    with pytest.raises(TypeError):
        c.truncate(4, -1)
    assert c.get_sequence(4).num_tokens == 3

    errors = c.free_many([2, 55, 3, 2, 4])
    assert [(i, type(e)) for i, e in errors] == [(1, pkv.SequenceNotFound), (3, pkv.SequenceNotFound)]
    assert errors[0][1].message == "Sequence not found: S55"
    assert len(c) == 1
    assert c.free_many([]) == []
    with pytest.raises(TypeError):
        c.free_many([1.0])
    assert c.free_many((1,)) == []
    assert c.free_block_count() == 16 and c.validate_unsafe() == ""


def test_block_hashes_agree_with_the_cpp_known_vectors():
    # tests/test_block_hash.cpp, st_known_vectors: tokens 0..9, block size 4.
    hs = pkv.block_hashes(range(10), 4)
    assert [h.hex() for h in hs] == [
        "0c47b210c9a57e664661f7ed102b192883b1368f854d43d07cadd79728a99167",
        "ceb321cb84e5f0e41624e807242967931200961a2a5965aa54451db28d6d86c2",
    ]
    assert pkv.block_hashes(np.arange(10, dtype=np.uint32), 4, "tenant-a")[1].hex() == (
        "9fbd8df54e8cdb1c6eedff515ce175105f35bbcc0b0e93aed1e9348977e08390"
    )
    x = pkv.block_hashes(list(range(10)), 4, b"tenant-a", pkv.HashAlgorithm.xxh3_128)
    assert [h[:16].hex() for h in x] == [
        "d94d032fdacc9824ff9e899c1d74acfc",
        "dafdfb4cdf651f440368d67cab9efb68",
    ]
    assert all(h[16:] == bytes(16) for h in x)
    # st_tokens_are_hashed_little_endian: one block of two tokens.
    assert pkv.block_hashes([0x01020304, 0xFFFFFFFE], 2)[0].hex() == (
        "6c0d76e33d09a6a8dcd6c6af91ecd953c507d7653fe9219f3170ff07a61e77bd"
    )
    assert pkv.block_hashes([], 4) == []
    with pytest.raises(pkv.InvalidArgument, match="block_size must be positive"):
        pkv.block_hashes(range(10), 0)
    with pytest.raises(TypeError):
        pkv.block_hashes("abc", 4)
    with pytest.raises(TypeError):
        pkv.block_hashes(range(10), 4, 7)
    with pytest.raises(TypeError):
        pkv.block_hashes(range(10), -1)


def test_stubs_name_every_public_method():
    import ast
    import os

    root = os.environ.get("PKV_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    tree = ast.parse(open(os.path.join(root, "bindings", "python", "pkv.pyi")).read())
    stubbed = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            stubbed[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} | {
                t.target.id for t in node.body if isinstance(t, ast.AnnAssign)
            } | {t.targets[0].id for t in node.body if isinstance(t, ast.Assign)}
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    for cls in ("PagedKvCache", "PrefixCacheStats", "HashAlgorithm"):
        public = {n for n in dir(getattr(pkv, cls)) if not n.startswith("_")} - {"name", "value"}
        assert public <= stubbed[cls], (cls, public - stubbed[cls])
    assert "block_hashes" in functions


def test_a_generator_that_calls_pkv_meanwhile_keeps_its_tokens():
    c = make()
    c.allocate_tokens(1, PROMPT)
    c.commit(1, 10)

    def tokens():
        for t in PROMPT:
            c.match_prefix([9, 9, 9, 9, 9])  # converts other token ids on this thread meanwhile
            yield t

    assert c.allocate_tokens(2, tokens()) == 8
    assert c.match_prefix(t for t in PROMPT) == 8

"""bench/python runs, and its pure-Python baseline manages blocks exactly as pkv does."""
import io
import os
import sys

import pytest

root = os.environ.get("PKV_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(root, "bench", "python"))
import bench_python  # noqa: E402
from pyblocks import OutOfBlocks, PyBlockManager  # noqa: E402

import pkv  # noqa: E402


def test_bench_runs_and_managers_agree():
    out = io.StringIO()
    res = bench_python.run(reps=1, decode_n=300, prefill_n=300, out=out)
    text = out.getvalue()
    assert "x the pure-Python design" in text and "crossing overhead" in text
    for wl, _, _ in bench_python.WORKLOADS:
        assert len(set(res[wl]["used_blocks"].values())) == 1


def test_pure_python_manager_matches_pkv_on_fork_and_copy_on_write():
    py = PyBlockManager(10, 4)
    c = pkv.PagedKvCache(10, 4, 1, 1)
    for m in (py, c):
        m.allocate(1, 6)
        m.fork(1, 2)
    cp = py.append(2, 1)
    op = c.append(2, 1)
    assert (cp is None) == (op is None) and cp is not None
    assert py.used_block_count() == c.used_block_count() == 3
    assert py.append(1, 1) is None and c.append(1, 1) is None  # alone in its block now
    py.free(1)
    c.free(1)
    py.free(2)
    c.free(2)
    assert py.free_block_count() == c.free_block_count() == 10
    with pytest.raises(OutOfBlocks):
        py.allocate(3, 100)

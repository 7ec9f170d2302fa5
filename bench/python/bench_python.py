#!/usr/bin/python3
"""The decode-step and prefill workloads of bench/workloads.hpp, driven from Python, on pkv and on
a pure-Python block manager of vLLM's design (pyblocks.py), same machine, same run, 1 thread.

  decode step: a batch of 32 live sequences; a step appends one token to each (pkv: one
               append_batch call; also pkv with one append call per token), and a sequence that
               has produced its output is freed and replaced by a new prompt (allocate). A second
               form adds a Python loop over the batch per step (the same for both managers).
  prefill:     a ring of 8 live prompts; a step frees the oldest and allocates a new prompt.
Lengths are the C++ benchmark's tables (log-normal; prompts median 400 tokens, outputs 200).
The scheduler's own bookkeeping is the same Python code for every manager.

Also reports the cost of crossing from Python into C++: a Python loop of cache.append(seq, 0)
against the same loop run in C++ (pkv._cpp_append_loop), and a trivial call (block_size()).

Prints median and best of --reps runs (interleaved: pkv, python, pkv, ...); --json for machines.
Usage: PYTHONPATH=build/bindings/python /usr/bin/python3 bench/python/bench_python.py [--reps 5]
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pkv  # noqa: E402
from pyblocks import PyBlockManager  # noqa: E402

BLOCK_SIZE, HEADS, HEAD_DIM = 16, 32, 128
MASK = (1 << 64) - 1


def _lengths(median, sigma, lo, hi, seed, n=4096):
    """bench/workloads.hpp's Lengths: splitmix64 + Box-Muller, clamped."""
    s = seed
    out = []

    def nxt():
        nonlocal s
        s = (s + 0x9E3779B97F4A7C15) & MASK
        x = s
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
        return x ^ (x >> 31)

    for _ in range(n):
        u1 = 1.0 - (nxt() >> 11) * 2.0**-53
        u2 = (nxt() >> 11) * 2.0**-53
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)
        out.append(int(min(max(median * math.exp(sigma * z), lo), hi)))
    return out


PROMPTS = _lengths(400.0, 0.9, 16, 4096, 1)
OUTPUTS = _lengths(200.0, 0.8, 8, 1024, 2)


# ---- managers behind one scheduler: each exposes allocate, free and a decode step -------------


class PkvBatch:
    name = "pkv"  # decode: one append_batch call per step

    def __init__(self, num_blocks):
        self.c = pkv.PagedKvCache(num_blocks, BLOCK_SIZE, HEADS, HEAD_DIM)
        self.allocate, self.free = self.c.allocate, self.c.free

    def step(self, ids):
        out = self.c.append_batch(ids, 1)
        if out.errors:
            raise RuntimeError(out.errors)
        return out.copies  # the CopyOps the model would perform (none in these workloads)

    def used(self):
        return self.c.used_block_count()


class PkvPerToken(PkvBatch):
    name = "pkv, append per token"

    def step(self, ids):
        append = self.c.append
        return [op for op in (append(s, 1) for s in ids) if op is not None]


class PyManager:
    name = "pure Python (vLLM design)"

    def __init__(self, num_blocks):
        self.m = PyBlockManager(num_blocks, BLOCK_SIZE)
        self.allocate, self.free = self.m.allocate, self.m.free

    def step(self, ids):
        append = self.m.append
        return [op for op in (append(s, 1) for s in ids) if op is not None]

    def used(self):
        return self.m.used_block_count()


# ---- workloads ---------------------------------------------------------------------------------

DECODE_BATCH = 32


def decode_steps(mgr_cls, steps, per_seq_loop=False):
    """Returns (seconds, manager). The same calls as BM_decode_step: append 1 token to each of the
    32 running sequences; one that has produced its output is freed and a new prompt allocated.
    The scheduler knows each sequence's finishing step (a dict of step -> slots), so its own work
    per step is O(finishing), not O(batch). per_seq_loop: instead, a Python loop over the batch
    counts down every sequence's remaining tokens each step (the C++ workload's form), work that
    is the same for every manager and dilutes the ratio."""
    mgr = mgr_cls(DECODE_BATCH * 330 + 1024)
    nxt, cursor = 1, 0
    ids, remaining = [], []
    finish_at = {}
    for i in range(DECODE_BATCH):
        mgr.allocate(nxt, PROMPTS[cursor])
        ids.append(nxt)
        r = 1 + (OUTPUTS[cursor] * (i + 1)) // DECODE_BATCH
        remaining.append(r)
        finish_at.setdefault(r - 1, []).append(i)
        nxt += 1
        cursor += 1
    step_fn = mgr.step
    t0 = time.perf_counter()
    if per_seq_loop:
        for _ in range(steps):
            step_fn(ids)
            for i in range(DECODE_BATCH):
                remaining[i] -= 1
                if remaining[i] == 0:
                    mgr.free(ids[i])
                    ids[i] = nxt
                    nxt += 1
                    mgr.allocate(ids[i], PROMPTS[cursor % 4096])
                    remaining[i] = OUTPUTS[cursor % 4096]
                    cursor += 1
    else:
        for step in range(steps):
            step_fn(ids)
            done = finish_at.pop(step, None)
            if done:
                for i in done:
                    mgr.free(ids[i])
                    ids[i] = nxt
                    nxt += 1
                    mgr.allocate(ids[i], PROMPTS[cursor % 4096])
                    finish_at.setdefault(step + OUTPUTS[cursor % 4096], []).append(i)
                    cursor += 1
    return time.perf_counter() - t0, mgr


def decode_steps_loop(mgr_cls, steps):
    return decode_steps(mgr_cls, steps, per_seq_loop=True)


PREFILL_LIVE = 8


def prefill_steps(mgr_cls, steps):
    mgr = mgr_cls(PREFILL_LIVE * 256 + 1024)
    ring = [0] * PREFILL_LIVE
    pos, nxt, cursor = 0, 1, 0
    t0 = time.perf_counter()
    for _ in range(steps):
        slot = ring[pos]
        if slot:
            mgr.free(slot)
        ring[pos] = nxt
        mgr.allocate(nxt, PROMPTS[cursor % 4096])
        nxt += 1
        cursor += 1
        pos = (pos + 1) % PREFILL_LIVE
    return time.perf_counter() - t0, mgr


def crossing(reps, calls=200_000):
    """ns per call: Python loop of append(seq, 0), the same loop in C++, a trivial call."""
    c = pkv.PagedKvCache(1024, BLOCK_SIZE, HEADS, HEAD_DIM)
    seqs = list(range(1, 33))
    for s in seqs:
        c.allocate(s, 100)
    steps = calls // len(seqs)
    py, cpp, trivial = [], [], []
    for _ in range(reps):
        append = c.append
        t0 = time.perf_counter_ns()
        for _ in range(steps):
            for s in seqs:
                append(s, 0)
        py.append((time.perf_counter_ns() - t0) / (steps * len(seqs)))
        cpp.append(pkv._cpp_append_loop(c, seqs, steps, 0) / (steps * len(seqs)))
        bs = c.block_size
        t0 = time.perf_counter_ns()
        for _ in range(steps * len(seqs)):
            bs()
        trivial.append((time.perf_counter_ns() - t0) / (steps * len(seqs)))
    return py, cpp, trivial


WORKLOADS = (
    ("decode step", decode_steps, (PkvBatch, PkvPerToken, PyManager)),
    ("decode step, per-sequence Python loop", decode_steps_loop, (PkvBatch, PyManager)),
    ("prefill", prefill_steps, (PkvBatch, PyManager)),
)


def run(reps=5, decode_n=20000, prefill_n=50000, out=sys.stdout):
    results = {}
    for wl, fn, classes in WORKLOADS:
        n = prefill_n if wl == "prefill" else decode_n
        times = {cls.name: [] for cls in classes}
        used = {}
        for _ in range(reps):
            for cls in classes:  # interleaved, so drift on a shared machine hits all alike
                sec, mgr = fn(cls, n)
                times[cls.name].append(sec / n * 1e6)  # us per scheduler step
                used[cls.name] = mgr.used()
        if len(set(used.values())) != 1:
            raise SystemExit(f"{wl}: managers disagree on used blocks: {used}")
        results[wl] = {"steps": n, "us_per_step": times, "used_blocks": used}
    py, cpp, trivial = crossing(reps)
    results["crossing"] = {"python_append_ns": py, "cpp_append_ns": cpp, "python_trivial_call_ns": trivial}

    med = statistics.median
    print(f"pkv Python benchmark, 1 thread, {reps} interleaved runs (median / best), "
          f"us per scheduler step", file=out)
    for wl, _, _ in WORKLOADS:
        r = results[wl]["us_per_step"]
        base = med(r[PyManager.name])
        print(f"  {wl} ({results[wl]['steps']} steps):", file=out)
        for name, v in r.items():
            ratio = "" if name == PyManager.name else f"   {base / med(v):6.1f}x the pure-Python design"
            print(f"    {name:28s} {med(v):8.2f} / {min(v):8.2f}{ratio}", file=out)
    print(f"  crossing into C++ (ns per call, median / best):", file=out)
    print(f"    append(seq, 0) from Python     {med(py):7.1f} / {min(py):7.1f}", file=out)
    print(f"    append(seq, 0) from C++        {med(cpp):7.1f} / {min(cpp):7.1f}", file=out)
    print(f"    crossing overhead (difference) {med(py) - med(cpp):7.1f}", file=out)
    print(f"    block_size() from Python       {med(trivial):7.1f} / {min(trivial):7.1f}  (a trivial call)",
          file=out)
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--decode-steps", type=int, default=20000)
    ap.add_argument("--prefill-steps", type=int, default=50000)
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument("--one", metavar="WORKLOAD:MANAGER",
                    help="run one workload once and exit (decode|decode-loop|prefill : batch|per-token|python), "
                         "e.g. under callgrind: instructions per step = (I(N) - I(0)) / N")
    ap.add_argument("--steps", type=int, default=1000, help="steps for --one")
    a = ap.parse_args()
    if a.one:
        wl, mgr = a.one.split(":")
        fn = {"decode": decode_steps, "decode-loop": decode_steps_loop, "prefill": prefill_steps}[wl]
        cls = {"batch": PkvBatch, "per-token": PkvPerToken, "python": PyManager}[mgr]
        sec, m = fn(cls, a.steps)
        print(f"{wl} {cls.name}: {a.steps} steps, {sec / max(a.steps, 1) * 1e6:.2f} us/step, "
              f"{m.used()} blocks used")
        sys.exit(0)
    res = run(a.reps, a.decode_steps, a.prefill_steps)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)

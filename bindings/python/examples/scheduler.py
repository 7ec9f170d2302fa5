"""A small continuous-batching scheduler in Python on one shared pkv.PagedKvCache.

`workers` threads each run a scheduler loop over their own running batch:
  * admit: take a request from the shared queue, allocate its prompt, and for n > 1 samples fork
    the prompt into n - 1 more sequences (they share the prompt's blocks);
  * decode: one append_batch call appends a token to every running sequence; the CopyOps it
    returns are the copy-on-write copies the model would perform (counted here);
  * finish: a sequence that has produced its output is freed;
  * preempt: when a decode step runs out of blocks, evict() a victim (any thread's sequence,
    as vLLM's recompute preemption) and requeue its request; an owner whose sequence was evicted
    by another thread sees SequenceNotFound in its next step and drops it.
The GIL is released inside every pkv call, so the workers' pkv calls run in parallel.
"""
from __future__ import annotations

import collections
import queue
import random
import threading
from dataclasses import dataclass, field

import pkv


@dataclass
class Request:
    rid: int
    prompt: int
    output: int
    samples: int


@dataclass
class Report:
    finished: int = 0
    preempted: int = 0
    copies: int = 0
    steps: int = 0
    tokens: int = 0
    errors: list = field(default_factory=list)


def run(workers=4, requests=200, num_blocks=2048, block_size=16, seed=1, max_steps=100_000):
    rng = random.Random(seed)
    cache = pkv.PagedKvCache(num_blocks, block_size, 8, 64,
                             eviction_strategy=pkv.EvictionStrategy.lru())
    pending: "queue.Queue[Request]" = queue.Queue()
    for rid in range(requests):
        pending.put(Request(rid, rng.randint(16, 300), rng.randint(4, 120), rng.choice((1, 1, 2, 4))))
    remaining = [requests]  # requests not finished yet, under `lock`
    lock = threading.Lock()
    report = Report()

    def worker(wid: int):
        local = Report()
        next_id = (wid + 1) << 40
        running = collections.OrderedDict()  # seq id -> [request, tokens still to generate]
        groups = collections.defaultdict(set)  # request id -> its live sequence ids
        for _ in range(max_steps):
            with lock:
                if remaining[0] == 0:
                    break
            # admit while the batch is small
            while len(running) < 16:
                try:
                    req = pending.get_nowait()
                except queue.Empty:
                    break
                seq = next_id
                next_id += 1
                try:
                    cache.allocate(seq, req.prompt)
                except pkv.OutOfMemory:
                    pending.put(req)
                    _preempt(cache, local)
                    break
                running[seq] = [req, req.output]
                groups[req.rid].add(seq)
                for _ in range(req.samples - 1):
                    cache.fork(seq, next_id)
                    running[next_id] = [req, req.output]
                    groups[req.rid].add(next_id)
                    next_id += 1
            if not running:
                continue
            ids = list(running)
            out = cache.append_batch(ids)
            local.steps += 1
            local.copies += len(out.copies)
            failed = {ids[i]: e for i, e in out.errors}
            for seq in ids:
                req, left = running[seq]
                err = failed.get(seq)
                if err is None:
                    local.tokens += 1
                    running[seq][1] = left - 1
                    if left - 1 == 0:
                        cache.free(seq)
                        del running[seq]
                        groups[req.rid].discard(seq)
                        if not groups[req.rid]:
                            del groups[req.rid]
                            local.finished += 1
                            with lock:
                                remaining[0] -= 1
                elif isinstance(err, pkv.OutOfMemory):
                    _preempt(cache, local)
                elif isinstance(err, pkv.SequenceNotFound):
                    # evicted by some thread: drop the whole request and requeue it once
                    _drop_request(cache, req, running, groups, pending)
                else:
                    local.errors.append(err)
        # leave nothing behind
        for seq in list(running):
            try:
                cache.free(seq)
            except pkv.SequenceNotFound:
                pass
        with lock:
            for f in ("finished", "preempted", "copies", "steps", "tokens"):
                setattr(report, f, getattr(report, f) + getattr(local, f))
            report.errors.extend(local.errors)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return cache, report


def _preempt(cache, report):
    try:
        cache.evict()
        report.preempted += 1
    except pkv.InvalidOperation:
        pass  # nothing left to evict: another thread freed everything


def _drop_request(cache, req, running, groups, pending):
    if req.rid not in groups:
        return
    for seq in groups.pop(req.rid):
        running.pop(seq, None)
        try:
            cache.free(seq)
        except pkv.SequenceNotFound:
            pass  # this one was the victim
    pending.put(req)


if __name__ == "__main__":
    c, r = run()
    print(c)
    print(r)

#!/usr/bin/env python3
"""scripts/bench-report.py — turn pkv-bench output into bench/RESULTS.md and bench/throughput.png.

    bench-report.py --results bench/results.json [--callgrind bench/callgrind.tsv]
                    [--memory bench/memory.json] [--out bench/RESULTS.md]
                    [--plot bench/throughput.png] [--command "..."]

Standard library only. Every throughput figure is the median over the repetitions in the Google
Benchmark JSON (run_type "iteration" entries); the spread column is (max - min) / median.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict

THREADS = [1, 2, 4, 8]
CACHE_BASELINES = ["seed_mutex"]
POOL_IMPLS = ["pkv", "pkv_nomag", "boost_lockfree", "vllm_mutex"]
IMPL_ORDER = ["pkv", "pkv_batch", "pkv_affine_batch", "pkv_many", "pkv_nomag", "seed_mutex", "seed_mutex_batch", "boost_lockfree",
              "vllm_mutex"]
CPU_SAMPLES = defaultdict(list)  # (workload, impl, threads) -> [items per CPU-second]

DESCRIPTIONS = {
    "BM_pool_alloc_free/single": "acquire() + release(id) of one block per step; item = one block. "
    "pkv = BlockPool (magazine 32), pkv_nomag = magazine_size 0 (shared lock-free list only), "
    "boost_lockfree = boost::lockfree::stack free list + atomic refcounts, "
    "vllm_mutex = vLLM-style O(1) doubly linked free queue under one std::mutex.",
    "BM_pool_alloc_free/batch16": "acquire(16, out) + release(span of 16) per step; item = one block.",
    "BM_prefill": "each thread keeps 8 live prompts; a step frees the oldest and allocates a new "
    "prompt (log-normal length, median 400 tokens, 16..4096; ~30 blocks). item = one "
    "allocate or free call.",
    "BM_decode_step": "each thread owns a decode batch of 32 sequences; a step appends one token "
    "to each; finished sequences (log-normal output length, median 200) are freed and replaced "
    "by a new prompt. item = one append / free / allocate call (an append_batch of 32 counts "
    "32). pkv and seed_mutex call append() per token; pkv_batch steps the batch with one "
    "append_batch() call, seed_mutex_batch takes its mutex once per step for the same. "
    "pkv_affine_batch = pkv_batch with Options::affinity_shift = 40 (each benchmark thread's ids "
    "carry its index from bit 40 up, so its sequences live in its own slice of shards).",
    "BM_beam_fork": "beam search, 4 beams: fork the parent 4x, append 1 token to each beam (pkv: "
    "copy-on-write of the shared partial block; seed: writes the shared block), free the parent "
    "and 3 losers. item = one fork / append / free call. pkv_many: the step's 4 forks as one "
    "fork_many() and its 4 frees as one free_many() (items still count one per child forked and "
    "per sequence freed).",
    "BM_mixed_scheduler": "one continuous-batching scheduler iteration per step and thread: "
    "free_block_count + needs_eviction, admit up to 2 requests (allocate; evict on OOM), append 1 "
    "token to each of <=24 running sequences, free finished ones, fork every 16th step, "
    "get_sequence every 4th, select_eviction_target every 32nd, evict() (preemption, any "
    "thread's sequence) every 64th; memory is ample (peak ~55%), so all implementations do the "
    "same work. item = one cache call. pkv_batch / seed_mutex_batch: the decode phase as one "
    "append_batch() call (seed: one lock for it), outcomes handled the same way; "
    "pkv_affine_batch: pkv_batch with thread-affine shards (Options::affinity_shift = 40).",
    "BM_streaming_llm": "each thread decodes 8 long sequences under StreamingLLM(sink 4, window "
    "1020): append 1 token to each; at 1088 kept tokens apply_streaming_llm drops 64. item = one "
    "append or apply call.",
}


def parse_name(run_name):
    base = re.sub(r"/real_time", "", run_name)
    base = re.sub(r"/threads:\d+", "", base)
    workload, _, impl = base.rpartition("/")
    return workload, impl


def load_results(path):
    with open(path) as f:
        data = json.load(f)
    samples = defaultdict(list)  # (workload, impl, threads) -> [items/s]
    medians = {}  # the same from "median" aggregates, for files written with aggregates only
    for b in data["benchmarks"]:
        if "items_per_second" not in b or b.get("error_occurred"):
            continue
        key = parse_name(b["run_name"]) + (int(b["threads"]),)
        if b.get("run_type") == "iteration":
            samples[key].append(float(b["items_per_second"]))
            if b.get("cpu_time") and b.get("real_time"):
                # The same items per second of CPU time (load-robust at 1 thread).
                CPU_SAMPLES[key].append(float(b["items_per_second"]) * float(b["real_time"]) /
                                        float(b["cpu_time"]))
        elif b.get("aggregate_name") == "median":
            medians[key] = [float(b["items_per_second"])]
    for key, v in medians.items():
        samples.setdefault(key, v)
    return data.get("context", {}), samples


def median(xs):
    return statistics.median(xs) if xs else None


def spread(xs):
    if not xs or len(xs) < 2:
        return None
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m if m else None


def fmt_rate(x):
    if x is None:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.1f}"


def fmt_ns(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}x"


def load_callgrind(path):
    out = {}
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        next(f, None)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                out[parts[0]] = float(parts[3])
    return out


def load_memory(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def machine_lines(ctx):
    nproc = os.cpu_count()
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        pass
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cxx = "?"
    try:
        cxx = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        pass
    load = ", ".join(f"{x:.2f}" for x in ctx.get("load_avg", []))
    rev = "?"
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src", "include"],
                               capture_output=True, text=True).stdout.strip()
        rev = head + (" + uncommitted changes in src/ or include/" if dirty else "")
    except OSError:
        pass
    return [
        f"- Code: commit {rev}.",
        f"- Machine: `nproc` = **{nproc} cores** ({model}, {ctx.get('mhz_per_cpu', '?')} MHz), "
        f"{platform.system()} {platform.release()}; load average when the run started: {load}.",
        f"- Compiler: {cxx}; meson buildtype=release (-O3, NDEBUG). Google Benchmark 1.7.1 "
        f"(the Debian package reports library_build_type={ctx.get('library_build_type', '?')}: "
        "that is the harness library itself, not pkv).",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--callgrind")
    ap.add_argument("--memory")
    ap.add_argument("--out", default="bench/RESULTS.md")
    ap.add_argument("--plot", default="bench/throughput.png")
    ap.add_argument("--command", default="scripts/bench-report.sh")
    ap.add_argument("--repetitions", default="?")
    ap.add_argument("--min-time", default="?")
    args = ap.parse_args()

    ctx, samples = load_results(args.results)
    cg = load_callgrind(args.callgrind)
    mem = load_memory(args.memory)

    med = {k: median(v) for k, v in samples.items()}
    spr = {k: spread(v) for k, v in samples.items()}
    reps = max((len(v) for v in samples.values()), default=0)

    workloads = sorted({w for (w, _, _) in samples}, key=workload_key)
    threaded = [w for w in workloads if not w.startswith("BM_evict_victim")]
    evict = [w for w in workloads if w.startswith("BM_evict_victim")]

    lines = []
    lines.append("# pkv benchmark results")
    lines.append("")
    lines.append(f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `{args.command}`.")
    lines.append("")
    lines += machine_lines(ctx)
    lines.append(
        f"- Method: every figure is the **median of {reps} repetitions** "
        f"(--benchmark_repetitions={args.repetitions}, --benchmark_min_time={args.min_time} s, "
        "random interleaving of repetitions), wall-clock (real) time, items summed over all "
        "threads. `±` is the spread (max − min) / median of the repetitions. At 1 thread the "
        "targets also give the ratio per CPU-second (cpu_time), which other load on the machine "
        "disturbs less than wall-clock time.")
    lines.append(
        "- Threads beyond the core count (4 and 8 on a 2-core machine) measure behaviour under "
        "oversubscription (preempted lock holders), not scaling.")
    lines.append(
        "- instr/op: instructions per item at 1 thread, counted by callgrind "
        "(scripts/bench-callgrind.sh; setup and warm-up excluded).")
    lines.append("")

    # ---- targets ----
    lines.append("## Targets")
    lines.append("")
    lines.append("| target | measured | met? |")
    lines.append("| --- | --- | --- |")
    # The decode-step workloads are measured two ways on each side: one call per token (pkv,
    # seed_mutex) and one call per decode step (pkv_batch = append_batch, seed_mutex_batch = the
    # mutex taken once per step). The target is stated against the literal seed (seed_mutex); the
    # other pairings are reported beside it so that no reader has to trust one pairing.
    # pkv_affine_batch is the same API with thread-affine placement, an option (not the default).
    # The target is read on the decode-step API (a decode step appends one token to each of B
    # sequences: append_batch is that call); per-token append is listed for comparison, and the
    # paragraph under the table says why it cannot scale (the shared exact-LRU clock).
    pairs = (("pkv_batch", "seed_mutex", True), ("pkv", "seed_mutex", False),
             ("pkv_batch", "seed_mutex_batch", False), ("pkv_affine_batch", "seed_mutex", False))
    for w in ("BM_decode_step", "BM_mixed_scheduler"):
        for t, need in ((1, 1.5), (2, 4.0)):
            for mine, base, is_target in pairs:
                a, b = med.get((w, mine, t)), med.get((w, base, t))
                if not (a and b):
                    continue
                r = a / b
                verdict = "yes" if r >= need else f"**no** ({r / need * 100:.0f}% of target)"
                if not is_target:
                    verdict = f"(for comparison: {verdict})"
                cpu = ""
                ca = median(CPU_SAMPLES.get((w, mine, t), []))
                cb = median(CPU_SAMPLES.get((w, base, t), []))
                if t == 1 and ca and cb:
                    cpu = f"; per CPU-second {ca / cb:.2f}x"
                lines.append(f"| {w} {mine} ≥ {need}x {base} at {t} thread{'s' if t > 1 else ''} "
                             f"| {r:.2f}x ({fmt_rate(a)} vs {fmt_rate(b)} ops/s{cpu}) | {verdict} |")
    # Beam search: the target is read on pkv_many (fork_many / free_many) against the seed's
    # per-call API; pkv's per-call fork / free is listed for comparison.
    for t, need in ((1, 1.5), (2, 4.0)):
        for mine, is_target in (("pkv_many", True), ("pkv", False)):
            a, b = med.get(("BM_beam_fork", mine, t)), med.get(("BM_beam_fork", "seed_mutex", t))
            if not (a and b):
                continue
            r = a / b
            verdict = "yes" if r >= need else f"**no** ({r / need * 100:.0f}% of target)"
            if not is_target:
                verdict = f"(for comparison: {verdict})"
            lines.append(f"| BM_beam_fork {mine} ≥ {need}x seed_mutex at {t} thread{'s' if t > 1 else ''} "
                         f"| {r:.2f}x ({fmt_rate(a)} vs {fmt_rate(b)} ops/s) | {verdict} |")
    for variant in ("single", "batch16"):
        x = med.get((f"BM_pool_alloc_free/{variant}", "pkv", 1))
        if x:
            ns = 1e9 / x
            verdict = "yes" if ns <= 15 else f"**no** ({ns / 15:.2f}x the budget)"
            c = median(CPU_SAMPLES.get((f"BM_pool_alloc_free/{variant}", "pkv", 1), []))
            cpu = f" ({1e9 / c:.1f} ns of CPU time)" if c else ""
            lines.append(f"| pool alloc+free ≤ 15 ns/block, 1 thread ({variant}) | {ns:.1f} ns/block"
                         f"{cpu} | {verdict} |")
    worst = None
    for w in evict:
        if w.endswith("/100000"):
            x = med.get((w, "pkv", 1))
            if x:
                ns = 1e9 / x
                if worst is None or ns > worst[0]:
                    worst = (ns, w)
    if worst:
        verdict = "yes" if worst[0] <= 5000 else f"**no** ({worst[0] / 5000:.2f}x the budget)"
        lines.append(f"| victim selection at 100k live sequences ≤ 5 µs, every strategy | worst "
                     f"{fmt_ns(worst[0])} ({worst[1].split('/')[1]}) | {verdict} |")
    lines.append("")
    lines.append(
        "The decode-step targets are read on pkv_batch (append_batch: one call appends a token to "
        "each sequence of the step) against seed_mutex (the seed's API, one append per token under "
        "its mutex). The other rows are for comparison: per-token append (pkv) takes a stamp from "
        "the one shared recency clock on every call (exact LRU for calls one after another), so "
        "it cannot scale from 1 to 2 threads; seed_mutex_batch is the mutex design taking its lock "
        "once per step; pkv_affine_batch adds Options::affinity_shift.")
    lines.append("")

    # ---- throughput tables ----
    lines.append("## Throughput (ops/s) by thread count")
    lines.append("")
    for w in threaded:
        impls = [i for i in IMPL_ORDER if any((w, i, t) in med for t in THREADS)]
        impls += sorted({i for (ww, i, _) in med if ww == w} - set(impls))
        lines.append(f"### {w}")
        lines.append("")
        if w in DESCRIPTIONS:
            lines.append(DESCRIPTIONS[w])
            lines.append("")
        is_pool = w.startswith("BM_pool")
        head = "| impl | " + " | ".join(f"{t} thr" for t in THREADS) + " | instr/op (1 thr) |"
        if is_pool:
            head += " ns/block (1 thr) |"
        lines.append(head)
        lines.append("|" + " --- |" * (len(THREADS) + 2 + (1 if is_pool else 0)))
        for i in impls:
            cells = []
            for t in THREADS:
                x = med.get((w, i, t))
                s = spr.get((w, i, t))
                cells.append(fmt_rate(x) + (f" ±{s * 100:.0f}%" if s is not None else ""))
            ipo = cg.get(f"{w}/{i}")
            row = f"| {i} | " + " | ".join(cells) + f" | {ipo:.0f} |" if ipo else \
                f"| {i} | " + " | ".join(cells) + " | – |"
            if is_pool:
                x1 = med.get((w, i, 1))
                row += f" {1e9 / x1:.1f} |" if x1 else " – |"
            lines.append(row)
        ratio_pairs = [("pkv", b) for b in impls
                       if b not in ("pkv", "pkv_batch", "pkv_affine_batch", "pkv_many")]
        if "pkv_many" in impls and "seed_mutex" in impls:
            ratio_pairs.append(("pkv_many", "seed_mutex"))
        for mine in ("pkv_batch", "pkv_affine_batch"):
            if mine in impls:
                ratio_pairs += [(mine, b) for b in ("seed_mutex", "seed_mutex_batch") if b in impls]
        for mine, b in ratio_pairs:
            cells = []
            for t in THREADS:
                a, c = med.get((w, mine, t)), med.get((w, b, t))
                cells.append(fmt_ratio(a / c) if a and c else "–")
            ia, ib = cg.get(f"{w}/{mine}"), cg.get(f"{w}/{b}")
            icell = f"{ia / ib:.2f}x instr" if ia and ib else "–"
            row = f"| **{mine} / {b}** | " + " | ".join(cells) + f" | {icell} |"
            if is_pool:
                row += " |"
            lines.append(row)
        lines.append("")

    # ---- eviction ----
    if evict:
        lines.append("## Victim selection latency (select_eviction_target, 1 thread)")
        lines.append("")
        lines.append("n live sequences of 1..64 tokens, random extra accesses (LFU) and priorities "
                     "0..7; one step = one select_eviction_target(). Median latency per call.")
        lines.append("")
        sizes = sorted({int(w.split("/")[2]) for w in evict})
        strategies = []
        for w in evict:
            s = w.split("/")[1]
            if s not in strategies:
                strategies.append(s)
        head = "| strategy | " + " | ".join(
            f"pkv n={n:,} | seed n={n:,} | ratio" for n in sizes) + " | instr/op pkv / seed (n=10,000) |"
        lines.append(head)
        lines.append("|" + " --- |" * (2 + 3 * len(sizes)))
        for s in strategies:
            cells = []
            for n in sizes:
                w = f"BM_evict_victim/{s}/{n}"
                a, b = med.get((w, "pkv", 1)), med.get((w, "seed_mutex", 1))
                cells += [fmt_ns(1e9 / a) if a else "–", fmt_ns(1e9 / b) if b else "–",
                          fmt_ratio(a / b) if a and b else "–"]
            ia = cg.get(f"BM_evict_victim/{s}/10000/pkv")
            ib = cg.get(f"BM_evict_victim/{s}/10000/seed_mutex")
            icell = f"{ia:,.0f} / {ib:,.0f}" if ia and ib else "–"
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {icell} |")
        lines.append("")

    # ---- memory ----
    if mem:
        lines.append("## Memory")
        lines.append("")
        lines.append(
            f"Heap bytes from a counting global operator new (malloc_usable_size, so allocator "
            f"rounding included), `pkv-memory`. Peak RSS: a fresh process builds a "
            f"{mem['blocks']:,}-block cache and allocates {mem['sequences']:,} sequences of "
            f"{mem['blocks_per_sequence']} blocks each (cache 100% used); ru_maxrss from wait4, "
            f"process floor {mem['rss_floor_kib'] / 1024:.1f} MiB.")
        lines.append("")
        lines.append("| impl | bytes per block (empty cache) | extra bytes per used block | "
                     "bytes per live sequence (fixed) | bytes per sequence of 10 blocks | peak RSS |")
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for i in ("pkv", "seed_mutex"):
            m = mem.get(i)
            if not m:
                continue
            per10 = m["bytes_per_sequence"] + 10 * m["bytes_per_used_block"]
            lines.append(f"| {i} | {m['bytes_per_block']:.1f} | {m['bytes_per_used_block']:.1f} | "
                         f"{m['bytes_per_sequence']:.1f} | {per10:.0f} | "
                         f"{m['peak_rss_kib'] / 1024:.1f} MiB |")
        lines.append("")
        pm = mem.get("prefix")
        if pm:
            lines.append(
                f"Prefix caching (xxh3_128): a {pm['blocks']:,}-block cache of 16-token blocks, "
                f"{pm['cached_blocks']:,} findable blocks from distinct prompts, first held by "
                f"their sequences (allocated with token ids, committed), then freed "
                f"(reclaimable). vllm_mutex = the vLLM-design baseline (baselines/prefix_baseline).")
            lines.append("")
            lines.append("| impl | bytes per block (cache with prefix structures) | "
                         "extra bytes per held cached block | extra bytes per reclaimable block |")
            lines.append("| --- | --- | --- | --- |")
            for i in ("pkv", "pkv_verify_tokens", "vllm_mutex"):
                m = pm.get(i)
                if m:
                    lines.append(f"| {i} | {m['bytes_per_block']:.1f} | "
                                 f"{m['bytes_per_held_cached_block']:.1f} | "
                                 f"{m['bytes_per_reclaimable_block']:.1f} |")
            lines.append("")

    if os.path.exists(args.plot) or shutil.which("gnuplot"):
        lines.append(f"![throughput vs threads]({os.path.basename(args.plot)})")
        lines.append("")

    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"bench-report: wrote {args.out}", file=sys.stderr)

    make_plot(args.plot, threaded, evict, med)


def workload_key(w):
    order = ["BM_pool_alloc_free/single", "BM_pool_alloc_free/batch16", "BM_prefill",
             "BM_decode_step", "BM_beam_fork", "BM_mixed_scheduler", "BM_streaming_llm"]
    if w in order:
        return (0, order.index(w), 0, w)
    if w.startswith("BM_evict_victim/"):
        parts = w.split("/")
        return (1, 0, int(parts[2]) if parts[2].isdigit() else 0, parts[1])
    return (2, 0, 0, w)


def make_plot(png, threaded, evict, med):
    if not shutil.which("gnuplot"):
        print("bench-report: gnuplot not found, no plot", file=sys.stderr)
        return
    tmp = tempfile.mkdtemp(prefix="pkv-plot-")
    try:
        panels = []
        for w in threaded:
            # IMPL_ORDER first, then any other impl names (BM_block_hashes names its algorithms).
            seen = sorted({k[1] for k in med if k[0] == w})
            impls = [i for i in IMPL_ORDER if i in seen] + [i for i in seen if i not in IMPL_ORDER]
            if not any(any((w, i, t) in med for t in THREADS) for i in impls):
                continue  # no thread-count series to draw
            path = os.path.join(tmp, re.sub(r"[^A-Za-z0-9]", "_", w) + ".dat")
            with open(path, "w") as f:
                f.write("# threads " + " ".join(impls) + "\n")
                for t in THREADS:
                    vals = [med.get((w, i, t)) for i in impls]
                    f.write(f"{t} " + " ".join(f"{v / 1e6:.6f}" if v else "NaN" for v in vals) + "\n")
            panels.append((w, path, impls))
        ev_path = None
        ev_series = []
        if evict:
            sizes = sorted({int(w.split("/")[2]) for w in evict})
            strategies = sorted({w.split("/")[1] for w in evict})
            ev_path = os.path.join(tmp, "evict.dat")
            with open(ev_path, "w") as f:
                for n in sizes:
                    row = [str(n)]
                    for s in strategies:
                        for i in ("pkv", "seed_mutex"):
                            x = med.get((f"BM_evict_victim/{s}/{n}", i, 1))
                            row.append(f"{1e9 / x / 1e3:.6f}" if x else "NaN")
                    f.write(" ".join(row) + "\n")
            col = 2
            for s in strategies:
                for i in ("pkv", "seed_mutex"):
                    ev_series.append((col, f"{i} {s}", i))
                    col += 1
        n_panels = len(panels) + (1 if ev_path else 0)
        cols = 3
        rows = (n_panels + cols - 1) // cols
        gp = [
            f"set terminal pngcairo size {cols * 520},{rows * 430} font 'sans,9'",
            f"set output '{png}'",
            f"set multiplot layout {rows},{cols} title 'pkv vs baselines: throughput (M ops/s) vs threads (x axis) "
            f"(median of repetitions, {os.cpu_count()} cores)'",
            "set logscale x 2", "set xtics (1,2,4,8)", "set xrange [0.8:10]",
            "set grid", "set key below horizontal font ',8'", "unset xlabel",
            "set ylabel 'M ops/s'", "set yrange [0:*]",
        ]
        colors = {"pkv": "#d62728", "pkv_batch": "#8c1515", "pkv_affine_batch": "#ff7f0e",
                  "pkv_many": "#e377c2",
                  "pkv_nomag": "#ff9896",
                  "seed_mutex": "#1f77b4", "seed_mutex_batch": "#17becf",
                  "boost_lockfree": "#2ca02c", "vllm_mutex": "#9467bd"}
        for w, path, impls in panels:
            gp.append(f"set title '{w}' noenhanced")
            plots = []
            for k, i in enumerate(impls):
                plots.append(f"'{path}' using 1:{k + 2} with linespoints lw 2 pt 7 "
                             f"lc rgb '{colors.get(i, '#000000')}' title '{i}' noenhanced")
            gp.append("plot " + ", ".join(plots))
        if ev_path:
            gp += ["set title 'BM_evict_victim: select latency vs live sequences (1 thread)'",
                   "set logscale xy", "set xtics auto", "set xrange [500:200000]",
                   "set yrange [*:*]", "set xlabel 'live sequences'", "set ylabel 'µs per select'",
                   "set key below horizontal maxrows 3 font ',7'"]
            plots = []
            for c, title, impl in ev_series:
                dash = "dt 1" if impl == "pkv" else "dt 2"
                plots.append(f"'{ev_path}' using 1:{c} with linespoints {dash} lw 1.5 "
                             f"lc rgb '{colors.get(impl)}' title '{title}' noenhanced")
            gp.append("plot " + ", ".join(plots))
        gp.append("unset multiplot")
        script = os.path.join(tmp, "plot.gp")
        with open(script, "w") as f:
            f.write("\n".join(gp) + "\n")
        r = subprocess.run(["gnuplot", script], capture_output=True, text=True)
        if r.returncode != 0:
            print("bench-report: gnuplot failed:\n" + r.stderr, file=sys.stderr)
        else:
            print(f"bench-report: wrote {png}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

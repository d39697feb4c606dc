#!/usr/bin/env python3
"""Turns the Google Benchmark JSON of bench_batcher, bench_latency, bench_cost_model,
bench_load, bench_deadlines, bench_isolation, bench_keyed and bench_lanes into bench/results/REPORT.md (tables, ratios, goals) and PNG plots drawn by the
gnuplot scripts next to this file. Python 3 standard library only.

    make_report.py --raw bench/results/raw --out bench/results [--gnuplot gnuplot]
                   [--compiler "GNU 12.2.0"] [--source-dir .]

--raw holds throughput.json, latency.json, cost_model.json, load.json, deadlines.json,
isolation.json, keyed.json, weighted.json, lanes.json (any may be missing:
its section says so) and run_info.json (start time, measured source state and total run time, written by
--record-start / --record-run when the bench_report target runs). Plot data goes to
<out>/data/, PNGs to <out>/.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict

# ---------------------------------------------------------------------------------------------
# Reading Google Benchmark JSON


class Results:
    """One Google Benchmark JSON file: aggregates by run name, errors, context."""

    def __init__(self, path):
        self.path = path
        self.present = os.path.exists(path)
        self.context = {}
        self.aggregates = defaultdict(dict)  # run_name -> aggregate_name -> entry
        self.iterations = defaultdict(list)  # run_name -> [entry]
        self.errors = {}  # run_name -> message
        if not self.present:
            return
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
        self.context = document.get("context", {})
        for entry in document.get("benchmarks", []):
            run_name = entry.get("run_name", entry["name"])
            if entry.get("error_occurred"):
                self.errors[run_name] = entry.get("error_message", "error")
                continue
            if entry.get("run_type") == "aggregate":
                self.aggregates[run_name][entry["aggregate_name"]] = entry
            else:
                self.iterations[run_name].append(entry)

    def runs(self):
        names = set(self.aggregates) | set(self.iterations) | set(self.errors)
        return sorted(names)

    def value(self, run_name, field, statistic="median"):
        """The statistic of a field over repetitions (median by default), or None."""
        aggregate = self.aggregates.get(run_name, {}).get(statistic)
        if aggregate is not None and field in aggregate:
            return float(aggregate[field])
        samples = [float(e[field]) for e in self.iterations.get(run_name, []) if field in e]
        if not samples:
            return None
        if statistic == "median":
            return statistics.median(samples)
        if statistic == "mean":
            return statistics.fmean(samples)
        if statistic == "min":
            return min(samples)
        if statistic == "cv" and len(samples) > 1 and statistics.fmean(samples) != 0:
            return statistics.stdev(samples) / statistics.fmean(samples)
        return None

    def samples(self, run_name, field):
        return [float(e[field]) for e in self.iterations.get(run_name, []) if field in e]

    def repetitions(self, run_name):
        return len(self.iterations.get(run_name, []))


def parse_run_name(run_name):
    """'BM_Impl/B:256/P:2/W:2/manual_time' -> ('Impl', {'B': 256, 'P': 2, 'W': 2})."""
    parts = run_name.split("/")
    implementation = parts[0][3:] if parts[0].startswith("BM_") else parts[0]
    parameters = {}
    for part in parts[1:]:
        if ":" in part:
            key, value = part.split(":", 1)
            if key != "iterations":
                try:
                    parameters[key] = int(value)
                except ValueError:
                    parameters[key] = value
    return implementation, parameters


def index_runs(results):
    """{(implementation, frozenset(parameters.items())): run_name}."""
    index = {}
    for run_name in results.runs():
        implementation, parameters = parse_run_name(run_name)
        index[(implementation, frozenset(parameters.items()))] = run_name
    return index


def lookup(index, implementation, **parameters):
    return index.get((implementation, frozenset(parameters.items())))


# ---------------------------------------------------------------------------------------------
# Formatting helpers


def fmt_rate(value):
    if value is None:
        return "n/a"
    if value >= 1e9:
        return f"{value / 1e9:.3g} G/s"
    if value >= 1e6:
        return f"{value / 1e6:.3g} M/s"
    if value >= 1e3:
        return f"{value / 1e3:.3g} k/s"
    return f"{value:.3g} /s"


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_us(value):
    if value is None:
        return "n/a"
    if abs(value) >= 10000:
        return f"{value / 1000:.1f} ms"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def fmt_us_unit(value):
    """Microseconds with their unit ("85.3 us", "12.4 ms")."""
    if value is None:
        return "n/a"
    text = fmt_us(value)
    return text if text.endswith("ms") else text + " us"


def fmt_pct(value):
    return "n/a" if value is None else f"{100 * value:+.1f} %"


def fmt_seconds(value):
    if value is None:
        return "n/a"
    if value >= 1:
        return f"{value:.3f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} us"


def ratio(numerator, denominator):
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def table(header, rows, align=None):
    align = align or (["l"] + ["r"] * (len(header) - 1))
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def status(value, target, milestone=None, higher_is_better=True):
    if value is None:
        return "not measured"
    good = value >= target if higher_is_better else value <= target
    if good:
        return "**met**"
    if milestone is not None and (value >= milestone if higher_is_better else value <= milestone):
        return "milestone met, goal missed"
    return "**missed**"


# ---------------------------------------------------------------------------------------------
# Machine description


def describe_machine():
    """This host, for run_info.json: the report must describe the machine that ran the
    benchmarks, not the one that regenerates the text later."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    uname = platform.uname()
    return {"nproc": nproc, "model": model,
            "os": f"{uname.system} {uname.release} {uname.machine}"}


def machine_section(contexts, compiler, source, machine=None):
    # Runs recorded before run_info.json kept the machine: describe this host, as before.
    machine = machine or describe_machine()
    nproc, model, host = machine["nproc"], machine["model"], machine["os"]
    lines = [
        f"- **Machine:** {nproc} CPUs (`nproc`), CPU model `{model}` (from /proc/cpuinfo), "
        f"{host} (a Firecracker VM). **Shared and noisy**: the 2 cores are "
        "shared with other engineers' builds and a CI run, so absolute numbers move by tens of "
        "percent between runs. Compare ratios measured in the same binary and run, and read "
        "the coefficients of variation (cv) given with them.",
    ]
    if compiler:
        lines.append(f"- **Compiler:** {compiler}; benchmarks built with -O2 -DNDEBUG "
                     "(Release, `cmake --preset bench`). Google Benchmark 1.7.1 from Debian, "
                     "which reports itself as a debug build; that only affects its own loop, "
                     "and every benchmark here times itself (manual time).")
    for name, context in contexts:
        if not context:
            continue
        load = context.get("load_avg")
        load_text = ", ".join(f"{x:.2f}" for x in load) if load else "n/a"
        lines.append(f"- `{name}` ran {context.get('date', '?')}: load average at start "
                     f"{load_text} (1, 5, 15 min; 2.0 would mean both cores busy).")
    if source:
        lines.append(f"- **Source measured:** {source}")
    return "\n".join(lines)


def describe_source(source_dir):
    """The commit, plus the library files with uncommitted changes and a hash of that diff."""
    if not source_dir:
        return ""
    try:
        def git(*arguments):
            return subprocess.run(["git", "-C", source_dir, *arguments], capture_output=True,
                                  text=True, check=True).stdout
        commit = git("rev-parse", "--short", "HEAD").strip()
        changed = git("diff", "--name-only", "HEAD", "--", "include").split()
        text = f"commit `{commit}`"
        if changed:
            import hashlib
            digest = hashlib.sha1(git("diff", "HEAD", "--", "include").encode()).hexdigest()[:10]
            text += (" **plus uncommitted changes** to " + ", ".join(f"`{c}`" for c in changed)
                     + f" (diff sha1 {digest})")
        return text + "."
    except (OSError, subprocess.CalledProcessError):
        return ""


# ---------------------------------------------------------------------------------------------
# Throughput

IMPLEMENTATIONS = [
    ("Microbatch_Post", "microbatch post (fire-and-forget)"),
    ("Microbatch_Post_Cap4B", "microbatch post, capacity 4 B (old default)"),
    ("Microbatch_PostN", "microbatch post_n (bulk runs)"),
    ("Microbatch_Post_Lanes", "microbatch post, lanes = P"),
    ("Microbatch_Callback", "microbatch submit + callback"),
    ("Microbatch_Handle", "microbatch submit -> Handle"),
    ("Moodycamel", "moodycamel hand-off (raw floor)"),
    ("Moodycamel_Bulk", "moodycamel enqueue_bulk (bulk runs)"),
    ("MutexBatcher", "mutex + condvar batcher"),
    ("MutexPromise", "mutex batcher + promise/future"),
    ("PerItemDispatch", "per-item dispatch on ThreadPool"),
    ("Sequential", "sequential slices (1 thread)"),
]
BATCH_SIZES = [1, 16, 256, 4096]
THREADS = [(1, 1), (1, 2), (2, 1), (2, 2)]


def throughput_value(results, index, implementation, b, p, w, statistic="median"):
    if implementation == "PerItemDispatch":
        run = lookup(index, implementation, P=p, W=w)
    elif implementation == "Sequential":
        run = lookup(index, implementation, B=b)
    else:
        run = lookup(index, implementation, B=b, P=p, W=w)
    if run is None:
        return None
    return results.value(run, "items_per_second", statistic)


def throughput_section(results, data_dir):
    out = []
    if not results.present:
        return "_bench_batcher results missing (throughput.json)._\n", {}
    index = index_runs(results)
    context = results.context
    reps = max((results.repetitions(r) for r in results.runs()), default=0)
    out.append(
        "Items per second (median of "
        f"{reps} repetitions, random interleaving) pushing {context.get('items_per_run', '?')} "
        "items (a quarter of that for the batchers at B = 1) through a fresh instance "
        "per iteration; the per-batch work is trivial (sum the batch into one "
        f"{context.get('sink', 'sink')}), so this is the cost of batching and hand-off. "
        f"Capacity: {context.get('capacity', '?')}; max_delay {context.get('max_delay', '?')}. "
        "Per-item dispatch has no B (one task per item); sequential runs on the producer thread "
        "(P = 1, no workers) and is repeated in every table as the single-thread reference.\n")
    for p, w in THREADS:
        out.append(f"\n**P = {p} producer(s), W = {w} worker(s)**\n")
        rows = []
        for implementation, label in IMPLEMENTATIONS:
            cells = [label]
            for b in BATCH_SIZES:
                value = throughput_value(results, index, implementation, b, p, w)
                cv = throughput_value(results, index, implementation, b, p, w, "cv")
                cell = fmt_rate(value)
                if value is not None and cv is not None:
                    cell += f" (cv {100 * cv:.0f} %)"
                cells.append(cell)
            rows.append(cells)
        out.append(table(["implementation"] + [f"B = {b}" for b in BATCH_SIZES], rows))
        out.append("")
        # Plot data: one file per (P, W); columns = implementations.
        with open(os.path.join(data_dir, f"throughput_P{p}_W{w}.dat"), "w",
                  encoding="utf-8") as stream:
            stream.write("B " + " ".join(f'"{label}"' for _, label in IMPLEMENTATIONS) + "\n")
            for b in BATCH_SIZES:
                values = [throughput_value(results, index, impl, b, p, w)
                          for impl, _ in IMPLEMENTATIONS]
                stream.write(f"{b} " + " ".join("NaN" if v is None else f"{v:.6g}"
                                                for v in values) + "\n")

    # Ratios.
    comparisons = [
        ("post / moodycamel", "Microbatch_Post", "Moodycamel"),
        ("post / mutex batcher", "Microbatch_Post", "MutexBatcher"),
        ("post / post with capacity 4 B", "Microbatch_Post", "Microbatch_Post_Cap4B"),
        ("post_n / moodycamel enqueue_bulk", "Microbatch_PostN", "Moodycamel_Bulk"),
        ("post_n / post", "Microbatch_PostN", "Microbatch_Post"),
        ("handle / mutex batcher", "Microbatch_Handle", "MutexBatcher"),
        ("post / per-item dispatch", "Microbatch_Post", "PerItemDispatch"),
        ("post lanes=P / moodycamel", "Microbatch_Post_Lanes", "Moodycamel"),
        ("post lanes=P / mutex batcher", "Microbatch_Post_Lanes", "MutexBatcher"),
        ("post lanes=P / per-item dispatch", "Microbatch_Post_Lanes", "PerItemDispatch"),
        ("handle / promise+future", "Microbatch_Handle", "MutexPromise"),
        ("callback / promise+future", "Microbatch_Callback", "MutexPromise"),
        ("callback / mutex batcher", "Microbatch_Callback", "MutexBatcher"),
    ]
    ratios = {}
    out.append("\n### Ratios against the baselines (same binary, same run; medians)\n")
    for p, w in [(2, 2), (2, 1), (1, 1), (1, 2)]:
        out.append(f"\n**P = {p}, W = {w}**\n")
        rows = []
        for label, numerator, denominator in comparisons:
            cells = [label]
            for b in BATCH_SIZES:
                value = ratio(throughput_value(results, index, numerator, b, p, w),
                              throughput_value(results, index, denominator, b, p, w))
                ratios[(label, b, p, w)] = value
                cells.append(fmt_ratio(value))
            rows.append(cells)
        out.append(table(["ratio"] + [f"B = {b}" for b in BATCH_SIZES], rows))
        out.append("")

    # Capacity sensitivity at B = 256.
    rows = []
    for p, w in THREADS:
        get = lambda impl: throughput_value(results, index, impl, 256, p, w)
        post, post64 = get("Microbatch_Post"), get("Microbatch_Post_Cap64B")
        mutex, mutex64 = get("MutexBatcher"), get("MutexBatcher_Cap64B")
        moody = get("Moodycamel")
        if post64 is None and mutex64 is None:
            continue
        rows.append([f"P = {p}, W = {w}", fmt_rate(post), fmt_rate(post64), fmt_rate(mutex),
                     fmt_rate(mutex64), fmt_rate(moody), fmt_ratio(ratio(post64, moody)),
                     fmt_ratio(ratio(post64, mutex64))])
        ratios[("post cap 64B / moodycamel", 256, p, w)] = ratio(post64, moody)
        ratios[("post / mutex, both cap 64B", 256, p, w)] = ratio(post64, mutex64)
    if rows:
        out.append("\n### Capacity sensitivity at B = 256\n")
        out.append("The bounded batchers above get max(4 B, 1024) items of capacity (microbatch "
                   "as its default, the mutex batchers as an option); the "
                   "moodycamel and per-item baselines are unbounded. The same runs with a "
                   "capacity of 64 B (16384 items) show how much of a gap is the bound (producers "
                   "blocking while the workers are descheduled) rather than the hand-off.\n")
        out.append(table(["threads", "post, cap 4B", "post, cap 64B", "mutex, cap 4B",
                          "mutex, cap 64B", "moodycamel (unbounded)", "post 64B / moodycamel",
                          "post / mutex, both 64B"], rows))
        out.append("")
    out.append(issue13_goals(results, index))
    return "\n".join(out), ratios


def issue13_goals(results, index):
    """Issue 13's goals as same-run ratios at every (B, P, W), defaults as the headline."""
    goals = [
        ("post >= 1.5x mutex batcher (every B)", "Microbatch_Post", "MutexBatcher", 1.5,
         BATCH_SIZES),
        ("post >= 1.0x moodycamel hand-off (B >= 256)", "Microbatch_Post", "Moodycamel", 1.0,
         [256, 4096]),
        ("post_n >= 1.0x moodycamel enqueue_bulk", "Microbatch_PostN", "Moodycamel_Bulk", 1.0,
         BATCH_SIZES),
        ("handle >= 1.0x mutex batcher (no results)", "Microbatch_Handle", "MutexBatcher", 1.0,
         BATCH_SIZES),
        ("per-batch cost at B = 1 <= mutex batcher (post / mutex >= 1.0x)", "Microbatch_Post",
         "MutexBatcher", 1.0, [1]),
    ]
    rows = []
    for label, numerator, denominator, target, sizes in goals:
        met, total, worst = 0, 0, None
        cells = []
        for b in sizes:
            for p, w in THREADS:
                value = ratio(throughput_value(results, index, numerator, b, p, w),
                              throughput_value(results, index, denominator, b, p, w))
                if value is None:
                    continue
                total += 1
                met += 1 if value >= target else 0
                worst = value if worst is None else min(worst, value)
                if value < target:
                    cells.append(f"B={b} P={p} W={w}: {value:.2f}x")
        if total == 0:
            continue
        rows.append([label, f"{met} of {total}", fmt_ratio(worst),
                     "; ".join(cells) if cells else "-"])
    if not rows:
        return ""
    return ("\n### Issue 13 goals (default options; same run)\n\n"
            + table(["goal", "met", "worst ratio", "misses"], rows) + "\n")


# ---------------------------------------------------------------------------------------------
# Latency

LOAD_IMPLEMENTATIONS = [
    ("Load_Microbatch_Callback", "microbatch submit + callback"),
    ("Load_Microbatch_Post", "microbatch post"),
    ("Load_MutexBatcher", "mutex + condvar batcher"),
]
TIME_BOUND_IMPLEMENTATIONS = [
    ("TimeBound_Microbatch", "microbatch (as shipped)"),
    ("TimeBound_Microbatch_InlineExecutor", "microbatch, inline executor (timer alone)"),
    ("TimeBound_Microbatch_TimerSlack1ns", "microbatch, threads with 1 ns timer slack"),
    ("TimeBound_MutexBatcher", "mutex + condvar batcher"),
]
IDLE_IMPLEMENTATIONS = [
    ("IdleWakeups_Microbatch", "microbatch (timer + 1 worker)"),
    ("IdleWakeups_MutexBatcher", "mutex + condvar batcher (dispatcher + 1 worker)"),
    ("IdleWakeups_Moodycamel", "moodycamel hand-off (1 polling consumer)"),
]


def latency_section(results, data_dir):
    if not results.present:
        return "_bench_latency results missing (latency.json)._\n", {}
    index = index_runs(results)
    found = {}
    out = []
    reps = max((results.repetitions(r) for r in results.runs()), default=0)

    intervals = sorted({params.get("interval_ns") for (impl, params_set) in index
                        for params in [dict(params_set)] if impl.startswith("Load_")},
                       key=lambda v: -v)
    out.append("### Submit-to-result latency under load\n")
    out.append(
        f"B = 256, max_delay = 1 ms, W = 1, capacity 4 B, one paced producer (open loop: it "
        "sleeps through long gaps with 1 ns timer slack and busy-waits the last 20 us; a late "
        "item is submitted at once, never in a catch-up burst). Latency runs from just before "
        "the submit call to the item's callback (callback mode) or to the end of its "
        f"process_batch (post mode, mutex batcher). Microseconds; median over {reps} "
        "repetitions of each percentile. `offered` is the rate the producer achieved; "
        "interval 0 = saturation (submit as fast as possible, blocking on capacity).\n")
    rows = []
    for interval in intervals:
        for implementation, label in LOAD_IMPLEMENTATIONS:
            run = lookup(index, implementation, interval_ns=interval)
            if run is None:
                continue
            get = lambda field: results.value(run, field)
            nominal = "saturation" if interval == 0 else f"{1e9 / interval / 1e3:.0f} k/s"
            rows.append([nominal, label, fmt_rate(get("offered_per_s")), fmt_us(get("p50_us")),
                         fmt_us(get("p99_us")), fmt_us(get("p999_us")), fmt_us(get("max_us"))])
    out.append(table(["nominal load", "implementation", "offered", "p50 us", "p99 us",
                      "p99.9 us", "max us"], rows, ["l", "l", "r", "r", "r", "r", "r"]))
    for implementation, label in LOAD_IMPLEMENTATIONS:
        with open(os.path.join(data_dir, f"latency_{implementation}.dat"), "w",
                  encoding="utf-8") as stream:
            stream.write("offered p50 p99 p999\n")
            for interval in intervals:
                run = lookup(index, implementation, interval_ns=interval)
                if run is None:
                    continue
                values = [results.value(run, f) for f in
                          ("offered_per_s", "p50_us", "p99_us", "p999_us")]
                if None not in values:
                    stream.write(" ".join(f"{v:.6g}" for v in values) + "\n")

    out.append("\n### Time-bound accuracy (low load, B = 4096 never fills)\n")
    out.append(
        "Lateness = start of process_batch - submit of the batch's first (only) item - "
        "max_delay, microseconds; one item per batch, each submitted into an idle batcher. "
        "`timer share` = Stats::queue_delay - max_delay (mean): the part before the worker "
        "hand-off. The inline-executor row runs the batch on the timer thread (timer lateness "
        "alone); the 1 ns timer-slack row is the proposed fix, applied from outside (threads "
        "inherit the slack of the thread that creates them). Median over "
        f"{reps} repetitions of each percentile.\n")
    rows = []
    delays = sorted({dict(params_set).get("delay_us") for (impl, params_set) in index
                     if impl.startswith("TimeBound_")})
    for delay in delays:
        for implementation, label in TIME_BOUND_IMPLEMENTATIONS:
            run = lookup(index, implementation, delay_us=delay)
            if run is None:
                continue
            get = lambda field: results.value(run, field)
            found[(implementation, delay)] = {f: get(f) for f in
                                              ("p50_us", "p99_us", "max_us", "samples")}
            rows.append([f"{delay} us", label, f"{get('samples'):.0f}" if get("samples") else "?",
                         fmt_us(get("p50_us")), fmt_us(get("p99_us")), fmt_us(get("max_us")),
                         fmt_us(get("dispatch_late_mean_us"))])
    out.append(table(["max_delay", "implementation", "samples", "p50 late us", "p99 late us",
                      "max late us", "timer share (mean) us"], rows,
                     ["r", "l", "r", "r", "r", "r", "r"]))

    out.append("\n### Idle batcher: no periodic wake-ups\n")
    out.append(
        "After one item went through (so the timer handled a deadline), the threads the "
        "instance created are observed for 200 ms while it is idle: context switches from "
        "/proc/self/task/<tid>/status (voluntary and involuntary) and CPU time from "
        f"/proc/self/task/<tid>/schedstat. Median over {reps} repetitions.\n")
    rows = []
    for implementation, label in IDLE_IMPLEMENTATIONS:
        run = lookup(index, implementation)
        if run is None:
            continue
        get = lambda field: results.value(run, field)
        found[implementation] = {f: get(f) for f in ("voluntary_switches", "involuntary_switches",
                                                     "cpu_ms", "last_thread_voluntary")}
        rows.append([label, f"{get('threads'):.0f}", f"{get('voluntary_switches'):.0f}",
                     f"{get('involuntary_switches'):.0f}",
                     f"{get('last_thread_voluntary'):.0f}", f"{get('cpu_ms'):.2f}"])
    out.append(table(["instance", "threads", "voluntary switches / 200 ms",
                      "involuntary / 200 ms", "timer/dispatcher thread voluntary",
                      "CPU ms / 200 ms"], rows))
    out.append("")
    return "\n".join(out), found


# ---------------------------------------------------------------------------------------------
# Cost model


def cost_model_section(results, data_dir):
    if not results.present:
        return "_bench_cost_model results missing (cost_model.json)._\n", {}
    index = index_runs(results)
    out = []
    calibration = lookup(index, "Calibration")
    if calibration:
        get = lambda field: results.value(calibration, field)
        out.append(
            f"Synthetic process_batch busy-waits alpha + beta * size with nominal alpha = "
            f"{get('nominal_alpha_us'):.3g} us, beta = {get('nominal_beta_us'):.3g} us. "
            f"**Calibration** (W = 1, {get('sizes'):.0f} sizes from 1 to 1024, "
            f"{get('samples'):.0f} batches timed inside process_batch, the median per size fed to "
            f"microbatch::CostModelFitter): **alpha = {get('alpha_us'):.3f} us, beta = "
            f"{get('beta_us'):.4f} us, R^2 = {get('r_squared'):.5f}**.\n")
    out.append(
        "Sweep: one producer posts N items into a fresh batcher (max_batch_size B, W workers, "
        f"capacity {results.context.get('capacity_batches', '4')} B, no time bound so every "
        "batch but the last is full); T runs from the "
        "first post to close() returning. `simple` = ceil(N/B) T_batch(B) / min(W, batches) "
        "(CostModel::predicted_total), `makespan` = CostModel::predicted_makespan (list "
        "schedule incl. the partial last batch). Errors are (measured - predicted) / predicted "
        "with the median T of the repetitions; `min T` is the fastest repetition. `run-queue` "
        "is the share of the W worker-seconds the workers spent runnable but not running "
        "(from /proc/self/task/<tid>/schedstat, median over repetitions): CPU time taken by "
        "the producer, the other worker or other processes on this shared 2-core machine. "
        "The last column is a diagnostic, not a measurement: the error once that waiting is "
        "taken out of T (T x (1 - run-queue share)); what remains is the model plus the "
        "library's own per-batch overhead.\n")
    rows = []
    errors = []  # (W, error_total, error_makespan, error_makespan_min)
    skipped = []
    plot = defaultdict(dict)  # N -> B -> {W: (measured, makespan, simple)}
    for run in results.runs():
        implementation, params = parse_run_name(run)
        if implementation != "CostModel":
            continue
        n, b, w = params["N"], params["B"], params["W"]
        if run in results.errors and not results.iterations.get(run):
            skipped.append((n, b, w, results.errors[run]))
            continue
        measured = results.value(run, "measured_s")
        fastest = results.value(run, "measured_s", "min")
        simple = results.value(run, "predicted_total_s")
        makespan = results.value(run, "predicted_makespan_s")
        share = results.value(run, "worker_runqueue_share")
        if None in (measured, simple, makespan):
            continue
        error_total = (measured - simple) / simple
        error_makespan = (measured - makespan) / makespan
        error_fastest = (fastest - makespan) / makespan if fastest is not None else None
        # Diagnostic: the time the workers spent runnable-but-not-running removed from T.
        error_uncontended = (None if share is None else
                             (measured * (1.0 - share) - makespan) / makespan)
        errors.append((w, error_total, error_makespan, error_fastest, error_uncontended))
        plot[n][b] = plot[n].get(b, {})
        plot[n][b][w] = (measured, makespan, simple)
        rows.append((n, w, b, [f"{n:,}", str(w), str(b), fmt_seconds(measured),
                               fmt_seconds(fastest), fmt_seconds(simple), fmt_seconds(makespan),
                               fmt_pct(error_total), fmt_pct(error_makespan),
                               fmt_pct(error_fastest),
                               "n/a" if share is None else f"{100 * share:.0f} %",
                               fmt_pct(error_uncontended)]))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    out.append(table(["N", "W", "B", "measured T (median)", "min T", "simple", "makespan",
                      "err simple", "err makespan", "err makespan (min T)", "run-queue",
                      "err makespan, run-queue wait removed"],
                     [r[3] for r in rows]))
    if skipped:
        out.append("\nSkipped to bound the run time (predicted T above --max_point_seconds), "
                   "not measured:\n")
        for n, b, w, message in sorted(skipped):
            out.append(f"- N = {n:,}, B = {b}, W = {w}: {message}")
    summary = {}

    def summarise(label, subset, position):
        values = [abs(e[position]) for e in subset if e[position] is not None]
        if not values:
            return None
        summary[label] = (statistics.median(values), max(values), len(values))
        return summary[label]

    out.append("\n**Error summary** (absolute relative errors over the measured points)\n")
    rows = []
    for label, predicate in [("all points", lambda e: True), ("W = 1", lambda e: e[0] == 1),
                             ("W = 2", lambda e: e[0] == 2)]:
        subset = [e for e in errors if predicate(e)]
        for name, position in [("simple", 1), ("makespan", 2), ("makespan, min T", 3),
                               ("makespan, run-queue wait removed (diagnostic)", 4)]:
            result = summarise(f"{label}/{name}", subset, position)
            if result:
                rows.append([label, name, str(result[2]), f"{100 * result[0]:.1f} %",
                             f"{100 * result[1]:.1f} %"])
    out.append(table(["points", "prediction", "count", "median abs. error", "worst abs. error"], rows,
                     ["l", "l", "r", "r", "r"]))
    for n in sorted(plot):
        with open(os.path.join(data_dir, f"cost_model_N{n}.dat"), "w",
                  encoding="utf-8") as stream:
            stream.write("B measured_W1 makespan_W1 simple_W1 measured_W2 makespan_W2 "
                         "simple_W2\n")
            for b in sorted(plot[n]):
                cells = [str(b)]
                for w in (1, 2):
                    values = plot[n][b].get(w)
                    cells += ["NaN"] * 3 if values is None else [f"{v:.6g}" for v in values]
                stream.write(" ".join(cells) + "\n")
    out.append("")
    return "\n".join(out), summary


# ---------------------------------------------------------------------------------------------
# Batch formation under load (bench_load, issue 10)

FORMATION_POLICIES = [
    ("MB_Default", "microbatch, defaults"),
    ("MB_Delay0", "microbatch, max_delay(0)"),
    ("MB_357efd2", "357efd2 rule (size/time only)"),
    ("Pull_B32_D1000", "pull (Triton), max_delay 1 ms"),
    ("Pull_B32_D0", "pull (Triton), max_delay 0"),
    ("Cork", "CORK (BentoML rule)"),
]
FORMATION_COSTS = [(1000, "alpha = 1 ms, beta = 10 us"), (50, "alpha = 50 us, beta = 1 us")]
GOAL_LOADS = (10, 30, 50, 70, 90)  # the open-loop goals; 120 % (overload) is shown, not judged


def verdict(ok):
    return "not measured" if ok is None else ("**MET**" if ok else "**MISSED**")


def formation_section(results, data_dir):
    """Closed- and open-loop tables, plot data and goal rows; (text, goal rows)."""
    if not results.present:
        return "_bench_load results missing (load.json)._\n", []
    index = index_runs(results)
    reps = max((results.repetitions(r) for r in results.runs()), default=0)
    load = results.context.get("load_avg")
    load_text = ", ".join(f"{x:.2f}" for x in load) if load else "n/a"
    out = [f"One run of `bench_load` ({reps} repetition(s) per configuration, random order; "
           f"medians when repeated); load average at its start {load_text}. B = 32, "
           "max_delay = 1 ms unless the policy says otherwise, capacity 128 items for every "
           "policy. process_batch busy-waits alpha + beta n on steady_clock."]
    loads_1m = [v for run in results.runs() for v in results.samples(run, "load_1m") if v >= 0]
    if loads_1m:
        out.append(f"1-minute load average at the start of each configuration: min "
                   f"{min(loads_1m):.2f}, median {statistics.median(loads_1m):.2f}, max "
                   f"{max(loads_1m):.2f} (2.0 = both cores busy).")
    if "load_policy_357efd2" in results.context:
        out.append(f"\n**357efd2 rule:** {results.context['load_policy_357efd2']}.")
    goals = []

    # Closed loop.
    out.append("\n### Closed loop: throughput / physical limit (mean batch size)\n")
    out.append("N clients each loop `submit(x).get()`. Limit = min(N, W b) / (alpha + beta b), "
               "b = min(B, ceil(N / W)); the limit ignores the cost of completing items and of "
               "the clients themselves (on 2 cores, W = 2 workers spinning leave no core for the "
               "clients).\n")
    for alpha, cost_label in FORMATION_COSTS:
        for w in (1, 2):
            ns = sorted({dict(p)["N"] for (impl, p) in index
                         if impl.startswith("Closed_") and dict(p).get("alpha_us") == alpha
                         and dict(p).get("W") == w})
            if not ns:
                continue
            out.append(f"\n**{cost_label}, W = {w}**\n")
            rows = []
            plot = {}
            for implementation, label in FORMATION_POLICIES:
                cells = [label]
                for n in ns:
                    run = lookup(index, "Closed_" + implementation, alpha_us=alpha, W=w, N=n)
                    fraction = results.value(run, "fraction") if run else None
                    batch = results.value(run, "mean_batch") if run else None
                    plot[(implementation, n)] = fraction
                    cells.append("n/a" if fraction is None else
                                 f"{fraction:.2f} ({batch:.1f})" if batch is not None else
                                 f"{fraction:.2f}")
                rows.append(cells)
            out.append(table(["policy"] + [f"N = {n}" for n in ns], rows))
            with open(os.path.join(data_dir, f"load_closed_a{alpha}_W{w}.dat"), "w",
                      encoding="utf-8") as stream:
                stream.write("N " + " ".join(impl for impl, _ in FORMATION_POLICIES) + "\n")
                for n in ns:
                    stream.write(f"{n} " + " ".join(
                        "NaN" if plot[(impl, n)] is None else f"{plot[(impl, n)]:.4g}"
                        for impl, _ in FORMATION_POLICIES) + "\n")
            fractions = [(plot[("MB_Default", n)], n) for n in ns
                         if plot[("MB_Default", n)] is not None]
            worst = min(fractions) if fractions else None
            goals.append([f"closed loop, defaults, {cost_label}, W = {w}: throughput >= 0.9 of "
                          "the limit at every N",
                          "n/a" if worst is None else f"min {worst[0]:.2f} (N = {worst[1]})",
                          verdict(None if worst is None else worst[0] >= 0.9)])

    # Open loop.
    out.append("\n### Open loop: p50 / p99 latency (ms) per offered load\n")
    out.append("Poisson arrivals at a share of W B / (alpha + beta B), W = 1; latency from each "
               "item's scheduled arrival to its completion. Below 100 % the generator uses a "
               "blocking submit; at 120 % `try_submit`, rejected items excluded (rej = share "
               "rejected). `>=`: the generator gave up more than 1 % of the items (the batcher "
               "could not keep up), so the percentile is a lower bound. Best fixed = the lowest "
               "p99 of the pull batcher over the grid B in {8, 16, 32} x max_delay in {0, 250, "
               "500, 1000} us at that load, picked in hindsight.\n")

    def open_value(implementation, alpha, pct, field):
        run = lookup(index, "Open_" + implementation, alpha_us=alpha, W=1, load=pct)
        return (results.value(run, field) if run else None), run

    def open_cell(implementation, alpha, pct):
        p50, run = open_value(implementation, alpha, pct, "p50_us")
        p99, _ = open_value(implementation, alpha, pct, "p99_us")
        if run is None or p99 is None:
            return "n/a", None
        items = results.value(run, "items") or 0
        unserved = results.value(run, "unserved") or 0
        rejected = results.value(run, "rejected") or 0
        bound = ">=" if items and unserved > 0.01 * items else ""
        text = f"{bound}{p50 / 1000:.2f} / {bound}{p99 / 1000:.2f}"
        if rejected and items:
            text += f" (rej {100 * rejected / items:.0f} %)"
        return text, p99

    for alpha, cost_label in FORMATION_COSTS:
        loads = sorted({dict(p)["load"] for (impl, p) in index
                        if impl.startswith("Open_") and dict(p).get("alpha_us") == alpha})
        if not loads:
            continue
        grid = sorted({impl[len("Open_"):] for (impl, p) in index
                       if impl.startswith("Open_Pull_B") and dict(p).get("alpha_us") == alpha})
        out.append(f"\n**{cost_label}**\n")
        rows, ratio_rows, plot = [], [], {}
        for pct in loads:
            cells = [f"{pct} %"]
            for implementation, _ in FORMATION_POLICIES:
                text, p99 = open_cell(implementation, alpha, pct)
                plot[(implementation, pct)] = p99
                cells.append(text)
            best = None
            for name in grid:
                p99, _ = open_value(name, alpha, pct, "p99_us")
                if p99 is not None and (best is None or p99 < best[0]):
                    best = (p99, name)
            plot[("best", pct)] = None if best is None else best[0]
            cells.append("n/a" if best is None else f"{best[0] / 1000:.2f} ({best[1]})")
            rows.append(cells)
            ratio_cells = [f"{pct} %"]
            for implementation, _ in FORMATION_POLICIES:
                ratio_cells.append(fmt_ratio(ratio(plot[(implementation, pct)],
                                                   plot[("best", pct)])))
            ratio_rows.append(ratio_cells)
        out.append(table(["load"] + [label for _, label in FORMATION_POLICIES]
                         + ["best fixed p99 (setting)"], rows))
        out.append(f"\np99 / best fixed in hindsight, {cost_label}:\n")
        out.append(table(["load"] + [label for _, label in FORMATION_POLICIES], ratio_rows))
        with open(os.path.join(data_dir, f"load_open_a{alpha}.dat"), "w",
                  encoding="utf-8") as stream:
            stream.write("load " + " ".join(impl for impl, _ in FORMATION_POLICIES)
                         + " best_fixed\n")
            for pct in loads:
                values = [plot[(impl, pct)] for impl, _ in FORMATION_POLICIES]
                values.append(plot[("best", pct)])
                stream.write(f"{pct} " + " ".join("NaN" if v is None else f"{v / 1000:.4g}"
                                                  for v in values) + "\n")

        def worst_ratio(numerator, denominator):
            values = [(ratio(plot.get((numerator, pct)), plot.get(("best", pct)) if denominator
                             is None else plot.get((denominator, pct))), pct)
                      for pct in loads if pct in GOAL_LOADS]
            values = [v for v in values if v[0] is not None]
            return max(values) if values else None

        for numerator, denominator, target, text in (
                ("MB_Default", None, 1.1, "defaults p99 <= 1.1 x best fixed in hindsight"),
                ("MB_Default", "Cork", 1.0, "defaults p99 <= CORK p99"),
                ("MB_Delay0", None, 2.0, "max_delay(0) p99 <= 2 x best fixed in hindsight")):
            worst = worst_ratio(numerator, denominator)
            goals.append([f"open loop, {cost_label}: {text} at every load "
                          f"({', '.join(str(x) for x in GOAL_LOADS)} %)",
                          "n/a" if worst is None else f"worst {worst[0]:.2f}x (load {worst[1]} %)",
                          verdict(None if worst is None else worst[0] <= target)])
    out.append("")
    return "\n".join(out), goals


# ---------------------------------------------------------------------------------------------
# Goals


def formation_throughput_section(results):
    """Post with the default batch formation vs the 357efd2 size/time rule, same run."""
    if not results.present:
        return "_bench_batcher results missing (throughput.json)._\n", []
    index = index_runs(results)
    rows, worst = [], None
    for b in (1, 16, 256, 4096):
        for p in (1, 2):
            for w in (1, 2):
                new = throughput_value(results, index, "Microbatch_Post", b, p, w)
                old = throughput_value(results, index, "Microbatch_Post_357efd2", b, p, w)
                r = ratio(new, old)
                if r is None:
                    continue
                worst = r if worst is None or r < worst else worst
                rows.append([f"B = {b}, P = {p}, W = {w}", fmt_rate(new), fmt_rate(old),
                             fmt_ratio(r)])
    if not rows:
        return "_no Microbatch_Post_357efd2 rows in throughput.json._\n", []
    text = ("`post` with default options (worker-aware, early sealing) vs the same batcher with "
            "the size/time-only rule of 357efd2 (`max_in_flight(unlimited_in_flight)`, "
            "`seal_early(false)`), medians of the same interleaved run.\n\n" +
            table(["shape", "default", "357efd2 rule", "ratio"], rows, ["l", "r", "r", "r"]))
    goals = [["bench_batcher post >= 0.95x the 357efd2 rule, every shape",
              f"worst {fmt_ratio(worst)}", verdict(worst >= 0.95)]]
    return text, goals


# ---------------------------------------------------------------------------------------------
# Keyed batching (bench_keyed, issue 12)


def keyed_section(results):
    """KeyedBatcher vs one Batcher per key on a shared ThreadPool(2): threads, throughput, p99."""
    if not results.present:
        return "_bench_keyed results missing (keyed.json)._\n", []
    index = index_runs(results)
    rows, worst, thread_counts = [], None, set()
    for keys in (1, 10, 100, 1000):
        keyed = lookup(index, "Keyed", keys=keys)
        separate = lookup(index, "Separate", keys=keys)
        if keyed is None or separate is None:
            continue
        keyed_rate = results.value(keyed, "per_s")
        separate_rate = results.value(separate, "per_s")
        r = ratio(keyed_rate, separate_rate)
        if r is not None:
            worst = r if worst is None or r < worst else worst
        keyed_threads = results.value(keyed, "threads_created")
        separate_threads = results.value(separate, "threads_created")
        if keyed_threads is not None:
            thread_counts.add(int(keyed_threads))
        rows.append([str(keys),
                     f"{keyed_threads:.0f}" if keyed_threads is not None else "n/a",
                     f"{separate_threads:.0f}" if separate_threads is not None else "n/a",
                     fmt_rate(keyed_rate), fmt_rate(separate_rate), fmt_ratio(r),
                     fmt_us_unit(results.value(keyed, "p99_us")),
                     fmt_us_unit(results.value(separate, "p99_us")),
                     f"{results.value(keyed, 'mean_batch'):.1f}",
                     f"{results.value(separate, 'mean_batch'):.1f}"])
    if not rows:
        return "_no BM_Keyed / BM_Separate rows in keyed.json._\n", []
    load = [results.value(name, "load_1m") for name in results.runs()]
    load = [value for value in load if value is not None]
    text = ("One KeyedBatcher vs one Batcher per key, both on one shared ThreadPool(2): B = 64, "
            "max_delay 1 ms, max_in_flight 2, the same total capacity, two producers, uniform "
            "keys, process_batch 5 us + 0.1 us/item. Medians over repetitions of one "
            "interleaved run" + (f" (1-minute load {min(load):.2f}-{max(load):.2f})" if load
                                else "") + ".\n\n" +
            table(["keys", "threads keyed", "threads separate", "keyed items/s",
                   "separate items/s", "ratio", "keyed p99", "separate p99", "keyed batch",
                   "separate batch"], rows,
                  ["r", "r", "r", "r", "r", "r", "r", "r", "r", "r"]))
    goals = [["keyed: threads created independent of the key count",
              ", ".join(str(count) for count in sorted(thread_counts)),
              verdict(len(thread_counts) == 1)],
             ["keyed throughput >= separate Batchers, every key count",
              f"worst {fmt_ratio(worst)}", verdict(worst is not None and worst >= 1.0)]]
    return text, goals


# ---------------------------------------------------------------------------------------------
# Lanes (bench_lanes, issue 13 item 4)


def lanes_section(results):
    """bench_lanes: lanes = 1 vs 2, P and the hardware threads; throughput, latency, signals."""
    if not results.present:
        return "_bench_lanes results missing (lanes.json)._\n", []
    index = index_runs(results)
    hardware = results.context.get("hardware_concurrency", "?")
    shapes, lane_set = set(), set()
    for run_name in results.runs():
        implementation, parameters = parse_run_name(run_name)
        if implementation == "Throughput" and run_name not in results.errors:
            shapes.add((parameters["B"], parameters["P"], parameters["W"]))
            lane_set.add(parameters["lanes"])
    more = sorted(lane for lane in lane_set if lane != 1)
    rows, control, gains = [], [], []
    for b, p, w in sorted(shapes):
        base = lookup(index, "Throughput", B=b, P=p, W=w, lanes=1)
        # One lane per producer; with one producer, 2 lanes (only one of them is used).
        plan = lookup(index, "Throughput", B=b, P=p, W=w, lanes=max(p, 2))
        if base is None or plan is None:
            continue
        base_rate = results.value(base, "items_per_second")
        cells = []
        for lanes in more:
            run = lookup(index, "Throughput", B=b, P=p, W=w, lanes=lanes)
            cells.append(fmt_ratio(ratio(results.value(run, "items_per_second"), base_rate))
                         if run else "")
        gain = ratio(results.value(plan, "items_per_second"), base_rate)
        switches = results.value(base, "switches_per_us")
        if p == 1:
            control.append(gain)
        else:
            gains.append((b, p, w, gain, switches))
        rows.append([f"B = {b}, P = {p}, W = {w}" + (" (control)" if p == 1 else ""),
                     fmt_rate(base_rate)] + cells + [
            f"{results.value(base, 'mean_batch'):.1f}",
            f"{results.value(plan, 'mean_batch'):.1f}",
            f"{results.value(base, 'switch_fraction'):.2f}",
            f"{switches:.1f}" if switches is not None else "n/a",
            f"{results.value(base, 'producer_ns'):.0f}",
            f"{results.value(plan, 'producer_ns'):.0f}"])
    latency_lanes = sorted({parse_run_name(r)[1].get("lanes") for r in results.runs()
                            if parse_run_name(r)[0] == "Latency"} - {None})
    latency_rows, p50_costs = [], []
    for rate in sorted({parse_run_name(r)[1].get("rate") for r in results.runs()
                        if parse_run_name(r)[0] == "Latency"} - {None}):
        base = lookup(index, "Latency", lanes=1, rate=rate)
        row = [fmt_rate(rate)]
        for lanes in latency_lanes:
            run = lookup(index, "Latency", lanes=lanes, rate=rate)
            if run is None:
                row += ["n/a"] * 3
                continue
            p50, p99 = results.value(run, "p50_us"), results.value(run, "p99_us")
            text = [fmt_us_unit(p50), fmt_us_unit(p99), f"{results.value(run, 'mean_batch'):.1f}"]
            if lanes != 1 and base is not None:
                p50_ratio = ratio(p50, results.value(base, "p50_us"))
                batch_ratio = ratio(results.value(run, "mean_batch"),
                                    results.value(base, "mean_batch"))
                p50_costs.append((rate, lanes, p50_ratio, batch_ratio))
                text[0] += f" ({fmt_ratio(p50_ratio)})"
                text[1] += f" ({fmt_ratio(ratio(p99, results.value(base, 'p99_us')))})"
                text[2] += f" ({fmt_ratio(batch_ratio)})"
            row += text
        if base is not None:
            row.append(f"{results.value(base, 'switch_fraction'):.2f}")
        latency_rows.append(row)
    claim_rows = []
    for producers in sorted({parse_run_name(r)[1].get("P") for r in results.runs()
                             if parse_run_name(r)[0] == "ClaimCost"} - {None}):
        own = lookup(index, "ClaimCost", P=producers, shared=0)
        shared = lookup(index, "ClaimCost", P=producers, shared=1)
        if own is None or shared is None:
            continue
        own_ns, shared_ns = (results.value(own, "ns_per_claim"),
                             results.value(shared, "ns_per_claim"))
        claim_rows.append([str(producers), f"{own_ns:.1f}", f"{shared_ns:.1f}",
                           fmt_ratio(ratio(shared_ns, own_ns))])
    if not rows and not latency_rows:
        return "_no BM_Throughput / BM_Latency rows in lanes.json._\n", []
    load = [s for name in results.runs() for s in results.samples(name, "load_1m")]
    reps = max((results.repetitions(r) for r in results.runs()), default=0)
    text = [f"Default options except B, W and `lanes`; medians of {reps} repetitions of one "
            "interleaved run" + (f" (1-minute load {min(load):.2f}-{max(load):.2f})" if load
                                 else "") + f"; hardware threads: {hardware}. "
            "Lane counts: 1, 2, P and the hardware threads, each once.", "",
            "**Throughput**: P producers `post()` as fast as they can, trivial work. Ratio "
            "columns: items/s with that many lanes / items/s with one lane in the same run. "
            "*Control* rows have one producer, which uses one lane whatever the count: their "
            "ratios are the run's noise. Signals measured with one lane: *switch fraction* = "
            "share of adjacent items in a batch that came from different producers (a producer "
            "sees it as \"my claim was not my last + 1\"), *switches/us* = those per "
            "microsecond (how often the claim counter's cache line changed hands), *ns/post* = "
            "a producer's loop time per item. *P lanes*: one lane per producer (2 lanes in the "
            "control rows).",
            "",
            table(["shape", "1 lane"] + [f"{lanes} lanes / 1" for lanes in more] +
                  ["batch, 1 lane", "batch, P lanes", "switch fraction", "switches/us",
                   "ns/post, 1 lane", "ns/post, P lanes"], rows,
                  ["l"] + ["r"] * (len(more) + 7)),
            "",
            "**Latency** at paced rates: 2 producers, Poisson arrivals (total rate below), "
            "B = 64, max_delay 1 ms, 1 worker, process_batch 20 us + 0.2 us/item; "
            "submit-to-callback p50 / p99 and mean batch size (ratio to one lane).",
            "",
            table(["total rate"] + [f"{h}, {lanes} lane{'s' if lanes > 1 else ''}"
                                    for lanes in latency_lanes
                                    for h in ("p50", "p99", "batch")] +
                  ["switch fraction, 1 lane"], latency_rows,
                  ["l"] + ["r"] * (3 * len(latency_lanes) + 1))]
    if claim_rows:
        text += ["", "**Claim cost**: ns per `fetch_add` (seq_cst) per thread, each thread on "
                 "its own counter or all on one shared counter (what lanes remove).", "",
                 table(["threads", "own counter", "shared counter", "shared / own"],
                       claim_rows, ["r", "r", "r", "r"])]
    for name, message in sorted(results.errors.items()):
        text.append(f"- `{name}`: error: {message}")
    findings = []
    control = [value for value in control if value is not None]
    if control:
        findings.append(["control (one producer): 2 lanes / 1 lane, the noise band",
                         f"{min(control):.2f}x-{max(control):.2f}x", "info"])
    for label, subset in (("B >= 16", [g for g in gains if g[0] >= 16]),
                          ("B = 1", [g for g in gains if g[0] == 1])):
        values = [g[3] for g in subset if g[3] is not None]
        if values:
            findings.append([f"throughput, P >= 2, {label}: one lane per producer / one lane",
                             f"median {statistics.median(values):.2f}x, "
                             f"{min(values):.2f}x-{max(values):.2f}x", "info"])
    busy = [g for g in gains if g[4] is not None and g[4] >= 5 and g[3] is not None]
    if busy:
        findings.append(["throughput where one lane saw >= 5 producer switches/us",
                         ", ".join(f"B={b} P={p} W={w}: {g:.2f}x" for b, p, w, g, _ in busy),
                         "info"])
    for rate, lanes, p50_ratio, batch_ratio in p50_costs:
        if rate >= 100_000 and p50_ratio is not None and batch_ratio is not None:
            findings.append([f"latency at {fmt_rate(rate)}, {lanes} lanes / 1 lane",
                             f"p50 {fmt_ratio(p50_ratio)}, mean batch {fmt_ratio(batch_ratio)}",
                             "info"])
    return "\n".join(text) + "\n", findings


DEADLINE_MODES = ["NoDeadlines", "Purge", "Sealing", "Admission"]
DEADLINE_MODE_TEXT = {
    "NoDeadlines": "no deadlines",
    "Purge": "purge only",
    "Sealing": "+ deadline sealing",
    "Admission": "+ admission control",
}


def deadlines_section(results):
    """bench_deadlines (issue 11): goodput, late, refused and p99 per load and mode, the goals,
    and the blocked producers' waits."""
    if not results.present:
        return "_bench_deadlines results missing (deadlines.json)._\n", []
    index = index_runs(results)
    lines = []
    goals = []
    for alpha in (1000, 50):
        for w in (1, 2):
            rows = []
            for pct in (70, 90, 120, 200):
                for mode in DEADLINE_MODES:
                    run = lookup(index, "Deadlines_" + mode, alpha_us=alpha, W=w, load=pct)
                    if run is None:
                        continue

                    def get(field, run=run):
                        value = results.value(run, field)
                        return 0.0 if value is None else value
                    rows.append([f"{pct} %", DEADLINE_MODE_TEXT[mode],
                                 f"{get('goodput_per_s'):,.0f}",
                                 f"{get('goodput_fraction'):.2f}",
                                 f"{get('late'):.0f}", f"{get('started_late'):.0f}",
                                 f"{get('expired'):.0f}", f"{get('refused'):.0f}",
                                 f"{get('full'):.0f}",
                                 fmt_us_unit(get('p99_us')), fmt_us_unit(get('deadline_us')),
                                 f"{get('load_1m'):.1f}"])
                    if mode == "Admission":
                        started = get("started_late")
                        goals.append((f"0 items run after their deadline (α {alpha} µs, W {w}, "
                                      f"{pct} %, admission control)", f"{started:.0f}",
                                      verdict(started == 0)))
                        late = get("late")
                        goals.append((f"0 items completed after their deadline (α {alpha} µs, "
                                      f"W {w}, {pct} %, admission control)", f"{late:.0f}",
                                      verdict(late == 0)))
                        if pct >= 120:
                            fraction = get("goodput_fraction")
                            goals.append((f"goodput ≥ 0.9 × max at {pct} % (α {alpha} µs, "
                                          f"W {w}, admission control)", f"{fraction:.2f}",
                                          verdict(fraction >= 0.9)))
                        p99 = get("p99_us")
                        goals.append((f"p99 of completed items ≤ deadline (α {alpha} µs, W {w}, "
                                      f"{pct} %, admission control)",
                                      f"{fmt_us_unit(p99)} vs {fmt_us_unit(get('deadline_us'))}",
                                      verdict(p99 <= get("deadline_us"))))
            if not rows:
                continue
            lines += [f"#### α = {alpha} µs, W = {w}", "",
                      table(["load", "mode", "goodput/s", "of max", "late", "started late",
                             "expired", "refused", "full", "p99", "deadline", "load avg"],
                            rows, ["r", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"]),
                      ""]
    wait = [r for r in results.runs() if r.startswith("BM_ProducerWait")]
    if wait:
        run = wait[0]
        value = lambda field: results.value(run, field) or 0.0
        lines += ["#### Blocked producers (16 producers posting into one overloaded batcher)", "",
                  table(["blocked posts", "wait p50", "wait p99", "max", "p99 / p50",
                         "posts per producer (min-max)"],
                        [[f"{value('blocked_posts'):.0f}", fmt_us(value("p50_us")),
                          fmt_us(value("p99_us")), fmt_us(value("max_us")),
                          f"{value('p99_over_p50'):.1f}",
                          f"{value('posts_min'):.0f}-{value('posts_max'):.0f}"]]),
                  ""]
    return "\n".join(lines) + "\n", goals


def goals_section(ratios, latency, cost):
    rows = []

    def add_ratio(goal, label, p, w, target, milestone=None):
        value = ratios.get((label, 256, p, w))
        text = fmt_ratio(value)
        other = ratios.get((label, 256, p, 3 - w))
        rows.append([goal, f">= {target}x" + (f" (milestone >= {milestone}x)" if milestone else ""),
                     f"{text} (W = {w}); {fmt_ratio(other)} (W = {3 - w})",
                     status(value, target, milestone)])

    add_ratio("fire-and-forget post vs raw moodycamel, P = 2, B = 256", "post / moodycamel", 2, 2,
              1.0, 0.5)
    add_ratio("post vs mutex batcher, P = 2, B = 256", "post / mutex batcher", 2, 2, 5)
    add_ratio("post vs per-item dispatch, P = 2, B = 256", "post / per-item dispatch", 2, 2, 25)
    add_ratio("post with lanes(2) vs raw moodycamel, P = 2, B = 256", "post lanes=P / moodycamel",
              2, 2, 1.0, 0.5)
    add_ratio("post with lanes(2) vs mutex batcher, P = 2, B = 256",
              "post lanes=P / mutex batcher", 2, 2, 5)
    add_ratio("post with lanes(2) vs per-item dispatch, P = 2, B = 256",
              "post lanes=P / per-item dispatch", 2, 2, 25)
    add_ratio("handle vs per-item promise/future, P = 2, B = 256", "handle / promise+future", 2,
              2, 3)
    for label, goal, target, milestone in (
            ("post cap 64B / moodycamel", "info: post vs moodycamel with capacity 64 B", 1.0, 0.5),
            ("post / mutex, both cap 64B", "info: post vs mutex batcher, both capacity 64 B", 5,
             None)):
        if ratios.get((label, 256, 2, 2)) is not None:
            add_ratio(goal + ", P = 2, B = 256", label, 2, 2, target, milestone)
    for delay in (200, 1000, 5000):
        value = latency.get(("TimeBound_Microbatch", delay), {}).get("p99_us")
        rows.append([f"time-bound p99 lateness, max_delay = {delay} us", "<= 100 us",
                     fmt_us_unit(value),
                     status(value, 100, higher_is_better=False)])
    idle = latency.get("IdleWakeups_Microbatch", {}).get("voluntary_switches")
    rows.append(["idle batcher wake-ups in 200 ms", "~0",
                 "n/a" if idle is None else f"{idle:.0f}",
                 status(idle, 0.5, higher_is_better=False)])
    for label in ("all points/makespan", "W = 1/makespan", "all points/simple",
                  "all points/makespan, run-queue wait removed (diagnostic)"):
        value = cost.get(label)
        if value is None:
            continue
        if "diagnostic" in label:
            for which, target, position in (("median", 0.05, 0), ("worst", 0.15, 1)):
                verdict = "within" if value[position] <= target else "outside"
                rows.append([f"cost model {which} abs. error ({label})",
                             f"<= {100 * target:.0f} %", f"{100 * value[position]:.1f} %",
                             f"diagnostic only ({verdict} the target once contention is removed)"])
            continue
        rows.append([f"cost model median abs. error ({label})", "<= 5 %", f"{100 * value[0]:.1f} %",
                     status(value[0], 0.05, higher_is_better=False)])
        rows.append([f"cost model worst abs. error ({label})", "<= 15 %", f"{100 * value[1]:.1f} %",
                     status(value[1], 0.15, higher_is_better=False)])
    return table(["goal", "target", "measured", "status"], rows, ["l", "l", "l", "l"])


# ---------------------------------------------------------------------------------------------


def isolation_section(results):
    """bench_isolation (issue 12): process_batch calls and items saved per batch of 256."""
    if not results.present:
        return "_bench_isolation results missing (isolation.json)._\n"
    rows = []
    goal = None
    for run_name in results.runs():
        implementation, parameters = parse_run_name(run_name)
        if implementation != "Isolation" or run_name in results.errors:
            continue
        poison, depth = parameters.get("poison"), parameters.get("depth")
        values = [results.value(run_name, field) for field in
                  ("calls", "extra_calls", "succeeded", "failed", "bound")]
        if None in values:
            continue
        calls, extra, succeeded, failed, bound = values
        rows.append((poison, depth, [str(poison), "off" if depth == 0 else str(depth),
                                     f"{calls:.0f}", f"{extra:.0f}", f"{succeeded:.0f}",
                                     f"{failed:.0f}", f"{bound:.0f}"]))
        if poison == 1 and depth == 64:
            goal = succeeded
    rows.sort(key=lambda row: (row[1] != 0 and row[1] != 64, row[0], row[1]))
    text = []
    if goal is not None:
        text += [f"Goal (issue 12): a batch of 256 with 1 poison item: {goal:.0f} items succeed "
                 f"(goal 255): {verdict(goal == 255)}.", ""]
    for name, message in sorted(results.errors.items()):
        text += [f"- `{name}`: error: {message}"]
    text += [table(["poison items", "depth", "calls", "extra calls", "succeeded", "failed",
                    "2 x poison x log2(256)"], [row[2] for row in rows],
                   ["r", "r", "r", "r", "r", "r", "r"]), "",
             "Counts per batch of 256 items, exact (batches run inline). Depth `off`: "
             "isolation off (default); 64: down to single items; smaller depths stop "
             "splitting earlier and fail the whole failing sub-batch."]
    return "\n".join(text) + "\n"


def weighted_section(results):
    """bench_weighted (issue 12): the submit path with a cost function and cost bounds."""
    if not results.present:
        return "_bench_weighted results missing (weighted.json)._\n"
    rates = {}
    for run_name in results.runs():
        implementation, parameters = parse_run_name(run_name)
        value = results.value(run_name, "items_per_second")
        if value is not None:
            rates[(implementation, parameters.get("B"), parameters.get("P"))] = value
    names = [("Post", "no cost function"), ("Post_Costed", "cost_by, no bound"),
             ("Post_BatchCost", "+ max_batch_cost"), ("Post_Pending", "+ max_pending_cost"),
             ("MutexBatcher", "mutex batcher")]
    rows = []
    for b in (16, 256):
        for p in (1, 2):
            base = rates.get(("Post", b, p))
            mutex = rates.get(("MutexBatcher", b, p))
            for name, label in names:
                value = rates.get((name, b, p))
                rows.append([str(b), str(p), label, fmt_rate(value), fmt_ratio(ratio(value, base)),
                             fmt_ratio(ratio(value, mutex))])
    text = [table(["B", "P", "row", "items/s (median)", "vs Post", "vs mutex batcher"], rows,
                  ["r", "r", "l", "r", "r", "r"]), "",
            "Default options except B, W = 1; item v costs v % 16 + 1 (mean 8.5); the batch "
            "cost bound is 8.5 x B (it binds about as often as B), the pending bound 64 of "
            "those. Weighing costs a call of the cost function and two counters per item; the "
            "batch cost bound adds the lane's fill mutex to every claim."]
    for name, message in sorted(results.errors.items()):
        text += [f"- `{name}`: error: {message}"]
    return "\n".join(text) + "\n"


def run_gnuplot(gnuplot, script_dir, data_dir, out_dir):
    """Runs each gnuplot script whose data files exist; returns the scripts that succeeded."""
    drawn = []
    cost_model_ns = sorted(int(name[len("cost_model_N"):-len(".dat")])
                           for name in os.listdir(data_dir)
                           if name.startswith("cost_model_N") and name.endswith(".dat"))
    needs = {
        "throughput.gp": os.path.exists(os.path.join(data_dir, "throughput_P2_W2.dat")),
        "latency.gp": all(os.path.exists(os.path.join(data_dir, f"latency_{impl}.dat"))
                          for impl, _ in LOAD_IMPLEMENTATIONS),
        "cost_model.gp": bool(cost_model_ns),
        # bench_load: every panel's data (a filtered run draws no plot, the tables still show).
        "load_closed.gp": all(os.path.exists(os.path.join(data_dir, f"load_closed_a{a}_W{w}.dat"))
                              for a, _ in FORMATION_COSTS for w in (1, 2)),
        "load_open.gp": all(os.path.exists(os.path.join(data_dir, f"load_open_a{a}.dat"))
                            for a, _ in FORMATION_COSTS),
    }
    for script in ("throughput.gp", "latency.gp", "cost_model.gp", "load_closed.gp",
                   "load_open.gp"):
        path = os.path.join(script_dir, script)
        if not os.path.exists(path) or not needs[script]:
            continue
        variables = f"data='{data_dir}'; out='{out_dir}'"
        if script == "cost_model.gp":
            variables += "; ns='" + " ".join(str(n) for n in cost_model_ns) + "'"
        command = [gnuplot, "-e", variables, path]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"make_report: gnuplot {script} failed:\n{result.stderr}", file=sys.stderr)
        else:
            drawn.append(script)
    return drawn


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", required=True, help="directory with the benchmark JSON files")
    parser.add_argument("--out", help="directory for REPORT.md and the PNGs")
    parser.add_argument("--gnuplot", default="gnuplot", help="gnuplot executable ('' to skip)")
    parser.add_argument("--compiler", default="", help="compiler description for the report")
    parser.add_argument("--source-dir", default="", help="git work tree, to name the commit")
    parser.add_argument("--record-start", action="store_true",
                        help="called before the benchmarks run: store the start time and the "
                             "source state (commit, uncommitted library changes) in "
                             "<raw>/run_info.json, then exit")
    parser.add_argument("--record-run", action="store_true",
                        help="called right after the benchmarks: add the total run time to "
                             "<raw>/run_info.json (kept for later regenerations)")
    parser.add_argument("--notes", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                        "NOTES.md"),
                        help="hand-written analysis appended to the report (if it exists)")
    args = parser.parse_args()
    info_path = os.path.join(args.raw, "run_info.json")
    if args.record_start:
        os.makedirs(args.raw, exist_ok=True)
        with open(info_path, "w", encoding="utf-8") as stream:
            json.dump({"started": time.time(), "source": describe_source(args.source_dir),
                       "machine": describe_machine()}, stream, indent=1)
        return
    if not args.out:
        parser.error("--out is required")

    data_dir = os.path.join(args.out, "data")
    os.makedirs(data_dir, exist_ok=True)
    for name in os.listdir(data_dir):  # no stale plot data from an earlier, larger run
        if name.endswith(".dat"):
            os.remove(os.path.join(data_dir, name))
    script_dir = os.path.dirname(os.path.abspath(__file__))

    throughput = Results(os.path.join(args.raw, "throughput.json"))
    latency = Results(os.path.join(args.raw, "latency.json"))
    cost_model = Results(os.path.join(args.raw, "cost_model.json"))
    load = Results(os.path.join(args.raw, "load.json"))
    isolation = Results(os.path.join(args.raw, "isolation.json"))
    weighted = Results(os.path.join(args.raw, "weighted.json"))
    keyed = Results(os.path.join(args.raw, "keyed.json"))
    deadlines = Results(os.path.join(args.raw, "deadlines.json"))
    lanes = Results(os.path.join(args.raw, "lanes.json"))

    throughput_text, ratios = throughput_section(throughput, data_dir)
    latency_text, latency_found = latency_section(latency, data_dir)
    cost_text, cost_summary = cost_model_section(cost_model, data_dir)
    formation_text, formation_goals = formation_section(load, data_dir)
    formation_throughput_text, formation_throughput_goals = formation_throughput_section(throughput)
    formation_goals = formation_goals + formation_throughput_goals
    deadlines_text, deadline_goals = deadlines_section(deadlines)
    for goal, measured, verdict_text in deadline_goals:
        print(f"make_report: {verdict_text.strip('*')}: {goal}: {measured}")
    for goal, measured, verdict_text in formation_goals:
        print(f"make_report: {verdict_text.strip('*')}: {goal}: {measured}")
    keyed_text, keyed_goals = keyed_section(keyed)
    for goal, measured, verdict_text in keyed_goals:
        print(f"make_report: {verdict_text.strip('*')}: {goal}: {measured}")
    lanes_text, lanes_findings = lanes_section(lanes)

    # Run time and source state belong to the run: recorded by --record-start before the
    # benchmarks and completed here by --record-run, then reused when regenerating.
    info = {}
    if os.path.exists(info_path):
        with open(info_path, encoding="utf-8") as stream:
            info = json.load(stream)
    if args.record_run and "started" in info:
        info["runtime_s"] = time.time() - info["started"]
        with open(info_path, "w", encoding="utf-8") as stream:
            json.dump(info, stream, indent=1)
    runtime = ""
    if "runtime_s" in info:
        runtime = (f"Total run time of `bench_report` (the benchmark programs plus this "
                   f"report): {info['runtime_s']:.0f} s.")

    drawn = []
    if args.gnuplot:
        drawn = run_gnuplot(args.gnuplot, script_dir, data_dir, args.out)

    report = [
        "# microbatch benchmark report (issue 4)",
        "",
        "Generated by `cmake --build --preset bench --target bench_report` "
        "(bench/report/make_report.py) from the Google Benchmark JSON in `raw/`. "
        "Do not edit by hand. " + runtime,
        "",
        "## Machine",
        "",
        machine_section([("bench_batcher", throughput.context),
                         ("bench_latency", latency.context),
                         ("bench_cost_model", cost_model.context),
                         ("bench_load", load.context),
                         ("bench_keyed", keyed.context),
                         ("bench_deadlines", deadlines.context),
                         ("bench_lanes", lanes.context)],
                        args.compiler, info.get("source", ""), info.get("machine")),
        "",
        "## Goals",
        "",
        goals_section(ratios, latency_found, cost_summary),
        "",
        "## Throughput (bench_batcher)",
        "",
        "![throughput vs B](throughput_vs_batch_size.png)" if "throughput.gp" in drawn else "",
        "",
        throughput_text,
        "## Latency (bench_latency)",
        "",
        "![latency vs load](latency_vs_load.png)" if "latency.gp" in drawn else "",
        "",
        latency_text,
        "## Cost model T = ceil(N/B) T_batch(B) (bench_cost_model)",
        "",
        "![measured vs predicted T](cost_model_T_vs_B.png)" if "cost_model.gp" in drawn else "",
        "",
        cost_text,
        "## Batch formation under load (bench_load, issue 10)",
        "",
        "### Goals (issue 10)",
        "",
        table(["goal", "measured", "status"], formation_goals, ["l", "l", "l"])
        if formation_goals else "_not measured_",
        "",
        "![throughput / limit vs N](load_closed.png)" if "load_closed.gp" in drawn else "",
        "",
        "![p99 vs load](load_open.png)" if "load_open.gp" in drawn else "",
        "",
        formation_text,
        "",
        "### Streaming throughput: default formation vs the 357efd2 rule (bench_batcher)",
        "",
        formation_throughput_text,
        "",
        "## Poison-item isolation (bench_isolation, issue 12)",
        "",
        isolation_section(isolation),
        "",
        "## Weighted batches (bench_weighted, issue 12)",
        "",
        weighted_section(weighted),
        "",
        "## Keyed batching (bench_keyed, issue 12)",
        "",
        table(["goal", "measured", "status"], keyed_goals, ["l", "l", "l"])
        if keyed_goals else "",
        "",
        keyed_text,
        "",
        "## Deadlines under load (bench_deadlines, issue 11)",
        "",
        "Open loop, B = 32, capacity 1,024 items, every item due 5 × (α + β·B) after its "
        "scheduled arrival; goodput counts items completed by their deadline.",
        "",
        "### Goals (issue 11)",
        "",
        table(["goal", "measured", "status"], deadline_goals, ["l", "l", "l"])
        if deadline_goals else "_not measured_",
        "",
        deadlines_text,
        "",
        "## Lanes (bench_lanes, issue 13 item 4)",
        "",
        table(["finding", "measured", "note"], lanes_findings, ["l", "l", "l"])
        if lanes_findings else "",
        "",
        lanes_text,
    ]
    if args.notes and os.path.exists(args.notes):
        with open(args.notes, encoding="utf-8") as stream:
            report += ["", stream.read().strip()]
    with open(os.path.join(args.out, "REPORT.md"), "w", encoding="utf-8") as stream:
        stream.write("\n".join(report).rstrip() + "\n")
    print(f"make_report: wrote {os.path.join(args.out, 'REPORT.md')}"
          + (f" and {len(drawn)} plot(s)" if drawn else ""))


if __name__ == "__main__":
    main()

"""The benchmark's command line and main loop (``python -m bench.run``, see :mod:`bench.run`).

poolq benchmark: strategies x workloads against RQ's own workers, on a private redis-server.

    python -m bench.run                                   # every strategy and workload, 3 repeats
    python -m bench.run --workloads noop,cpu,io --baselines
    python -m bench.run --quick --baselines               # smoke run: small counts, 1 repeat

For every cell (worker x workload x repeat): FLUSHALL, enqueue all jobs up front with stock RQ
(pipelined ``enqueue_many``, JSON serializer), record the load average and ``INFO
commandstats``, start the worker in burst mode, sample its process tree every ~100 ms (RSS and
PSS summed over the tree), wait for it to exit, then read every job back with stock RQ
(``Job.fetch_many``) and compute throughput and latency from RQ's own job timestamps.
See bench/README.md for the columns, the method and the caveats.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import redis
import rq

from bench.catalog import (
    BASELINES,
    CPU_MS,
    DEFAULT_CONCURRENCY,
    REPO,
    STRATEGIES,
    WORKLOADS,
    Workload,
    available_cpus,
    make_runners,
)
from bench.cell import Bench, error_cell, run_cell, wait_for_quiet
from bench.limits import measure_plain_loop, measure_redis_pairs
from bench.procs import RedisServer, become_subreaper, cleanup_all, git_describe, log, on_signal
from bench.table import aggregate, render

# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_list(value: str, allowed: Sequence[str], what: str) -> list[str]:
    if value.strip().lower() in ("", "none"):
        return []
    items = [v.strip() for v in value.split(",") if v.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def parse_kv(value: str, what: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (v.strip() for v in value.split(","))):
        k, sep, v = item.partition("=")
        if not sep or not v:
            raise SystemExit(f"bad {what} entry {item!r}: expected key=value")
        out[k.strip()] = v.strip()
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark poolq's strategies (and RQ's own workers) on a private local redis-server.",
    )
    ap.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="poolq strategies, comma-separated, or 'none' (default: %(default)s)",
    )
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="default: %(default)s")
    ap.add_argument("--repeats", type=int, default=None, help="runs per cell (default 3; 1 with --quick)")
    ap.add_argument(
        "--baselines",
        nargs="?",
        const="all",
        default="none",
        metavar="LIST",
        help=f"add RQ's own workers: all, or some of {','.join(BASELINES)} (default: none)",
    )
    ap.add_argument(
        "--concurrency",
        default="",
        metavar="S[:W]=N,...",
        help="override the concurrency table, e.g. thread=32,thread:io=128,process=4",
    )
    ap.add_argument(
        "--counts",
        default="",
        metavar="W=N,...",
        help="jobs per cell, e.g. noop=5000,io=1000 (defaults: "
        + ", ".join(f"{w.name} {w.count}" for w in WORKLOADS.values())
        + ")",
    )
    ap.add_argument("--skip", default="", metavar="RUNNER:WORKLOAD,...", help="cells to leave out, e.g. rq-fork:io")
    ap.add_argument("--quick", action="store_true", help="small counts and 1 repeat: a smoke run")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for results.json, table.md and logs (default: bench/results/<timestamp>)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds per cell before the worker is killed and the cell marked 'timeout' (default: %(default)s)",
    )
    ap.add_argument("--sample-interval", type=float, default=0.1, help="memory sampling period, s")
    ap.add_argument(
        "--cpu-iterations",
        type=int,
        default=None,
        help=f"iterations per cpu job (default: calibrated to ~{CPU_MS:g} ms here)",
    )
    ap.add_argument(
        "--no-startup",
        action="store_true",
        help="skip the empty-queue run that measures each worker's fixed start-up cost",
    )
    ap.add_argument(
        "--quiet-below",
        type=float,
        default=None,
        metavar="PCT",
        help="before each run, wait until other processes use less than PCT%% of the CPUs (1 s samples)",
    )
    ap.add_argument("--quiet-wait", type=float, default=60.0, help="longest wait for --quiet-below, s")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    strategies = parse_list(args.strategies, STRATEGIES, "strategy")
    workloads = parse_list(args.workloads, list(WORKLOADS), "workload")
    baselines = parse_list(args.baselines, list(BASELINES), "baseline")
    overrides = parse_kv(args.concurrency, "--concurrency")
    for k, v in overrides.items():
        s, _, w = k.partition(":")
        if s not in STRATEGIES or (w and w not in WORKLOADS) or not (v == "auto" or v.isdigit()):
            raise SystemExit(f"bad --concurrency entry {k}={v}")
    counts = {w.name: (w.quick_count if args.quick else w.count) for w in WORKLOADS.values()}
    for k, v in parse_kv(args.counts, "--counts").items():
        if k not in WORKLOADS or not v.isdigit() or int(v) < 1:
            raise SystemExit(f"bad --counts entry {k}={v}")
        counts[k] = int(v)
    skip = set(filter(None, (s.strip() for s in args.skip.split(","))))
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1 or not workloads or not (strategies or baselines):
        raise SystemExit("nothing to run: need >= 1 repeat, >= 1 workload and a strategy or a baseline")
    rq_bin = str(Path(sys.executable).parent / "rq")
    if baselines and not Path(rq_bin).exists():
        rq_bin = shutil.which("rq") or rq_bin
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (args.out or REPO / "bench" / "results" / stamp).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)

    cpus = available_cpus()
    from worker.jobs import iterations_per_ms

    cpu_iterations = args.cpu_iterations or int(CPU_MS * iterations_per_ms())
    wls = dict(WORKLOADS)
    wls["cpu"] = Workload(
        "cpu",
        "worker.jobs.cpu",
        {"iterations": cpu_iterations},
        wls["cpu"].count,
        wls["cpu"].quick_count,
        f"cpu(iterations={cpu_iterations}) ≈ {CPU_MS:g} ms",
    )
    runners = make_runners(strategies, baselines)
    order = [r.key for r in runners]

    signal.signal(signal.SIGINT, on_signal)  # also when started in the background with SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    subreaper = become_subreaper()
    cells: list[dict[str, Any]] = []
    limits: dict[int, dict[str, float]] = {}
    meta: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(),
        "host": platform.node(),
        "python": platform.python_version(),
        "rq": rq.__version__,
        "redis_py": redis.__version__,
        "psutil": psutil.__version__,
        "git": git_describe(),
        "cpus_available": cpus,
        "cpu_count": os.cpu_count(),
        "cpu_iterations_per_job": cpu_iterations,
        "counts": {w: counts[w] for w in workloads},
        "repeats": repeats,
        "workloads": {w: wls[w].describe for w in workloads},
        "concurrency_table": DEFAULT_CONCURRENCY,
        "concurrency_overrides": overrides,
        "subreaper": subreaper,
        "skipped": sorted(skip),
        "argv": sys.argv,
    }
    started = time.monotonic()
    interrupted = False
    server: RedisServer | None = None
    try:
        server = RedisServer(args.redis_server)
        meta["redis_server"] = server.version
        log(f"redis-server {server.version} on 127.0.0.1:{server.port}; {cpus} CPUs; results in {out}")
        bench = Bench(
            server,
            rq_bin,
            out,
            args.timeout,
            args.sample_interval,
            overrides,
            cpus,
            subreaper,
            args.quiet_below,
            args.quiet_wait,
        )
        for rep in range(1, repeats + 1):
            lim: dict[str, float] = {}
            if "noop" in workloads:
                wait_for_quiet(bench)
                lim["noop"] = measure_redis_pairs(server.url)
                log(f"[r{rep}] limit noop: {lim['noop']:,.0f} LPUSH+RPOP pairs/s (one client)")
            if "cpu" in workloads:
                wait_for_quiet(bench)
                try:
                    lim["cpu"] = measure_plain_loop(
                        wls["cpu"].func, wls["cpu"].kwargs, counts["cpu"], cpus, args.timeout
                    )
                    log(f"[r{rep}] limit cpu: {lim['cpu']:,.1f} jobs/s (plain {cpus}-process loop)")
                except (TimeoutError, OSError, EOFError) as exc:
                    lim["cpu"] = math.nan
                    log(f"[r{rep}] limit cpu: failed ({exc!r})")
            limits[rep] = lim
            if not args.no_startup:
                for runner in runners:
                    try:
                        c = run_cell(bench, runner, None, 0, rep)
                    except (redis.RedisError, OSError, RuntimeError, psutil.Error) as exc:
                        log(f"[r{rep}] {runner.label} start-up run: harness error {exc!r}")
                        continue
                    cells.append(c)
                    log(
                        f"[r{rep}] {runner.label:<30} start-up: {c['wall_s']:.2f} s wall, {c['cpu_s']:.2f} s CPU, "
                        f"{c['peak_pss_mib']:.1f} MiB PSS {' '.join(c['problems'])}"
                    )
            for wname in workloads:
                for runner in runners:
                    if f"{runner.key}:{wname}" in skip or runner.key in skip:
                        continue
                    try:
                        c = run_cell(bench, runner, wls[wname], counts[wname], rep)
                    except (redis.RedisError, OSError, RuntimeError, psutil.Error) as exc:
                        c = error_cell(runner, wname, counts[wname], rep, exc, overrides)
                    cells.append(c)
                    log(
                        f"[r{rep}] {runner.label:<30} {wname:<5} {c['jobs_per_s']:>9,.1f} jobs/s "
                        f"p95 {c['latency_p95_s']:.3f} s  PSS {c['peak_pss_mib']:.1f} MiB  "
                        f"cmds/job {c['redis_cmds_per_job']:.1f}  load {c['loadavg'][0]:.2f}  "
                        f"others {c['others_cpu_pct']:.0f}% (waited {c.get('quiet_waited_s', 0):.0f} s)"
                        + (f"  ⚠ {'; '.join(c['problems'])}" if c["problems"] else "")
                    )
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping every process we started")
    finally:
        if server is not None:
            server.stop()
        cleanup_all()

    meta["elapsed_s"] = time.monotonic() - started
    meta["interrupted"] = interrupted
    rows = aggregate(cells, limits)
    report = render(meta, rows, cells, limits, order, workloads, counts, wls)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "limits": limits, "rows": rows, "cells": cells}, indent=2, default=str)
    )
    (out / "table.md").write_text(report)
    print(report)
    log(f"wrote {out / 'results.json'} and {out / 'table.md'} in {meta['elapsed_s']:.0f} s")
    return 130 if interrupted else 0

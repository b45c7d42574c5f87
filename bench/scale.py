"""How poolq's figures grow with the job count and with worker replicas.

    python -m bench.scale                                  # both parts, 3 repeats (~6 min)
    python -m bench.scale --part counts --counts 1000,10000,100000
    python -m bench.scale --part replicas --replicas 1,2,4 --jobs 2000

``counts``: one thread worker (default concurrency) drains a backlog of N no-op jobs, for each
N; shows whether throughput, latency, memory, CPU and Redis commands per job stay flat as the
backlog grows (and what Redis holds afterwards: every job keeps its hash and result for
``result_ttl``).

``replicas``: K thread workers (default concurrency each, no CPU pinning: they share the
machine's CPUs, as containers without a CPU limit would) drain one backlog of ``io`` jobs
(``io(seconds=0.05)``) together; jobs/s against K x concurrency / 0.05 s. docs/scaling.md has
the same with each replica pinned to one CPU (``python -m bench.composite --part replicas``).

Same method as ``bench.run`` (bench/README.md): a private redis-server on a free loopback port,
every job enqueued up front with stock RQ, burst workers, jobs/s = finished / (last
``ended_at`` - first ``started_at``) read back with stock RQ, peak PSS of the worker trees
sampled every 0.1 s, CPU from each worker's ``wait4`` rusage, Redis commands from
``INFO commandstats``; the load average at each run's start. Runs are interleaved (repeat is
the outer loop) and bounded by ``--timeout``; every process started is killed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench.catalog import REPO, WORKLOADS, resolve_concurrency, worker_cmd
from bench.cell import commandstats, enqueue_jobs, read_jobs
from bench.procs import RedisServer, cleanup_all, log, spawn, tree_memory
from producer.processes import kill_group


def run_once(
    server: RedisServer, workload: str, count: int, replicas: int, strategy: str, concurrency: str, timeout: float
) -> dict[str, Any]:
    """Enqueue ``count`` jobs, run ``replicas`` burst workers until they exit, read the jobs back."""
    client = server.client
    client.flushall()
    t_enq = time.monotonic()
    ids = enqueue_jobs(client, WORKLOADS[workload], count)
    enqueue_s = time.monotonic() - t_enq
    load = os.getloadavg()[0]
    stats0 = commandstats(client)
    procs = [
        spawn(
            worker_cmd(server.url, strategy, concurrency),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(replicas)
    ]
    roots = [psutil.Process(p.pid) for p in procs]
    cpu = 0.0
    peak_pss = 0
    pending = {p.pid: p for p in procs}
    t0 = time.monotonic()
    timed_out = False
    codes: list[int] = []
    try:
        next_sample = t0
        while pending:
            now = time.monotonic()
            if now >= next_sample:
                peak_pss = max(peak_pss, sum(tree_memory(r)[1] for r in roots if r.pid in pending))
                next_sample = now + 0.1
            for pid in list(pending):
                wpid, status, ru = os.wait4(pid, os.WNOHANG)
                if wpid:
                    cpu += ru.ru_utime + ru.ru_stime
                    codes.append(os.waitstatus_to_exitcode(status))
                    pending.pop(pid).returncode = codes[-1]
            if now - t0 > timeout:
                timed_out = True
                break
            time.sleep(0.02)
    finally:
        for pid, p in pending.items():
            kill_group(pid)
            with contextlib.suppress(ChildProcessError):
                os.wait4(pid, 0)
            p.returncode = -9
    wall = time.monotonic() - t0
    delta = sum(v - stats0.get(k, 0) for k, v in commandstats(client).items()) - 1  # our INFO
    memory = client.info("memory")
    out: dict[str, Any] = {
        "workload": workload,
        "count": count,
        "replicas": replicas,
        "loadavg": load,
        "enqueue_s": enqueue_s,
        "wall_s": wall,
        "timed_out": timed_out,
        "exit_codes": codes,
        "peak_pss_mib": peak_pss / 2**20,
        "cpu_s_per_1k_jobs": cpu / count * 1000,
        "redis_cmds_per_job": delta / count,
        "redis_used_memory_mib": memory["used_memory"] / 2**20,
    }
    out.update(read_jobs(client, ids))
    return out


def med(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return statistics.median(values) if values else math.nan


def span(rows: list[dict[str, Any]], key: str, fmt: str = "{:,.0f}") -> str:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    if not values:
        return "n/a"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def loads(rows: list[dict[str, Any]]) -> str:
    return f"{min(r['loadavg'] for r in rows):.2f}-{max(r['loadavg'] for r in rows):.2f}"


def ok(rows: list[dict[str, Any]]) -> str:
    good = sum(1 for r in rows if not r["timed_out"] and not r["failed"] and set(r["exit_codes"]) <= {0})
    return f"{good}/{len(rows)}"


def counts_table(rows: list[dict[str, Any]], counts: list[int], strategy: str, conc: int) -> str:
    out = [
        f"One `{strategy}` worker ({conc} slots), no-op jobs, median (min-max) of the repeats:",
        "",
        "| jobs | jobs/s | p50 latency s | p95 latency s | peak PSS MiB | CPU s / 1k jobs | Redis cmds / job "
        "| Redis memory after, MiB | enqueue s | load avg at start | runs ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in counts:
        rs = [r for r in rows if r["count"] == n]
        out.append(
            f"| {n:,} | {span(rs, 'jobs_per_s')} | {med(rs, 'latency_p50_s'):.2f} | {med(rs, 'latency_p95_s'):.2f} "
            f"| {med(rs, 'peak_pss_mib'):.1f} | {med(rs, 'cpu_s_per_1k_jobs'):.2f} "
            f"| {med(rs, 'redis_cmds_per_job'):.1f} | {med(rs, 'redis_used_memory_mib'):.0f} "
            f"| {med(rs, 'enqueue_s'):.1f} | {loads(rs)} | {ok(rs)} |"
        )
    return "\n".join(out)


def replicas_table(rows: list[dict[str, Any]], replicas: list[int], strategy: str, conc: int, jobs: int) -> str:
    out = [
        f"K `{strategy}` workers ({conc} slots each, not pinned), {jobs:,} `io(0.05)` jobs in one queue, "
        "median (min-max) of the repeats; limit = K x slots / 0.05 s:",
        "",
        "| replicas | jobs/s | limit | % of limit | speed-up vs 1 | p95 latency s | peak PSS MiB (all) "
        "| CPU s / 1k jobs | Redis cmds / job | load avg at start | runs ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = med([r for r in rows if r["replicas"] == replicas[0]], "jobs_per_s") / replicas[0]
    for k in replicas:
        rs = [r for r in rows if r["replicas"] == k]
        limit = k * conc / WORKLOADS["io"].kwargs["seconds"]
        rate = med(rs, "jobs_per_s")
        out.append(
            f"| {k} | {span(rs, 'jobs_per_s')} | {limit:,.0f} | {100 * rate / limit:.0f}% | {rate / base:.2f}x "
            f"| {med(rs, 'latency_p95_s'):.2f} | {med(rs, 'peak_pss_mib'):.1f} | {med(rs, 'cpu_s_per_1k_jobs'):.2f} "
            f"| {med(rs, 'redis_cmds_per_job'):.1f} | {loads(rs)} | {ok(rs)} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--part", choices=("counts", "replicas", "all"), default="all")
    ap.add_argument("--counts", default="1000,10000,100000", help="no-op jobs per run (counts part)")
    ap.add_argument("--replicas", default="1,2,4", help="worker processes per run (replicas part)")
    ap.add_argument("--jobs", type=int, default=2000, help="io jobs per run (replicas part)")
    ap.add_argument("--strategy", default="thread")
    ap.add_argument("--concurrency", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run, then the workers are killed")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.counts.split(",")]
    replicas = [int(x) for x in args.replicas.split(",")]
    conc = resolve_concurrency(args.strategy, args.concurrency)
    out = args.out or REPO / "bench" / "results" / time.strftime("scale-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    server = RedisServer(args.redis_server)
    try:
        for rep in range(1, args.repeats + 1):
            if args.part in ("counts", "all"):
                for n in counts:
                    r = run_once(server, "noop", n, 1, args.strategy, args.concurrency, args.timeout)
                    r.update(part="counts", repeat=rep)
                    rows.append(r)
                    log(
                        f"[r{rep}] counts {n:>7,}: {r['jobs_per_s']:,.0f} jobs/s, p95 {r['latency_p95_s']:.2f} s, "
                        f"PSS {r['peak_pss_mib']:.1f} MiB, load {r['loadavg']:.2f}"
                    )
            if args.part in ("replicas", "all"):
                for k in replicas:
                    r = run_once(server, "io", args.jobs, k, args.strategy, args.concurrency, args.timeout)
                    r.update(part="replicas", repeat=rep)
                    rows.append(r)
                    log(
                        f"[r{rep}] replicas {k}: {r['jobs_per_s']:,.0f} jobs/s, p95 {r['latency_p95_s']:.2f} s, "
                        f"PSS {r['peak_pss_mib']:.1f} MiB, load {r['loadavg']:.2f}"
                    )
    finally:
        server.stop()
        cleanup_all()
    parts = [
        f"# poolq scaling — {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        "",
        f"{psutil.cpu_count()} CPUs · Python {sys.version.split()[0]} · {args.repeats} repeat(s) · "
        f"{time.monotonic() - t_start:.0f} s",
    ]
    if args.part in ("counts", "all"):
        parts += ["", counts_table([r for r in rows if r["part"] == "counts"], counts, args.strategy, conc)]
    if args.part in ("replicas", "all"):
        parts += [
            "",
            replicas_table([r for r in rows if r["part"] == "replicas"], replicas, args.strategy, conc, args.jobs),
        ]
    report = "\n".join(parts) + "\n"
    (out / "scale.md").write_text(report)
    (out / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    print(report)
    log(f"wrote {out / 'scale.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

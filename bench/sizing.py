"""How many threads per CPU should the thread strategy start by default?

Runs the thread strategy with ``--threads-per-cpu`` 1, 2, 4, 8, 16, 32 on I/O, CPU and mixed
jobs (its own redis-server on a free loopback port, burst workers, jobs enqueued up front)
and prints jobs/s (median of ``--repeats``, from RQ's own job timestamps) and peak RSS of the
worker. The default in worker/defaults.py is the smallest figure that gets I/O-bound work
close to its ceiling without costing CPU-bound work throughput; docs/sizing.md records a run.

    python -m bench.sizing [--repeats 3] [--factors 1,2,4,8,16,32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from bench.procs import RedisServer
from worker.cpus import detect_cpus

WORKLOADS: dict[str, tuple[str, dict[str, Any], int]] = {
    "io 50ms": ("worker.jobs.io", {"seconds": 0.05}, 600),
    "cpu 10ms": ("worker.jobs.cpu", {"ms": 10.0}, 200),
    "mixed 5ms+20ms": ("worker.jobs.mixed", {"cpu_ms": 5.0, "io_seconds": 0.02}, 400),
}


def run_cell(
    conn: redis.Redis[bytes], url: str, func: str, kwargs: dict[str, Any], n: int, tpc: int
) -> tuple[float, float]:
    conn.flushall()
    q = Queue("sizing", connection=conn, serializer=JSONSerializer)
    q.enqueue_many([Queue.prepare_data(func, kwargs=kwargs, result_ttl=600) for _ in range(n)])
    cmd = [
        sys.executable,
        "-m",
        "worker",
        "--strategy",
        "thread",
        "--threads-per-cpu",
        str(tpc),
        "--queues",
        "sizing",
        "--burst",
        "--redis-url",
        url,
        "--metrics-port",
        "0",
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(cmd)
    peak = 0
    ps = psutil.Process(proc.pid)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, ps.memory_info().rss)
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
        raise RuntimeError("cell timed out")
    ids = q.finished_job_registry.get_job_ids()
    if len(ids) != n:
        raise RuntimeError(f"{n - len(ids)} jobs did not finish")
    jobs = [j for j in Job.fetch_many(ids, connection=conn, serializer=JSONSerializer) if j is not None]
    start = min(j.started_at.timestamp() for j in jobs if j.started_at)
    end = max(j.ended_at.timestamp() for j in jobs if j.ended_at)
    return n / (end - start), peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--factors", default="1,2,4,8,16,32")
    args = ap.parse_args()
    factors = [int(f) for f in args.factors.split(",")]
    cpus = detect_cpus().available
    server = RedisServer()
    try:
        url, conn = server.url, server.client
        print(f"available CPUs: {cpus}; load average at start: {os.getloadavg()[0]:.2f}\n")
        print("| workload | " + " | ".join(f"{f}/CPU ({f * cpus} threads)" for f in factors) + " |")
        print("|---|" + "---|" * len(factors))
        for label, (func, kwargs, n) in WORKLOADS.items():
            cells = []
            for f in factors:
                runs = [run_cell(conn, url, func, kwargs, n, f) for _ in range(args.repeats)]
                rates = [r[0] for r in runs]
                rss = max(r[1] for r in runs)
                cells.append(
                    f"{statistics.median(rates):.0f} jobs/s ({min(rates):.0f}-{max(rates):.0f}), {rss:.0f} MiB"
                )
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

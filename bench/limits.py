"""The limits "% of limit" is relative to, measured in the same run: a plain loop of the job
function in as many processes as CPUs (cpu), one client's LPUSH+RPOP round trips (noop), and
the nominal ones that follow from the job's parameters (io, alloc, mixed).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from typing import Any

import redis

from bench.catalog import ALLOC_SECONDS, IO_SECONDS, MIXED_CPU_MS, MIXED_IO_SECONDS


def _loop_child(conn: Any, func: str, kwargs: dict[str, Any], n: int) -> None:
    """One process of the plain loop: warm up, wait for 'go', run the job n times back to back."""
    import importlib

    module, _, name = func.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    warm = dict(kwargs)
    if "iterations" in warm:
        warm["iterations"] = min(int(warm["iterations"]), 10_000)
    fn(**warm)
    conn.send("ready")
    conn.recv()
    t0 = time.time()
    for _ in range(n):
        fn(**kwargs)
    conn.send((t0, time.time()))
    conn.close()


def measure_plain_loop(func: str, kwargs: dict[str, Any], count: int, nproc: int, timeout: float) -> float:
    """jobs/s of `nproc` plain processes calling the job function `count` times in total, no queue."""
    ctx = mp.get_context("spawn")
    shares = [count // nproc + (1 if i < count % nproc else 0) for i in range(nproc)]
    shares = [s for s in shares if s > 0]
    procs, conns = [], []
    try:
        for share in shares:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_loop_child, args=(child, func, kwargs, share), daemon=True)
            p.start()
            child.close()
            procs.append(p)
            conns.append(parent)
        deadline = time.monotonic() + timeout
        for c in conns:
            if not c.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("plain loop did not start in time")
            c.recv()
        for c in conns:
            c.send("go")
        spans = []
        for c in conns:
            if not c.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("plain loop did not finish in time")
            spans.append(c.recv())
        makespan = max(e for _, e in spans) - min(s for s, _ in spans)
        return count / makespan if makespan > 0 else math.nan
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def measure_redis_pairs(url: str, pairs: int = 5000, max_seconds: float = 5.0) -> float:
    """LPUSH+RPOP pairs per second from one client, one round trip per command, no pipelining."""
    client = redis.Redis.from_url(url)
    key = "bench:raw-round-trips"
    client.delete(key)
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + max_seconds
    while done < pairs and time.perf_counter() < deadline:
        client.lpush(key, b"x")
        client.rpop(key)
        done += 1
    elapsed = time.perf_counter() - t0
    client.delete(key)
    client.close()
    return done / elapsed if elapsed > 0 else math.nan


def nominal_limit(workload: str, concurrency: int, cpus: int) -> float | None:
    """Limits that follow from the job's parameters alone (I/O-bound and mixed work)."""
    if workload == "io":
        return concurrency / IO_SECONDS
    if workload == "alloc":
        return concurrency / ALLOC_SECONDS
    if workload == "mixed":
        return min(cpus * 1000.0 / MIXED_CPU_MS, concurrency / (MIXED_CPU_MS / 1000.0 + MIXED_IO_SECONDS))
    return None


def best_limits(limits: dict[int, dict[str, float]]) -> dict[str, float]:
    """The limit per workload: the highest of the repeats' measurements.

    A limit is what the machine can do; noise from other processes only ever lowers a measurement,
    so the best one is the closest to the truth (and makes "% of limit" conservative).
    """
    best: dict[str, float] = {}
    for per_repeat in limits.values():
        for name, value in per_repeat.items():
            if not math.isnan(value):
                best[name] = max(best.get(name, 0.0), value)
    return best

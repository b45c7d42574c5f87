"""``python -m producer experiment``: strategies x workloads x sizes, one cell at a time.

Three modes:

- ``--local``: the producer runs everything. It uses ``REDIS_URL`` when that answers, else it
  starts its own ``redis-server`` on a free loopback port. For every cell it starts a
  long-running ``python -m worker`` on a queue of its own, waits until the worker has
  registered and run one warm-up job per slot, enqueues the cell's jobs as one burst, waits
  until all have ended, then stops the worker (SIGTERM) before the next cell starts. Memory
  and CPU come from the worker's process tree (psutil, every ~100 ms). It also measures
  start-up (a fresh worker until all its slots run a job, and N bare threads vs N processes)
  and killability (a job that overruns its timeout, per strategy).
- against running workers (compose): every strategy's workers consume a queue named after the
  strategy (``thread``, ``process``, ``inline``, ``hybrid``, ``auto``); each cell sends its burst to that queue and
  waits until it has drained. Memory and CPU come from the workers' Prometheus metrics
  (``--worker-metrics thread=http://worker-thread:8000/metrics,...``).
- ``--docker``: every cell in a fresh worker container under a CPU and memory limit, started
  and removed by the producer through the Docker SDK; the CPU limit is one more dimension of
  the matrix (see :mod:`producer.containers`).

Every cell reads its jobs back with ``Job.fetch_many`` and computes throughput and latency
from RQ's own timestamps (see :mod:`producer.measure`). Results: ``results.json`` (everything),
``results.csv`` (one row per cell run), ``jobs.csv`` (every job's timestamps), ``report.md``
and PNG charts (see :mod:`producer.report`, :mod:`producer.charts`).
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
import rq

from producer.enqueue import connect, enqueue
from producer.errors import BadInput
from producer.local import LocalRedis, LocalWorker, reachable
from producer.measure import (
    MIB,
    HostCpu,
    MetricsProbe,
    TreeSampler,
    failure_reasons,
    job_times,
    local_redis_process,
    other_load,
    peak,
    sample_results,
    summarize,
)
from producer.workloads import WORKLOADS, JobSpec, build_spec, experiment_spec, parse_param

STRATEGIES = ("thread", "process", "inline", "hybrid", "auto")
DEFAULT_CONCURRENCY = {"thread": ["auto"], "process": ["auto"], "inline": ["1"], "hybrid": ["auto"], "auto": ["auto"]}
TERMINAL = {"finished", "failed", "stopped", "canceled", "missing"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# options


def parse_list(value: str, allowed: Sequence[str], flag: str, noun: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise BadInput(f"--{flag} needs at least one entry (choose from {', '.join(allowed)})")
    bad = [v for v in items if v not in allowed]
    if bad:
        raise BadInput(f"unknown {noun} {bad[0]!r} (choose from {', '.join(allowed)})")
    if len(set(items)) != len(items):
        raise BadInput(f"--{flag} names an entry twice: {value}")
    return items


def parse_counts(value: str, workloads: Sequence[str]) -> dict[str, int]:
    """``300`` (every workload) or ``cpu=200,io=400`` (others: the bare number, else 100)."""
    counts: dict[str, int] = {}
    default: int | None = None
    for item in filter(None, (v.strip() for v in value.split(","))):
        key, sep, raw = item.rpartition("=")
        try:
            n = int(raw)
        except ValueError:
            raise BadInput(f"--count {item!r}: expected a whole number of jobs, or workload=N") from None
        if n <= 0:
            raise BadInput(f"--count must be positive, got {item!r}")
        if not sep:
            default = n
        elif key not in WORKLOADS:
            raise BadInput(f"--count {item!r}: unknown workload {key!r}")
        else:
            counts[key] = n
    for w in workloads:
        counts.setdefault(w, default if default is not None else 100)
    return counts


def _concurrency_value(v: str, where: str) -> str:
    v = v.strip().lower()
    if v == "auto" or (v.isdigit() and 1 <= int(v) <= 4096):
        return v
    raise BadInput(f"--concurrency {where}: {v!r} must be 'auto' or a whole number from 1 to 4096")


def parse_concurrency(value: str | None, strategies: Sequence[str], workloads: Sequence[str]) -> dict[str, list[str]]:
    """Worker sizes per ``strategy`` and ``strategy:workload``.

    ``thread=16,process=auto+8,process:io=16``: entries ``[strategy[:workload]=]v[+v...]``; a
    bare value applies to thread and process. Several values (``+``) give several cells.
    """
    table: dict[str, list[str]] = {s: list(DEFAULT_CONCURRENCY[s]) for s in STRATEGIES}
    for item in filter(None, (v.strip() for v in (value or "").split(","))):
        key, sep, raw = item.rpartition("=")
        values = [_concurrency_value(v, item) for v in raw.split("+")]
        if not sep:
            table["thread"] = values
            table["process"] = values
            continue
        strategy, _, workload = key.partition(":")
        if strategy not in STRATEGIES:
            raise BadInput(f"--concurrency {item!r}: unknown strategy {strategy!r}")
        if workload and workload not in WORKLOADS:
            raise BadInput(f"--concurrency {item!r}: unknown workload {workload!r}")
        if strategy == "inline" and any(v not in ("1", "auto") for v in values):
            raise BadInput("--concurrency: the inline strategy runs one job at a time (concurrency 1)")
        table[key] = values
    return {f"{s}:{w}": table.get(f"{s}:{w}", table[s]) for s in strategies for w in workloads}


@dataclass
class Options:
    strategies: list[str]
    workloads: list[str]
    counts: dict[str, int]
    concurrency: dict[str, list[str]]  # "strategy:workload" -> sizes
    out: Path
    local: bool = True
    repeats: int = 1
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # workload -> overrides
    worker_metrics: dict[str, list[str]] = field(default_factory=dict)
    startup: bool = True
    timeouts: bool = True
    timeout_job_seconds: float = 4.0
    job_timeout: int = 1
    sample_interval: float = 0.1
    cell_timeout: float = 600.0
    metrics_settle: float = 2.5
    quiet_below: float | None = None  # wait for other programs to use fewer cores than this
    quiet_wait: float = 120.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    batch_size: int = 500
    result_ttl: int = 3600
    argv: list[str] = field(default_factory=list)
    docker: Any = None  # producer.containers.DockerOptions: every cell in a worker container (--docker)


def parse_params(items: Sequence[str], workloads: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--param io.seconds=0.1`` -> {"io": {"seconds": 0.1}} (checked against the workload)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, dot, rest = item.partition(".")
        if not dot or "=" not in rest or "=" in target:
            raise BadInput(f"malformed --param {item!r}: expected workload.key=value, e.g. io.seconds=0.1")
        if target not in WORKLOADS:
            raise BadInput(f"--param {item!r}: unknown workload {target!r}")
        key, value = parse_param(rest)
        out.setdefault(target, {})[key] = value
    for w, overrides in out.items():
        experiment_spec(w, overrides)  # checks names, types, size
    return out


def parse_worker_metrics(value: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in filter(None, (v.strip() for v in value.split(","))):
        strategy, sep, urls = item.partition("=")
        if not sep or strategy not in STRATEGIES or not urls:
            raise BadInput(
                f"--worker-metrics {item!r}: expected strategy=URL[+URL...], e.g. thread=http://h:8000/metrics"
            )
        parsed = [u for u in urls.split("+") if u]
        for u in parsed:
            if not u.startswith(("http://", "https://")):
                raise BadInput(f"--worker-metrics {item!r}: {u!r} is not an http(s) URL")
        out[strategy] = parsed
    return out


def check_running_workers(opts: Options) -> None:
    """Against running workers: Redis must answer and every strategy's queue must have a worker."""
    from rq import Queue
    from rq.worker import Worker

    conn = connect(opts.redis_url)
    missing = [s for s in opts.strategies if not Worker.all(queue=Queue(s, connection=conn), connection=conn)]
    conn.close()
    if missing:
        raise BadInput(
            f"no running worker consumes queue(s) {', '.join(missing)} at {opts.redis_url}: start the worker "
            "services (each consumes the queue named after its strategy), or use --local"
        )


# ---------------------------------------------------------------------------------------------
# sizes, calibration, limits


def available_cpus() -> int:
    from worker.cpus import detect_cpus

    return int(detect_cpus().available)


def resolve_capacity(strategy: str, concurrency: str, cpus: int) -> int:
    """What ``--concurrency`` resolves to in a worker started by the producer (no WORKER_* env)."""
    from worker import defaults
    from worker.strategies import STRATEGIES as WORKER_STRATEGIES
    from worker.strategies import StrategyConfig

    config = StrategyConfig(
        available_cpus=cpus,
        concurrency=None if concurrency == "auto" else int(concurrency),
        threads_per_cpu=defaults.THREADS_PER_CPU,
    )
    return WORKER_STRATEGIES[strategy].size(config)  # the worker's own rule, so the two cannot drift


def calibrate(spec: JobSpec, runs: int = 5) -> dict[str, float]:
    """CPU seconds and wall seconds of one job run alone in this process (median of ``runs``)."""
    import importlib

    module, _, name = spec.func.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    kwargs = spec.representative()
    fn(**kwargs)  # warm-up (and the worker's own iterations-per-ms calibration)
    cpus, walls = [], []
    for _ in range(runs):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn(**kwargs)
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - w0)
    return {"cpu_s": statistics.median(cpus), "wall_s": statistics.median(walls), "runs": runs}


def machine_limit(workload: str, calib: dict[str, float], concurrency: int, cpus: int) -> tuple[float, str]:
    """Jobs/s the machine (CPU work) or the configuration (waiting work) allows at most."""
    cpu_s, wall_s = calib["cpu_s"], calib["wall_s"]
    cpu_limit = cpus / cpu_s if cpu_s > 1e-6 else math.inf
    if workload == "cpu":
        return cpu_limit, f"{cpus} CPUs / {cpu_s * 1000:.1f} ms CPU per job"
    wall_limit = concurrency / wall_s if wall_s > 0 else math.inf
    if cpu_limit < wall_limit:
        return cpu_limit, f"{cpus} CPUs / {cpu_s * 1000:.1f} ms CPU per job"
    return wall_limit, f"{concurrency} slots / {wall_s * 1000:.0f} ms per job"


# ---------------------------------------------------------------------------------------------
# cells


def wait_done(conn: redis.Redis[bytes], ids: Sequence[str], timeout: float) -> bool:
    """Polls the jobs' statuses until every one has ended; False on timeout."""
    pending = list(ids)
    deadline = time.monotonic() + timeout
    while pending:
        with conn.pipeline(transaction=False) as p:
            for job_id in pending:
                p.hget(f"rq:job:{job_id}", "status")
            statuses = p.execute()
        pending = [j for j, s in zip(pending, statuses, strict=True) if s is not None and s.decode() not in TERMINAL]
        if not pending:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05 if len(pending) < 1000 else 0.2)
    return True


@dataclass
class Context:
    opts: Options
    conn: redis.Redis[bytes]
    url: str
    run_id: str
    cpus: int
    specs: dict[str, JobSpec]
    calibration: dict[str, dict[str, float]]
    log_dir: Path
    redis_proc: psutil.Process | None = None
    jobs_rows: list[list[Any]] = field(default_factory=list)

    def queue_name(self, *parts: str) -> str:
        return "-".join(("poolq-exp", self.run_id, *parts))


def _result_facts(values: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = [float(v["cpu"]) for v in values if "cpu" in v]
    return {
        "job_cpu_ms_median": statistics.median(cpu) * 1000 if cpu else None,
        "distinct_pids": len({v["pid"] for v in values if "pid" in v}),
        "distinct_threads": len({(v["pid"], v["thread"]) for v in values if "pid" in v and "thread" in v}),
        "results_sampled": len(values),
    }


def _finish_cell(
    ctx: Context,
    cell: dict[str, Any],
    ids: list[str],
    done: bool,
) -> dict[str, Any]:
    times = job_times(ctx.conn, ids)
    cell.update(summarize(times))
    for t in times:
        ctx.jobs_rows.append(
            [cell["key"], cell["strategy"], cell["concurrency"], cell["workload"], cell["repeat"],
             t.id, t.status, t.enqueued_at, t.started_at, t.ended_at]
        )  # fmt: skip
    problems: list[str] = list(cell.get("problems", []))
    if not done:
        problems.append(f"not all jobs ended within {ctx.opts.cell_timeout:g} s")
    if cell["failed"]:
        problems.append(f"{cell['failed']}/{len(ids)} jobs did not finish")
        cell["failure_examples"] = failure_reasons(ctx.conn, [t.id for t in times if t.status != "finished"])
    cell["problems"] = problems
    cell.update(_result_facts(sample_results(ctx.conn, [t.id for t in times if t.status == "finished"])))
    calib = ctx.calibration[cell["workload"]]
    # A container's CPU limit may be fractional; the worker rounds it up (its detected CPUs).
    cpus_for_limit = cell.get("cpu_limit") or cell["available_cpus"]
    limit, basis = machine_limit(cell["workload"], calib, cell["concurrency"], cpus_for_limit)
    cell["limit_jobs_s"] = limit
    cell["limit_basis"] = basis
    thr = cell.get("throughput_jobs_s", math.nan)
    cell["pct_of_limit"] = 100.0 * thr / limit if limit and math.isfinite(limit) and thr == thr else math.nan
    cpu_s = cell.get("cpu_s")
    if cpu_s is not None and cell["finished"]:
        cell["cpu_s_per_1k_jobs"] = 1000.0 * cpu_s / cell["finished"]
        cell["cores_busy"] = cpu_s / cell["makespan_s"] if cell["makespan_s"] > 0 else math.nan
    else:
        cell["cpu_s_per_1k_jobs"] = None
        cell["cores_busy"] = None
    return cell


def wait_quiet(ctx: Context) -> float | None:
    """With ``--quiet-below C``: wait (at most ``--quiet-wait`` s) until other programs use < C cores.

    Returns the other load seen last (cores), None when not asked to wait.
    """
    opts = ctx.opts
    if opts.quiet_below is None:
        return None
    deadline = time.monotonic() + opts.quiet_wait
    warned = False
    while True:
        a = HostCpu.read(ctx.redis_proc)
        time.sleep(1.0)
        b = HostCpu.read(ctx.redis_proc)
        other = other_load(a, b, 0.0).get("other_cores", 0.0)
        if other < opts.quiet_below:
            return other
        if time.monotonic() > deadline:
            log(f"warning: other programs still use {other:.2f} cores after {opts.quiet_wait:g} s; going on")
            return other
        if not warned:
            log(f"waiting for other programs to use < {opts.quiet_below:g} cores (now {other:.2f})")
            warned = True


def run_local_cell(ctx: Context, strategy: str, conc: str, workload: str, repeat: int) -> dict[str, Any]:
    opts = ctx.opts
    count = opts.counts[workload]
    queue = ctx.queue_name(f"{strategy}{conc}", workload, f"r{repeat}")
    quiet = wait_quiet(ctx)
    cell: dict[str, Any] = {
        "mode": "local",
        "other_cores_before": quiet,
        "strategy": strategy,
        "concurrency_arg": conc,
        "workload": workload,
        "repeat": repeat,
        "count": count,
        "spec": ctx.specs[workload].describe(),
        "queue": queue,
        "available_cpus": ctx.cpus,
    }
    worker = LocalWorker(ctx.url, strategy, conc, queue, f"{queue}-w", ctx.log_dir)
    sampler: TreeSampler | None = None
    ids: list[str] = []
    done = False
    try:
        info = worker.wait_registered(ctx.conn)
        capacity = int(info.get("poolq_concurrency") or resolve_capacity(strategy, conc, ctx.cpus))
        cell["concurrency"] = capacity
        cell["key"] = f"{strategy}x{capacity}/{workload}/r{repeat}"
        warm = enqueue(ctx.conn, queue, build_spec("noop"), capacity, result_ttl=60)
        if not wait_done(ctx.conn, warm.job_ids, 120):
            raise RuntimeError(f"warm-up jobs did not end: {worker.output()}")
        sampler = TreeSampler(worker.pid, opts.sample_interval)
        idle = sampler.sample_now()
        host0 = HostCpu.read(ctx.redis_proc)
        sampler.start()
        rep = enqueue(
            ctx.conn,
            queue,
            ctx.specs[workload],
            count,
            batch_size=opts.batch_size,
            result_ttl=opts.result_ttl,
            seed=repeat,
        )
        ids = rep.job_ids
        cell["enqueue_s"] = rep.elapsed
        done = wait_done(ctx.conn, ids, opts.cell_timeout)
        end = sampler.sample_now()
        host1 = HostCpu.read(ctx.redis_proc)
        sampler.stop()
        load = sampler.between(idle.t, end.t)
        cell.update(other_load(host0, host1, end.cpu - idle.cpu))
        cell.update(
            idle_pss_mib=idle.pss / MIB,
            idle_uss_mib=idle.uss / MIB,
            peak_uss_mib=peak(load, "uss") / MIB,
            idle_rss_mib=idle.rss / MIB,
            peak_pss_mib=peak(load, "pss") / MIB,
            peak_rss_mib=peak(load, "rss") / MIB,
            peak_processes=int(peak(load, "processes")),
            memory_samples=len(load),
            cpu_s=end.cpu - idle.cpu,
        )
    finally:
        if sampler is not None:
            sampler.stop()
        code = worker.stop()
    cell["worker_exit"] = code
    problems = [] if code == 0 else [f"worker exited {code}"]
    cell["problems"] = problems
    cell["log"] = str(worker.log_path)
    return _finish_cell(ctx, cell, ids, done)


def run_remote_cell(ctx: Context, strategy: str, workload: str, repeat: int) -> dict[str, Any]:
    """A cell against workers that are already running: the queue is named after the strategy."""
    from rq import Queue
    from rq.worker import Worker

    opts = ctx.opts
    count = opts.counts[workload]
    queue = strategy
    urls = opts.worker_metrics.get(strategy, [])
    cell: dict[str, Any] = {
        "mode": "running-workers",
        "strategy": strategy,
        "concurrency_arg": "deployed",
        "workload": workload,
        "repeat": repeat,
        "count": count,
        "spec": ctx.specs[workload].describe(),
        "queue": queue,
        "metrics_urls": urls,
    }
    workers = Worker.all(queue=Queue(queue, connection=ctx.conn), connection=ctx.conn)
    if not workers:
        raise BadInput(f"no worker consumes queue {queue!r} (start the {strategy} worker service, or use --local)")
    hashes = [ctx.conn.hgetall(f"rq:worker:{w.name}") for w in workers]
    capacity = sum(int(h.get(b"poolq_concurrency", b"1")) for h in hashes)
    probe = MetricsProbe(urls) if urls else None
    before = probe.sample_now() if probe else None
    cpus = ctx.cpus
    if before is not None:
        if before.pool_size:
            capacity = int(before.pool_size)
        if before.available_cpus:
            cpus = int(before.available_cpus)
    cell["concurrency"] = capacity
    cell["replicas"] = len(workers)
    cell["available_cpus"] = cpus
    cell["key"] = f"{strategy}x{capacity}/{workload}/r{repeat}"
    if probe:
        probe.start()
    rep = enqueue(ctx.conn, queue, ctx.specs[workload], count, batch_size=opts.batch_size, result_ttl=opts.result_ttl)
    cell["enqueue_s"] = rep.elapsed
    done = wait_done(ctx.conn, rep.job_ids, opts.cell_timeout)
    problems: list[str] = []
    if probe:
        time.sleep(opts.metrics_settle)  # the workers sample their tree every few seconds
        after = probe.sample_now()
        probe.stop()
        readings = [r for r in probe.readings if r.pss is not None]
        if before is not None and after is not None and before.cpu is not None and after.cpu is not None:
            cell["cpu_s"] = after.cpu - before.cpu
        cell["idle_pss_mib"] = before.pss / MIB if before and before.pss is not None else math.nan
        cell["idle_rss_mib"] = before.rss / MIB if before and before.rss is not None else math.nan
        cell["peak_pss_mib"] = max((r.pss or 0.0) for r in readings) / MIB if readings else math.nan
        cell["peak_rss_mib"] = max((r.rss or 0.0) for r in readings) / MIB if readings else math.nan
        cell["memory_samples"] = len(readings)
        if probe.errors:
            problems.append(f"metrics: {probe.errors[0]}")
    else:
        problems.append("no --worker-metrics URL for this strategy: memory and CPU not measured")
    cell["problems"] = problems
    return _finish_cell(ctx, cell, rep.job_ids, done)


def run_startup_cell(ctx: Context, strategy: str, conc: str, repeat: int) -> dict[str, Any]:
    """A fresh worker, N probe jobs queued before it starts: when does each slot run its first job?"""
    capacity = resolve_capacity(strategy, conc, ctx.cpus)
    queue = ctx.queue_name(f"{strategy}{capacity}", "startup", f"r{repeat}")
    wait_quiet(ctx)
    probe_s = 0.5
    rep = enqueue(ctx.conn, queue, build_spec("io", {"seconds": probe_s}), capacity, result_ttl=600)
    worker = LocalWorker(ctx.url, strategy, conc, queue, f"{queue}-w", ctx.log_dir)
    spawned = worker.started_wall
    try:
        done = wait_done(ctx.conn, rep.job_ids, 120)
        reading = TreeSampler(worker.pid).sample_now()
    finally:
        code = worker.stop()
    times = job_times(ctx.conn, rep.job_ids)
    starts = sorted(t.started_at for t in times if t.started_at is not None)
    return {
        "strategy": strategy,
        "concurrency": capacity,
        "repeat": repeat,
        "probe_job": f"io(seconds={probe_s})",
        "first_job_started_s": starts[0] - spawned if starts else math.nan,
        "all_slots_busy_s": starts[-1] - spawned if len(starts) == capacity else math.nan,
        "idle_pss_mib": reading.pss / MIB,
        "idle_uss_mib": reading.uss / MIB,
        "idle_rss_mib": reading.rss / MIB,
        "processes": reading.processes,
        "ok": bool(done and code == 0 and len(starts) == capacity),
    }


def run_timeout_cell(ctx: Context, strategy: str) -> dict[str, Any]:
    """One job that overruns its timeout, then a noop, on a one-slot worker.

    Reports when the job was failed, when the slot ran the next job, and until when the tree
    kept burning CPU (the overdue code still running: a thread cannot be killed).
    """
    from worker.jobs import iterations_per_ms

    opts = ctx.opts
    queue = ctx.queue_name(strategy, "timeout")
    wait_quiet(ctx)
    worker = LocalWorker(ctx.url, strategy, "1", queue, f"{queue}-w", ctx.log_dir)
    iterations = int(opts.timeout_job_seconds * 1000 * iterations_per_ms())
    sampler: TreeSampler | None = None
    try:
        worker.wait_registered(ctx.conn)
        warm = enqueue(ctx.conn, queue, build_spec("noop"), 1, result_ttl=60)
        wait_done(ctx.conn, warm.job_ids, 60)
        sampler = TreeSampler(worker.pid, 0.05)
        sampler.start()
        long = enqueue(
            ctx.conn,
            queue,
            build_spec("cpu", {"iterations": iterations}),
            1,
            job_timeout=opts.job_timeout,
            result_ttl=600,
        )
        nxt = enqueue(ctx.conn, queue, build_spec("noop"), 1, result_ttl=600)
        wait_done(ctx.conn, long.job_ids + nxt.job_ids, opts.timeout_job_seconds * 4 + 30)
        a = job_times(ctx.conn, long.job_ids)[0]
        # Watch the CPU until the overdue job would have ended on its own, and a bit more.
        if a.started_at is not None:
            while time.time() < a.started_at + opts.timeout_job_seconds * 1.5 + 1.0:
                time.sleep(0.1)
        sampler.stop()
    finally:
        if sampler is not None:
            sampler.stop()
        worker.stop()
    a = job_times(ctx.conn, long.job_ids)[0]
    b = job_times(ctx.conn, nxt.job_ids)[0]
    reason = failure_reasons(ctx.conn, long.job_ids, 1)
    burn_end = math.nan
    readings = sampler.readings
    if a.started_at is not None:
        for r0, r1 in itertools.pairwise(readings):
            if r1.t <= r0.t:
                continue
            if (r1.cpu - r0.cpu) / (r1.t - r0.t) > 0.5 and r1.t > a.started_at:
                burn_end = r1.t - a.started_at
    return {
        "strategy": strategy,
        "job": f"cpu(~{opts.timeout_job_seconds:g} s of one core)",
        "job_timeout_s": opts.job_timeout,
        "status": a.status,
        "reason": reason[0].split(": ", 1)[-1] if reason else "",
        "failed_after_s": (a.ended_at - a.started_at) if a.ended_at and a.started_at else math.nan,
        "next_job_started_after_s": (b.started_at - a.started_at) if b.started_at and a.started_at else math.nan,
        "cpu_burned_until_s": burn_end,
        "cpu_timeline": [(r.t - (a.started_at or r.t), r.cpu) for r in readings],
    }


# ---------------------------------------------------------------------------------------------
# aggregation and files


SUMMARY_KEYS = (
    "throughput_jobs_s", "pct_of_limit", "limit_jobs_s",
    "wait_p50_s", "wait_p95_s", "wait_p99_s", "wait_mean_s",
    "run_p50_s", "run_p95_s", "run_p99_s", "run_mean_s", "run_cv2",
    "e2e_p50_s", "e2e_p95_s", "e2e_p99_s",
    "peak_pss_mib", "peak_rss_mib", "idle_pss_mib", "idle_rss_mib", "peak_uss_mib", "idle_uss_mib",
    "cpu_s_per_1k_jobs", "cores_busy", "job_cpu_ms_median", "makespan_s",
    "producer_cores", "redis_cores", "other_cores",
)  # fmt: skip
DOCKER_SUMMARY_KEYS = (
    "jobs_per_s_per_cpu", "container_mem_idle_mib", "container_mem_peak_mib", "container_mem_usage_peak_mib",
    "container_mem_max_usage_mib", "container_mem_limit_mib", "container_throttled_s", "healthy_after_s",
    "worker_tree_cpu_s",
)  # fmt: skip


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def median_of(values: Sequence[Any]) -> float | None:
    nums = [n for n in (_num(v) for v in values) if n is not None]
    return statistics.median(nums) if nums else None


def aggregate(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (strategy, concurrency, workload): medians over the repeats."""
    groups: dict[tuple[str, int, str, float | None], list[dict[str, Any]]] = {}
    for c in cells:
        if "concurrency" in c:
            key = (c["strategy"], int(c["concurrency"]), c["workload"], c.get("cpu_limit"))
            groups.setdefault(key, []).append(c)
    rows = []
    for (strategy, conc, workload, cpu_limit), runs in groups.items():
        thr = [t for t in (_num(r.get("throughput_jobs_s")) for r in runs) if t is not None]
        row: dict[str, Any] = {
            "strategy": strategy,
            "concurrency": conc,
            "workload": workload,
            "mode": runs[0]["mode"],
            "spec": runs[0]["spec"],
            "count": runs[0]["count"],
            "available_cpus": runs[0].get("available_cpus"),
            "replicas": runs[0].get("replicas", 1),
            "runs": len(runs),
            "runs_ok": sum(1 for r in runs if not r.get("problems")),
            "throughput_min": min(thr) if thr else None,
            "throughput_max": max(thr) if thr else None,
            "failed": sum(int(r.get("failed", 0)) for r in runs),
            "problems": [f"r{r['repeat']}: {'; '.join(r['problems'])}" for r in runs if r.get("problems")],
            "limit_basis": runs[0].get("limit_basis", ""),
            "concurrency_arg": runs[0].get("concurrency_arg"),
        }
        if cpu_limit is not None:  # --docker: the container's limits and what the worker made of them
            row["cpu_limit"] = cpu_limit
            row["memory_limit_mib"] = runs[0].get("memory_limit_mib")
            row["detected_cpus"] = sorted({r.get("available_cpus") for r in runs}, key=str)
            row["pool_sizes"] = sorted({r.get("pool_size") for r in runs}, key=str)
            for k in DOCKER_SUMMARY_KEYS:
                row[k] = median_of([r.get(k) for r in runs])
        for k in SUMMARY_KEYS:
            row[k] = median_of([r.get(k) for r in runs])
        rows.append(row)
    order = {s: i for i, s in enumerate(STRATEGIES)}
    wl = {w: i for i, w in enumerate(WORKLOADS)}
    rows.sort(key=lambda r: (wl.get(r["workload"], 99), order.get(r["strategy"], 99), r.get("cpu_limit") or 0,
                             r["concurrency"]))  # fmt: skip
    return rows


CSV_COLUMNS = (
    "strategy", "concurrency", "workload", "repeat", "count", "finished", "failed", "makespan_s",
    "throughput_jobs_s", "limit_jobs_s", "pct_of_limit",
    "wait_p50_s", "wait_p95_s", "wait_p99_s", "run_p50_s", "run_p95_s", "run_p99_s",
    "e2e_p50_s", "e2e_p95_s", "e2e_p99_s", "run_mean_s", "run_cv2",
    "idle_pss_mib", "peak_pss_mib", "idle_rss_mib", "peak_rss_mib", "idle_uss_mib", "peak_uss_mib",
    "cpu_s", "cpu_s_per_1k_jobs", "cores_busy",
    "job_cpu_ms_median", "distinct_pids", "distinct_threads", "producer_cores", "redis_cores", "other_cores",
    "available_cpus", "mode", "spec", "queue", "problems",
    "cpu_limit", "memory_limit_mib", "pool_size", "jobs_per_s_per_cpu", "container_mem_idle_mib",
    "container_mem_peak_mib", "container_mem_usage_peak_mib", "container_mem_max_usage_mib", "container_mem_limit_mib",
    "container_throttled_s", "container_throttled_periods", "healthy_after_s", "worker_exit", "oom_killed",
)  # fmt: skip


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_results(out: Path, results: dict[str, Any], jobs_rows: list[list[Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for c in results["cells"]:
            row = []
            for k in CSV_COLUMNS:
                v = c.get(k)
                if k == "problems":
                    v = "; ".join(v or [])
                elif isinstance(v, float):
                    v = "" if not math.isfinite(v) else f"{v:.6g}"
                row.append("" if v is None else v)
            w.writerow(row)
    with open(out / "jobs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", "strategy", "concurrency", "workload", "repeat", "job_id", "status",
                    "enqueued_at", "started_at", "ended_at"])  # fmt: skip
        for r in jobs_rows:
            w.writerow(["" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for v in r])


# ---------------------------------------------------------------------------------------------
# the run


def cell_line(c: dict[str, Any]) -> str:
    def f(v: Any, fmt: str) -> str:
        n = _num(v)
        return "-" if n is None else format(n, fmt)

    warn = f"  !! {'; '.join(c['problems'])}" if c.get("problems") else ""
    where = ""
    if c.get("cpu_limit") is not None:  # --docker
        where = (
            f"@{c['cpu_limit']:g}cpu (worker saw {c.get('available_cpus', '?')} CPUs, pool {c.get('pool_size', '?')}, "
            f"container peak {f(c.get('container_mem_peak_mib'), '.0f')} MiB)"
        )
    return (
        f"[r{c['repeat']}] {c['strategy']}x{c.get('concurrency', '?')}{where} {c['workload']}: "
        f"{c.get('finished', 0)}/{c['count']} jobs, {f(c.get('throughput_jobs_s'), ',.1f')} jobs/s "
        f"({f(c.get('pct_of_limit'), '.0f')}% of limit), p95 wait {f(c.get('wait_p95_s'), '.3f')} s, "
        f"p95 run {f(c.get('run_p95_s'), '.3f')} s, peak PSS {f(c.get('peak_pss_mib'), '.1f')} MiB, "
        f"CPU {f(c.get('cpu_s_per_1k_jobs'), '.1f')} s/1k jobs{warn}"
    )


def run(opts: Options, on_cell: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Runs the whole matrix and writes every output file; returns the results."""
    from producer import charts, report
    from worker.jobs import iterations_per_ms

    started = time.monotonic()
    run_id = dt.datetime.now().strftime("%H%M%S") + uuid.uuid4().hex[:4]
    lab: Any = None  # producer.containers.DockerLab with --docker
    local_redis: LocalRedis | None = None
    if opts.local and not reachable(opts.redis_url):
        local_redis = LocalRedis()
        log(
            f"REDIS_URL {opts.redis_url} is unreachable: started redis-server {local_redis.version} "
            f"on 127.0.0.1:{local_redis.port} for this run"
        )
    url = local_redis.url if local_redis else opts.redis_url
    interrupted = False
    cells: list[dict[str, Any]] = []
    startup: list[dict[str, Any]] = []
    timeouts: list[dict[str, Any]] = []
    pool_start: list[dict[str, Any]] = []
    opts.out.mkdir(parents=True, exist_ok=True)
    log_dir = opts.out / "logs"
    log_dir.mkdir(exist_ok=True)
    try:
        if opts.docker is not None:
            from producer.containers import LABEL, DockerLab

            lab = DockerLab(opts.docker, run_id, log_dir)
            log(f"experiment {run_id}: starting the Docker network and Redis (label {LABEL}={run_id})")
            url = lab.start()
        conn = connect(url)
        redis_version = str(conn.info("server").get("redis_version", "?"))
        cpus = available_cpus()
        specs: dict[str, JobSpec] = {}
        for w in opts.workloads:
            overrides = dict(opts.params.get(w, {}))
            spec = experiment_spec(w, overrides)
            if w == "cpu" and "ms" in spec.kwargs:
                # Same work in every process: iterations calibrated once, here.
                spec = build_spec("cpu", {"iterations": int(spec.kwargs["ms"] * iterations_per_ms())})
            specs[w] = spec
        log(f"calibrating {', '.join(opts.workloads)} (one job at a time in this process)")
        calibration = {w: calibrate(specs[w], 3 if w in ("alloc", "io") else 5) for w in opts.workloads}
        redis_proc = local_redis_process(conn) if lab is None else None  # a container's pid is not the host's
        ctx = Context(opts, conn, url, run_id, cpus, specs, calibration, log_dir, redis_proc)
        mode = "worker containers" if lab else "local workers" if opts.local else "running workers"
        log(
            f"experiment {run_id}: {mode}, Redis {url} "
            f"({redis_version}), {cpus} CPUs, strategies {','.join(opts.strategies)}, workloads "
            f"{','.join(opts.workloads)}, {opts.repeats} repeat(s)"
        )
        try:
            for repeat in range(1, opts.repeats + 1):
                if opts.local and opts.startup:
                    seen: set[tuple[str, int]] = set()
                    for s in opts.strategies:
                        for conc in sorted({c for w in opts.workloads for c in opts.concurrency[f"{s}:{w}"]}):
                            n = resolve_capacity(s, conc, cpus)
                            if (s, n) in seen:
                                continue
                            seen.add((s, n))
                            st = run_startup_cell(ctx, s, conc, repeat)
                            startup.append(st)
                            log(
                                f"[r{repeat}] start-up {s}x{n}: first job after {st['first_job_started_s']:.3f} s, "
                                f"all slots busy after {st['all_slots_busy_s']:.3f} s, idle PSS "
                                f"{st['idle_pss_mib']:.1f} MiB"
                            )
                for w in opts.workloads:
                    for s in opts.strategies:
                        sizes = opts.concurrency[f"{s}:{w}"] if opts.local or lab else ["deployed"]
                        for conc, cpu_limit in itertools.product(sizes, opts.docker.cpus if lab else [None]):
                            if lab is not None:
                                from producer.containers import run_docker_cell

                                c = run_docker_cell(ctx, lab, s, conc, w, cpu_limit, repeat)
                            elif opts.local:
                                c = run_local_cell(ctx, s, conc, w, repeat)
                            else:
                                c = run_remote_cell(ctx, s, w, repeat)
                            cells.append(c)
                            log(cell_line(c))
                            if on_cell:
                                on_cell(c)
            if opts.local and opts.timeouts:
                for s in opts.strategies:
                    t = run_timeout_cell(ctx, s)
                    timeouts.append(t)
                    log(
                        f"timeout {s}: job {t['status']} after {t['failed_after_s']:.2f} s, next job started after "
                        f"{t['next_job_started_after_s']:.2f} s, CPU burned until {t['cpu_burned_until_s']:.2f} s"
                    )
            if opts.local and opts.startup:
                from producer.startup import run_fresh

                sizes_n = sorted({r["concurrency"] for r in startup if r["strategy"] != "inline"} | {cpus})
                for n in sizes_n:
                    wait_quiet(ctx)
                    for kind in ("thread", "forkserver", "spawn"):
                        pool_start.append(run_fresh(kind, n))
                        log(f"start {n} x {kind}: {pool_start[-1]['ready_s'] * 1000:.1f} ms until all run code")
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted: stopping the workers and writing what was measured")
    finally:
        if local_redis is not None:
            local_redis.stop()
        if lab is not None:
            failures = lab.close()
            for f in failures:
                log(f"warning: could not remove {f}")
            if not failures:
                log(f"removed every container and network of experiment {run_id}")
    import importlib.metadata

    redis_described = url
    if local_redis:
        redis_described = "private redis-server (started by the producer)"
    elif lab is not None and not opts.docker.network:
        redis_described = f"Redis container {opts.docker.redis_image} (started by the producer)"
    meta = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "elapsed_s": time.monotonic() - started,
        "mode": "docker" if lab else "local" if opts.local else "running-workers",
        "host": platform.node(),
        "python": platform.python_version(),
        "rq": rq.__version__,
        "redis_server": redis_version,
        "redis_url": redis_described,
        "poolq": importlib.metadata.version("poolq"),
        "available_cpus": cpus,
        "cpu_count": os.cpu_count(),
        "strategies": opts.strategies,
        "workloads": opts.workloads,
        "specs": {w: specs[w].describe() for w in opts.workloads},
        "spec_kwargs": {w: specs[w].to_json() for w in opts.workloads},
        "counts": opts.counts,
        "concurrency": opts.concurrency,
        "repeats": opts.repeats,
        "sample_interval_s": opts.sample_interval,
        "argv": opts.argv,
        "interrupted": interrupted,
        "run_id": run_id,
    }
    if lab is not None:
        meta["docker"] = {
            **lab.facts,
            "image": opts.docker.image,
            "cpu_limits": opts.docker.cpus,
            "memory_limit_mib": opts.docker.memory / MIB,
            "network": lab.network_name,
            "redis_image": None if opts.docker.network else opts.docker.redis_image,
        }
    results: dict[str, Any] = {
        "meta": meta,
        "calibration": calibration,
        "summary": aggregate(cells),
        "cells": cells,
        "startup": startup,
        "pool_start": pool_start,
        "timeouts": timeouts,
    }
    write_results(opts.out, results, ctx.jobs_rows)
    results = json.loads((opts.out / "results.json").read_text())
    try:
        charts.write_all(opts.out, results)
    except Exception as e:  # a chart must never cost the measurements
        log(f"warning: charts could not be drawn: {type(e).__name__}: {e}")
    (opts.out / "report.md").write_text(report.render(results, opts.out))
    log(f"wrote {opts.out}/results.json, results.csv, jobs.csv, report.md and charts in {meta['elapsed_s']:.0f} s")
    return results

"""One cell of the benchmark: one burst worker run over a batch of jobs enqueued up front,
read back with stock RQ (``Job.fetch_many``), with the worker tree's memory, CPU and the Redis
commands it sent.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from bench.catalog import MIB, QUEUE, REPO, Runner, Workload
from bench.procs import (
    LIVE,
    RedisServer,
    children_cpu_seconds,
    log,
    machine_busy_seconds,
    others_cpu_pct,
    reap_orphans,
    self_cpu_seconds,
    spawn,
    tree_memory,
)
from producer.measure import fetch_jobs, status_of
from producer.processes import kill_group
from producer.stats import percentile


@dataclass
class Bench:
    server: RedisServer
    rq_bin: str
    out: Path
    timeout: float
    sample_interval: float
    overrides: dict[str, str]
    cpus: int
    subreaper: bool
    quiet_below: float | None = None
    quiet_wait: float = 60.0
    baseline_children: set[int] = field(default_factory=set)


def wait_for_quiet(bench: Bench) -> float:
    """With --quiet-below: wait (bounded) until other processes use less than that share of the CPUs."""
    if bench.quiet_below is None:
        return 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < bench.quiet_wait:
        if others_cpu_pct(bench.server.proc.pid) < bench.quiet_below:
            break
    return time.monotonic() - t0


def enqueue_jobs(client: redis.Redis[bytes], wl: Workload, count: int) -> list[str]:
    q = Queue(QUEUE, connection=client, serializer=JSONSerializer)
    ids: list[str] = []
    chunk = 1000
    for start in range(0, count, chunk):
        datas = [Queue.prepare_data(wl.func, kwargs=dict(wl.kwargs)) for _ in range(min(chunk, count - start))]
        with client.pipeline() as pipe:
            jobs = q.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
        ids.extend(j.id for j in jobs)
    queued = client.llen(f"rq:queue:{QUEUE}")
    if queued != count:
        raise RuntimeError(f"enqueued {count} jobs but the queue holds {queued}")
    return ids


def commandstats(client: redis.Redis[bytes]) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def read_jobs(client: redis.Redis[bytes], ids: list[str]) -> dict[str, Any]:
    """Everything the cell reports about its jobs, read back with stock RQ."""
    jobs = fetch_jobs(client, ids)
    statuses: dict[str, int] = {}
    starts, ends, latencies = [], [], []
    not_finished: list[Job] = []
    for job in jobs:
        if job is None:
            statuses["missing"] = statuses.get("missing", 0) + 1
            continue
        status = status_of(job)
        statuses[status] = statuses.get(status, 0) + 1
        if status != "finished":
            not_finished.append(job)
            continue
        if job.started_at is None or job.ended_at is None or job.enqueued_at is None:
            statuses["finished-without-timestamps"] = statuses.get("finished-without-timestamps", 0) + 1
            continue
        starts.append(job.started_at.timestamp())
        ends.append(job.ended_at.timestamp())
        latencies.append((job.ended_at - job.enqueued_at).total_seconds())
    finished = len(latencies)
    failures: list[str] = []
    for job in not_finished[:3]:
        reason = ""
        with contextlib.suppress(Exception):
            res = job.latest_result()
            lines = (getattr(res, "exc_string", None) or "").strip().splitlines() if res else []
            reason = lines[-1] if lines else ""
        failures.append(f"{job.id} {status_of(job)} {reason}"[:300])
    # Where the jobs ran, from their own results (a sample: one extra read per job).
    pids: set[int] = set()
    threads: set[tuple[int, int]] = set()
    job_cpu, job_elapsed = [], []
    finished_jobs = [j for j in jobs if j is not None and status_of(j) == "finished"]
    for job in finished_jobs[:: max(1, len(finished_jobs) // 50)][:50]:
        with contextlib.suppress(Exception):
            value = job.return_value()
            if isinstance(value, dict):
                if "pid" in value:
                    pids.add(int(value["pid"]))
                    if "thread" in value:
                        threads.add((int(value["pid"]), int(value["thread"])))
                if "cpu" in value:
                    job_cpu.append(float(value["cpu"]))
                if "elapsed" in value:
                    job_elapsed.append(float(value["elapsed"]))
    latencies.sort()
    makespan = (max(ends) - min(starts)) if finished else math.nan
    return {
        "statuses": statuses,
        "finished": finished,
        "failed": len(ids) - finished,
        "failure_examples": failures,
        "makespan_s": makespan,
        "jobs_per_s": finished / makespan if finished and makespan > 0 else math.nan,
        "latency_p50_s": percentile(latencies, 50, "nearest-rank"),
        "latency_p95_s": percentile(latencies, 95, "nearest-rank"),
        "latency_max_s": latencies[-1] if latencies else math.nan,
        "sample_distinct_pids": len(pids),
        "sample_distinct_threads": len(threads),
        "sample_job_cpu_ms_median": statistics.median(job_cpu) * 1000 if job_cpu else None,
        "sample_job_elapsed_ms_median": statistics.median(job_elapsed) * 1000 if job_elapsed else None,
    }


def cell_head(runner: Runner, wname: str, repeat: int, count: int, conc_arg: str, conc: int) -> dict[str, Any]:
    """The fields that name a cell, first in both a measured cell and an error cell."""
    return {
        "runner": runner.key,
        "label": runner.label,
        "workload": wname,
        "repeat": repeat,
        "count": count,
        "concurrency_arg": conc_arg,
        "concurrency": conc,
    }


def run_cell(bench: Bench, runner: Runner, wl: Workload | None, count: int, repeat: int) -> dict[str, Any]:
    """One worker run. ``wl=None``: an empty queue, to measure the worker's fixed start-up cost."""
    client = bench.server.client
    wname = wl.name if wl else "empty"
    conc_arg, conc = runner.concurrency(wname, bench.overrides)
    quiet_waited = wait_for_quiet(bench)
    client.flushall()
    ids = enqueue_jobs(client, wl, count) if wl and count else []
    load = os.getloadavg()
    info0 = client.info()
    stats0 = commandstats(client)  # last command before the worker starts: stats1 counts only this one of ours
    cmd = runner.command(bench.server.url, conc_arg, bench.rq_bin)
    logpath = bench.out / "logs" / f"r{repeat}-{wname}-{runner.key}.log"
    # Our own long-lived children (redis-server, multiprocessing's resource tracker) are not the worker's.
    bench.baseline_children = {p.pid for p in psutil.Process().children()}
    cpu0 = children_cpu_seconds()
    busy0, self0 = machine_busy_seconds(), self_cpu_seconds()
    peak_rss = peak_pss = peak_procs = samples = 0
    timed_out = False
    worker_ru_cpu = math.nan
    exit_code: int | None = None
    with open(logpath, "wb") as logf:
        logf.write((" ".join(cmd) + "\n").encode())
        logf.flush()
        t0 = time.monotonic()
        proc = spawn(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            root = psutil.Process(proc.pid)
            next_sample = t0
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    rss, pss, n = tree_memory(root)
                    peak_rss, peak_pss, peak_procs = max(peak_rss, rss), max(peak_pss, pss), max(peak_procs, n)
                    samples += 1
                    next_sample = now + bench.sample_interval
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if now - t0 > bench.timeout:
                    timed_out = True
                    kill_group(proc.pid)
                    pid, status, ru = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
            wall = time.monotonic() - t0
            busy1, self1 = machine_busy_seconds(), self_cpu_seconds()
            exit_code = os.waitstatus_to_exitcode(status)
            proc.returncode = exit_code
            worker_ru_cpu = ru.ru_utime + ru.ru_stime
        finally:
            if proc.returncode is None:  # interrupted: make sure it is gone
                kill_group(proc.pid)
                with contextlib.suppress(ChildProcessError):
                    os.wait4(proc.pid, 0)
                proc.returncode = -9
            leftovers = reap_orphans(bench.baseline_children, proc.pid) if proc.returncode is not None else []
            LIVE.pop(proc.pid, None)
    cpu = children_cpu_seconds() - cpu0
    busy, own = busy1 - busy0, self1 - self0
    stats1 = commandstats(client)
    info1 = client.info()
    delta = {k: v - stats0.get(k, 0) for k, v in stats1.items() if v - stats0.get(k, 0) > 0}
    if delta.get("info"):
        delta["info"] -= 1  # our own INFO commandstats snapshot before the run
        if not delta["info"]:
            del delta["info"]
    total_cmds = sum(delta.values())
    redis_cpu = (info1["used_cpu_user"] + info1["used_cpu_sys"]) - (info0["used_cpu_user"] + info0["used_cpu_sys"])
    # CPU the rest of the machine used while the worker ran: busy time of all CPUs minus the worker
    # tree, our redis-server and the bench itself, as a share of all CPUs over the run's wall time.
    others_pct = max(0.0, busy - cpu - redis_cpu - own) / (wall * (psutil.cpu_count() or 1)) * 100 if wall else 0.0
    result: dict[str, Any] = {
        **cell_head(runner, wname, repeat, count, conc_arg, conc),
        "command": cmd,
        "loadavg": list(load),
        "others_cpu_pct": others_pct,
        "quiet_waited_s": quiet_waited,
        "exit_code": exit_code,
        "timed_out": timed_out,
        "wall_s": wall,
        "peak_rss_mib": peak_rss / MIB,
        "peak_pss_mib": peak_pss / MIB,
        "peak_processes": peak_procs,
        "memory_samples": samples,
        "cpu_s": cpu,
        "cpu_s_worker_wait4": worker_ru_cpu,
        "cpu_s_per_1k_jobs": cpu / count * 1000 if count else None,
        "redis_cmds_total": total_cmds,
        "redis_cmds_per_job": total_cmds / count if count else None,
        "redis_cmds_top": dict(sorted(delta.items(), key=lambda kv: -kv[1])[:12]),
        "redis_connections": info1["total_connections_received"] - info0["total_connections_received"],
        "redis_cpu_s": redis_cpu,
        "leftover_processes": leftovers,
        "log": str(logpath),
    }
    if ids:
        result.update(read_jobs(client, ids))
        result["jobs_per_s_incl_startup"] = result["finished"] / wall if wall > 0 else math.nan
    problems = []
    if timed_out:
        problems.append("timeout")
    if exit_code not in (0, None) and not timed_out:
        problems.append(f"exit {exit_code}")
    if ids and result["failed"]:
        problems.append(f"{result['failed']}/{count} not finished")
    if leftovers:
        problems.append(f"{len(leftovers)} leftover processes")
    result["problems"] = problems
    return result


def error_cell(
    runner: Runner, wname: str, count: int, repeat: int, exc: BaseException, overrides: dict[str, str]
) -> dict[str, Any]:
    """A cell the harness could not measure (Redis error, spawn failure...): reported, not fatal."""
    conc_arg, conc = runner.concurrency(wname, overrides)
    log(f"[r{repeat}] {runner.label} {wname}: harness error {exc!r}")
    nan = math.nan
    return {
        **cell_head(runner, wname, repeat, count, conc_arg, conc),
        "loadavg": list(os.getloadavg()),
        "others_cpu_pct": math.nan,
        "jobs_per_s": nan,
        "latency_p50_s": nan,
        "latency_p95_s": nan,
        "peak_pss_mib": nan,
        "peak_rss_mib": nan,
        "cpu_s_per_1k_jobs": nan,
        "redis_cmds_per_job": nan,
        "problems": [f"harness error: {exc!r}"[:200]],
    }

"""poolq benchmark: strategies x workloads against RQ's own workers, on a private redis-server.

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
import contextlib
import ctypes
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
import rq
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

REPO = Path(__file__).resolve().parent.parent
QUEUE = "bench"
SERIALIZER_PATH = "rq.serializers.JSONSerializer"
MIB = 1024 * 1024

# --------------------------------------------------------------------------------------------
# What is measured
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    func: str
    kwargs: dict[str, Any]
    count: int  # default number of jobs per cell
    quick_count: int  # number of jobs per cell with --quick
    describe: str


CPU_MS = 20.0
IO_SECONDS = 0.05
MIXED_CPU_MS, MIXED_IO_SECONDS = 10.0, 0.02
ALLOC_MB, ALLOC_SECONDS = 16.0, 0.05

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("noop", "worker.jobs.noop", {}, 2000, 200, "noop(): queue overhead only"),
        # kwargs["iterations"] is filled in at start: CPU_MS of one core, calibrated once in the
        # bench process, so every worker and the plain loop run exactly the same work.
        Workload("cpu", "worker.jobs.cpu", {}, 300, 30, f"cpu(iterations=~{CPU_MS:g} ms of one core)"),
        Workload(
            "io",
            "worker.jobs.io",
            {"seconds": IO_SECONDS, "mode": "sleep"},
            500,
            64,
            f"io(seconds={IO_SECONDS:g}, mode='sleep')",
        ),
        Workload(
            "mixed",
            "worker.jobs.mixed",
            {"cpu_ms": MIXED_CPU_MS, "io_seconds": MIXED_IO_SECONDS},
            300,
            30,
            f"mixed(cpu_ms={MIXED_CPU_MS:g}, io_seconds={MIXED_IO_SECONDS:g})",
        ),
        Workload(
            "alloc",
            "worker.jobs.alloc",
            {"mb": ALLOC_MB, "seconds": ALLOC_SECONDS},
            40,
            8,
            f"alloc(mb={ALLOC_MB:g}, seconds={ALLOC_SECONDS:g})",
        ),
    )
}

# Concurrency passed to `python -m worker --concurrency`, per strategy and workload ("*": every
# other workload). "auto" lets the worker size itself from the CPUs it may use; the table shows
# the figure that resolves to (computed like the worker does: worker.cpus + worker.defaults).
# Override with --concurrency, e.g. `--concurrency thread=32,thread:io=128,process=4`.
DEFAULT_CONCURRENCY: dict[str, dict[str, str]] = {
    #  strategy     io     everything else
    "thread": {"io": "64", "*": "auto"},
    "process": {"*": "auto"},
    "inline": {"*": "1"},
}
STRATEGIES = tuple(DEFAULT_CONCURRENCY)


@dataclass(frozen=True)
class Baseline:
    key: str
    label: str
    concurrency: int
    args: tuple[str, ...]  # after the `rq` executable; --serializer/--url/queue are appended


BASELINES: dict[str, Baseline] = {
    b.key: b
    for b in (
        Baseline("rq-fork", "rq worker (fork per job)", 1, ("worker", "--burst")),
        Baseline("rq-simple", "rq SimpleWorker", 1, ("worker", "--burst", "-w", "rq.worker.SimpleWorker")),
        Baseline(
            "rq-pool",
            "rq worker-pool -n 2 (Simple)",
            2,
            ("worker-pool", "--burst", "-n", "2", "-w", "rq.worker.SimpleWorker"),
        ),
    )
}

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the Markdown report."""
    print(msg, file=sys.stderr, flush=True)


def available_cpus() -> int:
    try:
        from worker.cpus import detect_cpus

        return int(detect_cpus().available)
    except Exception:
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return os.cpu_count() or 1


def threads_per_cpu() -> int:
    try:
        from worker import defaults

        return int(defaults.THREADS_PER_CPU)
    except Exception:
        return 8


def resolve_concurrency(strategy: str, value: str) -> int:
    if value != "auto":
        return int(value)
    cpus = available_cpus()
    return cpus * threads_per_cpu() if strategy == "thread" else cpus


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return f"{head}{'+dirty' if dirty else ''}" if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Linux PR_SET_CHILD_SUBREAPER).

    A worker's grandchildren (forkserver, pool children) that outlive their parent are then
    re-parented here instead of to init, so we can reap them and their CPU time lands in our
    RUSAGE_CHILDREN: the tree's CPU is complete even when the worker does not wait for them.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER = 36
    except (OSError, AttributeError):
        return False


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (everything but idle and iowait)."""
    t = psutil.cpu_times()
    return float(sum(t)) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def others_cpu_pct(redis_pid: int, window: float = 1.0) -> float:
    """Share of all CPUs used by processes other than the bench and its redis-server over `window` s."""
    try:
        rp = psutil.Process(redis_pid)
        r0 = sum(rp.cpu_times()[:2])
        b0, s0 = machine_busy_seconds(), self_cpu_seconds()
        time.sleep(window)
        r1 = sum(rp.cpu_times()[:2])
        b1, s1 = machine_busy_seconds(), self_cpu_seconds()
    except psutil.Error:
        return math.nan
    return max(0.0, (b1 - b0) - (r1 - r0) - (s1 - s0)) / (window * (psutil.cpu_count() or 1)) * 100


def wait_for_quiet(bench: Bench) -> float:
    """With --quiet-below: wait (bounded) until other processes use less than that share of the CPUs."""
    if bench.quiet_below is None:
        return 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < bench.quiet_wait:
        if others_cpu_pct(bench.server.proc.pid) < bench.quiet_below:
            break
    return time.monotonic() - t0


def children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------------------------
# Processes: everything we start is tracked and killed (by process group) on exit
# --------------------------------------------------------------------------------------------

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def spawn(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(cmd), start_new_session=True, **kwargs)
    _LIVE[proc.pid] = proc
    return proc


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def cleanup_all() -> None:
    for pid, proc in list(_LIVE.items()):
        if proc.returncode is None:
            kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    for pid, proc in list(_LIVE.items()):
        if proc.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        kill_group(pid, signal.SIGKILL)  # stragglers of the group, even if the leader exited
        if proc.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                proc.wait(timeout=2.0)
        _LIVE.pop(pid, None)


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class RedisServer:
    """A private redis-server on a free loopback port, no persistence."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.logfile = workdir / "redis.log"
        self.proc = spawn(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(workdir),
                "--logfile",
                str(self.logfile),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15.0
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.logfile}") from None
                time.sleep(0.05)
        self.version = str(self.client.info("server").get("redis_version", "?"))

    def stop(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.shutdown(nosave=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        kill_group(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        _LIVE.pop(self.proc.pid, None)


# --------------------------------------------------------------------------------------------
# Runners: poolq strategies and RQ's own workers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runner:
    key: str  # "thread" / "process" / "inline" / "rq-fork" / "rq-simple" / "rq-pool"
    label: str
    baseline: Baseline | None = None

    def concurrency(self, workload: str, overrides: dict[str, str]) -> tuple[str, int]:
        """(value passed to the worker, resolved number of concurrent jobs)."""
        if self.baseline is not None:
            return str(self.baseline.concurrency), self.baseline.concurrency
        value = (
            overrides.get(f"{self.key}:{workload}")
            or overrides.get(self.key)
            or DEFAULT_CONCURRENCY[self.key].get(workload)
            or DEFAULT_CONCURRENCY[self.key]["*"]
        )
        return value, resolve_concurrency(self.key, value)

    def command(self, url: str, concurrency: str, rq_bin: str) -> list[str]:
        if self.baseline is not None:
            return [rq_bin, *self.baseline.args, "--serializer", SERIALIZER_PATH, "--url", url, QUEUE]
        return [
            sys.executable,
            "-m",
            "worker",
            "--strategy",
            self.key,
            "--concurrency",
            concurrency,
            "--queues",
            QUEUE,
            "--burst",
            "--redis-url",
            url,
            "--metrics-port",
            "0",
        ]


def make_runners(strategies: list[str], baselines: list[str]) -> list[Runner]:
    runners = [Runner(s, f"poolq {s}") for s in strategies]
    runners += [Runner(b, BASELINES[b].label, BASELINES[b]) for b in baselines]
    return runners


# --------------------------------------------------------------------------------------------
# The limits "% of limit" is relative to, measured in the same run
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# One cell: one worker run over one batch of jobs
# --------------------------------------------------------------------------------------------


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


def tree_memory(root: psutil.Process) -> tuple[int, int, int]:
    """(RSS sum, PSS sum, number of processes) over root and all its descendants."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0, 0
    rss = pss = n = 0
    for p in procs:
        try:
            mem = p.memory_full_info()
        except psutil.Error:
            continue
        rss += mem.rss
        pss += getattr(mem, "pss", 0)
        n += 1
    return rss, pss, n


def reap_orphans(bench: Bench, worker_pid: int, grace: float = 2.0) -> list[str]:
    """After the worker exited: wait for descendants re-parented to us, kill stragglers, reap all."""
    me = psutil.Process()
    leftovers: list[str] = []
    deadline = time.monotonic() + grace
    killed = False
    for _ in range(200):  # bounded: at most ~grace + 10 s
        try:
            kids = [k for k in me.children() if k.pid not in bench.baseline_children]
        except psutil.Error:
            kids = []
        alive = []
        for k in kids:
            try:
                pid, _status = os.waitpid(k.pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if pid == 0:
                alive.append(k)
        if not alive:
            break
        if time.monotonic() > deadline and not killed:
            for k in alive:
                with contextlib.suppress(psutil.Error):
                    leftovers.append(f"{k.pid}:{' '.join(k.cmdline())[:80]}")
                with contextlib.suppress(psutil.Error):
                    k.kill()
            kill_group(worker_pid)
            killed = True
        time.sleep(0.05)
    kill_group(worker_pid)  # anything still in the worker's process group
    return leftovers


def enqueue_jobs(client: redis.Redis, wl: Workload, count: int) -> list[str]:
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


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def status_of(job: Job) -> str:
    status = job.get_status(refresh=False)
    return str(getattr(status, "value", status))


def read_jobs(client: redis.Redis, ids: list[str]) -> dict[str, Any]:
    """Everything the cell reports about its jobs, read back with stock RQ."""
    jobs: list[Job | None] = []
    for start in range(0, len(ids), 1000):
        jobs.extend(Job.fetch_many(ids[start : start + 1000], connection=client, serializer=JSONSerializer))
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
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_max_s": latencies[-1] if latencies else math.nan,
        "sample_distinct_pids": len(pids),
        "sample_distinct_threads": len(threads),
        "sample_job_cpu_ms_median": statistics.median(job_cpu) * 1000 if job_cpu else None,
        "sample_job_elapsed_ms_median": statistics.median(job_elapsed) * 1000 if job_elapsed else None,
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
            leftovers = reap_orphans(bench, proc.pid) if proc.returncode is not None else []
            _LIVE.pop(proc.pid, None)
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
        "runner": runner.key,
        "label": runner.label,
        "workload": wname,
        "repeat": repeat,
        "count": count,
        "concurrency_arg": conc_arg,
        "concurrency": conc,
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
        "runner": runner.key,
        "label": runner.label,
        "workload": wname,
        "repeat": repeat,
        "count": count,
        "concurrency_arg": conc_arg,
        "concurrency": conc,
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


# --------------------------------------------------------------------------------------------
# Aggregation and the Markdown report
# --------------------------------------------------------------------------------------------


def med(values: Sequence[float | None]) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else math.nan


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:,.{digits}f}"


def fmt_rate(x: float) -> str:
    if math.isnan(x):
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


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


def aggregate(cells: list[dict[str, Any]], limits: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    best = best_limits(limits)
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cells:
        if c["workload"] != "empty":
            rows.setdefault((c["runner"], c["workload"]), []).append(c)
    out = []
    for (runner, workload), runs in rows.items():
        rates = [r["jobs_per_s"] for r in runs if not math.isnan(r.get("jobs_per_s", math.nan))]
        pct = []
        for r in runs:
            limit = best.get(workload)
            if limit is None:
                limit = nominal_limit(workload, r["concurrency"], available_cpus())
            if limit and not math.isnan(r.get("jobs_per_s", math.nan)):
                pct.append(100.0 * r["jobs_per_s"] / limit)
        problems = [f"r{r['repeat']}: {', '.join(r['problems'])}" for r in runs if r["problems"]]
        out.append(
            {
                "runner": runner,
                "label": runs[0]["label"],
                "workload": workload,
                "count": runs[0]["count"],
                "concurrency_arg": runs[0]["concurrency_arg"],
                "concurrency": runs[0]["concurrency"],
                "runs": len(runs),
                "runs_ok": sum(1 for r in runs if not r["problems"]),
                "jobs_per_s_median": med(rates),
                "jobs_per_s_min": min(rates) if rates else math.nan,
                "jobs_per_s_max": max(rates) if rates else math.nan,
                "latency_p50_s": med([r.get("latency_p50_s") for r in runs]),
                "latency_p95_s": med([r.get("latency_p95_s") for r in runs]),
                "peak_pss_mib": med([r["peak_pss_mib"] for r in runs]),
                "peak_rss_mib": med([r["peak_rss_mib"] for r in runs]),
                "cpu_s_per_1k_jobs": med([r["cpu_s_per_1k_jobs"] for r in runs]),
                "redis_cmds_per_job": med([r["redis_cmds_per_job"] for r in runs]),
                "pct_of_limit": med(pct),
                "loadavg_min": min(r["loadavg"][0] for r in runs),
                "loadavg_max": max(r["loadavg"][0] for r in runs),
                "others_cpu_pct_max": max((r["others_cpu_pct"] for r in runs), default=math.nan),
                "problems": problems,
            }
        )
    return out


def table(rows: list[dict[str, Any]], order: list[str], workloads: list[str]) -> str:
    head = (
        "| worker | workload | jobs | concurrency | jobs/s median (min-max) | p50 latency s | p95 latency s "
        "| peak PSS MiB | peak RSS MiB | CPU s / 1k jobs | Redis cmds / job | % of limit | load avg at start "
        "| others' CPU % (max) | runs ok |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    key = {r: i for i, r in enumerate(order)}
    wkey = {w: i for i, w in enumerate(workloads)}
    for row in sorted(rows, key=lambda r: (wkey.get(r["workload"], 99), key.get(r["runner"], 99))):
        conc = row["concurrency_arg"]
        conc = f"{conc} → {row['concurrency']}" if conc == "auto" else str(row["concurrency"])
        rate = (
            f"{fmt_rate(row['jobs_per_s_median'])} ({fmt_rate(row['jobs_per_s_min'])}-"
            f"{fmt_rate(row['jobs_per_s_max'])})"
        )
        ok = f"{row['runs_ok']}/{row['runs']}"
        if row["problems"]:
            rate = f"⚠ {rate}"
            ok = f"⚠ {ok}"
        load = f"{row['loadavg_min']:.2f}-{row['loadavg_max']:.2f}"
        others = fmt(row["others_cpu_pct_max"], 0)
        lines.append(
            f"| {row['label']} | {row['workload']} | {row['count']} | {conc} | {rate} "
            f"| {fmt(row['latency_p50_s'], 3)} | {fmt(row['latency_p95_s'], 3)} "
            f"| {fmt(row['peak_pss_mib'])} | {fmt(row['peak_rss_mib'])} | {fmt(row['cpu_s_per_1k_jobs'], 2)} "
            f"| {fmt(row['redis_cmds_per_job'], 1)} | {fmt(row['pct_of_limit'], 0)}% | {load} | {others} | {ok} |"
        )
    return "\n".join(lines)


def startup_table(cells: list[dict[str, Any]], order: list[str]) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        if c["workload"] == "empty":
            by.setdefault(c["runner"], []).append(c)
    if not by:
        return ""
    lines = [
        "| worker | wall s (start → exit) | CPU s | peak PSS MiB | peak RSS MiB | processes | Redis cmds |",
        "|---|---|---|---|---|---|---|",
    ]
    for runner in sorted(by, key=lambda r: order.index(r) if r in order else 99):
        runs = by[runner]
        lines.append(
            f"| {runs[0]['label']} | {fmt(med([r['wall_s'] for r in runs]), 2)} "
            f"| {fmt(med([r['cpu_s'] for r in runs]), 2)} | {fmt(med([r['peak_pss_mib'] for r in runs]))} "
            f"| {fmt(med([r['peak_rss_mib'] for r in runs]))} | {max(r['peak_processes'] for r in runs)} "
            f"| {fmt(med([r['redis_cmds_total'] for r in runs]), 0)} |"
        )
    return "\n".join(lines)


def limits_table(limits: dict[int, dict[str, float]]) -> str:
    names = sorted({k for v in limits.values() for k in v})
    if not names:
        return ""
    lines = ["| repeat | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for rep in sorted(limits):
        lines.append(f"| {rep} | " + " | ".join(fmt_rate(limits[rep].get(n, math.nan)) for n in names) + " |")
    best = best_limits(limits)
    lines.append("| **used (best)** | " + " | ".join(f"**{fmt_rate(best.get(n, math.nan))}**" for n in names) + " |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> str:
    """Issue 7's targets, checked against this run's medians (only where the rows exist)."""
    get = {(r["runner"], r["workload"]): r for r in rows}
    out = []

    def line(name: str, value: str, ok: bool | None) -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "**NOT met**")
        out.append(f"| {name} | {value} | {verdict} |")

    t, pool = get.get(("thread", "noop")), get.get(("rq-pool", "noop"))
    if t:
        v = t["jobs_per_s_median"]
        line("noop, thread: ≥ 5,000 jobs/s", fmt_rate(v), v >= 5000)
        if pool:
            ratio = v / pool["jobs_per_s_median"]
            line("noop, thread: ≥ 8x rq worker-pool -n 2", f"{ratio:.1f}x", ratio >= 8)
    p = get.get(("process", "cpu"))
    if p:
        line(
            f"cpu, process ({p['concurrency']} children): ≥ 95% of plain loop",
            f"{fmt(p['pct_of_limit'], 0)}%",
            p["pct_of_limit"] >= 95,
        )
    t = get.get(("thread", "io"))
    if t:
        line(
            f"io, thread ({t['concurrency']} threads): ≥ 90% of concurrency / latency",
            f"{fmt(t['pct_of_limit'], 0)}%",
            t["pct_of_limit"] >= 90 if t["concurrency"] == 64 else None,
        )
    for strategy, cap in (("thread", 35.0), ("process", 50.0)):
        mems = [(r["peak_pss_mib"], w) for (s, w), r in get.items() if s == strategy and w in ("noop", "cpu", "io")]
        if mems:
            worst, w = max(mems)
            line(
                f"memory, {strategy}: ≤ {cap:g} MiB PSS (max over noop/cpu/io)", f"{worst:.1f} MiB ({w})", worst <= cap
            )
    simple = get.get(("rq-simple", "noop"))
    if simple:
        for s in STRATEGIES:
            r = get.get((s, "noop"))
            if r:
                line(
                    f"Redis cmds/job, {s} < rq SimpleWorker (noop)",
                    f"{r['redis_cmds_per_job']:.1f} vs {simple['redis_cmds_per_job']:.1f}",
                    r["redis_cmds_per_job"] < simple["redis_cmds_per_job"],
                )
    if not out:
        return ""
    return "\n".join(["| target (issue 7) | measured | verdict |", "|---|---|---|", *out])


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

    signal.signal(signal.SIGINT, _on_signal)  # also when started in the background with SIGINT ignored
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    subreaper = become_subreaper()
    tmp = Path(tempfile.mkdtemp(prefix="poolq-bench-redis-"))
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
        server = RedisServer(args.redis_server, tmp)
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
        shutil.rmtree(tmp, ignore_errors=True)

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


def render(
    meta: dict[str, Any],
    rows: list[dict[str, Any]],
    cells: list[dict[str, Any]],
    limits: dict[int, dict[str, float]],
    order: list[str],
    workloads: list[str],
    counts: dict[str, int],
    wls: dict[str, Workload],
) -> str:
    parts = [
        f"# poolq benchmark — {meta['started'][:19]}Z",
        "",
        f"{meta['cpus_available']} CPUs available · Python {meta['python']} · rq {meta['rq']} · "
        f"redis-server {meta.get('redis_server', '?')} · poolq {meta['git']} · {meta['repeats']} repeat(s), "
        f"median (min-max) · {meta.get('elapsed_s', 0):.0f} s",
        "",
        *(["**Interrupted: partial results.**", ""] if meta.get("interrupted") else []),
        "Jobs: " + "; ".join(f"{w} x {counts[w]} = `{wls[w].describe}`" for w in workloads) + ".",
        "",
        table(rows, order, workloads),
        "",
        "Latency is end-to-end (ended_at - enqueued_at) with every job enqueued before the worker starts, "
        "so it includes the time spent waiting in the queue. ⚠ marks a cell where a run failed jobs, timed "
        "out, exited non-zero or left processes behind (see below and results.json).",
    ]
    problems = [f"- {r['label']} / {r['workload']}: {'; '.join(r['problems'])}" for r in rows if r["problems"]]
    examples = [
        f"  - {c['label']} / {c['workload']} r{c['repeat']}: {e}"
        for c in cells
        for e in c.get("failure_examples", [])[:1]
    ]
    if problems:
        parts += ["", "**Problems**", "", *problems, *examples[:10]]
    lt = limits_table(limits)
    if lt:
        parts += [
            "",
            "Limits measured in this run (noop: LPUSH+RPOP pairs/s of one client; cpu: jobs/s of a "
            f"plain {meta['cpus_available']}-process loop, no queue); % of limit uses the best of the "
            "repeats. io/alloc/mixed limits are nominal: concurrency / job duration (mixed: also capped "
            "by CPUs x 1000 / cpu_ms).",
            "",
            lt,
        ]
    st = startup_table(cells, order)
    if st:
        parts += [
            "",
            "Fixed cost of one worker run on an empty queue (start, register, find nothing, exit; "
            "median of the repeats); included in every cell's CPU and wall time, not in jobs/s:",
            "",
            st,
        ]
    tg = targets(rows)
    if tg:
        parts += ["", tg]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        cleanup_all()

"""What a cell measures, and from where.

- Job times come from RQ's own job hashes (``enqueued_at``, ``started_at``, ``ended_at``, read
  back with ``Job.fetch_many``): queue wait = started - enqueued, run = ended - started,
  end-to-end = ended - enqueued; throughput = finished jobs / makespan, the makespan running
  from the first job enqueued to the last job ended.
- Memory and CPU of a local worker come from its whole process tree (the worker, the
  forkserver, pool children), sampled with psutil every ~100 ms (:class:`TreeSampler`): peak
  PSS (shared pages counted once) and RSS summed over the tree; CPU = user + system of every
  process, reaped children included.
- Memory and CPU of running workers (compose) come from their Prometheus metrics
  (:class:`MetricsProbe`): ``poolq_worker_tree_memory_bytes{kind="pss"|"rss"}``,
  ``poolq_worker_tree_cpu_seconds_total``, ``poolq_pool_size``, ``poolq_available_cpus``.

Percentiles use linear interpolation between order statistics (numpy's default).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

MIB = 1024 * 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation; NaN for no values."""
    if not len(values):
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass(frozen=True)
class JobTimes:
    id: str
    status: str
    enqueued_at: float | None
    started_at: float | None
    ended_at: float | None

    @property
    def wait(self) -> float | None:
        if self.enqueued_at is None or self.started_at is None:
            return None
        return self.started_at - self.enqueued_at

    @property
    def run(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @property
    def total(self) -> float | None:
        if self.enqueued_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.enqueued_at


def _ts(value: Any) -> float | None:
    return None if value is None else float(value.timestamp())


def _status(job: Job) -> str:
    status = job.get_status(refresh=False)
    return str(getattr(status, "value", status))


def fetch_jobs(conn: redis.Redis[bytes], ids: Sequence[str], chunk: int = 1000) -> list[Job | None]:
    jobs: list[Job | None] = []
    for start in range(0, len(ids), chunk):
        jobs.extend(Job.fetch_many(list(ids[start : start + chunk]), connection=conn, serializer=JSONSerializer))
    return jobs


def job_times(conn: redis.Redis[bytes], ids: Sequence[str]) -> list[JobTimes]:
    """RQ's timestamps of every job (status "missing" for a job hash that is gone)."""
    out = []
    for job_id, job in zip(ids, fetch_jobs(conn, ids), strict=True):
        if job is None:
            out.append(JobTimes(job_id, "missing", None, None, None))
            continue
        out.append(JobTimes(job_id, _status(job), _ts(job.enqueued_at), _ts(job.started_at), _ts(job.ended_at)))
    return out


def failure_reasons(conn: redis.Redis[bytes], ids: Iterable[str], limit: int = 3) -> list[str]:
    """The last traceback line of a few failed jobs."""
    reasons: list[str] = []
    for job_id in ids:
        if len(reasons) >= limit:
            break
        with contextlib.suppress(Exception):
            job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
            res = job.latest_result()
            lines = (getattr(res, "exc_string", None) or "").strip().splitlines() if res else []
            reasons.append(f"{job_id}: {lines[-1] if lines else _status(job)}"[:300])
    return reasons


def sample_results(conn: redis.Redis[bytes], ids: Sequence[str], n: int = 50) -> list[dict[str, Any]]:
    """Return values of up to ``n`` jobs spread over the run (one read each)."""
    picked = list(ids[:: max(1, len(ids) // n)])[:n]
    out = []
    for job in fetch_jobs(conn, picked):
        if job is None:
            continue
        with contextlib.suppress(Exception):
            value = job.return_value()
            if isinstance(value, dict):
                out.append(value)
    return out


def summarize(times: Sequence[JobTimes]) -> dict[str, Any]:
    """Throughput and latency percentiles of a cell, from RQ's timestamps."""
    finished = [t for t in times if t.status == "finished" and t.ended_at is not None and t.started_at is not None]
    statuses: dict[str, int] = {}
    for t in times:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    out: dict[str, Any] = {"jobs": len(times), "finished": len(finished), "statuses": statuses}
    out["failed"] = len(times) - len(finished)
    if not finished:
        out.update(makespan_s=math.nan, throughput_jobs_s=math.nan)
        return out
    first = min(t.enqueued_at for t in finished if t.enqueued_at is not None)
    last = max(t.ended_at for t in finished if t.ended_at is not None)
    makespan = last - first
    out["first_enqueued_at"] = first
    out["last_ended_at"] = last
    out["first_started_at"] = min(t.started_at for t in finished if t.started_at is not None)
    out["makespan_s"] = makespan
    out["throughput_jobs_s"] = len(finished) / makespan if makespan > 0 else math.nan
    series = {
        "wait": [t.wait for t in finished if t.wait is not None],
        "run": [t.run for t in finished if t.run is not None],
        "e2e": [t.total for t in finished if t.total is not None],
    }
    for name, vals in series.items():
        for q in (50, 95, 99):
            out[f"{name}_p{q}_s"] = percentile(vals, q)
        out[f"{name}_mean_s"] = float(np.mean(vals)) if vals else math.nan
        out[f"{name}_max_s"] = max(vals) if vals else math.nan
    runs = series["run"]
    mean = out["run_mean_s"]
    out["run_cv2"] = float(np.var(runs) / mean**2) if runs and mean > 0 else math.nan
    return out


# ---------------------------------------------------------------------------------------------
# the process tree of a local worker


@dataclass(frozen=True)
class TreeReading:
    t: float  # time.time()
    rss: int
    pss: int
    uss: int
    cpu: float  # seconds, user + system of the tree, reaped children included (monotonic)
    processes: int


class TreeSampler:
    """Samples a process tree (root and every descendant) on a thread, ~every ``interval`` s.

    CPU of the tree = sum over live processes of own + reaped children's user and system time:
    a pool child that exits and is reaped by the forkserver is still counted. The total is held
    monotonic (a child reaped between two reads would otherwise vanish for one sample).
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.readings: list[TreeReading] = []
        self._cpu = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_now(self) -> TreeReading:
        with self._lock:
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            rss = pss = uss = n = 0
            cpu = 0.0
            for p in procs:
                try:
                    with p.oneshot():
                        times = p.cpu_times()
                        mem = p.memory_full_info()
                except psutil.Error:
                    continue
                n += 1
                cpu += times.user + times.system + times.children_user + times.children_system
                rss += mem.rss
                pss += getattr(mem, "pss", mem.rss)
                uss += getattr(mem, "uss", mem.rss)
            self._cpu = max(self._cpu, cpu)
            reading = TreeReading(time.time(), rss, pss, uss, self._cpu, n)
            self.readings.append(reading)
            return reading

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.sample_now()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="poolq-tree-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def between(self, t0: float, t1: float) -> list[TreeReading]:
        with self._lock:
            return [r for r in self.readings if t0 <= r.t <= t1]


@dataclass(frozen=True)
class HostCpu:
    """System-wide busy CPU seconds, and those of the producer and of a local redis-server."""

    t: float
    busy: float
    producer: float
    redis: float

    @staticmethod
    def read(redis_proc: psutil.Process | None = None) -> HostCpu:
        total = psutil.cpu_times()
        busy = sum(total) - total.idle - getattr(total, "iowait", 0.0)
        busy -= getattr(total, "guest", 0.0) + getattr(total, "guest_nice", 0.0)  # already in user
        me = psutil.Process().cpu_times()
        rd = 0.0
        if redis_proc is not None:
            with contextlib.suppress(psutil.Error):
                t = redis_proc.cpu_times()
                rd = t.user + t.system
        return HostCpu(time.time(), busy, me.user + me.system, rd)


def other_load(before: HostCpu, after: HostCpu, tree_cpu: float) -> dict[str, float]:
    """Cores used during a cell by the producer, Redis, and everything else on the machine."""
    wall = after.t - before.t
    if wall <= 0:
        return {}
    producer = after.producer - before.producer
    rds = after.redis - before.redis
    other = (after.busy - before.busy) - tree_cpu - producer - rds
    return {
        "producer_cores": producer / wall,
        "redis_cores": rds / wall,
        "other_cores": max(0.0, other / wall),
    }


def local_redis_process(conn: redis.Redis[bytes]) -> psutil.Process | None:
    """The redis-server process behind ``conn`` when it runs on this machine, else None."""
    try:
        pid = int(conn.info("server").get("process_id", 0))
        host = conn.connection_pool.connection_kwargs.get("host", "")
        if pid and host in ("127.0.0.1", "localhost", "::1"):
            proc = psutil.Process(pid)
            if "redis" in proc.name():
                return proc
    except (redis.exceptions.RedisError, psutil.Error, ValueError):
        pass
    return None


def peak(readings: Sequence[TreeReading], attr: str) -> float:
    vals = [float(getattr(r, attr)) for r in readings if r.processes]
    return max(vals) if vals else math.nan


# ---------------------------------------------------------------------------------------------
# Prometheus metrics of running workers


def scrape(url: str, timeout: float = 5.0) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a /metrics page as (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode("utf-8", "replace")
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


def metric_sum(samples: Iterable[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    """Sum of the samples called ``name`` whose labels include ``labels``; None when absent."""
    total, found = 0.0, False
    for n, lab, value in samples:
        if n == name and all(lab.get(k) == v for k, v in labels.items()):
            total += value
            found = True
    return total if found else None


@dataclass(frozen=True)
class MetricsReading:
    t: float
    pss: float | None
    rss: float | None
    cpu: float | None
    pool_size: float | None
    available_cpus: float | None


def read_metrics(urls: Sequence[str]) -> MetricsReading:
    """One reading summed over ``urls`` (the replicas of one strategy)."""
    fields: dict[str, list[float]] = {k: [] for k in ("pss", "rss", "cpu", "pool", "cpus")}
    for url in urls:
        samples = scrape(url)
        for key, value in (
            ("pss", metric_sum(samples, "poolq_worker_tree_memory_bytes", kind="pss")),
            ("rss", metric_sum(samples, "poolq_worker_tree_memory_bytes", kind="rss")),
            ("cpu", metric_sum(samples, "poolq_worker_tree_cpu_seconds_total")),
            ("pool", metric_sum(samples, "poolq_pool_size")),
            ("cpus", metric_sum(samples, "poolq_available_cpus")),
        ):
            if value is not None:
                fields[key].append(value)

    def total(key: str) -> float | None:
        return sum(fields[key]) if len(fields[key]) == len(urls) and urls else None

    cpus = max(fields["cpus"]) if fields["cpus"] else None  # per replica, not a sum
    return MetricsReading(time.time(), total("pss"), total("rss"), total("cpu"), total("pool"), cpus)


@dataclass
class MetricsProbe:
    """Scrapes worker metrics on a thread while a cell runs (peak memory, CPU delta)."""

    urls: list[str]
    interval: float = 0.5
    readings: list[MetricsReading] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample_now(self) -> MetricsReading | None:
        try:
            r = read_metrics(self.urls)
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            return None
        self.readings.append(r)
        return r

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_now()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="poolq-metrics-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

"""A cell's jobs as RQ recorded them: their timestamps, throughput and latency, failures.

Job times come from RQ's own job hashes (``enqueued_at``, ``started_at``, ``ended_at``, read
back with ``Job.fetch_many``): queue wait = started - enqueued, run = ended - started,
end-to-end = ended - enqueued; throughput = finished jobs / makespan, the makespan running
from the first job enqueued to the last job ended. Percentiles use linear interpolation
between order statistics (numpy's default, :func:`producer.stats.percentile`).

The worker's memory and CPU come from elsewhere: its process tree (:mod:`producer.sampling`)
or its Prometheus metrics (:mod:`producer.scrape`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from producer.stats import percentile

MIB = 1024 * 1024
TERMINAL = {"finished", "failed", "stopped", "canceled", "missing"}


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


def status_of(job: Job) -> str:
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
        out.append(JobTimes(job_id, status_of(job), _ts(job.enqueued_at), _ts(job.started_at), _ts(job.ended_at)))
    return out


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
            reasons.append(f"{job_id}: {lines[-1] if lines else status_of(job)}"[:300])
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


@dataclass
class JobStats:
    """Throughput and latency of a cell's jobs, from RQ's timestamps (NaN where nothing finished)."""

    jobs: int
    finished: int
    failed: int
    statuses: dict[str, int]
    makespan_s: float = math.nan
    throughput_jobs_s: float = math.nan
    first_enqueued_at: float | None = None
    first_started_at: float | None = None
    last_ended_at: float | None = None
    wait_p50_s: float = math.nan
    wait_p95_s: float = math.nan
    wait_p99_s: float = math.nan
    wait_mean_s: float = math.nan
    wait_max_s: float = math.nan
    run_p50_s: float = math.nan
    run_p95_s: float = math.nan
    run_p99_s: float = math.nan
    run_mean_s: float = math.nan
    run_max_s: float = math.nan
    run_cv2: float = math.nan
    e2e_p50_s: float = math.nan
    e2e_p95_s: float = math.nan
    e2e_p99_s: float = math.nan
    e2e_mean_s: float = math.nan
    e2e_max_s: float = math.nan


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def summarize(times: Sequence[JobTimes]) -> JobStats:
    """Throughput and latency percentiles of a cell, from RQ's timestamps."""
    finished = [t for t in times if t.status == "finished" and t.ended_at is not None and t.started_at is not None]
    statuses: dict[str, int] = {}
    for t in times:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    stats = JobStats(jobs=len(times), finished=len(finished), failed=len(times) - len(finished), statuses=statuses)
    if not finished:
        return stats
    first = min(t.enqueued_at for t in finished if t.enqueued_at is not None)
    last = max(t.ended_at for t in finished if t.ended_at is not None)
    makespan = last - first
    wait = [t.wait for t in finished if t.wait is not None]
    run = [t.run for t in finished if t.run is not None]
    e2e = [t.total for t in finished if t.total is not None]
    run_mean = _mean(run)
    return dataclasses.replace(
        stats,
        first_enqueued_at=first,
        last_ended_at=last,
        first_started_at=min(t.started_at for t in finished if t.started_at is not None),
        makespan_s=makespan,
        throughput_jobs_s=len(finished) / makespan if makespan > 0 else math.nan,
        wait_p50_s=percentile(wait, 50), wait_p95_s=percentile(wait, 95), wait_p99_s=percentile(wait, 99),
        wait_mean_s=_mean(wait), wait_max_s=max(wait) if wait else math.nan,
        run_p50_s=percentile(run, 50), run_p95_s=percentile(run, 95), run_p99_s=percentile(run, 99),
        run_mean_s=run_mean, run_max_s=max(run) if run else math.nan,
        e2e_p50_s=percentile(e2e, 50), e2e_p95_s=percentile(e2e, 95), e2e_p99_s=percentile(e2e, 99),
        e2e_mean_s=_mean(e2e), e2e_max_s=max(e2e) if e2e else math.nan,
        run_cv2=float(np.var(run) / run_mean**2) if run and run_mean > 0 else math.nan,
    )  # fmt: skip

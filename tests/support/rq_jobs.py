"""Jobs as stock RQ sees them: JSON queues, enqueueing, fetching, outcomes, execution counts."""

from __future__ import annotations

import contextlib
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from support.base import wait_for


def json_queue(conn: redis.Redis, name: str = "default") -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def enqueue_many(conn: redis.Redis, func: str, n: int, queue: str = "default", **kwargs: Any) -> list[Job]:
    """``n`` jobs of ``func`` with the same keyword arguments."""
    q = json_queue(conn, queue)
    return [q.enqueue(func, **kwargs) for _ in range(n)]


def fetch(conn: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer)


def finished_records(conn: redis.Redis, jobs: Iterable[Job], context: str = "") -> list[dict[str, Any]]:
    """The return values of ``jobs``, each of which must have finished."""
    records = []
    for job in jobs:
        j = fetch(conn, job.id)
        status = j.get_status()
        detail = ""
        if status != "finished":
            res = j.latest_result()
            detail = res.exc_string if res is not None and res.exc_string else ""
        assert status == "finished", f"job {j.id} ({j.func_name}) is {status}: {detail}\n{context}"
        value = j.return_value()
        assert isinstance(value, dict), f"job {j.id} returned {value!r}"
        records.append(value)
    return records


def overlap(records: Iterable[Mapping[str, Any]]) -> int:
    """The largest number of jobs that ran at the same time, from their own started/ended
    timestamps. A job that ended at the instant another started does not overlap it."""
    events: list[tuple[float, int]] = []
    for r in records:
        started, ended = float(r["started"]), float(r["ended"])
        assert ended >= started, f"record ends before it starts: {r}"
        events.append((started, 1))
        events.append((ended, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # at equal times, ends (-1) before starts (+1)
    running = most = 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    return most


@dataclass
class Outcome:
    """A job's end as stock RQ reads it."""

    id: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    exc_string: str
    result_created_at: datetime | None
    return_value: Any

    @property
    def run_seconds(self) -> float | None:
        """From the job's start to the moment its outcome was recorded."""
        end = self.result_created_at or self.ended_at
        if self.started_at is None or end is None:
            return None
        return (end - self.started_at).total_seconds()


def _date(raw: bytes | None) -> datetime | None:
    if not raw:
        return None
    try:
        return utcparse(raw.decode())
    except ValueError:
        return None


def outcome(conn: redis.Redis[bytes], job_id: str) -> Outcome:
    """The job's status, timestamps and latest result, read with stock RQ. Works for hashes that
    ``Job.fetch`` refuses (a bad ``created_at``, no ``data``): the fields are read one by one and
    the latest result through a stub job, as RQ's own ``Result.fetch_latest`` reads it."""
    raw = conn.hgetall(f"rq:job:{job_id}")
    stub = Job(job_id, connection=conn, serializer=JSONSerializer)
    result = Result.fetch_latest(stub, serializer=JSONSerializer)
    exc = ""
    if result is not None and result.exc_string:
        exc = result.exc_string
    elif raw.get(b"exc_info"):  # a failure recorded without a Result: the hash's exc_info
        try:
            exc = zlib.decompress(raw[b"exc_info"]).decode(errors="replace")
        except zlib.error:
            exc = raw[b"exc_info"].decode(errors="replace")
    value = result.return_value if result is not None and result.type == Result.Type.SUCCESSFUL else None
    return Outcome(
        id=job_id,
        status=raw.get(b"status", b"missing").decode(),
        started_at=_date(raw.get(b"started_at")),
        ended_at=_date(raw.get(b"ended_at")),
        exc_string=exc,
        result_created_at=result.created_at if result is not None else None,
        return_value=value,
    )


def status(conn: redis.Redis[bytes], job_id: str) -> str | None:
    raw = conn.hget(f"rq:job:{job_id}", "status")
    return None if raw is None else raw.decode()


def wait_ended(
    conn: redis.Redis[bytes],
    job_ids: Iterable[str],
    timeout: float,
    proc: Any = None,
    what: str = "jobs to end",
) -> dict[str, str]:
    """Polls until every job is finished or failed; returns their statuses. ``proc`` (a worker)
    must stay alive meanwhile, and its output goes into the failure message."""
    ids = list(job_ids)

    def ended() -> dict[str, str] | None:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited while waiting for {what}: {proc.describe()}")
        statuses = {j: status(conn, j) or "missing" for j in ids}
        return statuses if all(s in ("finished", "failed") for s in statuses.values()) else None

    try:
        return wait_for(ended, timeout, 0.1, what)
    except AssertionError as e:
        statuses = {j: status(conn, j) for j in ids}
        detail = proc.describe() if proc is not None and hasattr(proc, "describe") else ""
        raise AssertionError(f"{e}; statuses: {Counter(statuses.values())}\n{detail}") from None


def executions(path: str | Path) -> Counter[str]:
    """How many times each token's job began to run, from ``tests.jobs.record``'s file."""
    counts: Counter[str] = Counter()
    with contextlib.suppress(FileNotFoundError):
        for line in Path(path).read_text().splitlines():
            if line.strip():
                counts[line.split()[0]] += 1
    return counts

"""Enqueue N jobs of a workload with stock RQ, on a schedule, in pipelined batches.

Jobs are ordinary RQ jobs (``Queue.prepare_data`` + ``Queue.enqueue_many`` in one pipeline per
batch, JSON serializer): what any RQ producer would write, only batched so that the producer
is never the bottleneck. The report says honestly what rate was achieved and how far behind
its schedule the producer fell at worst.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from producer.arrivals import schedule
from producer.errors import BadInput
from producer.workloads import JobSpec


def connect(url: str, timeout: float = 3.0) -> redis.Redis[bytes]:
    """A client that has answered PING; BadInput (one line) when Redis is unreachable."""
    from worker.redact import redact_url, scrub

    try:
        conn: redis.Redis[bytes] = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=30)
    except ValueError as e:
        raise BadInput(f"Redis URL {redact_url(url)!r} is not valid: {scrub(str(e), [url])}") from None
    try:
        conn.ping()
    except (redis.exceptions.RedisError, OSError) as e:
        conn.close()
        raise BadInput(f"Redis at {redact_url(url)} is unreachable: {scrub(str(e), [url])}") from None
    return conn


def json_queue(conn: redis.Redis[bytes], name: str) -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


@dataclass
class EnqueueReport:
    queue: str
    spec: str
    count: int
    arrival: str
    rate_asked: float | None
    job_ids: list[str] = field(default_factory=list)
    started_wall: float = 0.0  # time.time() when the first batch was sent
    first_at: float = 0.0  # monotonic offsets (s from start) of the first and last enqueue
    last_at: float = 0.0
    elapsed: float = 0.0  # start -> last batch acknowledged
    max_lag: float = 0.0  # worst delay of a job behind its scheduled time
    batches: int = 0

    @property
    def achieved_rate(self) -> float:
        """Jobs per second actually sent.

        Burst: jobs / time to send them all. Scheduled arrivals: (jobs - 1) / (last - first),
        the rate of the arrival process that was produced (n jobs span n - 1 gaps).
        """
        if self.arrival == "burst" or self.count < 2:
            return self.count / self.elapsed if self.elapsed > 0 else math.inf
        span = self.last_at - self.first_at
        return (self.count - 1) / span if span > 0 else math.inf

    def summary(self) -> str:
        asked = "as fast as possible" if self.rate_asked is None else f"{self.rate_asked:g} jobs/s asked"
        ratio = ""
        if self.rate_asked:
            ratio = f" ({100.0 * self.achieved_rate / self.rate_asked:.1f}% of asked)"
        lag = f"; worst lag behind schedule {self.max_lag * 1000:.1f} ms" if self.arrival != "burst" else ""
        return (
            f"enqueued {self.count} {self.spec} job(s) to queue {self.queue!r} in {self.elapsed:.2f} s "
            f"({self.arrival}, {self.batches} batch(es)): achieved {self.achieved_rate:,.1f} jobs/s vs {asked}"
            f"{ratio}{lag}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "spec": self.spec,
            "count": self.count,
            "arrival": self.arrival,
            "rate_asked": self.rate_asked,
            "rate_achieved": self.achieved_rate,
            "elapsed_s": self.elapsed,
            "max_lag_s": self.max_lag,
            "batches": self.batches,
            "started_wall": self.started_wall,
        }


class Progress(Protocol):
    def update(self, done: int) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    def update(self, done: int) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """Plain lines on stderr (not a terminal): at most one a second, and the last one."""

    def __init__(self, total: int, label: str, stream: Any = None) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.next = self.t0 + 1.0
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now >= self.next:
            self.next = now + 1.0
            self._line(now)

    def _line(self, now: float) -> None:
        rate = self.done / (now - self.t0) if now > self.t0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        print(f"{self.label}: {self.done}/{self.total} ({pct:.0f}%), {rate:,.1f} jobs/s", file=self.stream, flush=True)

    def close(self) -> None:
        self._line(time.monotonic())


class BarProgress:
    """A rich progress bar (on a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.bar.add_task(label, total=total)
        self.bar.start()

    def update(self, done: int) -> None:
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        self.bar.stop()


def make_progress(mode: str, total: int, label: str) -> Progress:
    if mode == "off":
        return NoProgress()
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return BarProgress(total, label)
    return LineProgress(total, label)


def enqueue(
    conn: redis.Redis[bytes],
    queue: str,
    spec: JobSpec,
    count: int,
    *,
    arrival: str = "burst",
    rate: float | None = None,
    seed: int | None = None,
    batch_size: int = 500,
    job_timeout: int | None = None,
    result_ttl: int | None = None,
    progress: Progress | None = None,
    on_batch: Callable[[list[str]], None] | None = None,
) -> EnqueueReport:
    """Enqueue ``count`` jobs of ``spec`` to ``queue`` following the arrival schedule."""
    if count <= 0:
        raise BadInput(f"--count must be a positive number of jobs, got {count}")
    if batch_size <= 0:
        raise BadInput(f"batch size must be positive, got {batch_size}")
    rng = random.Random(seed)
    offsets = schedule(arrival, count, rate, rng)
    # Arguments are drawn before the clock starts: the loop only sends.
    args = [spec.materialize(rng) for _ in range(count)]
    q = json_queue(conn, queue)
    report = EnqueueReport(queue, spec.describe(), count, arrival, rate)
    prog = progress or NoProgress()
    t0 = time.monotonic()
    report.started_wall = time.time()
    i = 0
    try:
        while i < count:
            now = time.monotonic() - t0
            due = offsets[i]
            if due > now:
                time.sleep(min(due - now, 0.25))
                continue
            j = i
            while j < count and j - i < batch_size and offsets[j] <= now:
                j += 1
            datas = [
                Queue.prepare_data(spec.func, kwargs=args[k], timeout=job_timeout, result_ttl=result_ttl)
                for k in range(i, j)
            ]
            with conn.pipeline() as pipe:
                jobs = q.enqueue_many(datas, pipeline=pipe)
                pipe.execute()
            sent = time.monotonic() - t0
            ids = [job.id for job in jobs]
            report.job_ids.extend(ids)
            if i == 0:
                report.first_at = sent
            report.last_at = sent
            report.max_lag = max(report.max_lag, sent - offsets[i])
            report.batches += 1
            i = j
            prog.update(i)
            if on_batch is not None:
                on_batch(ids)
    finally:
        report.elapsed = time.monotonic() - t0
        prog.close()
    return report

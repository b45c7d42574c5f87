"""Jobs the worker will not load, recorded where people look, without ever stopping the worker.

A job id in a queue (or a started registry, or an intermediate list) whose key cannot be read
— it holds a string, not a hash; the hash is over ``WORKER_MAX_JOB_BYTES``; the id itself is not
a valid RQ id — used to stop the worker that met it, and every restart with it (the
dequeue and recovery scripts failed with WRONGTYPE). Now such a job is refused alone:

- its id leaves the list it was in (the caller's script or :func:`refuse` removes it);
- it is added to the queue's ``FailedJobRegistry`` (``rq info`` counts it) with a failed
  ``Result`` carrying the reason, and, when its hash is a hash, ``status=failed`` and
  ``exc_info``; a key of another type is left as it is (it may be someone else's data);
- one entry goes to the capped stream :data:`QUARANTINE_KEY` (``XRANGE poolq:quarantine - +``):
  id, queue, reason, worker — the one place that lists every job the worker refused to load,
  including those no registry can hold (an id RQ refuses: not UTF-8, or with a ``:`` or a space);
- one ERROR line is logged.

Each write is independent (a MULTI whose failing command does not undo the others), so a
results stream of the wrong type, say, does not keep the job in the list.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis
from rq.job import Job, JobStatus, validate_job_id
from rq.results import Result
from rq.utils import current_timestamp, now, utcformat

if TYPE_CHECKING:
    from rq.queue import Queue

log = logging.getLogger("worker.quarantine")

QUARANTINE_KEY = "poolq:quarantine"
# Entries kept (approximately: MAXLEN ~): enough to see what happened, bounded whatever arrives.
QUARANTINE_MAXLEN = 10_000
# Longest job id the dequeue script hands over; a longer one is dropped in Redis (RQ's are 36).
MAX_JOB_ID_BYTES = 512


def printable(job_id: str | bytes, limit: int = 100) -> str:
    """A job id for a log line or a reason: decoded if it can be, escaped if not, truncated."""
    if isinstance(job_id, bytes):
        try:
            text = job_id.decode()
        except UnicodeDecodeError:
            text = repr(job_id)
    else:
        text = job_id
    return text if len(text) <= limit else text[: limit - 3] + "..."


def valid_id(job_id: str | bytes) -> str | None:
    """The id as RQ accepts it (``Job(id)`` raises on anything but letters, digits, ``_``, ``-``), or None."""
    try:
        text = job_id.decode() if isinstance(job_id, bytes) else job_id
        validate_job_id(text)
    except (UnicodeDecodeError, ValueError, TypeError):
        return None
    return text


def refuse(
    conn: redis.Redis[bytes],
    job_id: str | bytes,
    queue: Queue,
    reason: str,
    *,
    failure_ttl: int,
    worker_name: str | None = None,
    from_intermediate: bool = True,
    serializer: Any = None,
) -> None:
    """Fail or quarantine one job that will not be loaded; see the module docstring.

    The job key gets ``status=failed`` only if it holds a hash. ``from_intermediate``: LREM the
    id from the queue's intermediate list (the dequeue path; recovery's scripts removed it).
    """
    decoded = valid_id(job_id)
    ttl = failure_ttl
    hash_writable = decoded is not None and conn.execute_command("TYPE", Job.key_for(decoded)) in (b"hash", "hash")
    with conn.pipeline() as p:
        if from_intermediate:
            p.lrem(queue.intermediate_queue_key, 1, job_id)
        if decoded is not None:
            stub = Job(decoded, connection=conn, serializer=serializer)
            p.zadd(queue.failed_job_registry.key, {decoded: current_timestamp() + ttl})
            if hash_writable:
                p.hset(
                    stub.key,
                    mapping={"status": JobStatus.FAILED.value, "exc_info": reason, "ended_at": utcformat(now())},
                )
            Result.create_failure(stub, ttl, reason, worker_name=worker_name or "", pipeline=p)
        p.xadd(
            QUARANTINE_KEY,
            {
                "job_id": printable(job_id, MAX_JOB_ID_BYTES),
                "queue": queue.name,
                "reason": reason[:2000],
                "worker": worker_name or "",
                "at": utcformat(now()),
            },
            maxlen=QUARANTINE_MAXLEN,
            approximate=True,
        )
        results = p.execute(raise_on_error=False)
    errors = [r for r in results if isinstance(r, Exception)]
    suffix = f" ({len(errors)} of its records could not be written: {errors[0]})" if errors else ""
    log.error("%s%s", reason, suffix)


class Throttle:
    """At most one log line per key every ``seconds`` (a bad queue is met at every dequeue)."""

    def __init__(self, seconds: float = 60.0, max_keys: int = 1024) -> None:
        self.seconds = seconds
        self.max_keys = max_keys
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        t = time.monotonic()
        last = self._last.get(key)
        if last is not None and t - last < self.seconds:
            return False
        if last is None and len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = t
        return True
